/*
 * test_adapt.c - the adapters rules attach to records, element by element against layouts worked
 * out by hand, and what nnp__rules_apply makes of names: ops in rule order, concat parts, split
 * forks, tolerances, and ignores.
 */
#include "testutil.h"

#include "internal.h"

/* A tensor over the caller's floats. */
static nnp_tensor f32(const float *data, uint32_t ndim, const uint64_t *shape)
{
    nnp_tensor t = {.dtype = NNP_F32, .ndim = ndim, .data = data, .nelem = 1};
    for (uint32_t k = 0; k < ndim; k++) {
        t.shape[k] = shape[k];
        t.nelem *= shape[k];
    }
    return t;
}

static void expect_floats(const nnp_tensor *t, const float *want, uint64_t n)
{
    assert_int_equal(t->nelem, n);
    for (uint64_t i = 0; i < n; i++)
        assert_true(((const float *)t->data)[i] == want[i]);
}

static nnp_rules *parse(const char *text)
{
    nnp_rules *r;
    assert_int_equal(nnp_rules_parse(text, "t.rules", &r), NNP_OK);
    return r;
}

/* The ops one rules line makes of the name "x". */
static nnp_op op_of(const char *line)
{
    nnp_rules *r = parse(line);
    nnp_mapping *m;
    size_t n;
    assert_int_equal(nnp__rules_apply(r, "x", &m, &n), NNP_OK);
    assert_int_equal(n, 1);
    assert_int_equal(m[0].nops, 1);
    nnp_op op = m[0].ops[0];
    nnp__mappings_free(m, n);
    nnp_rules_free(r);
    return op;
}

static void test_transpose_then_reshape_copies_in_the_new_order(void **state)
{
    (void)state;
    const float x[6] = {0, 1, 2, 3, 4, 5}; /* [[0,1,2],[3,4,5]] */
    nnp_tensor t = f32(x, 2, (uint64_t[]){2, 3});
    nnp_op ops[2] = {op_of("transpose x\n"), op_of("reshape x 6\n")};
    assert_int_equal(nnp__adapt(&t, ops, 2, false, NULL), NNP_OK);
    assert_int_equal(t.ndim, 1);
    expect_floats(&t, (const float[]){0, 3, 1, 4, 2, 5}, 6);
    assert_non_null(t.owned);
    nnp__tensor_free(&t);
}

static void test_slices_and_selects_are_views(void **state)
{
    (void)state;
    float x[24];
    for (int i = 0; i < 24; i++)
        x[i] = (float)i; /* shape [2, 3, 4] */
    nnp_tensor t = f32(x, 3, (uint64_t[]){2, 3, 4});
    nnp_op ops[2] = {op_of("select x 0 -1\n"), op_of("slice x 0 1:\n")};
    assert_int_equal(nnp__adapt(&t, ops, 2, false, NULL), NNP_OK);
    /* x[-1][1:] = rows 1 and 2 of the second block: contiguous, so no copy is made */
    assert_null(t.owned);
    assert_int_equal(t.ndim, 2);
    assert_int_equal(t.shape[0], 2);
    expect_floats(&t, (const float[]){16, 17, 18, 19, 20, 21, 22, 23}, 8);
    /* a slice of the last axis is not contiguous: copied */
    t = f32(x, 3, (uint64_t[]){2, 3, 4});
    nnp_op last = op_of("slice x -1 -2:\n");
    assert_int_equal(nnp__adapt(&t, &last, 1, false, NULL), NNP_OK);
    expect_floats(&t, (const float[]){2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22, 23}, 12);
    nnp__tensor_free(&t);
}

static void test_reshape_takes_the_other_shape_and_infers(void **state)
{
    (void)state;
    const float x[8] = {0};
    nnp_tensor other = f32(x, 2, (uint64_t[]){2, 4});
    nnp_tensor t = f32(x, 3, (uint64_t[]){2, 2, 2});
    nnp_op op = op_of("reshape x\n");
    assert_int_equal(nnp__adapt(&t, &op, 1, false, &other), NNP_OK);
    assert_int_equal(t.ndim, 2);
    assert_int_equal(t.shape[1], 4);
    t = f32(x, 1, (uint64_t[]){8});
    op = op_of("reshape x -1,2\n");
    assert_int_equal(nnp__adapt(&t, &op, 1, false, NULL), NNP_OK);
    assert_int_equal(t.shape[0], 4);
    t = f32(x, 1, (uint64_t[]){8});
    op = op_of("reshape x 3,-1\n");
    assert_int_equal(nnp__adapt(&t, &op, 1, false, NULL), NNP_ERR_ARG);
    assert_non_null(strstr(nnp_last_error(), "does not fit a tensor of shape [8]"));
}

static void test_ops_only_on_their_side(void **state)
{
    (void)state;
    const float x[4] = {1, 2, 3, 4};
    nnp_tensor t = f32(x, 1, (uint64_t[]){4});
    nnp_op op = op_of("ref select x 0 1\n");
    assert_true(op.on_ref);
    assert_int_equal(nnp__adapt(&t, &op, 1, false, NULL), NNP_OK);
    assert_int_equal(t.ndim, 1); /* the port's side is untouched */
    assert_int_equal(nnp__adapt(&t, &op, 1, true, NULL), NNP_OK);
    assert_int_equal(t.ndim, 0);
    expect_floats(&t, (const float[]){2}, 1);
}

static void test_cast_rounds_to_nearest_even(void **state)
{
    (void)state;
    /* 1 + 2^-8 is halfway between two bfloat16 values: it rounds to the even one, 1 */
    const float x[2] = {1.00390625f, 1.01171875f};
    nnp_tensor t = f32(x, 1, (uint64_t[]){2});
    nnp_op op = op_of("cast x bf16\n");
    assert_int_equal(nnp__adapt(&t, &op, 1, false, NULL), NNP_OK);
    assert_int_equal(t.dtype, NNP_BF16);
    const uint16_t *b = t.data;
    assert_int_equal(b[0], 0x3F80);
    assert_int_equal(b[1], 0x3F82); /* 1 + 3*2^-8 is halfway too: up to the even 1 + 2^-6 */
    nnp__tensor_free(&t);
}

static void test_rotary_undoes_the_row_permutation(void **state)
{
    (void)state;
    /* one head of 4 rows: llama.cpp stores rows (0, 2, 1, 3) of the Hugging Face order */
    const float gguf[4] = {0, 2, 1, 3};
    nnp_tensor t = f32(gguf, 1, (uint64_t[]){4});
    nnp_op op = op_of("rotary x 1\n");
    assert_int_equal(nnp__adapt(&t, &op, 1, false, NULL), NNP_OK);
    expect_floats(&t, (const float[]){0, 1, 2, 3}, 4);
    nnp__tensor_free(&t);
    t = f32(gguf, 1, (uint64_t[]){4});
    op = op_of("rotary x 3\n");
    assert_int_equal(nnp__adapt(&t, &op, 1, false, NULL), NNP_ERR_ARG);
}

static void test_concat_along_inner_and_outer_axes(void **state)
{
    (void)state;
    const float a[4] = {1, 2, 3, 4}, b[2] = {5, 6};
    nnp_tensor parts[2] = {f32(a, 2, (uint64_t[]){2, 2}), f32(b, 2, (uint64_t[]){2, 1})}, out;
    assert_int_equal(nnp__concat(parts, 2, -1, &out), NNP_OK);
    assert_int_equal(out.shape[1], 3);
    expect_floats(&out, (const float[]){1, 2, 5, 3, 4, 6}, 6);
    nnp__tensor_free(&out);
    parts[1] = f32(b, 2, (uint64_t[]){1, 2});
    assert_int_equal(nnp__concat(parts, 2, 0, &out), NNP_OK);
    expect_floats(&out, (const float[]){1, 2, 3, 4, 5, 6}, 6);
    nnp__tensor_free(&out);
    assert_int_equal(nnp__concat(parts, 2, 1, &out), NNP_ERR_ARG);
    assert_non_null(strstr(nnp_last_error(), "do not join along axis 1"));
}

static void test_apply_collects_parts_forks_and_tolerances(void **state)
{
    (void)state;
    nnp_rules *r = parse("concat \\.attn_(q|k|v)/ -1 q k v\n"
                         "rename \\.attn_[qkv]/ .qkv/\n"
                         "tolerance ^blk\\.1\\. 1e-3 0.5\n"
                         "split \\.(gate_up)\\. 0 gate up\n"
                         "transpose \\.up\\.\n"
                         "ignore ^scratch\n");
    nnp_mapping *m;
    size_t n;
    assert_int_equal(nnp__rules_apply(r, "blk.1.attn_k/out0", &m, &n), NNP_OK);
    assert_int_equal(n, 1);
    assert_string_equal(m[0].name, "blk.1.qkv/out0");
    assert_int_equal(m[0].part, 1);
    assert_int_equal(m[0].nparts, 3);
    assert_int_equal(m[0].join_axis, -1);
    assert_true(m[0].has_tolerance && m[0].rtol == 0.5);
    nnp__mappings_free(m, n);
    assert_int_equal(nnp__rules_apply(r, "mlp.gate_up.weight", &m, &n), NNP_OK);
    assert_int_equal(n, 2);
    assert_string_equal(m[0].name, "mlp.gate.weight");
    assert_string_equal(m[1].name, "mlp.up.weight");
    assert_int_equal(m[0].nops, 1);
    assert_int_equal(m[0].ops[0].kind, NNP_OP_PART);
    assert_int_equal(m[1].nops, 2); /* the part, then the transpose that names only it */
    assert_int_equal(m[1].ops[0].start, 1);
    assert_int_equal(m[1].ops[1].kind, NNP_OP_TRANSPOSE);
    nnp__mappings_free(m, n);
    assert_int_equal(nnp__rules_apply(r, "scratch/out0", &m, &n), NNP_OK);
    assert_int_equal(n, 0);
    nnp__mappings_free(m, n);
    nnp_rules_free(r);
}

static void test_alias_keeps_the_name_and_adds_one(void **state)
{
    (void)state;
    nnp_rules *r = parse("alias ^token_embd\\.weight$ lm_head.weight\n"
                         "rename ^token_embd\\. model.embed_tokens.\n");
    nnp_mapping *m;
    size_t n;
    assert_int_equal(nnp__rules_apply(r, "token_embd.weight", &m, &n), NNP_OK);
    assert_int_equal(n, 2);
    assert_string_equal(m[0].name, "model.embed_tokens.weight");
    assert_string_equal(m[1].name, "lm_head.weight");
    nnp__mappings_free(m, n);
    /* injection maps names one to one: the record's own name wins */
    char *name;
    bool ignored;
    assert_int_equal(nnp_rules_map(r, "token_embd.weight", &name, &ignored), NNP_OK);
    assert_string_equal(name, "model.embed_tokens.weight");
    free(name);
    nnp_rules_free(r);
}

/* A decoder with a cache holds one row of the sequence a reference re-running the prefix holds:
 * activations along the axis before the last, token ids and positions along their last. */
static void test_one_row_along_the_sequence_axis(void **state)
{
    (void)state;
    assert_int_equal(nnp__sequence_axis(3, NNP_F32), 1);
    assert_int_equal(nnp__sequence_axis(4, NNP_BF16), 2);
    assert_int_equal(nnp__sequence_axis(2, NNP_F32), 0);
    assert_int_equal(nnp__sequence_axis(2, NNP_I64), 1);
    assert_int_equal(nnp__sequence_axis(1, NNP_I64), -1);
    const uint64_t step[] = {1, 1, 32}, prefix[] = {1, 6, 32}, wide[] = {1, 6, 64};
    assert_true(nnp__is_one_row_of(3, step, NNP_F32, 3, prefix, NNP_F16));
    assert_false(nnp__is_one_row_of(3, step, NNP_F32, 3, wide, NNP_F32));
    assert_false(nnp__is_one_row_of(3, prefix, NNP_F32, 3, prefix, NNP_F32));
    assert_false(nnp__is_one_row_of(3, step, NNP_F32, 3, prefix, NNP_I32));
    const uint64_t id[] = {1, 1}, ids[] = {1, 6}, rows[] = {6, 1};
    assert_true(nnp__is_one_row_of(2, id, NNP_I32, 2, ids, NNP_I64));
    assert_false(nnp__is_one_row_of(2, id, NNP_F32, 2, ids, NNP_F32));
    assert_true(nnp__is_one_row_of(2, id, NNP_F32, 2, rows, NNP_F32));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_transpose_then_reshape_copies_in_the_new_order),
        cmocka_unit_test(test_slices_and_selects_are_views),
        cmocka_unit_test(test_reshape_takes_the_other_shape_and_infers),
        cmocka_unit_test(test_ops_only_on_their_side),
        cmocka_unit_test(test_cast_rounds_to_nearest_even),
        cmocka_unit_test(test_rotary_undoes_the_row_permutation),
        cmocka_unit_test(test_concat_along_inner_and_outer_axes),
        cmocka_unit_test(test_apply_collects_parts_forks_and_tolerances),
        cmocka_unit_test(test_alias_keeps_the_name_and_adds_one),
        cmocka_unit_test(test_one_row_along_the_sequence_axis),
    };
    return cmocka_run_group_tests_name("adapt", tests, NULL, NULL);
}
