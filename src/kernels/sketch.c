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
 * stride of the block width over every bucket.
 *
 * A capture sketches every record it writes, so this runs at close to memory speed: one pass
 * over tiles of TILE elements that stay in L1, each hashed, then summed, then projected. The
 * blocks of a tile are added, unrotated, to the row of a 32 x 32 float table picked by their
 * rotation; the table is folded into the double buckets every FOLD elements, so a block costs
 * one hash and four vector additions. The norm and the sum are added in double over LANES
 * accumulators by stream position, so a stream fed in pieces (the last rows) has the sums of
 * the same values fed whole. Sums of finite floats cannot overflow a double, so values are
 * tested only when a tile's sums are not finite: then the tile is copied with its NaNs and
 * infinities counted and set to 0. On x86-64 an AVX2 (and
 * F16C) version is chosen at run time; it adds the same numbers in the same order as the
 * portable one (no FMA: a float squared is exact in double), so their results are identical
 * bit for bit, and a stored sketch matches one computed on another machine.
 */
#include <math.h>
#include <stddef.h>
#include <string.h>

#include "kernels/kernels.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#include <immintrin.h>
#define NNP_X86 1
#endif

#define W NNP_SKETCH_WIDTH
#define TILE 2048u   /* elements hashed, converted and summed at a time: at most 16 KiB */
#define FOLD 65536u  /* elements whose buckets are summed in float before going to double */
#define LANES 16     /* double accumulators of the norm and the sum: element i goes to i % 16 */

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

/* The hash's state between stripes, so that it can be fed a tile at a time. */
typedef struct {
    uint64_t a, b, c, d, seed;
} hash_state;

static void hash_init(hash_state *s, uint64_t seed)
{
    *s = (hash_state){seed + P1 + P2, seed + P2, seed, seed - P1, seed};
}

static void hash_stripes(hash_state *s, const unsigned char *p, size_t stripes)
{
    uint64_t a = s->a, b = s->b, c = s->c, d = s->d;
    for (; stripes; stripes--, p += 32) {
        a = lane_round(a, load64(p));
        b = lane_round(b, load64(p + 8));
        c = lane_round(c, load64(p + 16));
        d = lane_round(d, load64(p + 24));
    }
    *s = (hash_state){a, b, c, d, s->seed};
}

/* The hash of n bytes whose whole stripes went through s, `tail` holding the n % 32 left. */
static uint64_t hash_end(const hash_state *s, uint64_t n, const unsigned char *tail)
{
    uint64_t h = n >= 32 ? rotl(s->a, 1) + rotl(s->b, 7) + rotl(s->c, 12) + rotl(s->d, 18)
                         : s->seed + P3;
    h += n;
    size_t left = (size_t)(n % 32);
    for (; left >= 8; left -= 8, tail += 8)
        h = rotl(h ^ lane_round(0, load64(tail)), 27) * P1 + P3;
    for (; left; left--, tail++)
        h = rotl(h ^ (*tail * P3), 11) * P1;
    return nnp__mix64(h);
}

uint64_t nnp__bytes_hash(const void *data, uint64_t n, uint64_t seed)
{
    hash_state s;
    hash_init(&s, seed);
    if (!n)
        return hash_end(&s, 0, NULL);
    hash_stripes(&s, data, (size_t)(n / 32));
    return hash_end(&s, n, (const unsigned char *)data + n / 32 * 32);
}

/* ---- the projection ---- */

/* rows[r][j]: element j of every block rotated by r since the last fold. Only the rows in
 * `used` hold sums: a small tensor touches a few, and the others are neither cleared nor
 * folded. */
typedef struct {
    float rows[W][W];
    uint32_t used;
} table;

/* A sketch being built from a stream of values. */
typedef struct {
    uint64_t pos;       /* elements of the stream seen */
    uint64_t nonfinite;
    double acc[2 * W]; /* bucket m is acc[m] + acc[m + W]: a row folds in without wrapping */
    double lane_sum[LANES], lane_sq[LANES]; /* element p of the stream in lane p % LANES */
    table t;
} builder;

static void builder_init(builder *b)
{
    memset(b, 0, offsetof(builder, t));
    b->t.used = 0;
}

/* The row of the table that a block with hash h adds to; *fresh when it held nothing (its
 * cells are then to be written, not added to: reading back cells just cleared would wait on
 * the stores that cleared them). */
static inline float *row_of(table *t, uint64_t h, bool *fresh)
{
    unsigned r = (unsigned)(h & (W - 1));
    *fresh = !(t->used >> r & 1u);
    t->used |= 1u << r;
    return t->rows[r];
}

/* What differs between the portable and the vector versions. */
typedef struct {
    /* s[i % LANES] += x[i] and q[i % LANES] += x[i]^2, in double, for i in [0, n) */
    void (*moments)(const float *x, size_t n, double *s, double *q);
    /* the same, and the n / 8 whole stripes of x's bytes through hs (the values are float32) */
    void (*moments_hash)(const float *x, size_t n, double *s, double *q, hash_state *hs);
    /* nb whole blocks at x, the first of them block number `first` of the stream */
    void (*blocks)(table *t, const float *x, size_t nb, uint64_t first);
    /* n F16 values to float (exact) */
    void (*f16)(const unsigned char *src, size_t n, float *dst);
    /* acc[j] += row[j] for j in [0, W), in double */
    void (*fold_row)(double *acc, const float *row);
} kernel;

static inline uint64_t block_hash(uint64_t block)
{
    return nnp__mix64(SKETCH_SEED ^ block);
}

static void moments_portable(const float *x, size_t n, double *s, double *q)
{
    for (size_t i = 0; i < n; i++) {
        double v = x[i];
        s[i % LANES] += v;
        q[i % LANES] += v * v;
    }
}

static void moments_hash_portable(const float *x, size_t n, double *s, double *q, hash_state *hs)
{
    hash_stripes(hs, (const unsigned char *)x, n / 8);
    moments_portable(x, n, s, q);
}

/* Elements [j0, j0 + n) of one block (j0 + n <= W). */
static void part_block(table *t, const float *x, size_t n, unsigned j0, uint64_t block)
{
    uint64_t h = block_hash(block);
    bool fresh;
    float *row = row_of(t, h, &fresh);
    if (fresh && n < W)
        memset(row, 0, W * sizeof *row);
    uint32_t signs = (uint32_t)(h >> 32);
    for (size_t i = 0; i < n; i++) {
        unsigned j = j0 + (unsigned)i;
        uint32_t bits;
        memcpy(&bits, &x[i], 4);
        bits ^= ((signs >> j) & 1u) << 31;
        float v;
        memcpy(&v, &bits, 4);
        row[j] = fresh ? v : row[j] + v;
    }
}

static void blocks_portable(table *t, const float *x, size_t nb, uint64_t first)
{
    for (size_t k = 0; k < nb; k++)
        part_block(t, x + k * W, W, 0, first + k);
}

static void f16_portable(const unsigned char *src, size_t n, float *dst)
{
    nnp_convert_to_f32(NNP_F16, src, n, dst);
}

static void fold_row_portable(double *acc, const float *row)
{
    for (unsigned j = 0; j < W; j++)
        acc[j] += (double)row[j];
}

#ifdef NNP_X86
#define NNP_AVX2 __attribute__((target("avx2,f16c")))

/* The same additions as moments_portable: lanes 0-7 and 8-15 from the two halves of 16. */
/* One loop for both, so that the hash's multiplications wait on each other while the vector
 * additions go on beside them. */
NNP_AVX2 static inline void moments_avx2_with(const float *x, size_t n, double *s, double *q,
                                              hash_state *hs)
{
    __m256d s0 = _mm256_loadu_pd(s), s1 = _mm256_loadu_pd(s + 4), s2 = _mm256_loadu_pd(s + 8),
            s3 = _mm256_loadu_pd(s + 12);
    __m256d q0 = _mm256_loadu_pd(q), q1 = _mm256_loadu_pd(q + 4), q2 = _mm256_loadu_pd(q + 8),
            q3 = _mm256_loadu_pd(q + 12);
    size_t i = 0;
    uint64_t ha = 0, hb = 0, hc = 0, hd = 0;
    if (hs) {
        ha = hs->a, hb = hs->b, hc = hs->c, hd = hs->d;
    }
    for (; i + LANES <= n; i += LANES) {
        if (hs) { /* 16 floats: two stripes */
            const unsigned char *p = (const unsigned char *)(x + i);
            ha = lane_round(ha, load64(p));
            hb = lane_round(hb, load64(p + 8));
            hc = lane_round(hc, load64(p + 16));
            hd = lane_round(hd, load64(p + 24));
            ha = lane_round(ha, load64(p + 32));
            hb = lane_round(hb, load64(p + 40));
            hc = lane_round(hc, load64(p + 48));
            hd = lane_round(hd, load64(p + 56));
            /* in general registers: emulated in vector registers, the 64-bit multiplications
             * would take three times as long */
            __asm__("" : "+r"(ha), "+r"(hb), "+r"(hc), "+r"(hd));
        }
        __m256 a = _mm256_loadu_ps(x + i), b = _mm256_loadu_ps(x + i + 8);
        __m256d a0 = _mm256_cvtps_pd(_mm256_castps256_ps128(a));
        __m256d a1 = _mm256_cvtps_pd(_mm256_extractf128_ps(a, 1));
        __m256d b0 = _mm256_cvtps_pd(_mm256_castps256_ps128(b));
        __m256d b1 = _mm256_cvtps_pd(_mm256_extractf128_ps(b, 1));
        s0 = _mm256_add_pd(s0, a0);
        s1 = _mm256_add_pd(s1, a1);
        s2 = _mm256_add_pd(s2, b0);
        s3 = _mm256_add_pd(s3, b1);
        q0 = _mm256_add_pd(q0, _mm256_mul_pd(a0, a0));
        q1 = _mm256_add_pd(q1, _mm256_mul_pd(a1, a1));
        q2 = _mm256_add_pd(q2, _mm256_mul_pd(b0, b0));
        q3 = _mm256_add_pd(q3, _mm256_mul_pd(b1, b1));
    }
    _mm256_storeu_pd(s, s0);
    _mm256_storeu_pd(s + 4, s1);
    _mm256_storeu_pd(s + 8, s2);
    _mm256_storeu_pd(s + 12, s3);
    _mm256_storeu_pd(q, q0);
    _mm256_storeu_pd(q + 4, q1);
    _mm256_storeu_pd(q + 8, q2);
    _mm256_storeu_pd(q + 12, q3);
    moments_portable(x + i, n - i, s, q); /* n - i < LANES: its lanes start at 0 again */
    if (hs) {
        hs->a = ha, hs->b = hb, hs->c = hc, hs->d = hd;
        hash_stripes(hs, (const unsigned char *)(x + i), (n - i) / 8);
    }
}

NNP_AVX2 static void moments_avx2(const float *x, size_t n, double *s, double *q)
{
    moments_avx2_with(x, n, s, q, NULL);
}

NNP_AVX2 static void moments_hash_avx2(const float *x, size_t n, double *s, double *q,
                                       hash_state *hs)
{
    moments_avx2_with(x, n, s, q, hs);
}

NNP_AVX2 static void blocks_avx2(table *tb, const float *x, size_t nb, uint64_t first)
{
    /* lane l of vector v takes sign bit 8v + l, shifted up to the float's sign */
    const __m256i up0 = _mm256_setr_epi32(31, 30, 29, 28, 27, 26, 25, 24);
    const __m256i eight = _mm256_set1_epi32(8), top = _mm256_set1_epi32(INT32_MIN);
    const __m256i up1 = _mm256_sub_epi32(up0, eight), up2 = _mm256_sub_epi32(up1, eight),
                  up3 = _mm256_sub_epi32(up2, eight);
    for (size_t t = 0; t < nb; t++, x += W) {
        uint64_t h = block_hash(first + t);
        bool fresh;
        float *row = row_of(tb, h, &fresh);
        __m256i sg = _mm256_set1_epi32((int)(uint32_t)(h >> 32));
#define NNP_SKETCH_SIGNED(v, up)                                                               \
    _mm256_xor_ps(_mm256_loadu_ps(x + 8 * (v)),                                                \
                  _mm256_castsi256_ps(_mm256_and_si256(_mm256_sllv_epi32(sg, up), top)))
        __m256 v0 = NNP_SKETCH_SIGNED(0, up0), v1 = NNP_SKETCH_SIGNED(1, up1),
               v2 = NNP_SKETCH_SIGNED(2, up2), v3 = NNP_SKETCH_SIGNED(3, up3);
#undef NNP_SKETCH_SIGNED
        if (!fresh) {
            v0 = _mm256_add_ps(_mm256_loadu_ps(row), v0);
            v1 = _mm256_add_ps(_mm256_loadu_ps(row + 8), v1);
            v2 = _mm256_add_ps(_mm256_loadu_ps(row + 16), v2);
            v3 = _mm256_add_ps(_mm256_loadu_ps(row + 24), v3);
        }
        _mm256_storeu_ps(row, v0);
        _mm256_storeu_ps(row + 8, v1);
        _mm256_storeu_ps(row + 16, v2);
        _mm256_storeu_ps(row + 24, v3);
    }
}

/* The same additions as fold_row_portable, four at a time: a small record folds once, and
 * its twenty-odd rows cost as much as its blocks. */
NNP_AVX2 static void fold_row_avx2(double *acc, const float *row)
{
    for (unsigned j = 0; j < W; j += 4)
        _mm256_storeu_pd(acc + j, _mm256_add_pd(_mm256_loadu_pd(acc + j),
                                                _mm256_cvtps_pd(_mm_loadu_ps(row + j))));
}

NNP_AVX2 static void f16_avx2(const unsigned char *src, size_t n, float *dst)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const void *)(src + 2 * i))));
    f16_portable(src + 2 * i, n - i, dst + i);
}
#endif

static const kernel portable = {moments_portable, moments_hash_portable, blocks_portable,
                                f16_portable, fold_row_portable};
static const kernel *best = &portable;
static pthread_once_t chosen_once = PTHREAD_ONCE_INIT;

static void choose(void)
{
#ifdef NNP_X86
    static const kernel avx2 = {moments_avx2, moments_hash_avx2, blocks_avx2, f16_avx2,
                                fold_row_avx2};
    unsigned a, b, c, d;
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C))
        best = &avx2;
#endif
}

/* The 16 lanes added in one fixed order. */
static double lanes_total(const double *l)
{
    double a[8];
    for (int i = 0; i < 8; i++)
        a[i] = l[i] + l[i + 8];
    for (int i = 0; i < 4; i++)
        a[i] += a[i + 4];
    return (a[0] + a[2]) + (a[1] + a[3]);
}

static void fold(const kernel *k, builder *b)
{
    for (unsigned r = 0; r < W; r++)
        if (b->t.used >> r & 1u)
            k->fold_row(b->acc + r, b->t.rows[r]);
    b->t.used = 0;
}

/* n (<= TILE) values at x, the next ones of b's stream; buf (TILE floats, may be x) takes a
 * copy when a value is not finite. hs, when not NULL, takes x's whole stripes: x is then the
 * record's own float32 bytes. */
static void segment(const kernel *k, builder *b, const float *x, size_t n, float *buf,
                    hash_state *hs)
{
    /* the kernels put x[0] in lane 0: the builder's lanes turned so that lane 0 is x[0]'s */
    unsigned o = (unsigned)(b->pos % LANES);
    double s[LANES], q[LANES];
    for (unsigned l = 0; l < LANES; l++) {
        s[l] = b->lane_sum[(o + l) % LANES];
        q[l] = b->lane_sq[(o + l) % LANES];
    }
    if (hs)
        k->moments_hash(x, n, s, q, hs);
    else
        k->moments(x, n, s, q);
    if (!isfinite(lanes_total(q))) {
        /* a NaN would poison every estimate; the count says it was there */
        for (size_t i = 0; i < n; i++) {
            float v = x[i];
            b->nonfinite += !isfinite(v);
            buf[i] = isfinite(v) ? v : 0.0f;
        }
        x = buf;
        for (unsigned l = 0; l < LANES; l++) {
            s[l] = b->lane_sum[(o + l) % LANES];
            q[l] = b->lane_sq[(o + l) % LANES];
        }
        k->moments(x, n, s, q);
    }
    for (unsigned l = 0; l < LANES; l++) {
        b->lane_sum[(o + l) % LANES] = s[l];
        b->lane_sq[(o + l) % LANES] = q[l];
    }

    uint64_t pos = b->pos;
    size_t i = 0;
    unsigned j0 = (unsigned)(pos % W);
    if (j0) { /* the stream resumes inside a block */
        i = W - j0 < n ? W - j0 : n;
        part_block(&b->t, x, i, j0, pos / W);
    }
    size_t nb = (n - i) / W;
    if (nb)
        k->blocks(&b->t, x + i, nb, (pos + i) / W);
    i += nb * W;
    if (i < n)
        part_block(&b->t, x + i, n - i, 0, (pos + i) / W);
    b->pos = pos + n;
    if (pos / FOLD != b->pos / FOLD)
        fold(k, b);
}

/* n values of dtype at src as floats: in place when they are aligned float32, else in buf. */
static const float *as_floats(const kernel *k, nnp_dtype dtype, const unsigned char *src,
                              size_t n, float *buf)
{
    if (dtype == NNP_F32 && (uintptr_t)src % _Alignof(float) == 0)
        return (const float *)(const void *)src;
    if (dtype == NNP_F16) {
        k->f16(src, n, buf);
    } else if (dtype == NNP_BF16) {
        for (size_t i = 0; i < n; i++) { /* bf16 is the top half of a float */
            uint16_t h;
            memcpy(&h, src + 2 * i, 2);
            uint32_t u = (uint32_t)h << 16;
            memcpy(&buf[i], &u, 4);
        }
    } else {
        nnp_convert_to_f32(dtype, src, n, buf);
    }
    return buf;
}

/* Feed n elements of dtype at src through b, a tile at a time, their bytes through hs too when
 * it is not NULL (only whole stripes: the caller hashes the tail). */
static void feed(const kernel *k, builder *b, hash_state *hs, nnp_dtype dtype,
                 const unsigned char *src, uint64_t n, float *buf)
{
    size_t es = nnp_dtype_size(dtype);
    while (n) {
        size_t m = n < TILE ? (size_t)n : TILE;
        const float *x = as_floats(k, dtype, src, m, buf);
        /* A whole tile is a whole number of stripes (TILE * es is a multiple of 32). Float32
         * read in place is hashed in the pass that sums it. */
        bool in_place = (const void *)x == (const void *)src;
        if (hs && !in_place)
            hash_stripes(hs, src, m * es / 32);
        segment(k, b, x, m, buf, in_place ? hs : NULL);
        src += m * es;
        n -= m;
    }
}

/* The last rows of `lead` blocks of rows x cols elements of dtype at src (cols < TILE) through
 * b: rows gathered into buf, as floats, and fed a tileful at a time. A stream fed in pieces has
 * the sums of the same values fed whole, except that its float table is folded after the piece
 * that crosses a multiple of FOLD: a tileful therefore ends where a row crossing one ends, as
 * when every row was fed alone. Fed alone, a row of a few elements cost as much as a tile: the
 * last rows of a [1, 576, 7, 7] activation took as long as the rest of its sketch. */
static void feed_rows(const kernel *k, builder *b, nnp_dtype dtype, const unsigned char *src,
                      uint64_t lead, uint64_t rows, uint64_t cols, float *buf)
{
    size_t es = nnp_dtype_size(dtype), fill = 0;
    float conv[TILE];
    for (uint64_t l = 0; l < lead; l++) {
        if (fill + cols > TILE) {
            segment(k, b, buf, fill, buf, NULL);
            fill = 0;
        }
        const unsigned char *row = src + ((l * rows + rows - 1) * cols) * es;
        const float *x = as_floats(k, dtype, row, (size_t)cols, conv);
        memcpy(buf + fill, x, (size_t)cols * sizeof *buf);
        fill += (size_t)cols;
        uint64_t end = b->pos + fill;
        if ((end - cols) / FOLD != end / FOLD) {
            segment(k, b, buf, fill, buf, NULL);
            fill = 0;
        }
    }
    if (fill)
        segment(k, b, buf, fill, buf, NULL);
}

static void builder_end(const kernel *k, builder *b, nnp_sketch_part *out)
{
    fold(k, b);
    for (int m = 0; m < W; m++)
        out->proj[m] = (float)(b->acc[m] + b->acc[m + W]);
    out->norm = sqrt(lanes_total(b->lane_sq));
    out->sum = lanes_total(b->lane_sum);
    out->count = b->pos;
}

static void sketch_with(const kernel *k, nnp_dtype dtype, uint32_t ndim, const uint64_t *shape,
                        const void *data, uint64_t nelem, nnp_sketch *out)
{
    memset(out, 0, sizeof *out);
    size_t es = nnp_dtype_size(dtype);
    const unsigned char *bytes = data;
    float buf[TILE];
    builder b;
    builder_init(&b);
    hash_state hs;
    hash_init(&hs, SKETCH_SEED);
    if (nelem)
        feed(k, &b, &hs, dtype, bytes, nelem, buf);
    uint64_t nbytes = nelem * es;
    uint64_t h = nnp__hash_combine(SKETCH_SEED, (uint64_t)dtype);
    h = nnp__hash_combine(h, ndim);
    for (uint32_t d = 0; d < ndim; d++)
        h = nnp__hash_combine(h, shape[d]);
    out->hash = nnp__hash_combine(h, hash_end(&hs, nbytes, nelem ? bytes + nbytes / 32 * 32
                                                                 : NULL));
    builder_end(k, &b, &out->all);
    out->nonfinite = b.nonfinite;

    /* the last row along the axis before the last: what a port that decodes one token with a
     * cache holds of a reference that re-runs the whole sequence */
    if (ndim >= 2 && shape[ndim - 2] >= 2 && nelem) {
        uint64_t cols = shape[ndim - 1], rows = shape[ndim - 2], lead = nelem / (cols * rows);
        builder_init(&b);
        if (cols < TILE)
            feed_rows(k, &b, dtype, bytes, lead, rows, cols, buf);
        else
            for (uint64_t l = 0; l < lead; l++)
                feed(k, &b, NULL, dtype, bytes + ((l * rows + rows - 1) * cols) * es, cols, buf);
        builder_end(k, &b, &out->last);
        out->has_last = true;
    }
}

void nnp__sketch_tensor(nnp_dtype dtype, uint32_t ndim, const uint64_t *shape, const void *data,
                        uint64_t nelem, nnp_sketch *out)
{
    pthread_once(&chosen_once, choose);
    sketch_with(best, dtype, ndim, shape, data, nelem, out);
}

void nnp__sketch_tensor_portable(nnp_dtype dtype, uint32_t ndim, const uint64_t *shape,
                                 const void *data, uint64_t nelem, nnp_sketch *out)
{
    sketch_with(&portable, dtype, ndim, shape, data, nelem, out);
}

/* f to F16, to nearest even; magnitudes past F16's largest finite become that largest. */
static uint16_t f16_of(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    uint32_t a = x & 0x7fffffffu;
    if (a >= 0x477ff000u) /* 65520 and up (and NaN, which the kernel never leaves) */
        return sign | 0x7bffu;
    if (a >= 0x38800000u) { /* normal: drop 13 mantissa bits, rebias the exponent */
        a += 0xfffu + ((a >> 13) & 1u);
        return (uint16_t)(sign | ((a - ((127u - 15u) << 23)) >> 13));
    }
    if (a < 0x33000000u) /* at most 2^-25, half the smallest subnormal: rounds to 0 */
        return sign;
    unsigned shift = 126u - (a >> 23); /* subnormal: a multiple of 2^-24 */
    uint32_t m = (a & 0x7fffffu) | 0x800000u, q = m >> shift, rem = m & ((1u << shift) - 1u);
    uint32_t half = 1u << (shift - 1);
    q += rem > half || (rem == half && (q & 1u));
    return (uint16_t)(sign | q);
}

void nnp__sketch_proj_f16_portable(const nnp_sketch_part *p, uint16_t *out)
{
    for (int m = 0; m < W; m++)
        out[m] = p->norm > 0 ? f16_of((float)(p->proj[m] / p->norm)) : 0;
}

#ifdef NNP_X86
/* The same bits as the portable version: the division in double, rounded to float, F16C's
 * conversion to nearest even, and f16_of's saturation (F16C would give infinity) put back. A
 * capture stores two such projections per record; done one by one they cost a fifth of the
 * sketch of a 4 KiB record. */
NNP_AVX2 static void proj_f16_avx2(const nnp_sketch_part *p, uint16_t *out)
{
    const __m256d norm = _mm256_set1_pd(p->norm);
    const __m256i absmask = _mm256_set1_epi32(0x7fffffff), big = _mm256_set1_epi32(0x477fefff);
    const __m256i most = _mm256_set1_epi32(0x7bff);
    for (int m = 0; m < W; m += 8) {
        __m256 v = _mm256_loadu_ps(p->proj + m);
        __m128 lo = _mm256_cvtpd_ps(_mm256_div_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(v)), norm));
        __m128 hi = _mm256_cvtpd_ps(_mm256_div_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)), norm));
        __m256 q = _mm256_set_m128(hi, lo);
        __m256i bits = _mm256_castps_si256(q);
        __m256i a = _mm256_and_si256(bits, absmask);
        __m256i sat = _mm256_cmpgt_epi32(a, big); /* a >= 0x477ff000: 65520 and up, and NaN */
        __m256i h = _mm256_cvtepu16_epi32(_mm256_cvtps_ph(q, _MM_FROUND_TO_NEAREST_INT));
        __m256i sign = _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(0x8000));
        h = _mm256_blendv_epi8(h, _mm256_or_si256(sign, most), sat);
        /* eight 32-bit lanes to eight 16-bit values */
        __m128i packed = _mm_packus_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
        _mm_storeu_si128((__m128i *)(void *)(out + m), packed);
    }
}
#endif

void nnp__sketch_proj_f16(const nnp_sketch_part *p, uint16_t *out)
{
    pthread_once(&chosen_once, choose);
#ifdef NNP_X86
    if (best != &portable && p->norm > 0) {
        proj_f16_avx2(p, out);
        return;
    }
#endif
    nnp__sketch_proj_f16_portable(p, out);
}

#define FLT_TOP 3.4028234663852886e38 /* the largest float, as a double */

bool nnp__sketch_proj_unpack_portable(const unsigned char *src, double norm, float *out)
{
    for (int m = 0; m < W; m++) {
        uint16_t h = (uint16_t)(src[2 * m] | src[2 * m + 1] << 8);
        if ((h & 0x7c00u) == 0x7c00u)
            return false;
        double v = (double)nnp_f16_to_f32(h) * norm;
        /* a projection is at most the norm times sqrt(count): past a float's range only for
         * values near it, where the kernel's own float would have overflowed as well */
        out[m] = v > FLT_TOP ? (float)FLT_TOP : v < -FLT_TOP ? (float)-FLT_TOP : (float)v;
    }
    return true;
}

#ifdef NNP_X86
/* The same, eight at a time with F16C (exact, as the portable conversion): decoding a
 * capture's stored sketches converted 64 values a record one call each. The values are
 * finite, so holding them to the range with min and max is the portable comparisons. */
NNP_AVX2 static bool proj_unpack_avx2(const unsigned char *src, double norm, float *out)
{
    const __m256d n = _mm256_set1_pd(norm), top = _mm256_set1_pd(FLT_TOP),
                  bottom = _mm256_set1_pd(-FLT_TOP);
    const __m128i expo = _mm_set1_epi16(0x7c00);
    for (int m = 0; m < W; m += 8) {
        __m128i h = _mm_loadu_si128((const __m128i *)(const void *)(src + 2 * m));
        if (_mm_movemask_epi8(_mm_cmpeq_epi16(_mm_and_si128(h, expo), expo)))
            return false;
        __m256 f = _mm256_cvtph_ps(h);
        __m256d lo = _mm256_mul_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(f)), n);
        __m256d hi = _mm256_mul_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(f, 1)), n);
        lo = _mm256_min_pd(_mm256_max_pd(lo, bottom), top);
        hi = _mm256_min_pd(_mm256_max_pd(hi, bottom), top);
        _mm_storeu_ps(out + m, _mm256_cvtpd_ps(lo));
        _mm_storeu_ps(out + m + 4, _mm256_cvtpd_ps(hi));
    }
    return true;
}
#endif

bool nnp__sketch_proj_unpack(const unsigned char *src, double norm, float *out)
{
    pthread_once(&chosen_once, choose);
#ifdef NNP_X86
    if (best != &portable)
        return proj_unpack_avx2(src, norm, out);
#endif
    return nnp__sketch_proj_unpack_portable(src, norm, out);
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
