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
 * JSON whitespace before and after the object is accepted, as is a header padded with spaces.
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "formats/provenance.h"

#define ST_MAX_HEADER 100000000ull

typedef struct {
    const char *name;
    nnp_dtype dtype;
    uint32_t ndim;
    uint64_t *shape;
    uint64_t begin, end;
    size_t order; /* position in the header, to keep ties (zero-size tensors) stable */
} st_entry;

static int entry_by_offsets(const void *pa, const void *pb)
{
    const st_entry *a = pa, *b = pb;
    if (a->begin != b->begin)
        return a->begin < b->begin ? -1 : 1;
    if (a->end != b->end)
        return a->end < b->end ? -1 : 1;
    return a->order < b->order ? -1 : a->order > b->order;
}

/* A JSON integer that is >= 0, or false. */
static bool json_u64(const json_t *v, uint64_t *out)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return false;
    *out = (uint64_t)json_integer_value(v);
    return true;
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

static nnp_status bad_entry(const char *path, const char *name, const char *what)
{
    return nnp__fail(NNP_ERR_FORMAT, "%s: tensor '%s': %s (InvalidHeaderDeserialization)", path,
                     name, what);
}

/* Check one tensor entry's fields and fill `e` (shape allocated with malloc). */
static nnp_status parse_entry(const char *path, const char *name, json_t *v, st_entry *e)
{
    if (!json_is_object(v))
        return bad_entry(path, name, "entry is not an object");
    json_t *jd = json_object_get(v, "dtype"), *js = json_object_get(v, "shape"),
           *jo = json_object_get(v, "data_offsets");
    if (!json_is_string(jd))
        return bad_entry(path, name, "missing or non-string \"dtype\"");
    e->dtype = nnp_dtype_from_name(json_string_value(jd));
    if (e->dtype == NNP_DTYPE_INVALID && known_unsupported(json_string_value(jd)))
        return nnp__fail(NNP_ERR_UNSUPPORTED, "%s: tensor '%s': dtype %s is not supported", path,
                         name, json_string_value(jd));
    if (e->dtype == NNP_DTYPE_INVALID)
        return nnp__fail(NNP_ERR_FORMAT, "%s: tensor '%s': unknown dtype \"%s\" "
                         "(InvalidHeaderDeserialization)", path, name, json_string_value(jd));
    if (!json_is_array(js))
        return bad_entry(path, name, "missing or non-array \"shape\"");
    if (!json_is_array(jo) || json_array_size(jo) != 2 ||
        !json_u64(json_array_get(jo, 0), &e->begin) || !json_u64(json_array_get(jo, 1), &e->end))
        return bad_entry(path, name, "\"data_offsets\" is not two non-negative integers");
    size_t nd = json_array_size(js);
    if (nd > UINT32_MAX)
        return bad_entry(path, name, "too many dimensions");
    e->ndim = (uint32_t)nd;
    e->shape = malloc((nd ? nd : 1) * sizeof *e->shape);
    if (!e->shape)
        return nnp__nomem();
    for (size_t k = 0; k < nd; k++) {
        json_t *dim = json_array_get(js, k);
        if (json_is_integer(dim) && json_integer_value(dim) < 0)
            return nnp__fail(NNP_ERR_FORMAT, "%s: tensor '%s': dimension %zu is negative (%lld) "
                             "(InvalidHeaderDeserialization)", path, name, k,
                             (long long)json_integer_value(dim));
        if (!json_u64(dim, &e->shape[k]))
            return bad_entry(path, name, "\"shape\" holds a value that is not an integer");
    }
    return NNP_OK;
}

/* __metadata__: null or an object of strings. */
static nnp_status read_metadata(nnp_dump *d, const char *path, json_t *meta, const char **records,
                                const char **partial)
{
    if (json_is_null(meta))
        return NNP_OK;
    if (!json_is_object(meta))
        return nnp__fail(NNP_ERR_FORMAT, "%s: __metadata__ is not an object "
                         "(InvalidHeaderDeserialization)", path);
    const char *k;
    json_t *v;
    json_object_foreach(meta, k, v) {
        if (!json_is_string(v))
            return nnp__fail(NNP_ERR_FORMAT, "%s: __metadata__ value of '%s' is not a string "
                             "(InvalidHeaderDeserialization)", path, k);
        nnp_status st = nnp__dump_add_meta(d, k, json_string_value(v));
        if (st)
            return st;
        if (strcmp(k, NNP_META_RECORDS_KEY) == 0)
            *records = json_string_value(v);
        if (strcmp(k, NNP_META_PARTIAL_KEY) == 0)
            *partial = json_string_value(v);
    }
    return NNP_OK;
}

/* The reference reader's offset and size rules over entries sorted by offset. */
static nnp_status validate_layout(const char *path, st_entry *es, size_t n, uint64_t *data_len)
{
    uint64_t expect = 0;
    for (size_t i = 0; i < n; i++) {
        st_entry *e = &es[i];
        if (e->begin != expect || e->end < e->begin)
            return nnp__fail(NNP_ERR_FORMAT, "%s: tensor '%s': data_offsets [%llu, %llu] %s "
                             "(InvalidOffset)", path, e->name, (unsigned long long)e->begin,
                             (unsigned long long)e->end,
                             e->end < e->begin ? "end before begin"
                             : e->begin > expect ? "leave a gap after the previous tensor"
                                                 : "overlap the previous tensor");
        expect = e->end;
        uint64_t nelem, nbytes;
        if (!nnp__shape_nelem(e->ndim, e->shape, &nelem) ||
            !nnp__mul_u64(nelem, nnp_dtype_size(e->dtype), &nbytes))
            return nnp__fail(NNP_ERR_FORMAT, "%s: tensor '%s': element count overflows 64 bits "
                             "(ValidationOverflow)", path, e->name);
        if (e->end - e->begin != nbytes)
            return nnp__fail(NNP_ERR_FORMAT, "%s: tensor '%s': data_offsets span %llu bytes but "
                             "shape and dtype %s need %llu (TensorInvalidInfo)", path, e->name,
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

nnp_status nnp__safetensors_load(nnp_dump *d, const char *path)
{
    nnp_map m;
    nnp_status st = nnp__dump_map(d, path, &m);
    if (st)
        return st;
    uint64_t hlen = 0;
    if ((st = check_prefix(path, &m, &hlen)))
        return st;

    json_error_t jerr;
    json_t *root = json_loadb((const char *)m.base + 8, (size_t)hlen, JSON_REJECT_DUPLICATES,
                              &jerr);
    if (!root)
        return nnp__fail(NNP_ERR_FORMAT, "%s: byte %llu: header is not valid JSON: %s "
                         "(InvalidHeaderDeserialization)", path,
                         (unsigned long long)(8 + (uint64_t)jerr.position), jerr.text);
    st_entry *es = NULL;
    size_t n = 0;
    if (!json_is_object(root)) {
        st = nnp__fail(NNP_ERR_FORMAT, "%s: byte 8: header is not a JSON object "
                       "(InvalidHeaderDeserialization)", path);
        goto out;
    }
    es = calloc(json_object_size(root) + 1, sizeof *es);
    if (!es) {
        st = nnp__nomem();
        goto out;
    }
    const char *records = NULL, *partial = NULL, *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        if (strcmp(key, "__metadata__") == 0) {
            if ((st = read_metadata(d, path, val, &records, &partial)))
                goto out;
            continue;
        }
        es[n].name = key;
        es[n].order = n;
        n++; /* counted before parsing so its shape is freed on failure */
        if ((st = parse_entry(path, key, val, &es[n - 1])))
            goto out;
    }
    nnp__dump_set_header_room(d, hlen);
    if (partial) {
        /* a writer that never finished: its records are listed in the journal */
        st = n ? nnp__fail(NNP_ERR_FORMAT, "%s: a partial dump's header lists tensors", path)
               : nnp__journal_load(d, path, &m, hlen, partial);
        goto out;
    }
    qsort(es, n, sizeof *es, entry_by_offsets);
    uint64_t data_len = 0;
    if ((st = validate_layout(path, es, n, &data_len)))
        goto out;
    if (data_len != m.size - 8 - hlen) {
        st = nnp__fail(NNP_ERR_FORMAT, "%s: byte %llu: tensors end at byte %llu but the file has "
                       "%llu bytes (MetadataIncompleteBuffer)", path,
                       (unsigned long long)(8 + hlen + data_len),
                       (unsigned long long)(8 + hlen + data_len), (unsigned long long)m.size);
        goto out;
    }
    const unsigned char *data = m.base + 8 + hlen;
    for (size_t i = 0; i < n; i++) {
        nnp_rec *r;
        if ((st = nnp__dump_add(d, path, es[i].name, es[i].dtype, es[i].ndim, es[i].shape, &r)))
            goto out;
        r->raw = data + es[i].begin;
    }
    if (records)
        st = nnp__provenance_apply(d, path, records);
out:
    for (size_t i = 0; i < n; i++)
        free(es[i].shape);
    free(es);
    json_decref(root);
    return st;
}
