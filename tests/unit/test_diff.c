/*
 * test_diff.c - the component a record is counted under in a diff's statistics, from module
 * types and path parts (whole parts only: "conv_proj" is not "v_proj"), and default tolerances.
 */
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
        cmocka_unit_test(test_default_tolerances),
    };
    return cmocka_run_group_tests_name("diff", tests, NULL, NULL);
}
