/*
 * test_metrics.c - nnp_compare on values checked by hand: every metric on a small pair, and each
 * degenerate case (identical, constant offset, constant tensors, zero tensors, NaN and Inf,
 * nothing at all), mixed dtypes, ties for the worst element, and thread-count independence;
 * the F32/BF16/F16 kernels against the double path and against their portable version, and
 * comparing dump records with their pages released behind the scan.
 */
#include <math.h>

#include "internal.h"
#include "testutil.h"

static nnp_metrics cmp(const double *r, const double *p, size_t n, double atol, double rtol)
{
    nnp_metrics m;
    nnp_compare_options o = {sizeof o, atol, rtol, 2};
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
    /* what the port introduced: only index 4 is a NaN where the reference is finite */
    assert_int_equal(m.nan_new, 1);
    assert_int_equal(m.inf_new, 0);
    double nr[2] = {NAN, NAN}, np_[2] = {NAN, 1};
    m = cmp(nr, np_, 2, 0, 0);
    assert_true(m.finite == 0 && isnan(m.mse) && isnan(m.cosine));
    assert_int_equal(m.nan_new, 0);
    /* through the float32 kernel's blocks, one far into the tensor: counted where they are */
    enum { N = 5000 };
    static float fr[N], fp[N];
    for (size_t i = 0; i < N; i++)
        fr[i] = fp[i] = (float)i;
    fp[4321] = INFINITY;
    fp[17] = -INFINITY;
    fp[18] = NAN;
    fr[19] = NAN; /* the reference's own NaN: not the port's doing */
    fp[19] = NAN;
    nnp_compare_options o = {sizeof o, 0, 0, 2};
    assert_int_equal(nnp_compare(NNP_F32, fr, NNP_F32, fp, N, &o, &m), NNP_OK);
    assert_int_equal(m.inf_new, 2);
    assert_int_equal(m.nan_new, 1);
    assert_int_equal(m.nan_port, 2);
    assert_true(m.max_abs == 0);
}

static void test_mixed_dtypes_and_ties(void **state)
{
    (void)state;
    /* a bf16 port against an f32 reference compares after exact conversion */
    float r[3] = {1.0f, 3.14159f, -2.0f};
    uint16_t p[3] = {0x3f80, 0x4049, 0xc000}; /* 1, 3.140625, -2 */
    nnp_metrics m;
    nnp_compare_options o = {sizeof o, 0, 0, 1};
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
    nnp_compare_options o = {sizeof o, 1e-5, 1e-4, 1};
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

/* ---- the F32 / BF16 / F16 kernels ---- */

static uint64_t lcg(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return *s >> 11;
}

/* A uniform value in [-0.5, 0.5). */
static double unit(uint64_t *s)
{
    return (double)lcg(s) / 9007199254740992.0 - 0.5;
}

static uint16_t bf16_of(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16); /* finite values only */
}

/* A half by truncation, enough for test data (the kernels read whatever is stored); NaN and
 * infinities kept. */
static uint16_t f16_of(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    uint32_t sign = (u >> 16) & 0x8000u, e = (u >> 23) & 0xffu;
    if (e == 255)
        return (uint16_t)(sign | 0x7c00u | ((u & 0x7fffffu) ? 0x200u : 0));
    if (e < 103)
        return (uint16_t)sign;
    if (e < 113) /* a subnormal half */
        return (uint16_t)(sign | ((0x800000u | (u & 0x7fffffu)) >> (126 - e)));
    if (e > 142)
        return (uint16_t)(sign | 0x7bffu);
    return (uint16_t)(sign | ((e - 112) << 10) | ((u & 0x7fffffu) >> 13));
}

/* Store v as dtype t at byte offset i * size. */
static void store(nnp_dtype t, unsigned char *base, size_t i, double v)
{
    float f = (float)v;
    if (t == NNP_F32) {
        memcpy(base + 4 * i, &f, 4);
    } else {
        uint16_t h = t == NNP_BF16 ? bf16_of(f) : f16_of(f);
        memcpy(base + 2 * i, &h, 2);
    }
}

/* Two metrics computed in different orders agree to this relative error. */
static void close_to(double got, double want, double rel)
{
    if (!(got == want || fabs(got - want) <= rel * fabs(want)))
        fail_msg("got %.17g, want %.17g", got, want);
}

static void same_metrics(const nnp_metrics *a, const nnp_metrics *b)
{
    assert_int_equal(a->count, b->count);
    assert_int_equal(a->finite, b->finite);
    assert_int_equal(a->nan_ref, b->nan_ref);
    assert_int_equal(a->nan_port, b->nan_port);
    assert_int_equal(a->inf_ref, b->inf_ref);
    assert_int_equal(a->inf_port, b->inf_port);
    assert_int_equal(a->allclose_fail, b->allclose_fail);
    assert_true(a->max_abs == b->max_abs);
    assert_int_equal(a->max_index, b->max_index);
    assert_true(a->ref_at_max == b->ref_at_max && a->port_at_max == b->port_at_max);
    close_to(a->mse, b->mse, 1e-12);
    close_to(a->mean_abs, b->mean_abs, 1e-12);
    close_to(a->rel_l2, b->rel_l2, 1e-12);
    close_to(a->snr_db, b->snr_db, 1e-12);
    close_to(a->cosine, b->cosine, 1e-13);
    close_to(a->pcc, b->pcc, 1e-12);
}

/* Every pairing of F32, BF16 and F16, at an odd length (vector tails), at unaligned addresses,
 * with a large offset (Pearson's moments must not lose it), NaN and Inf in one block, the worst
 * element tied within a block and across blocks, and blocks whose first value is an outlier
 * (the kernel's pivot, far from the block's mean): the same metrics as the double path
 * (F64 copies of the same values), to the last bit for counts, the worst element and its place. */
static void test_kernels_match_double_path(void **state)
{
    (void)state;
    static const nnp_dtype kinds[3] = {NNP_F32, NNP_BF16, NNP_F16};
    size_t n = 3 * NNP_CMP_BLOCK + 13;
    unsigned char *r = malloc(4 * n + 3), *p = malloc(4 * n + 3);
    double *r64 = malloc(n * sizeof *r64), *p64 = malloc(n * sizeof *p64);
    assert_true(r && p && r64 && p64);
    for (int a = 0; a < 3; a++)
        for (int b = 0; b < 3; b++)
            for (int variant = 0; variant < 4; variant++) {
                nnp_dtype rt = kinds[a], pt = kinds[b];
                uint64_t seed = 77 + (uint64_t)(a * 9 + b * 3 + variant);
                size_t skew = (size_t)variant % 3; /* 1 to 3 bytes off alignment */
                unsigned char *rb = r + 1 + skew, *pb = p + 3 - skew;
                double offset = variant == 1 ? 100.0 : 0.0; /* half's 11 bits still vary */
                for (size_t i = 0; i < n; i++) {
                    double x = offset + unit(&seed);
                    /* variant 3: every block starts far out in its own distribution */
                    if (variant == 3 && i % NNP_CMP_BLOCK == 0)
                        x = i % (2 * NNP_CMP_BLOCK) ? -300.0 : 250.0;
                    store(rt, rb, i, x);
                    store(pt, pb, i, x + unit(&seed) * 1e-2);
                }
                if (variant == 2) {
                    /* NaN and Inf in block 1; a tie for the worst element in blocks 0 and 2 */
                    store(rt, rb, NNP_CMP_BLOCK + 5, NAN);
                    store(pt, pb, NNP_CMP_BLOCK + 9, INFINITY);
                    store(rt, rb, NNP_CMP_BLOCK + 11, -INFINITY);
                    store(pt, pb, NNP_CMP_BLOCK + 11, -INFINITY);
                    size_t at[3] = {40, 41, 2 * NNP_CMP_BLOCK + 1};
                    for (int k = 0; k < 3; k++) {
                        store(rt, rb, at[k], 0.25);
                        store(pt, pb, at[k], 8.25);
                    }
                }
                nnp_convert_to_f64(rt, rb, n, r64);
                nnp_convert_to_f64(pt, pb, n, p64);
                for (int threads = 1; threads <= 2; threads++) {
                    nnp_compare_options o = {sizeof o, 1e-3, 1e-2, threads};
                    nnp_metrics fast, exact;
                    assert_int_equal(nnp_compare(rt, rb, pt, pb, n, &o, &fast), NNP_OK);
                    assert_int_equal(nnp_compare(NNP_F64, r64, NNP_F64, p64, n, &o, &exact), NNP_OK);
                    same_metrics(&fast, &exact);
                    if (variant == 0) /* the tolerance test itself was exercised */
                        assert_true(fast.allclose_fail > 0 && fast.allclose_fail < n);
                    if (variant == 2) {
                        assert_int_equal(fast.max_index, 40);
                        assert_int_equal(fast.nan_ref, 1);
                        assert_int_equal(fast.inf_port, 2);
                    }
                }
            }
    free(r);
    free(p);
    free(r64);
    free(p64);
}

/* Each vector kernel this CPU has and the portable one give the same block sums, at every
 * length (vector tails), at unaligned addresses, with an ordinary first pair and with one far out
 * in the block's distribution (the pivot: the moments are then summed again about the means). */
static void test_kernels_match_portable(void **state)
{
    (void)state;
    static const nnp_dtype kinds[3] = {NNP_F32, NNP_BF16, NNP_F16};
    unsigned char r[4 * NNP_CMP_BLOCK + 4], p[4 * NNP_CMP_BLOCK + 4];
    int tested = 0;
    for (int k = NNP_CMP_AVX2; k < NNP_CMP_KERNELS; k++) {
        if (!nnp__cmp_kernel_available((nnp_cmp_kernel)k))
            continue;
        tested++;
        uint64_t seed = 5;
        for (int a = 0; a < 3; a++)
            for (int b = 0; b < 3; b++)
                for (int far = 0; far < 2; far++)
                    for (size_t n = 1; n <= NNP_CMP_BLOCK; n = n * 3 + 1) {
                        for (size_t i = 0; i < n; i++) {
                            double x = far && i == 0 ? 900.0 : unit(&seed) * 10;
                            store(kinds[a], r + 2, i, x);
                            store(kinds[b], p + 1, i, x * (1 + unit(&seed) * 1e-3));
                        }
                        nnp_cmp_sums v, q;
                        assert_true(nnp__cmp_block_with((nnp_cmp_kernel)k, kinds[a], r + 2,
                                                        kinds[b], p + 1, n, 1e-3, 1e-3, &v));
                        assert_true(nnp__cmp_block_portable(kinds[a], r + 2, kinds[b], p + 1, n,
                                                            1e-3, 1e-3, &q));
                        assert_int_equal(v.n, q.n);
                        assert_int_equal(v.fail, q.fail);
                        assert_true(v.max_abs == q.max_abs);
                        close_to(v.sd2, q.sd2, 1e-12);
                        close_to(v.sad, q.sad, 1e-12);
                        close_to(v.srr, q.srr, 1e-12);
                        close_to(v.spp, q.spp, 1e-12);
                        close_to(v.spr, q.spr, 1e-12);
                        close_to(v.mean_r, q.mean_r, 1e-12);
                        close_to(v.mean_p, q.mean_p, 1e-12);
                        close_to(v.m2_r, q.m2_r, 1e-12);
                        close_to(v.c_rp, q.c_rp, 1e-10);
                        /* a NaN or an infinity on either side sends the block to the exact path */
                        store(kinds[b], p + 1, n - 1, n % 2 ? NAN : -INFINITY);
                        assert_false(nnp__cmp_block_with((nnp_cmp_kernel)k, kinds[a], r + 2,
                                                         kinds[b], p + 1, n, 0, 0, &v));
                        assert_false(nnp__cmp_block_portable(kinds[a], r + 2, kinds[b], p + 1, n,
                                                             0, 0, &v));
                    }
    }
    if (!tested)
        print_message("no vector kernel on this CPU: only the portable one runs\n");
    /* a kernel the CPU lacks, or a dtype no kernel reads in place, is refused, never run */
    nnp_cmp_sums v;
    if (!nnp__cmp_kernel_available(NNP_CMP_AVX512))
        assert_false(nnp__cmp_block_with(NNP_CMP_AVX512, NNP_F32, r, NNP_F32, p, 4, 0, 0, &v));
    assert_false(nnp__cmp_block_with(NNP_CMP_PORTABLE, NNP_F64, r, NNP_F32, p, 4, 0, 0, &v));
}

/* The process's resident file-backed memory, in KiB (/proc/self/status RssFile). */
static long rss_file_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "RssFile: %ld", &v) == 1)
            break;
    if (f)
        fclose(f);
    return v;
}

/* nnp__compare_records gives nnp_compare's metrics and leaves the records' pages unmapped. */
static void test_compare_records_releases_pages(void **state)
{
    (void)state;
    size_t n = 12u << 20; /* 48 MiB a side */
    float *x = malloc(n * sizeof *x);
    uint16_t *h = malloc(n * sizeof *h);
    assert_true(x && h);
    uint64_t seed = 3;
    for (size_t i = 0; i < n; i++) {
        x[i] = (float)unit(&seed);
        h[i] = bf16_of(x[i]);
    }
    char rp[300], pp[300];
    scratch(rp, sizeof rp, "records_ref.safetensors");
    scratch(pp, sizeof pp, "records_port.safetensors");
    uint64_t shape[1] = {n};
    const void *data[2] = {x, h};
    const char *paths[2] = {rp, pp};
    for (int k = 0; k < 2; k++) {
        nnp_writer *w;
        assert_int_equal(nnp_writer_open(paths[k], 2, &w), NNP_OK);
        nnp_record_desc small = {"small", NULL, NULL, NULL, 0, k ? NNP_BF16 : NNP_F32, 1, shape};
        uint64_t few[1] = {3};
        small.shape = few;
        assert_int_equal(nnp_writer_add(w, &small, data[k]), NNP_OK);
        nnp_record_desc big = {"big", NULL, NULL, NULL, 0, k ? NNP_BF16 : NNP_F32, 1, shape};
        assert_int_equal(nnp_writer_add(w, &big, data[k]), NNP_OK);
        assert_int_equal(nnp_writer_close(w), NNP_OK);
    }
    nnp_dump *ref, *port;
    assert_int_equal(nnp_dump_open(rp, &ref), NNP_OK);
    assert_int_equal(nnp_dump_open(pp, &port), NNP_OK);
    int64_t ri = nnp_dump_find(ref, "big"), pi = nnp_dump_find(port, "big");
    assert_true(ri >= 0 && pi >= 0);
    nnp_compare_options o = {sizeof o, 1e-2, 4e-2, 2};
    nnp_metrics a, b;
    long before = rss_file_kib();
    assert_int_equal(nnp__compare_records(ref, (size_t)ri, port, (size_t)pi, &o, &a), NNP_OK);
    long after = rss_file_kib();
    /* 96 MiB were read; at most a few chunks' worth may still be mapped */
    if (before >= 0 && after >= 0 && after - before > 16 * 1024)
        fail_msg("RssFile grew by %ld KiB", after - before);
    assert_int_equal(nnp_compare(NNP_F32, x, NNP_BF16, h, n, &o, &b), NNP_OK);
    assert_memory_equal(&a, &b, sizeof a);
    /* a record read again after its release is still all there */
    assert_int_equal(nnp__compare_records(ref, (size_t)ri, port, (size_t)pi, &o, &a), NNP_OK);
    assert_memory_equal(&a, &b, sizeof a);
    /* the element counts must agree */
    int64_t small = nnp_dump_find(port, "small");
    assert_int_equal(nnp__compare_records(ref, (size_t)ri, port, (size_t)small, &o, &a),
                     NNP_ERR_ARG);
    nnp_dump_close(ref);
    nnp_dump_close(port);
    free(x);
    free(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hand_computed),         cmocka_unit_test(test_degenerate_cases),
        cmocka_unit_test(test_nan_and_inf),           cmocka_unit_test(test_mixed_dtypes_and_ties),
        cmocka_unit_test(test_threads_do_not_matter),
        cmocka_unit_test(test_kernels_match_double_path),
        cmocka_unit_test(test_kernels_match_portable),
        cmocka_unit_test(test_compare_records_releases_pages),
    };
    return cmocka_run_group_tests_name("metrics", tests, NULL, NULL);
}
