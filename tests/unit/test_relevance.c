/*
 * test_relevance.c - relevance maps (src/relevance.c): rollout, head fusion, discard, Chefer's
 * propagation and its rollout, pixel-shuffle back-mapping, normalization and bilinear resizing,
 * on hand-checkable values; the chain against a plain matrix product; finding the layers in a
 * dump and the errors for what does not fit.
 */
#include <math.h>

#include "testutil.h"

#define TOL 1e-12

static nnp_attn_layer layer_of(const double *attn, const double *grad, uint64_t heads,
                               uint64_t n)
{
    nnp_attn_layer L = {.name = "attn", .dtype = NNP_F64, .attn = attn,
                        .grad_name = grad ? "grad" : NULL, .grad_dtype = NNP_F64, .grad = grad,
                        .heads = heads, .n = n, .attn_rec = SIZE_MAX, .grad_rec = SIZE_MAX};
    return L;
}

static void assert_near(const double *got, const double *want, size_t n, double tol)
{
    for (size_t i = 0; i < n; i++)
        if (!(fabs(got[i] - want[i]) <= tol))
            fail_msg("element %zu: got %.10g, want %.10g", i, got[i], want[i]);
}

static const double A1[9] = {.5, .5, 0, 0, 1, 0, 0, 0, 1};
static const double A2[9] = {.5, 0, .5, 0, 1, 0, 0, 0, 1};

static void test_rollout(void **state)
{
    (void)state;
    nnp_attn_layer L[2] = {layer_of(A1, NULL, 1, 3), layer_of(A2, NULL, 1, 3)};
    nnp_relevance_options o = {.size = sizeof o, .method = NNP_REL_ROLLOUT, .threads = 1};
    double r[3];
    assert_int_equal(nnp_relevance(L, 2, &o, 0, r), NNP_OK);
    assert_near(r, (double[]){0.5625, 0.1875, 0.25}, 3, TOL);
    double p[2] = {r[1], r[2]};
    assert_int_equal(nnp_relevance_normalize(p, 2, NNP_NORM_MAX, 0), NNP_OK);
    assert_near(p, (double[]){0.75, 1}, 2, TOL);
    double q[2] = {r[1], r[2]};
    assert_int_equal(nnp_relevance_normalize(q, 2, NNP_NORM_MIN_MAX, 0), NNP_OK);
    assert_near(q, (double[]){0, 1}, 2, TOL);
    /* starting at the second layer leaves only A2' = rownorm(0.5 A2 + 0.5 I) */
    o.start_layer = 1;
    assert_int_equal(nnp_relevance(L, 2, &o, 0, r), NNP_OK);
    assert_near(r, (double[]){0.75, 0, 0.25}, 3, TOL);
    o.start_layer = 2;
    assert_int_equal(nnp_relevance(L, 2, &o, 0, r), NNP_ERR_ARG);
    assert_non_null(strstr(nnp_last_error(), "start layer 2"));
}

static void test_fusion(void **state)
{
    (void)state;
    static const double heads[8] = {1, 0, 0, 1, 0, 1, 0, 1};
    nnp_attn_layer L = layer_of(heads, NULL, 2, 2);
    uint64_t rows[2] = {0, 1};
    double J[4];
    nnp_relevance_options o = {.size = sizeof o, .method = NNP_REL_ROLLOUT,
                               .fusion = NNP_FUSION_MEAN};
    assert_int_equal(nnp_relevance_rows(&L, 1, &o, rows, 2, J), NNP_OK);
    assert_near(J, (double[]){.75, .25, 0, 1}, 4, TOL);
    o.fusion = NNP_FUSION_MAX;
    assert_int_equal(nnp_relevance_rows(&L, 1, &o, rows, 2, J), NNP_OK);
    assert_near(J, (double[]){2.0 / 3, 1.0 / 3, 0, 1}, 4, TOL);
    o.fusion = NNP_FUSION_MIN;
    assert_int_equal(nnp_relevance_rows(&L, 1, &o, rows, 2, J), NNP_OK);
    assert_near(J, (double[]){1, 0, 0, 1}, 4, TOL);
}

static void test_discard(void **state)
{
    (void)state;
    static const double A[9] = {.5, .3, .2, .15, .6, .25, .05, .35, .6};
    nnp_attn_layer L = layer_of(A, NULL, 1, 3);
    uint64_t rows[3] = {0, 1, 2};
    double J[9];
    nnp_relevance_options o = {.size = sizeof o, .method = NNP_REL_ROLLOUT, .discard = 0.4};
    assert_int_equal(nnp_relevance_rows(&L, 1, &o, rows, 3, J), NNP_OK);
    /* 0.05, 0.15 and 0.2 zeroed: row 2 becomes [0, .35, .6] -> [0, .175, .8] / .975 */
    assert_near(J, (double[]){.75 / .9, .15 / .9, 0, 0, .8 / .925, .125 / .925, 0,
                              .175 / .975, .8 / .975}, 9, TOL);
    assert_near(J, (double[]){0.8333, 0.1667, 0, 0, 0.8649, 0.1351}, 6, 5e-5);

    /* entry (0,0) is never zeroed even when it is among the smallest; ties go by index */
    static const double B[9] = {.1, .5, .6, .5, .5, .5, .5, .5, .5};
    L = layer_of(B, NULL, 1, 3);
    o.discard = 0.25; /* the two smallest: .1 at (0,0), spared, and the first .5, at (0,1) */
    assert_int_equal(nnp_relevance_rows(&L, 1, &o, rows, 2, J), NNP_OK);
    assert_near(J, (double[]){.55 / .85, 0, .3 / .85, .2, .6, .2}, 6, TOL);
    o.discard = 1;
    assert_int_equal(nnp_relevance_rows(&L, 1, &o, rows, 2, J), NNP_ERR_ARG);
    assert_non_null(strstr(nnp_last_error(), "discard"));
}

/* Layer 1: two heads of A1, gradients all 2 and all -1; layer 2: two heads of A2, gradient
 * row 0 = [0, 0, 2], other rows 0. */
static double C_attn1[18], C_grad1[18], C_attn2[18], C_grad2[18];

static void chefer_layers(nnp_attn_layer L[2])
{
    for (int h = 0; h < 2; h++)
        for (int e = 0; e < 9; e++) {
            C_attn1[h * 9 + e] = A1[e];
            C_grad1[h * 9 + e] = h == 0 ? 2 : -1;
            C_attn2[h * 9 + e] = A2[e];
            C_grad2[h * 9 + e] = e == 2 ? 2 : 0;
        }
    L[0] = layer_of(C_attn1, C_grad1, 2, 3);
    L[1] = layer_of(C_attn2, C_grad2, 2, 3);
}

static void test_chefer(void **state)
{
    (void)state;
    nnp_attn_layer L[2];
    chefer_layers(L);
    uint64_t rows[3] = {0, 1, 2};
    double R[9];
    nnp_relevance_options o = {.size = sizeof o, .method = NNP_REL_CHEFER};
    assert_int_equal(nnp_relevance_rows(L, 1, &o, rows, 3, R), NNP_OK);
    assert_near(R, (double[]){1.5, .5, 0, 0, 2, 0, 0, 0, 2}, 9, TOL);
    assert_int_equal(nnp_relevance_rows(L, 2, &o, rows, 3, R), NNP_OK);
    assert_near(R, (double[]){1.5, .5, 2, 0, 2, 0, 0, 0, 2}, 9, TOL);
    double r[3];
    assert_int_equal(nnp_relevance(L, 2, &o, 0, r), NNP_OK);
    assert_near(r, (double[]){0, .5, 2}, 3, TOL);
    double p[2] = {r[1], r[2]}, q[2] = {r[1], r[2]};
    assert_int_equal(nnp_relevance_normalize(p, 2, NNP_NORM_MIN_MAX, 0), NNP_OK);
    assert_near(p, (double[]){0, 1}, 2, TOL);
    assert_int_equal(nnp_relevance_normalize(q, 2, NNP_NORM_MAX, 0), NNP_OK);
    assert_near(q, (double[]){.25, 1}, 2, TOL);
    /* a gradient method without gradients */
    nnp_attn_layer bare = layer_of(A1, NULL, 1, 3);
    assert_int_equal(nnp_relevance(&bare, 1, &o, 0, r), NNP_ERR_ARG);
    assert_non_null(strstr(nnp_last_error(), "gradient"));
}

static void test_chefer_rollout(void **state)
{
    (void)state;
    nnp_attn_layer L[2];
    chefer_layers(L);
    double r[3];
    nnp_relevance_options o = {.size = sizeof o, .method = NNP_REL_CHEFER_ROLLOUT};
    assert_int_equal(nnp_relevance(L, 2, &o, 0, r), NNP_OK);
    assert_near(r, (double[]){.375, .125, .5}, 3, TOL);
    /* grad_rollout: the mean of grad*attn before the clamp; layer 1's heads cancel to
     * max(0, (2 - 1) / 2 A1) = A1 / 2 */
    o.method = NNP_REL_GRAD_ROLLOUT;
    uint64_t rows[1] = {0};
    assert_int_equal(nnp_relevance_rows(L, 1, &o, rows, 1, r), NNP_OK);
    /* 0.5 * [.25, .25, 0] + 0.5 * [1, 0, 0] = [.625, .125, 0], row sum .75 */
    assert_near(r, (double[]){.625 / .75, .125 / .75, 0}, 3, TOL);
}

/* The rows API on random maps against the plain product of the explicit matrices, in float32
 * storage, with the threads changing nothing. */
static void test_chain_matches_matrix_product(void **state)
{
    (void)state;
    enum { N = 7, H = 3, NL = 3 };
    static float attn[NL][H * N * N], grad[NL][H * N * N];
    unsigned s = 12345;
    for (int l = 0; l < NL; l++)
        for (int e = 0; e < H * N * N; e++) {
            s = s * 1103515245u + 12345u;
            attn[l][e] = (float)((s >> 8) % 1000) / 1000.0f;
            s = s * 1103515245u + 12345u;
            grad[l][e] = (float)((int)((s >> 8) % 2001) - 1000) / 500.0f;
        }
    nnp_attn_layer L[NL];
    for (int l = 0; l < NL; l++)
        L[l] = (nnp_attn_layer){.name = "a", .dtype = NNP_F32, .attn = attn[l], .grad_name = "g",
                                .grad_dtype = NNP_F32, .grad = grad[l], .heads = H, .n = N};
    for (int method = 0; method < 4; method++) {
        /* expected: M_l per the formulas, J = M_{NL-1} ... M_0 */
        double J[N][N] = {{0}};
        for (int i = 0; i < N; i++)
            J[i][i] = 1;
        for (int l = 0; l < NL; l++) {
            double M[N][N];
            for (int i = 0; i < N; i++) {
                double sum = 0;
                for (int j = 0; j < N; j++) {
                    double acc = 0;
                    for (int h = 0; h < H; h++) {
                        double a = attn[l][(h * N + i) * N + j], g = grad[l][(h * N + i) * N + j];
                        acc += method == 0 ? a : method == 1 ? g * a : fmax(0, g * a);
                    }
                    acc /= H;
                    if (method == 1)
                        acc = fmax(0, acc);
                    M[i][j] = method == 2 ? acc + (i == j) : 0.5 * acc + 0.5 * (i == j);
                    sum += M[i][j];
                }
                if (method != 2)
                    for (int j = 0; j < N; j++)
                        M[i][j] /= sum;
            }
            double P[N][N] = {{0}};
            for (int i = 0; i < N; i++)
                for (int j = 0; j < N; j++)
                    for (int k = 0; k < N; k++)
                        P[i][j] += M[i][k] * J[k][j];
            memcpy(J, P, sizeof J);
        }
        uint64_t rows[N];
        for (int i = 0; i < N; i++)
            rows[i] = (uint64_t)(N - 1 - i);
        double got1[N * N], got4[N * N];
        nnp_relevance_options o = {.size = sizeof o, .method = (nnp_relevance_method)method,
                                   .threads = 1};
        assert_int_equal(nnp_relevance_rows(L, NL, &o, rows, N, got1), NNP_OK);
        o.threads = 4;
        assert_int_equal(nnp_relevance_rows(L, NL, &o, rows, N, got4), NNP_OK);
        assert_memory_equal(got1, got4, sizeof got1);
        for (int i = 0; i < N; i++)
            assert_near(got1 + i * N, J[N - 1 - i], N, 1e-12);
    }
}

static void test_nonfinite(void **state)
{
    (void)state;
    double A[2 * 9];
    memcpy(A, A1, sizeof A1);
    memcpy(A + 9, A1, sizeof A1);
    A[9 + 5] = NAN; /* head 1, row 1, column 2 */
    nnp_attn_layer L = layer_of(A, NULL, 2, 3);
    L.name = "blocks.0.attn/attn";
    nnp_relevance_options o;
    nnp_relevance_options_init(&o);
    double r[3];
    assert_int_equal(nnp_relevance(&L, 1, &o, 0, r), NNP_ERR_ARG);
    assert_non_null(strstr(nnp_last_error(), "'blocks.0.attn/attn' holds a NaN or Inf at [1, 1, 2]"));
}

static void test_pixel_shuffle(void **state)
{
    (void)state;
    uint64_t p[4];
    static const uint64_t v2[4][4] = {{0, 1, 4, 5}, {2, 3, 6, 7}, {8, 9, 12, 13},
                                      {10, 11, 14, 15}};
    for (uint64_t t = 0; t < 4; t++) {
        assert_int_equal(nnp_pixel_shuffle_patches(2, 4, 4, t, p), NNP_OK);
        assert_memory_equal(p, v2[t], sizeof p);
        /* v1 swaps tokens 1 and 2 */
        assert_int_equal(nnp_pixel_shuffle_patches(1, 4, 4, t, p), NNP_OK);
        assert_memory_equal(p, v2[t == 1 ? 2 : t == 2 ? 1 : t], sizeof p);
    }
    assert_int_equal(nnp_pixel_shuffle_patches(2, 32, 32, 17, p), NNP_OK);
    assert_memory_equal(p, ((uint64_t[]){66, 67, 98, 99}), sizeof p);
    /* a non-square grid: 2x6 patches make 1x3 tokens (v2) or, transposed, 3x1 (v1) */
    assert_int_equal(nnp_pixel_shuffle_patches(2, 2, 6, 2, p), NNP_OK);
    assert_memory_equal(p, ((uint64_t[]){4, 5, 10, 11}), sizeof p);
    assert_int_equal(nnp_pixel_shuffle_patches(1, 2, 6, 2, p), NNP_OK);
    assert_memory_equal(p, ((uint64_t[]){4, 5, 10, 11}), sizeof p);
    assert_int_equal(nnp_pixel_shuffle_patches(2, 4, 4, 4, p), NNP_ERR_ARG);
    assert_int_equal(nnp_pixel_shuffle_patches(2, 3, 4, 0, p), NNP_ERR_ARG);
    assert_non_null(strstr(nnp_last_error(), "3x4"));
    assert_int_equal(nnp_pixel_shuffle_patches(3, 4, 4, 0, p), NNP_ERR_ARG);
}

static void test_backmap(void **state)
{
    (void)state;
    const double r[4] = {1, .5, 0, 0};
    double g[16];
    static const double v2[16] = {1, 1, .5, .5, 1, 1, .5, .5, 0, 0, 0, 0, 0, 0, 0, 0};
    static const double v1[16] = {1, 1, 0, 0, 1, 1, 0, 0, .5, .5, 0, 0, .5, .5, 0, 0};
    assert_int_equal(nnp_backmap(2, false, r, 4, 4, 4, g), NNP_OK);
    assert_near(g, v2, 16, 0);
    assert_int_equal(nnp_backmap(1, false, r, 4, 4, 4, g), NNP_OK);
    assert_near(g, v1, 16, 0);
    double quarter[16];
    for (int i = 0; i < 16; i++)
        quarter[i] = v2[i] / 4;
    assert_int_equal(nnp_backmap(2, true, r, 4, 4, 4, g), NNP_OK);
    assert_near(g, quarter, 16, 0);
    /* two tiles: the second tile's tokens land in the second grid */
    const double two[8] = {0, 0, 0, 0, 0, 0, 0, 3};
    double g2[32];
    assert_int_equal(nnp_backmap(2, false, two, 8, 4, 4, g2), NNP_OK);
    for (int i = 0; i < 32; i++)
        assert_true(g2[i] == ((i == 26 || i == 27 || i == 30 || i == 31) ? 3 : 0));
    assert_int_equal(nnp_backmap(2, false, r, 3, 4, 4, g), NNP_ERR_ARG);
    assert_non_null(strstr(nnp_last_error(), "whole number of tiles"));
}

static void test_bilinear(void **state)
{
    (void)state;
    const double src[4] = {1, 2, 4, 5};
    double dst[16];
    assert_int_equal(nnp_resize_bilinear(src, 2, 2, dst, 4, 4), NNP_OK);
    assert_near(dst, (double[]){1, 1.25, 1.75, 2, 1.75, 2, 2.5, 2.75, 3.25, 3.5, 4, 4.25, 4, 4.25,
                                4.75, 5}, 16, TOL);
    /* the same size is the identity; one pixel is the mean of the centre */
    double same[4], one;
    assert_int_equal(nnp_resize_bilinear(src, 2, 2, same, 2, 2), NNP_OK);
    assert_near(same, src, 4, TOL);
    assert_int_equal(nnp_resize_bilinear(src, 2, 2, &one, 1, 1), NNP_OK);
    assert_near(&one, (double[]){3}, 1, TOL);
    assert_int_equal(nnp_resize_bilinear(src, 2, 2, dst, 0, 4), NNP_ERR_ARG);
}

static void test_normalize(void **state)
{
    (void)state;
    double c[3] = {2, 2, 2};
    assert_int_equal(nnp_relevance_normalize(c, 3, NNP_NORM_MIN_MAX, 0), NNP_OK);
    assert_near(c, (double[]){0, 0, 0}, 3, 0);
    double z[2] = {-1, 0};
    assert_int_equal(nnp_relevance_normalize(z, 2, NNP_NORM_MAX, 0), NNP_OK);
    assert_near(z, (double[]){0, 0}, 2, 0);
    /* the 50th percentile of [0, 1, 2, 10] is 1.5: clipped to [0, 1, 1.5, 1.5] */
    double x[4] = {0, 10, 1, 2};
    assert_int_equal(nnp_relevance_normalize(x, 4, NNP_NORM_MAX, 50), NNP_OK);
    assert_near(x, (double[]){0, 1, 1 / 1.5, 1}, 4, TOL);
    double y[2] = {1, NAN};
    assert_int_equal(nnp_relevance_normalize(y, 2, NNP_NORM_MAX, 0), NNP_ERR_ARG);
    assert_int_equal(nnp_relevance_normalize(x, 4, NNP_NORM_MAX, 101), NNP_ERR_ARG);
}

/* ---- layers found in a dump ---- */

typedef struct {
    const char *name, *module, *role; /* name NULL: "<module>/<role>" */
    nnp_dtype dtype;
    uint32_t ndim;
    uint64_t shape[4];
} rec;

/* A dump of records filled with 0.25 (or 1 for integer dtypes), in the given order. */
static nnp_dump *dump_of(const char *file, const rec *r, size_t n)
{
    char path[512];
    scratch(path, sizeof path, file);
    nnp_writer *w;
    assert_int_equal(nnp_writer_open(path, n, &w), NNP_OK);
    for (size_t i = 0; i < n; i++) {
        uint64_t ne = 1;
        for (uint32_t k = 0; k < r[i].ndim; k++)
            ne *= r[i].shape[k];
        size_t sz = nnp_dtype_size(r[i].dtype);
        unsigned char *data = calloc(ne ? ne : 1, sz);
        assert_non_null(data);
        for (uint64_t e = 0; e < ne; e++) {
            if (r[i].dtype == NNP_F32) {
                float v = 0.25f;
                memcpy(data + e * sz, &v, sz);
            } else {
                data[e * sz] = 1;
            }
        }
        nnp_record_desc d = {.name = r[i].name, .module = r[i].module, .role = r[i].role, .dtype = r[i].dtype,
                             .ndim = r[i].ndim, .shape = r[i].shape};
        assert_int_equal(nnp_writer_add(w, &d, data), NNP_OK);
        free(data);
    }
    assert_int_equal(nnp_writer_close(w), NNP_OK);
    nnp_dump *dump;
    assert_int_equal(nnp_dump_open(path, &dump), NNP_OK);
    return dump;
}

static void expect_find_error(nnp_dump *d, const char *attn, const char *grad, bool grads,
                              nnp_status status, const char *text)
{
    nnp_attn_layer *L = (nnp_attn_layer *)1;
    size_t n = 7;
    nnp_status st = nnp_attn_layers_find(d, attn, grad, grads, &L, &n, NULL);
    if (st != status)
        fail_msg("%s: expected status %d, got %d (%s)", attn, status, st, nnp_last_error());
    assert_null(L);
    assert_int_equal(n, 0);
    if (!strstr(nnp_last_error(), text))
        fail_msg("message '%s' lacks '%s'", nnp_last_error(), text);
    assert_null(strchr(nnp_last_error(), '\n'));
}

static void test_find_layers(void **state)
{
    (void)state;
    /* forward taps, then the gradients in backward order, as the bridge records them */
    const rec r[] = {
        {NULL, "blocks.0.attn", "in0", NNP_F32, 2, {3, 8}},
        {NULL, "blocks.0.attn", "attn", NNP_F32, 4, {1, 2, 3, 3}},
        {NULL, "blocks.1.attn", "attn", NNP_F32, 4, {1, 2, 3, 3}},
        {NULL, "blocks.1.attn", "grad_attn", NNP_F32, 4, {1, 2, 3, 3}},
        {NULL, "blocks.0.attn", "grad_attn", NNP_F32, 4, {1, 2, 3, 3}},
    };
    nnp_dump *d = dump_of("layers.safetensors", r, 5);
    nnp_attn_layer *L;
    size_t n;
    bool by_name = false;
    assert_int_equal(nnp_attn_layers_find(d, "/attn$", NULL, true, &L, &n, &by_name), NNP_OK);
    assert_int_equal(n, 2);
    assert_true(by_name);
    assert_string_equal(L[0].name, "blocks.0.attn/attn");
    assert_string_equal(L[0].grad_name, "blocks.0.attn/grad_attn");
    assert_string_equal(L[1].grad_name, "blocks.1.attn/grad_attn");
    assert_int_equal(L[0].heads, 2);
    assert_int_equal(L[0].n, 3);
    assert_int_equal(L[1].attn_rec, 2);
    assert_int_equal(L[1].grad_rec, 3);
    double rr[3];
    nnp_relevance_options o = {.size = sizeof o, .method = NNP_REL_CHEFER};
    assert_int_equal(nnp_relevance(L, n, &o, 0, rr), NNP_OK);
    free(L);
    /* a gradient pattern: paired by names */
    assert_int_equal(nnp_attn_layers_find(d, "/attn$", "grad_attn", true, &L, &n, &by_name),
                     NNP_OK);
    assert_true(by_name);
    assert_int_equal(L[0].grad_rec, 4);
    free(L);
    /* without gradients none is looked for */
    assert_int_equal(nnp_attn_layers_find(d, "attn/attn", NULL, false, &L, &n, NULL), NNP_OK);
    assert_null(L[0].grad);
    free(L);

    expect_find_error(d, "nothing", NULL, false, NNP_ERR_NOT_FOUND,
                      "no record matches the attention pattern 'nothing'");
    expect_find_error(d, "attn$", NULL, false, NNP_ERR_ARG,
                      "matches the gradient record 'blocks.1.attn/grad_attn'");
    expect_find_error(d, "(", NULL, false, NNP_ERR_ARG, "attention pattern '(': bad regex");
    expect_find_error(d, "/attn$", "blocks.0.attn/grad", true, NNP_ERR_ARG,
                      "1 record matches the gradient pattern 'blocks.0.attn/grad' but 2 match");
    expect_find_error(d, "/attn$", "zzz", true, NNP_ERR_NOT_FOUND, "gradient pattern 'zzz'");
    expect_find_error(d, "/in0$", NULL, false, NNP_ERR_ARG, "are square");
    nnp_dump_close(d);
}

static void test_find_layer_errors(void **state)
{
    (void)state;
    const rec r[] = {
        {NULL, "b0", "attn", NNP_F32, 3, {2, 3, 3}},
        {NULL, "b1", "attn", NNP_F32, 3, {2, 4, 4}},
        {NULL, "b2", "probs", NNP_I64, 3, {2, 3, 3}},
        {NULL, "b3", "probs", NNP_F32, 4, {2, 2, 3, 3}},
        {NULL, "b4", "attn", NNP_F32, 3, {2, 3, 3}},
        {NULL, "b4", "grad_attn", NNP_F32, 3, {1, 3, 3}},
        {NULL, "b0", "grad_attn", NNP_F32, 3, {2, 3, 3}},
    };
    nnp_dump *d = dump_of("errors.safetensors", r, 7);
    expect_find_error(d, "^b[01]/attn", NULL, false, NNP_ERR_ARG,
                      "'b1/attn' has shape [2, 4, 4] but the first layer 'b0/attn' has [2, 3, 3]");
    expect_find_error(d, "b2/probs", NULL, false, NNP_ERR_ARG, "'b2/probs' is I64");
    expect_find_error(d, "b3/probs", NULL, false, NNP_ERR_ARG, "one sample");
    expect_find_error(d, "b4/attn", NULL, true, NNP_ERR_ARG,
                      "gradient 'b4/grad_attn' has shape [1, 3, 3] but its attention map");
    /* b1 has no gradient record */
    expect_find_error(d, "^b[01]/attn", NULL, true, NNP_ERR_ARG, "has shape");
    expect_find_error(d, "^b1/attn", NULL, true, NNP_ERR_NOT_FOUND,
                      "no gradient record 'b1/grad_attn' for 'b1/attn'");
    nnp_attn_layer *L;
    size_t n;
    bool by_name = false;
    assert_int_equal(nnp_attn_layers_find(d, "^b0/attn", "^b0/grad", true, &L, &n, &by_name),
                     NNP_OK);
    assert_true(by_name);
    free(L);
    nnp_dump_close(d);
}

/* Files without provenance: gradients found by a pattern pair by what the patterns leave of
 * the names, whatever their order; with nothing in common, in reverse execution order. */
static void test_find_plain_names(void **state)
{
    (void)state;
    const rec r[] = {
        {"L0.probs", NULL, NULL, NNP_F32, 3, {1, 2, 2}},
        {"L1.probs", NULL, NULL, NNP_F32, 3, {1, 2, 2}},
        {"L0.dprobs", NULL, NULL, NNP_F32, 3, {1, 2, 2}}, /* forward order: not backward's */
        {"L1.dprobs", NULL, NULL, NNP_F32, 3, {1, 2, 2}},
        {"back.a", NULL, NULL, NNP_F32, 3, {1, 2, 2}},
        {"back.b", NULL, NULL, NNP_F32, 3, {1, 2, 2}},
    };
    nnp_dump *d = dump_of("plain.safetensors", r, 6);
    nnp_attn_layer *L;
    size_t n;
    bool by_name = false;
    assert_int_equal(nnp_attn_layers_find(d, "[.]probs$", "dprobs", true, &L, &n, &by_name),
                     NNP_OK);
    assert_true(by_name);
    assert_int_equal(n, 2);
    assert_string_equal(L[0].grad_name, "L0.dprobs");
    assert_string_equal(L[1].grad_name, "L1.dprobs");
    assert_int_equal(L[0].heads, 1);
    free(L);
    /* "L0" / "L1" against "back.a" less "back" = "a" / "b": no name pairs them */
    by_name = true;
    assert_int_equal(nnp_attn_layers_find(d, "[.]probs$", "^back", true, &L, &n, &by_name),
                     NNP_OK);
    assert_false(by_name);
    assert_string_equal(L[0].grad_name, "back.b");
    assert_string_equal(L[1].grad_name, "back.a");
    free(L);
    expect_find_error(d, "[.]probs$", NULL, true, NNP_ERR_ARG, "give a gradient pattern");
    nnp_dump_close(d);
}

/* The patterns are bounded as the rules' regexes are: one that backtracks without end on a name
 * stops at a limit, a back-reference is refused, both as NNP_ERR_ARG naming the pattern. */
static void test_find_pattern_limits(void **state)
{
    (void)state;
    const rec r[] = {
        {"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!", NULL, NULL, NNP_F32, 3, {1, 2, 2}},
        {"L0.probs", NULL, NULL, NNP_F32, 3, {1, 2, 2}},
    };
    nnp_dump *d = dump_of("slow.safetensors", r, 2);
    expect_find_error(d, "(a|aa)+$", NULL, false, NNP_ERR_ARG,
                      "attention pattern '(a|aa)+$' on 'aaaa");
    expect_find_error(d, "(a+)+$", NULL, false, NNP_ERR_ARG, "match limit");
    expect_find_error(d, "(a*)*\\1", NULL, false, NNP_ERR_ARG, "back-references");
    expect_find_error(d, "[.]probs$", "((a|aa)+)+$", true, NNP_ERR_ARG, "limit");
    nnp_dump_close(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rollout),
        cmocka_unit_test(test_fusion),
        cmocka_unit_test(test_discard),
        cmocka_unit_test(test_chefer),
        cmocka_unit_test(test_chefer_rollout),
        cmocka_unit_test(test_chain_matches_matrix_product),
        cmocka_unit_test(test_nonfinite),
        cmocka_unit_test(test_pixel_shuffle),
        cmocka_unit_test(test_backmap),
        cmocka_unit_test(test_bilinear),
        cmocka_unit_test(test_normalize),
        cmocka_unit_test(test_find_layers),
        cmocka_unit_test(test_find_layer_errors),
        cmocka_unit_test(test_find_plain_names),
        cmocka_unit_test(test_find_pattern_limits),
    };
    return cmocka_run_group_tests_name("relevance", tests, NULL, NULL);
}
