/*
 * fuzz_gguf.c - libFuzzer target for the GGUF reader: the header, typed key-value metadata
 * (strings, arrays, general.alignment), tensor infos and their placement, and the dequantizers,
 * which run on every quantized tensor that opens. Inputs that do not start with "GGUF" get it
 * prepended, so the GGUF reader is always the one that runs.
 */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_run_with_magic(data, size, "GGUF", 4, NULL);
    return 0;
}
