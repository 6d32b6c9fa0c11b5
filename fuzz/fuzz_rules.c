/*
 * fuzz_rules.c - libFuzzer target for the rules language: the parser (every rule, its arguments,
 * line and column in the errors), then what the rules make of a few names (renames, aliases,
 * splits, concat parts) and the adapters run on a small tensor, in shape-only mode and on data.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static void adapt_all(const nnp_mapping *m)
{
    static const float x[24] = {0};
    nnp_tensor ref = {.dtype = NNP_F32, .ndim = 3, .shape = {2, 3, 4}, .nelem = 24, .data = x};
    nnp_tensor port = ref;
    if (nnp__adapt(&ref, m->ops, m->nops, true, NULL) == NNP_OK) {
        nnp__adapt(&port, m->ops, m->nops, false, &ref);
        nnp__tensor_free(&port);
    }
    nnp__tensor_free(&ref);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = 0;
    nnp_rules *r;
    if (nnp_rules_parse(text, "fuzz.rules", &r) == NNP_OK) {
        static const char *const names[] = {"blk.0.attn_q/out0", "blk.11.attn_qkv.weight",
                                            "model.layers.3.mlp/out0#2", "", "x"};
        for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
            nnp_mapping *m;
            size_t n;
            if (nnp__rules_apply(r, names[i], &m, &n) != NNP_OK)
                continue;
            for (size_t k = 0; k < n; k++)
                adapt_all(&m[k]);
            nnp__mappings_free(m, n);
            char *out;
            bool ignored;
            if (nnp_rules_map(r, names[i], &out, &ignored) == NNP_OK)
                free(out);
        }
        nnp_rules_free(r);
    }
    free(text);
    return 0;
}
