/*
 * component.c - the component a record belongs to (attention, mlp, normalization, embedding,
 * head, other), from its module type and then the words of its path.
 */
#include <string.h>

#include "diff/diff.h"

/* Whether any of the NULL-ended words occurs in s, ignoring case (module types: "LayerNorm"). */
static bool type_has(const char *s, const char *const *words)
{
    for (; *words; words++)
        if (strcasestr(s, *words))
            return true;
    return false;
}

/* Whether a word names one of the path's parts ("blocks.0.self_attn/out0": parts blocks, 0,
 * self_attn, out0): the part is the word, or starts with it before '_' or a digit ("ln_1",
 * "norm2", "attn_q"), or ends with it after '_' ("self_attn", "lm_head"). Whole parts, so that
 * "conv_proj" is not taken for "v_proj". */
static bool path_has(const char *path, const char *const *words)
{
    for (const char *p = path; *p;) {
        size_t n = strcspn(p, "./#");
        for (const char *const *w = words; *w; w++) {
            size_t k = strlen(*w);
            if (k > n)
                continue;
            bool head = strncasecmp(p, *w, k) == 0 &&
                        (k == n || p[k] == '_' || (p[k] >= '0' && p[k] <= '9'));
            bool tail = k < n && strncasecmp(p + n - k, *w, k) == 0 && p[n - k - 1] == '_';
            if (head || tail)
                return true;
        }
        p += n + (p[n] ? 1 : 0);
    }
    return false;
}

const char *nnp_component(const char *name, const char *module_type)
{
    static const char *const norm_t[] = {"norm", NULL};
    static const char *const attn_t[] = {"attention", "attn", NULL};
    static const char *const embed_t[] = {"embed", NULL};
    static const char *const mlp_t[] = {"mlp", "feedforward", NULL};
    static const char *const head[] = {"head", "heads", "lm_head", "classifier", "logits", NULL};
    static const char *const attn[] = {"attention", "attn", "self_attention", "q_proj", "k_proj",
                                       "v_proj", "o_proj", "qkv", "query", "key", "value", NULL};
    static const char *const mlp[] = {"mlp", "ffn", "feed_forward", "fc1", "fc2", "gate_proj",
                                      "up_proj", "down_proj", NULL};
    static const char *const norm[] = {"norm", "layernorm", "rmsnorm", "ln", NULL};
    static const char *const embed[] = {"embed", "embeddings", "wte", "wpe", "conv_proj",
                                        "patch_embed", NULL};
    const char *t = module_type ? module_type : "", *n = name ? name : "";
    /* the module type says it best when it is specific */
    if (type_has(t, norm_t))
        return "normalization";
    if (type_has(t, attn_t))
        return "attention";
    if (type_has(t, embed_t))
        return "embedding";
    if (type_has(t, mlp_t))
        return "mlp";
    /* then the path, in this order of precedence */
    if (path_has(n, head))
        return "head";
    if (path_has(n, attn))
        return "attention";
    if (path_has(n, mlp))
        return "mlp";
    if (path_has(n, norm))
        return "normalization";
    if (path_has(n, embed))
        return "embedding";
    return "other";
}
