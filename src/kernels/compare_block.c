/*
 * kernels_cmp.c - the sums that nnp_compare needs from a block of (reference, port) pairs, read
 * straight from F32, BF16 or F16 storage.
 *
 * These three dtypes are what captures hold, and each converts exactly to float, so a pair of
 * them is compared from float vectors widened to double: no conversion buffer and one pass for
 * everything, the error sums, the tolerance count, the largest error and the Pearson moments.
 * The moments are summed about a pivot, the block's first pair (r0, p0): with x = r - r0,
 * m2_r = sum x^2 - (sum x)^2 / n. Because r0 is one of the block's values, the subtracted term
 * is at most n times the result; when it is more than NNP_PIVOT_LIMIT times the result (r0 far
 * out in the block's distribution) the block's moments are summed again about its mean, the
 * exact two-pass way. So the cancellation never costs more than a factor NNP_PIVOT_LIMIT + 1 in
 * rounding error, and a block of ordinary data needs one pass. The norms and the dot product
 * then follow without cancellation: sum r^2 = m2_r + n mean_r^2 adds two non-negative terms,
 * and sum p*r = c_rp + n mean_r mean_p errs by a few ulps of sqrt(sum r^2 sum p^2), so cosine
 * stays within a few ulps.
 *
 * One pass over four pairs a step is what ran fastest (bench/README.md): a second pass that
 * converts every element again cost a third more, and eight pairs a step, or plain sums of r^2,
 * p^2 and p*r kept as well, left too few registers, so accumulators went to the stack and each
 * addition waited on memory. No element is tested for NaN or infinity: sums of finite floats
 * cannot overflow a double, so the block is finite exactly when the pivoted sums of both sides
 * are, and the caller redoes a block that is not on its exact slow path.
 *
 * BF16 widens by placing its bits in the top half of a float; F16 by the F16C instruction
 * (exact, subnormals included). On x86-64 the version is chosen at run time: AVX-512 (eight
 * pairs a step in 512-bit registers, the same arithmetic) where the CPU has AVX512F with AVX2,
 * FMA and F16C, else AVX2 + FMA + F16C where it has those; elsewhere a portable version
 * converts the block to float with the library's exact scalar conversions and takes two passes.
 * They differ only in the order of additions and in FMA's single rounding. The AVX-512 version
 * took 11% less time than the AVX2 one for F32, 13% for BF16 and 23% for F16 on 2 GiB dumps
 * (bench/README.md): half the instructions for the same work, on CPUs that run 512-bit
 * operations as two 256-bit halves as well as on those that run them whole.
 */
#include <math.h>
#include <string.h>

#include "kernels/kernels.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#include <immintrin.h>
#define NNP_X86 1
#endif

/* Largest (sum x)^2 / n, as a multiple of the moment it is subtracted from, that the one-pass
 * moments accept before the block is summed again about its mean. */
#define NNP_PIVOT_LIMIT 16.0

bool nnp__cmp_fast_dtype(nnp_dtype t)
{
    return t == NNP_F32 || t == NNP_BF16 || t == NNP_F16;
}

/* The block's norms and dot product from its moments (see above). */
static void finish_moments(double m2r, double m2p, double crp, nnp_cmp_sums *out)
{
    double n = (double)out->n;
    out->m2_r = m2r;
    out->m2_p = m2p;
    out->c_rp = crp;
    out->srr = m2r + n * out->mean_r * out->mean_r;
    out->spp = m2p + n * out->mean_p * out->mean_p;
    out->spr = crp + n * out->mean_r * out->mean_p;
}

bool nnp__cmp_block_portable(nnp_dtype rt, const void *ref, nnp_dtype pt, const void *port,
                             size_t n, double atol, double rtol, nnp_cmp_sums *out)
{
    float r[NNP_CMP_BLOCK], p[NNP_CMP_BLOCK];
    if (n == 0 || n > NNP_CMP_BLOCK)
        return false;
    nnp_convert_to_f32(rt, ref, n, r);
    nnp_convert_to_f32(pt, port, n, p);
    double sd2 = 0, sad = 0, sr = 0, sp = 0, fail = 0;
#pragma omp simd reduction(+ : sd2, sad, sr, sp, fail)
    for (size_t i = 0; i < n; i++) {
        double x = r[i], y = p[i], d = y - x, a = fabs(d);
        sd2 += d * d;
        sad += a;
        sr += x;
        sp += y;
        fail += a > atol + rtol * fabs(x) ? 1.0 : 0.0;
    }
    /* an infinity cannot be cancelled by finite values; +inf meeting -inf or any NaN is NaN */
    if (!isfinite(sr) || !isfinite(sp))
        return false;
    double mx = 0;
    for (size_t i = 0; i < n; i++) {
        double a = fabs((double)p[i] - (double)r[i]);
        mx = a > mx ? a : mx;
    }
    memset(out, 0, sizeof *out);
    out->n = n;
    out->fail = (uint64_t)fail;
    out->sd2 = sd2;
    out->sad = sad;
    out->max_abs = mx;
    out->mean_r = sr / (double)n;
    out->mean_p = sp / (double)n;
    double mr = out->mean_r, mp = out->mean_p, m2r = 0, m2p = 0, crp = 0;
#pragma omp simd reduction(+ : m2r, m2p, crp)
    for (size_t i = 0; i < n; i++) {
        double a = (double)r[i] - mr, b = (double)p[i] - mp;
        m2r += a * a;
        m2p += b * b;
        crp += a * b;
    }
    finish_moments(m2r, m2p, crp, out);
    return true;
}

#ifdef NNP_X86
/* One kernel body for every pairing of the three dtypes, specialised below with constant dtypes
 * so that each instance loads its own two formats with no branch in the loop. */
enum { K_F32, K_BF16, K_F16 };

#define NNP_AVX2 __attribute__((target("avx2,fma,f16c")))

/* Four elements widened to double. Only the four are read (8 or 16 bytes), never past them:
 * the last ones may end a mapping. */
NNP_AVX2 static inline __m256d load4(int k, const unsigned char *s)
{
    if (k == K_F32)
        return _mm256_cvtps_pd(_mm_loadu_ps((const float *)(const void *)s));
    __m128i h = _mm_loadl_epi64((const __m128i *)(const void *)s);
    if (k == K_BF16) /* interleaved with zeros: each is the top half of a float */
        return _mm256_cvtps_pd(_mm_castsi128_ps(_mm_unpacklo_epi16(_mm_setzero_si128(), h)));
    return _mm256_cvtps_pd(_mm_cvtph_ps(h));
}

static inline double load1(int k, const unsigned char *s)
{
    if (k == K_F32) {
        float f;
        memcpy(&f, s, sizeof f);
        return f;
    }
    uint16_t h;
    memcpy(&h, s, sizeof h);
    return k == K_BF16 ? nnp_bf16_to_f32(h) : nnp_f16_to_f32(h);
}

NNP_AVX2 static inline double hsum(__m256d v)
{
    __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
}

NNP_AVX2 static inline double hmax(__m256d v)
{
    __m128d s = _mm_max_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    return _mm_cvtsd_f64(_mm_max_sd(s, _mm_unpackhi_pd(s, s)));
}

typedef struct {
    __m256d sd2, sad, max; /* sums of d^2 and |d|, the largest |d| */
    __m256d sx, sy, sxx, syy, sxy; /* x = r - r0, y = p - p0 */
    __m256i fail;
} vsums;

/* Four pairs. The tolerance bound is a multiply and an add, not an FMA: the same rounding as the
 * scalar test `|d| > atol + rtol * |r|` everywhere else. */
NNP_AVX2 static inline void step4(vsums *s, __m256d r, __m256d p, __m256d absmask, __m256d atol,
                                  __m256d rtol, __m256d r0, __m256d p0)
{
    __m256d d = _mm256_sub_pd(p, r), a = _mm256_and_pd(d, absmask);
    s->sd2 = _mm256_fmadd_pd(d, d, s->sd2);
    s->sad = _mm256_add_pd(s->sad, a);
    s->max = _mm256_max_pd(s->max, a);
    __m256d bound = _mm256_add_pd(atol, _mm256_mul_pd(rtol, _mm256_and_pd(r, absmask)));
    /* a true comparison is all ones, -1 as an integer */
    s->fail = _mm256_sub_epi64(s->fail, _mm256_castpd_si256(_mm256_cmp_pd(a, bound, _CMP_GT_OQ)));
    __m256d x = _mm256_sub_pd(r, r0), y = _mm256_sub_pd(p, p0);
    s->sx = _mm256_add_pd(s->sx, x);
    s->sy = _mm256_add_pd(s->sy, y);
    s->sxx = _mm256_fmadd_pd(x, x, s->sxx);
    s->syy = _mm256_fmadd_pd(y, y, s->syy);
    s->sxy = _mm256_fmadd_pd(x, y, s->sxy);
}

/* The moments about the block's means, the exact two-pass way: for a block whose pivot was too
 * far from its mean. */
NNP_AVX2 __attribute__((always_inline)) static inline void
centered(int rk, int pk, const unsigned char *ref, const unsigned char *port, size_t n,
         double mean_r, double mean_p, double *m2r, double *m2p, double *crp)
{
    size_t rs = rk == K_F32 ? 4 : 2, ps = pk == K_F32 ? 4 : 2, n4 = n & ~(size_t)3, i;
    const __m256d mr = _mm256_set1_pd(mean_r), mp = _mm256_set1_pd(mean_p);
    __m256d aa = _mm256_setzero_pd(), bb = _mm256_setzero_pd(), ab = _mm256_setzero_pd();
    for (i = 0; i < n4; i += 4) {
        __m256d a = _mm256_sub_pd(load4(rk, ref + i * rs), mr);
        __m256d b = _mm256_sub_pd(load4(pk, port + i * ps), mp);
        aa = _mm256_fmadd_pd(a, a, aa);
        bb = _mm256_fmadd_pd(b, b, bb);
        ab = _mm256_fmadd_pd(a, b, ab);
    }
    *m2r = hsum(aa);
    *m2p = hsum(bb);
    *crp = hsum(ab);
    for (; i < n; i++) {
        double a = load1(rk, ref + i * rs) - mean_r, b = load1(pk, port + i * ps) - mean_p;
        *m2r += a * a;
        *m2p += b * b;
        *crp += a * b;
    }
}

/* The rest of a block after its vector part: pairs i..n-1 one at a time, then the means and
 * moments. t holds n, fail, sd2, sad and max_abs so far; sums[] the pivoted sums of x, y, x^2,
 * y^2 and xy. (AVX2 code: the AVX-512 kernel's rare second pass about the means runs it too.) */
NNP_AVX2 __attribute__((always_inline)) static inline bool
finish_block(int rk, int pk, const unsigned char *ref, const unsigned char *port, size_t i,
             double r0, double p0, double atol, double rtol, const nnp_cmp_sums *t,
             const double *sums, nnp_cmp_sums *out)
{
    size_t rs = rk == K_F32 ? 4 : 2, ps = pk == K_F32 ? 4 : 2, n = t->n;
    double sd2 = t->sd2, sad = t->sad, mx = t->max_abs, sx = sums[0], sy = sums[1];
    double sxx = sums[2], syy = sums[3], sxy = sums[4];
    uint64_t fail = t->fail;
    for (; i < n; i++) {
        double r = load1(rk, ref + i * rs), p = load1(pk, port + i * ps);
        double d = p - r, a = fabs(d), x = r - r0, y = p - p0;
        sd2 += d * d;
        sad += a;
        mx = a > mx ? a : mx;
        fail += a > atol + rtol * fabs(r);
        sx += x;
        sy += y;
        sxx += x * x;
        syy += y * y;
        sxy += x * y;
    }
    /* an infinity cannot be cancelled by finite values; +inf meeting -inf or any NaN is NaN */
    if (!isfinite(sx) || !isfinite(sy))
        return false;
    double dn = (double)n, cx = sx * sx / dn, cy = sy * sy / dn;
    memset(out, 0, sizeof *out);
    out->n = n;
    out->fail = fail;
    out->sd2 = sd2;
    out->sad = sad;
    out->max_abs = mx;
    out->mean_r = r0 + sx / dn;
    out->mean_p = p0 + sy / dn;
    double m2r = sxx - cx, m2p = syy - cy, crp = sxy - sx * sy / dn;
    if (!(cx <= NNP_PIVOT_LIMIT * m2r) || !(cy <= NNP_PIVOT_LIMIT * m2p))
        centered(rk, pk, ref, port, n, out->mean_r, out->mean_p, &m2r, &m2p, &crp);
    finish_moments(m2r, m2p, crp, out);
    return true;
}

NNP_AVX2 __attribute__((always_inline)) static inline bool
cmp_avx2(int rk, int pk, const unsigned char *ref, const unsigned char *port, size_t n,
         double atol, double rtol, nnp_cmp_sums *out)
{
    size_t rs = rk == K_F32 ? 4 : 2, ps = pk == K_F32 ? 4 : 2, n4 = n & ~(size_t)3, i;
    const __m256d absmask = _mm256_castsi256_pd(_mm256_set1_epi64x(0x7fffffffffffffffll));
    const __m256d vatol = _mm256_set1_pd(atol), vrtol = _mm256_set1_pd(rtol);
    double r0 = load1(rk, ref), p0 = load1(pk, port);
    const __m256d vr0 = _mm256_set1_pd(r0), vp0 = _mm256_set1_pd(p0);
    vsums s;
    s.sd2 = s.sad = s.max = s.sx = s.sy = s.sxx = s.syy = s.sxy = _mm256_setzero_pd();
    s.fail = _mm256_setzero_si256();
    for (i = 0; i < n4; i += 4)
        step4(&s, load4(rk, ref + i * rs), load4(pk, port + i * ps), absmask, vatol, vrtol, vr0,
              vp0);
    int64_t fails[4];
    _mm256_storeu_si256((__m256i *)(void *)fails, s.fail);
    nnp_cmp_sums t = {0};
    t.n = n;
    t.fail = (uint64_t)(fails[0] + fails[1] + fails[2] + fails[3]);
    t.sd2 = hsum(s.sd2);
    t.sad = hsum(s.sad);
    t.max_abs = hmax(s.max);
    double sums[5] = {hsum(s.sx), hsum(s.sy), hsum(s.sxx), hsum(s.syy), hsum(s.sxy)};
    return finish_block(rk, pk, ref, port, i, r0, p0, atol, rtol, &t, sums, out);
}

#define NNP_AVX512 __attribute__((target("avx512f,avx2,fma,f16c")))

/* Eight elements widened to double; only the eight are read. */
NNP_AVX512 static inline __m512d load8(int k, const unsigned char *s)
{
    if (k == K_F32)
        return _mm512_cvtps_pd(_mm256_loadu_ps((const float *)(const void *)s));
    __m128i h = _mm_loadu_si128((const __m128i *)(const void *)s);
    if (k == K_BF16) /* each moved to the top half of a 32-bit lane */
        return _mm512_cvtps_pd(
            _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16)));
    return _mm512_cvtps_pd(_mm256_cvtph_ps(h));
}

typedef struct {
    __m512d sd2, sad, max;
    __m512d sx, sy, sxx, syy, sxy;
    __m512i fail;
} zsums;

/* Eight pairs: step4's arithmetic, the same roundings. */
NNP_AVX512 static inline void step8(zsums *s, __m512d r, __m512d p, __m512d atol, __m512d rtol,
                                    __m512d r0, __m512d p0, __m512i one)
{
    __m512d d = _mm512_sub_pd(p, r), a = _mm512_abs_pd(d);
    s->sd2 = _mm512_fmadd_pd(d, d, s->sd2);
    s->sad = _mm512_add_pd(s->sad, a);
    s->max = _mm512_max_pd(s->max, a);
    __m512d bound = _mm512_add_pd(atol, _mm512_mul_pd(rtol, _mm512_abs_pd(r)));
    __mmask8 out = _mm512_cmp_pd_mask(a, bound, _CMP_GT_OQ);
    s->fail = _mm512_mask_add_epi64(s->fail, out, s->fail, one);
    __m512d x = _mm512_sub_pd(r, r0), y = _mm512_sub_pd(p, p0);
    s->sx = _mm512_add_pd(s->sx, x);
    s->sy = _mm512_add_pd(s->sy, y);
    s->sxx = _mm512_fmadd_pd(x, x, s->sxx);
    s->syy = _mm512_fmadd_pd(y, y, s->syy);
    s->sxy = _mm512_fmadd_pd(x, y, s->sxy);
}

NNP_AVX512 __attribute__((always_inline)) static inline bool
cmp_avx512(int rk, int pk, const unsigned char *ref, const unsigned char *port, size_t n,
           double atol, double rtol, nnp_cmp_sums *out)
{
    size_t rs = rk == K_F32 ? 4 : 2, ps = pk == K_F32 ? 4 : 2, n8 = n & ~(size_t)7, i;
    const __m512d vatol = _mm512_set1_pd(atol), vrtol = _mm512_set1_pd(rtol);
    double r0 = load1(rk, ref), p0 = load1(pk, port);
    const __m512d vr0 = _mm512_set1_pd(r0), vp0 = _mm512_set1_pd(p0);
    const __m512i one = _mm512_set1_epi64(1);
    zsums s;
    s.sd2 = s.sad = s.max = s.sx = s.sy = s.sxx = s.syy = s.sxy = _mm512_setzero_pd();
    s.fail = _mm512_setzero_si512();
    for (i = 0; i < n8; i += 8)
        step8(&s, load8(rk, ref + i * rs), load8(pk, port + i * ps), vatol, vrtol, vr0, vp0,
              one);
    nnp_cmp_sums t = {0};
    t.n = n;
    t.fail = (uint64_t)_mm512_reduce_add_epi64(s.fail);
    t.sd2 = _mm512_reduce_add_pd(s.sd2);
    t.sad = _mm512_reduce_add_pd(s.sad);
    t.max_abs = _mm512_reduce_max_pd(s.max);
    double sums[5] = {_mm512_reduce_add_pd(s.sx), _mm512_reduce_add_pd(s.sy),
                      _mm512_reduce_add_pd(s.sxx), _mm512_reduce_add_pd(s.syy),
                      _mm512_reduce_add_pd(s.sxy)};
    return finish_block(rk, pk, ref, port, i, r0, p0, atol, rtol, &t, sums, out);
}

typedef bool (*cmp_fn)(const void *, const void *, size_t, double, double, nnp_cmp_sums *);

/* Each vector kernel specialised for one pairing of dtypes. */
#define CMP_INSTANCE(R, P)                                                                     \
    NNP_AVX2 static bool cmp_avx2_##R##_##P(const void *ref, const void *port, size_t n,       \
                                            double atol, double rtol, nnp_cmp_sums *out)       \
    {                                                                                          \
        return cmp_avx2(K_##R, K_##P, ref, port, n, atol, rtol, out);                          \
    }                                                                                          \
    NNP_AVX512 static bool cmp_avx512_##R##_##P(const void *ref, const void *port, size_t n,   \
                                                double atol, double rtol, nnp_cmp_sums *out)   \
    {                                                                                          \
        return cmp_avx512(K_##R, K_##P, ref, port, n, atol, rtol, out);                        \
    }
CMP_INSTANCE(F32, F32)
CMP_INSTANCE(F32, BF16)
CMP_INSTANCE(F32, F16)
CMP_INSTANCE(BF16, F32)
CMP_INSTANCE(BF16, BF16)
CMP_INSTANCE(BF16, F16)
CMP_INSTANCE(F16, F32)
CMP_INSTANCE(F16, BF16)
CMP_INSTANCE(F16, F16)

#define CMP_ROWS(K)                                                                            \
    {{K##_F32_F32, K##_F32_BF16, K##_F32_F16},                                                 \
     {K##_BF16_F32, K##_BF16_BF16, K##_BF16_F16},                                              \
     {K##_F16_F32, K##_F16_BF16, K##_F16_F16}}

/* by kernel (NNP_CMP_AVX2, NNP_CMP_AVX512), reference kind, port kind */
static const cmp_fn vector_table[2][3][3] = {CMP_ROWS(cmp_avx2), CMP_ROWS(cmp_avx512)};

static int kind_of(nnp_dtype t)
{
    return t == NNP_F32 ? K_F32 : t == NNP_BF16 ? K_BF16 : K_F16;
}
#endif

static bool have[NNP_CMP_KERNELS];
static nnp_cmp_kernel best = NNP_CMP_PORTABLE;
static pthread_once_t chosen_once = PTHREAD_ONCE_INIT;

static void choose(void)
{
    have[NNP_CMP_PORTABLE] = true;
#ifdef NNP_X86
    __builtin_cpu_init();
    /* clang knows no "f16c" for __builtin_cpu_supports: CPUID leaf 1 says it (ECX bit 29); the
     * AVX2 and AVX512F tests have already checked that the system saves the vector registers */
    unsigned a, b, c, d;
    have[NNP_CMP_AVX2] = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                         __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
    have[NNP_CMP_AVX512] = have[NNP_CMP_AVX2] && __builtin_cpu_supports("avx512f");
#endif
    for (int k = 0; k < NNP_CMP_KERNELS; k++)
        if (have[k])
            best = (nnp_cmp_kernel)k;
}

bool nnp__cmp_kernel_available(nnp_cmp_kernel k)
{
    pthread_once(&chosen_once, choose);
    return k >= 0 && k < NNP_CMP_KERNELS && have[k];
}

bool nnp__cmp_block_with(nnp_cmp_kernel k, nnp_dtype rt, const void *ref, nnp_dtype pt,
                         const void *port, size_t n, double atol, double rtol, nnp_cmp_sums *out)
{
    if (n == 0 || n > NNP_CMP_BLOCK || !nnp__cmp_fast_dtype(rt) || !nnp__cmp_fast_dtype(pt) ||
        !nnp__cmp_kernel_available(k))
        return false;
#ifdef NNP_X86
    if (k != NNP_CMP_PORTABLE)
        return vector_table[k - NNP_CMP_AVX2][kind_of(rt)][kind_of(pt)](ref, port, n, atol,
                                                                          rtol, out);
#endif
    return nnp__cmp_block_portable(rt, ref, pt, port, n, atol, rtol, out);
}

bool nnp__cmp_block(nnp_dtype rt, const void *ref, nnp_dtype pt, const void *port, size_t n,
                    double atol, double rtol, nnp_cmp_sums *out)
{
    pthread_once(&chosen_once, choose);
    return nnp__cmp_block_with(best, rt, ref, pt, port, n, atol, rtol, out);
}
