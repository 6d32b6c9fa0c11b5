/*
 * test_rules.c - the rule language: renames with groups applied in order, ignores, comments,
 * and errors that name the file, line and column.
 */
#include "internal.h"
#include "testutil.h"

static char *map(const nnp_rules *r, const char *name, bool *ignored)
{
    char *out = NULL;
    assert_int_equal(nnp_rules_map(r, name, &out, ignored), NNP_OK);
    return out;
}

static void expect_map(const nnp_rules *r, const char *name, const char *want)
{
    bool ignored;
    char *got = map(r, name, &ignored);
    assert_false(ignored);
    assert_string_equal(got, want);
    free(got);
}

static void test_renames_in_order(void **state)
{
    (void)state;
    nnp_rules *r;
    const char *text =
        "# GGUF-style names onto torchvision's\n"
        "rename ^blk\\.([0-9]+)\\.attn_q  encoder.layers.\\1.self_attention.q   # groups\n"
        "\n"
        "rename ^model\\.layers\\.  layers.\n"
        "rename (gamma)_([0-9]) ls\\2\n"
        "rename ^layers\\.  model.layers.\n"
        "ignore /grad_\n"
        "rename ^x$ [\\0]\n";
    assert_int_equal(nnp_rules_parse(text, "t.rules", &r), NNP_OK);
    expect_map(r, "blk.11.attn_q/out0", "encoder.layers.11.self_attention.q/out0");
    /* each rule sees the result of the ones before: model.layers -> layers -> model.layers */
    expect_map(r, "model.layers.3.mlp", "model.layers.3.mlp");
    expect_map(r, "blocks.2.gamma_1", "blocks.2.ls1");
    expect_map(r, "x", "[x]");
    expect_map(r, "unrelated", "unrelated");
    bool ignored;
    char *out = map(r, "blocks.0/grad_out0", &ignored);
    assert_true(ignored);
    free(out);
    nnp_rules_free(r);
    /* no rules: identity */
    expect_map(NULL, "a/b", "a/b");
    assert_int_equal(nnp_rules_parse("", "empty", &r), NNP_OK);
    expect_map(r, "a", "a");
    nnp_rules_free(r);
}

static void expect_parse_error(const char *text, const char *want1, const char *want2)
{
    nnp_rules *r = (nnp_rules *)1;
    assert_int_equal(nnp_rules_parse(text, "bad.rules", &r), NNP_ERR_FORMAT);
    assert_null(r);
    if (!strstr(nnp_last_error(), want1) || !strstr(nnp_last_error(), want2))
        fail_msg("'%s' lacks '%s' or '%s'", nnp_last_error(), want1, want2);
}

static void test_errors_name_line_and_column(void **state)
{
    (void)state;
    expect_parse_error("rename a b\n  transmogrify x y\n", "bad.rules: line 2, column 3",
                       "unknown rule 'transmogrify'");
    expect_parse_error("ignore (open\n", "line 1, column 8", "bad regex '(open'");
    expect_parse_error("rename x\n", "line 1, column 9", "needs a regex and a replacement");
    expect_parse_error("ignore\n", "line 1", "needs a regex");
    expect_parse_error("rename a b c\n", "line 1, column 12", "unexpected 'c'");
    expect_parse_error("rename (a) \\2\n", "line 1, column 12", "\\2 refers to a group");
}

/* Each split makes one record per label of every record before it: three splits of eight
 * labels make 512 records of one name, a fourth would make 4096 and is refused at its line,
 * where twelve used to ask for 8^12 records (and the memory for them). */
static void test_splits_cannot_multiply_without_bound(void **state)
{
    (void)state;
    const char *line = "split (w|a|b|c|d|e|f|g) 0 w a b c d e f g\n";
    char text[1024] = "";
    for (int i = 0; i < 12; i++)
        strcat(text, line);
    nnp_rules *r;
    nnp_mapping *m;
    size_t n;
    assert_int_equal(nnp_rules_parse(text + 9 * strlen(line), "three.rules", &r), NNP_OK);
    assert_int_equal(nnp__rules_apply(r, "w", &m, &n), NNP_OK);
    assert_int_equal(n, 512);
    nnp__mappings_free(m, n);
    nnp_rules_free(r);
    assert_int_equal(nnp_rules_parse(text, "twelve.rules", &r), NNP_OK);
    assert_int_equal(nnp__rules_apply(r, "w", &m, &n), NNP_ERR_FORMAT);
    assert_null(m);
    assert_string_equal(nnp_last_error(), "twelve.rules: line 4: the rules make 'w' into 4096 "
                        "records, more than 1024 (each split multiplies the records the rules "
                        "before it made, each alias doubles them)");
    /* a name the splits do not match is untouched */
    assert_int_equal(nnp__rules_apply(r, "zz", &m, &n), NNP_OK);
    assert_int_equal(n, 1);
    nnp__mappings_free(m, n);
    nnp_rules_free(r);
}

static void test_load_file(void **state)
{
    (void)state;
    char p[512];
    nnp_rules *r;
    assert_int_equal(nnp_rules_load("/nonexistent.rules", &r), NNP_ERR_IO);
    scratch(p, sizeof p, "f.rules");
    write_bytes(p, "rename ^a b\n", 12);
    assert_int_equal(nnp_rules_load(p, &r), NNP_OK);
    expect_map(r, "abc", "bbc");
    nnp_rules_free(r);
    write_bytes(p, "rename ^a b\0\n", 13);
    assert_int_equal(nnp_rules_load(p, &r), NNP_ERR_FORMAT);
    assert_non_null(strstr(nnp_last_error(), "not a text file"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_renames_in_order),
        cmocka_unit_test(test_errors_name_line_and_column),
        cmocka_unit_test(test_splits_cannot_multiply_without_bound),
        cmocka_unit_test(test_load_file),
    };
    return cmocka_run_group_tests_name("rules", tests, NULL, NULL);
}
