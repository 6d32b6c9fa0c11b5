/*
 * safetensors.c - reads a .safetensors file through mmap with the reference reader's validation.
 *
 * The checks, in the reference reader's order, each error naming its rule as the reference does:
 *   HeaderTooSmall                file shorter than the 8-byte header length
 *   HeaderTooLarge                header length over 100,000,000 bytes
 *   InvalidHeaderLength           8 + header length past the end of the file
 *   InvalidHeader                 header not valid UTF-8
 *   InvalidHeaderDeserialization  not a JSON object of tensor entries (bad JSON, unknown dtype,
 *                                 __metadata__ not string-to-string, duplicate keys, negative dims)
 *   InvalidOffset                 data_offsets, sorted, not contiguous from 0 (gaps, overlaps, end<begin)
 *   ValidationOverflow            element count or byte size overflows 64 bits
 *   TensorInvalidInfo             end - begin != element count * dtype size
 *   MetadataIncompleteBuffer      8 + header length + last end != file size
 * and one cap of nnparity's own (the reference reader has none):
 *   metadata count cap            __metadata__ over 1,048,576 entries; real files carry a few,
 *                                 and a header of millions costs a gigabyte to index
 * JSON whitespace before and after the object is accepted, as is a header padded with spaces.
 */
#include <stdlib.h>
#include <string.h>

#include "formats/formats.h"
#include "common/json_scan.h"
#include "dump/provenance.h"

#define ST_MAX_HEADER 100000000ull
/* The most __metadata__ entries read, as GGUF's key-value pairs are capped (gguf.c). */
#define ST_MAX_META (1u << 20)

typedef struct {
    size_t name;  /* offset of the NUL-terminated name in the names buffer */
    size_t shape; /* index of the first dimension in the dims array */
    uint32_t ndim;
    nnp_dtype dtype;
    uint64_t begin, end;
    size_t order; /* position in the header, to keep ties (zero-size tensors) stable */
} st_entry;

/* What parsing a header collects: entries, and their names and dimensions in flat arrays. */
typedef struct {
    const char *path;
    st_entry *es;
    size_t n, cap;
    nnp_sbuf names;
    uint64_t *dims;
    size_t ndims, capdims;
    char *records, *partial, *sketches; /* nnparity's metadata values, when present */
    char **meta_keys;        /* this file's metadata keys, for duplicate detection */
    size_t nmeta, capmeta;
    nnp_strindex meta;       /* meta_keys indexed: a header may hold millions of keys, and
                              * comparing each with all before it would take hours */
} st_header;

/* An entry's dimensions. A header whose every tensor is 0-dimensional has no dims array at all
 * (NULL), and even a zero offset from NULL is undefined behaviour. */
static const uint64_t *dims_of(const st_header *h, const st_entry *e)
{
    static const uint64_t none[1];
    return e->ndim ? h->dims + e->shape : none;
}

static const char *name_of(const st_header *h, const st_entry *e)
{
    return h->names.s + e->name;
}

static int entry_by_offsets(const void *pa, const void *pb)
{
    const st_entry *a = pa, *b = pb;
    if (a->begin != b->begin)
        return a->begin < b->begin ? -1 : 1;
    if (a->end != b->end)
        return a->end < b->end ? -1 : 1;
    return a->order < b->order ? -1 : a->order > b->order;
}

/* dtypes that newer safetensors writers use and nnparity does not convert: refused by name rather
 * than as a broken file. */
static bool known_unsupported(const char *dtype)
{
    static const char *const names[] = {"C64", "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (strcmp(dtype, names[i]) == 0)
            return true;
    return false;
}

static nnp_status syntax_error(const st_header *h, const nnp_json *j)
{
    return nnp__fail(NNP_ERR_FORMAT, "%s: byte %llu: header is not valid JSON: %s "
                     "(InvalidHeaderDeserialization)", h->path,
                     (unsigned long long)(8 + j->where), j->what);
}

static nnp_status bad_entry(const st_header *h, const char *name, const char *what)
{
    return nnp__fail(NNP_ERR_FORMAT, "%s: tensor '%s': %s (InvalidHeaderDeserialization)",
                     h->path, name, what);
}

static bool push_dim(st_header *h, uint64_t v)
{
    if (!nnp__grow((void **)&h->dims, &h->capdims, h->ndims + 1, sizeof *h->dims))
        return false;
    h->dims[h->ndims++] = v;
    return true;
}

/* "shape": [d0, d1, ...] */
static nnp_status parse_shape(st_header *h, nnp_json *j, st_entry *e, const char *name)
{
    e->shape = h->ndims;
    e->ndim = 0;
    if (!nnp__json_expect(j, '['))
        return bad_entry(h, name, "\"shape\" is not an array");
    if (nnp__json_peek(j) == ']') {
        j->p++;
        return NNP_OK;
    }
    do {
        uint64_t v;
        bool negative;
        if (!nnp__json_u64(j, &v, &negative)) {
            if (negative)
                return nnp__fail(NNP_ERR_FORMAT, "%s: tensor '%s': dimension %u is negative "
                                 "(InvalidHeaderDeserialization)", h->path, name, e->ndim);
            return j->what && strcmp(j->what, "expected an integer") != 0 &&
                           strcmp(j->what, "integer does not fit 64 bits") != 0
                       ? syntax_error(h, j)
                       : bad_entry(h, name, "\"shape\" holds a value that is not an integer");
        }
        if (e->ndim == UINT32_MAX)
            return bad_entry(h, name, "too many dimensions");
        if (!push_dim(h, v))
            return nnp__nomem();
        e->ndim++;
    } while (nnp__json_more(j, ']'));
    return j->what ? syntax_error(h, j) : NNP_OK;
}

/* "data_offsets": [begin, end] */
static nnp_status parse_offsets(st_header *h, nnp_json *j, st_entry *e, const char *name)
{
    bool negative;
    if (!nnp__json_expect(j, '[') || !nnp__json_u64(j, &e->begin, &negative) ||
        !nnp__json_expect(j, ',') || !nnp__json_u64(j, &e->end, &negative) ||
        !nnp__json_expect(j, ']'))
        return bad_entry(h, name, "\"data_offsets\" is not two non-negative integers");
    return NNP_OK;
}

/* One tensor entry: {"dtype": ..., "shape": [...], "data_offsets": [b, e]}, other fields
 * ignored as the reference reader ignores them. */
static nnp_status parse_entry(st_header *h, nnp_json *j, st_entry *e)
{
    char *name = h->names.s + e->name; /* stable: no name is added while parsing an entry */
    enum { DTYPE = 1, SHAPE = 2, OFFSETS = 4 };
    unsigned seen = 0;
    nnp_status st;
    if (nnp__json_peek(j) != '{')
        return nnp__json_skip(j) ? bad_entry(h, name, "entry is not an object")
                                 : syntax_error(h, j);
    j->p++;
    if (nnp__json_peek(j) == '}') {
        j->p++;
    } else {
        do {
            if (!nnp__json_string(j) || !nnp__json_expect(j, ':'))
                return syntax_error(h, j);
            unsigned field = nnp__json_text_is(j, "dtype")          ? DTYPE
                             : nnp__json_text_is(j, "shape")        ? SHAPE
                             : nnp__json_text_is(j, "data_offsets") ? OFFSETS
                                                                      : 0;
            if (field & seen)
                return nnp__fail(NNP_ERR_FORMAT, "%s: tensor '%s': duplicate field \"%s\" "
                                 "(InvalidHeaderDeserialization)", h->path, name, j->text.s);
            seen |= field;
            if (field == DTYPE) {
                if (nnp__json_peek(j) != '"')
                    return bad_entry(h, name, "\"dtype\" is not a string");
                if (!nnp__json_string(j))
                    return syntax_error(h, j);
                e->dtype = nnp_dtype_from_name(j->text.s);
                if (e->dtype == NNP_DTYPE_INVALID && known_unsupported(j->text.s))
                    return nnp__fail(NNP_ERR_UNSUPPORTED, "%s: tensor '%s': dtype %s is not "
                                     "supported", h->path, name, j->text.s);
                if (e->dtype == NNP_DTYPE_INVALID)
                    return nnp__fail(NNP_ERR_FORMAT, "%s: tensor '%s': unknown dtype \"%s\" "
                                     "(InvalidHeaderDeserialization)", h->path, name, j->text.s);
            } else if (field == SHAPE) {
                if ((st = parse_shape(h, j, e, name)))
                    return st;
            } else if (field == OFFSETS) {
                if ((st = parse_offsets(h, j, e, name)))
                    return st;
            } else if (!nnp__json_skip(j)) {
                return syntax_error(h, j);
            }
        } while (nnp__json_more(j, '}'));
        if (j->what)
            return syntax_error(h, j);
    }
    if (!(seen & DTYPE))
        return bad_entry(h, name, "missing \"dtype\"");
    if (!(seen & SHAPE))
        return bad_entry(h, name, "missing \"shape\"");
    if (!(seen & OFFSETS))
        return bad_entry(h, name, "missing \"data_offsets\"");
    return NNP_OK;
}

static const char *meta_key_at(const void *h, size_t i)
{
    return ((const st_header *)h)->meta_keys[i];
}

/* __metadata__: null or an object of strings. */
static nnp_status parse_metadata(st_header *h, nnp_json *j, nnp_dump *d)
{
    if (nnp__json_peek(j) == 'n')
        return nnp__json_null(j) ? NNP_OK : syntax_error(h, j);
    if (nnp__json_peek(j) != '{')
        return nnp__json_skip(j) ? nnp__fail(NNP_ERR_FORMAT, "%s: __metadata__ is not an object "
                                             "(InvalidHeaderDeserialization)", h->path)
                                 : syntax_error(h, j);
    j->p++;
    if (nnp__json_peek(j) == '}') {
        j->p++;
        return NNP_OK;
    }
    do {
        if (h->nmeta == ST_MAX_META) {
            nnp__json_peek(j);
            return nnp__fail(NNP_ERR_FORMAT, "%s: byte %llu: __metadata__ has more than %u "
                             "entries (metadata count cap)", h->path,
                             (unsigned long long)(8 + (size_t)(j->p - j->base)), ST_MAX_META);
        }
        if (!nnp__json_string(j) || !nnp__json_expect(j, ':'))
            return syntax_error(h, j);
        char *key = strdup(j->text.s);
        if (!key || !nnp__grow((void **)&h->meta_keys, &h->capmeta, h->nmeta + 1,
                               sizeof *h->meta_keys)) {
            free(key);
            return nnp__nomem();
        }
        char **keys = h->meta_keys;
        if (!nnp__strindex_reserve(&h->meta, h->nmeta)) {
            free(key);
            return nnp__nomem();
        }
        size_t at = nnp__strindex_slot(&h->meta, key);
        if (h->meta.slots[at]) {
            nnp_status st = nnp__fail(NNP_ERR_FORMAT, "%s: __metadata__ has key '%s' twice "
                                      "(InvalidHeaderDeserialization)", h->path, key);
            free(key);
            return st;
        }
        keys[h->nmeta++] = key;
        h->meta.slots[at] = (uint32_t)h->nmeta;
        if (nnp__json_peek(j) != '"')
            return nnp__json_skip(j) ? nnp__fail(NNP_ERR_FORMAT, "%s: __metadata__ value of '%s' "
                                                 "is not a string (InvalidHeaderDeserialization)",
                                                 h->path, key)
                                     : syntax_error(h, j);
        if (!nnp__json_string(j))
            return syntax_error(h, j);
        nnp_status st = nnp__dump_add_meta(d, key, j->text.s);
        if (st)
            return st;
        char **slot = strcmp(key, NNP_META_RECORDS_KEY) == 0    ? &h->records
                      : strcmp(key, NNP_META_PARTIAL_KEY) == 0  ? &h->partial
                      : strcmp(key, NNP_META_SKETCHES_KEY) == 0 ? &h->sketches
                                                                : NULL;
        if (slot && !(*slot = strdup(j->text.s)))
            return nnp__nomem();
    } while (nnp__json_more(j, '}'));
    return j->what ? syntax_error(h, j) : NNP_OK;
}

static nnp_status parse_header(st_header *h, nnp_json *j, nnp_dump *d)
{
    if (nnp__json_peek(j) != '{') {
        size_t at = (size_t)(j->p - j->base);
        return nnp__json_skip(j) && nnp__json_end(j)
                   ? nnp__fail(NNP_ERR_FORMAT, "%s: byte %llu: header is not a JSON object "
                               "(InvalidHeaderDeserialization)", h->path,
                               (unsigned long long)(8 + at))
                   : syntax_error(h, j);
    }
    j->p++;
    bool metadata_seen = false;
    if (nnp__json_peek(j) == '}') {
        j->p++;
    } else {
        do {
            if (!nnp__json_string(j) || !nnp__json_expect(j, ':'))
                return syntax_error(h, j);
            nnp_status st;
            if (nnp__json_text_is(j, "__metadata__")) {
                if (metadata_seen)
                    return nnp__fail(NNP_ERR_FORMAT, "%s: __metadata__ appears twice "
                                     "(InvalidHeaderDeserialization)", h->path);
                metadata_seen = true;
                if ((st = parse_metadata(h, j, d)))
                    return st;
                continue;
            }
            if (!nnp__grow((void **)&h->es, &h->cap, h->n + 1, sizeof *h->es))
                return nnp__nomem();
            st_entry *e = &h->es[h->n];
            memset(e, 0, sizeof *e);
            e->order = h->n++;
            e->name = h->names.len;
            nnp__sbuf_put(&h->names, j->text.s, j->text.len + 1);
            if (h->names.failed)
                return nnp__nomem();
            if ((st = parse_entry(h, j, e)))
                return st;
        } while (nnp__json_more(j, '}'));
        if (j->what)
            return syntax_error(h, j);
    }
    return nnp__json_end(j) ? NNP_OK : syntax_error(h, j);
}

/* The reference reader's offset and size rules over entries sorted by offset. */
static nnp_status validate_layout(const st_header *h, uint64_t *data_len)
{
    uint64_t expect = 0;
    for (size_t i = 0; i < h->n; i++) {
        const st_entry *e = &h->es[i];
        const char *name = name_of(h, e);
        if (e->begin != expect || e->end < e->begin)
            return nnp__fail(NNP_ERR_FORMAT, "%s: tensor '%s': data_offsets [%llu, %llu] %s "
                             "(InvalidOffset)", h->path, name, (unsigned long long)e->begin,
                             (unsigned long long)e->end,
                             e->end < e->begin ? "end before begin"
                             : e->begin > expect ? "leave a gap after the previous tensor"
                                                 : "overlap the previous tensor");
        expect = e->end;
        uint64_t nelem, nbytes;
        if (!nnp__shape_nelem(e->ndim, dims_of(h, e), &nelem) ||
            !nnp__mul_u64(nelem, nnp_dtype_size(e->dtype), &nbytes))
            return nnp__fail(NNP_ERR_FORMAT, "%s: tensor '%s': element count overflows 64 bits "
                             "(ValidationOverflow)", h->path, name);
        if (e->end - e->begin != nbytes)
            return nnp__fail(NNP_ERR_FORMAT, "%s: tensor '%s': data_offsets span %llu bytes but "
                             "shape and dtype %s need %llu (TensorInvalidInfo)", h->path, name,
                             (unsigned long long)(e->end - e->begin), nnp_dtype_name(e->dtype),
                             (unsigned long long)nbytes);
    }
    *data_len = expect;
    return NNP_OK;
}

static nnp_status check_prefix(const char *path, const nnp_map *m, uint64_t *hlen)
{
    if (m->size < 8)
        return nnp__fail(NNP_ERR_FORMAT, "%s: byte 0: file is %llu bytes, shorter than the 8-byte "
                         "header length (HeaderTooSmall)", path, (unsigned long long)m->size);
    uint64_t n = nnp__le64(m->base);
    if (n > ST_MAX_HEADER)
        return nnp__fail(NNP_ERR_FORMAT, "%s: byte 0: header length %llu exceeds the limit of "
                         "%llu bytes (HeaderTooLarge)", path, (unsigned long long)n,
                         (unsigned long long)ST_MAX_HEADER);
    if (n > m->size - 8)
        return nnp__fail(NNP_ERR_FORMAT, "%s: byte 0: header length %llu runs past the end of the "
                         "%llu-byte file (InvalidHeaderLength)", path, (unsigned long long)n,
                         (unsigned long long)m->size);
    size_t bad;
    if (!nnp__utf8_valid(m->base + 8, (size_t)n, &bad))
        return nnp__fail(NNP_ERR_FORMAT, "%s: byte %llu: header is not valid UTF-8 "
                         "(InvalidHeader)", path, (unsigned long long)(8 + bad));
    *hlen = n;
    return NNP_OK;
}

static nnp_status load_records(nnp_dump *d, st_header *h, const nnp_map *m, uint64_t hlen)
{
    if (h->n)
        qsort(h->es, h->n, sizeof *h->es, entry_by_offsets);
    uint64_t data_len = 0;
    nnp_status st = validate_layout(h, &data_len);
    if (st)
        return st;
    if (data_len != m->size - 8 - hlen)
        return nnp__fail(NNP_ERR_FORMAT, "%s: byte %llu: tensors end at byte %llu but the file has "
                         "%llu bytes (MetadataIncompleteBuffer)", h->path,
                         (unsigned long long)(8 + hlen + data_len),
                         (unsigned long long)(8 + hlen + data_len), (unsigned long long)m->size);
    const unsigned char *data = m->base + 8 + hlen;
    if ((st = nnp__dump_reserve(d, h->n)))
        return st;
    size_t first;
    nnp__dump_recs(d, &first);
    for (size_t i = 0; i < h->n; i++) {
        nnp_rec *r;
        const st_entry *e = &h->es[i];
        if ((st = nnp__dump_add(d, h->path, name_of(h, e), e->dtype, e->ndim, dims_of(h, e),
                                &r)))
            return st;
        r->raw = data + e->begin;
    }
    if (h->sketches) { /* a capture's fingerprints, one per record in data offset order */
        st = nnp__dump_add_sketch_store(d, h->path, h->sketches, first, h->n);
        h->sketches = NULL;
        if (st)
            return st;
    }
    return h->records ? nnp__provenance_apply(d, h->path, h->records) : NNP_OK;
}

nnp_status nnp__safetensors_load(nnp_dump *d, const char *path)
{
    nnp_map m;
    nnp_status st = nnp__dump_map(d, path, &m);
    if (st)
        return st;
    uint64_t hlen = 0;
    if ((st = check_prefix(path, &m, &hlen)))
        return st;
    st_header h = {.path = path};
    h.meta = (nnp_strindex){.key = meta_key_at, .ctx = &h};
    nnp_json j;
    nnp__json_init(&j, (const char *)m.base + 8, (size_t)hlen);
    st = parse_header(&h, &j, d);
    nnp__dump_set_header_room(d, hlen);
    if (!st && h.partial) {
        /* a writer that never finished: its records are listed in the journal */
        st = h.n ? nnp__fail(NNP_ERR_FORMAT, "%s: a partial dump's header lists tensors", path)
                 : nnp__journal_load(d, path, &m, hlen, h.partial);
    } else if (!st) {
        st = load_records(d, &h, &m, hlen);
    }
    nnp__json_free(&j);
    for (size_t i = 0; i < h.nmeta; i++)
        free(h.meta_keys[i]);
    free(h.meta_keys);
    nnp__strindex_free(&h.meta);
    free(h.es);
    free(h.dims);
    free(h.records);
    free(h.partial);
    free(h.sketches);
    nnp__sbuf_free(&h.names);
    return st;
}
