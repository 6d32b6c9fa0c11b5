/*
 * test_dtype.c - dtype names, sizes and classes, and the conversions: known values of every
 * format, and agreement of the bulk converters with the scalar ones over every 8- and 16-bit
 * pattern. (tests/py/test_dtypes_exhaustive.py checks every pattern against numpy and torch.)
 */
#include <math.h>

#include "testutil.h"

static void test_names_sizes_classes(void **state)
{
    (void)state;
    static const struct { const char *name; size_t size; nnp_dtype_class cls; } want[] = {
        {"F64", 8, NNP_CLASS_FLOAT}, {"F32", 4, NNP_CLASS_FLOAT}, {"F16", 2, NNP_CLASS_FLOAT},
        {"BF16", 2, NNP_CLASS_FLOAT}, {"F8_E4M3", 1, NNP_CLASS_FLOAT},
        {"F8_E5M2", 1, NNP_CLASS_FLOAT}, {"I8", 1, NNP_CLASS_INT}, {"I16", 2, NNP_CLASS_INT},
        {"I32", 4, NNP_CLASS_INT}, {"I64", 8, NNP_CLASS_INT}, {"U8", 1, NNP_CLASS_INT},
        {"U16", 2, NNP_CLASS_INT}, {"U32", 4, NNP_CLASS_INT}, {"U64", 8, NNP_CLASS_INT},
        {"BOOL", 1, NNP_CLASS_BOOL}};
    for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
        nnp_dtype t = nnp_dtype_from_name(want[i].name);
        assert_int_not_equal(t, NNP_DTYPE_INVALID);
        assert_string_equal(nnp_dtype_name(t), want[i].name);
        assert_int_equal(nnp_dtype_size(t), want[i].size);
        assert_int_equal(nnp_dtype_class_of(t), want[i].cls);
    }
    assert_int_equal(nnp_dtype_from_name("F31"), NNP_DTYPE_INVALID);
    assert_int_equal(nnp_dtype_from_name("f32"), NNP_DTYPE_INVALID);
    assert_int_equal(nnp_dtype_from_name(NULL), NNP_DTYPE_INVALID);
    assert_int_equal(nnp_dtype_size(NNP_DTYPE_INVALID), 0);
    assert_string_equal(nnp_dtype_name((nnp_dtype)99), "INVALID");
}

static void test_f16_known(void **state)
{
    (void)state;
    assert_true(nnp_f16_to_f32(0x3c00) == 1.0f);
    assert_true(nnp_f16_to_f32(0xc000) == -2.0f);
    assert_true(nnp_f16_to_f32(0x7bff) == 65504.0f);
    assert_true(nnp_f16_to_f32(0x0400) == 0x1p-14f);   /* smallest normal */
    assert_true(nnp_f16_to_f32(0x0001) == 0x1p-24f);   /* smallest subnormal */
    assert_true(nnp_f16_to_f32(0x03ff) == 1023 * 0x1p-24f);
    assert_true(nnp_f16_to_f32(0x8001) == -0x1p-24f);
    assert_true(nnp_f16_to_f32(0x0000) == 0.0f && !signbit(nnp_f16_to_f32(0x0000)));
    assert_true(signbit(nnp_f16_to_f32(0x8000)) && nnp_f16_to_f32(0x8000) == 0.0f);
    assert_true(isinf(nnp_f16_to_f32(0x7c00)) && nnp_f16_to_f32(0x7c00) > 0);
    assert_true(isinf(nnp_f16_to_f32(0xfc00)) && nnp_f16_to_f32(0xfc00) < 0);
    assert_true(isnan(nnp_f16_to_f32(0x7e00)) && isnan(nnp_f16_to_f32(0x7c01)));
    assert_true(isnan(nnp_f16_to_f32(0xfe00)));
}

static void test_bf16_known(void **state)
{
    (void)state;
    assert_true(nnp_bf16_to_f32(0x3f80) == 1.0f);
    assert_true(nnp_bf16_to_f32(0xbf80) == -1.0f);
    assert_true(nnp_bf16_to_f32(0x4049) == 3.140625f);
    assert_true(nnp_bf16_to_f32(0x0001) == 0x1p-133f); /* subnormal */
    assert_true(isinf(nnp_bf16_to_f32(0x7f80)));
    assert_true(isnan(nnp_bf16_to_f32(0x7fc0)));
    assert_true(nnp_bf16_to_f32(0x7f7f) == 0x1.fep127f);
}

static void test_f8_e4m3_known(void **state)
{
    (void)state;
    assert_true(nnp_f8_e4m3_to_f32(0x38) == 1.0f);      /* exp 7 = bias */
    assert_true(nnp_f8_e4m3_to_f32(0x7e) == 448.0f);    /* largest finite */
    assert_true(nnp_f8_e4m3_to_f32(0xfe) == -448.0f);
    assert_true(nnp_f8_e4m3_to_f32(0x78) == 256.0f);    /* exp 15 is finite in e4m3 */
    assert_true(nnp_f8_e4m3_to_f32(0x08) == 0x1p-6f);   /* smallest normal */
    assert_true(nnp_f8_e4m3_to_f32(0x01) == 0x1p-9f);   /* smallest subnormal */
    assert_true(nnp_f8_e4m3_to_f32(0x07) == 7 * 0x1p-9f);
    assert_true(isnan(nnp_f8_e4m3_to_f32(0x7f)));
    assert_true(isnan(nnp_f8_e4m3_to_f32(0xff)));
    assert_true(signbit(nnp_f8_e4m3_to_f32(0x80)));
    /* no infinities at all */
    for (int b = 0; b < 256; b++)
        assert_false(isinf(nnp_f8_e4m3_to_f32((uint8_t)b)));
}

static void test_f8_e5m2_known(void **state)
{
    (void)state;
    assert_true(nnp_f8_e5m2_to_f32(0x3c) == 1.0f);
    assert_true(nnp_f8_e5m2_to_f32(0x7b) == 57344.0f);  /* largest finite */
    assert_true(nnp_f8_e5m2_to_f32(0x04) == 0x1p-14f);
    assert_true(nnp_f8_e5m2_to_f32(0x01) == 0x1p-16f);
    assert_true(isinf(nnp_f8_e5m2_to_f32(0x7c)) && nnp_f8_e5m2_to_f32(0x7c) > 0);
    assert_true(isinf(nnp_f8_e5m2_to_f32(0xfc)) && nnp_f8_e5m2_to_f32(0xfc) < 0);
    assert_true(isnan(nnp_f8_e5m2_to_f32(0x7d)) && isnan(nnp_f8_e5m2_to_f32(0xff)));
}

/* The bulk converters must agree bit for bit with the scalar functions on every pattern. */
static void same(double a, double b)
{
    if (isnan(a) || isnan(b))
        assert_true(isnan(a) && isnan(b));
    else
        assert_memory_equal(&a, &b, sizeof a);
}

static void test_bulk_matches_scalar(void **state)
{
    (void)state;
    static uint16_t h[65536];
    static double d[65536];
    static float f[65536];
    for (int i = 0; i < 65536; i++)
        h[i] = (uint16_t)i;
    nnp_convert_to_f64(NNP_F16, h, 65536, d);
    nnp_convert_to_f32(NNP_F16, h, 65536, f);
    for (int i = 0; i < 65536; i++) {
        same(d[i], nnp_f16_to_f32(h[i]));
        same(f[i], nnp_f16_to_f32(h[i]));
    }
    nnp_convert_to_f64(NNP_BF16, h, 65536, d);
    for (int i = 0; i < 65536; i++)
        same(d[i], nnp_bf16_to_f32(h[i]));
    uint8_t b[256];
    for (int i = 0; i < 256; i++)
        b[i] = (uint8_t)i;
    nnp_convert_to_f64(NNP_F8_E4M3, b, 256, d);
    for (int i = 0; i < 256; i++)
        same(d[i], nnp_f8_e4m3_to_f32(b[i]));
    nnp_convert_to_f64(NNP_F8_E5M2, b, 256, d);
    for (int i = 0; i < 256; i++)
        same(d[i], nnp_f8_e5m2_to_f32(b[i]));
    nnp_convert_to_f64(NNP_I8, b, 256, d);
    for (int i = 0; i < 256; i++)
        assert_true(d[i] == (double)(int8_t)b[i]);
    nnp_convert_to_f64(NNP_U8, b, 256, d);
    for (int i = 0; i < 256; i++)
        assert_true(d[i] == (double)i);
    nnp_convert_to_f64(NNP_BOOL, b, 256, d);
    for (int i = 0; i < 256; i++)
        assert_true(d[i] == (i ? 1.0 : 0.0));
    nnp_convert_to_f64(NNP_I16, h, 65536, d);
    for (int i = 0; i < 65536; i++)
        assert_true(d[i] == (double)(int16_t)h[i]);
    nnp_convert_to_f64(NNP_U16, h, 65536, d);
    for (int i = 0; i < 65536; i++)
        assert_true(d[i] == (double)i);
}

static void test_wide_types(void **state)
{
    (void)state;
    int64_t i64[] = {INT64_MIN, -1, 0, 1, INT64_MAX, (int64_t)1 << 53};
    uint64_t u64[] = {0, 1, UINT64_MAX, (uint64_t)1 << 63};
    int32_t i32[] = {INT32_MIN, -7, INT32_MAX};
    uint32_t u32[] = {0, UINT32_MAX};
    double f64[] = {0.1, -1e308, 5e-324, INFINITY};
    float f32[] = {0.25f, -3.5f, 0x1p-149f};
    double d[8];
    nnp_convert_to_f64(NNP_I64, i64, 6, d);
    for (int i = 0; i < 6; i++)
        assert_true(d[i] == (double)i64[i]);
    nnp_convert_to_f64(NNP_U64, u64, 4, d);
    for (int i = 0; i < 4; i++)
        assert_true(d[i] == (double)u64[i]);
    nnp_convert_to_f64(NNP_I32, i32, 3, d);
    for (int i = 0; i < 3; i++)
        assert_true(d[i] == (double)i32[i]);
    nnp_convert_to_f64(NNP_U32, u32, 2, d);
    assert_true(d[1] == 4294967295.0);
    nnp_convert_to_f64(NNP_F64, f64, 4, d);
    assert_memory_equal(d, f64, sizeof f64);
    nnp_convert_to_f64(NNP_F32, f32, 3, d);
    for (int i = 0; i < 3; i++)
        assert_true(d[i] == (double)f32[i]);
    /* unaligned source */
    unsigned char raw[1 + 4 * sizeof(float)];
    memcpy(raw + 1, f32, sizeof f32);
    nnp_convert_to_f64(NNP_F32, raw + 1, 3, d);
    assert_true(d[2] == 0x1p-149);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names_sizes_classes), cmocka_unit_test(test_f16_known),
        cmocka_unit_test(test_bf16_known),          cmocka_unit_test(test_f8_e4m3_known),
        cmocka_unit_test(test_f8_e5m2_known),       cmocka_unit_test(test_bulk_matches_scalar),
        cmocka_unit_test(test_wide_types),
    };
    return cmocka_run_group_tests_name("dtype", tests, NULL, NULL);
}
