/*
 * test_cpp_header.cpp - the C++ wrappers of include/nnparity.hpp, built as C++17 with the
 * project's warnings: shapes and errors, taps with and without a session, the Capture guard
 * (metadata, the close a destructor does, a close that fails), Dump, Rules and Diff over real
 * captures, and injection through formatted names.
 */
#include <cstdarg>
#include <cstddef>
#include <csetjmp>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <csignal>
#include <ftw.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern "C" {
#include <cmocka.h>
}

#include "nnparity.hpp"

namespace {

std::string scratch_root;

int remove_entry(const char *p, const struct stat *, int, struct FTW *) { return std::remove(p); }

void remove_scratch()
{
    if (!scratch_root.empty())
        nftw(scratch_root.c_str(), remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* A path in this program's scratch directory, removed when it ends. */
std::string scratch(const char *name)
{
    if (scratch_root.empty()) {
        char dir[] = "/tmp/nnp-cpp-XXXXXX";
        if (!mkdtemp(dir))
            fail_msg("cannot create a scratch directory");
        scratch_root = dir;
        std::atexit(remove_scratch);
    }
    return scratch_root + "/" + name;
}

bool contains(const std::string &s, const char *part) { return s.find(part) != std::string::npos; }

/* The status of the Error that f throws; NNP_OK when it throws none. */
template <class F> nnp_status thrown(F f, std::string *message = nullptr)
{
    try {
        f();
    } catch (const nnparity::Error &e) {
        if (message)
            *message = e.what();
        return e.status();
    }
    return NNP_OK;
}

void test_shapes(void **)
{
    int rows = 2;
    std::size_t cols = 3;
    nnparity::Shape a = {rows, 3};
    assert_int_equal(a.ndim(), 2);
    assert_int_equal(a[0], 2);
    assert_int_equal(a.elements(), 6);
    nnparity::Shape b = {cols};
    assert_int_equal(b.elements(), 3);
    nnparity::Shape scalar = {};
    assert_int_equal(scalar.ndim(), 0);
    assert_int_equal(scalar.elements(), 1);
    std::vector<int> dims(9, 2); /* past the inline room */
    nnparity::Shape big(dims);
    assert_int_equal(big.ndim(), 9);
    assert_int_equal(big.elements(), 512);
    nnparity::Shape copy(big);
    nnparity::Shape copy2 = a;
    big = nnparity::Shape{1};
    a = nnparity::Shape{7};
    assert_int_equal(copy.elements(), 512); /* copies own their dimensions */
    assert_int_equal(copy2.elements(), 6);
    std::vector<std::uint64_t> v = {4, 5};
    nnparity::Shape view(v);
    assert_true(view.dims() == v.data()); /* a vector of uint64_t is used in place */
    std::string msg;
    assert_int_equal(thrown([] { nnparity::Shape s = {2, -1}; (void)s; }, &msg), NNP_ERR_ARG);
    assert_true(contains(msg, "dimension 1 is negative"));
    nnparity::Shape huge = {UINT64_MAX, std::uint64_t{2}};
    assert_int_equal(thrown([&] { (void)huge.elements(); }), NNP_ERR_ARG);
    static_assert(nnparity::dtype_of<float>::value == NNP_F32, "float");
    static_assert(nnparity::dtype_of<std::int64_t>::value == NNP_I64, "int64");
    static_assert(nnparity::dtype_of<unsigned char>::value == NNP_U8, "uchar");
    static_assert(nnparity::dtype_of<bool>::value == NNP_BOOL, "bool");
}

void test_no_session(void **)
{
    assert_int_equal(nnparity::Capture::active(), 0);
    float x[3] = {1, 2, 3};
    std::string long_name(NNP_TAP_NAME_MAX + 10, 'x');
    /* nothing is formatted, so nothing is refused */
    nnparity::tapf("out0", {3}, x, "%s", long_name.c_str());
    assert_true(nnparity::tap_inputf("in0", {3}, x, "blk.%d", 0));
    nnparity::tap(std::string("layer"), "out0", {3}, x);
    std::vector<float> v(3, 1.0f);
    nnparity::tap("layer", "out0", v);
    nnparity::Capture::set_meta("engine", "nowhere");
    std::string msg;
    assert_int_equal(thrown([] { nnparity::Capture::set_meta("nnparity.format", "x"); }, &msg),
                     NNP_ERR_ARG);
    assert_true(contains(msg, "reserved"));
    /* a vector that does not fill its shape is a mistake with or without a session */
    assert_int_equal(thrown([&] { nnparity::tap("layer", "out0", v, {2, 2}); }, &msg),
                     NNP_ERR_ARG);
    assert_true(contains(msg, "holds 3 elements, its shape 4"));
}

void test_capture_and_dump(void **)
{
    std::string path = scratch("cpp.safetensors");
    {
        nnparity::CaptureOptions o;
        o.expected_records = 8;
        nnparity::Capture session(path, o);
        assert_true(session.is_open());
        assert_int_equal(nnparity::Capture::active(), 1);
        /* one session at a time */
        assert_int_equal(thrown([&] { nnparity::Capture again(path); }), NNP_ERR_ARG);
        nnparity::Capture::set_meta("engine", std::string("cpp test"));
        float x[6] = {1, 2, 3, 4, 5, 6};
        std::int32_t ids[2] = {7, -8};
        for (int layer = 0; layer < 2; layer++) {
            assert_true(nnparity::tap_inputf("in0", {2, 3}, x, "blk.%d.attn_%s", layer, "q"));
            nnparity::tapf("out0", NNP_F32, {2, 3}, x, "blk.%d.attn_%s", layer, "q");
        }
        nnparity::tap("embed", "ids", {2}, ids, "Embedding");
        nnparity::tap("embed", "out0", NNP_F32, {3, 2}, x);
        std::vector<double> d = {0.5, 0.25};
        nnparity::tap("head", "out0", d, {1, 2}, "Linear");
        for (int step = 0; step < 2; step++) /* kept once */
            nnparity::tap_param("head", "weight", {2}, &d[0]);
        std::string msg;
        assert_int_equal(thrown([&] { nnparity::tapf("out0", {6}, x, "%s", std::string(
                                          NNP_TAP_NAME_MAX + 1, 'n').c_str()); }, &msg),
                         NNP_ERR_ARG);
        assert_true(contains(msg, "NNP_TAP_NAME_MAX"));
        assert_int_equal(thrown([&] { nnparity::tap("", "", {6}, x); }), NNP_ERR_ARG);
        /* the destructor finishes the dump */
    }
    assert_int_equal(nnparity::Capture::active(), 0);
    assert_int_equal(nnparity::Capture::last_close_status(), NNP_OK);

    nnparity::Dump dump(path);
    assert_string_equal(dump.format(), "safetensors");
    assert_int_equal(dump.size(), 8);
    std::vector<std::string> names;
    for (const nnp_record &r : dump)
        names.push_back(r.name);
    const char *want[] = {"blk.0.attn_q/in0", "blk.0.attn_q/out0", "blk.1.attn_q/in0",
                          "blk.1.attn_q/out0", "embed/ids", "embed/out0", "head/out0",
                          "head/param:weight"};
    for (std::size_t i = 0; i < names.size(); i++)
        assert_string_equal(names[i].c_str(), want[i]);
    assert_string_equal(dump.meta("engine"), "cpp test");
    assert_null(dump.meta("absent"));
    bool listed = false;
    for (const auto &kv : dump.metadata())
        listed = listed || (kv.first == "engine" && kv.second == "cpp test");
    assert_true(listed);

    const nnp_record *ids = dump.find("embed/ids");
    assert_non_null(ids);
    assert_string_equal(ids->module_type, "Embedding");
    assert_int_equal(ids->dtype, NNP_I32);
    std::size_t idx = static_cast<std::size_t>(dump.index_of("embed/ids"));
    assert_int_equal(dump.data_as<std::int32_t>(idx)[1], -8);
    assert_int_equal(thrown([&] { dump.data_as<float>(idx); }), NNP_ERR_ARG);
    assert_true(dump.data_as<double>(6)[1] == 0.25);
    assert_true(dump.shape(5) == (std::vector<std::uint64_t>{3, 2}));
    assert_null(dump.find("nothing"));
    bool out_of_range = false;
    try {
        dump.record(8);
    } catch (const std::out_of_range &) {
        out_of_range = true;
    }
    assert_true(out_of_range);

    nnparity::Dump moved(std::move(dump));
    assert_int_equal(moved.size(), 8);
    assert_int_equal(dump.size(), 0); /* the moved-from dump holds nothing */
    std::string msg;
    assert_int_equal(thrown([] { nnparity::Dump none("/nonexistent/x.safetensors"); }, &msg),
                     NNP_ERR_IO);
    assert_true(contains(msg, "/nonexistent/x.safetensors"));
}

void test_explicit_close_and_moves(void **)
{
    std::string path = scratch("moved.safetensors");
    nnparity::Capture outer = [&] {
        nnparity::Capture c(path);
        return c; /* moved out: the inner guard closes nothing */
    }();
    assert_true(outer.is_open());
    assert_int_equal(nnparity::Capture::active(), 1);
    float x = 1;
    nnparity::tap("a", "out0", {1}, &x);
    outer.close();
    assert_false(outer.is_open());
    assert_int_equal(outer.try_close(), NNP_OK); /* closing twice does nothing */
    nnparity::Dump d(path);
    assert_int_equal(d.size(), 1);

    /* with C options, injecting only */
    nnp_capture_options o;
    nnp_capture_options_init(&o);
    o.inject_path = path.c_str();
    nnparity::Capture inject(nullptr, o);
    assert_int_equal(nnparity::Capture::active(), 2);
    float y = 0;
    assert_true(nnparity::tap_input("a", "out0", {1}, &y));
    assert_true(y == 1);
    assert_false(nnparity::tap_input("b", "out0", {1}, &y)); /* the reference has no b */
}

/* A capture that cannot write: the tap throws, and the guard's destructor leaves the failed
 * close for last_close_status(). */
void test_failed_close(void **)
{
    std::string path = scratch("full.safetensors");
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        std::signal(SIGXFSZ, SIG_IGN);
        struct rlimit lim = {1 << 20, 1 << 20};
        if (setrlimit(RLIMIT_FSIZE, &lim) != 0)
            _exit(10);
        static float x[16384];
        nnp_status st = NNP_OK;
        try {
            nnparity::Capture session(path);
            for (;;)
                nnparity::tapf("out0", {16384}, x, "layer.%d", 0);
        } catch (const nnparity::Error &e) {
            st = e.status();
        }
        if (st != NNP_ERR_IO)
            _exit(11);
        if (nnparity::Capture::last_close_status() != NNP_ERR_IO ||
            !contains(nnparity::Capture::last_close_error(), ".partial"))
            _exit(12);
        _exit(0);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

void test_rules_and_diff(void **)
{
    std::string ref = scratch("ref.safetensors"), port = scratch("port.safetensors");
    for (int side = 0; side < 2; side++) {
        nnparity::Capture session(side ? port : ref);
        float x[4] = {1, 2, 3, 4};
        for (int layer = 0; layer < 3; layer++) {
            if (side && layer == 1)
                x[2] += 0.5f; /* the port goes wrong in layer 1 */
            if (side)
                nnparity::tapf("out0", {4}, x, "port.%d", layer);
            else
                nnparity::tapf("out0", {4}, x, "model.layers.%d", layer);
        }
        session.close();
    }
    nnparity::Rules none;
    assert_false(static_cast<bool>(none));
    assert_string_equal(none.map("x").c_str(), "x");
    nnparity::Rules rules = nnparity::Rules::parse("rename ^port\\. model.layers.\n"
                                                   "ignore ^scratch/\n", "test.rules");
    assert_true(static_cast<bool>(rules));
    bool ignored = true;
    assert_string_equal(rules.map("port.2/out0", &ignored).c_str(), "model.layers.2/out0");
    assert_false(ignored);
    rules.map("scratch/x", &ignored);
    assert_true(ignored);
    std::string msg;
    assert_int_equal(thrown([] { nnparity::Rules::parse("frobnicate x\n", "bad.rules"); }, &msg),
                     NNP_ERR_FORMAT);
    assert_true(contains(msg, "bad.rules"));

    auto dumps = nnparity::Dump::open_both(ref, port);
    nnparity::Diff diff(dumps.first, dumps.second, rules);
    assert_int_equal(diff.size(), 3);
    assert_false(diff.agrees());
    assert_int_equal(diff.first_divergence(), 1);
    const nnp_diff_pair &p = diff[1];
    assert_string_equal(dumps.first[p.ref].name, "model.layers.1/out0");
    assert_string_equal(dumps.second[p.port].name, "port.1/out0");
    assert_int_equal(p.verdict, NNP_FAIL);
    std::size_t failing = 0;
    for (const nnp_diff_pair &q : diff)
        failing += q.verdict == NNP_FAIL;
    assert_int_equal(failing, 2);
    assert_true(diff.unmatched_ref().empty());
    assert_true(diff.unmatched_port().empty());
    assert_int_equal(diff.order_violation(), -1);

    /* the same dump against itself agrees; options in the C struct */
    nnp_diff_options o = nnparity::diff_options();
    o.threads = 1;
    nnparity::Diff same(dumps.first, dumps.first, o);
    assert_true(same.agrees());
    nnparity::Diff moved(std::move(same));
    assert_int_equal(moved.size(), 3);
    assert_int_equal(same.size(), 0);
}

} // namespace

int main()
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shapes),
        cmocka_unit_test(test_no_session),
        cmocka_unit_test(test_capture_and_dump),
        cmocka_unit_test(test_explicit_close_and_moves),
        cmocka_unit_test(test_failed_close),
        cmocka_unit_test(test_rules_and_diff),
    };
    return cmocka_run_group_tests_name("cpp_header", tests, nullptr, nullptr);
}
