/*
 * gguf_bounds.c - how far a correctly quantized tensor may be from its source, per ggml
 * quantized type, and the record's type as the GGUF reader recorded it. Checking a conversion
 * (`nnparity weights`, or a program of its own) needs both; they live beside the reader so that
 * the type names and the metadata key are spelled once.
 */
#include <stdlib.h>
#include <string.h>

#include "formats/gguf.h"

/* rel-L2 = ||dequantized - source|| / ||source||. A uniform quantizer of step s has an RMS error
 * of s/sqrt(12); for weights spread like a Gaussian the blocks' steps give roughly the expected
 * error of docs/weights.md, and the bound is three to four times that, so that a correct
 * conversion passes and a wrong one (a swapped block, a wrong scale, a transposed tensor, errors
 * near 1.4) does not. One entry for each quantized type gguf_quant.c dequantizes. */
static const struct {
    const char *type;
    double bound;
} bounds[] = {
    {"Q8_0", 0.02}, {"Q6_K", 0.05}, {"Q5_0", 0.12}, {"Q5_1", 0.10}, {"Q5_K", 0.10},
    {"Q4_0", 0.25}, {"Q4_1", 0.20}, {"Q4_K", 0.20}, {"Q3_K", 0.40}, {"Q2_K", 0.60},
};

bool nnp_record_quantization(const nnp_dump *dump, size_t rec, const char **type,
                             double *rel_l2_bound)
{
    if (!dump || rec >= nnp_dump_count(dump))
        return false;
    const char *name = nnp_dump_record(dump, rec)->name;
    size_t plen = strlen(NNP_GGUF_TENSOR_TYPE_PREFIX), n = plen + strlen(name) + 1;
    /* names are short; a long one (GGUF allows 64 KiB) gets the heap */
    char small[256], *key = n <= sizeof small ? small : malloc(n);
    if (!key) {
        nnp__nomem();
        return false;
    }
    memcpy(key, NNP_GGUF_TENSOR_TYPE_PREFIX, plen);
    memcpy(key + plen, name, n - plen);
    const char *t = nnp_dump_meta_get(dump, key);
    if (key != small)
        free(key);
    for (size_t i = 0; t && i < sizeof bounds / sizeof *bounds; i++)
        if (strcmp(bounds[i].type, t) == 0) {
            if (type)
                *type = bounds[i].type;
            if (rel_l2_bound)
                *rel_l2_bound = bounds[i].bound;
            return true;
        }
    return false;
}
