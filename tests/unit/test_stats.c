/*
 * test_stats.c - per-tensor statistics: hand-checked values, NaN/Inf/zero counting, degenerate
 * tensors, accuracy against a long-double two-pass reference on values with a large offset, and
 * results that do not change with the number of threads.
 */
#include <math.h>

#include "testutil.h"
#include "internal.h"

/* Write the given tensors to a scratch safetensors file and open it. */
typedef struct { const char *name; nnp_dtype dtype; uint64_t n; const void *data; } tensor;

static nnp_dump *dump_of(const char *file, const tensor *t, size_t n)
{
    char p[512];
    scratch(p, sizeof p, file);
    nnp_writer *w;
    assert_int_equal(nnp_writer_open(p, n, &w), NNP_OK);
    for (size_t i = 0; i < n; i++) {
        nnp_record_desc desc = {.name = t[i].name, .dtype = t[i].dtype, .ndim = 1,
                                .shape = &t[i].n};
        assert_int_equal(nnp_writer_add(w, &desc, t[i].data), NNP_OK);
    }
    assert_int_equal(nnp_writer_close(w), NNP_OK);
    nnp_dump *d;
    assert_int_equal(nnp_dump_open(p, &d), NNP_OK);
    return d;
}

static void all_stats(nnp_dump *d, int threads, nnp_tensor_stats *out)
{
    size_t n = nnp_dump_count(d);
    size_t *idx = malloc(n * sizeof *idx);
    for (size_t i = 0; i < n; i++)
        idx[i] = i;
    assert_int_equal(nnp_stats_compute(d, idx, n, threads, out), NNP_OK);
    free(idx);
}

static void test_known_values(void **state)
{
    (void)state;
    float a[] = {1, 2, 3, 4};
    float b[] = {0, -0.0f, NAN, INFINITY, -INFINITY, -5, 0, 3};
    float c[] = {NAN, NAN};
    int32_t e[] = {-3, 0, 7};
    uint16_t f16[] = {0x3c00, 0xc000, 0x7c00}; /* 1, -2, +inf */
    tensor t[] = {{"a", NNP_F32, 4, a}, {"b", NNP_F32, 8, b}, {"c", NNP_F32, 2, c},
                  {"empty", NNP_F32, 0, NULL}, {"e", NNP_I32, 3, e}, {"h", NNP_F16, 3, f16}};
    nnp_dump *d = dump_of("known.safetensors", t, 6);
    nnp_tensor_stats s[6];
    all_stats(d, 2, s);

    assert_int_equal(s[0].count, 4);
    assert_int_equal(s[0].finite, 4);
    assert_true(s[0].min == 1 && s[0].max == 4 && s[0].mean == 2.5 && s[0].abs_max == 4);
    assert_true(fabs(s[0].std - sqrt(1.25)) < 1e-15);
    assert_int_equal(s[0].zeros, 0);

    assert_int_equal(s[1].count, 8);
    assert_int_equal(s[1].finite, 5);
    assert_int_equal(s[1].nan, 1);
    assert_int_equal(s[1].pos_inf, 1);
    assert_int_equal(s[1].neg_inf, 1);
    assert_int_equal(s[1].zeros, 3); /* -0 is a zero */
    assert_true(s[1].min == -5 && s[1].max == 3 && s[1].abs_max == 5);
    assert_true(fabs(s[1].mean - (-2.0 / 5)) < 1e-15);
    double m = -0.4, var = (3 * m * m + (-5 - m) * (-5 - m) + (3 - m) * (3 - m)) / 5;
    assert_true(fabs(s[1].std - sqrt(var)) < 1e-14);

    assert_int_equal(s[2].nan, 2);
    assert_int_equal(s[2].finite, 0);
    assert_true(isnan(s[2].mean) && isnan(s[2].min) && isnan(s[2].std));

    assert_int_equal(s[3].count, 0);
    assert_true(isnan(s[3].max));

    assert_true(s[4].min == -3 && s[4].max == 7 && s[4].abs_max == 7);
    assert_int_equal(s[4].zeros, 1);
    assert_true(fabs(s[4].mean - 4.0 / 3) < 1e-15);

    assert_int_equal(s[5].pos_inf, 1);
    assert_true(s[5].min == -2 && s[5].max == 1 && s[5].mean == -0.5);
    nnp_dump_close(d);
}

/* 3.5 million values of 1e9 + noise, across chunk boundaries: mean and std agree with an exact
 * long-double two-pass computation, and every thread count gives the same bits. */
static void test_accuracy_and_threads(void **state)
{
    (void)state;
    size_t n = 3500000;
    double *x = malloc(n * sizeof *x);
    assert_non_null(x);
    uint64_t seed = 42;
    for (size_t i = 0; i < n; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = 1e9 + (double)(seed >> 11) / 9007199254740992.0 - 0.5;
    }
    long double sum = 0, m2 = 0;
    for (size_t i = 0; i < n; i++)
        sum += x[i];
    long double mean = sum / n;
    for (size_t i = 0; i < n; i++)
        m2 += (x[i] - mean) * (x[i] - mean);
    double ref_std = (double)sqrtl(m2 / n);

    tensor t[] = {{"big", NNP_F64, n, x}, {"small", NNP_F64, 10, x}};
    nnp_dump *d = dump_of("big.safetensors", t, 2);
    nnp_tensor_stats s1[2], s[2];
    all_stats(d, 1, s1);
    assert_true(fabs(s1[0].mean - (double)mean) <= 1e-15 * 1e9);
    assert_true(fabs(s1[0].std - ref_std) / ref_std < 1e-12);
    assert_true(fabs(ref_std - sqrt(1.0 / 12)) < 1e-3); /* uniform on [-0.5, 0.5) */
    for (int threads = 2; threads <= 5; threads++) {
        all_stats(d, threads, s);
        assert_memory_equal(s, s1, sizeof s);
    }
    free(x);
    nnp_dump_close(d);
}

/* The vector kernels (whichever this CPU runs) agree with the portable one: min, max, abs-max
 * and zeros exactly, the sums to rounding; any NaN or infinity sends the block to the slow path. */
static void test_f32_kernels_agree(void **state)
{
    (void)state;
    static float x[2048 + 64];
    uint64_t seed = 3;
    for (size_t i = 0; i < sizeof x / sizeof *x; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = (float)((double)(seed >> 11) / 9007199254740992.0 * 200.0 - 100.0);
        if (i % 37 == 0)
            x[i] = 0.0f;
        if (i % 101 == 0)
            x[i] = -0.0f;
    }
    const size_t lengths[] = {1, 3, 7, 8, 9, 15, 16, 17, 31, 33, 100, 2047, 2048};
    for (size_t l = 0; l < sizeof lengths / sizeof *lengths; l++)
        for (size_t off = 0; off < 3; off++) {
            size_t n = lengths[l];
            nnp_block_moments a, b;
            assert_true(nnp__f32_block_moments(x + off, n, 1.5, &a));
            assert_true(nnp__f32_block_moments_portable(x + off, n, 1.5, &b));
            assert_int_equal(a.n, n);
            assert_int_equal(a.zeros, b.zeros);
            assert_true(a.min == b.min && a.max == b.max && a.abs_max == b.abs_max);
            assert_true(fabs(a.mean - b.mean) <= 1e-12 * (1 + fabs(b.mean)));
            assert_true(fabs(a.m2 - b.m2) <= 1e-12 * (1 + b.m2));
            float saved = x[off + n - 1];
            x[off + n - 1] = l % 2 ? NAN : -INFINITY;
            assert_false(nnp__f32_block_moments(x + off, n, 1.5, &a));
            assert_false(nnp__f32_block_moments_portable(x + off, n, 1.5, &a));
            x[off + n - 1] = saved;
        }
}

/* A shift far from a block's values (a record's pivot, while this block sits elsewhere) must not
 * cost the moments their precision: values 1000 + u (u in [0, 1)) about shift 0, where the
 * one-pass sums would cancel all but 1e-7 of themselves; and a constant block, whose m2 is 0. */
static void test_f32_kernel_far_shift(void **state)
{
    (void)state;
    static float x[2048];
    uint64_t seed = 11;
    long double sum = 0, m2 = 0;
    for (size_t i = 0; i < 2048; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = 1000.0f + (float)((double)(seed >> 40) / 16777216.0);
        sum += x[i];
    }
    long double mean = sum / 2048;
    for (size_t i = 0; i < 2048; i++)
        m2 += (x[i] - mean) * (x[i] - mean);
    nnp_block_moments a;
    assert_true(nnp__f32_block_moments(x, 2048, 0.0, &a));
    assert_true(fabs(a.m2 - (double)m2) <= 1e-12 * (double)m2);
    assert_true(fabs(a.mean - (double)mean) <= 1e-15 * (double)mean);
    for (size_t i = 0; i < 2048; i++)
        x[i] = 3.25f;
    assert_true(nnp__f32_block_moments(x, 2048, 1.0, &a));
    assert_true(a.m2 == 0.0 && a.mean == 2.25);
}

/* Values near the largest double: the shifted sums overflow, the exact path takes over. */
static void test_huge_values(void **state)
{
    (void)state;
    double a[] = {1e308, -1e308, 1e308};
    double b[5000];
    for (int i = 0; i < 5000; i++)
        b[i] = i % 2 ? -1.7e308 : 1.7e308;
    tensor t[] = {{"a", NNP_F64, 3, a}, {"b", NNP_F64, 5000, b}};
    nnp_dump *d = dump_of("huge.safetensors", t, 2);
    nnp_tensor_stats s[2];
    all_stats(d, 2, s);
    assert_true(fabs(s[0].mean - 1e308 / 3) < 1e293);
    /* deviations 2/3, -4/3, 2/3 (x 1e308): variance 8/9 x 1e616 */
    assert_true(fabs(s[0].std / 1e308 - sqrt(8.0 / 9.0)) < 1e-15);
    assert_true(s[1].mean == 0.0);
    assert_true(fabs(s[1].std - 1.7e308) / 1.7e308 < 1e-15);
    assert_true(s[0].max == 1e308 && s[1].min == -1.7e308);
    nnp_dump_close(d);
}

static void test_bad_arguments(void **state)
{
    (void)state;
    float a[] = {1};
    tensor t[] = {{"a", NNP_F32, 1, a}};
    nnp_dump *d = dump_of("args.safetensors", t, 1);
    size_t idx = 5;
    nnp_tensor_stats s;
    assert_int_equal(nnp_stats_compute(d, &idx, 1, 1, &s), NNP_ERR_ARG);
    assert_int_equal(nnp_stats_compute(NULL, &idx, 1, 1, &s), NNP_ERR_ARG);
    assert_int_equal(nnp_stats_compute(d, NULL, 0, 1, NULL), NNP_OK);
    nnp_dump_close(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_known_values),
        cmocka_unit_test(test_accuracy_and_threads),
        cmocka_unit_test(test_f32_kernels_agree),
        cmocka_unit_test(test_f32_kernel_far_shift),
        cmocka_unit_test(test_huge_values),
        cmocka_unit_test(test_bad_arguments),
    };
    return cmocka_run_group_tests_name("stats", tests, NULL, NULL);
}
