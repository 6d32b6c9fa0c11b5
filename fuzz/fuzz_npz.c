/*
 * fuzz_npz.c - libFuzzer target for the npz reader: the zip central directory and local headers,
 * zip64 fields, inflating members and the npy headers inside them. Inputs that start with neither
 * a local header nor an end-of-central-directory signature get a local header signature
 * prepended, so the zip reader is always the one that runs.
 */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_run_with_magic(data, size, "PK\x03\x04", 4, "PK\x05\x06");
    return 0;
}
