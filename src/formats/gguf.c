/*
 * gguf.c - reads GGUF files, the single-file checkpoints of ggml and llama.cpp (GGUF versions 2
 * and 3, little-endian; ggml's docs/gguf.md).
 *
 * A GGUF file is: "GGUF", a u32 version, a u64 tensor count and a u64 key-value count; the
 * key-value pairs (a string key, a u32 value type, the value); the tensor infos (a string name, a
 * u32 dimension count, that many u64 dimensions fastest first, a u32 ggml type, a u64 offset);
 * padding to general.alignment (default 32); then the tensor data, each tensor at its offset from
 * the start of that section. A string is a u64 byte count and that many UTF-8 bytes.
 *
 * What the dump shows:
 * - Every key-value pair as a metadata string: integers in decimal, f32 with 9 and f64 with 17
 *   significant digits (enough to give back the exact value), bools as true/false, strings as
 *   they are (one holding a NUL byte is shown as a quoted, escaped literal instead, since metadata
 *   values are C strings), arrays as [a, b, ...] with strings quoted and escaped, cut after 16
 *   items with "... (N items)".
 * - Every tensor as a record in file order, its shape reversed into numpy's row-major order (ggml
 *   dims [64, 4] are shape (4, 64)). F32, F16, BF16, F64, I8, I16, I32 and I64 are read in place
 *   from the mapping. Quantized Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K and Q6_K
 *   tensors become F32 records, dequantized (gguf_quant.c) when their data is first asked for;
 *   "gguf.tensor_type.<name>" records the stored type, so that keys starting with
 *   "gguf.tensor_type." are nnparity's and a file that uses them is refused.
 *
 * What is checked before anything is trusted: the version; every length and count against the
 * bytes left in the file before it is used or anything is allocated for it; keys and tensor names
 * non-empty, UTF-8 and free of NUL bytes, each used once; every string valid UTF-8; bools 0 or 1;
 * general.alignment a u32 power of two; no dimension above ggml's int64 range, element counts and
 * byte sizes computed without overflow, quantized rows a whole number of blocks; every ggml type
 * known (unknown numbers are refused by number, known types nnparity does not read by name);
 * every offset a multiple of the alignment; every tensor's bytes inside the file, and no two
 * tensors sharing a byte.
 *
 * Caps, beyond the bounds the file's size already sets:
 *   keys and tensor names     65,535 bytes (the spec's limit for keys; ggml's names are shorter)
 *   string values             16 MiB (chat templates, the longest strings models carry, are KBs)
 *   array items               2^30 (ggml's own limit; vocabularies hold a few hundred thousand)
 *   key-value pairs, tensors  2^20 each (models hold tens of pairs and thousands of tensors)
 *   dimensions                8 per tensor (ggml writes at most 4)
 * Arrays of arrays, which the spec allows but ggml refuses to read, are refused as unsupported.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/gguf.h"

#define MAX_NAME_BYTES 65535u
#define MAX_STRING_BYTES (16u << 20)
#define MAX_ARRAY_ITEMS (1u << 30)
#define MAX_KV (1u << 20)
#define MAX_TENSORS (1u << 20)
#define MAX_DIMS 8u
#define DEFAULT_ALIGNMENT 32u
#define SHOWN_ITEMS 16u

/* The least bytes one key-value pair / one tensor info can take: an 8-byte length, one byte of
 * key or name (an empty one is refused), then a 4-byte type and a 1-byte value / a 4-byte
 * dimension count, no dimension, a 4-byte type and an 8-byte offset. */
#define MIN_KV_BYTES 14u
#define MIN_TENSOR_BYTES 25u

/* nnparity's keys: each quantized tensor's stored type, for nnp_record_quantization */
#define RESERVED_PREFIX NNP_GGUF_TENSOR_TYPE_PREFIX

/* GGUF value types (enum gguf_type). */
enum {
    V_U8, V_I8, V_U16, V_I16, V_U32, V_I32, V_F32, V_BOOL, V_STRING, V_ARRAY, V_U64, V_I64, V_F64,
    V_COUNT
};

static const char *const vtype_name[V_COUNT] = {"u8",  "i8",  "u16",    "i16",   "u32",
                                                "i32", "f32", "bool",   "string", "array",
                                                "u64", "i64", "f64"};
/* Bytes of a value of each scalar type; for a string or an array, the least it takes (its length
 * field; its item type and count). */
static const unsigned vtype_size[V_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 8, 12, 8, 8, 8};

/* ---- reading with bounds ---- */

typedef struct rd {
    const char *path;
    const unsigned char *p;
    uint64_t size, pos; /* pos <= size always */
} rd;

static nnp_status rfail(const rd *r, nnp_status st, uint64_t off, const char *fmt, ...)
    NNP_PRINTF(4, 5);

static nnp_status rfail(const rd *r, nnp_status st, uint64_t off, const char *fmt, ...)
{
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return nnp__fail(st, "%s: byte %" PRIu64 ": %s", r->path, off, msg);
}

/* How much of a name a message shows: at most 200 bytes, never half a UTF-8 sequence, so that
 * a long name cannot push the rule out of the message. */
static int shown(const char *s)
{
    size_t n = strlen(s);
    if (n <= 200)
        return (int)n;
    n = 200;
    while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
        n--;
    return (int)n;
}

static nnp_status need(const rd *r, uint64_t n, const char *what)
{
    if (r->size - r->pos >= n)
        return NNP_OK;
    return rfail(r, NNP_ERR_FORMAT, r->pos,
                 "the file ends inside %s: %" PRIu64 " bytes needed, %" PRIu64 " left "
                 "(gguf truncated)", what, n, r->size - r->pos);
}

/* A string in the file: its bytes (in the mapping), length and where its length field is. */
typedef struct str {
    const unsigned char *s;
    uint64_t len, at;
} str;

static nnp_status read_str(rd *r, const char *what, uint64_t cap, str *out)
{
    out->at = r->pos;
    nnp_status st = need(r, 8, what);
    if (st)
        return st;
    uint64_t n = nnp__le64(r->p + r->pos), left = r->size - r->pos - 8;
    if (n > left)
        return rfail(r, NNP_ERR_FORMAT, r->pos,
                     "%s is %" PRIu64 " bytes long, but only %" PRIu64 " bytes follow its length "
                     "(gguf string length)", what, n, left);
    if (n > cap)
        return rfail(r, NNP_ERR_UNSUPPORTED, r->pos,
                     "%s is %" PRIu64 " bytes long; nnparity reads at most %" PRIu64
                     " (gguf string cap)", what, n, cap);
    out->s = r->p + r->pos + 8;
    out->len = n;
    r->pos += 8 + n;
    size_t bad;
    if (!nnp__utf8_valid(out->s, (size_t)n, &bad))
        return rfail(r, NNP_ERR_FORMAT, out->at + 8 + bad, "%s is not valid UTF-8 (gguf string)",
                     what);
    return NNP_OK;
}

/* A key or a tensor name: also non-empty and free of NUL bytes, as it becomes a C string. */
static nnp_status read_ident(rd *r, const char *what, str *out)
{
    nnp_status st = read_str(r, what, MAX_NAME_BYTES, out);
    if (st)
        return st;
    if (!out->len)
        return rfail(r, NNP_ERR_FORMAT, out->at, "%s is empty (gguf name)", what);
    const unsigned char *nul = memchr(out->s, 0, (size_t)out->len);
    if (nul)
        return rfail(r, NNP_ERR_FORMAT, out->at + 8 + (uint64_t)(nul - out->s),
                     "%s holds a NUL byte (gguf name)", what);
    return NNP_OK;
}

/* ---- a set of names, to find the second use of a key or tensor name ---- */

typedef struct name_set {
    str *items;
    size_t n, cap;
    size_t *slots; /* item index + 1, 0 for an empty slot; nslots is a power of two */
    size_t nslots;
} name_set;

static uint64_t hash_bytes(const unsigned char *s, uint64_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (uint64_t i = 0; i < n; i++)
        h = (h ^ s[i]) * 1099511628211ull;
    return h;
}

static size_t slot_for(const name_set *set, const str *s)
{
    size_t mask = set->nslots - 1, i = (size_t)hash_bytes(s->s, s->len) & mask;
    for (; set->slots[i]; i = (i + 1) & mask) {
        const str *o = &set->items[set->slots[i] - 1];
        if (o->len == s->len && memcmp(o->s, s->s, (size_t)s->len) == 0)
            break;
    }
    return i;
}

/* Add `s`, or find the equal name already there (*first; NULL when `s` is new). */
static nnp_status set_add(name_set *set, const str *s, const str **first)
{
    *first = NULL;
    if ((set->n + 1) * 2 > set->nslots) {
        size_t n = set->nslots ? set->nslots * 2 : 64;
        size_t *slots = calloc(n, sizeof *slots);
        if (!slots)
            return nnp__nomem();
        free(set->slots);
        set->slots = slots;
        set->nslots = n;
        for (size_t i = 0; i < set->n; i++)
            set->slots[slot_for(set, &set->items[i])] = i + 1;
    }
    size_t slot = slot_for(set, s);
    if (set->slots[slot]) {
        *first = &set->items[set->slots[slot] - 1];
        return NNP_OK;
    }
    if (!nnp__grow((void **)&set->items, &set->cap, set->n + 1, sizeof *set->items))
        return nnp__nomem();
    set->items[set->n++] = *s;
    set->slots[slot] = set->n;
    return NNP_OK;
}

static void set_free(name_set *set)
{
    free(set->items);
    free(set->slots);
}

/* ---- metadata values as text ---- */

/* Two's complement value of the low `bits` bits of v. */
static int64_t as_signed(uint64_t v, unsigned bits)
{
    if (bits == 64)
        return v > (uint64_t)INT64_MAX ? -(int64_t)(UINT64_MAX - v) - 1 : (int64_t)v;
    uint64_t sign = (uint64_t)1 << (bits - 1);
    return (v & sign) ? (int64_t)v - (int64_t)(sign << 1) : (int64_t)v;
}

/* Empty a buffer for reuse. */
static void sbuf_clear(nnp_sbuf *b)
{
    b->len = 0;
    if (b->s)
        b->s[0] = 0;
}

/* s[0..n) as a JSON string literal: quotes, backslashes and control characters escaped. */
static void put_quoted(nnp_sbuf *b, const unsigned char *s, uint64_t n)
{
    nnp__sbuf_put(b, "\"", 1);
    uint64_t run = 0;
    for (uint64_t i = 0; i < n; i++) {
        unsigned char c = s[i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        nnp__sbuf_put(b, (const char *)s + run, (size_t)(i - run));
        if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            nnp__sbuf_put(b, esc, 2);
        } else {
            nnp__sbuf_printf(b, "\\u%04x", c);
        }
        run = i + 1;
    }
    nnp__sbuf_put(b, (const char *)s + run, (size_t)(n - run));
    nnp__sbuf_put(b, "\"", 1);
}

/* Read one scalar (not a string or an array) of `type`; append its text to b unless b is NULL. */
static nnp_status put_scalar(rd *r, const char *what, uint32_t type, nnp_sbuf *b)
{
    nnp_status st = need(r, vtype_size[type], what);
    if (st)
        return st;
    const unsigned char *p = r->p + r->pos;
    uint64_t u = 0;
    switch (vtype_size[type]) {
    case 1: u = p[0]; break;
    case 2: u = nnp__le16(p); break;
    case 4: u = nnp__le32(p); break;
    default: u = nnp__le64(p); break;
    }
    if (type == V_BOOL && u > 1)
        return rfail(r, NNP_ERR_FORMAT, r->pos, "%s: a bool is 0 or 1, not %" PRIu64
                     " (gguf bool)", what, u);
    r->pos += vtype_size[type];
    if (!b)
        return NNP_OK;
    switch (type) {
    case V_U8:
    case V_U16:
    case V_U32:
    case V_U64:
        nnp__sbuf_printf(b, "%" PRIu64, u);
        break;
    case V_I8:
    case V_I16:
    case V_I32:
    case V_I64:
        nnp__sbuf_printf(b, "%" PRId64, as_signed(u, 8 * vtype_size[type]));
        break;
    case V_F32: {
        uint32_t bits = (uint32_t)u;
        float f;
        memcpy(&f, &bits, sizeof f);
        nnp__sbuf_printf(b, "%.9g", (double)f);
        break;
    }
    case V_F64: {
        double f;
        memcpy(&f, &u, sizeof f);
        nnp__sbuf_printf(b, "%.17g", f);
        break;
    }
    default: /* V_BOOL */
        nnp__sbuf_puts(b, u ? "true" : "false");
        break;
    }
    return NNP_OK;
}

static nnp_status put_array(rd *r, const char *key, nnp_sbuf *b)
{
    char what[320];
    snprintf(what, sizeof what, "the array of key '%.*s'", shown(key), key);
    uint64_t at = r->pos;
    nnp_status st = need(r, 12, what);
    if (st)
        return st;
    uint32_t et = nnp__le32(r->p + at);
    uint64_t count = nnp__le64(r->p + at + 4);
    if (et == V_ARRAY)
        return rfail(r, NNP_ERR_UNSUPPORTED, at, "key '%.*s' holds an array of arrays, which "
                     "nnparity does not read (nor does ggml)", shown(key), key);
    if (et >= V_COUNT)
        return rfail(r, NNP_ERR_FORMAT, at, "key '%.*s': array item type %" PRIu32 " is no "
                     "GGUF value type (gguf value type)", shown(key), key, et);
    r->pos += 12;
    uint64_t left = r->size - r->pos, least = vtype_size[et];
    if (count > left / least)
        return rfail(r, NNP_ERR_FORMAT, at + 4, "key '%.*s': an array of %" PRIu64 " %s items "
                     "cannot fit in the %" PRIu64 " bytes left (gguf array length)", shown(key),
                     key, count, vtype_name[et], left);
    if (count > MAX_ARRAY_ITEMS)
        return rfail(r, NNP_ERR_UNSUPPORTED, at + 4, "key '%.*s': an array of %" PRIu64
                     " items; nnparity reads at most %u (gguf array cap)", shown(key), key, count,
                     MAX_ARRAY_ITEMS);
    /* Messages about an item give its byte offset, which says which item it is. */
    snprintf(what, sizeof what, "an item of key '%.*s'", shown(key), key);
    nnp__sbuf_put(b, "[", 1);
    for (uint64_t i = 0; i < count; i++) {
        bool show = i < SHOWN_ITEMS;
        if (show && i)
            nnp__sbuf_put(b, ", ", 2);
        if (et == V_STRING) {
            str s;
            if ((st = read_str(r, what, MAX_STRING_BYTES, &s)))
                return st;
            if (show)
                put_quoted(b, s.s, s.len);
        } else if (show || et == V_BOOL) {
            /* bools are each checked; other scalars past the shown ones need no reading */
            if ((st = put_scalar(r, what, et, show ? b : NULL)))
                return st;
        } else {
            r->pos += (count - i) * least; /* within the file: count was checked above */
            break;
        }
    }
    if (count > SHOWN_ITEMS)
        nnp__sbuf_printf(b, ", ... (%" PRIu64 " items)", count);
    nnp__sbuf_put(b, "]", 1);
    return NNP_OK;
}

/* ---- tensors ---- */

typedef struct tinfo {
    const char *name;         /* copied into the dump */
    const nnp_ggml_type *type;
    uint32_t type_num, ndim;
    uint64_t dims[MAX_DIMS];  /* ggml order: fastest first */
    uint64_t at, offset_at;   /* where the info and its offset field are */
    uint64_t offset;          /* from the start of the data section */
    uint64_t nelem, nbytes;   /* elements, and bytes as stored */
    uint64_t start;           /* where the data starts in the file */
} tinfo;

/* What a quantized record's loader needs. */
typedef struct quant_src {
    const unsigned char *src;
    uint32_t type;
    uint64_t nblocks;
    const char *file, *name;
} quant_src;

static nnp_status load_quant(void *ctx, void *dst, uint64_t nbytes)
{
    const quant_src *q = ctx;
    const nnp_ggml_type *t = nnp__ggml_type(q->type);
    uint64_t want;
    if (!t || !nnp__mul_u64(q->nblocks, (uint64_t)t->block * sizeof(float), &want) ||
        want != nbytes || !nnp__ggml_dequantize(q->type, q->src, q->nblocks, dst))
        return nnp__fail(NNP_ERR_INTERNAL, "%s: tensor '%.*s': cannot dequantize %" PRIu64
                         " bytes of ggml type %" PRIu32, q->file, shown(q->name), q->name, nbytes,
                         q->type);
    return NNP_OK;
}

static int by_start(const void *pa, const void *pb)
{
    const tinfo *a = *(const tinfo *const *)pa, *b = *(const tinfo *const *)pb;
    if (a->start != b->start)
        return a->start < b->start ? -1 : 1;
    return a < b ? -1 : a > b; /* file order among equal starts */
}

/* Read one tensor info at r->pos into t, checking what it says on its own. */
static nnp_status read_tensor_info(nnp_dump *d, rd *r, uint64_t i, uint32_t alignment,
                                   name_set *names, tinfo *t)
{
    char what[320];
    snprintf(what, sizeof what, "the name of tensor %" PRIu64, i);
    str nm;
    const str *first;
    nnp_status st = read_ident(r, what, &nm);
    if (st)
        return st;
    if ((st = set_add(names, &nm, &first)))
        return st;
    memset(t, 0, sizeof *t);
    t->at = nm.at;
    if (!(t->name = nnp__dump_strndup(d, (const char *)nm.s, (size_t)nm.len)))
        return NNP_ERR_NOMEM;
    const char *name = t->name;
    int nw = shown(name);
    if (first)
        return rfail(r, NNP_ERR_FORMAT, nm.at, "tensor name '%.*s' appears twice; the first is at "
                     "byte %" PRIu64 " (gguf duplicate tensor name)", nw, name, first->at);

    snprintf(what, sizeof what, "the dimension count of tensor '%.*s'", nw, name);
    if ((st = need(r, 4, what)))
        return st;
    t->ndim = nnp__le32(r->p + r->pos);
    if (t->ndim > MAX_DIMS)
        return rfail(r, NNP_ERR_UNSUPPORTED, r->pos, "tensor '%.*s' has %" PRIu32 " dimensions; "
                     "nnparity reads at most %u (ggml writes at most 4)", nw, name, t->ndim,
                     MAX_DIMS);
    r->pos += 4;
    uint64_t dims_at = r->pos;
    snprintf(what, sizeof what, "the dimensions of tensor '%.*s'", nw, name);
    if ((st = need(r, 8 * (uint64_t)t->ndim, what)))
        return st;
    for (uint32_t k = 0; k < t->ndim; k++) {
        t->dims[k] = nnp__le64(r->p + r->pos);
        if (t->dims[k] > (uint64_t)INT64_MAX)
            return rfail(r, NNP_ERR_FORMAT, r->pos, "tensor '%.*s': dimension %" PRIu32 " is %"
                         PRIu64 ", beyond ggml's int64 range (gguf tensor shape)", nw, name, k,
                         t->dims[k]);
        r->pos += 8;
    }

    snprintf(what, sizeof what, "the type of tensor '%.*s'", nw, name);
    if ((st = need(r, 4, what)))
        return st;
    uint64_t type_at = r->pos;
    t->type_num = nnp__le32(r->p + r->pos);
    t->type = nnp__ggml_type(t->type_num);
    if (!t->type)
        return rfail(r, NNP_ERR_UNSUPPORTED, type_at, "tensor '%.*s' has ggml type %" PRIu32
                     ", which nnparity does not know (a newer ggml's type, or a damaged file)",
                     nw, name, t->type_num);
    if (t->type->dtype == NNP_DTYPE_INVALID)
        return rfail(r, NNP_ERR_UNSUPPORTED, type_at, "tensor '%.*s' has ggml type %s (%" PRIu32
                     "), which %s", nw, name, t->type->name, t->type_num,
                     t->type->removed ? "ggml no longer reads from GGUF files"
                                      : "nnparity does not read; it reads F32, F16, BF16, F64, "
                                        "I8, I16, I32, I64, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and "
                                        "Q2_K to Q6_K");
    r->pos += 4;

    snprintf(what, sizeof what, "the data offset of tensor '%.*s'", nw, name);
    if ((st = need(r, 8, what)))
        return st;
    t->offset_at = r->pos;
    t->offset = nnp__le64(r->p + r->pos);
    r->pos += 8;

    if (!nnp__shape_nelem(t->ndim, t->dims, &t->nelem))
        return rfail(r, NNP_ERR_FORMAT, dims_at, "tensor '%.*s': the product of its dimensions "
                     "overflows 64 bits (gguf tensor shape)", nw, name);
    uint64_t row = t->ndim ? t->dims[0] : 1, out_bytes;
    if (row % t->type->block)
        return rfail(r, NNP_ERR_FORMAT, dims_at, "tensor '%.*s' of type %s: its first (fastest) "
                     "dimension, %" PRIu64 ", is not a multiple of the block size %" PRIu32
                     " (gguf tensor shape)", nw, name, t->type->name, row, t->type->block);
    if (!nnp__mul_u64(t->nelem / t->type->block, t->type->size, &t->nbytes) ||
        !nnp__mul_u64(t->nelem, nnp_dtype_size(t->type->dtype), &out_bytes))
        return rfail(r, NNP_ERR_FORMAT, dims_at, "tensor '%.*s': its size in bytes overflows 64 "
                     "bits (gguf tensor shape)", nw, name);
    if (t->offset % alignment)
        return rfail(r, NNP_ERR_FORMAT, t->offset_at, "tensor '%.*s': data offset %" PRIu64
                     " is not a multiple of the alignment, %" PRIu32 " (gguf tensor offset)", nw,
                     name, t->offset, alignment);
    return NNP_OK;
}

/* Place every tensor in the file: inside it, and no two sharing a byte. */
static nnp_status place_tensors(rd *r, tinfo *ts, size_t n, uint64_t data_start)
{
    for (size_t i = 0; i < n; i++) {
        tinfo *t = &ts[i];
        uint64_t end;
        if (!nnp__add_u64(data_start, t->offset, &t->start) ||
            !nnp__add_u64(t->start, t->nbytes, &end) || end > r->size)
            return rfail(r, NNP_ERR_FORMAT, t->offset_at, "tensor '%.*s': its %" PRIu64 " bytes "
                         "at offset %" PRIu64 " from the data section (byte %" PRIu64 ") run "
                         "past the end of the file, at byte %" PRIu64 " (gguf tensor data)",
                         shown(t->name), t->name, t->nbytes, t->offset, data_start, r->size);
    }
    if (n < 2)
        return NNP_OK;
    const tinfo **order = malloc(n * sizeof *order);
    if (!order)
        return nnp__nomem();
    for (size_t i = 0; i < n; i++)
        order[i] = &ts[i];
    qsort(order, n, sizeof *order, by_start);
    const tinfo *last = NULL; /* the tensor reaching furthest so far */
    nnp_status st = NNP_OK;
    for (size_t i = 0; i < n && !st; i++) {
        const tinfo *t = order[i];
        if (!t->nbytes)
            continue;
        if (last && t->start < last->start + last->nbytes) {
            const tinfo *a = last < t ? last : t, *b = last < t ? t : last;
            st = rfail(r, NNP_ERR_FORMAT, b->at, "tensors '%.*s' and '%.*s' overlap: bytes %"
                       PRIu64 "..%" PRIu64 " and %" PRIu64 "..%" PRIu64 " of the file "
                       "(gguf tensor data)", shown(a->name), a->name, shown(b->name), b->name,
                       a->start, a->start + a->nbytes, b->start, b->start + b->nbytes);
        } else if (!last || t->start + t->nbytes > last->start + last->nbytes) {
            last = t;
        }
    }
    free(order);
    return st;
}

/* Add the records: plain types in place, quantized ones through a dequantizing loader. */
static nnp_status add_records(nnp_dump *d, const rd *r, const tinfo *ts, size_t n,
                              nnp_sbuf *key)
{
    for (size_t i = 0; i < n; i++) {
        const tinfo *t = &ts[i];
        uint64_t shape[MAX_DIMS];
        for (uint32_t k = 0; k < t->ndim; k++)
            shape[k] = t->dims[t->ndim - 1 - k];
        nnp_rec *rec;
        nnp_status st = nnp__dump_add(d, r->path, t->name, t->type->dtype, t->ndim, shape, &rec);
        if (st)
            return st;
        if (!t->type->quantized) {
            rec->raw = r->p + t->start;
            continue;
        }
        quant_src *q = malloc(sizeof *q);
        if (!q)
            return nnp__nomem();
        *q = (quant_src){r->p + t->start, t->type_num, t->nelem / t->type->block, rec->pub.file,
                         rec->pub.name};
        if ((st = nnp__dump_defer(d, free, q)))
            return st;
        rec->load = load_quant;
        rec->load_ctx = q;
        rec->stored = t->nbytes;
        rec->stored_set = true;
        sbuf_clear(key);
        nnp__sbuf_puts(key, RESERVED_PREFIX);
        nnp__sbuf_puts(key, t->name);
        if (key->failed)
            return nnp__nomem();
        if ((st = nnp__dump_add_meta(d, key->s, t->type->name)))
            return st;
    }
    return NNP_OK;
}

/* ---- the file ---- */

typedef struct gguf_state {
    name_set keys, names;
    nnp_sbuf key, value;
    tinfo *ts;
    size_t nts, capts;
} gguf_state;

static nnp_status read_header(rd *r, uint64_t *ntensors, uint64_t *nkv)
{
    static const unsigned char magic[4] = {'G', 'G', 'U', 'F'};
    size_t have = r->size < 4 ? (size_t)r->size : 4;
    if (memcmp(r->p ? r->p : magic, magic, have) != 0)
        return rfail(r, NNP_ERR_FORMAT, 0, "not a GGUF file: it does not start with \"GGUF\" "
                     "(gguf magic)");
    nnp_status st = need(r, 24, "the header (magic, version, tensor and key-value counts)");
    if (st)
        return st;
    uint32_t version = nnp__le32(r->p + 4);
    uint32_t swapped = __builtin_bswap32(version);
    if (version != 2 && version != 3) {
        if ((version & 0xFFFFu) == 0 && swapped >= 1 && swapped <= 3)
            return rfail(r, NNP_ERR_UNSUPPORTED, 4, "the version reads %" PRIu32 " little-endian "
                         "and %" PRIu32 " big-endian: this is a big-endian GGUF file, which "
                         "nnparity does not read (gguf version)", version, swapped);
        return rfail(r, NNP_ERR_UNSUPPORTED, 4, "GGUF version %" PRIu32 " is not read; versions "
                     "2 and 3 are (gguf version)", version);
    }
    *ntensors = nnp__le64(r->p + 8);
    *nkv = nnp__le64(r->p + 16);
    r->pos = 24;
    uint64_t left = r->size - r->pos;
    if (*nkv > left / MIN_KV_BYTES)
        return rfail(r, NNP_ERR_FORMAT, 16, "%" PRIu64 " key-value pairs cannot fit in the %"
                     PRIu64 " bytes after the header (gguf counts)", *nkv, left);
    if (*ntensors > (left - *nkv * MIN_KV_BYTES) / MIN_TENSOR_BYTES)
        return rfail(r, NNP_ERR_FORMAT, 8, "%" PRIu64 " tensor infos and %" PRIu64 " key-value "
                     "pairs cannot fit in the %" PRIu64 " bytes after the header (gguf counts)",
                     *ntensors, *nkv, left);
    if (*nkv > MAX_KV)
        return rfail(r, NNP_ERR_UNSUPPORTED, 16, "%" PRIu64 " key-value pairs; nnparity reads at "
                     "most %u (gguf count cap)", *nkv, MAX_KV);
    if (*ntensors > MAX_TENSORS)
        return rfail(r, NNP_ERR_UNSUPPORTED, 8, "%" PRIu64 " tensors; nnparity reads at most %u "
                     "(gguf count cap)", *ntensors, MAX_TENSORS);
    return NNP_OK;
}

/* One key-value pair: checked, added as metadata; general.alignment also sets *alignment. */
static nnp_status read_kv(nnp_dump *d, rd *r, uint64_t i, gguf_state *g, uint32_t *alignment)
{
    char what[320];
    snprintf(what, sizeof what, "the key of key-value pair %" PRIu64, i);
    str k;
    const str *first;
    nnp_status st = read_ident(r, what, &k);
    if (st)
        return st;
    if ((st = set_add(&g->keys, &k, &first)))
        return st;
    sbuf_clear(&g->key);
    nnp__sbuf_put(&g->key, (const char *)k.s, (size_t)k.len);
    if (g->key.failed)
        return nnp__nomem();
    const char *key = g->key.s;
    int kw = shown(key);
    if (first)
        return rfail(r, NNP_ERR_FORMAT, k.at, "key '%.*s' appears twice; the first is at byte %"
                     PRIu64 " (gguf duplicate key)", kw, key, first->at);
    if (strncmp(key, RESERVED_PREFIX, strlen(RESERVED_PREFIX)) == 0)
        return rfail(r, NNP_ERR_UNSUPPORTED, k.at, "key '%.*s' is in nnparity's own namespace: "
                     "nnparity lists each quantized tensor's type as '" RESERVED_PREFIX
                     "<tensor name>'", kw, key);

    snprintf(what, sizeof what, "the value type of key '%.*s'", kw, key);
    if ((st = need(r, 4, what)))
        return st;
    uint64_t type_at = r->pos;
    uint32_t type = nnp__le32(r->p + r->pos);
    if (type >= V_COUNT)
        return rfail(r, NNP_ERR_FORMAT, type_at, "key '%.*s' has value type %" PRIu32 ", which is "
                     "no GGUF value type (gguf value type)", kw, key, type);
    r->pos += 4;
    sbuf_clear(&g->value);
    snprintf(what, sizeof what, "the value of key '%.*s'", kw, key);
    if (type == V_ARRAY) {
        st = put_array(r, key, &g->value);
    } else if (type == V_STRING) {
        str s;
        st = read_str(r, what, MAX_STRING_BYTES, &s);
        /* Metadata values are C strings: one with a NUL byte is shown quoted and escaped. */
        if (!st && memchr(s.s, 0, (size_t)s.len))
            put_quoted(&g->value, s.s, s.len);
        else if (!st)
            nnp__sbuf_put(&g->value, (const char *)s.s, (size_t)s.len);
    } else {
        st = put_scalar(r, what, type, &g->value);
    }
    if (st)
        return st;
    if (g->value.failed)
        return nnp__nomem();

    if (strcmp(key, "general.alignment") == 0) {
        if (type != V_U32)
            return rfail(r, NNP_ERR_FORMAT, type_at, "general.alignment is a %s; it must be a "
                         "u32 (gguf alignment)", vtype_name[type]);
        uint32_t a = nnp__le32(r->p + type_at + 4);
        if (a == 0 || (a & (a - 1)) != 0)
            return rfail(r, NNP_ERR_FORMAT, type_at + 4, "general.alignment is %" PRIu32 ", not a "
                         "power of two (gguf alignment)", a);
        *alignment = a;
    }
    return nnp__dump_add_meta(d, key, g->value.s ? g->value.s : "");
}

static nnp_status gguf_read(nnp_dump *d, rd *r, gguf_state *g)
{
    uint64_t ntensors = 0, nkv = 0;
    nnp_status st = read_header(r, &ntensors, &nkv);
    if (st)
        return st;
    uint32_t alignment = DEFAULT_ALIGNMENT;
    for (uint64_t i = 0; i < nkv; i++)
        if ((st = read_kv(d, r, i, g, &alignment)))
            return st;
    for (uint64_t i = 0; i < ntensors; i++) {
        if (!nnp__grow((void **)&g->ts, &g->capts, g->nts + 1, sizeof *g->ts))
            return nnp__nomem();
        if ((st = read_tensor_info(d, r, i, alignment, &g->names, &g->ts[g->nts])))
            return st;
        g->nts++;
    }
    /* The data section starts at the next multiple of the alignment; ggml pads only when the
     * file holds a tensor. */
    uint64_t data_start = r->pos;
    if (ntensors && data_start % alignment)
        data_start += alignment - data_start % alignment; /* below 2^64: pos <= size < 2^63 */
    if ((st = place_tensors(r, g->ts, g->nts, data_start)))
        return st;
    return add_records(d, r, g->ts, g->nts, &g->key);
}

nnp_status nnp__gguf_load(nnp_dump *d, const char *path)
{
    nnp_map m;
    nnp_status st = nnp__dump_map(d, path, &m);
    if (st)
        return st;
    rd r = {path, m.base, m.size, 0};
    gguf_state g;
    memset(&g, 0, sizeof g);
    st = gguf_read(d, &r, &g);
    set_free(&g.keys);
    set_free(&g.names);
    nnp__sbuf_free(&g.key);
    nnp__sbuf_free(&g.value);
    free(g.ts);
    return st;
}
