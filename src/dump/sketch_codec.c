/*
 * sketch_codec.c - how a capture stores its records' fingerprints in the dump's __metadata__
 * (docs/sketch.md): the value of "nnparity.sketches" is "sketch/1:" followed by the base64 of
 * one 192-byte little-endian entry per record, in data offset order:
 *
 *   0    u64  hash          8    u64  non-finite count
 *   16   part of every element, 104  part of the last rows (zero when the record has none):
 *        +0 u64 count, +8 f64 norm, +16 f64 sum, +24 32 x f16 projection / norm
 *
 * 192 bytes are 256 base64 characters with no padding, so entry i starts at character
 * 9 + 256 i, and a 100,000-record capture adds 25.6 MB to its header. The projection only
 * needs about three digits (the estimate it feeds errs by tens of per cent); F16 of the
 * projection divided by the norm keeps 11 bits whatever the values' scale, and the norm and
 * sum, which bound the estimate exactly, are kept whole.
 */
#include <math.h>
#include <string.h>

#include "dump/dump.h"
#include "kernels/kernels.h"

#define PREFIX NNP_SKETCH_VALUE_PREFIX
#define PREFIX_LEN (sizeof PREFIX - 1)
#define ENTRY NNP_SKETCH_ENTRY_BYTES
#define ENTRY_CHARS NNP_SKETCH_ENTRY_CHARS
#define PART 88

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static void put64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void put_f64(unsigned char *p, double x)
{
    uint64_t v;
    memcpy(&v, &x, 8);
    put64(p, v);
}

static double get_f64(const unsigned char *p)
{
    uint64_t v = nnp__le64(p);
    double x;
    memcpy(&x, &v, 8);
    return x;
}

static void pack_part(const nnp_sketch_part *p, unsigned char *e)
{
    put64(e, p->count);
    put_f64(e + 8, p->norm);
    put_f64(e + 16, p->sum);
    uint16_t h[NNP_SKETCH_WIDTH];
    nnp__sketch_proj_f16(p, h);
    for (int m = 0; m < NNP_SKETCH_WIDTH; m++) {
        e[24 + 2 * m] = (unsigned char)h[m];
        e[25 + 2 * m] = (unsigned char)(h[m] >> 8);
    }
}

void nnp__sketch_pack(const nnp_sketch *s, unsigned char *entry)
{
    memset(entry, 0, ENTRY);
    put64(entry, s->hash);
    put64(entry + 8, s->nonfinite);
    pack_part(&s->all, entry + 16);
    if (s->has_last)
        pack_part(&s->last, entry + 16 + PART);
}

/* The two characters of every 12 bits: a capture's close encodes 256 characters a record, and
 * two lookups for three bytes cost half of four. */
static char b64_pairs[4096][2];
static pthread_once_t pairs_once = PTHREAD_ONCE_INIT;

static void pairs_init(void)
{
    for (int v = 0; v < 4096; v++) {
        b64_pairs[v][0] = b64[v >> 6];
        b64_pairs[v][1] = b64[v & 63];
    }
}

void nnp__sketch_entry_text(const unsigned char *entry, char *text)
{
    pthread_once(&pairs_once, pairs_init);
    const unsigned char *p = entry;
    for (size_t k = 0; k < ENTRY / 3; k++, p += 3, text += 4) {
        uint32_t v = (uint32_t)p[0] << 16 | (uint32_t)p[1] << 8 | p[2];
        memcpy(text, b64_pairs[v >> 12], 2);
        memcpy(text + 2, b64_pairs[v & 4095], 2);
    }
}

nnp_status nnp__sketch_value_check(const char *file, const char *value, size_t len, size_t n)
{
    if (len < PREFIX_LEN || memcmp(value, PREFIX, PREFIX_LEN) != 0) {
        const char *colon = memchr(value, ':', len < 32 ? len : 32);
        if (strncmp(value, "sketch/", 7) == 0 && colon)
            return nnp__fail(NNP_ERR_FORMAT, "%s: metadata '%s': version '%.*s' is not one this "
                             "nnparity reads (sketch/1)", file, NNP_META_SKETCHES_KEY,
                             (int)(colon - value), value);
        return nnp__fail(NNP_ERR_FORMAT, "%s: metadata '%s' does not start with '%s'", file,
                         NNP_META_SKETCHES_KEY, PREFIX);
    }
    /* n < 2^32 records (the dump's cap), so n * 256 cannot overflow */
    if (len - PREFIX_LEN != (uint64_t)n * ENTRY_CHARS)
        return nnp__fail(NNP_ERR_FORMAT, "%s: metadata '%s' holds %zu characters of entries; the "
                         "file's %zu %s need %llu (%u each)", file, NNP_META_SKETCHES_KEY,
                         len - PREFIX_LEN, n, n == 1 ? "record" : "records",
                         (unsigned long long)n * ENTRY_CHARS, (unsigned)ENTRY_CHARS);
    return NNP_OK;
}

static signed char b64_value[256]; /* -1 outside the alphabet */
static pthread_once_t b64_once = PTHREAD_ONCE_INIT;

static void b64_init(void)
{
    memset(b64_value, -1, sizeof b64_value);
    for (int i = 0; i < 64; i++)
        b64_value[(unsigned char)b64[i]] = (signed char)i;
}

/* The 192 bytes of the base64 entry at s (256 characters), or false on a character outside the
 * alphabet. */
static bool unbase64(const char *s, unsigned char *out)
{
    pthread_once(&b64_once, b64_init);
    const signed char *val = b64_value;
    for (size_t k = 0; k < ENTRY / 3; k++, s += 4, out += 3) {
        int a = val[(unsigned char)s[0]], b = val[(unsigned char)s[1]],
            c = val[(unsigned char)s[2]], d = val[(unsigned char)s[3]];
        if ((a | b | c | d) < 0)
            return false;
        uint32_t v = (uint32_t)a << 18 | (uint32_t)b << 12 | (uint32_t)c << 6 | (uint32_t)d;
        out[0] = (unsigned char)(v >> 16);
        out[1] = (unsigned char)(v >> 8);
        out[2] = (unsigned char)v;
    }
    return true;
}

static const char *unpack_part(const unsigned char *e, nnp_sketch_part *p)
{
    p->count = nnp__le64(e);
    p->norm = get_f64(e + 8);
    p->sum = get_f64(e + 16);
    if (!isfinite(p->norm) || p->norm < 0)
        return "a norm that is negative or not finite";
    if (!isfinite(p->sum))
        return "a sum that is not finite";
    if (p->count == 0 && (p->norm != 0 || p->sum != 0))
        return "a norm or sum for no elements";
    if (!nnp__sketch_proj_unpack(e + 24, p->norm, p->proj))
        return "a projection that is not finite";
    return NULL;
}

nnp_status nnp__sketch_unpack(const char *file, const char *value, size_t i, nnp_sketch *out)
{
    unsigned char e[ENTRY];
    memset(out, 0, sizeof *out);
    const char *why = NULL;
    if (!unbase64(value + PREFIX_LEN + i * ENTRY_CHARS, e))
        why = "a character outside base64's alphabet";
    if (!why) {
        out->hash = nnp__le64(e);
        out->nonfinite = nnp__le64(e + 8);
        why = unpack_part(e + 16, &out->all);
    }
    if (!why) {
        why = unpack_part(e + 16 + PART, &out->last);
        out->has_last = out->last.count != 0;
    }
    if (!why && out->nonfinite > out->all.count)
        why = "more non-finite elements than elements";
    if (why)
        return nnp__fail(NNP_ERR_FORMAT, "%s: metadata '%s': entry %zu has %s", file,
                         NNP_META_SKETCHES_KEY, i, why);
    return NNP_OK;
}
