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
