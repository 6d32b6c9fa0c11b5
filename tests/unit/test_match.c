/*
 * test_match.c - automatic alignment of two captures whose names differ (a torchvision ViT
 * against a GGUF-style port, records missing or added on one side, repeated calls, names and
 * layer numbers telling equal shapes apart, shapes and dtypes that must never pair) and the
 * rules proposed from it: they map every port name to its reference name through the real rules
 * parser, stay few when the model repeats, and survive names that a general rule would catch
 * wrongly.
 */
#include "testutil.h"

#include "internal.h"

/* ---- captures built in the test ---- */

typedef struct {
    char *name[512];
    char *role[512];
    uint64_t shape[512][4];
    nnp__align_item it[512];
    int truth[512]; /* port side: the reference record it stands for, -1 for none */
    size_t n;
} capture;

/* Append a record named `name` ("<module>/<role>#<call>"); its role is taken from the name. */
static size_t add(capture *c, nnp_dtype dt, int truth, const char *name, uint32_t ndim,
                  uint64_t d0, uint64_t d1, uint64_t d2)
{
    assert_true(c->n < 512);
    size_t i = c->n++;
    c->name[i] = strdup(name);
    const char *slash = strrchr(name, '/');
    char role[64] = "";
    if (slash) {
        snprintf(role, sizeof role, "%s", slash + 1);
        role[strcspn(role, "#")] = 0;
    }
    c->role[i] = strdup(role);
    c->shape[i][0] = d0;
    c->shape[i][1] = d1;
    c->shape[i][2] = d2;
    c->it[i] = (nnp__align_item){c->name[i], c->role[i], ndim, c->shape[i], dt, NULL};
    c->truth[i] = truth;
    return i;
}

static void capture_free(capture *c)
{
    for (size_t i = 0; i < c->n; i++) {
        free(c->name[i]);
        free(c->role[i]);
    }
    c->n = 0;
}

/* A name from a format holding the layer (or none), with "#<call>" after the first call. */
static const char *name_of(char *buf, size_t n, const char *fmt, int layer, int call)
{
    snprintf(buf, n, fmt, layer);
    size_t len = strlen(buf);
    if (call && len < n)
        snprintf(buf + len, n - len, "#%d", call);
    return buf;
}

/* A record both sides hold: its reference name and its port name. */
static void both(capture *ref, capture *port, uint32_t ndim, uint64_t d0, uint64_t d1,
                 uint64_t d2, const char *rfmt, const char *pfmt, int layer, int call)
{
    char rn[256], pn[256];
    size_t r = add(ref, NNP_F32, -1, name_of(rn, sizeof rn, rfmt, layer, call), ndim, d0, d1, d2);
    add(port, NNP_F32, (int)r, name_of(pn, sizeof pn, pfmt, layer, call), ndim, d0, d1, d2);
}

enum { T = 17, D = 64, H = 4 };

typedef struct {
    int missing_layer; /* the port does not record this layer's ln_1 (-1: none) */
    int extra_layer;   /* the port records attention scores in this layer (-1: none) */
    int calls;
    int layers;
} vit_opts;

/* torchvision's VisionTransformer against a GGUF-style port: per layer, five records of shape
 * [T, D] and two of [T, 4D], as a ViT-B/16 has them, run `calls` times. */
static void vit(capture *ref, capture *port, const vit_opts *o)
{
    for (int c = 0; c < o->calls; c++) {
        both(ref, port, 4, 1, D, 4, "conv_proj/out0", "patch_embd/out0", 0, c);
        for (int l = 0; l < o->layers; l++) {
            char nm[256];
            if (l == o->missing_layer) {
                add(ref, NNP_F32, -1, name_of(nm, sizeof nm, "encoder.layers.encoder_layer_%d"
                                              ".ln_1/out0", l, c), 2, T, D, 0);
            } else {
                both(ref, port, 2, T, D, 0, "encoder.layers.encoder_layer_%d.ln_1/out0",
                     "blk.%d.attn_norm/out0", l, c);
            }
            both(ref, port, 2, T, D, 0, "encoder.layers.encoder_layer_%d.self_attention/out0",
                 "blk.%d.attn/out0", l, c);
            if (l == o->extra_layer)
                add(port, NNP_F32, -1, name_of(nm, sizeof nm, "blk.%d.kq_soft_max/out0", l, c),
                    3, H, T, T);
            both(ref, port, 2, T, D, 0, "encoder.layers.encoder_layer_%d.ln_2/out0",
                 "blk.%d.ffn_norm/out0", l, c);
            both(ref, port, 2, T, 4 * D, 0, "encoder.layers.encoder_layer_%d.mlp.0/out0",
                 "blk.%d.ffn_up/out0", l, c);
            both(ref, port, 2, T, 4 * D, 0, "encoder.layers.encoder_layer_%d.mlp.1/out0",
                 "blk.%d.ffn_gelu/out0", l, c);
            both(ref, port, 2, T, D, 0, "encoder.layers.encoder_layer_%d.mlp.3/out0",
                 "blk.%d.ffn_down/out0", l, c);
            both(ref, port, 2, T, D, 0, "encoder.layers.encoder_layer_%d/out0",
                 "blk.%d.l_out/out0", l, c);
        }
        both(ref, port, 2, T, D, 0, "encoder.ln/out0", "output_norm/out0", 0, c);
        both(ref, port, 2, 1, 1000, 0, "heads.head/out0", "output/out0", 0, c);
    }
}

static void align(const capture *ref, const capture *port, int64_t *to, double *score)
{
    assert_int_equal(nnp__align(ref->it, ref->n, port->it, port->n, to, score), NNP_OK);
    /* one-to-one and monotonic, scores in [0, 1] */
    int64_t last = -1;
    for (size_t j = 0; j < port->n; j++) {
        if (score)
            assert_true(score[j] >= 0 && score[j] <= 1 && (to[j] < 0) == (score[j] == 0));
        if (to[j] < 0)
            continue;
        assert_true(to[j] > last && to[j] < (int64_t)ref->n);
        last = to[j];
    }
}

static void expect_truth(const capture *ref, const capture *port, const int64_t *to)
{
    for (size_t j = 0; j < port->n; j++)
        if (to[j] != port->truth[j])
            fail_msg("port %s aligned with %s, not %s", port->name[j],
                     to[j] < 0 ? "nothing" : ref->name[to[j]],
                     port->truth[j] < 0 ? "nothing" : ref->name[port->truth[j]]);
}

static void test_renamed_vit_aligns_exactly(void **state)
{
    (void)state;
    capture ref = {0}, port = {0};
    vit_opts o = {.missing_layer = -1, .extra_layer = -1, .calls = 2, .layers = 12};
    vit(&ref, &port, &o);
    assert_int_equal(ref.n, port.n);
    int64_t to[512];
    double score[512];
    align(&ref, &port, to, score);
    expect_truth(&ref, &port, to);
    capture_free(&ref);
    capture_free(&port);
}

static void test_missing_and_extra_records_stay_unaligned(void **state)
{
    (void)state;
    capture ref = {0}, port = {0};
    /* the port skips one [T, D] record the reference has among four of the same shape, and
     * records one the reference does not */
    vit_opts o = {.missing_layer = 5, .extra_layer = 8, .calls = 1, .layers = 12};
    vit(&ref, &port, &o);
    assert_int_equal(ref.n, port.n);
    int64_t to[512];
    double score[512];
    align(&ref, &port, to, score);
    expect_truth(&ref, &port, to);
    size_t unaligned = 0;
    for (size_t j = 0; j < port.n; j++)
        unaligned += to[j] < 0;
    assert_int_equal(unaligned, 1);
    capture_free(&ref);
    capture_free(&port);

    /* the same in layers 2 and 9 of each of three calls */
    o = (vit_opts){.missing_layer = 2, .extra_layer = 9, .calls = 3, .layers = 12};
    vit(&ref, &port, &o);
    align(&ref, &port, to, NULL);
    expect_truth(&ref, &port, to);
    capture_free(&ref);
    capture_free(&port);
}

static void test_shapes_and_dtypes_never_pair(void **state)
{
    (void)state;
    capture ref = {0}, port = {0};
    add(&ref, NNP_F32, -1, "a/out0", 2, 4, 8, 0);
    add(&ref, NNP_F32, -1, "b/out0", 2, 4, 8, 0);
    add(&ref, NNP_F32, -1, "c/out0", 2, 4, 8, 0);
    add(&ref, NNP_I32, -1, "d/out0", 1, 5, 0, 0);
    add(&ref, NNP_F32, -1, "e/out0", 1, 6, 0, 0);
    /* same name, shape [4, 9]: not a match */
    add(&port, NNP_F32, -1, "a/out0", 2, 4, 9, 0);
    /* same shape, other rank */
    add(&port, NNP_F32, -1, "b/out0", 3, 4, 8, 1);
    /* bf16 against f32 is one dtype class */
    add(&port, NNP_BF16, 2, "c/out0", 2, 4, 8, 0);
    /* float against int, and int against float */
    add(&port, NNP_F32, -1, "d/out0", 1, 5, 0, 0);
    add(&port, NNP_I64, -1, "e/out0", 1, 6, 0, 0);
    int64_t to[8];
    align(&ref, &port, to, NULL);
    expect_truth(&ref, &port, to);
    capture_free(&ref);
    capture_free(&port);

    /* roles must agree when both sides record them */
    add(&ref, NNP_F32, -1, "x/in0", 1, 4, 0, 0);
    add(&ref, NNP_F32, -1, "x/out0", 1, 4, 0, 0);
    add(&port, NNP_F32, 1, "y/out0", 1, 4, 0, 0);
    align(&ref, &port, to, NULL);
    expect_truth(&ref, &port, to);
    capture_free(&ref);
    capture_free(&port);
}

static void test_repeated_calls_align_in_order(void **state)
{
    (void)state;
    capture ref = {0}, port = {0};
    /* four calls of one module; the port misses the third, and a block of the same shape
     * follows each call on both sides */
    char nm[64];
    for (int c = 0; c < 4; c++) {
        size_t r = add(&ref, NNP_F32, -1, name_of(nm, sizeof nm, "decoder.attn/out0", 0, c), 2,
                       1, 32, 0);
        size_t r2 = add(&ref, NNP_F32, -1, name_of(nm, sizeof nm, "decoder.mlp/out0", 0, c), 2,
                        1, 32, 0);
        if (c == 2)
            continue;
        add(&port, NNP_F32, (int)r, name_of(nm, sizeof nm, "attn/out0", 0, c), 2, 1, 32, 0);
        add(&port, NNP_F32, (int)r2, name_of(nm, sizeof nm, "ffn/out0", 0, c), 2, 1, 32, 0);
    }
    int64_t to[16];
    double score[16];
    align(&ref, &port, to, score);
    expect_truth(&ref, &port, to);
    capture_free(&ref);
    capture_free(&port);
}

static void test_names_break_ties(void **state)
{
    (void)state;
    capture ref = {0}, port = {0};
    char nm[64];
    /* q, k and v have one shape: the port's k and v pair with k and v, not with q and k */
    add(&ref, NNP_F32, -1, "model.layers.0.self_attn.q_proj/out0", 2, T, D, 0);
    add(&ref, NNP_F32, -1, "model.layers.0.self_attn.k_proj/out0", 2, T, D, 0);
    add(&ref, NNP_F32, -1, "model.layers.0.self_attn.v_proj/out0", 2, T, D, 0);
    add(&port, NNP_F32, 1, "blk.0.attn_k/out0", 2, T, D, 0);
    add(&port, NNP_F32, 2, "blk.0.attn_v/out0", 2, T, D, 0);
    /* every layer's output has one shape: the layer numbers place them when one is missing */
    for (int l = 0; l < 6; l++) {
        size_t r = add(&ref, NNP_F32, -1, name_of(nm, sizeof nm, "model.layers.%d/out0", l, 0),
                       2, T, D, 0);
        if (l != 2)
            add(&port, NNP_F32, (int)r, name_of(nm, sizeof nm, "blk.%d.l_out/out0", l, 0), 2, T,
                D, 0);
    }
    int64_t to[16];
    align(&ref, &port, to, NULL);
    expect_truth(&ref, &port, to);
    capture_free(&ref);
    capture_free(&port);
}

static void test_empty_sides(void **state)
{
    (void)state;
    capture ref = {0}, port = {0};
    int64_t to[4] = {7, 7, 7, 7};
    double score[4] = {7, 7, 7, 7};
    assert_int_equal(nnp__align(NULL, 0, NULL, 0, NULL, NULL), NNP_OK);
    add(&port, NNP_F32, -1, "a/out0", 1, 4, 0, 0);
    add(&port, NNP_F32, -1, "b/out0", 1, 4, 0, 0);
    assert_int_equal(nnp__align(NULL, 0, port.it, port.n, to, score), NNP_OK);
    assert_true(to[0] == -1 && to[1] == -1 && score[0] == 0 && score[1] == 0 && to[2] == 7);
    add(&ref, NNP_F32, -1, "a/out0", 1, 4, 0, 0);
    assert_int_equal(nnp__align(ref.it, ref.n, NULL, 0, NULL, NULL), NNP_OK);
    /* a shape with dimensions but no array is a caller's error */
    ref.it[0].shape = NULL;
    assert_int_equal(nnp__align(ref.it, ref.n, port.it, port.n, to, NULL), NNP_ERR_ARG);
    assert_int_equal(nnp__align(ref.it, ref.n, port.it, port.n, NULL, NULL), NNP_ERR_ARG);
    capture_free(&ref);
    capture_free(&port);
}

/* ---- proposed rules ---- */

/* Propose rules for the pairs, check that the real parser maps every port name to its
 * reference name, and return how many renames there are. */
static size_t expect_round_trip(const char *const *port, const char *const *ref, size_t n,
                                bool print)
{
    nnp_sbuf b = {0};
    assert_int_equal(nnp__align_rules(port, ref, n, &b), NNP_OK);
    assert_non_null(b.s);
    if (print)
        print_message("%s", b.s);
    /* the first line says where the rules come from */
    const char *nl = strchr(b.s, '\n');
    assert_non_null(nl);
    assert_true(b.s[0] == '#');
    char *first = strndup(b.s, (size_t)(nl - b.s));
    assert_non_null(strstr(first, "automatic alignment"));
    assert_non_null(strstr(first, "review"));
    free(first);
    nnp_rules *r = NULL;
    if (nnp_rules_parse(b.s, "proposed.rules", &r) != NNP_OK)
        fail_msg("%s\n%s", nnp_last_error(), b.s);
    for (size_t i = 0; i < n; i++) {
        char *got = NULL;
        bool ignored = true;
        assert_int_equal(nnp_rules_map(r, port[i], &got, &ignored), NNP_OK);
        assert_false(ignored);
        if (strcmp(got, ref[i]) != 0)
            fail_msg("'%s' maps to '%s', not '%s' under\n%s", port[i], got, ref[i], b.s);
        free(got);
    }
    nnp_rules_free(r);
    size_t renames = 0;
    for (const char *p = b.s; (p = strstr(p, "\nrename ")); p++)
        renames++;
    nnp__sbuf_free(&b);
    return renames;
}

static void test_rules_for_vit_are_general(void **state)
{
    (void)state;
    capture ref = {0}, port = {0};
    vit_opts o = {.missing_layer = -1, .extra_layer = -1, .calls = 3, .layers = 12};
    vit(&ref, &port, &o);
    int64_t to[512];
    align(&ref, &port, to, NULL);
    const char *pn[512], *rn[512];
    size_t n = 0;
    for (size_t j = 0; j < port.n; j++)
        if (to[j] >= 0) {
            pn[n] = port.name[j];
            rn[n++] = ref.name[to[j]];
        }
    assert_true(n > 250);
    /* one rename per kind of record: 9 kinds, 12 layers, 3 calls */
    size_t renames = expect_round_trip(pn, rn, n, false);
    assert_true(renames <= 10);
    nnp_sbuf b = {0};
    assert_int_equal(nnp__align_rules(pn, rn, n, &b), NNP_OK);
    assert_non_null(strstr(b.s, "^blk\\.([0-9]+)\\.attn_norm/ "));
    assert_non_null(strstr(b.s, " encoder.layers.encoder_layer_\\1.ln_1/\n"));
    nnp__sbuf_free(&b);
    capture_free(&ref);
    capture_free(&port);
}

static void test_rules_round_trip_hard_cases(void **state)
{
    (void)state;
    /* a broad rule (^blk\.) would catch the other blk names: they come out right anyway */
    static const char *p1[] = {"blk.0/out0", "blk.0.attn/out0", "blk.1/out0", "blk.1.attn/out0",
                               "blk.1.attn/in0"};
    static const char *r1[] = {"layers.0/out0", "layers.0.attention/out0", "layers.1/out0",
                               "layers.1.attention/out0", "layers.1.attention/in0"};
    assert_true(expect_round_trip(p1, r1, 5, false) <= 3);
    /* names kept as they are must not be caught by a general rule */
    static const char *p2[] = {"blk.0.q/out0", "blk.1.q/out0", "blk.2.q/out0", "blk.3.q/out0"};
    static const char *r2[] = {"l.0.q/out0", "l.1.q/out0", "blk.2.q/out0", "l.3.q/out0"};
    expect_round_trip(p2, r2, 4, false);
    /* swapped names: a -> b and b -> a */
    static const char *p3[] = {"a.1/out0", "b.1/out0", "a.2/out0", "b.2/out0"};
    static const char *r3[] = {"b.1/out0", "a.1/out0", "b.2/out0", "a.2/out0"};
    expect_round_trip(p3, r3, 4, false);
    /* regex specials, backslashes, numbers that do not correspond, more than nine groups */
    static const char *p4[] = {
        "a(b)[c]+?.x{1}|$^\\/out0", "net.(1).w*/out0", "l0", "l1",
        "x1.2.3.4.5.6.7.8.9.10.11/out0", "x2.3.4.5.6.7.8.9.10.11.12/out0", "7", "0x1f.y",
        "w\\1/x"};
    static const char *r4[] = {
        "A(b)[c]+?.x{1}|$^\\/out0", "model.(1).w*/out0", "first", "second",
        "y11.10.9.8.7.6.5.4.3.2.1/out0", "y12.11.10.9.8.7.6.5.4.3.2/out0", "seven7", "y.0x1f",
        "w\\a/x"};
    expect_round_trip(p4, r4, 9, false);
    /* a duplicate pair counts once; an empty port name */
    static const char *p5[] = {"m.0/out0", "m.0/out0", "", "n.3"};
    static const char *r5[] = {"k.0/out0", "k.0/out0", "empty", "n.3"};
    expect_round_trip(p5, r5, 4, false);
    /* nothing to rename: only the comment */
    nnp_sbuf b = {0};
    assert_int_equal(nnp__align_rules(NULL, NULL, 0, &b), NNP_OK);
    assert_null(strstr(b.s, "\nrename"));
    nnp__sbuf_free(&b);
    assert_int_equal(nnp__align_rules(p5 + 3, r5 + 3, 1, &b), NNP_OK);
    assert_null(strstr(b.s, "\nrename"));
    nnp__sbuf_free(&b);
}

/* Random names over a small alphabet of parts, so that general rules collide often: the rules
 * must still map every name exactly. */
static void test_rules_round_trip_random(void **state)
{
    (void)state;
    static const char *parts[] = {"blk", "layers", "a", "b", ".", "/", "#", "_", "0", "1", "12",
                                  "out", "attn", "q", "x.", "3"};
    uint64_t s = 12345;
    for (int round = 0; round < 200; round++) {
        size_t n = 1 + round % 40;
        char *pn[40], *rn[40];
        for (size_t i = 0; i < n; i++) {
            char buf[2][64];
            for (int side = 0; side < 2; side++) {
                buf[side][0] = 0;
                int k = 1 + (int)((s = s * 6364136223846793005ull + 1442695040888963407ull) >> 61);
                for (int t = 0; t < k; t++) {
                    s = s * 6364136223846793005ull + 1442695040888963407ull;
                    strcat(buf[side], parts[(s >> 33) % (sizeof parts / sizeof *parts)]);
                }
            }
            /* make port names unique; reference names start with a letter (a replacement
             * cannot start with '#') */
            char tmp[160];
            snprintf(tmp, sizeof tmp, "%s-%zu/o", buf[0], i);
            pn[i] = strdup(tmp);
            snprintf(tmp, sizeof tmp, "r%s/o", buf[1]);
            /* now and then the same name on both sides, or the same suffix */
            if (round % 3 == 0 && i % 4 == 0)
                snprintf(tmp, sizeof tmp, "%s", pn[i]);
            rn[i] = strdup(tmp);
        }
        expect_round_trip((const char *const *)pn, (const char *const *)rn, n, false);
        for (size_t i = 0; i < n; i++) {
            free(pn[i]);
            free(rn[i]);
        }
    }
}

static void test_rules_refuse_what_they_cannot_write(void **state)
{
    (void)state;
    nnp_sbuf b = {0};
    const char *p[] = {"a b"}, *r[] = {"x"};
    assert_int_equal(nnp__align_rules(p, r, 1, &b), NNP_ERR_UNSUPPORTED);
    assert_non_null(strstr(nnp_last_error(), "'a b'"));
    const char *p2[] = {"a"}, *r2[] = {"x\\1"};
    assert_int_equal(nnp__align_rules(p2, r2, 1, &b), NNP_ERR_UNSUPPORTED);
    const char *r3[] = {"#x"};
    assert_int_equal(nnp__align_rules(p2, r3, 1, &b), NNP_ERR_UNSUPPORTED);
    const char *p4[] = {"a", "a"}, *r4[] = {"x", "y"};
    assert_int_equal(nnp__align_rules(p4, r4, 2, &b), NNP_ERR_ARG);
    assert_non_null(strstr(nnp_last_error(), "two reference names"));
    nnp__sbuf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_renamed_vit_aligns_exactly),
        cmocka_unit_test(test_missing_and_extra_records_stay_unaligned),
        cmocka_unit_test(test_shapes_and_dtypes_never_pair),
        cmocka_unit_test(test_repeated_calls_align_in_order),
        cmocka_unit_test(test_names_break_ties),
        cmocka_unit_test(test_empty_sides),
        cmocka_unit_test(test_rules_for_vit_are_general),
        cmocka_unit_test(test_rules_round_trip_hard_cases),
        cmocka_unit_test(test_rules_round_trip_random),
        cmocka_unit_test(test_rules_refuse_what_they_cannot_write),
    };
    return cmocka_run_group_tests_name("match", tests, NULL, NULL);
}
