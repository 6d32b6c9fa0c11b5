/*
 * test_sketch.c - records' fingerprints (kernels/sketch.c, dump/sketch_codec.c): the
 * projection is linear; its estimate of rel-L2 stays within the bounds docs/sketch.md states,
 * over many random pairs from a fixed seed, computed and stored alike; the hash separates
 * bytes, shapes and dtypes; the last-row sketch of [1, T, D] is the sketch of that row; NaN
 * and infinities are counted and leave the projection as if they were 0; the vector and
 * portable kernels agree bit for bit; a stored entry reads back as it was written; captures
 * (one file, shards, recovered) give the sketches their data gives; and a stored value that
 * does not fit is one line naming the file and the key.
 */
#include <math.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "testutil.h"

/* A fixed stream of standard normal numbers (splitmix64, Box-Muller). */
static uint64_t rng_state;

static double uniform(void)
{
    rng_state += 0x9e3779b97f4a7c15ull;
    return ((double)(nnp__mix64(rng_state) >> 11) + 0.5) * 0x1p-53;
}

static double normal(void)
{
    return sqrt(-2 * log(uniform())) * cos(6.283185307179586 * uniform());
}

static void sketch_f32(const float *x, uint32_t ndim, const uint64_t *shape, nnp_sketch *out)
{
    uint64_t n = 1;
    for (uint32_t k = 0; k < ndim; k++)
        n *= shape[k];
    nnp__sketch_tensor(NNP_F32, ndim, shape, x, n, out);
}

/* The sketch as a capture stores it and a reader decodes it. */
/* The stored metadata value of the one entry e, appended to b. */
static void value_of(nnp_sbuf *b, const unsigned char *e)
{
    char text[NNP_SKETCH_ENTRY_CHARS];
    nnp__sketch_entry_text(e, text);
    nnp__sbuf_puts(b, NNP_SKETCH_VALUE_PREFIX);
    nnp__sbuf_put(b, text, sizeof text);
}

static void stored(nnp_sketch *s)
{
    unsigned char e[NNP_SKETCH_ENTRY_BYTES];
    nnp__sketch_pack(s, e);
    nnp_sbuf b = {0};
    value_of(&b, e);
    assert_false(b.failed);
    assert_int_equal(nnp__sketch_value_check("t", b.s, b.len, 1), NNP_OK);
    assert_int_equal(nnp__sketch_unpack("t", b.s, 0, s), NNP_OK);
    nnp__sbuf_free(&b);
}

static void test_linear(void **state)
{
    (void)state;
    rng_state = 1;
    enum { N = 5000 }; /* not a whole number of blocks */
    static float x[N], y[N], d[N];
    for (int i = 0; i < N; i++) {
        x[i] = (float)normal();
        y[i] = (float)normal();
        d[i] = x[i] - y[i];
    }
    uint64_t shape[1] = {N};
    nnp_sketch sx, sy, sd;
    sketch_f32(x, 1, shape, &sx);
    sketch_f32(y, 1, shape, &sy);
    sketch_f32(d, 1, shape, &sd);
    double err = 0, norm = 0;
    for (int m = 0; m < NNP_SKETCH_WIDTH; m++) {
        double e = ((double)sx.all.proj[m] - sy.all.proj[m]) - sd.all.proj[m];
        err += e * e;
        norm += (double)sd.all.proj[m] * sd.all.proj[m];
    }
    /* equal but for float rounding in the buckets */
    assert_true(sqrt(err) < 1e-5 * sqrt(norm));
    /* and a scaled tensor has a scaled sketch */
    for (int i = 0; i < N; i++)
        d[i] = 2 * x[i];
    sketch_f32(d, 1, shape, &sd);
    for (int m = 0; m < NNP_SKETCH_WIDTH; m++)
        assert_true(sd.all.proj[m] == 2 * sx.all.proj[m]);
    assert_true(sd.all.norm == 2 * sx.all.norm);
}

/* Over PAIRS random pairs at each rel-L2, the estimate divided by the truth: its mean square
 * (||S d||^2 / ||d||^2, without bias, standard deviation sqrt(2/32) = 0.25, so 0.018 for the
 * mean of 200) within 0.85..1.15, and every ratio within 0.35..1.8 (a chi-square with 32
 * degrees of freedom leaves that range once in about 10^8 draws; docs/sketch.md measured
 * 0.60..1.42 over 400). */
static void check_estimates(bool keep_stored)
{
    enum { N = 4096, PAIRS = 200 };
    static float a[N], b[N];
    static double d[N];
    const double rhos[] = {1e-3, 1e-2, 1e-1, 1};
    uint64_t shape[2] = {16, N / 16};
    for (size_t ri = 0; ri < sizeof rhos / sizeof *rhos; ri++) {
        double sum2 = 0, lo = INFINITY, hi = 0;
        for (int p = 0; p < PAIRS; p++) {
            double bn = 0, dn = 0;
            for (int i = 0; i < N; i++) {
                b[i] = (float)normal();
                d[i] = normal();
                bn += (double)b[i] * b[i];
                dn += d[i] * d[i];
            }
            double scale = rhos[ri] * sqrt(bn / dn), tn = 0;
            for (int i = 0; i < N; i++) {
                a[i] = (float)(b[i] + scale * d[i]);
                double e = (double)a[i] - b[i];
                tn += e * e;
            }
            nnp_sketch sa, sb;
            sketch_f32(a, 2, shape, &sa);
            sketch_f32(b, 2, shape, &sb);
            if (keep_stored) {
                stored(&sa);
                stored(&sb);
            }
            double est, cosine;
            assert_true(nnp__sketch_distance(&sa.all, &sb.all, &est, &cosine));
            double r = est / sqrt(tn / bn);
            sum2 += r * r;
            lo = r < lo ? r : lo;
            hi = r > hi ? r : hi;
            assert_true(cosine <= 1 && cosine >= -1);
        }
        double mean2 = sum2 / PAIRS;
        /* stored at F16, a rel-L2 of 1e-3 reads a little high (about 3% on average) */
        double top = keep_stored && rhos[ri] < 5e-3 ? 1.25 : 1.15;
        if (mean2 < 0.85 || mean2 > top || lo < 0.35 || hi > 1.8)
            fail_msg("rel-L2 %g%s: mean square of estimate/truth %.3f, range %.3f..%.3f",
                     rhos[ri], keep_stored ? " (stored)" : "", mean2, lo, hi);
    }
}

static void test_estimate_within_bounds(void **state)
{
    (void)state;
    rng_state = 2;
    check_estimates(false);
}

static void test_stored_estimate_within_bounds(void **state)
{
    (void)state;
    rng_state = 3;
    check_estimates(true);
}

static void test_identical_and_opposite(void **state)
{
    (void)state;
    rng_state = 4;
    enum { N = 1000 };
    static float x[N], y[N];
    for (int i = 0; i < N; i++) {
        x[i] = (float)normal();
        y[i] = -x[i];
    }
    uint64_t shape[1] = {N};
    nnp_sketch sx, sy;
    sketch_f32(x, 1, shape, &sx);
    sketch_f32(y, 1, shape, &sy);
    double rel, cosine;
    assert_true(nnp__sketch_distance(&sx.all, &sx.all, &rel, &cosine));
    assert_true(rel == 0 && cosine == 1);
    assert_true(nnp__sketch_distance(&sx.all, &sy.all, &rel, &cosine));
    assert_true(rel > 1.4 && rel < 2.6 && cosine < -0.3); /* 2 and -1, estimated */
    stored(&sx);
    assert_true(nnp__sketch_distance(&sx.all, &sx.all, &rel, &cosine));
    assert_true(rel == 0);
    /* streams of different lengths do not compare */
    uint64_t shorter[1] = {N - 1};
    sketch_f32(x, 1, shorter, &sy);
    assert_false(nnp__sketch_distance(&sx.all, &sy.all, &rel, &cosine));
}

static void test_hash(void **state)
{
    (void)state;
    float x[6] = {1, 2, 3, 4, 5, 6}, y[6] = {1, 2, 3, 4, 5, 6};
    uint64_t s23[2] = {2, 3}, s32[2] = {3, 2};
    nnp_sketch a, b;
    sketch_f32(x, 2, s23, &a);
    sketch_f32(y, 2, s23, &b);
    assert_true(a.hash == b.hash); /* equal bytes, shape and dtype */
    sketch_f32(x, 2, s32, &b);
    assert_true(a.hash != b.hash); /* the shape */
    nnp__sketch_tensor(NNP_I32, 2, s23, x, 6, &b);
    assert_true(a.hash != b.hash); /* the dtype */
    y[5] = nextafterf(6, 7);
    sketch_f32(y, 2, s23, &b);
    assert_true(a.hash != b.hash); /* one bit */
    /* every bit of a long tensor counts, the tail's bytes too */
    enum { N = 1000 };
    static unsigned char big[N], other[N];
    for (int i = 0; i < N; i++)
        big[i] = (unsigned char)(i * 7);
    uint64_t h = nnp__bytes_hash(big, N, 9);
    for (int i = 0; i < N; i += 37) {
        memcpy(other, big, N);
        other[i] ^= (unsigned char)(1u << (i % 8));
        assert_true(nnp__bytes_hash(other, N, 9) != h);
    }
    assert_true(nnp__bytes_hash(big, N - 1, 9) != h);
}

static void test_last_row(void **state)
{
    (void)state;
    rng_state = 5;
    /* D = 100 is not a whole number of blocks: the row's blocks sit at other places in the
     * whole tensor than in the row alone */
    enum { T = 7, D = 100, B = 3 };
    static float x[B * T * D], last[B * D];
    for (int i = 0; i < B * T * D; i++)
        x[i] = (float)normal();
    uint64_t s1td[3] = {1, T, D}, s11d[3] = {1, 1, D};
    nnp_sketch whole, row;
    sketch_f32(x, 3, s1td, &whole);
    sketch_f32(x + (T - 1) * D, 3, s11d, &row);
    assert_true(whole.has_last);
    assert_false(row.has_last); /* one row on that axis */
    assert_memory_equal(&whole.last, &row.all, sizeof row.all);
    /* with a batch, the last rows of every batch in order: [B, 1, D] */
    uint64_t sbtd[3] = {B, T, D}, sb1d[3] = {B, 1, D};
    for (int k = 0; k < B; k++)
        memcpy(last + k * D, x + (k * T + T - 1) * D, D * sizeof *x);
    sketch_f32(x, 3, sbtd, &whole);
    sketch_f32(last, 3, sb1d, &row);
    assert_memory_equal(&whole.last, &row.all, sizeof row.all);
    /* one axis, or one row: no last-row sketch */
    uint64_t flat[1] = {T * D}, one[2] = {1, D};
    sketch_f32(x, 1, flat, &whole);
    assert_false(whole.has_last);
    sketch_f32(x, 2, one, &whole);
    assert_false(whole.has_last);
}

static void test_nonfinite(void **state)
{
    (void)state;
    rng_state = 6;
    enum { N = 5000 };
    static float x[N], clean[N];
    for (int i = 0; i < N; i++)
        x[i] = clean[i] = (float)normal();
    x[3] = NAN;
    x[1000] = INFINITY;
    x[4999] = -INFINITY;
    clean[3] = clean[1000] = clean[4999] = 0;
    uint64_t shape[2] = {50, 100};
    nnp_sketch a, b;
    sketch_f32(x, 2, shape, &a);
    sketch_f32(clean, 2, shape, &b);
    assert_int_equal(a.nonfinite, 3);
    assert_int_equal(b.nonfinite, 0);
    assert_true(a.hash != b.hash);
    assert_memory_equal(&a.all, &b.all, sizeof a.all); /* as if they were 0 */
    assert_memory_equal(&a.last, &b.last, sizeof a.last);
    assert_true(isfinite(a.all.norm) && isfinite(a.all.sum));
    for (int m = 0; m < NNP_SKETCH_WIDTH; m++)
        assert_true(isfinite(a.all.proj[m]));
}

static void test_vector_matches_portable(void **state)
{
    (void)state;
    rng_state = 7;
    enum { N = 70001 }; /* past a fold, not a whole number of tiles or blocks */
    static float f[N + 1];
    static uint16_t h[N];
    static double g[N];
    static int32_t k[N];
    for (int i = 0; i < N; i++) {
        f[i] = (float)normal();
        g[i] = f[i];
        k[i] = (int32_t)(f[i] * 1000);
    }
    f[17] = NAN;
    assert_int_equal(nnp_convert(NNP_F32, f, N, NNP_F16, h), NNP_OK);
    struct {
        nnp_dtype t;
        const void *p;
    } cases[] = {{NNP_F32, f}, {NNP_F16, h}, {NNP_BF16, h}, {NNP_F64, g}, {NNP_I32, k}};
    /* the last two: many short last rows, gathered a tileful at a time, crossing a fold */
    uint64_t shapes[][3] = {{N}, {7, N / 7}, {1, 11, N / 77}, {N / 2, 2, 1}, {N / 6, 2, 3}};
    uint32_t ndims[] = {1, 2, 3, 3, 3};
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++)
        for (int s = 0; s < 5; s++) {
            uint64_t n = 1;
            for (uint32_t d = 0; d < ndims[s]; d++)
                n *= shapes[s][d];
            nnp_sketch v, p;
            nnp__sketch_tensor(cases[c].t, ndims[s], shapes[s], cases[c].p, n, &v);
            nnp__sketch_tensor_portable(cases[c].t, ndims[s], shapes[s], cases[c].p, n, &p);
            assert_memory_equal(&v, &p, sizeof v);
        }
    /* float32 that is not 4-byte aligned is read through a copy, to the same sketch */
    unsigned char *odd = (unsigned char *)malloc(N * 4 + 1);
    memcpy(odd + 1, f, N * 4);
    uint64_t shape[1] = {N};
    nnp_sketch v, p;
    nnp__sketch_tensor(NNP_F32, 1, shape, odd + 1, N, &v);
    nnp__sketch_tensor(NNP_F32, 1, shape, f, N, &p);
    assert_memory_equal(&v, &p, sizeof v);
    free(odd);
}

/* A projection is stored as F16 of proj / norm, by a vector version where the CPU has one: the
 * same bits as the portable one for every magnitude, subnormal and saturated ones included. */
static void test_stored_projection_matches_portable(void **state)
{
    (void)state;
    rng_state = 9;
    nnp_sketch_part p = {0};
    uint16_t v[NNP_SKETCH_WIDTH], q[NNP_SKETCH_WIDTH];
    for (int round = 0; round < 4000; round++) {
        p.norm = ldexp(1.0 + fabs(normal()), (int)(uniform() * 60) - 30);
        for (int m = 0; m < NNP_SKETCH_WIDTH; m++) {
            double scale = ldexp(1.0, (int)(uniform() * 50) - 32); /* F16's range and past it */
            p.proj[m] = (float)(normal() * p.norm * scale);
        }
        if (round % 7 == 0) {
            p.proj[3] = INFINITY;
            p.proj[5] = -65519.0f * (float)p.norm; /* just under the saturation */
            p.proj[6] = (float)(65520.0 * p.norm);
            p.proj[9] = 0.0f;
            p.proj[10] = -0.0f;
        }
        nnp__sketch_proj_f16(&p, v);
        nnp__sketch_proj_f16_portable(&p, q);
        assert_memory_equal(v, q, sizeof v);
    }
    p.norm = 0;
    nnp__sketch_proj_f16(&p, v);
    for (int m = 0; m < NNP_SKETCH_WIDTH; m++)
        assert_int_equal(v[m], 0);
}

/* ... and read back by a vector version too: the same floats, and the same refusal of a value
 * that is not finite, whatever the bytes and the norm. */
static void test_stored_projection_reads_as_portable(void **state)
{
    (void)state;
    rng_state = 10;
    unsigned char e[2 * NNP_SKETCH_WIDTH];
    float v[NNP_SKETCH_WIDTH], q[NNP_SKETCH_WIDTH];
    for (int round = 0; round < 4000; round++) {
        for (size_t i = 0; i < sizeof e; i++)
            e[i] = (unsigned char)(uniform() * 256);
        if (round % 2) /* most rounds without an infinity or NaN among 32 values */
            for (int m = 0; m < NNP_SKETCH_WIDTH; m++)
                if ((e[2 * m + 1] & 0x7c) == 0x7c)
                    e[2 * m + 1] ^= 0x40;
        double norm = round % 5 == 0 ? 1.7e308 : ldexp(uniform(), (int)(uniform() * 300) - 150);
        bool a = nnp__sketch_proj_unpack(e, norm, v);
        bool b = nnp__sketch_proj_unpack_portable(e, norm, q);
        assert_int_equal(a, b);
        if (a)
            assert_memory_equal(v, q, sizeof v);
    }
}

static void test_entry_round_trip(void **state)
{
    (void)state;
    rng_state = 8;
    enum { N = 300 };
    static float x[N];
    for (int i = 0; i < N; i++)
        x[i] = (float)(normal() * 1e30); /* F16 could not hold these without the norm's scale */
    x[5] = NAN;
    uint64_t shape[2] = {3, 100};
    nnp_sketch s, r;
    sketch_f32(x, 2, shape, &s);
    r = s;
    stored(&r);
    assert_true(r.hash == s.hash && r.nonfinite == s.nonfinite && r.has_last == s.has_last);
    assert_true(r.all.norm == s.all.norm && r.all.sum == s.all.sum);
    assert_true(r.all.count == s.all.count && r.last.count == s.last.count);
    for (int m = 0; m < NNP_SKETCH_WIDTH; m++) {
        /* 11 significant bits of proj / norm */
        assert_true(fabs((double)r.all.proj[m] - s.all.proj[m]) <= s.all.norm * 0x1p-11);
        assert_true(fabs((double)r.last.proj[m] - s.last.proj[m]) <= s.last.norm * 0x1p-11);
    }
    /* a zero tensor: zero projection, no division by its norm */
    memset(x, 0, sizeof x);
    sketch_f32(x, 2, shape, &s);
    stored(&s);
    for (int m = 0; m < NNP_SKETCH_WIDTH; m++)
        assert_true(s.all.proj[m] == 0);
}

static void test_bad_values(void **state)
{
    (void)state;
    float x[4] = {1, 2, 3, 4};
    uint64_t shape[1] = {4};
    nnp_sketch s;
    sketch_f32(x, 1, shape, &s);
    unsigned char e[NNP_SKETCH_ENTRY_BYTES];
    nnp__sketch_pack(&s, e);
    nnp_sbuf b = {0};
    value_of(&b, e);
    /* the count of entries, the version, the alphabet */
    assert_int_equal(nnp__sketch_value_check("f", b.s, b.len, 2), NNP_ERR_FORMAT);
    assert_non_null(strstr(nnp_last_error(), "f: metadata 'nnparity.sketches' holds 256"));
    assert_int_equal(nnp__sketch_value_check("f", b.s, b.len - 4, 1), NNP_ERR_FORMAT);
    b.s[7] = '2';
    assert_int_equal(nnp__sketch_value_check("f", b.s, b.len, 1), NNP_ERR_FORMAT);
    assert_non_null(strstr(nnp_last_error(), "version 'sketch/2'"));
    assert_int_equal(nnp__sketch_value_check("f", "x", 1, 1), NNP_ERR_FORMAT);
    b.s[7] = '1';
    b.s[20] = '*';
    assert_int_equal(nnp__sketch_unpack("f", b.s, 0, &s), NNP_ERR_FORMAT);
    assert_non_null(strstr(nnp_last_error(), "entry 0 has a character outside"));
    nnp__sbuf_free(&b);
    /* a NaN norm */
    memset(e + 24, 0xff, 8);
    b = (nnp_sbuf){0};
    value_of(&b, e);
    assert_int_equal(nnp__sketch_unpack("f", b.s, 0, &s), NNP_ERR_FORMAT);
    assert_non_null(strstr(nnp_last_error(), "a norm that is negative or not finite"));
    nnp__sbuf_free(&b);
}

/* Every record's sketch as nnp_dump_sketches gives it equals the one computed from its data:
 * exactly but for the projection, which is stored to 11 bits of proj / norm. */
static void check_dump_sketches(const char *path, bool expect_stored)
{
    nnp_dump *d;
    assert_int_equal(nnp_dump_open(path, &d), NNP_OK);
    assert_true((nnp_dump_meta_get(d, NNP_META_SKETCHES_KEY) != NULL) == expect_stored);
    size_t n = nnp_dump_count(d);
    size_t *idx = malloc(n * sizeof *idx);
    nnp_sketch *got = malloc(n * sizeof *got);
    for (size_t i = 0; i < n; i++)
        idx[n - 1 - i] = i; /* any order */
    assert_int_equal(nnp_dump_sketches(d, idx, n, 2, got), NNP_OK);
    for (size_t t = 0; t < n; t++) {
        const nnp_record *r = nnp_dump_record(d, idx[t]);
        const void *data = NULL;
        if (r->nbytes)
            assert_int_equal(nnp_dump_data(d, idx[t], &data), NNP_OK);
        nnp_sketch want;
        nnp__sketch_tensor(r->dtype, r->ndim, r->shape, data, r->nelem, &want);
        const nnp_sketch *g = &got[t];
        assert_true(g->hash == want.hash && g->nonfinite == want.nonfinite);
        assert_true(g->has_last == want.has_last);
        const nnp_sketch_part *gp[2] = {&g->all, &g->last}, *wp[2] = {&want.all, &want.last};
        for (int k = 0; k < 2; k++) {
            assert_true(gp[k]->count == wp[k]->count && gp[k]->norm == wp[k]->norm &&
                        gp[k]->sum == wp[k]->sum);
            for (int m = 0; m < NNP_SKETCH_WIDTH; m++)
                assert_true(fabs((double)gp[k]->proj[m] - wp[k]->proj[m]) <=
                            wp[k]->norm * (expect_stored ? 0x1p-11 : 0));
        }
    }
    free(idx);
    free(got);
    nnp_dump_close(d);
}

/* A capture of records of several dtypes and shapes (a scalar, a zero-size tensor, a NaN). */
static void write_capture(const char *path, const char *prefix)
{
    rng_state = 9;
    enum { N = 3 * 5 * 40 };
    static float f[N];
    static uint16_t h[N];
    for (int i = 0; i < N; i++)
        f[i] = (float)normal();
    f[7] = NAN;
    assert_int_equal(nnp_convert(NNP_F32, f, N, NNP_F16, h), NNP_OK);
    uint64_t s3[3] = {3, 5, 40}, s1[1] = {N}, s0[2] = {4, 0};
    nnp_writer *w;
    assert_int_equal(nnp_writer_open(path, 0, &w), NNP_OK);
    char name[64];
    struct {
        const char *role;
        nnp_dtype t;
        uint32_t ndim;
        const uint64_t *shape;
        const void *data;
    } recs[] = {{"out0", NNP_F32, 3, s3, f}, {"out1", NNP_F16, 1, s1, h},
                {"out2", NNP_F32, 0, NULL, f + 1}, {"out3", NNP_F32, 2, s0, NULL},
                {"out4", NNP_BF16, 3, s3, h}};
    for (size_t k = 0; k < sizeof recs / sizeof *recs; k++) {
        snprintf(name, sizeof name, "%s%zu", prefix, k);
        nnp_record_desc desc = {.name = name, .module = prefix, .role = recs[k].role,
                                .dtype = recs[k].t, .ndim = recs[k].ndim,
                                .shape = recs[k].shape};
        assert_int_equal(nnp_writer_add(w, &desc, recs[k].data), NNP_OK);
    }
    assert_int_equal(nnp_writer_close(w), NNP_OK);
}

/* count records "layer.K"/out0 of a few shapes from x (TAP_APART_FLOATS floats), 20 us apart,
 * as a forward pass's layers make them: the writer sketches them behind it, from the file. */
#define TAP_APART_FLOATS 384
static void tap_apart(int count, const float *x)
{
    char name[32];
    for (int k = 0; k < count; k++) {
        uint64_t shape[2] = {3, 40 + (uint64_t)(k % 7)};
        snprintf(name, sizeof name, "layer.%d", k);
        assert_int_equal(nnp_tap(name, "out0", NNP_F32, 2, shape, x + k % 50), NNP_OK);
        nanosleep(&(struct timespec){.tv_nsec = 20000}, NULL);
    }
}

static void test_capture_stores_sketches(void **state)
{
    (void)state;
    char p[512];
    scratch(p, sizeof p, "cap.safetensors");
    write_capture(p, "a");
    check_dump_sketches(p, true);
    /* through the capture API too */
    scratch(p, sizeof p, "tap.safetensors");
    nnp_capture_options o;
    nnp_capture_options_init(&o);
    assert_int_equal(nnp_capture_open(p, &o), NNP_OK);
    float x[2 * 3 * 64];
    for (int i = 0; i < 2 * 3 * 64; i++)
        x[i] = (float)i - 100;
    uint64_t shape[3] = {2, 3, 64};
    assert_int_equal(nnp_tap("block", "out0", NNP_F32, 3, shape, x), NNP_OK);
    assert_int_equal(nnp_tap("block", "out0", NNP_F32, 2, shape + 1, x), NNP_OK);
    /* a record large enough (1 MiB or more) to be sketched beside its write, on a thread of
     * its own */
    uint64_t big[2] = {3, 100000};
    float *y = malloc(3 * 100000 * sizeof *y);
    for (int i = 0; i < 3 * 100000; i++)
        y[i] = (float)(i % 977) - 400;
    assert_int_equal(nnp_tap("block", "out1", NNP_F32, 2, big, y), NNP_OK);
    free(y);
    assert_int_equal(nnp_capture_close(), NNP_OK);
    check_dump_sketches(p, true);
    /* records that come apart, as a forward pass's layers make them: sketched behind the
     * writer, read back from the file in batches (more records than a batch holds) */
    scratch(p, sizeof p, "spaced.safetensors");
    assert_int_equal(nnp_capture_open(p, &o), NNP_OK);
    tap_apart(200, x);
    assert_int_equal(nnp_capture_close(), NNP_OK);
    check_dump_sketches(p, true);
}

/* A record the writer cannot read back from its partial file (its bytes gone under it) leaves
 * the dump without stored fingerprints, not with a wrong one: readers then compute them. */
static void test_unreadable_records_store_none(void **state)
{
    (void)state;
    char p[512], partial[600];
    scratch(p, sizeof p, "gone.safetensors");
    snprintf(partial, sizeof partial, "%s.partial", p);
    nnp_capture_options o;
    nnp_capture_options_init(&o);
    assert_int_equal(nnp_capture_open(p, &o), NNP_OK);
    float x[TAP_APART_FLOATS];
    for (int i = 0; i < TAP_APART_FLOATS; i++)
        x[i] = (float)i;
    tap_apart(10, x); /* fewer than a batch: all read back at close */
    /* the data cut off behind the header room the partial file's first 8 bytes give */
    FILE *f = fopen(partial, "rb");
    unsigned char len[8];
    assert_non_null(f);
    assert_int_equal(fread(len, 1, 8, f), 8);
    fclose(f);
    uint64_t room = 0;
    for (int i = 7; i >= 0; i--)
        room = room << 8 | len[i];
    assert_int_equal(truncate(partial, (off_t)(8 + room)), 0);
    assert_int_equal(nnp_capture_close(), NNP_OK);
    check_dump_sketches(p, false);
}

static void test_shards_keep_their_own(void **state)
{
    (void)state;
    char dir[512], p[600];
    scratch(dir, sizeof dir, "shards");
    assert_int_equal(mkdir(dir, 0755), 0);
    snprintf(p, sizeof p, "%s/model-1-of-2.safetensors", dir);
    write_capture(p, "a");
    snprintf(p, sizeof p, "%s/model-2-of-2.safetensors", dir);
    write_capture(p, "b");
    /* each shard's entries belong to its own records */
    check_dump_sketches(dir, true);
}

static void test_recovered_capture_computes(void **state)
{
    (void)state;
    char p[512], part[600];
    scratch(p, sizeof p, "killed.safetensors");
    nnp_writer *w;
    assert_int_equal(nnp_writer_open(p, 0, &w), NNP_OK);
    float x[40];
    for (int i = 0; i < 40; i++)
        x[i] = (float)i;
    uint64_t shape[2] = {4, 10};
    nnp_record_desc desc = {.name = "x", .dtype = NNP_F32, .ndim = 2, .shape = shape};
    assert_int_equal(nnp_writer_add(w, &desc, x), NNP_OK);
    snprintf(part, sizeof part, "%s.partial", nnp__writer_abandon(w));
    /* the journal has no fingerprints: the recovered dump stores none, and they are computed */
    size_t n;
    assert_int_equal(nnp_recover(p, &n), NNP_OK);
    assert_int_equal(n, 1);
    check_dump_sketches(p, false);
}

/* Replace the stored value of the capture at path by `value` (the same header length). */
static void set_stored_value(const char *path, const char *value)
{
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    unsigned char len8[8];
    assert_int_equal(fread(len8, 1, 8, f), 8);
    size_t hlen = (size_t)nnp__le64(len8);
    char *hdr = malloc(hlen + 1);
    assert_int_equal(fread(hdr, 1, hlen, f), hlen);
    hdr[hlen] = 0;
    char *at = strstr(hdr, "\"" NNP_META_SKETCHES_KEY "\":\"");
    assert_non_null(at);
    at += strlen(NNP_META_SKETCHES_KEY) + 4;
    const char *rest = strchr(at, '"'); /* the closing quote, and what follows it */
    assert_true(strlen(value) <= (size_t)(rest - at));
    nnp_sbuf nh = {0};
    nnp__sbuf_put(&nh, hdr, (size_t)(at - hdr));
    nnp__sbuf_puts(&nh, value);
    nnp__sbuf_puts(&nh, rest);
    memcpy(hdr, nh.s, nh.len);
    memset(hdr + nh.len, ' ', hlen - nh.len); /* JSON whitespace where the rest was */
    nnp__sbuf_free(&nh);
    assert_int_equal(fseek(f, 8, SEEK_SET), 0);
    assert_int_equal(fwrite(hdr, 1, hlen, f), hlen);
    assert_int_equal(fclose(f), 0);
    free(hdr);
}

static void expect_bad(const char *path, const char *value, const char *message)
{
    char copy[600];
    snprintf(copy, sizeof copy, "%s.bad", path);
    FILE *in = fopen(path, "rb"), *out = fopen(copy, "wb");
    int c;
    while ((c = fgetc(in)) != EOF)
        fputc(c, out);
    fclose(in);
    fclose(out);
    set_stored_value(copy, value);
    nnp_dump *d;
    assert_int_equal(nnp_dump_open(copy, &d), NNP_OK); /* read only when asked for */
    size_t idx[1] = {0};
    nnp_sketch s;
    assert_int_equal(nnp_dump_sketches(d, idx, 1, 1, &s), NNP_ERR_FORMAT);
    const char *e = nnp_last_error();
    if (!strstr(e, copy) || !strstr(e, "metadata 'nnparity.sketches'") || !strstr(e, message) ||
        strchr(e, '\n'))
        fail_msg("unexpected message: %s", e);
    nnp_dump_close(d);
}

static void test_hostile_stored_values(void **state)
{
    (void)state;
    char p[512];
    scratch(p, sizeof p, "hostile.safetensors");
    float x[64];
    for (int i = 0; i < 64; i++)
        x[i] = (float)i;
    uint64_t shape[2] = {2, 32};
    nnp_writer *w;
    assert_int_equal(nnp_writer_open(p, 0, &w), NNP_OK);
    nnp_record_desc desc = {.name = "x", .dtype = NNP_F32, .ndim = 2, .shape = shape};
    assert_int_equal(nnp_writer_add(w, &desc, x), NNP_OK);
    assert_int_equal(nnp_writer_close(w), NNP_OK);
    nnp_dump *d;
    assert_int_equal(nnp_dump_open(p, &d), NNP_OK);
    char good[300];
    snprintf(good, sizeof good, "%s", nnp_dump_meta_get(d, NNP_META_SKETCHES_KEY));
    nnp_dump_close(d);
    assert_int_equal(strlen(good), 9 + 256);

    expect_bad(p, "sketch/1:AAAA", "holds 4 characters of entries");         /* truncated */
    expect_bad(p, "sketch/9:", "version 'sketch/9'");                        /* version */
    expect_bad(p, "fingerprints", "does not start with 'sketch/1:'");
    char v[300];
    /* a count of 2^56 elements for a tensor of 64: the entry's count field is bytes 16..24 */
    unsigned char e[NNP_SKETCH_ENTRY_BYTES];
    nnp_sketch s;
    nnp__sketch_tensor(NNP_F32, 2, shape, x, 64, &s);
    s.all.count = 1ull << 56;
    nnp__sketch_pack(&s, e);
    nnp_sbuf b = {0};
    value_of(&b, e);
    expect_bad(p, b.s, "entry 0 counts 72057594037927936 elements, but tensor 'x' has 64");
    nnp__sbuf_free(&b);
    nnp__sketch_tensor(NNP_F32, 2, shape, x, 64, &s);
    s.all.norm = NAN;
    nnp__sketch_pack(&s, e);
    b = (nnp_sbuf){0};
    value_of(&b, e);
    expect_bad(p, b.s, "entry 0 has a norm that is negative or not finite");
    nnp__sbuf_free(&b);
    snprintf(v, sizeof v, "%s", good);
    v[100] = '#';
    expect_bad(p, v, "entry 0 has a character outside base64's alphabet");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_linear),
        cmocka_unit_test(test_estimate_within_bounds),
        cmocka_unit_test(test_stored_estimate_within_bounds),
        cmocka_unit_test(test_identical_and_opposite),
        cmocka_unit_test(test_hash),
        cmocka_unit_test(test_last_row),
        cmocka_unit_test(test_nonfinite),
        cmocka_unit_test(test_vector_matches_portable),
        cmocka_unit_test(test_stored_projection_matches_portable),
        cmocka_unit_test(test_stored_projection_reads_as_portable),
        cmocka_unit_test(test_entry_round_trip),
        cmocka_unit_test(test_bad_values),
        cmocka_unit_test(test_capture_stores_sketches),
        cmocka_unit_test(test_unreadable_records_store_none),
        cmocka_unit_test(test_shards_keep_their_own),
        cmocka_unit_test(test_recovered_capture_computes),
        cmocka_unit_test(test_hostile_stored_values),
    };
    return cmocka_run_group_tests_name("sketch", tests, NULL, NULL);
}
