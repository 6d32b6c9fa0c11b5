/*
 * npy.c - reads numpy's .npy files (format versions 1.0, 2.0 and 3.0) and parses their header, a
 * Python dict literal, strictly and without evaluating anything: only the three keys numpy
 * writes, plain quoted strings, True/False and tuples of integers are accepted.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "formats/npy.h"

static nnp_status npy_fail(nnp_status st, const char *file, const char *member, uint64_t off,
                           const char *fmt, ...) NNP_PRINTF(5, 6);

static nnp_status npy_fail(nnp_status st, const char *file, const char *member, uint64_t off,
                           const char *fmt, ...)
{
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (member)
        return nnp__fail(st, "%s: member '%s': byte %" PRIu64 ": %s", file, member, off, msg);
    return nnp__fail(st, "%s: byte %" PRIu64 ": %s", file, off, msg);
}

nnp_status nnp__npy_preamble(const char *file, const char *member, const unsigned char *p,
                             uint64_t size, uint64_t *data_offset)
{
    static const unsigned char magic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
    size_t have = size < sizeof magic ? (size_t)size : sizeof magic;
    if (have && memcmp(p, magic, have) != 0)
        return npy_fail(NNP_ERR_FORMAT, file, member, 0,
                        "not an npy array: it does not start with \\x93NUMPY (npy magic)");
    if (size < 8)
        return npy_fail(NNP_ERR_FORMAT, file, member, size,
                        "the npy ends inside its magic and version (npy magic)");
    unsigned major = p[6], minor = p[7];
    if (major < 1 || major > 3 || minor != 0)
        return npy_fail(NNP_ERR_UNSUPPORTED, file, member, 6,
                        "npy format version %u.%u is not read; versions 1.0, 2.0 and 3.0 are "
                        "(npy version)", major, minor);
    uint64_t hstart = major == 1 ? 10 : 12;
    if (size < hstart)
        return npy_fail(NNP_ERR_FORMAT, file, member, size,
                        "the npy ends inside its header length (npy header length)");
    uint64_t hlen = major == 1 ? nnp__le16(p + 8) : nnp__le32(p + 8);
    if (hstart + hlen > size)
        return npy_fail(NNP_ERR_FORMAT, file, member, 8,
                        "header length %" PRIu64 " runs past the end: the header would end at "
                        "byte %" PRIu64 " but the npy is %" PRIu64 " bytes long (npy header length)",
                        hlen, hstart + hlen, size);
    *data_offset = hstart + hlen;
    return NNP_OK;
}

/* ---- the header dict ---- */

typedef struct hdr {
    const char *file, *member;
    const unsigned char *s; /* the header text */
    size_t n, i;            /* its length and the cursor */
    uint64_t base;          /* offset of s[0] in the npy, for messages */
    bool py2;               /* versions 1.0 and 2.0 may come from Python 2, which wrote 3L */
} hdr;

#define HFAIL(h, st, ...) npy_fail((st), (h)->file, (h)->member, (h)->base + (h)->i, __VA_ARGS__)

/* Nesting deeper than this is no npy header and would only risk the stack. */
#define MAX_DEPTH 32

static bool at(const hdr *h, unsigned char c)
{
    return h->i < h->n && h->s[h->i] == c;
}

static bool is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static bool is_word(unsigned char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

/* Whitespace between tokens; inside braces Python joins lines, so newlines count too. */
static void skip_ws(hdr *h)
{
    while (h->i < h->n) {
        unsigned char c = h->s[h->i];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r' && c != '\f')
            break;
        h->i++;
    }
}

/* A quoted string at the cursor; *start and *len locate its contents in h->s. */
static nnp_status parse_str(hdr *h, size_t *start, size_t *len)
{
    unsigned char q = h->s[h->i];
    size_t j = h->i + 1;
    while (j < h->n && h->s[j] != q) {
        if (h->s[j] == '\\') {
            h->i = j;
            return HFAIL(h, NNP_ERR_UNSUPPORTED,
                         "escape sequence in a header string; npy headers never need one "
                         "(npy header)");
        }
        if (h->s[j] == '\n' || h->s[j] == '\r') {
            h->i = j;
            return HFAIL(h, NNP_ERR_FORMAT, "string has no closing quote (npy header)");
        }
        j++;
    }
    if (j >= h->n)
        return HFAIL(h, NNP_ERR_FORMAT, "string runs past the end of the header (npy header)");
    *start = h->i + 1;
    *len = j - h->i - 1;
    h->i = j + 1;
    return NNP_OK;
}

/* Step over any literal (to name a structured dtype rather than trip over its field list). */
static nnp_status skip_value(hdr *h, int depth)
{
    if (depth > MAX_DEPTH)
        return HFAIL(h, NNP_ERR_FORMAT, "literal nested more than %d deep (npy header)",
                     MAX_DEPTH);
    skip_ws(h);
    if (h->i >= h->n)
        return HFAIL(h, NNP_ERR_FORMAT, "header ends where a value should be (npy header)");
    unsigned char c = h->s[h->i];
    if (c == '\'' || c == '"') {
        size_t a, b;
        return parse_str(h, &a, &b);
    }
    if (c == '(' || c == '[' || c == '{') {
        unsigned char close = c == '(' ? ')' : c == '[' ? ']' : '}';
        h->i++;
        for (;;) {
            skip_ws(h);
            if (at(h, close)) {
                h->i++;
                return NNP_OK;
            }
            nnp_status st = skip_value(h, depth + 1);
            if (st)
                return st;
            skip_ws(h);
            if (c == '{') {
                if (!at(h, ':'))
                    return HFAIL(h, NNP_ERR_FORMAT, "expected ':' (npy header)");
                h->i++;
                if ((st = skip_value(h, depth + 1)))
                    return st;
                skip_ws(h);
            }
            if (at(h, ',')) {
                h->i++;
                continue;
            }
            if (at(h, close))
                continue;
            return HFAIL(h, NNP_ERR_FORMAT, "expected ',' or '%c' (npy header)", close);
        }
    }
    size_t j = h->i;
    while (j < h->n && (is_word(h->s[j]) || h->s[j] == '.' || h->s[j] == '+' || h->s[j] == '-'))
        j++;
    if (j == h->i)
        return HFAIL(h, NNP_ERR_FORMAT, "unexpected character 0x%02x where a value should be "
                     "(npy header)", c);
    h->i = j;
    return NNP_OK;
}

static nnp_status parse_shape(hdr *h, nnp_npy_info *out)
{
    if (!at(h, '('))
        return HFAIL(h, NNP_ERR_FORMAT, "'shape' is not a tuple (npy header)");
    h->i++;
    uint32_t nd = 0;
    bool comma = false;
    for (;;) {
        skip_ws(h);
        if (at(h, ')')) {
            /* "(3)" is a parenthesised int, not a tuple */
            if (nd == 1 && !comma)
                return HFAIL(h, NNP_ERR_FORMAT, "'shape' is an int in parentheses, not a tuple; "
                             "a 1-d shape is written (n,) (npy header)");
            h->i++;
            break;
        }
        if (at(h, '-'))
            return HFAIL(h, NNP_ERR_FORMAT, "negative dimension in 'shape' (npy header)");
        if (h->i >= h->n || !is_digit(h->s[h->i]))
            return HFAIL(h, NNP_ERR_FORMAT,
                         "'shape' holds something other than non-negative integers (npy header)");
        size_t start = h->i;
        uint64_t v = 0;
        while (h->i < h->n && is_digit(h->s[h->i])) {
            if (!nnp__mul_u64(v, 10, &v) || !nnp__add_u64(v, h->s[h->i] - '0', &v)) {
                h->i = start;
                return HFAIL(h, NNP_ERR_FORMAT, "dimension does not fit in 64 bits (npy header)");
            }
            h->i++;
        }
        if (h->i - start > 1 && h->s[start] == '0') {
            h->i = start;
            return HFAIL(h, NNP_ERR_FORMAT, "dimension has a leading zero, which a Python "
                         "literal cannot have (npy header)");
        }
        if (h->py2 && (at(h, 'L') || at(h, 'l')))
            h->i++;
        if (h->i < h->n && is_word(h->s[h->i]))
            return HFAIL(h, NNP_ERR_FORMAT,
                         "'shape' holds something other than non-negative integers (npy header)");
        if (nd == NNP_NPY_MAX_DIMS) {
            h->i = start;
            return HFAIL(h, NNP_ERR_UNSUPPORTED, "'shape' has more than %d dimensions",
                         NNP_NPY_MAX_DIMS);
        }
        out->shape[nd++] = v;
        comma = false;
        skip_ws(h);
        if (at(h, ',')) {
            h->i++;
            comma = true;
        } else if (!at(h, ')')) {
            return HFAIL(h, NNP_ERR_FORMAT, "expected ',' or ')' in 'shape' (npy header)");
        }
    }
    out->ndim = nd;
    return NNP_OK;
}

/* descr strings as numpy writes them (dtype.str): an optional byte order, a kind, a size. */
static nnp_status map_descr(hdr *h, const unsigned char *s, size_t len, nnp_dtype *dtype,
                            unsigned *layout)
{
    int shown = len > 48 ? 48 : (int)len;
    size_t k = 0;
    unsigned char order = '=';
    if (k < len && (s[k] == '<' || s[k] == '>' || s[k] == '=' || s[k] == '|'))
        order = s[k++];
    unsigned char kind = k < len ? s[k++] : 0;
    uint64_t size = 0;
    size_t digits = 0;
    while (k < len && is_digit(s[k]) && digits < 6) {
        size = size * 10 + (uint64_t)(s[k++] - '0');
        digits++;
    }
    bool plain = k == len && digits > 0; /* nothing after the size, such as "[ns]" */
    *layout = order == '>' && size > 1 ? NNP_LAYOUT_BYTESWAP : 0;
    *dtype = NNP_DTYPE_INVALID;
    if (plain) {
        switch (kind) {
        case 'f':
            *dtype = size == 2 ? NNP_F16 : size == 4 ? NNP_F32 : size == 8 ? NNP_F64
                                                                         : NNP_DTYPE_INVALID;
            if (size == 12 || size == 16)
                return HFAIL(h, NNP_ERR_UNSUPPORTED, "dtype '%.*s' (float%u, long double) is "
                             "not supported", shown, (const char *)s, (unsigned)size * 8);
            break;
        case 'i':
            *dtype = size == 1 ? NNP_I8 : size == 2 ? NNP_I16 : size == 4 ? NNP_I32
                   : size == 8 ? NNP_I64 : NNP_DTYPE_INVALID;
            break;
        case 'u':
            *dtype = size == 1 ? NNP_U8 : size == 2 ? NNP_U16 : size == 4 ? NNP_U32
                   : size == 8 ? NNP_U64 : NNP_DTYPE_INVALID;
            break;
        case 'b':
            *dtype = size == 1 ? NNP_BOOL : NNP_DTYPE_INVALID;
            break;
        case 'c':
            if (size == 8 || size == 16 || size == 32)
                return HFAIL(h, NNP_ERR_UNSUPPORTED, "dtype '%.*s': complex%u is not supported",
                             shown, (const char *)s, (unsigned)size * 8);
            break;
        }
        if (*dtype != NNP_DTYPE_INVALID)
            return NNP_OK;
    }
    switch (kind) {
    case 'O':
        return HFAIL(h, NNP_ERR_UNSUPPORTED, "dtype '%.*s' is an object array: its elements are "
                     "pickled Python objects, which would need unpickling, and nnparity never "
                     "unpickles", shown, (const char *)s);
    case 'S':
    case 'a':
        return HFAIL(h, NNP_ERR_UNSUPPORTED, "dtype '%.*s' (byte strings) is not supported",
                     shown, (const char *)s);
    case 'U':
        return HFAIL(h, NNP_ERR_UNSUPPORTED, "dtype '%.*s' (unicode strings) is not supported",
                     shown, (const char *)s);
    case 'V':
        return HFAIL(h, NNP_ERR_UNSUPPORTED, "dtype '%.*s' (void, raw bytes) is not supported",
                     shown, (const char *)s);
    case 'M':
        return HFAIL(h, NNP_ERR_UNSUPPORTED, "dtype '%.*s' (datetime64) is not supported",
                     shown, (const char *)s);
    case 'm':
        return HFAIL(h, NNP_ERR_UNSUPPORTED, "dtype '%.*s' (timedelta64) is not supported",
                     shown, (const char *)s);
    }
    return HFAIL(h, NNP_ERR_UNSUPPORTED, "dtype '%.*s' is not supported", shown,
                 (const char *)s);
}

enum { DESCR_STRING, DESCR_LIST, DESCR_OTHER };

nnp_status nnp__npy_parse(const char *file, const char *member, const unsigned char *p,
                          uint64_t avail, uint64_t size, nnp_npy_info *out)
{
    memset(out, 0, sizeof *out);
    uint64_t data_off;
    nnp_status st = nnp__npy_preamble(file, member, p, size, &data_off);
    if (st)
        return st;
    if (avail < data_off)
        return nnp__fail(NNP_ERR_INTERNAL, "%s: npy header parsed from %" PRIu64 " of its %"
                         PRIu64 " bytes", file, avail, data_off);
    unsigned major = p[6];
    size_t hstart = major == 1 ? 10 : 12;
    hdr h = {file, member, p + hstart, (size_t)data_off - hstart, 0, hstart, major < 3};
    size_t bad;
    if (major == 3 && !nnp__utf8_valid(h.s, h.n, &bad)) {
        h.i = bad;
        return HFAIL(&h, NNP_ERR_FORMAT, "header is not valid UTF-8 (npy 3.0 header)");
    }

    bool have_descr = false, have_fortran = false, have_shape = false, fortran = false;
    size_t descr_s = 0, descr_len = 0, descr_at = 0, shape_at = 0;
    int descr_kind = DESCR_OTHER;

    /* Python's literal_eval allows leading blanks; numpy pads the end with spaces and '\n'. */
    skip_ws(&h);
    if (!at(&h, '{'))
        return HFAIL(&h, NNP_ERR_FORMAT, "header is not a Python dict literal (npy header)");
    h.i++;
    for (;;) {
        skip_ws(&h);
        if (at(&h, '}'))
            break;
        if (!at(&h, '\'') && !at(&h, '"'))
            return HFAIL(&h, NNP_ERR_FORMAT, "expected a quoted key or '}' (npy header)");
        size_t key_at = h.i, ks, kl;
        if ((st = parse_str(&h, &ks, &kl)))
            return st;
        const unsigned char *key = h.s + ks;
        skip_ws(&h);
        if (!at(&h, ':'))
            return HFAIL(&h, NNP_ERR_FORMAT, "expected ':' after a key (npy header)");
        h.i++;
        skip_ws(&h);
        bool *seen;
        if (kl == 5 && memcmp(key, "descr", 5) == 0)
            seen = &have_descr;
        else if (kl == 13 && memcmp(key, "fortran_order", 13) == 0)
            seen = &have_fortran;
        else if (kl == 5 && memcmp(key, "shape", 5) == 0)
            seen = &have_shape;
        else {
            h.i = key_at;
            return HFAIL(&h, NNP_ERR_FORMAT, "unexpected key '%.*s'; an npy header has exactly "
                         "'descr', 'fortran_order' and 'shape' (npy header)",
                         kl > 48 ? 48 : (int)kl, (const char *)key);
        }
        if (*seen) {
            h.i = key_at;
            return HFAIL(&h, NNP_ERR_FORMAT, "key '%.*s' appears twice (npy header)", (int)kl,
                         (const char *)key);
        }
        *seen = true;
        if (seen == &have_descr) {
            descr_at = h.i;
            if (at(&h, '\'') || at(&h, '"')) {
                descr_kind = DESCR_STRING;
                st = parse_str(&h, &descr_s, &descr_len);
            } else {
                descr_kind = at(&h, '[') ? DESCR_LIST : DESCR_OTHER;
                st = skip_value(&h, 0);
            }
        } else if (seen == &have_fortran) {
            size_t j = h.i;
            while (j < h.n && is_word(h.s[j]))
                j++;
            if (j - h.i == 4 && memcmp(h.s + h.i, "True", 4) == 0)
                fortran = true;
            else if (!(j - h.i == 5 && memcmp(h.s + h.i, "False", 5) == 0))
                return HFAIL(&h, NNP_ERR_FORMAT, "'fortran_order' is not True or False "
                             "(npy header)");
            h.i = j;
        } else {
            shape_at = h.i;
            st = parse_shape(&h, out);
        }
        if (st)
            return st;
        skip_ws(&h);
        if (at(&h, ','))
            h.i++;
        else if (!at(&h, '}'))
            return HFAIL(&h, NNP_ERR_FORMAT, "expected ',' or '}' (npy header)");
    }
    h.i++;
    skip_ws(&h);
    if (h.i < h.n)
        return HFAIL(&h, NNP_ERR_FORMAT, "text after the header's closing '}' (npy header)");
    const char *missing = !have_descr ? "descr" : !have_fortran ? "fortran_order"
                        : !have_shape ? "shape" : NULL;
    if (missing) {
        h.i = 0;
        return HFAIL(&h, NNP_ERR_FORMAT, "header has no '%s' key (npy header)", missing);
    }

    h.i = descr_at;
    if (descr_kind == DESCR_LIST)
        return HFAIL(&h, NNP_ERR_UNSUPPORTED, "dtype is structured (a list of named record "
                     "fields); structured dtypes are not supported");
    if (descr_kind != DESCR_STRING)
        return HFAIL(&h, NNP_ERR_FORMAT, "'descr' is neither a dtype string nor a list of "
                     "fields (npy header)");
    if ((st = map_descr(&h, h.s + descr_s, descr_len, &out->dtype, &out->layout)))
        return st;
    if (fortran && out->ndim > 1)
        out->layout |= NNP_LAYOUT_FORTRAN;

    uint64_t nelem, nbytes, need;
    if (!nnp__shape_nelem(out->ndim, out->shape, &nelem) ||
        !nnp__mul_u64(nelem, nnp_dtype_size(out->dtype), &nbytes) ||
        !nnp__add_u64(data_off, nbytes, &need)) {
        h.i = shape_at;
        return HFAIL(&h, NNP_ERR_FORMAT, "the array's size in bytes overflows 64 bits "
                     "(npy header)");
    }
    if (size < need)
        return npy_fail(NNP_ERR_FORMAT, file, member, size,
                        "data is truncated: shape and dtype need %" PRIu64 " bytes from byte %"
                        PRIu64 " to byte %" PRIu64 ", but the npy ends at byte %" PRIu64
                        " (npy data size)", nbytes, data_off, need, size);
    if (size > need)
        return npy_fail(NNP_ERR_FORMAT, file, member, need,
                        "%" PRIu64 " bytes of trailing data after the array's %" PRIu64
                        " bytes (npy data size)", size - need, nbytes);
    out->data_offset = data_off;
    out->nbytes = nbytes;
    return NNP_OK;
}

nnp_status nnp__npy_load(nnp_dump *d, const char *path)
{
    nnp_map m;
    nnp_status st = nnp__dump_map(d, path, &m);
    if (st)
        return st;
    nnp_npy_info info;
    if ((st = nnp__npy_parse(path, NULL, m.base, m.size, m.size, &info)))
        return st;
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t len = strlen(base);
    if (len > 4 && strcmp(base + len - 4, ".npy") == 0)
        len -= 4;
    char *name = nnp__dump_strndup(d, base, len);
    if (!name)
        return NNP_ERR_NOMEM;
    nnp_rec *r;
    if ((st = nnp__dump_add(d, path, name, info.dtype, info.ndim, info.shape, &r)))
        return st;
    r->raw = m.base + info.data_offset;
    r->layout = info.layout;
    return NNP_OK;
}
