/*
 * dtype.c - the element types nnparity reads, by their safetensors names, and exact conversions
 * of each to float and double.
 *
 * Every f16, bf16 and f8 value is exactly a float, so the conversions here build the float's bits
 * (or compute it from an exact power-of-two product) and never round.
 */
#include <math.h>
#include <string.h>

#include "common/common.h"

typedef struct {
    const char *name;
    size_t size;
    nnp_dtype_class cls;
} dtype_info;

static const dtype_info dtype_table[NNP_DTYPE_COUNT] = {
    [NNP_DTYPE_INVALID] = {"INVALID", 0, 0},
    [NNP_F64] = {"F64", 8, NNP_CLASS_FLOAT},
    [NNP_F32] = {"F32", 4, NNP_CLASS_FLOAT},
    [NNP_F16] = {"F16", 2, NNP_CLASS_FLOAT},
    [NNP_BF16] = {"BF16", 2, NNP_CLASS_FLOAT},
    [NNP_F8_E4M3] = {"F8_E4M3", 1, NNP_CLASS_FLOAT},
    [NNP_F8_E5M2] = {"F8_E5M2", 1, NNP_CLASS_FLOAT},
    [NNP_I8] = {"I8", 1, NNP_CLASS_INT},
    [NNP_I16] = {"I16", 2, NNP_CLASS_INT},
    [NNP_I32] = {"I32", 4, NNP_CLASS_INT},
    [NNP_I64] = {"I64", 8, NNP_CLASS_INT},
    [NNP_U8] = {"U8", 1, NNP_CLASS_INT},
    [NNP_U16] = {"U16", 2, NNP_CLASS_INT},
    [NNP_U32] = {"U32", 4, NNP_CLASS_INT},
    [NNP_U64] = {"U64", 8, NNP_CLASS_INT},
    [NNP_BOOL] = {"BOOL", 1, NNP_CLASS_BOOL},
};

static bool dtype_valid(nnp_dtype t)
{
    return t > NNP_DTYPE_INVALID && t < NNP_DTYPE_COUNT;
}

const char *nnp_dtype_name(nnp_dtype dtype)
{
    return dtype_valid(dtype) ? dtype_table[dtype].name : "INVALID";
}

nnp_dtype nnp_dtype_from_name(const char *name)
{
    if (!name)
        return NNP_DTYPE_INVALID;
    for (int t = NNP_DTYPE_INVALID + 1; t < NNP_DTYPE_COUNT; t++)
        if (strcmp(dtype_table[t].name, name) == 0)
            return (nnp_dtype)t;
    return NNP_DTYPE_INVALID;
}

size_t nnp_dtype_size(nnp_dtype dtype)
{
    return dtype_valid(dtype) ? dtype_table[dtype].size : 0;
}

nnp_dtype_class nnp_dtype_class_of(nnp_dtype dtype)
{
    return dtype_valid(dtype) ? dtype_table[dtype].cls : 0;
}

static float f32_from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

float nnp_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t em = h & 0x7fffu; /* exponent and mantissa */
    if (em == 0x7c00u)         /* infinity */
        return f32_from_bits(sign | 0x7f800000u);
    if (em > 0x7c00u)          /* NaN: keep the payload, always quiet */
        return f32_from_bits(sign | 0x7fc00000u | ((em & 0x3ffu) << 13));
    if (em >= 0x0400u)         /* normal: rebias the exponent from 15 to 127 */
        return f32_from_bits(sign | ((em << 13) + ((127u - 15u) << 23)));
    /* zero or subnormal: the value is mantissa * 2^-24, exact in float */
    float v = (float)em * 0x1p-24f;
    return sign ? -v : v;
}

float nnp_bf16_to_f32(uint16_t b)
{
    /* bf16 is the top half of a float; a NaN is made quiet. */
    uint32_t u = (uint32_t)b << 16;
    if ((u & 0x7fffffffu) > 0x7f800000u)
        u |= 0x00400000u;
    return f32_from_bits(u);
}

float nnp_f8_e4m3_to_f32(uint8_t b)
{
    int sign = b & 0x80;
    unsigned exp = (b >> 3) & 0xfu, man = b & 0x7u;
    float v;
    if (exp == 0xf && man == 0x7)
        return NAN; /* the only NaN encodings, 0x7f and 0xff; e4m3 has no infinities */
    if (exp == 0)
        v = (float)man * 0x1p-9f; /* subnormal: man/8 * 2^(1-7) */
    else
        v = ldexpf(1.0f + (float)man / 8.0f, (int)exp - 7);
    return sign ? -v : v;
}

float nnp_f8_e5m2_to_f32(uint8_t b)
{
    /* e5m2 is the top byte of an IEEE half. */
    return nnp_f16_to_f32((uint16_t)((unsigned)b << 8));
}

/* One loop per dtype so that each inner loop is a plain, vectorizable conversion. */
#define CONVERT_LOOP(T, DST_T, EXPR)                                                           \
    do {                                                                                       \
        const unsigned char *s = src;                                                          \
        for (size_t i = 0; i < n; i++) {                                                       \
            T v;                                                                               \
            memcpy(&v, s + i * sizeof(T), sizeof(T));                                          \
            dst[i] = (DST_T)(EXPR);                                                            \
        }                                                                                      \
    } while (0)

#define CONVERT_ALL(DST_T)                                                                     \
    switch (dtype) {                                                                           \
    case NNP_F64: CONVERT_LOOP(double, DST_T, v); break;                                       \
    case NNP_F32: CONVERT_LOOP(float, DST_T, v); break;                                        \
    case NNP_F16: CONVERT_LOOP(uint16_t, DST_T, nnp_f16_to_f32(v)); break;                     \
    case NNP_BF16: CONVERT_LOOP(uint16_t, DST_T, nnp_bf16_to_f32(v)); break;                   \
    case NNP_F8_E4M3: CONVERT_LOOP(uint8_t, DST_T, nnp_f8_e4m3_to_f32(v)); break;              \
    case NNP_F8_E5M2: CONVERT_LOOP(uint8_t, DST_T, nnp_f8_e5m2_to_f32(v)); break;              \
    case NNP_I8: CONVERT_LOOP(int8_t, DST_T, v); break;                                        \
    case NNP_I16: CONVERT_LOOP(int16_t, DST_T, v); break;                                      \
    case NNP_I32: CONVERT_LOOP(int32_t, DST_T, v); break;                                      \
    case NNP_I64: CONVERT_LOOP(int64_t, DST_T, v); break;                                      \
    case NNP_U8: CONVERT_LOOP(uint8_t, DST_T, v); break;                                       \
    case NNP_U16: CONVERT_LOOP(uint16_t, DST_T, v); break;                                     \
    case NNP_U32: CONVERT_LOOP(uint32_t, DST_T, v); break;                                     \
    case NNP_U64: CONVERT_LOOP(uint64_t, DST_T, v); break;                                     \
    case NNP_BOOL: CONVERT_LOOP(uint8_t, DST_T, v != 0); break;                                \
    default:                                                                                   \
        for (size_t i = 0; i < n; i++)                                                         \
            dst[i] = (DST_T)NAN;                                                               \
        break;                                                                                 \
    }

void nnp_convert_to_f64(nnp_dtype dtype, const void *src, size_t n, double *dst)
{
    CONVERT_ALL(double)
}

void nnp_convert_to_f32(nnp_dtype dtype, const void *src, size_t n, float *dst)
{
    CONVERT_ALL(float)
}

/* The bits of x in a binary format with `man` mantissa bits and `exp` exponent bits (F16: 10, 5;
 * BF16: 7, 8), rounded to nearest even straight from double: rounding through float first would
 * round twice. Values past the largest finite become infinities; NaNs stay NaN (quiet). */
static uint32_t encode_binary(double x, int man, int exp)
{
    int bias = (1 << (exp - 1)) - 1;
    uint32_t sign = signbit(x) ? 1u << (man + exp) : 0;
    uint32_t inf = ((1u << exp) - 1) << man;
    if (isnan(x))
        return sign | inf | (1u << (man - 1));
    double a = fabs(x);
    if (isinf(a))
        return sign | inf;
    if (a == 0)
        return sign;
    int k;
    frexp(a, &k); /* a = f * 2^k, f in [0.5, 1) */
    int e = k - 1;
    if (e < 1 - bias) /* subnormal: a multiple of 2^(1-bias-man); the scaling is exact */
        return sign | (uint32_t)rint(ldexp(a, man + bias - 1));
    double m = rint(ldexp(a, man - e)); /* in [2^man, 2^(man+1)], ties to even */
    if (m == ldexp(1.0, man + 1)) {
        m /= 2;
        e++;
    }
    if (e + bias >= (1 << exp) - 1)
        return sign | inf;
    return sign | ((uint32_t)(e + bias) << man) | ((uint32_t)m - (1u << man));
}

nnp_status nnp_convert(nnp_dtype from, const void *src, size_t n, nnp_dtype to, void *dst)
{
    if (!dtype_valid(from) || !dtype_valid(to))
        return nnp__fail(NNP_ERR_ARG, "nnp_convert: invalid dtype");
    if (from == to) {
        if (n)
            memcpy(dst, src, n * nnp_dtype_size(to));
        return NNP_OK;
    }
    if (to == NNP_F64) {
        nnp_convert_to_f64(from, src, n, dst);
        return NNP_OK;
    }
    if (to == NNP_F32) {
        nnp_convert_to_f32(from, src, n, dst);
        return NNP_OK;
    }
    if (to != NNP_F16 && to != NNP_BF16)
        return nnp__fail(NNP_ERR_ARG, "cannot convert %s to %s", nnp_dtype_name(from),
                         nnp_dtype_name(to));
    const unsigned char *s = src;
    size_t es = nnp_dtype_size(from);
    uint16_t *d = dst;
    double block[256];
    for (size_t done = 0; done < n;) {
        size_t k = n - done < 256 ? n - done : 256;
        nnp_convert_to_f64(from, s + done * es, k, block);
        for (size_t i = 0; i < k; i++) {
            uint16_t v = (uint16_t)(to == NNP_F16 ? encode_binary(block[i], 10, 5)
                                                  : encode_binary(block[i], 7, 8));
            memcpy(&d[done + i], &v, sizeof v);
        }
        done += k;
    }
    return NNP_OK;
}
