/*
 * test_abi.c - what keeps the API lasting: options that carry their own size (refused when
 * never initialized, a shorter or longer layout taken as far as both know it), the version
 * number, nnp_free for what the library hands over, the struct layouts a binding checks, and
 * the diff's accessors on a real diff and on none.
 */
#include <math.h>
#include <string.h>

#include "testutil.h"

static void test_options_need_their_size(void **state)
{
    (void)state;
    double r[2] = {1, 2}, p[2] = {1, 2.5};
    nnp_metrics m;
    nnp_compare_options o = {0};
    o.atol = 1;
    assert_int_equal(nnp_compare(NNP_F64, r, NNP_F64, p, 2, &o, &m), NNP_ERR_ARG);
    assert_non_null(strstr(nnp_last_error(), "nnp_compare: the options' size is 0"));
    assert_non_null(strstr(nnp_last_error(), "_init"));
    /* initialized: the defaults compare exactly */
    nnp_compare_options_init(&o);
    assert_int_equal(o.size, sizeof o);
    assert_int_equal(nnp_compare(NNP_F64, r, NNP_F64, p, 2, &o, &m), NNP_OK);
    assert_int_equal(m.allclose_fail, 1);
    for (size_t k = 0; k < sizeof m.reserved / sizeof *m.reserved; k++)
        assert_true(m.reserved[k] == 0);
}

static void test_options_of_another_layout(void **state)
{
    (void)state;
    double r[2] = {1, 2}, p[2] = {1, 2.5};
    nnp_metrics m;
    /* an older caller that knew only size and atol: rtol and threads keep their defaults */
    nnp_compare_options o;
    nnp_compare_options_init(&o);
    o.atol = 1;
    o.rtol = 1e9; /* past the size given: not read */
    o.size = offsetof(nnp_compare_options, rtol);
    assert_int_equal(nnp_compare(NNP_F64, r, NNP_F64, p, 2, &o, &m), NNP_OK);
    assert_int_equal(m.allclose_fail, 0);
    o.atol = 0.1;
    assert_int_equal(nnp_compare(NNP_F64, r, NNP_F64, p, 2, &o, &m), NNP_OK);
    assert_int_equal(m.allclose_fail, 1); /* rtol stayed 0, not 1e9 */
    /* a newer caller whose options are longer than this library's: the known part is read */
    struct {
        nnp_compare_options known;
        double added_later;
    } newer = {.known = {.size = sizeof newer, .atol = 1}, .added_later = 5};
    assert_int_equal(nnp_compare(NNP_F64, r, NNP_F64, p, 2, &newer.known, &m), NNP_OK);
    assert_int_equal(m.allclose_fail, 0);
}

static void test_every_options_init(void **state)
{
    (void)state;
    nnp_diff_options d;
    memset(&d, 0xff, sizeof d);
    nnp_diff_options_init(&d);
    assert_int_equal(d.size, sizeof d);
    assert_true(d.atol == -1 && d.rtol == -1 && d.threads == 0 && !d.no_align && !d.no_explain);
    assert_null(d.rules);
    assert_null(d.progress);
    nnp_capture_options c;
    memset(&c, 0xff, sizeof c);
    nnp_capture_options_init(&c);
    assert_int_equal(c.size, sizeof c);
    assert_null(c.inject_path);
    assert_true(c.expected_records == 0 && c.rank == 0 && c.world_size == 0);
    nnp_relevance_options v;
    memset(&v, 0xff, sizeof v);
    nnp_relevance_options_init(&v);
    assert_int_equal(v.size, sizeof v);
    assert_true(v.method == NNP_REL_ROLLOUT && v.fusion == NNP_FUSION_MEAN && v.discard == 0);
    /* a capture refuses options never initialized, and opens nothing */
    nnp_capture_options bad = {0};
    assert_int_equal(nnp_capture_open(NULL, &bad), NNP_ERR_ARG);
    assert_non_null(strstr(nnp_last_error(), "nnp_capture_open: the options' size is 0"));
    assert_int_equal(nnp_capture_active(), 0);
}

static void test_version_free_and_layouts(void **state)
{
    (void)state;
    assert_int_equal(nnp_version_number(), NNP_VERSION_NUMBER);
    assert_int_equal(NNP_VERSION_NUMBER,
                     NNP_VERSION_MAJOR * 10000 + NNP_VERSION_MINOR * 100 + NNP_VERSION_PATCH);
    char want[32];
    snprintf(want, sizeof want, "%d.%d.%d", NNP_VERSION_MAJOR, NNP_VERSION_MINOR,
             NNP_VERSION_PATCH);
    assert_string_equal(nnp_version(), want);
    nnp_free(NULL);
    char *mapped;
    bool ignored;
    assert_int_equal(nnp_rules_map(NULL, "a/out0", &mapped, &ignored), NNP_OK);
    assert_string_equal(mapped, "a/out0");
    nnp_free(mapped); /* under ASan, a mismatched release would be reported */
    size_t v;
    assert_true(nnp_struct_layout("nnp_record", NULL, &v));
    assert_int_equal(v, sizeof(nnp_record));
    assert_true(nnp_struct_layout("nnp_record", "shape", &v));
    assert_int_equal(v, offsetof(nnp_record, shape));
    assert_true(nnp_struct_layout("nnp_capture_options", "size", &v));
    assert_int_equal(v, 0);
    assert_true(nnp_struct_layout("nnp_diff_options", NULL, &v));
    assert_int_equal(v, sizeof(nnp_diff_options));
    /* the diff's result, as a binding reads it without the accessors' C types */
    assert_true(nnp_struct_layout("nnp_diff_pair", NULL, &v));
    assert_int_equal(v, sizeof(nnp_diff_pair));
    assert_true(nnp_struct_layout("nnp_diff_pair", "confidence", &v));
    assert_int_equal(v, offsetof(nnp_diff_pair, confidence));
    assert_true(nnp_struct_layout("nnp_metrics", "pcc", &v));
    assert_int_equal(v, offsetof(nnp_metrics, pcc));
    assert_true(nnp_struct_layout("nnp_profile", "where", &v));
    assert_int_equal(v, offsetof(nnp_profile, where));
    assert_true(nnp_struct_layout("nnp_axis_profile", "fail", &v));
    assert_int_equal(v, offsetof(nnp_axis_profile, fail));
    assert_true(nnp_struct_layout("nnp_hint", "text", &v));
    assert_int_equal(v, offsetof(nnp_hint, text));
    assert_true(nnp_struct_layout("nnp_culprit", "before", &v));
    assert_int_equal(v, offsetof(nnp_culprit, before));
    assert_true(nnp_struct_layout("nnp_collision", "name", &v));
    assert_int_equal(v, offsetof(nnp_collision, name));
    assert_true(nnp_struct_layout("nnp_diff_options", "no_explain", &v));
    assert_int_equal(v, offsetof(nnp_diff_options, no_explain));
    assert_false(nnp_struct_layout("nnp_record", "no_such_field", &v));
    assert_false(nnp_struct_layout("nnp_nothing", NULL, &v));
}

static void test_diff_accessors(void **state)
{
    (void)state;
    /* no diff at all: nothing, and no crash */
    assert_int_equal(nnp_diff_pair_count(NULL), 0);
    assert_null(nnp_diff_pair_at(NULL, 0));
    assert_int_equal(nnp_diff_unmatched_ref_count(NULL), 0);
    assert_int_equal(nnp_diff_unmatched_ref_at(NULL, 0), SIZE_MAX);
    assert_int_equal(nnp_diff_first_divergence(NULL), -1);
    /* a real one: "a" agrees, "b" differs, the reference's "c" has no partner */
    char dir[] = "/tmp/nnp_abi_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char ref[64], port[64];
    snprintf(ref, sizeof ref, "%s/ref.safetensors", dir);
    snprintf(port, sizeof port, "%s/port.safetensors", dir);
    uint64_t shape[1] = {2};
    float one[2] = {1, 2}, other[2] = {1, 3};
    nnp_writer *w;
    assert_int_equal(nnp_writer_open(ref, 0, &w), NNP_OK);
    nnp_record_desc d = {.name = "a", .dtype = NNP_F32, .ndim = 1, .shape = shape};
    assert_int_equal(nnp_writer_add(w, &d, one), NNP_OK);
    d.name = "b";
    assert_int_equal(nnp_writer_add(w, &d, one), NNP_OK);
    d.name = "c";
    assert_int_equal(nnp_writer_add(w, &d, one), NNP_OK);
    assert_int_equal(nnp_writer_close(w), NNP_OK);
    assert_int_equal(nnp_writer_open(port, 0, &w), NNP_OK);
    d.name = "a";
    assert_int_equal(nnp_writer_add(w, &d, one), NNP_OK);
    d.name = "b";
    assert_int_equal(nnp_writer_add(w, &d, other), NNP_OK);
    assert_int_equal(nnp_writer_close(w), NNP_OK);
    nnp_dump *r, *p;
    assert_int_equal(nnp_dump_open_both(ref, port, &r, &p), NNP_OK);
    nnp_diff_options o;
    nnp_diff_options_init(&o);
    o.no_align = true;
    nnp_diff *diff;
    assert_int_equal(nnp_diff_dumps(r, p, &o, &diff), NNP_OK);
    assert_int_equal(nnp_diff_pair_count(diff), 2);
    assert_int_equal(nnp_diff_pair_at(diff, 0)->verdict, NNP_PASS);
    assert_int_equal(nnp_diff_pair_at(diff, 1)->verdict, NNP_FAIL);
    assert_null(nnp_diff_pair_at(diff, 2));
    assert_int_equal(nnp_diff_first_divergence(diff), 1);
    assert_int_equal(nnp_diff_order_violation(diff), -1);
    assert_int_equal(nnp_diff_unmatched_ref_count(diff), 1);
    assert_string_equal(nnp_dump_record(r, nnp_diff_unmatched_ref_at(diff, 0))->name, "c");
    assert_int_equal(nnp_diff_unmatched_ref_at(diff, 1), SIZE_MAX);
    assert_int_equal(nnp_diff_unmatched_port_count(diff), 0);
    assert_int_equal(nnp_diff_collision_count(diff), 0);
    assert_null(nnp_diff_collision_at(diff, 0));
    assert_int_equal(nnp_diff_aligned_count(diff), 0);
    /* where the failing pair's error lies, and no profile or hint for the one that agrees */
    assert_null(nnp_diff_profile(diff, 0));
    assert_int_equal(nnp_diff_hint_count(diff, 0), 0);
    const nnp_profile *pr = nnp_diff_profile(diff, 1);
    assert_non_null(pr);
    assert_int_equal(pr->ndim, 1);
    assert_int_equal(pr->fail, 1);
    assert_false(pr->sampled);
    assert_string_equal(pr->where, "the one failing element lies in axis 0 index 1");
    assert_int_equal(pr->axes[0].fail[1], 1);
    assert_true(pr->axes[0].sq_share[1] == 1 && pr->axes[0].sq_share[0] == 0);
    assert_null(nnp_diff_profile(diff, 2));
    assert_null(nnp_diff_hint_at(diff, 1, nnp_diff_hint_count(diff, 1)));
    assert_null(nnp_diff_profile(NULL, 0));
    assert_int_equal(nnp_diff_hint_count(NULL, 0), 0);
    assert_string_equal(nnp_hint_kind_name(NNP_HINT_SCALE), "scale");
    assert_string_equal(nnp_hint_kind_name(NNP_HINT_OTHER_RECORD), "other-record");
    assert_string_equal(nnp_hint_kind_name((nnp_hint_kind)99), "?");
    nnp_diff_free(diff);
    /* without them the diff reads each pair once */
    o.no_explain = true;
    assert_int_equal(nnp_diff_dumps(r, p, &o, &diff), NNP_OK);
    assert_null(nnp_diff_profile(diff, 1));
    assert_int_equal(nnp_diff_hint_count(diff, 1), 0);
    nnp_diff_free(diff);
    o.no_explain = false;
    /* a diff refuses options never initialized */
    nnp_diff_options bad = {0};
    assert_int_equal(nnp_diff_dumps(r, p, &bad, &diff), NNP_ERR_ARG);
    assert_null(diff);
    nnp_dump_close(r);
    nnp_dump_close(p);
    remove(ref);
    remove(port);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_options_need_their_size),
        cmocka_unit_test(test_options_of_another_layout),
        cmocka_unit_test(test_every_options_init),
        cmocka_unit_test(test_version_free_and_layouts),
        cmocka_unit_test(test_diff_accessors),
    };
    return cmocka_run_group_tests_name("abi", tests, NULL, NULL);
}
