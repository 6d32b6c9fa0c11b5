/*
 * crc32.c - zip's CRC-32 by folding (crc32.h). zlib's table code runs at 1.3-1.7 GB/s a core,
 * slower than the compare pass reads memory, so checking a checkpoint's tensors with it would
 * take longer than comparing them.
 *
 * Folding, as in Intel's "Fast CRC Computation for Generic Polynomials Using PCLMULQDQ": the
 * message is cut into 128-bit lanes; a lane is carried forward D bits by two carry-less
 * multiplications with x^(D+32) and x^(D-32) mod P, and added (xor) to the lane D bits further
 * on, which leaves the CRC unchanged. Several lanes in flight hide the multiplier's latency.
 * When the message is folded down to one lane, that lane and the bytes left over are run
 * through zlib's crc32: at most 16 + 127 bytes, so no Barrett reduction is needed.
 *
 * The constants are computed from the polynomial when first needed, not written out.
 */
#include <limits.h>
#include <pthread.h>
#include <zlib.h>

#include "common/crc32.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#include <immintrin.h>
#define NNP_X86 1
#endif

/* zlib counts in uInt: feed it at most this much at a time. */
#define ZCHUNK (1u << 30)

static uint32_t zlib_crc(uint32_t crc, const unsigned char *p, size_t n)
{
    uLong c = crc;
    while (n) {
        size_t step = n < ZCHUNK ? n : ZCHUNK;
        c = crc32(c, p, (uInt)step);
        p += step;
        n -= step;
    }
    return (uint32_t)c;
}

uint32_t nnp__crc32_combine(uint32_t crc_a, uint32_t crc_b, uint64_t len_b)
{
    /* z_off_t is 64 bits wide on the LP64 systems nnparity builds on; longer runs split */
    const uint64_t most = (uint64_t)1 << 62;
    while (len_b > most) {
        crc_a = (uint32_t)crc32_combine(crc_a, 0, (z_off_t)most);
        len_b -= most;
    }
    return (uint32_t)crc32_combine(crc_a, crc_b, (z_off_t)len_b);
}

#ifdef NNP_X86

/* x^n mod P in the normal bit order, P = x^32 + 0x04C11DB7. */
static uint32_t xpow_mod(unsigned n)
{
    uint32_t r = 1;
    for (unsigned i = 0; i < n; i++)
        r = (r << 1) ^ (r >> 31 ? 0x04C11DB7u : 0);
    return r;
}

/* The reflected form the lanes are in: bits reversed, times x (one more bit). */
static uint64_t fold_constant(unsigned n)
{
    uint32_t v = xpow_mod(n), r = 0;
    for (int i = 0; i < 32; i++)
        if (v >> i & 1)
            r |= 1u << (31 - i);
    return (uint64_t)r << 1;
}

/* {lo, hi} multipliers that carry a lane 128, 512 and 1024 bits forward */
static uint64_t k128[2], k512[2], k1024[2];

#define PCLMUL __attribute__((target("pclmul,sse4.1")))
#define VPCLMUL __attribute__((target("vpclmulqdq,avx2,pclmul,sse4.1")))

PCLMUL static inline __m128i fold128(__m128i x, __m128i k)
{
    return _mm_xor_si128(_mm_clmulepi64_si128(x, k, 0x00), _mm_clmulepi64_si128(x, k, 0x11));
}

PCLMUL static inline __m128i load128(const unsigned char *p)
{
    return _mm_loadu_si128((const __m128i *)(const void *)p);
}

/* The one lane left and the bytes after it, through zlib: the folded lane holds the CRC state
 * of everything before it with zlib's initial inversion already applied, hence 0xFFFFFFFF. */
PCLMUL static uint32_t finish(__m128i x, const unsigned char *rest, size_t n)
{
    unsigned char lane[16];
    _mm_storeu_si128((__m128i *)(void *)lane, x);
    return zlib_crc(zlib_crc(0xFFFFFFFFu, lane, 16), rest, n);
}

PCLMUL static uint32_t crc_pclmul(uint32_t crc, const unsigned char *p, size_t n)
{
    if (n < 64)
        return zlib_crc(crc, p, n);
    const __m128i k4 = _mm_set_epi64x((long long)k512[1], (long long)k512[0]);
    const __m128i k1 = _mm_set_epi64x((long long)k128[1], (long long)k128[0]);
    /* zlib inverts the CRC before and after; the inverted state enters the first 32 bits */
    __m128i x0 = _mm_xor_si128(load128(p), _mm_cvtsi32_si128((int)~crc));
    __m128i x1 = load128(p + 16), x2 = load128(p + 32), x3 = load128(p + 48);
    for (p += 64, n -= 64; n >= 64; p += 64, n -= 64) {
        x0 = _mm_xor_si128(fold128(x0, k4), load128(p));
        x1 = _mm_xor_si128(fold128(x1, k4), load128(p + 16));
        x2 = _mm_xor_si128(fold128(x2, k4), load128(p + 32));
        x3 = _mm_xor_si128(fold128(x3, k4), load128(p + 48));
    }
    x1 = _mm_xor_si128(fold128(x0, k1), x1);
    x2 = _mm_xor_si128(fold128(x1, k1), x2);
    x3 = _mm_xor_si128(fold128(x2, k1), x3);
    return finish(x3, p, n);
}

VPCLMUL static inline __m256i fold256(__m256i x, __m256i k)
{
    return _mm256_xor_si256(_mm256_clmulepi64_epi128(x, k, 0x00),
                            _mm256_clmulepi64_epi128(x, k, 0x11));
}

VPCLMUL static inline __m256i load256(const unsigned char *p)
{
    return _mm256_loadu_si256((const __m256i *)(const void *)p);
}

VPCLMUL static inline __m128i fold_in(__m128i x, __m128i k, __m128i next)
{
    return _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128(x, k, 0x00),
                                       _mm_clmulepi64_si128(x, k, 0x11)), next);
}

/* Four 256-bit registers, two lanes each, 128 bytes a step. Eight registers were measured too:
 * no faster on the machines at hand. */
VPCLMUL static uint32_t crc_vpclmul(uint32_t crc, const unsigned char *p, size_t n)
{
    if (n < 256)
        return crc_pclmul(crc, p, n);
    const __m256i k8 = _mm256_set_epi64x((long long)k1024[1], (long long)k1024[0],
                                         (long long)k1024[1], (long long)k1024[0]);
    const __m128i k1 = _mm_set_epi64x((long long)k128[1], (long long)k128[0]);
    __m256i y0 = _mm256_xor_si256(load256(p), _mm256_zextsi128_si256(_mm_cvtsi32_si128((int)~crc)));
    __m256i y1 = load256(p + 32), y2 = load256(p + 64), y3 = load256(p + 96);
    for (p += 128, n -= 128; n >= 128; p += 128, n -= 128) {
        y0 = _mm256_xor_si256(fold256(y0, k8), load256(p));
        y1 = _mm256_xor_si256(fold256(y1, k8), load256(p + 32));
        y2 = _mm256_xor_si256(fold256(y2, k8), load256(p + 64));
        y3 = _mm256_xor_si256(fold256(y3, k8), load256(p + 96));
    }
    /* the eight lanes in message order, folded into one */
    __m128i x = _mm256_castsi256_si128(y0);
    x = fold_in(x, k1, _mm256_extracti128_si256(y0, 1));
    x = fold_in(x, k1, _mm256_castsi256_si128(y1));
    x = fold_in(x, k1, _mm256_extracti128_si256(y1, 1));
    x = fold_in(x, k1, _mm256_castsi256_si128(y2));
    x = fold_in(x, k1, _mm256_extracti128_si256(y2, 1));
    x = fold_in(x, k1, _mm256_castsi256_si128(y3));
    x = fold_in(x, k1, _mm256_extracti128_si256(y3, 1));
    return finish(x, p, n);
}

#endif /* NNP_X86 */

static bool have[NNP_CRC_IMPLS];
static nnp_crc_impl best = NNP_CRC_ZLIB;
static pthread_once_t chosen_once = PTHREAD_ONCE_INIT;

static void choose(void)
{
    have[NNP_CRC_ZLIB] = true;
#ifdef NNP_X86
    k128[0] = fold_constant(128 + 32);
    k128[1] = fold_constant(128 - 32);
    k512[0] = fold_constant(512 + 32);
    k512[1] = fold_constant(512 - 32);
    k1024[0] = fold_constant(1024 + 32);
    k1024[1] = fold_constant(1024 - 32);
    unsigned a, b, c, d;
    __builtin_cpu_init();
    /* CPUID leaf 1 ECX bit 1: PCLMULQDQ; leaf 7 ECX bit 10: VPCLMULQDQ. The AVX2 test also
     * checks that the system saves the 256-bit registers. */
    have[NNP_CRC_PCLMUL] = __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 1)) &&
                           __builtin_cpu_supports("sse4.1");
    have[NNP_CRC_VPCLMUL] = have[NNP_CRC_PCLMUL] && __builtin_cpu_supports("avx2") &&
                            __get_cpuid_count(7, 0, &a, &b, &c, &d) && (c & (1u << 10));
#endif
    for (int k = 0; k < NNP_CRC_IMPLS; k++)
        if (have[k])
            best = (nnp_crc_impl)k;
}

bool nnp__crc32_available(nnp_crc_impl impl)
{
    pthread_once(&chosen_once, choose);
    return impl >= 0 && impl < NNP_CRC_IMPLS && have[impl];
}

const char *nnp__crc32_impl_name(nnp_crc_impl impl)
{
    static const char *const names[NNP_CRC_IMPLS] = {"zlib", "pclmul", "vpclmul"};
    return impl >= 0 && impl < NNP_CRC_IMPLS ? names[impl] : "unknown";
}

uint32_t nnp__crc32_with(nnp_crc_impl impl, uint32_t crc, const void *p, size_t n)
{
    if (!nnp__crc32_available(impl))
        impl = NNP_CRC_ZLIB;
#ifdef NNP_X86
    if (impl == NNP_CRC_VPCLMUL)
        return crc_vpclmul(crc, p, n);
    if (impl == NNP_CRC_PCLMUL)
        return crc_pclmul(crc, p, n);
#endif
    return zlib_crc(crc, p, n);
}

uint32_t nnp__crc32(uint32_t crc, const void *p, size_t n)
{
    pthread_once(&chosen_once, choose);
    return nnp__crc32_with(best, crc, p, n);
}
