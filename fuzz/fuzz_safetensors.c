/*
 * fuzz_safetensors.c - libFuzzer target for nnp_dump_open on arbitrary bytes, seeded with
 * safetensors files and a sharded checkpoint index. The format is found from the content, so
 * mutations that turn the input into an npy, npz or index are followed into those readers too.
 */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_run_bytes(data, size);
    return 0;
}
