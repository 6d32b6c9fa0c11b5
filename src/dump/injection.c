/*
 * injection.c - what injection did, as a capture made under it says (capture.c writes it):
 * a run's labels may call an error a layer's own only when inputs were injected.
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "dump/dump.h"

bool nnp_dump_injection(const nnp_dump *d, uint64_t *injected, uint64_t *not_injected,
                        char **first_reason)
{
    if (first_reason)
        *first_reason = NULL;
    const char *v = d ? nnp_dump_meta_get(d, NNP_META_INJECTION_KEY) : NULL;
    if (!v)
        return false;
    json_error_t err;
    json_t *o = json_loads(v, 0, &err);
    json_t *in = o ? json_object_get(o, "injected") : NULL;
    json_t *out = o ? json_object_get(o, "not_injected") : NULL;
    json_t *why = o ? json_object_get(o, "reasons") : NULL;
    bool ok = json_is_integer(in) && json_is_integer(out) && json_integer_value(in) >= 0 &&
              json_integer_value(out) >= 0 && (!why || json_is_array(why));
    if (!ok) {
        nnp__fail(NNP_ERR_FORMAT, "%s: metadata '%s' is not {\"injected\": N, \"not_injected\": "
                  "M, \"reasons\": [...]}", nnp_dump_path(d), NNP_META_INJECTION_KEY);
        json_decref(o);
        return false;
    }
    if (injected)
        *injected = (uint64_t)json_integer_value(in);
    if (not_injected)
        *not_injected = (uint64_t)json_integer_value(out);
    const char *first = why && json_array_size(why) ? json_string_value(json_array_get(why, 0))
                                                    : NULL;
    if (first_reason && first)
        *first_reason = strdup(first);
    json_decref(o);
    return true;
}

/* A rules regex that matches `name` and nothing else: metacharacters escaped, and the blanks
 * that would end the rules file's word written as escapes. */
static void put_exact_regex(nnp_sbuf *b, const char *name)
{
    nnp__sbuf_puts(b, "^");
    for (const char *c = name; *c; c++) {
        if (*c == ' ' || *c == '\t')
            nnp__sbuf_printf(b, "\\x%02x", (unsigned)*c);
        else if (strchr(".[]()*+?{}|^$\\", *c))
            nnp__sbuf_printf(b, "\\%c", *c);
        else
            nnp__sbuf_put(b, c, 1);
    }
    nnp__sbuf_puts(b, "$");
}

static int by_hash(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

nnp_status nnp_injection_mirror_rules(const nnp_dump *injected, nnp_dump *ref, char **text)
{
    if (!text)
        return nnp__fail(NNP_ERR_ARG, "nnp_injection_mirror_rules: no output");
    *text = NULL;
    if (!injected || !ref)
        return nnp__fail(NNP_ERR_ARG, "nnp_injection_mirror_rules: missing dump");
    const char *v = nnp_dump_meta_get(injected, NNP_META_INJECTION_KEY);
    json_t *o = v ? json_loads(v, 0, NULL) : NULL;
    json_t *names = o ? json_object_get(o, "records") : NULL;
    if (!json_is_array(names)) {
        json_decref(o);
        return nnp__fail(NNP_ERR_NOT_FOUND, "%s: does not say which reference records it was "
                         "given (metadata '%s' without \"records\": not made under injection, "
                         "or by an nnparity before 0.6)", nnp_dump_path(injected),
                         NNP_META_INJECTION_KEY);
    }
    size_t n = nnp_dump_count(ref), nused = 0;
    size_t *all = malloc((n ? n : 1) * sizeof *all);
    nnp_sketch *sk = malloc((n ? n : 1) * sizeof *sk);
    uint64_t *used = malloc((json_array_size(names) + 1) * sizeof *used);
    nnp_status st = all && sk && used ? NNP_OK : nnp__nomem();
    for (size_t i = 0; !st && i < n; i++)
        all[i] = i;
    /* records are one value when their hashes are equal (stored sketches: nothing is read) */
    if (!st && n)
        st = nnp_dump_sketches(ref, all, n, 0, sk);
    for (size_t k = 0; !st && k < json_array_size(names); k++) {
        const char *name = json_string_value(json_array_get(names, k));
        int64_t i = name ? nnp_dump_find(ref, name) : -1;
        if (i >= 0)
            used[nused++] = sk[i].hash;
    }
    if (!st)
        qsort(used, nused, sizeof *used, by_hash);
    nnp_sbuf b = {0};
    nnp__sbuf_printf(&b, "# Inject into the reference's own code what %s was given: the values "
                     "of the records below are not injected.\n", nnp_dump_path(injected));
    for (size_t i = 0; !st && i < n; i++) {
        /* a value given to one input is given wherever the reference reads that value */
        if (bsearch(&sk[i].hash, used, nused, sizeof *used, by_hash))
            continue;
        nnp__sbuf_puts(&b, "ignore ");
        put_exact_regex(&b, nnp_dump_record(ref, i)->name);
        nnp__sbuf_puts(&b, "\n");
    }
    if (!st && b.failed)
        st = nnp__nomem();
    if (!st)
        *text = b.s;
    else
        nnp__sbuf_free(&b);
    free(all);
    free(sk);
    free(used);
    json_decref(o);
    return st;
}
