/*
 * dtype.c - the element types nnparity reads, by their safetensors names, and exact conversions
 * of each to float and double.
 *
 * Every f16, bf16 and f8 value is exactly a float, so the conversions here build the float's bits
 * (or compute it from an exact power-of-two product) and never round.
 */
#include <math.h>
#include <string.h>

#include "internal.h"

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
