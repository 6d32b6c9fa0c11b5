/*
 * gguf_quant.c - ggml's tensor types with the error each quantized one allows (what
 * nnp_record_quantization reports), and the dequantizers for the quantized ones nnparity reads:
 * Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 (blocks of 32) and the k-quants Q2_K, Q3_K, Q4_K, Q5_K, Q6_K
 * (super-blocks of 256).
 *
 * A port is compared against what the reference computed from the same file, so the values must
 * be the reference's to the bit: ggml's dequantize_row_* in C and gguf-py's numpy dequantizers
 * (which agree with each other). Both widen the fp16 scales exactly to float32 and then do every
 * step in float32, in this order:
 *   Q4_0, Q5_0, Q8_0   y = d * q
 *   Q4_1, Q5_1         y = d * q + m
 *   Q2_K               y = (d * scale) * q - dmin * min
 *   Q3_K, Q6_K         y = (d * scale) * q
 *   Q4_K, Q5_K         y = (d * scale) * q - dmin * min
 * Each multiplication and each addition is its own statement below: C allows a compiler to fuse
 * `a * b + c` inside one expression into a fused multiply-add (clang does so by default where the
 * CPU has one, e.g. on arm64), which rounds once instead of twice and would change the last bit.
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "formats/gguf.h"

/* ---- the types ---- */

#define PLAIN(n, dt, sz) {n, 1, sz, dt, false, false, 0}
#define QUANT(n, blk, sz, bound) {n, blk, sz, NNP_F32, true, false, bound}
#define UNREAD(n) {n, 0, 0, NNP_DTYPE_INVALID, true, false, 0}
#define REMOVED(n) {n, 0, 0, NNP_DTYPE_INVALID, true, true, 0}

/* Indexed by ggml's number; the gaps were never assigned. Block sizes and block byte counts are
 * ggml's (ggml_blck_size, ggml_type_size) for the types read here.
 *
 * The bound of a quantized type is on rel-L2 = ||dequantized - source|| / ||source||. A uniform
 * quantizer of step s has an RMS error of s/sqrt(12); for weights spread like a Gaussian the
 * blocks' steps give roughly the expected error of docs/weights.md, and the bound is three to
 * four times that, so that a correct conversion passes and a wrong one (a swapped block, a wrong
 * scale, a transposed tensor, errors near 1.4) does not. */
static const nnp_ggml_type types[] = {
    [0] = PLAIN("F32", NNP_F32, 4),
    [1] = PLAIN("F16", NNP_F16, 2),
    [2] = QUANT("Q4_0", 32, 18, 0.25),   /* d, 16 bytes of nibbles */
    [3] = QUANT("Q4_1", 32, 20, 0.20),   /* d, m, 16 bytes of nibbles */
    [4] = REMOVED("Q4_2"),
    [5] = REMOVED("Q4_3"),
    [6] = QUANT("Q5_0", 32, 22, 0.12),   /* d, 4 bytes of high bits, 16 bytes of nibbles */
    [7] = QUANT("Q5_1", 32, 24, 0.10),   /* d, m, 4 bytes of high bits, 16 bytes of nibbles */
    [8] = QUANT("Q8_0", 32, 34, 0.02),   /* d, 32 signed bytes */
    [9] = UNREAD("Q8_1"),
    [10] = QUANT("Q2_K", 256, 84, 0.60),  /* 16 scale/min bytes, 64 bytes of 2-bit q, d, dmin */
    [11] = QUANT("Q3_K", 256, 110, 0.40), /* 32 bytes of high bits, 64 of 2-bit q, 12 of scales, d */
    [12] = QUANT("Q4_K", 256, 144, 0.20), /* d, dmin, 12 bytes of 6-bit scales/mins, 128 of nibbles */
    [13] = QUANT("Q5_K", 256, 176, 0.10), /* as Q4_K, with 32 bytes of high bits before the nibbles */
    [14] = QUANT("Q6_K", 256, 210, 0.05), /* 128 bytes of low nibbles, 64 of high bits, 16 scales, d */
    [15] = UNREAD("Q8_K"),
    [16] = UNREAD("IQ2_XXS"),
    [17] = UNREAD("IQ2_XS"),
    [18] = UNREAD("IQ3_XXS"),
    [19] = UNREAD("IQ1_S"),
    [20] = UNREAD("IQ4_NL"),
    [21] = UNREAD("IQ3_S"),
    [22] = UNREAD("IQ2_S"),
    [23] = UNREAD("IQ4_XS"),
    [24] = PLAIN("I8", NNP_I8, 1),
    [25] = PLAIN("I16", NNP_I16, 2),
    [26] = PLAIN("I32", NNP_I32, 4),
    [27] = PLAIN("I64", NNP_I64, 8),
    [28] = PLAIN("F64", NNP_F64, 8),
    [29] = UNREAD("IQ1_M"),
    [30] = PLAIN("BF16", NNP_BF16, 2),
    [31] = REMOVED("Q4_0_4_4"),
    [32] = REMOVED("Q4_0_4_8"),
    [33] = REMOVED("Q4_0_8_8"),
    [34] = UNREAD("TQ1_0"),
    [35] = UNREAD("TQ2_0"),
    [36] = REMOVED("IQ4_NL_4_4"),
    [37] = REMOVED("IQ4_NL_4_8"),
    [38] = REMOVED("IQ4_NL_8_8"),
    [39] = UNREAD("MXFP4"),
    [40] = UNREAD("NVFP4"),
    [41] = UNREAD("Q1_0"),
    [42] = UNREAD("Q2_0"),
};

const nnp_ggml_type *nnp__ggml_type(uint32_t type)
{
    if (type >= sizeof types / sizeof *types || !types[type].name)
        return NULL;
    return &types[type];
}

bool nnp_record_quantization(const nnp_dump *dump, size_t rec, const char **type,
                             double *rel_l2_bound)
{
    if (!dump || rec >= nnp_dump_count(dump))
        return false;
    /* the GGUF reader keeps each quantized tensor's type under the prefixed name */
    const char *name = nnp_dump_record(dump, rec)->name;
    size_t plen = strlen(NNP_GGUF_TENSOR_TYPE_PREFIX), n = plen + strlen(name) + 1;
    char small[256], *key = n <= sizeof small ? small : malloc(n);
    if (!key) {
        nnp__nomem();
        return false;
    }
    memcpy(key, NNP_GGUF_TENSOR_TYPE_PREFIX, plen);
    memcpy(key + plen, name, n - plen);
    const char *t = nnp_dump_meta_get(dump, key);
    if (key != small)
        free(key);
    for (size_t i = 0; t && i < sizeof types / sizeof *types; i++)
        if (types[i].rel_l2_bound > 0 && strcmp(types[i].name, t) == 0) {
            if (type)
                *type = types[i].name;
            if (rel_l2_bound)
                *rel_l2_bound = types[i].rel_l2_bound;
            return true;
        }
    return false;
}

/* ---- the blocks ---- */

static float half_at(const unsigned char *p)
{
    return nnp_f16_to_f32(nnp__le16(p));
}

/* A byte read as int8_t, without relying on how a conversion out of range behaves. */
static int s8(unsigned char c)
{
    return c < 128 ? (int)c : (int)c - 256;
}

/* Q8_0: d (fp16), then 32 int8 quants. */
static void block_q8_0(const unsigned char *b, float *y)
{
    float d = half_at(b);
    for (int j = 0; j < 32; j++)
        y[j] = (float)s8(b[2 + j]) * d;
}

/* Q4_0: d, then 16 bytes; element j takes the low nibble of byte j, element j+16 the high
 * nibble, both offset by 8. */
static void block_q4_0(const unsigned char *b, float *y)
{
    float d = half_at(b);
    const unsigned char *qs = b + 2;
    for (int j = 0; j < 16; j++) {
        y[j] = (float)((qs[j] & 0x0F) - 8) * d;
        y[j + 16] = (float)((qs[j] >> 4) - 8) * d;
    }
}

/* Q4_1: d, m, then nibbles as Q4_0 without an offset; y = d * q + m. */
static void block_q4_1(const unsigned char *b, float *y)
{
    float d = half_at(b), m = half_at(b + 2);
    const unsigned char *qs = b + 4;
    for (int j = 0; j < 16; j++) {
        float p0 = d * (float)(qs[j] & 0x0F);
        float p1 = d * (float)(qs[j] >> 4);
        y[j] = p0 + m;
        y[j + 16] = p1 + m;
    }
}

/* Q5_0: d, a little-endian u32 whose bit j is the fifth bit of element j, then nibbles as Q4_0;
 * the 5-bit value is offset by 16. */
static void block_q5_0(const unsigned char *b, float *y)
{
    float d = half_at(b);
    uint32_t qh = nnp__le32(b + 2);
    const unsigned char *qs = b + 6;
    for (int j = 0; j < 16; j++) {
        int lo = (qs[j] & 0x0F) | (int)(((qh >> j) & 1u) << 4);
        int hi = (qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1u) << 4);
        y[j] = (float)(lo - 16) * d;
        y[j + 16] = (float)(hi - 16) * d;
    }
}

/* Q5_1: d, m, the high bits and nibbles as Q5_0, no offset; y = d * q + m. */
static void block_q5_1(const unsigned char *b, float *y)
{
    float d = half_at(b), m = half_at(b + 2);
    uint32_t qh = nnp__le32(b + 4);
    const unsigned char *qs = b + 8;
    for (int j = 0; j < 16; j++) {
        int lo = (qs[j] & 0x0F) | (int)(((qh >> j) & 1u) << 4);
        int hi = (qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1u) << 4);
        float p0 = d * (float)lo;
        float p1 = d * (float)hi;
        y[j] = p0 + m;
        y[j + 16] = p1 + m;
    }
}

/* Q2_K: 16 bytes each holding a 4-bit scale (low) and 4-bit min (high) for 16 elements, 64 bytes
 * of 2-bit quants, d, dmin. Element e = 128h + 32s + l takes bits 2s..2s+1 of quant byte
 * 32h + l; its group of 16 is e / 16. */
static void block_q2_k(const unsigned char *b, float *y)
{
    const unsigned char *sc = b, *qs = b + 16;
    float d = half_at(b + 80), dmin = half_at(b + 82);
    for (int e = 0; e < 256; e++) {
        int h = e / 128, s = (e % 128) / 32, l = e % 32, g = e / 16;
        float dl = d * (float)(sc[g] & 0x0F);
        float ml = dmin * (float)(sc[g] >> 4);
        float p = dl * (float)((qs[32 * h + l] >> (2 * s)) & 3);
        y[e] = p - ml;
    }
}

/* Q3_K: 32 bytes of high bits, 64 bytes of 2-bit quants, 12 bytes packing sixteen 6-bit scales,
 * d. Scale i has its low 4 bits in byte i (i < 8, low nibble) or byte i - 8 (high nibble), and its
 * top 2 bits in bits 2(i/4).. of byte 8 + i%4; it is offset by 32. Element e = 128h + 32s + l takes
 * bits 2s..2s+1 of quant byte 32h + l, minus 4 unless bit e/32 of high-bit byte l is set. */
static void block_q3_k(const unsigned char *b, float *y)
{
    const unsigned char *hm = b, *qs = b + 32, *sc = b + 96;
    float d = half_at(b + 108);
    float dl[16];
    for (int i = 0; i < 16; i++) {
        int lo = (i < 8 ? sc[i] : sc[i - 8] >> 4) & 0x0F;
        int hi = (sc[8 + i % 4] >> (2 * (i / 4))) & 3;
        dl[i] = d * (float)((lo | (hi << 4)) - 32);
    }
    for (int e = 0; e < 256; e++) {
        int h = e / 128, s = (e % 128) / 32, l = e % 32;
        int q = (qs[32 * h + l] >> (2 * s)) & 3;
        if (!((hm[l] >> (e / 32)) & 1))
            q -= 4;
        y[e] = dl[e / 16] * (float)q;
    }
}

/* The eight 6-bit scales and mins of Q4_K and Q5_K, packed in 12 bytes: for j < 4 the scale is
 * the low 6 bits of byte j and the min those of byte j + 4; for j >= 4 the low 4 bits come from
 * byte j + 4 (scale: low nibble, min: high nibble) and the top 2 from bits 6..7 of byte j - 4
 * (scale) or j (min). */
static void k_scale_min(const unsigned char *p, int j, int *sc, int *mn)
{
    if (j < 4) {
        *sc = p[j] & 0x3F;
        *mn = p[j + 4] & 0x3F;
    } else {
        *sc = (p[j + 4] & 0x0F) | ((p[j - 4] >> 6) << 4);
        *mn = (p[j + 4] >> 4) | ((p[j] >> 6) << 4);
    }
}

/* Q4_K: d, dmin, the packed scales and mins, 128 bytes of nibbles. Sub-block j of 32 elements
 * takes the low (j even) or high (j odd) nibbles of bytes 32(j/2) .. 32(j/2) + 31. */
static void block_q4_k(const unsigned char *b, float *y)
{
    float d = half_at(b), dmin = half_at(b + 2);
    const unsigned char *qs = b + 16;
    for (int j = 0; j < 8; j++) {
        int sc, mn;
        k_scale_min(b + 4, j, &sc, &mn);
        float dj = d * (float)sc;
        float mj = dmin * (float)mn;
        const unsigned char *q = qs + 32 * (j / 2);
        int shift = 4 * (j % 2);
        for (int l = 0; l < 32; l++) {
            float p = dj * (float)((q[l] >> shift) & 0x0F);
            y[32 * j + l] = p - mj;
        }
    }
}

/* Q5_K: as Q4_K, and bit j of high-bit byte l is the fifth bit of element 32j + l. */
static void block_q5_k(const unsigned char *b, float *y)
{
    float d = half_at(b), dmin = half_at(b + 2);
    const unsigned char *qh = b + 16, *qs = b + 48;
    for (int j = 0; j < 8; j++) {
        int sc, mn;
        k_scale_min(b + 4, j, &sc, &mn);
        float dj = d * (float)sc;
        float mj = dmin * (float)mn;
        const unsigned char *q = qs + 32 * (j / 2);
        int shift = 4 * (j % 2);
        for (int l = 0; l < 32; l++) {
            int v = ((q[l] >> shift) & 0x0F) | (((qh[l] >> j) & 1) << 4);
            float p = dj * (float)v;
            y[32 * j + l] = p - mj;
        }
    }
}

/* Q6_K: 128 bytes of low nibbles, 64 bytes of 2-bit high parts, 16 int8 scales, d. Element
 * e = 128h + r takes the low (r < 64) or high nibble of byte 64h + r % 64 and bits
 * 2(r/32)..2(r/32)+1 of high byte 32h + r % 32; the 6-bit value is offset by 32. */
static void block_q6_k(const unsigned char *b, float *y)
{
    const unsigned char *ql = b, *qh = b + 128, *sc = b + 192;
    float d = half_at(b + 208);
    float dg[16];
    for (int g = 0; g < 16; g++)
        dg[g] = d * (float)s8(sc[g]);
    for (int e = 0; e < 256; e++) {
        int h = e / 128, r = e % 128;
        int lo = (ql[64 * h + r % 64] >> (4 * (r / 64))) & 0x0F;
        int hi = (qh[32 * h + r % 32] >> (2 * (r / 32))) & 3;
        y[e] = dg[e / 16] * (float)((lo | (hi << 4)) - 32);
    }
}

bool nnp__ggml_dequantize(uint32_t type, const unsigned char *src, uint64_t nblocks, float *dst)
{
    void (*fn)(const unsigned char *, float *) = NULL;
    switch (type) {
    case 2: fn = block_q4_0; break;
    case 3: fn = block_q4_1; break;
    case 6: fn = block_q5_0; break;
    case 7: fn = block_q5_1; break;
    case 8: fn = block_q8_0; break;
    case 10: fn = block_q2_k; break;
    case 11: fn = block_q3_k; break;
    case 12: fn = block_q4_k; break;
    case 13: fn = block_q5_k; break;
    case 14: fn = block_q6_k; break;
    default: return false;
    }
    const nnp_ggml_type *t = nnp__ggml_type(type);
    for (uint64_t i = 0; i < nblocks; i++)
        fn(src + i * t->size, dst + i * t->block);
    return true;
}
