/*
 * sketch.c - a record's fingerprint: a hash of its bytes (one value under several names is one
 * hash) and a small random projection of its values, from which the distance between two
 * records can be estimated without reading either again (docs/sketch.md).
 *
 * The projection is a count sketch: elements are taken in blocks of NNP_SKETCH_WIDTH by their
 * position in the stream, and block b adds element j, with the sign bit j of a hash of b, to
 * bucket (j + r_b) mod NNP_SKETCH_WIDTH, r_b another part of that hash. Every element lands in
 * one bucket with a random sign, so the sketch is linear (S(x) - S(y) = S(x - y)) and
 * ||S(d)||^2 estimates ||d||^2 without bias; the rotation spreads a channel that recurs at a
 * stride of the block width over every bucket. Blocks are cheap to vectorize: one hash per 32
 * elements and an add per element, a few per cent of what writing the record costs.
 */
#include <math.h>
#include <string.h>

#include "kernels/kernels.h"

#define W NNP_SKETCH_WIDTH
#define CHUNK 4096 /* elements converted to float and summed in float before going to double */

/* The seed every sketch uses: sketches are comparable only when they share it. */
#define SKETCH_SEED 0x6e6e70736b657431ull

/* ---- the byte hash: four lanes of a multiply-rotate round over 32-byte stripes ---- */

#define P1 0x9e3779b185ebca87ull
#define P2 0xc2b2ae3d27d4eb4full
#define P3 0x165667b19e3779f9ull

static inline uint64_t rotl(uint64_t x, int r)
{
    return (x << r) | (x >> (64 - r));
}

static inline uint64_t lane_round(uint64_t acc, uint64_t w)
{
    return rotl(acc + w * P2, 31) * P1;
}

static inline uint64_t load64(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

uint64_t nnp__bytes_hash(const void *data, uint64_t n, uint64_t seed)
{
    const unsigned char *p = data;
    uint64_t a = seed + P1 + P2, b = seed + P2, c = seed, d = seed - P1, h;
    uint64_t left = n;
    if (left >= 32) {
        for (; left >= 32; left -= 32, p += 32) {
            a = lane_round(a, load64(p));
            b = lane_round(b, load64(p + 8));
            c = lane_round(c, load64(p + 16));
            d = lane_round(d, load64(p + 24));
        }
        h = rotl(a, 1) + rotl(b, 7) + rotl(c, 12) + rotl(d, 18);
    } else {
        h = seed + P3;
    }
    h += n;
    for (; left >= 8; left -= 8, p += 8)
        h = rotl(h ^ lane_round(0, load64(p)), 27) * P1 + P3;
    for (; left; left--, p++)
        h = rotl(h ^ (*p * P3), 11) * P1;
    return nnp__mix64(h);
}

/* ---- the projection ---- */

/* A sketch being built from a stream of values. */
typedef struct {
    uint64_t pos;          /* elements of the stream seen */
    double acc[W], norm2, sum;
    float facc[2 * W];     /* this chunk's buckets before the rotation is folded in */
    uint64_t nonfinite;
} builder;

static void builder_flush(builder *b)
{
    for (int m = 0; m < W; m++) {
        b->acc[m] += (double)b->facc[m] + (double)b->facc[m + W];
        b->facc[m] = b->facc[m + W] = 0;
    }
}

/* Add n values (n <= CHUNK) that start at a block boundary of the stream, or end the stream. */
static void builder_feed(builder *b, float *x, size_t n)
{
    double s = 0, q = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(x[i])) {
            b->nonfinite++;
            x[i] = 0; /* a NaN would poison every estimate; the count says it was there */
        }
        s += x[i];
        q += (double)x[i] * x[i];
    }
    b->sum += s;
    b->norm2 += q;
    for (size_t at = 0; at < n; at += W) {
        uint64_t h = nnp__mix64(SKETCH_SEED ^ ((b->pos + at) / W));
        unsigned r = (unsigned)(h & (W - 1));
        uint32_t signs = (uint32_t)(h >> 32);
        size_t k = n - at < W ? n - at : W;
        float *dst = b->facc + r;
        for (size_t j = 0; j < k; j++) {
            uint32_t bits;
            memcpy(&bits, &x[at + j], 4);
            bits ^= ((signs >> j) & 1u) << 31;
            float v;
            memcpy(&v, &bits, 4);
            dst[j] += v;
        }
    }
    b->pos += n;
    builder_flush(b);
}

static void builder_end(const builder *b, nnp_sketch_part *out)
{
    for (int m = 0; m < W; m++)
        out->proj[m] = (float)b->acc[m];
    out->norm = sqrt(b->norm2);
    out->sum = b->sum;
    out->count = b->pos;
}

/* Feed n elements of dtype at src through b, converted a chunk at a time. */
static void feed_run(builder *b, nnp_dtype dtype, const unsigned char *src, uint64_t n,
                     float *buf)
{
    size_t es = nnp_dtype_size(dtype);
    while (n) {
        /* chunks end on block boundaries of the stream, so that blocks never straddle two */
        size_t room = CHUNK - (size_t)(b->pos % W);
        size_t k = n < room ? (size_t)n : room;
        nnp_convert_to_f32(dtype, src, k, buf);
        builder_feed(b, buf, k);
        src += k * es;
        n -= k;
    }
}

void nnp__sketch_tensor(nnp_dtype dtype, uint32_t ndim, const uint64_t *shape, const void *data,
                        uint64_t nelem, nnp_sketch *out)
{
    memset(out, 0, sizeof *out);
    size_t es = nnp_dtype_size(dtype);
    uint64_t h = nnp__hash_combine(SKETCH_SEED, (uint64_t)dtype);
    h = nnp__hash_combine(h, ndim);
    for (uint32_t k = 0; k < ndim; k++)
        h = nnp__hash_combine(h, shape[k]);
    out->hash = nnp__hash_combine(h, nnp__bytes_hash(data, nelem * es, SKETCH_SEED));

    float buf[CHUNK];
    builder b;
    memset(&b, 0, sizeof b);
    feed_run(&b, dtype, data, nelem, buf);
    builder_end(&b, &out->all);
    out->nonfinite = b.nonfinite;

    /* the last row along the axis before the last: what a port that decodes one token with a
     * cache holds of a reference that re-runs the whole sequence */
    if (ndim >= 2 && shape[ndim - 2] >= 2 && nelem) {
        uint64_t cols = shape[ndim - 1], rows = shape[ndim - 2], lead = nelem / (cols * rows);
        memset(&b, 0, sizeof b);
        for (uint64_t l = 0; l < lead; l++)
            feed_run(&b, dtype, (const unsigned char *)data + ((l * rows + rows - 1) * cols) * es,
                     cols, buf);
        builder_end(&b, &out->last);
        out->has_last = true;
    }
}

/* ---- estimates ---- */

bool nnp__sketch_distance(const nnp_sketch_part *a, const nnp_sketch_part *b, double *rel_l2,
                          double *cosine)
{
    if (a->count != b->count)
        return false;
    double d2 = 0, an = a->norm, bn = b->norm;
    for (int m = 0; m < W; m++) {
        double d = (double)a->proj[m] - (double)b->proj[m];
        d2 += d * d;
    }
    /* ||a - b|| is at least | ||a|| - ||b|| |, known exactly: the estimate never goes below */
    double floor = fabs(an - bn);
    double dist = sqrt(d2) > floor ? sqrt(d2) : floor;
    if (rel_l2)
        *rel_l2 = bn > 0 ? dist / bn : an > 0 ? INFINITY : 0;
    if (cosine) {
        double c = an > 0 && bn > 0 ? (an * an + bn * bn - dist * dist) / (2 * an * bn) : 0;
        *cosine = c > 1 ? 1 : c < -1 ? -1 : c;
    }
    return true;
}
