/*
 * kernels_f32.c - the statistics of a block of float32 values, read straight from the dump.
 *
 * float32 is what most captures hold, and a pass over it must run near memory speed, so this
 * kernel reads the floats directly (no conversion buffer): min, max, abs-max, zeros and the
 * double-precision sums, with independent accumulators so that additions do not wait on each
 * other. On x86-64 an AVX2+FMA version, which needs one pass (see block_avx2), is chosen at run
 * time where the CPU has it; SSE2 is the baseline and takes two passes; other
 * machines use the portable loop. Every version computes min/max/zeros exactly and the sums in
 * double; they differ only in the order of the additions.
 */
#include <math.h>
#include <string.h>

#include "kernels/kernels.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define NNP_X86 1
#endif

/* Scalar tail and portable fallback: false as soon as a value is not finite. */
static bool block_portable(const float *x, size_t n, double shift, nnp_block_moments *m)
{
    float mn = INFINITY, mx = -INFINITY, am = 0;
    double sum[4] = {0, 0, 0, 0};
    uint64_t zeros = 0;
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        if (!isfinite(v))
            return false;
        mn = v < mn ? v : mn;
        mx = v > mx ? v : mx;
        am = fabsf(v) > am ? fabsf(v) : am;
        zeros += v == 0.0f;
        sum[i & 3] += (double)v - shift;
    }
    double mean = (sum[0] + sum[1] + sum[2] + sum[3]) / (double)n, m2[4] = {0, 0, 0, 0};
    for (size_t i = 0; i < n; i++) {
        double d = ((double)x[i] - shift) - mean;
        m2[i & 3] += d * d;
    }
    m->n = n;
    m->zeros = zeros;
    m->min = mn;
    m->max = mx;
    m->abs_max = am;
    m->mean = mean;
    m->m2 = m2[0] + m2[1] + m2[2] + m2[3];
    return true;
}

#ifdef NNP_X86
static double hsum_pd128(__m128d v)
{
    return _mm_cvtsd_f64(_mm_add_sd(v, _mm_unpackhi_pd(v, v)));
}

static float hmin_ps128(__m128 v)
{
    v = _mm_min_ps(v, _mm_movehl_ps(v, v));
    v = _mm_min_ss(v, _mm_shuffle_ps(v, v, 1));
    return _mm_cvtss_f32(v);
}

static float hmax_ps128(__m128 v)
{
    v = _mm_max_ps(v, _mm_movehl_ps(v, v));
    v = _mm_max_ss(v, _mm_shuffle_ps(v, v, 1));
    return _mm_cvtss_f32(v);
}

/* SSE2, in every x86-64. Four floats a step; two double accumulators per half. */
static bool block_sse2(const float *x, size_t n, double shift, nnp_block_moments *m)
{
    size_t n4 = n & ~(size_t)3;
    if (n4 == 0)
        return block_portable(x, n, shift, m);
    __m128 vmin = _mm_set1_ps(INFINITY), vmax = _mm_set1_ps(-INFINITY), vabs = _mm_setzero_ps();
    __m128 vzero = _mm_setzero_ps(), vbad = _mm_setzero_ps(), one = _mm_set1_ps(1.0f);
    __m128 absmask = _mm_castsi128_ps(_mm_set1_epi32(0x7fffffff));
    __m128d vshift = _mm_set1_pd(shift), s0 = _mm_setzero_pd(), s1 = _mm_setzero_pd();
    for (size_t i = 0; i < n4; i += 4) {
        __m128 v = _mm_loadu_ps(x + i);
        vmin = _mm_min_ps(vmin, v);
        vmax = _mm_max_ps(vmax, v);
        vabs = _mm_max_ps(vabs, _mm_and_ps(v, absmask));
        vzero = _mm_add_ps(vzero, _mm_and_ps(_mm_cmpeq_ps(v, _mm_setzero_ps()), one));
        __m128 d = _mm_sub_ps(v, v); /* NaN exactly where v is NaN or infinite */
        vbad = _mm_or_ps(vbad, _mm_cmpunord_ps(d, d));
        s0 = _mm_add_pd(s0, _mm_sub_pd(_mm_cvtps_pd(v), vshift));
        s1 = _mm_add_pd(s1, _mm_sub_pd(_mm_cvtps_pd(_mm_movehl_ps(v, v)), vshift));
    }
    if (_mm_movemask_ps(vbad))
        return false;
    nnp_block_moments tail = {0};
    if (n4 < n && !block_portable(x + n4, n - n4, shift, &tail))
        return false;
    float zc[4];
    _mm_storeu_ps(zc, vzero);
    double sum = hsum_pd128(_mm_add_pd(s0, s1)) + tail.mean * (double)tail.n;
    double mean = sum / (double)n;
    __m128d vmean = _mm_set1_pd(mean + shift), q0 = _mm_setzero_pd(), q1 = _mm_setzero_pd();
    for (size_t i = 0; i < n4; i += 4) {
        __m128 v = _mm_loadu_ps(x + i);
        __m128d a = _mm_sub_pd(_mm_cvtps_pd(v), vmean);
        __m128d b = _mm_sub_pd(_mm_cvtps_pd(_mm_movehl_ps(v, v)), vmean);
        q0 = _mm_add_pd(q0, _mm_mul_pd(a, a));
        q1 = _mm_add_pd(q1, _mm_mul_pd(b, b));
    }
    double m2 = hsum_pd128(_mm_add_pd(q0, q1));
    for (size_t i = n4; i < n; i++) {
        double d = ((double)x[i] - shift) - mean;
        m2 += d * d;
    }
    m->n = n;
    m->zeros = (uint64_t)(zc[0] + zc[1] + zc[2] + zc[3]) + tail.zeros;
    m->min = hmin_ps128(vmin);
    m->max = hmax_ps128(vmax);
    m->abs_max = hmax_ps128(vabs);
    if (tail.n) {
        m->min = tail.min < m->min ? tail.min : m->min;
        m->max = tail.max > m->max ? tail.max : m->max;
        m->abs_max = tail.abs_max > m->abs_max ? tail.abs_max : m->abs_max;
    }
    m->mean = mean;
    m->m2 = m2;
    return true;
}

/* AVX2 + FMA: sixteen floats a step, one pass. The sums of x = v - shift and of x^2 give the
 * block's m2 = sum x^2 - (sum x)^2 / n; when the subtracted term is more than NNP_F32_PIVOT_LIMIT
 * times the result (the shift far from this block's values) the block is summed again about its
 * mean, so cancellation never costs more than that factor in rounding. Four sets of double
 * accumulators keep each addition from waiting on the one before. No element is tested for NaN
 * or infinity: sums of squares of finite floats cannot overflow a double, so the block is finite
 * exactly when the sum of squares is. */
#define NNP_F32_PIVOT_LIMIT 16.0

typedef struct {
    __m256 min, max, abs;
    __m256i zero;
    __m256d s[4], q[4];
} avx_acc;

__attribute__((target("avx2,fma"))) static inline void avx_step(avx_acc *a, __m256 v, int k,
                                                                __m256d shift)
{
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    a->min = _mm256_min_ps(a->min, v);
    a->max = _mm256_max_ps(a->max, v);
    a->abs = _mm256_max_ps(a->abs, _mm256_and_ps(v, absmask));
    /* a true comparison is all ones, -1 as an integer */
    a->zero = _mm256_sub_epi32(a->zero,
                               _mm256_castps_si256(_mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_EQ_OQ)));
    __m256d lo = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(v)), shift);
    __m256d hi = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)), shift);
    a->s[2 * k] = _mm256_add_pd(a->s[2 * k], lo);
    a->s[2 * k + 1] = _mm256_add_pd(a->s[2 * k + 1], hi);
    a->q[2 * k] = _mm256_fmadd_pd(lo, lo, a->q[2 * k]);
    a->q[2 * k + 1] = _mm256_fmadd_pd(hi, hi, a->q[2 * k + 1]);
}

__attribute__((target("avx2,fma"))) static float hmin256(__m256 v)
{
    return hmin_ps128(_mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1)));
}

__attribute__((target("avx2,fma"))) static float hmax256(__m256 v)
{
    return hmax_ps128(_mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1)));
}

__attribute__((target("avx2,fma"))) static double hsum256d(__m256d v)
{
    return hsum_pd128(_mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1)));
}

__attribute__((target("avx2,fma"))) static bool block_avx2(const float *x, size_t n, double shift,
                                                            nnp_block_moments *m)
{
    size_t n8 = n & ~(size_t)7;
    if (n8 == 0)
        return block_sse2(x, n, shift, m);
    __m256d vshift = _mm256_set1_pd(shift);
    avx_acc a;
    a.min = _mm256_set1_ps(INFINITY);
    a.max = _mm256_set1_ps(-INFINITY);
    a.abs = _mm256_setzero_ps();
    a.zero = _mm256_setzero_si256();
    for (int k = 0; k < 4; k++)
        a.s[k] = a.q[k] = _mm256_setzero_pd();
    size_t i = 0;
    for (; i + 16 <= n8; i += 16) {
        avx_step(&a, _mm256_loadu_ps(x + i), 0, vshift);
        avx_step(&a, _mm256_loadu_ps(x + i + 8), 1, vshift);
    }
    if (i < n8)
        avx_step(&a, _mm256_loadu_ps(x + i), 0, vshift);
    double sum = hsum256d(_mm256_add_pd(_mm256_add_pd(a.s[0], a.s[1]), _mm256_add_pd(a.s[2], a.s[3])));
    double sq = hsum256d(_mm256_add_pd(_mm256_add_pd(a.q[0], a.q[1]), _mm256_add_pd(a.q[2], a.q[3])));
    if (!isfinite(sq))
        return false;
    nnp_block_moments tail = {0};
    if (n8 < n && !block_portable(x + n8, n - n8, shift, &tail))
        return false;
    double tail_sum = tail.mean * (double)tail.n;
    for (i = n8; i < n; i++) {
        double d = (double)x[i] - shift;
        sq += d * d;
    }
    sum += tail_sum;
    double mean = sum / (double)n, c = sum * mean, m2 = sq - c;
    if (!(c <= NNP_F32_PIVOT_LIMIT * m2)) {
        /* the shift lies far out in this block: its moment about its own mean, two-pass */
        __m256d vmean = _mm256_set1_pd(mean + shift);
        __m256d q0 = _mm256_setzero_pd(), q1 = _mm256_setzero_pd();
        for (i = 0; i < n8; i += 8) {
            __m256 v = _mm256_loadu_ps(x + i);
            __m256d lo = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(v)), vmean);
            __m256d hi = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)), vmean);
            q0 = _mm256_fmadd_pd(lo, lo, q0);
            q1 = _mm256_fmadd_pd(hi, hi, q1);
        }
        m2 = hsum256d(_mm256_add_pd(q0, q1));
        for (i = n8; i < n; i++) {
            double d = ((double)x[i] - shift) - mean;
            m2 += d * d;
        }
    }
    int32_t zc[8];
    _mm256_storeu_si256((__m256i *)(void *)zc, a.zero);
    uint64_t z = 0;
    for (int k = 0; k < 8; k++)
        z += (uint32_t)zc[k];
    m->min = hmin256(a.min);
    m->max = hmax256(a.max);
    m->abs_max = hmax256(a.abs);
    if (tail.n) {
        m->min = tail.min < m->min ? tail.min : m->min;
        m->max = tail.max > m->max ? tail.max : m->max;
        m->abs_max = tail.abs_max > m->abs_max ? tail.abs_max : m->abs_max;
    }
    m->n = n;
    m->zeros = z + tail.zeros;
    m->mean = mean;
    m->m2 = m2;
    return true;
}
#endif

typedef bool (*block_fn)(const float *, size_t, double, nnp_block_moments *);

static block_fn pick(void)
{
#ifdef NNP_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return block_avx2;
    return block_sse2;
#else
    return block_portable;
#endif
}

static block_fn chosen;
static pthread_once_t chosen_once = PTHREAD_ONCE_INIT;

static void choose(void)
{
    chosen = pick();
}

bool nnp__f32_block_moments(const float *x, size_t n, double shift, nnp_block_moments *m)
{
    pthread_once(&chosen_once, choose);
    return chosen(x, n, shift, m);
}

bool nnp__f32_block_moments_portable(const float *x, size_t n, double shift, nnp_block_moments *m)
{
    return block_portable(x, n, shift, m);
}
