/*
 * test_diff.c - the component a record is counted under in a diff's statistics, from module
 * types and path parts (whole parts only: "conv_proj" is not "v_proj") or `component` rules;
 * default tolerances; how a joined pair says it was joined; and the own/inherited attribution
 * from a standard and an injected diff.
 */
#include <math.h>
#include <sys/stat.h>

#include "testutil.h"

static void test_components(void **state)
{
    (void)state;
    static const struct { const char *name, *type, *want; } cases[] = {
        {"encoder.layers.encoder_layer_0.ln_1/out0", "LayerNorm", "normalization"},
        {"model.layers.3.input_layernorm/out0", "LlamaRMSNorm", "normalization"},
        {"blocks.2.norm1/out0", "", "normalization"},
        {"encoder.layers.encoder_layer_0.self_attention/out0", "MultiheadAttention", "attention"},
        {"model.layers.0.self_attn.q_proj/out0", "Linear", "attention"},
        {"blk.0.attn_q/out0", "", "attention"},
        {"encoder.layers.encoder_layer_0.mlp.0/out0", "Linear", "mlp"},
        {"model.layers.0.mlp.down_proj/out0", "Linear", "mlp"},
        {"blk.3.ffn_down/out0", "", "mlp"},
        {"conv_proj/out0", "Conv2d", "embedding"},
        {"model.embed_tokens/out0", "Embedding", "embedding"},
        {"transformer.wte/out0", "", "embedding"},
        {"heads.head/out0", "Linear", "head"},
        {"lm_head/out0", "Linear", "head"},
        {"encoder.layers.encoder_layer_0/out0", "EncoderBlock", "other"},
        {"model/in0", "VisionTransformer", "other"},
        {"downsample.conv_projection/out0", "", "other"},
        {NULL, NULL, "other"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const char *got = nnp_component(cases[i].name, cases[i].type);
        if (strcmp(got, cases[i].want) != 0)
            fail_msg("%s (%s): %s, not %s", cases[i].name, cases[i].type, got, cases[i].want);
    }
}

static void test_component_table(void **state)
{
    (void)state;
    static const char *const want[] = {"embedding", "attention", "mlp", "normalization", "head",
                                       "other"};
    assert_int_equal(NNP_COMPONENT_COUNT, 6);
    for (int k = 0; k < NNP_COMPONENT_COUNT; k++)
        assert_string_equal(nnp_component_name((nnp_component_kind)k), want[k]);
    assert_string_equal(nnp_component_name(NNP_COMPONENT_COUNT), "?");
    assert_int_equal(nnp_component_kind_of(NULL, "blk.0.attn_q/out0", ""),
                     NNP_COMPONENT_ATTENTION);
    assert_int_equal(nnp_component_kind_of(NULL, NULL, NULL), NNP_COMPONENT_OTHER);

    /* a rule wins over the patterns, the last matching rule over earlier ones */
    nnp_rules *r;
    assert_int_equal(nnp_rules_parse("component ^blk\\. mlp\ncomponent ^blk\\.0\\. head\n",
                                     "t.rules", &r), NNP_OK);
    assert_int_equal(nnp_component_kind_of(r, "blk.0.attn_q/out0", ""), NNP_COMPONENT_HEAD);
    assert_int_equal(nnp_component_kind_of(r, "blk.1.attn_q/out0", ""), NNP_COMPONENT_MLP);
    assert_string_equal(nnp_component_of(r, "blk.1.attn_q/out0", ""), "mlp");
    assert_int_equal(nnp_component_kind_of(r, "ln_f/out0", "LayerNorm"),
                     NNP_COMPONENT_NORMALIZATION);
    nnp_rules_free(r);

    /* the rules take the table's names, and say which they are */
    assert_int_equal(nnp_rules_parse("component ^w$ mixer\n", "t.rules", &r), NNP_ERR_FORMAT);
    assert_non_null(strstr(nnp_last_error(), "'mixer' is not a component (embedding, attention, "
                                             "mlp, normalization, head or other)"));
    assert_int_equal(nnp_rules_parse("component ^w$\n", "t.rules", &r), NNP_ERR_FORMAT);
    assert_non_null(strstr(nnp_last_error(), "needs a regex and a component (embedding, "
                                             "attention, mlp, normalization, head or other)"));
}

/* ---- dumps written for the diffs below: one F32 record per (name, values) ---- */

typedef struct {
    const char *module;
    float v[4];
} rec4;

static void write_dump(const char *path, const rec4 *recs, size_t n)
{
    nnp_writer *w;
    uint64_t shape[1] = {4};
    assert_int_equal(nnp_writer_open(path, n, &w), NNP_OK);
    for (size_t i = 0; i < n; i++) {
        nnp_record_desc d = {NULL, recs[i].module, "out0", "Linear", 0, NNP_F32, 1, shape};
        assert_int_equal(nnp_writer_add(w, &d, recs[i].v), NNP_OK);
    }
    assert_int_equal(nnp_writer_close(w), NNP_OK);
}

static nnp_diff *diff_of(nnp_dump *ref, nnp_dump *port, const nnp_rules *rules)
{
    nnp_diff_options o;
    nnp_diff_options_init(&o);
    o.rules = rules;
    o.threads = 1;
    o.no_align = true;
    nnp_diff *d;
    assert_int_equal(nnp_diff_dumps(ref, port, &o, &d), NNP_OK);
    return d;
}

static void test_attribution(void **state)
{
    (void)state;
    /* a agrees; b is wrong on its own; c only inherits b's error; d has an error of its own
     * too; the port never captured e; f differs and the injection run did not capture it */
    static const rec4 ref[] = {{"a", {1, 2, 3, 4}}, {"b", {1, 2, 3, 4}}, {"c", {1, 2, 3, 4}},
                               {"d", {1, 2, 3, 4}}, {"e", {1, 2, 3, 4}}, {"f", {1, 2, 3, 4}}};
    static const rec4 port[] = {{"a", {1, 2, 3, 4}}, {"b", {2, 2, 3, 4}}, {"c", {2, 2, 3, 4}},
                                {"d", {5, 2, 3, 4}}, {"f", {2, 2, 3, 4}}};
    static const rec4 inj[] = {{"a", {1, 2, 3, 4}}, {"b", {2, 2, 3, 4}}, {"c", {1, 2, 3, 4}},
                               {"d", {5, 2, 3, 4}}, {"e", {1, 2, 3, 4}}};
    char pr[512], pp[512], pi[512];
    write_dump(scratch(pr, sizeof pr, "attr_ref.safetensors"), ref, 6);
    write_dump(scratch(pp, sizeof pp, "attr_port.safetensors"), port, 5);
    write_dump(scratch(pi, sizeof pi, "attr_inj.safetensors"), inj, 5);
    nnp_dump *r, *p, *j;
    assert_int_equal(nnp_dump_open(pr, &r), NNP_OK);
    assert_int_equal(nnp_dump_open(pp, &p), NNP_OK);
    assert_int_equal(nnp_dump_open(pi, &j), NNP_OK);
    nnp_diff *std = diff_of(r, p, NULL), *injd = diff_of(r, j, NULL);

    nnp_attribution *a;
    assert_int_equal(nnp_attribute(r, std, injd, &a), NNP_OK);
    assert_int_equal(nnp_attribution_count(a), 6);
    static const nnp_label want[] = {NNP_LABEL_OK,  NNP_LABEL_OWN,     NNP_LABEL_INHERITED,
                                     NNP_LABEL_OWN, NNP_LABEL_MISSING, NNP_LABEL_UNKNOWN};
    for (size_t i = 0; i < 6; i++) {
        const nnp_attribution_row *row = nnp_attribution_row_at(a, i);
        assert_int_equal(row->ref, i);
        if (row->label != want[i])
            fail_msg("record %zu: %s, not %s", i, nnp_label_name(row->label),
                     nnp_label_name(want[i]));
        assert_true(row->std_pair < 0 ||
                    nnp_diff_pair_at(std, (size_t)row->std_pair)->ref == (size_t)i);
        assert_true(row->inj_pair < 0 ||
                    nnp_diff_pair_at(injd, (size_t)row->inj_pair)->ref == (size_t)i);
    }
    assert_null(nnp_attribution_row_at(a, 6));
    assert_true(nnp_attribution_row_at(a, 4)->std_pair < 0);
    assert_true(nnp_attribution_row_at(a, 5)->inj_pair < 0);
    /* injected rel-L2 / standard rel-L2: all its own, all inherited, neither */
    assert_true(nnp_attribution_row_at(a, 1)->ratio == 1.0);
    assert_true(nnp_attribution_row_at(a, 2)->ratio == 0.0);
    assert_true(isnan(nnp_attribution_row_at(a, 0)->ratio));
    assert_true(isnan(nnp_attribution_row_at(a, 4)->ratio));
    const nnp_attribution_summary *s = nnp_attribution_summary_of(a);
    assert_int_equal(s->labels[NNP_LABEL_OK], 1);
    assert_int_equal(s->labels[NNP_LABEL_OWN], 2);
    assert_int_equal(s->labels[NNP_LABEL_INHERITED], 1);
    assert_int_equal(s->labels[NNP_LABEL_MISSING], 1);
    assert_int_equal(s->labels[NNP_LABEL_UNKNOWN], 1);
    assert_int_equal(s->first_divergence, 1);
    assert_int_equal(s->first_own, 1);
    assert_int_equal(s->other_own, 3);
    assert_int_equal(s->own_layers, 2);
    assert_int_equal(s->inherited_after, 1); /* c; d has its own error */
    nnp_attribution_free(a);

    /* without an injection run nothing is own or inherited */
    assert_int_equal(nnp_attribute(r, std, NULL, &a), NNP_OK);
    assert_int_equal(nnp_attribution_row_at(a, 1)->label, NNP_LABEL_UNKNOWN);
    assert_int_equal(nnp_attribution_row_at(a, 2)->label, NNP_LABEL_UNKNOWN);
    assert_int_equal(nnp_attribution_summary_of(a)->first_own, -1);
    assert_int_equal(nnp_attribution_summary_of(a)->first_divergence, 1);
    assert_null(nnp_attribution_culprit(a)); /* only with a baseline */
    nnp_attribution_free(a);

    /* with a baseline (the reference in the port's precision) an error within 4x its error at
     * the same record is precision: b, c and f; d's is 8x in max-abs and stays its own */
    static const rec4 base[] = {{"a", {1, 2, 3, 4}}, {"b", {1.8f, 2, 3, 4}},
                                {"c", {1.8f, 2, 3, 4}}, {"d", {1.5f, 2, 3, 4}},
                                {"e", {1, 2, 3, 4}}, {"f", {1.9f, 2, 3, 4}}};
    char pb[512];
    write_dump(scratch(pb, sizeof pb, "attr_base.safetensors"), base, 6);
    nnp_dump *b;
    assert_int_equal(nnp_dump_open(pb, &b), NNP_OK);
    nnp_diff *based = diff_of(r, b, NULL);
    assert_int_equal(nnp_attribute_baseline(r, p, j, std, injd, based, based, &a), NNP_OK);
    static const nnp_label noisy[] = {NNP_LABEL_OK,  NNP_LABEL_PRECISION, NNP_LABEL_PRECISION,
                                      NNP_LABEL_OWN, NNP_LABEL_MISSING,   NNP_LABEL_PRECISION};
    for (size_t i = 0; i < 6; i++) {
        const nnp_attribution_row *row = nnp_attribution_row_at(a, i);
        if (row->label != noisy[i])
            fail_msg("record %zu with a baseline: %s, not %s", i, nnp_label_name(row->label),
                     nnp_label_name(noisy[i]));
        assert_int_equal(nnp_diff_pair_at(based, (size_t)row->base_std_pair)->ref, i);
    }
    s = nnp_attribution_summary_of(a);
    assert_int_equal(s->precision, 3);
    assert_int_equal(s->labels[NNP_LABEL_OWN], 1);
    assert_int_equal(s->labels[NNP_LABEL_INHERITED] + s->labels[NNP_LABEL_UNKNOWN], 0);
    assert_int_equal(s->first_divergence, 3); /* the first beyond the noise */
    assert_int_equal(s->first_own, 3);
    assert_string_equal(nnp_label_name(NNP_LABEL_PRECISION), "precision");
    /* who makes it: d, though the standard diff's own first divergence is b's noise */
    const nnp_culprit *c = nnp_attribution_culprit(a);
    assert_non_null(c);
    assert_int_equal(c->kind, NNP_CULPRIT_MODULE);
    assert_string_equal(c->port_module, "d");
    assert_string_equal(nnp_diff_culprit(std)->port_module, "b");
    nnp_attribution_free(a);
    a = (nnp_attribution *)1;
    assert_int_equal(nnp_attribute_baseline(r, p, j, std, injd, NULL, NULL, &a), NNP_ERR_ARG);
    assert_null(a);
    nnp_diff_free(based);
    nnp_dump_close(b);

    /* a diff made against another reference is refused, not read out of bounds */
    a = (nnp_attribution *)1;
    assert_int_equal(nnp_attribute(j, std, NULL, &a), NNP_ERR_ARG);
    assert_null(a);
    assert_non_null(strstr(nnp_last_error(), "reference record 5"));

    assert_string_equal(nnp_label_name(NNP_LABEL_INHERITED), "inherited");
    assert_string_equal(nnp_label_name(NNP_LABEL_COUNT), "?");
    nnp_attribution_free(NULL);
    nnp_diff_free(std);
    nnp_diff_free(injd);
    nnp_dump_close(r);
    nnp_dump_close(p);
    nnp_dump_close(j);
}

/* A pair joined from parts says how (rather than only in its adapters' text). */
static void test_join_kind(void **state)
{
    (void)state;
    char pr[512], pp[512];
    uint64_t fused[2] = {6, 2}, part[2] = {2, 2};
    float v[12] = {0};
    nnp_writer *w;
    assert_int_equal(nnp_writer_open(scratch(pr, sizeof pr, "join_ref.safetensors"), 1, &w),
                     NNP_OK);
    nnp_record_desc d = {"qkv", NULL, NULL, NULL, 0, NNP_F32, 2, fused};
    assert_int_equal(nnp_writer_add(w, &d, v), NNP_OK);
    assert_int_equal(nnp_writer_close(w), NNP_OK);
    assert_int_equal(nnp_writer_open(scratch(pp, sizeof pp, "join_port.safetensors"), 3, &w),
                     NNP_OK);
    static const char *const names[] = {"attn_q", "attn_k", "attn_v"};
    for (int i = 0; i < 3; i++) {
        nnp_record_desc q = {names[i], NULL, NULL, NULL, 0, NNP_F32, 2, part};
        assert_int_equal(nnp_writer_add(w, &q, v), NNP_OK);
    }
    assert_int_equal(nnp_writer_close(w), NNP_OK);
    nnp_dump *r, *p;
    assert_int_equal(nnp_dump_open(pr, &r), NNP_OK);
    assert_int_equal(nnp_dump_open(pp, &p), NNP_OK);

    static const struct { const char *rules; uint32_t nadapters; const char *text; } cases[] = {
        {"concat ^attn_(q|k|v)$ 0 q k v\nrename ^attn_[qkv]$ qkv\n", 0,
         "concat 3 parts on axis 0"},
        {"concat ^attn_(q|k|v)$ -2 q k v\ntranspose ^attn 1,0\nrename ^attn_[qkv]$ qkv\n", 1,
         "transpose 1,0; concat 3 parts on axis -2"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        nnp_rules *rules;
        assert_int_equal(nnp_rules_parse(cases[i].rules, "t.rules", &rules), NNP_OK);
        nnp_diff *df = diff_of(r, p, rules);
        assert_int_equal(nnp_diff_pair_count(df), 1);
        const nnp_diff_pair *pair = nnp_diff_pair_at(df, 0);
        assert_int_equal(pair->nparts, 3);
        assert_int_equal(pair->join, NNP_JOIN_CONCAT);
        assert_int_equal(pair->join_axis, i == 0 ? 0 : -2);
        assert_int_equal(pair->nadapters, cases[i].nadapters);
        assert_string_equal(pair->adapters, cases[i].text);
        nnp_diff_free(df);
        nnp_rules_free(rules);
    }
    nnp_diff *df = diff_of(r, r, NULL);
    const nnp_diff_pair *same = nnp_diff_pair_at(df, 0);
    assert_int_equal(same->join, NNP_JOIN_NONE);
    assert_int_equal(same->join_axis, 0);
    assert_int_equal(same->nadapters, 0);
    nnp_diff_free(df);
    nnp_dump_close(r);
    nnp_dump_close(p);
}

/* The copies of a name that the ranks of a rank capture hold, joined or summed by gather rules. */
static void test_gather_join_kind(void **state)
{
    (void)state;
    static const rec4 ref[] = {{"fc", {1, 2, 3, 4}}, {"proj", {2, 4, 6, 8}}};
    static const rec4 rank0[] = {{"fc", {1, 2, 0, 0}}, {"proj", {1, 2, 3, 4}}};
    static const rec4 rank1[] = {{"fc", {3, 4, 0, 0}}, {"proj", {1, 2, 3, 4}}};
    char pr[512], dir[512], p0[600], p1[600];
    write_dump(scratch(pr, sizeof pr, "gather_ref.safetensors"), ref, 2);
    scratch(dir, sizeof dir, "gather_port");
    assert_int_equal(mkdir(dir, 0755), 0);
    snprintf(p0, sizeof p0, "%s/rank-00000-of-00002.safetensors", dir);
    snprintf(p1, sizeof p1, "%s/rank-00001-of-00002.safetensors", dir);
    write_dump(p0, rank0, 2);
    write_dump(p1, rank1, 2);
    nnp_dump *r, *p;
    assert_int_equal(nnp_dump_open(pr, &r), NNP_OK);
    assert_int_equal(nnp_dump_open(dir, &p), NNP_OK);
    nnp_rules *rules;
    /* each rank holds half of fc along its last axis (its first two elements) */
    assert_int_equal(nnp_rules_parse("slice ^fc/ 0 0:2\ngather ^fc/ concat -1\n"
                                     "gather ^proj/ sum\n", "g.rules", &rules), NNP_OK);
    nnp_diff *d = diff_of(r, p, rules);
    assert_int_equal(nnp_diff_pair_count(d), 2);
    assert_int_equal(nnp_diff_pair_at(d, 0)->join, NNP_JOIN_GATHER_CONCAT);
    assert_int_equal(nnp_diff_pair_at(d, 0)->join_axis, -1);
    assert_int_equal(nnp_diff_pair_at(d, 0)->nadapters, 1);
    assert_int_equal(nnp_diff_pair_at(d, 0)->verdict, NNP_PASS);
    assert_int_equal(nnp_diff_pair_at(d, 1)->join, NNP_JOIN_GATHER_SUM);
    assert_int_equal(nnp_diff_pair_at(d, 1)->join_axis, 0);
    assert_int_equal(nnp_diff_pair_at(d, 1)->nadapters, 0);
    assert_int_equal(nnp_diff_pair_at(d, 1)->verdict, NNP_PASS);
    nnp_diff_free(d);
    nnp_rules_free(rules);
    nnp_dump_close(r);
    nnp_dump_close(p);
}

static void test_default_tolerances(void **state)
{
    (void)state;
    double atol, rtol;
    nnp_default_tolerance(NNP_F32, NNP_F64, &atol, &rtol);
    assert_true(atol == 1e-5 && rtol == 1e-4);
    nnp_default_tolerance(NNP_F32, NNP_BF16, &atol, &rtol); /* the lower precision decides */
    assert_true(atol == 1e-2 && rtol == 4e-2);
    nnp_default_tolerance(NNP_I64, NNP_I32, &atol, &rtol);
    assert_true(atol == 0 && rtol == 0);
    assert_string_equal(nnp_verdict_name(NNP_SHAPE_MISMATCH), "shape");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_components),
        cmocka_unit_test(test_component_table),
        cmocka_unit_test(test_attribution),
        cmocka_unit_test(test_join_kind),
        cmocka_unit_test(test_gather_join_kind),
        cmocka_unit_test(test_default_tolerances),
    };
    return cmocka_run_group_tests_name("diff", tests, NULL, NULL);
}
