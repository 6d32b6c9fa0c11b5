/*
 * capture_c.c - a C engine's capture at full speed: taps COUNT tensors of MIB MiB each through
 * nnp_tap into a capture file, the way a port records its layers, so that the time can be set
 * against dd writing the same number of bytes to the same file system.
 *
 *   capture_c OUT.safetensors COUNT MIB
 */
#include <stdio.h>
#include <stdlib.h>

#include "nnparity.h"

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: capture_c OUT.safetensors COUNT MIB\n");
        return 2;
    }
    int count = atoi(argv[2]);
    uint64_t elems = (uint64_t)atoi(argv[3]) << 18; /* float32 elements in MIB MiB */
    float *x = malloc(elems * sizeof *x);
    if (!x || count <= 0)
        return 2;
    for (uint64_t i = 0; i < elems; i++)
        x[i] = (float)(i % 1000) * 0.001f;
    nnp_capture_options o = {.size = sizeof o, .expected_records = (size_t)count};
    if (nnp_capture_open(argv[1], &o) != NNP_OK) {
        fprintf(stderr, "capture_c: %s\n", nnp_last_error());
        return 2;
    }
    char name[64];
    for (int k = 0; k < count; k++) {
        snprintf(name, sizeof name, "layers.%d", k);
        if (nnp_tap(name, "out0", NNP_F32, 1, &elems, x) != NNP_OK) {
            fprintf(stderr, "capture_c: %s\n", nnp_last_error());
            return 2;
        }
    }
    if (nnp_capture_close() != NNP_OK) {
        fprintf(stderr, "capture_c: %s\n", nnp_last_error());
        return 2;
    }
    free(x);
    return 0;
}
