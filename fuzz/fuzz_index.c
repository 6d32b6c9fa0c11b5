/*
 * fuzz_index.c - libFuzzer target for the sharded checkpoint reader: every input is a
 * `model.safetensors.index.json`, placed in a private directory beside two small valid shards
 * (model-00001-of-00002 and -00002-of-00002), so that its weight map resolves to real files and
 * the reader's lookups, joins and cross-checks run on every mutation.
 */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_open_path(fuzz_index_path(data, size));
    return 0;
}
