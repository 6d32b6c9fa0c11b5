/*
 * test_metrics.c - nnp_compare on values checked by hand: every metric on a small pair, and each
 * degenerate case (identical, constant offset, constant tensors, zero tensors, NaN and Inf,
 * nothing at all), mixed dtypes, ties for the worst element, and thread-count independence.
 */
#include <math.h>

#include "testutil.h"

static nnp_metrics cmp(const double *r, const double *p, size_t n, double atol, double rtol)
{
    nnp_metrics m;
    nnp_compare_options o = {atol, rtol, 2};
    assert_int_equal(nnp_compare(NNP_F64, r, NNP_F64, p, n, &o, &m), NNP_OK);
    return m;
}

static void near(double got, double want)
{
    if (!(fabs(got - want) <= 1e-12 * (1 + fabs(want))))
        fail_msg("got %.17g, want %.17g", got, want);
}

static void test_hand_computed(void **state)
{
    (void)state;
    double r[4] = {1, 2, 3, 4}, p[4] = {1, 2.5, 3, 3};
    /* d = 0, .5, 0, -1 */
    nnp_metrics m = cmp(r, p, 4, 0.1, 0.1);
    assert_int_equal(m.count, 4);
    near(m.mse, 1.25 / 4);
    near(m.rmse, sqrt(1.25 / 4));
    near(m.mean_abs, 1.5 / 4);
    near(m.max_abs, 1);
    assert_int_equal(m.max_index, 3);
    assert_true(m.ref_at_max == 4 && m.port_at_max == 3);
    near(m.rel_l2, sqrt(1.25) / sqrt(30));
    near(m.nmse, 1.25 / 30);
    near(m.snr_db, 10 * log10(30 / 1.25));
    near(m.cosine, (1 + 5 + 9 + 12) / (sqrt(30) * sqrt(1 + 6.25 + 9 + 9)));
    /* pcc: means 2.5 and 2.375 */
    double cr[4] = {-1.5, -0.5, 0.5, 1.5}, cp[4] = {-1.375, 0.125, 0.625, 0.625};
    double c = 0, vr = 0, vp = 0;
    for (int i = 0; i < 4; i++) {
        c += cr[i] * cp[i];
        vr += cr[i] * cr[i];
        vp += cp[i] * cp[i];
    }
    near(m.pcc, c / sqrt(vr * vp));
    /* tolerance 0.1 + 0.1|r|: 0.5 > 0.3 and 1 > 0.5 fail */
    assert_int_equal(m.allclose_fail, 2);
    near(m.allclose_fail_pct, 50);
}

static void test_degenerate_cases(void **state)
{
    (void)state;
    double r[3] = {1, 2, 3}, off[3] = {2, 3, 4}, c1[3] = {5, 5, 5}, c2[3] = {6, 6, 6},
           z[3] = {0, 0, 0};
    nnp_metrics m = cmp(r, r, 3, 0, 0);
    assert_true(m.mse == 0 && m.rel_l2 == 0 && m.nmse == 0 && isinf(m.snr_db) && m.snr_db > 0);
    assert_true(m.cosine == 1 && m.pcc == 1 && m.allclose_fail == 0);
    /* a constant offset: pcc is 1 by definition, but every element is outside tolerance */
    m = cmp(r, off, 3, 1e-3, 1e-3);
    near(m.pcc, 1);
    assert_true(m.allclose_fail == 3 && m.max_abs == 1);
    /* two different constants never correlate perfectly; the same constant does */
    m = cmp(c1, c2, 3, 0, 0);
    assert_true(m.pcc == 0);
    m = cmp(c1, c1, 3, 0, 0);
    assert_true(m.pcc == 1);
    /* a constant port against a varying reference */
    m = cmp(r, c1, 3, 0, 0);
    assert_true(m.pcc == 0);
    /* zero tensors: identical zeros are a match; zero against non-zero is not */
    m = cmp(z, z, 3, 0, 0);
    assert_true(m.cosine == 1 && m.rel_l2 == 0 && m.pcc == 1);
    m = cmp(r, z, 3, 0, 0);
    assert_true(m.cosine == 0 && m.rel_l2 == 1);
    m = cmp(z, r, 3, 0, 0);
    assert_true(m.cosine == 0 && isinf(m.rel_l2) && isinf(m.nmse) && m.snr_db < 0);
    /* nothing to compare */
    m = cmp(NULL, NULL, 0, 0, 0);
    assert_true(m.count == 0 && m.mse == 0 && m.cosine == 1 && m.pcc == 1);
}

static void test_nan_and_inf(void **state)
{
    (void)state;
    double r[6] = {1, NAN, INFINITY, -INFINITY, 5, NAN};
    double p[6] = {1, NAN, INFINITY, INFINITY, NAN, 2};
    nnp_metrics m = cmp(r, p, 6, 0, 0);
    assert_int_equal(m.count, 6);
    assert_int_equal(m.finite, 1);
    assert_int_equal(m.nan_ref, 2);
    assert_int_equal(m.nan_port, 2);
    assert_int_equal(m.inf_ref, 2);
    assert_int_equal(m.inf_port, 2);
    /* index 0 agrees, index 2 is the same infinity; NaNs and -inf vs +inf disagree */
    assert_int_equal(m.allclose_fail, 4);
    assert_true(m.mse == 0 && m.max_abs == 0 && m.max_index == 0);
    double nr[2] = {NAN, NAN}, np_[2] = {NAN, 1};
    m = cmp(nr, np_, 2, 0, 0);
    assert_true(m.finite == 0 && isnan(m.mse) && isnan(m.cosine));
}

static void test_mixed_dtypes_and_ties(void **state)
{
    (void)state;
    /* a bf16 port against an f32 reference compares after exact conversion */
    float r[3] = {1.0f, 3.14159f, -2.0f};
    uint16_t p[3] = {0x3f80, 0x4049, 0xc000}; /* 1, 3.140625, -2 */
    nnp_metrics m;
    nnp_compare_options o = {0, 0, 1};
    assert_int_equal(nnp_compare(NNP_F32, r, NNP_BF16, p, 3, &o, &m), NNP_OK);
    assert_int_equal(m.max_index, 1);
    near(m.max_abs, (double)3.14159f - 3.140625);
    /* the first of equal worst elements wins */
    double a[4] = {0, 0, 0, 0}, b[4] = {0, 1, -1, 1};
    m = cmp(a, b, 4, 0, 0);
    assert_int_equal(m.max_index, 1);
    /* bad arguments */
    assert_int_equal(nnp_compare(NNP_F32, r, NNP_DTYPE_INVALID, p, 3, &o, &m), NNP_ERR_ARG);
    o.atol = -1;
    assert_int_equal(nnp_compare(NNP_F32, r, NNP_F32, r, 3, &o, &m), NNP_ERR_ARG);
}

/* 3.3 million elements across chunks, one NaN: the same bits with any number of threads. */
static void test_threads_do_not_matter(void **state)
{
    (void)state;
    size_t n = 3300000;
    float *r = malloc(n * sizeof *r), *p = malloc(n * sizeof *p);
    uint64_t seed = 9;
    for (size_t i = 0; i < n; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        r[i] = (float)((double)(seed >> 11) / 9007199254740992.0 - 0.5);
        p[i] = r[i] + (float)(i % 7) * 1e-6f;
    }
    p[2000000] = NAN;
    nnp_metrics m1, m;
    nnp_compare_options o = {1e-5, 1e-4, 1};
    assert_int_equal(nnp_compare(NNP_F32, r, NNP_F32, p, n, &o, &m1), NNP_OK);
    assert_int_equal(m1.nan_port, 1);
    for (int t = 2; t <= 4; t++) {
        o.threads = t;
        assert_int_equal(nnp_compare(NNP_F32, r, NNP_F32, p, n, &o, &m), NNP_OK);
        assert_memory_equal(&m, &m1, sizeof m);
    }
    free(r);
    free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hand_computed),         cmocka_unit_test(test_degenerate_cases),
        cmocka_unit_test(test_nan_and_inf),           cmocka_unit_test(test_mixed_dtypes_and_ties),
        cmocka_unit_test(test_threads_do_not_matter),
    };
    return cmocka_run_group_tests_name("metrics", tests, NULL, NULL);
}
