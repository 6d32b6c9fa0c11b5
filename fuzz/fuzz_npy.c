/*
 * fuzz_npy.c - libFuzzer target for the npy reader: the header dict parser, dtype mapping, size
 * checks and the big-endian / Fortran-order conversion. Inputs that do not start with the npy
 * magic get it prepended, so mutations are not wasted on the safetensors reader.
 */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_run_with_magic(data, size, "\x93NUMPY", 6, NULL);
    return 0;
}
