/*
 * journal.c - reads a partial dump: a safetensors file whose writer has not finished (it was
 * killed, or the disk filled). Its placeholder header names "<path>.journal", where the writer
 * appended one JSON line per record once that record's data was on disk:
 *     {"nnparity.journal":1,"room":N}                                  first line
 *     {"tensor":..,"module":..,"role":..,"type":..,"call":..,"seq":..,
 *      "dtype":..,"shape":[..],"data_offsets":[b,e]}                   one per record
 *     {"tensor":..,...,"seq":..,"same_as":..}        a record whose tensor an earlier one stored
 *     {"meta":["key","value"]}                                        metadata set on the way
 * A last line without its newline was cut short by the kill and is ignored, and so is a record
 * whose data lies past the end of the file as mapped (a capture still being written). Records
 * are checked to follow each other in execution order, as the reference reader checks a header.
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "formats/formats.h"

static nnp_status bad_line(const char *jpath, size_t line, const char *what)
{
    return nnp__fail(NNP_ERR_FORMAT, "%s: line %zu: %s", jpath, line, what);
}

static bool get_u64(json_t *v, uint64_t *out)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return false;
    *out = (uint64_t)json_integer_value(v);
    return true;
}

/* A record line's "tensor" (a string), "call" (0 when absent) and "seq": false when one is not
 * what it must be. */
static bool record_head(json_t *e, uint64_t *call, uint64_t *seq)
{
    json_t *jc = json_object_get(e, "call");
    *call = 0;
    return json_is_string(json_object_get(e, "tensor")) && (!jc || get_u64(jc, call)) &&
           get_u64(json_object_get(e, "seq"), seq);
}

/* The provenance of the record line e adds (its "tensor" checked to be a string). */
static nnp_status annotate(nnp_dump *d, const char *path, json_t *e, uint64_t call, uint64_t seq)
{
    json_t *m = json_object_get(e, "module"), *ro = json_object_get(e, "role"),
           *ty = json_object_get(e, "type");
    return nnp__dump_annotate(d, path, json_string_value(json_object_get(e, "tensor")),
                              m ? json_string_value(m) : "", ro ? json_string_value(ro) : "",
                              ty ? json_string_value(ty) : "", call, seq);
}

/* Add one line of a record stored under an earlier record's name ("same_as"): it has no bytes
 * of its own. */
static nnp_status add_same(nnp_dump *d, const char *path, const char *jpath, size_t line,
                           json_t *e, uint64_t *count)
{
    json_t *jt = json_object_get(e, "tensor"), *js = json_object_get(e, "same_as");
    uint64_t call, seq;
    if (!record_head(e, &call, &seq) || !json_is_string(js))
        return bad_line(jpath, line, "not a record entry");
    if (seq != *count)
        return bad_line(jpath, line, "records are not in execution order");
    nnp_rec *r;
    nnp_status st = nnp__dump_add_same(d, path, json_string_value(jt), json_string_value(js), &r);
    if (st)
        return st;
    (*count)++;
    return annotate(d, path, e, call, seq);
}

/* Add one record line. *stop is set (and nothing added) when its data lies past the end of the
 * mapping: a capture still being written, read by another process, has journalled it since. */
static nnp_status add_record(nnp_dump *d, const char *path, const char *jpath, size_t line,
                             json_t *e, const unsigned char *data, uint64_t data_size,
                             uint64_t *expect, uint64_t *count, bool *stop)
{
    json_t *jt = json_object_get(e, "tensor"), *jd = json_object_get(e, "dtype"),
           *js = json_object_get(e, "shape"), *jo = json_object_get(e, "data_offsets");
    uint64_t begin, end, call, seq;
    if (!record_head(e, &call, &seq) || !json_is_string(jd) || !json_is_array(js) ||
        !json_is_array(jo) || json_array_size(jo) != 2 ||
        !get_u64(json_array_get(jo, 0), &begin) || !get_u64(json_array_get(jo, 1), &end))
        return bad_line(jpath, line, "not a record entry");
    /* The writer journals records in execution order, each right after the one before: recovery
     * relies on line order, seq order and offset order being one order. */
    if (seq != *count)
        return bad_line(jpath, line, "records are not in execution order");
    nnp_dtype dt = nnp_dtype_from_name(json_string_value(jd));
    if (dt == NNP_DTYPE_INVALID)
        return bad_line(jpath, line, "unknown dtype");
    size_t nd = json_array_size(js);
    uint64_t shape[64];
    if (nd > 64)
        return bad_line(jpath, line, "more than 64 dimensions");
    for (size_t k = 0; k < nd; k++)
        if (!get_u64(json_array_get(js, k), &shape[k]))
            return bad_line(jpath, line, "a dimension is not a non-negative integer");
    if (begin != *expect || end < begin)
        return nnp__fail(NNP_ERR_FORMAT, "%s: line %zu: tensor '%s' at data bytes [%llu, %llu] "
                         "does not follow the previous record", jpath, line,
                         json_string_value(jt), (unsigned long long)begin,
                         (unsigned long long)end);
    if (end > data_size) {
        *stop = true;
        return NNP_OK;
    }
    nnp_rec *r;
    nnp_status st = nnp__dump_add(d, path, json_string_value(jt), dt, (uint32_t)nd, shape, &r);
    if (st)
        return st;
    if (r->pub.nbytes != end - begin)
        return nnp__fail(NNP_ERR_FORMAT, "%s: line %zu: tensor '%s' spans %llu bytes but its "
                         "shape and dtype need %llu (TensorInvalidInfo)", jpath, line,
                         json_string_value(jt), (unsigned long long)(end - begin),
                         (unsigned long long)r->pub.nbytes);
    r->raw = data + begin;
    *expect = end;
    (*count)++;
    return annotate(d, path, e, call, seq);
}

/* The first line: {"nnparity.journal":1,"room":N}, with N the header room of the partial file. */
static nnp_status read_room(const char *jpath, json_t *e, const nnp_map *m, uint64_t hlen,
                            uint64_t *room)
{
    if (!get_u64(json_object_get(e, "room"), room) || *room % 8 != 0 || m->size < 8 ||
        *room > m->size - 8 || *room > 100000000u)
        return bad_line(jpath, 1, "does not describe a partial dump's header room");
    if (hlen && *room != hlen)
        return bad_line(jpath, 1, "names a header room that is not the partial dump's");
    return NNP_OK;
}

nnp_status nnp__journal_load(nnp_dump *d, const char *path, const nnp_map *m, uint64_t hlen,
                             const char *journal_name)
{
    if (!*journal_name || strchr(journal_name, '/'))
        return nnp__fail(NNP_ERR_FORMAT, "%s: the journal of a partial dump must be a file beside "
                         "it, not '%s'", path, journal_name);
    const char *slash = strrchr(path, '/');
    nnp_sbuf jp = {0};
    if (slash)
        nnp__sbuf_put(&jp, path, (size_t)(slash - path + 1));
    nnp__sbuf_puts(&jp, journal_name);
    if (jp.failed)
        return nnp__nomem();
    nnp_sbuf content = {0};
    nnp_status st = nnp__sbuf_read_file(&content, jp.s, NNP_MAX_JOURNAL_BYTES, "journal");
    char *text = content.s;
    size_t len = content.len;
    nnp__dump_set_format(d, "safetensors-partial");
    const unsigned char *data = NULL;
    uint64_t room = 0, data_size = 0, expect = 0, count = 0;
    size_t line = 0;
    bool stop = false;
    for (char *p = text; !st && !stop && p && p < text + len;) {
        char *nl = memchr(p, '\n', (size_t)(text + len - p));
        if (!nl)
            break; /* the line being written when the process died */
        line++;
        json_error_t jerr;
        json_t *e = json_loadb(p, (size_t)(nl - p), JSON_REJECT_DUPLICATES, &jerr);
        p = nl + 1;
        if (!e) {
            st = nnp__fail(NNP_ERR_FORMAT, "%s: line %zu, column %d: %s", jp.s, line,
                           jerr.column, jerr.text);
        } else if (!json_is_object(e)) {
            st = bad_line(jp.s, line, "not a JSON object");
        } else if (line == 1) {
            if (!(st = read_room(jp.s, e, m, hlen, &room))) {
                nnp__dump_set_header_room(d, room);
                data = m->base + 8 + room;
                data_size = m->size - 8 - room;
            }
        } else if (json_object_get(e, "meta")) {
            json_t *kv = json_object_get(e, "meta");
            if (!json_is_array(kv) || json_array_size(kv) != 2 ||
                !json_is_string(json_array_get(kv, 0)) || !json_is_string(json_array_get(kv, 1)))
                st = bad_line(jp.s, line, "\"meta\" is not a [key, value] pair");
            else /* set again later in the run: the last value is the one a close would write */
                st = nnp__dump_set_meta(d, json_string_value(json_array_get(kv, 0)),
                                        json_string_value(json_array_get(kv, 1)));
        } else if (json_object_get(e, "same_as")) {
            st = add_same(d, path, jp.s, line, e, &count);
        } else {
            st = add_record(d, path, jp.s, line, e, data, data_size, &expect, &count, &stop);
        }
        json_decref(e);
    }
    if (!st && line == 0)
        st = nnp__fail(NNP_ERR_FORMAT, "%s: the journal of partial dump %s is empty", jp.s, path);
    nnp__sbuf_free(&content);
    nnp__sbuf_free(&jp);
    return st;
}

nnp_status nnp__dump_open_journal(const char *partial, const char *journal_name, nnp_dump **out)
{
    *out = NULL;
    nnp_dump *d;
    nnp_status st = nnp__dump_new(partial, &d);
    if (st)
        return st;
    nnp_map m;
    st = nnp__dump_map(d, partial, &m);
    if (!st)
        st = nnp__journal_load(d, partial, &m, 0, journal_name);
    return nnp__dump_finish(d, st, out);
}
