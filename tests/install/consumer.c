/*
 * consumer.c - a program outside the tree that uses an installed libnnparity, as the install
 * tests build it: through pkg-config (shared and static) and through CMake's nnparity::
 * targets. It writes a two-record dump, reads it back and prints what it found, so a wrong
 * header, library or link line shows up as a failure, not only a missing symbol.
 *   consumer DIR   prints "nnparity VERSION: 2 records, a/out0 [2, 3] ok"
 */
#include <stdio.h>
#include <string.h>

#include "nnparity.h"

static int fail(const char *what)
{
    fprintf(stderr, "consumer: %s: %s\n", what, nnp_last_error());
    return 1;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: consumer DIR\n");
        return 2;
    }
    /* the header and the library must agree on the major version */
    if (nnp_version_number() / 10000 != NNP_VERSION_MAJOR) {
        fprintf(stderr, "consumer: header %s, library %s\n", NNP_VERSION_STRING, nnp_version());
        return 1;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/consumer.safetensors", argv[1]);

    nnp_writer *w;
    if (nnp_writer_open(path, 2, &w) != NNP_OK)
        return fail("nnp_writer_open");
    const float a[6] = {1, 2, 3, 4, 5, 6}, b[2] = {7, 8};
    const uint64_t shape_a[2] = {2, 3}, shape_b[1] = {2};
    const nnp_record_desc da = {.module = "a", .role = "out0", .dtype = NNP_F32, .ndim = 2,
                                .shape = shape_a};
    const nnp_record_desc db = {.module = "b", .role = "out0", .dtype = NNP_F32, .ndim = 1,
                                .shape = shape_b};
    if (nnp_writer_add(w, &da, a) != NNP_OK || nnp_writer_add(w, &db, b) != NNP_OK)
        return fail("nnp_writer_add");
    if (nnp_writer_close(w) != NNP_OK)
        return fail("nnp_writer_close");

    nnp_dump *d;
    if (nnp_dump_open(path, &d) != NNP_OK)
        return fail("nnp_dump_open");
    const nnp_record *r = nnp_dump_record(d, 0);
    int ok = nnp_dump_count(d) == 2 && r && strcmp(r->name, "a/out0") == 0 && r->ndim == 2 &&
             r->shape[0] == 2 && r->shape[1] == 3;
    printf("nnparity %s: %zu records, %s [%llu, %llu] %s\n", nnp_version(), nnp_dump_count(d),
           r ? r->name : "?", r ? (unsigned long long)r->shape[0] : 0ULL,
           r && r->ndim > 1 ? (unsigned long long)r->shape[1] : 0ULL, ok ? "ok" : "WRONG");
    nnp_dump_close(d);
    return ok ? 0 : 1;
}
