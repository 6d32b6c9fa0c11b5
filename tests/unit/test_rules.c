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

/* Alternatives match leftmost-longest, as POSIX regexes do: the longest of the matches that start
 * leftmost wins, whichever alternative is written first, and the groups are those of that match. */
static void test_alternation_is_leftmost_longest(void **state)
{
    (void)state;
    nnp_rules *r;
    const char *text =
        "rename ^blk\\.([0-9]+)\\.(attn|attn_q)  L\\1[\\2]\n"
        "rename ^x(a|ab)(c|bcd)  y<\\1,\\2>\n"
        "rename ^p(a*)(ab)?  q<\\1,\\2>\n"
        "rename [.]w$  .weight\n";
    assert_int_equal(nnp_rules_parse(text, "t.rules", &r), NNP_OK);
    expect_map(r, "blk.1.attn_q/out0", "L1[attn_q]/out0");
    expect_map(r, "blk.1.attn/out0", "L1[attn]/out0");
    expect_map(r, "blk.12.attn_k", "L12[attn]_k");
    expect_map(r, "xabcd/z", "y<a,bcd>/z");
    expect_map(r, "paab", "q<a,ab>");
    expect_map(r, "pa", "q<a,>");
    expect_map(r, "m.w", "m.weight");
    expect_map(r, "mxw", "mxw");
    nnp_rules_free(r);
}

/* Patterns that backtrack without end on a name they almost match stop at a limit, with an
 * error that names the rule, its regex and the limit, in bounded time; back-references are
 * refused when the rules are read. */
static void expect_limit(const char *text, const char *name)
{
    nnp_rules *r;
    assert_int_equal(nnp_rules_parse(text, "slow.rules", &r), NNP_OK);
    char *out = NULL;
    bool ignored;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(nnp_rules_map(r, name, &out, &ignored), NNP_ERR_FORMAT);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    assert_null(out);
    const char *e = nnp_last_error();
    if (!strstr(e, "slow.rules: line 1: regex '") || !strstr(e, "limit"))
        fail_msg("'%s' does not name the rule and the limit", e);
    double s = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    if (s > 5)
        fail_msg("'%s' took %.1f s", text, s);
    nnp_rules_free(r);
}

static void test_pathological_patterns_stop_at_a_limit(void **state)
{
    (void)state;
    char name[4096 + 2];
    memset(name, 'a', 4096);
    name[4096] = 'b';
    name[4097] = 0;
    char shorter[64];
    memset(shorter, 'a', 40);
    strcpy(shorter + 40, "!");
    expect_limit("ignore (a+)+$\n", name);
    expect_limit("ignore (a+)+$\n", shorter);
    expect_limit("rename (a|aa)+$ x\n", shorter);
    expect_limit("rename (a|a?)+$ x\n", shorter);
    expect_limit("transpose ((a|b|ab)*)*c$\n", "ababababababababababababababababababababc!");
    expect_limit("ignore (.*a){12}$\n", shorter);
    /* back-references, which the C library's regexes overflowed the stack or ran for minutes on */
    expect_parse_error("ignore (a*)*\\1\n", "line 1, column 8", "back-references");
    expect_parse_error("ignore ^(a|b)\\1$\n", "line 1", "back-references");
    expect_parse_error("ignore (?C1)a\n", "line 1", "callouts");
}

/* A file of more rules than a rules file may hold is refused at the line past the cap. */
static void test_rule_count_is_capped(void **state)
{
    (void)state;
    size_t n = 100001;
    char *text = malloc(n * 9 + 1), *p = text;
    assert_non_null(text);
    for (size_t i = 0; i < n; i++)
        p += sprintf(p, "ignore x\n");
    nnp_rules *r = (nnp_rules *)1;
    assert_int_equal(nnp_rules_parse(text, "many.rules", &r), NNP_ERR_FORMAT);
    assert_null(r);
    assert_non_null(strstr(nnp_last_error(), "many.rules: line 100001: more than 100000 rules"));
    text[(n - 1) * 9] = 0;
    assert_int_equal(nnp_rules_parse(text, "many.rules", &r), NNP_OK);
    nnp_rules_free(r);
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_renames_in_order),
        cmocka_unit_test(test_errors_name_line_and_column),
        cmocka_unit_test(test_splits_cannot_multiply_without_bound),
        cmocka_unit_test(test_load_file),
        cmocka_unit_test(test_alternation_is_leftmost_longest),
        cmocka_unit_test(test_pathological_patterns_stop_at_a_limit),
        cmocka_unit_test(test_rule_count_is_capped),
    };
    return cmocka_run_group_tests_name("rules", tests, NULL, NULL);
}
