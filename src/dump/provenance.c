/*
 * provenance.c - reads and writes the "nnparity.records" metadata: a JSON array, in execution
 * order, of {"tensor", "module", "role", "call", "type", "seq", "same_as"} objects (see
 * docs/dump-format.md). Only "tensor" is required; "seq" defaults to the entry's position in the
 * array. An entry with "same_as" is a record of its own whose tensor the file stores once, under
 * the name "same_as" gives.
 */
#include <stdlib.h>
#include <string.h>

#include "common/json_scan.h"
#include "dump/provenance.h"

static nnp_status bad(const char *file, size_t i, const char *what)
{
    return nnp__fail(NNP_ERR_FORMAT, "%s: metadata '%s' entry %zu: %s", file,
                     NNP_META_RECORDS_KEY, i, what);
}

/* The scanner found text that is not JSON. */
static nnp_status syntax(const char *file, const nnp_json *j)
{
    return nnp__fail(NNP_ERR_FORMAT, "%s: metadata '%s' is not valid JSON at character %zu: %s",
                     file, NNP_META_RECORDS_KEY, j->where, j->what ? j->what : "unexpected text");
}

/* One entry's fields: its strings at offsets into a buffer that every entry reuses (a capture
 * lists 100k entries; four allocations each showed up in opening one). NONE: absent. */
enum { TENSOR, MODULE, ROLE, TYPE, SAME_AS, NFIELDS };
#define NONE SIZE_MAX

typedef struct {
    size_t at[NFIELDS];
    uint64_t call, seq;
    bool has_seq;
} prov_entry;

/* One {"tensor", "module", "role", "type", "call", "seq", "same_as"} object; unknown fields are
 * skipped. */
static nnp_status parse_entry(nnp_json *j, const char *file, size_t i, nnp_sbuf *text,
                              prov_entry *e)
{
    if (!nnp__json_expect(j, '{'))
        return bad(file, i, "not an object");
    if (nnp__json_peek(j) == '}') {
        j->p++;
        return bad(file, i, "\"tensor\" is missing");
    }
    do {
        if (!nnp__json_string(j) || !nnp__json_expect(j, ':'))
            return syntax(file, j);
        int field = nnp__json_text_is(j, "tensor")   ? TENSOR
                    : nnp__json_text_is(j, "module") ? MODULE
                    : nnp__json_text_is(j, "role")   ? ROLE
                    : nnp__json_text_is(j, "type")   ? TYPE
                    : nnp__json_text_is(j, "same_as") ? SAME_AS
                                                      : -1;
        bool is_call = nnp__json_text_is(j, "call"), is_seq = nnp__json_text_is(j, "seq");
        if (field >= 0) {
            if (e->at[field] != NONE)
                return bad(file, i, "a field appears twice");
            if (nnp__json_peek(j) != '"' || !nnp__json_string(j))
                return bad(file, i, "\"tensor\", \"module\", \"role\", \"type\" and "
                                    "\"same_as\" must be strings");
            e->at[field] = text->len;
            nnp__sbuf_put(text, j->text.s, j->text.len + 1);
            if (text->failed)
                return nnp__nomem();
        } else if (is_call || is_seq) {
            bool negative;
            if (!nnp__json_u64(j, is_call ? &e->call : &e->seq, &negative))
                return bad(file, i, "\"call\" and \"seq\" must be non-negative integers");
            e->has_seq = e->has_seq || is_seq;
        } else if (!nnp__json_skip(j)) {
            return syntax(file, j);
        }
    } while (nnp__json_more(j, '}'));
    if (j->what)
        return syntax(file, j);
    return e->at[TENSOR] != NONE ? NNP_OK : bad(file, i, "\"tensor\" is missing");
}

nnp_status nnp__provenance_apply(nnp_dump *d, const char *file, const char *json)
{
    nnp_json j;
    nnp__json_init(&j, json, strlen(json));
    nnp_sbuf text = {0};
    nnp_status st = NNP_OK;
    size_t i = 0;
    if (!nnp__json_expect(&j, '[')) {
        st = syntax(file, &j);
    } else if (nnp__json_peek(&j) == ']') {
        j.p++;
    } else {
        do {
            prov_entry e = {{NONE, NONE, NONE, NONE, NONE}, 0, 0, false};
            text.len = 0;
            st = parse_entry(&j, file, i, &text, &e);
            /* after a failure text.s may still be NULL: no field is read then */
            const char *f[NFIELDS];
            for (int k = 0; !st && k < NFIELDS; k++)
                f[k] = e.at[k] != NONE ? text.s + e.at[k] : "";
            nnp_rec *same;
            if (!st && e.at[SAME_AS] != NONE)
                st = nnp__dump_add_same(d, file, f[TENSOR], f[SAME_AS], &same);
            if (!st)
                st = nnp__dump_annotate(d, file, f[TENSOR], f[MODULE], f[ROLE], f[TYPE], e.call,
                                        e.has_seq ? e.seq : i);
            i++;
        } while (!st && nnp__json_more(&j, ']'));
    }
    if (!st && (j.what || !nnp__json_end(&j)))
        st = syntax(file, &j);
    nnp__sbuf_free(&text);
    nnp__json_free(&j);
    return st;
}

void nnp__record_name(nnp_sbuf *b, const char *module, const char *role, uint64_t call)
{
    nnp__sbuf_puts(b, module ? module : "");
    nnp__sbuf_puts(b, "/");
    nnp__sbuf_puts(b, role ? role : "");
    if (call)
        nnp__sbuf_printf(b, "#%llu", (unsigned long long)call);
}

void nnp__provenance_entry(nnp_sbuf *b, bool first, const char *tensor, const char *module,
                           const char *role, const char *module_type, uint64_t call,
                           uint64_t seq, const char *same_as)
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
    if (same_as) {
        nnp__sbuf_puts(b, ",\"same_as\":");
        nnp__sbuf_json_string(b, same_as);
    }
    nnp__sbuf_puts(b, ",\"call\":");
    nnp__sbuf_u64(b, call);
    nnp__sbuf_puts(b, ",\"seq\":");
    nnp__sbuf_u64(b, seq);
    nnp__sbuf_puts(b, "}");
}
