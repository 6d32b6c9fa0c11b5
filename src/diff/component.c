/*
 * component.c - the component a record belongs to (attention, mlp, normalization, embedding,
 * head, other), from its module type and then the words of its path; and the one table of their
 * names, which rules, reports and bindings all spell the same way.
 */
#include <stdio.h>
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

/* In the order of nnp_component_kind: the order reports list them in. */
static const char *const names[NNP_COMPONENT_COUNT] = {
    [NNP_COMPONENT_EMBEDDING] = "embedding", [NNP_COMPONENT_ATTENTION] = "attention",
    [NNP_COMPONENT_MLP] = "mlp",             [NNP_COMPONENT_NORMALIZATION] = "normalization",
    [NNP_COMPONENT_HEAD] = "head",           [NNP_COMPONENT_OTHER] = "other",
};

const char *nnp_component_name(nnp_component_kind kind)
{
    return (unsigned)kind < NNP_COMPONENT_COUNT ? names[kind] : "?";
}

nnp_component_kind nnp__component_parse(const char *s, size_t n)
{
    for (int k = 0; k < NNP_COMPONENT_COUNT; k++)
        if (strlen(names[k]) == n && memcmp(names[k], s, n) == 0)
            return (nnp_component_kind)k;
    return NNP_COMPONENT_COUNT;
}

void nnp__component_list(char *buf, size_t n)
{
    size_t used = 0;
    buf[0] = 0;
    for (int k = 0; k < NNP_COMPONENT_COUNT && used < n; k++)
        used += (size_t)snprintf(buf + used, n - used, "%s%s",
                                 k == 0 ? "" : k + 1 < NNP_COMPONENT_COUNT ? ", " : " or ",
                                 names[k]);
}

/* The component from the module type and the path alone, before any rule. */
static nnp_component_kind component_by_words(const char *name, const char *module_type)
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
        return NNP_COMPONENT_NORMALIZATION;
    if (type_has(t, attn_t))
        return NNP_COMPONENT_ATTENTION;
    if (type_has(t, embed_t))
        return NNP_COMPONENT_EMBEDDING;
    if (type_has(t, mlp_t))
        return NNP_COMPONENT_MLP;
    /* then the path, in this order of precedence */
    if (path_has(n, head))
        return NNP_COMPONENT_HEAD;
    if (path_has(n, attn))
        return NNP_COMPONENT_ATTENTION;
    if (path_has(n, mlp))
        return NNP_COMPONENT_MLP;
    if (path_has(n, norm))
        return NNP_COMPONENT_NORMALIZATION;
    if (path_has(n, embed))
        return NNP_COMPONENT_EMBEDDING;
    return NNP_COMPONENT_OTHER;
}

nnp_component_kind nnp_component_kind_of(const nnp_rules *rules, const char *name,
                                         const char *module_type)
{
    nnp_component_kind k = nnp__rules_component(rules, name ? name : "");
    return k != NNP_COMPONENT_COUNT ? k : component_by_words(name, module_type);
}

const char *nnp_component(const char *name, const char *module_type)
{
    return names[component_by_words(name, module_type)];
}

const char *nnp_component_of(const nnp_rules *rules, const char *name, const char *module_type)
{
    return names[nnp_component_kind_of(rules, name, module_type)];
}
