/*
 * provenance.c - reads and writes the "nnparity.records" metadata: a JSON array, in execution
 * order, of {"tensor", "module", "role", "call", "type", "seq"} objects (see docs/dump-format.md).
 * Only "tensor" is required; "seq" defaults to the entry's position in the array.
 */
#include <jansson.h>
#include <string.h>

#include "formats/provenance.h"

static nnp_status bad(const char *file, size_t i, const char *what)
{
    return nnp__fail(NNP_ERR_FORMAT, "%s: metadata '%s' entry %zu: %s", file,
                     NNP_META_RECORDS_KEY, i, what);
}

/* An optional string field: absent reads as "", anything but a string is an error. */
static bool opt_string(json_t *o, const char *key, const char **out)
{
    json_t *v = json_object_get(o, key);
    *out = v ? json_string_value(v) : "";
    return *out != NULL;
}

static bool opt_u64(json_t *o, const char *key, uint64_t dflt, uint64_t *out)
{
    json_t *v = json_object_get(o, key);
    if (!v) {
        *out = dflt;
        return true;
    }
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return false;
    *out = (uint64_t)json_integer_value(v);
    return true;
}

nnp_status nnp__provenance_apply(nnp_dump *d, const char *file, const char *json)
{
    json_error_t jerr;
    json_t *arr = json_loads(json, JSON_REJECT_DUPLICATES, &jerr);
    if (!arr)
        return nnp__fail(NNP_ERR_FORMAT, "%s: metadata '%s' is not valid JSON at character %d: %s",
                         file, NNP_META_RECORDS_KEY, jerr.position, jerr.text);
    nnp_status st = NNP_OK;
    if (!json_is_array(arr)) {
        st = nnp__fail(NNP_ERR_FORMAT, "%s: metadata '%s' is not a JSON array", file,
                       NNP_META_RECORDS_KEY);
        goto out;
    }
    size_t i;
    json_t *e;
    json_array_foreach(arr, i, e) {
        const char *tensor, *module, *role, *type;
        uint64_t call, seq;
        if (!json_is_object(e)) {
            st = bad(file, i, "not an object");
            goto out;
        }
        json_t *t = json_object_get(e, "tensor");
        if (!json_is_string(t)) {
            st = bad(file, i, "\"tensor\" is missing or not a string");
            goto out;
        }
        tensor = json_string_value(t);
        if (!opt_string(e, "module", &module) || !opt_string(e, "role", &role) ||
            !opt_string(e, "type", &type)) {
            st = bad(file, i, "\"module\", \"role\" and \"type\" must be strings");
            goto out;
        }
        if (!opt_u64(e, "call", 0, &call) || !opt_u64(e, "seq", i, &seq)) {
            st = bad(file, i, "\"call\" and \"seq\" must be non-negative integers");
            goto out;
        }
        if ((st = nnp__dump_annotate(d, file, tensor, module, role, type, call, seq)))
            goto out;
    }
out:
    json_decref(arr);
    return st;
}

void nnp__provenance_entry(nnp_sbuf *b, bool first, const char *tensor, const char *module,
                           const char *role, const char *module_type, uint64_t call,
                           uint64_t seq)
{
    nnp__sbuf_puts(b, first ? "{\"tensor\":" : ",{\"tensor\":");
    nnp__sbuf_json_string(b, tensor);
    if (*module) {
        nnp__sbuf_puts(b, ",\"module\":");
        nnp__sbuf_json_string(b, module);
    }
    if (*role) {
        nnp__sbuf_puts(b, ",\"role\":");
        nnp__sbuf_json_string(b, role);
    }
    if (*module_type) {
        nnp__sbuf_puts(b, ",\"type\":");
        nnp__sbuf_json_string(b, module_type);
    }
    nnp__sbuf_printf(b, ",\"call\":%llu,\"seq\":%llu}", (unsigned long long)call,
                     (unsigned long long)seq);
}
