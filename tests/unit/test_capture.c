/*
 * test_capture.c - the capture session: records and call indices, many threads tapping at once,
 * injection (dtype conversion, rules, shape mismatch, missing records), sessions from the
 * environment, a child killed with SIGKILL mid-capture (every completed record recovered byte
 * for byte), a file-size limit standing in for a full disk, tap names formatted by the library
 * (and refused past their limit) and the dump's metadata set from a capture.
 */
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "testutil.h"
#include "internal.h"

static bool exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0;
}

static nnp_dump *open_ok(const char *path)
{
    nnp_dump *d = NULL;
    if (nnp_dump_open(path, &d))
        fail_msg("%s", nnp_last_error());
    return d;
}

/* The deterministic content of record k in the multi-record tests. */
static void fill(float *x, size_t n, unsigned k)
{
    for (size_t i = 0; i < n; i++)
        x[i] = (float)k * 1000.0f + (float)i;
}

/* Run body in a child whose environment names `path` as the capture, and check that the child
 * exited with 0 (body true); exit() runs the library's handler that closes the session. */
static void in_env_child(const char *path, bool (*body)(void))
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        setenv("NNPARITY_CAPTURE", path, 1);
        exit(body() ? 0 : 1);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

static nnp_status tap_two(const char *name)
{
    float x[2] = {1, 2};
    uint64_t two = 2;
    return nnp_tap(name, "out0", NNP_F32, 1, &two, x);
}

static bool taps_layer_twice(void)
{
    return nnp_capture_active() == 1 && tap_two("layer") == NNP_OK && tap_two("layer") == NNP_OK;
}

/* Runs first, before this process taps anything: the environment opens a session in a child,
 * which finishes the dump when it exits. */
static void test_session_from_environment(void **state)
{
    (void)state;
    char p[512];
    scratch(p, sizeof p, "env.safetensors");
    in_env_child(p, taps_layer_twice);
    nnp_dump *d = open_ok(p);
    assert_int_equal(nnp_dump_count(d), 2);
    assert_string_equal(nnp_dump_record(d, 1)->name, "layer/out0#1");
    nnp_dump_close(d);
}

/* Taps, forks a child that taps and closes the session as the atexit handler it inherited
 * does, then taps again and closes. The child leaves with _exit(): a sanitizer's leak check at
 * exit() locks its allocator, whose lock the parent's other thread (the writer's helper) may
 * have held at the fork, and would then wait for ever. */
static bool taps_around_a_fork(void)
{
    bool ok = tap_two("before") == NNP_OK;
    pid_t child = fork();
    if (child == 0) {
        bool quiet = nnp_capture_active() == 0 && tap_two("child") == NNP_OK;
        nnp_capture_close(); /* what exit() runs: close_at_exit */
        _exit(quiet ? 0 : 1);
    }
    int status;
    ok = ok && child > 0 && waitpid(child, &status, 0) == child && WIFEXITED(status) &&
         WEXITSTATUS(status) == 0;
    /* closed here rather than by exit(), so that its status is seen: a child that finished
     * the dump under it would make it fail ("cannot rename") */
    return ok && tap_two("after") == NNP_OK && nnp_capture_close() == NNP_OK;
}

/* A process that forks while its environment session is open, and whose child taps and closes
 * the session it inherited: the child's taps record nothing and its close does not finish the
 * parent's dump, which gets the parent's records and only those. In a child, as the test above. */
static void test_a_forked_child_leaves_the_session_alone(void **state)
{
    (void)state;
    char p[512];
    scratch(p, sizeof p, "forked.safetensors");
    in_env_child(p, taps_around_a_fork);
    nnp_dump *d = open_ok(p);
    assert_int_equal(nnp_dump_count(d), 2);
    assert_string_equal(nnp_dump_record(d, 0)->name, "before/out0");
    assert_string_equal(nnp_dump_record(d, 1)->name, "after/out0");
    nnp_dump_close(d);
}

/* In a child, so this process's one-time look at the environment stays unspent: an explicit
 * session takes the environment's place instead of clashing with it. */
static void test_explicit_session_overrides_environment(void **state)
{
    (void)state;
    char env_path[512], own[512];
    scratch(env_path, sizeof env_path, "from-env.safetensors");
    scratch(own, sizeof own, "explicit.safetensors");
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        setenv("NNPARITY_CAPTURE", env_path, 1);
        float x = 1;
        uint64_t one = 1;
        int ok = nnp_capture_open(own, NULL) == NNP_OK &&
                 nnp_tap("a", "out0", NNP_F32, 1, &one, &x) == NNP_OK &&
                 nnp_capture_close() == NNP_OK && nnp_capture_active() == 0;
        _exit(ok ? 0 : 1);
    }
    int status;
    waitpid(pid, &status, 0);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_true(exists(own));
    assert_false(exists(env_path));
}

static void test_no_session_is_a_no_op(void **state)
{
    (void)state;
    assert_int_equal(nnp_capture_active(), 0);
    float x = 1;
    uint64_t one = 1;
    assert_int_equal(nnp_tap("a", "out0", NNP_F32, 1, &one, &x), NNP_OK);
    assert_int_equal(nnp_tap_input("a", "in0", NNP_F32, 1, &one, &x), NNP_OK);
    assert_true(x == 1);
    assert_int_equal(nnp_capture_close(), NNP_OK);
}

/* A layer's weights are tapped as it runs, step after step; the capture keeps the first. */
static void test_parameters_are_recorded_once(void **state)
{
    (void)state;
    char p[512];
    scratch(p, sizeof p, "params.safetensors");
    float w[4] = {1, 2, 3, 4}, x[2] = {5, 6};
    uint64_t four = 4, two = 2;
    assert_int_equal(nnp_tap_param("blk.0.ffn_up", "weight", NNP_F32, 1, &four, w), NNP_OK);
    assert_int_equal(nnp_capture_open(p, NULL), NNP_OK);
    for (int step = 0; step < 3; step++) {
        w[0] = (float)step; /* what a later step holds is not what the layer started with */
        assert_int_equal(nnp_tap_param("blk.0.ffn_up", "weight", NNP_F32, 1, &four, w), NNP_OK);
        assert_int_equal(nnp_tap("blk.0.ffn_up", "out0", NNP_F32, 1, &two, x), NNP_OK);
    }
    assert_int_equal(nnp_tap_param("blk.0.ffn_up", "", NNP_F32, 1, &four, w), NNP_ERR_ARG);
    assert_int_equal(nnp_tap_param("blk.0.ffn_up", NULL, NNP_F32, 1, &four, w), NNP_ERR_ARG);
    assert_int_equal(nnp_tap_param("blk.0.ffn_up", "bias", NNP_F32, 1, &four, NULL),
                     NNP_ERR_ARG);
    assert_int_equal(nnp_capture_close(), NNP_OK);
    nnp_dump *d = open_ok(p);
    assert_int_equal(nnp_dump_count(d), 4);
    const nnp_record *r = nnp_dump_record(d, 0);
    assert_string_equal(r->name, "blk.0.ffn_up/param:weight");
    assert_string_equal(r->role, "param:weight");
    const float *v;
    assert_int_equal(nnp_dump_data(d, 0, (const void **)&v), NNP_OK);
    assert_true(v[0] == 0 && v[3] == 4);
    assert_string_equal(nnp_dump_record(d, 3)->name, "blk.0.ffn_up/out0#2");
    nnp_dump_close(d);
}

static void test_records_and_call_indices(void **state)
{
    (void)state;
    char p[512];
    scratch(p, sizeof p, "calls.safetensors");
    assert_int_equal(nnp_capture_open(p, NULL), NNP_OK);
    assert_int_equal(nnp_capture_active(), 1);
    assert_int_equal(nnp_capture_open(p, NULL), NNP_ERR_ARG); /* one session at a time */
    float x[3] = {1, 2, 3};
    uint64_t three = 3;
    nnp_tap_desc d = {"enc.0.mlp", "in0", "MLP", NNP_F32, 1, &three};
    assert_int_equal(nnp_tap_input(d.name, d.role, d.dtype, d.ndim, d.shape, x), NNP_OK);
    assert_int_equal(nnp_tap_record(&d, x), NNP_OK);
    d.role = "out0";
    assert_int_equal(nnp_tap_record(&d, x), NNP_OK);
    nnp_tap_desc bad = {"x", "", NULL, NNP_F32, 1, &three};
    assert_int_equal(nnp_tap_record(&bad, x), NNP_ERR_ARG);
    assert_int_equal(nnp_capture_close(), NNP_OK);
    assert_int_equal(nnp_capture_active(), 0);

    nnp_dump *dump = open_ok(p);
    assert_int_equal(nnp_dump_count(dump), 3);
    const char *names[] = {"enc.0.mlp/in0", "enc.0.mlp/in0#1", "enc.0.mlp/out0"};
    const uint64_t calls[] = {0, 1, 0};
    for (int i = 0; i < 3; i++) {
        const nnp_record *r = nnp_dump_record(dump, (size_t)i);
        assert_string_equal(r->name, names[i]);
        assert_int_equal(r->call, calls[i]);
        assert_string_equal(r->module, "enc.0.mlp");
    }
    assert_string_equal(nnp_dump_record(dump, 0)->module_type, "");
    assert_string_equal(nnp_dump_record(dump, 1)->module_type, "MLP");
    nnp_dump_close(dump);
}

typedef struct {
    int thread;
} worker_arg;

enum { THREADS = 4, TAPS = 300, ELEMS = 64 };

static void *tap_worker(void *arg)
{
    int t = ((worker_arg *)arg)->thread;
    char name[32];
    snprintf(name, sizeof name, "worker.%d", t);
    float x[ELEMS];
    uint64_t n = ELEMS;
    for (unsigned k = 0; k < TAPS; k++) {
        fill(x, ELEMS, (unsigned)t * TAPS + k);
        if (nnp_tap(name, "out0", NNP_F32, 1, &n, x) != NNP_OK)
            return (void *)1;
    }
    return NULL;
}

static void test_many_threads(void **state)
{
    (void)state;
    char p[512];
    scratch(p, sizeof p, "threads.safetensors");
    assert_int_equal(nnp_capture_open(p, NULL), NNP_OK);
    pthread_t th[THREADS];
    worker_arg args[THREADS];
    for (int t = 0; t < THREADS; t++) {
        args[t].thread = t;
        assert_int_equal(pthread_create(&th[t], NULL, tap_worker, &args[t]), 0);
    }
    for (int t = 0; t < THREADS; t++) {
        void *rv;
        pthread_join(th[t], &rv);
        assert_null(rv);
    }
    assert_int_equal(nnp_capture_close(), NNP_OK);
    nnp_dump *d = open_ok(p);
    assert_int_equal(nnp_dump_count(d), THREADS * TAPS);
    /* each thread's records appear in its own call order, with its own data */
    uint64_t next[THREADS] = {0};
    float want[ELEMS];
    for (size_t i = 0; i < nnp_dump_count(d); i++) {
        const nnp_record *r = nnp_dump_record(d, i);
        int t = r->module[7] - '0';
        assert_true(t >= 0 && t < THREADS);
        assert_int_equal(r->call, next[t]);
        const void *data;
        assert_int_equal(nnp_dump_data(d, i, &data), NNP_OK);
        fill(want, ELEMS, (unsigned)t * TAPS + (unsigned)next[t]);
        assert_memory_equal(data, want, sizeof want);
        next[t]++;
    }
    nnp_dump_close(d);
}

/* A reference dump with records "blocks.0/in0" (f32 [2,3]) and "blocks.0/in0#1". */
static void write_reference(const char *path)
{
    nnp_writer *w;
    assert_int_equal(nnp_writer_open(path, 2, &w), NNP_OK);
    float a[6] = {0.1f, -2.5f, 3.0f, 1e-3f, 65504.0f, -0.0f};
    float b[6] = {7, 8, 9, 10, 11, 12};
    uint64_t shape[2] = {2, 3};
    nnp_record_desc d = {.module = "blocks.0", .role = "in0", .dtype = NNP_F32, .ndim = 2,
                         .shape = shape};
    assert_int_equal(nnp_writer_add(w, &d, a), NNP_OK);
    d.call = 1;
    assert_int_equal(nnp_writer_add(w, &d, b), NNP_OK);
    assert_int_equal(nnp_writer_close(w), NNP_OK);
}

static void test_injection(void **state)
{
    (void)state;
    char ref[512], rules[512], out[512];
    scratch(ref, sizeof ref, "ref.safetensors");
    scratch(rules, sizeof rules, "port.rules");
    scratch(out, sizeof out, "port.safetensors");
    write_reference(ref);
    const char *text = "# the port calls its first block blk.0\n"
                       "rename ^blk\\.([0-9]+)/ blocks.\\1/\n"
                       "ignore ^scratch/\n";
    write_bytes(rules, text, strlen(text));
    nnp_capture_options o = {.size = sizeof o, .inject_path = ref, .rules_path = rules};
    assert_int_equal(nnp_capture_open(out, &o), NNP_OK);
    assert_int_equal(nnp_capture_active(), 3);

    /* call 0 into a double buffer: exact */
    double x64[6] = {0};
    uint64_t shape[2] = {2, 3};
    assert_int_equal(nnp_tap_input("blk.0", "in0", NNP_F64, 2, shape, x64), NNP_OK);
    assert_true(x64[0] == (double)0.1f && x64[1] == -2.5 && x64[4] == 65504.0);
    assert_true(x64[5] == 0.0 && signbit(x64[5]));
    /* call 1 into a half buffer: rounded to nearest even */
    uint16_t h[6];
    assert_int_equal(nnp_tap_input("blk.0", "in0", NNP_F16, 2, shape, h), NNP_OK);
    assert_true(nnp_f16_to_f32(h[0]) == 7.0f && nnp_f16_to_f32(h[5]) == 12.0f);
    /* call 2: the reference has none; the input is recorded untouched */
    float keep[6] = {5, 5, 5, 5, 5, 5};
    assert_int_equal(nnp_tap_input("blk.0", "in0", NNP_F32, 2, shape, keep), NNP_ERR_NOT_FOUND);
    assert_non_null(strstr(nnp_last_error(), "blocks.0/in0#2"));
    assert_true(keep[0] == 5);
    /* a shape mismatch names both shapes and leaves the data alone */
    float wrong[6] = {4, 4, 4, 4, 4, 4};
    uint64_t shape32[2] = {3, 2};
    assert_int_equal(nnp_tap_input("blk.0", "in1", NNP_F32, 2, shape32, wrong),
                     NNP_ERR_NOT_FOUND);
    nnp_tap_desc mis = {"blocks.0", "in0", NULL, NNP_F32, 2, shape32};
    assert_int_equal(nnp_tap_inject(&mis, wrong), NNP_ERR_ARG);
    assert_non_null(strstr(nnp_last_error(), "[3, 2]"));
    assert_non_null(strstr(nnp_last_error(), "[2, 3]"));
    assert_true(wrong[0] == 4);
    /* an integer input cannot take float reference data */
    int32_t ints[6];
    nnp_tap_desc id = {"blocks.0", "in0", NULL, NNP_I32, 2, shape};
    assert_int_equal(nnp_tap_inject(&id, ints), NNP_ERR_ARG);
    assert_non_null(strstr(nnp_last_error(), "cannot convert F32 to I32"));
    /* ignored by the rules */
    assert_int_equal(nnp_tap_input("scratch", "in0", NNP_F32, 2, shape, keep), NNP_ERR_NOT_FOUND);
    assert_non_null(strstr(nnp_last_error(), "ignored"));
    assert_int_equal(nnp_capture_close(), NNP_OK);

    /* the port's capture holds what its layers saw: the injected values */
    nnp_dump *d = open_ok(out);
    int64_t i = nnp_dump_find(d, "blk.0/in0");
    assert_true(i >= 0);
    const void *data;
    assert_int_equal(nnp_dump_data(d, (size_t)i, &data), NNP_OK);
    assert_memory_equal(data, x64, sizeof x64);
    assert_true(nnp_dump_find(d, "blk.0/in0#2") >= 0);
    assert_int_equal(nnp_dump_find(d, "blocks.0/in0"), -1); /* the mismatched tap was not kept */
    nnp_dump_close(d);
}

static void test_open_errors(void **state)
{
    (void)state;
    char out[512], rules[512], ref[512];
    scratch(out, sizeof out, "never.safetensors");
    scratch(rules, sizeof rules, "bad.rules");
    scratch(ref, sizeof ref, "ref2.safetensors");
    write_reference(ref);
    nnp_capture_options o = {.size = sizeof o, .inject_path = "/nonexistent/ref.safetensors"};
    assert_int_equal(nnp_capture_open(out, &o), NNP_ERR_IO);
    assert_non_null(strstr(nnp_last_error(), "/nonexistent/ref.safetensors"));
    write_bytes(rules, "rename (unclosed x\n", 19);
    o.inject_path = ref;
    o.rules_path = rules;
    assert_int_equal(nnp_capture_open(out, &o), NNP_ERR_FORMAT);
    assert_non_null(strstr(nnp_last_error(), "bad.rules: line 1, column 8"));
    write_bytes(rules, "frobnicate x\n", 13);
    assert_int_equal(nnp_capture_open(out, &o), NNP_ERR_FORMAT);
    assert_non_null(strstr(nnp_last_error(), "unknown rule 'frobnicate'"));
    assert_false(exists(out)); /* nothing created before the inputs were checked */
    assert_int_equal(nnp_capture_open("/nonexistent-dir/x.safetensors", NULL), NNP_ERR_IO);
    assert_int_equal(nnp_capture_open(NULL, NULL), NNP_ERR_ARG);
    assert_int_equal(nnp_capture_active(), 0);
}

/* A child taps records k = 0, 1, 2, ... and reports each; the parent kills it with SIGKILL
 * mid-stream. Every record the child finished is readable from the partial file, byte for byte,
 * and `recover` turns the partial file into a normal dump. */
static void test_sigkill_mid_capture(void **state)
{
    (void)state;
    char p[512], part[600], journal[600];
    scratch(p, sizeof p, "killed.safetensors");
    snprintf(part, sizeof part, "%s.partial", p);
    snprintf(journal, sizeof journal, "%s.journal", p);
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        if (nnp_capture_open(p, NULL) != NNP_OK)
            _exit(1);
        static float x[4096];
        uint64_t n = 4096;
        for (unsigned k = 0;; k++) {
            fill(x, 4096, k);
            if (nnp_tap("layer", "out0", NNP_F32, 1, &n, x) != NNP_OK)
                _exit(1);
            if (write(fds[1], &k, sizeof k) != sizeof k)
                _exit(1);
        }
    }
    close(fds[1]);
    unsigned k, done = 0;
    while (done < 200 && read(fds[0], &k, sizeof k) == sizeof k)
        done = k + 1;
    kill(pid, SIGKILL);
    int status;
    waitpid(pid, &status, 0);
    close(fds[0]);
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    assert_false(exists(p));

    static float want[4096];
    for (int pass = 0; pass < 2; pass++) {
        /* pass 0: the partial file as it is; pass 1: after recovery */
        nnp_dump *d = open_ok(pass ? p : part);
        assert_string_equal(nnp_dump_format(d), pass ? "safetensors" : "safetensors-partial");
        size_t n = nnp_dump_count(d);
        assert_true(n >= done);
        for (size_t i = 0; i < n; i++) {
            const void *data;
            assert_int_equal(nnp_dump_data(d, i, &data), NNP_OK);
            fill(want, 4096, (unsigned)i);
            assert_memory_equal(data, want, sizeof want);
            assert_int_equal(nnp_dump_record(d, i)->call, i);
        }
        nnp_dump_close(d);
        if (pass == 0) {
            size_t recovered;
            assert_int_equal(nnp_recover(part, &recovered), NNP_OK);
            assert_int_equal(recovered, n);
            assert_false(exists(part));
            assert_false(exists(journal));
        }
    }
    assert_int_equal(nnp_recover(p, NULL), NNP_ERR_IO); /* nothing left to recover */
}

/* RLIMIT_FSIZE makes writes fail as a full disk would: the tap says so, later taps are refused,
 * closing reports it, and the records written before stay readable. */
static void test_write_limit(void **state)
{
    (void)state;
    char p[512], part[600];
    scratch(p, sizeof p, "full.safetensors");
    snprintf(part, sizeof part, "%s.partial", p);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit lim = {1 << 20, 1 << 20};
        if (setrlimit(RLIMIT_FSIZE, &lim) != 0 || nnp_capture_open(p, NULL) != NNP_OK)
            _exit(10);
        static float x[16384]; /* 64 KiB a record */
        uint64_t n = 16384;
        unsigned k = 0;
        nnp_status st;
        while ((st = nnp_tap("layer", "out0", NNP_F32, 1, &n, x)) == NNP_OK)
            k++;
        if (st != NNP_ERR_IO || !strstr(nnp_last_error(), "File too large"))
            _exit(11);
        if (nnp_tap("layer", "out0", NNP_F32, 1, &n, x) != NNP_ERR_IO ||
            !strstr(nnp_last_error(), "capture stopped"))
            _exit(12);
        if (nnp_capture_close() == NNP_OK || !strstr(nnp_last_error(), ".partial"))
            _exit(13);
        _exit(k >= 10 && k < 16 ? 0 : 14);
    }
    int status;
    waitpid(pid, &status, 0);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_false(exists(p));
    nnp_dump *d = open_ok(part);
    assert_true(nnp_dump_count(d) >= 10);
    nnp_dump_close(d);
    assert_int_equal(nnp_recover(p, NULL), NNP_OK);
    d = open_ok(p);
    assert_true(nnp_dump_count(d) >= 10);
    nnp_dump_close(d);
}

static void append_line(const char *path, const char *line)
{
    FILE *f = fopen(path, "a");
    assert_non_null(f);
    fputs(line, f);
    fclose(f);
}

/* What a partial dump's journal may and may not say. */
static void test_journal_rules(void **state)
{
    (void)state;
    char p[512], part[600], journal[600];
    scratch(p, sizeof p, "tamper.safetensors");
    snprintf(part, sizeof part, "%s.partial", p);
    snprintf(journal, sizeof journal, "%s.journal", p);
    nnp_writer *w;
    assert_int_equal(nnp_writer_open(p, 0, &w), NNP_OK);
    float x[4] = {1, 2, 3, 4};
    uint64_t four = 4;
    nnp_record_desc d = {.name = "t", .dtype = NNP_F32, .ndim = 1, .shape = &four};
    assert_int_equal(nnp_writer_set_meta(w, "k", "old"), NNP_OK);
    assert_int_equal(nnp_writer_add(w, &d, x), NNP_OK);
    assert_int_equal(nnp_writer_set_meta(w, "k", "new"), NNP_OK);
    /* the writer is left unfinished, as a killed process leaves it; read it as it is */
    nnp_dump *dump = open_ok(part);
    assert_int_equal(nnp_dump_count(dump), 1);
    assert_string_equal(nnp_dump_meta_get(dump, "k"), "new"); /* the last value wins */
    nnp_dump_close(dump);
    FILE *f = fopen(journal, "rb");
    char saved[4096];
    size_t saved_len = fread(saved, 1, sizeof saved, f);
    fclose(f);

    /* a record whose bytes are not in the file yet (a capture still running) is not shown */
    append_line(journal, "{\"tensor\":\"u\",\"seq\":1,\"dtype\":\"F32\",\"shape\":[100],"
                         "\"data_offsets\":[16,416]}\n");
    dump = open_ok(part);
    assert_int_equal(nnp_dump_count(dump), 1);
    nnp_dump_close(dump);
    /* records out of execution order, or not following each other, are refused */
    write_bytes(journal, saved, saved_len);
    append_line(journal, "{\"tensor\":\"u\",\"seq\":5,\"dtype\":\"F32\",\"shape\":[0],"
                         "\"data_offsets\":[16,16]}\n");
    expect_open_error(part, NNP_ERR_FORMAT, "line 5", "not in execution order", NULL);
    write_bytes(journal, saved, saved_len);
    append_line(journal, "{\"tensor\":\"u\",\"seq\":1,\"dtype\":\"F32\",\"shape\":[0],"
                         "\"data_offsets\":[8,8]}\n");
    expect_open_error(part, NNP_ERR_FORMAT, "line 5", "does not follow", NULL);
    write_bytes(journal, saved, saved_len);
    append_line(journal, "{\"tensor\":\"u\",\"seq\":1,\"dtype\":\"F32\",\"shape\":[0],"
                         "\"data_offsets\":[16,16]}\n{\"tensor\":\"v\"");
    dump = open_ok(part); /* a zero-size record, then a line cut short by the kill */
    assert_int_equal(nnp_dump_count(dump), 2);
    nnp_dump_close(dump);
    write_bytes(journal, saved, saved_len);

    /* a writer still alive holds its capture: recovery waits for its end (here, a kill) */
    size_t n;
    assert_int_equal(nnp_recover(p, &n), NNP_ERR_IO);
    assert_non_null(strstr(nnp_last_error(), "is writing it: not recovered while it runs"));
    nnp__writer_abandon(w);
    assert_int_equal(nnp_recover(p, &n), NNP_OK);
    assert_int_equal(n, 1);
    dump = open_ok(p);
    assert_string_equal(nnp_dump_meta_get(dump, "k"), "new");
    nnp_dump_close(dump);
    assert_true(exists(p));
}

/* A process killed while closing: with the header half written over the placeholder, or with a
 * complete header just before the rename. Either way the journal rebuilds the dump. */
static void test_recover_after_kill_during_close(void **state)
{
    (void)state;
    char p[512], part[600], journal[600];
    scratch(p, sizeof p, "closing.safetensors");
    snprintf(part, sizeof part, "%s.partial", p);
    snprintf(journal, sizeof journal, "%s.journal", p);
    float x[3] = {1, 2, 3};
    uint64_t three = 3;
    for (int scenario = 0; scenario < 2; scenario++) {
        nnp_writer *w;
        assert_int_equal(nnp_writer_open(p, 0, &w), NNP_OK);
        for (int k = 0; k < 3; k++) {
            char name[16];
            snprintf(name, sizeof name, "r%d", k);
            nnp_record_desc d = {.name = name, .dtype = NNP_F32, .ndim = 1, .shape = &three};
            x[0] = (float)k;
            assert_int_equal(nnp_writer_add(w, &d, x), NNP_OK);
        }
        FILE *f = fopen(journal, "rb");
        char saved[8192];
        size_t saved_len = fread(saved, 1, sizeof saved, f);
        fclose(f);
        if (scenario == 0) {
            /* the first bytes of the real header over the placeholder, then the kill */
            int fd = open(part, O_WRONLY);
            assert_true(fd >= 0);
            assert_int_equal(pwrite(fd, "{\"r0\":{\"dty", 12, 8), 12);
            close(fd);
            nnp_dump *d;
            assert_int_equal(nnp_dump_open(part, &d), NNP_ERR_FORMAT); /* the header is torn */
        } else {
            /* closed completely, then put back as it was just before the rename */
            assert_int_equal(nnp_writer_close(w), NNP_OK);
            w = NULL;
            assert_int_equal(rename(p, part), 0);
            write_bytes(journal, saved, saved_len);
        }
        if (w) /* the kill: the writer's descriptors, and its lock, go; its files stay */
            nnp__writer_abandon(w);
        w = NULL;
        size_t n;
        assert_int_equal(nnp_recover(p, &n), NNP_OK);
        assert_int_equal(n, 3);
        nnp_dump *d = open_ok(p);
        const void *data;
        assert_int_equal(nnp_dump_data(d, 2, &data), NNP_OK);
        assert_true(((const float *)data)[0] == 2.0f);
        nnp_dump_close(d);
        assert_false(exists(part));
        assert_false(exists(journal));
        unlink(p);
    }
}

static atomic_bool keep_tapping;

static void *tap_until_told(void *arg)
{
    (void)arg;
    float x[16] = {0};
    uint64_t n = 16;
    while (atomic_load(&keep_tapping))
        nnp_tap("busy", "out0", NNP_F32, 1, &n, x);
    return NULL;
}

/* Closing while several threads keep tapping returns (taps after it are no-ops). */
static void test_close_while_tapping(void **state)
{
    (void)state;
    char p[512];
    scratch(p, sizeof p, "busy.safetensors");
    assert_int_equal(nnp_capture_open(p, NULL), NNP_OK);
    atomic_store(&keep_tapping, true);
    pthread_t th[6];
    for (int t = 0; t < 6; t++)
        assert_int_equal(pthread_create(&th[t], NULL, tap_until_told, NULL), 0);
    usleep(50000);
    alarm(60); /* a close that never returns ends the test program */
    assert_int_equal(nnp_capture_close(), NNP_OK);
    alarm(0);
    atomic_store(&keep_tapping, false);
    for (int t = 0; t < 6; t++)
        pthread_join(th[t], NULL);
    nnp_dump *d = open_ok(p);
    assert_true(nnp_dump_count(d) > 0);
    nnp_dump_close(d);
}

/* A port's own variadic tap, as a port would write one over the va_list form. */
static nnp_status port_tap(const char *type, const float *x, uint64_t n, const char *fmt, ...)
    NNP_PRINTF(4, 5);
static nnp_status port_tap(const char *type, const float *x, uint64_t n, const char *fmt, ...)
{
    nnp_tap_desc d = {NULL, "out0", type, NNP_F32, 1, &n};
    va_list args;
    va_start(args, fmt);
    nnp_status st = nnp_vtap_recordf(&d, x, fmt, args);
    va_end(args);
    return st;
}

/* A name of `len` bytes: "n" then 'x's. */
static char *long_name(size_t len)
{
    char *s = malloc(len + 1);
    assert_non_null(s);
    memset(s, 'x', len);
    s[0] = 'n';
    s[len] = 0;
    return s;
}

static void test_formatted_names(void **state)
{
    (void)state;
    float x[3] = {1, 2, 3};
    uint64_t three = 3;
    char *too_long = long_name(NNP_TAP_NAME_MAX + 1), *longest = long_name(NNP_TAP_NAME_MAX);
    /* no session: nothing is formatted, so not even a name over the limit is an error */
    assert_int_equal(nnp_tapf("out0", NNP_F32, 1, &three, x, "%s", too_long), NNP_OK);
    assert_int_equal(nnp_tap_inputf("in0", NNP_F32, 1, &three, x, "%s", too_long), NNP_OK);
    assert_int_equal(nnp_tapf("out0", NNP_F32, 1, &three, x, NULL), NNP_OK);
    assert_true(x[0] == 1);

    char p[512];
    scratch(p, sizeof p, "formatted.safetensors");
    assert_int_equal(nnp_capture_open(p, NULL), NNP_OK);
    for (int layer = 0; layer < 2; layer++) {
        assert_int_equal(nnp_tap_inputf("in0", NNP_F32, 1, &three, x, "blk.%d.attn_%s", layer,
                                        "q"), NNP_OK);
        assert_int_equal(nnp_tapf("out0", NNP_F32, 1, &three, x, "blk.%d.attn_%s", layer, "q"),
                         NNP_OK);
    }
    /* the same name as a plain tap's: one count of calls */
    assert_int_equal(nnp_tap("blk.1.attn_q", "out0", NNP_F32, 1, &three, x), NNP_OK);
    nnp_tap_desc d = {"not read", "out0", "Linear", NNP_F32, 1, &three};
    assert_int_equal(nnp_tap_recordf(&d, x, "head.%03u", 7u), NNP_OK);
    d.role = "in0";
    assert_int_equal(nnp_tap_injectf(&d, x, "head.%03u", 7u), NNP_OK);
    assert_int_equal(port_tap("GELU", x, 3, "blk.%d.ffn_act", 5), NNP_OK);
    assert_int_equal(nnp_tapf("out0", NNP_F32, 1, &three, x, "%s", longest), NNP_OK);

    /* over the limit: refused, the limit named, nothing recorded and nothing cut short */
    assert_int_equal(nnp_tapf("out0", NNP_F32, 1, &three, x, "%s", too_long), NNP_ERR_ARG);
    char want[64];
    snprintf(want, sizeof want, "over the limit of %d (NNP_TAP_NAME_MAX)", NNP_TAP_NAME_MAX);
    assert_non_null(strstr(nnp_last_error(), want));
    assert_non_null(strstr(nnp_last_error(), "nnp_tapf"));
    assert_int_equal(nnp_tap_inputf("in0", NNP_F32, 1, &three, x, "%s.%d", longest, 1),
                     NNP_ERR_ARG);
    assert_non_null(strstr(nnp_last_error(), "nnp_tap_inputf"));
    assert_non_null(strstr(nnp_last_error(), "1026 bytes"));
    assert_int_equal(nnp_tapf("out0", NNP_F32, 1, &three, x, NULL), NNP_ERR_ARG);
    assert_non_null(strstr(nnp_last_error(), "no name format"));
    assert_int_equal(nnp_tap_recordf(NULL, x, "a"), NNP_ERR_ARG);
    /* the formatted name's tap is checked as any tap */
    assert_int_equal(nnp_tapf("", NNP_F32, 1, &three, x, "blk.%d", 0), NNP_ERR_ARG);
    assert_int_equal(nnp_capture_close(), NNP_OK);

    nnp_dump *dump = open_ok(p);
    const char *names[] = {"blk.0.attn_q/in0", "blk.0.attn_q/out0", "blk.1.attn_q/in0",
                           "blk.1.attn_q/out0", "blk.1.attn_q/out0#1", "head.007/out0",
                           "head.007/in0", "blk.5.ffn_act/out0"};
    size_t n = sizeof names / sizeof *names;
    assert_int_equal(nnp_dump_count(dump), n + 1);
    for (size_t i = 0; i < n; i++)
        assert_string_equal(nnp_dump_record(dump, i)->name, names[i]);
    assert_string_equal(nnp_dump_record(dump, 5)->module, "head.007");
    assert_string_equal(nnp_dump_record(dump, 5)->module_type, "Linear");
    assert_string_equal(nnp_dump_record(dump, 7)->module_type, "GELU");
    assert_string_equal(nnp_dump_record(dump, n)->module, longest);
    nnp_dump_close(dump);
    free(too_long);
    free(longest);
}

/* Injection through formatted names, and the rules seeing the formatted name. */
static void test_formatted_injection(void **state)
{
    (void)state;
    char ref[512], rules[512], out[512];
    scratch(ref, sizeof ref, "fref.safetensors");
    scratch(rules, sizeof rules, "fport.rules");
    scratch(out, sizeof out, "fport.safetensors");
    write_reference(ref);
    const char *text = "rename ^layer([0-9]+)/ blocks.\\1/\n";
    write_bytes(rules, text, strlen(text));
    nnp_capture_options o;
    nnp_capture_options_init(&o);
    o.inject_path = ref;
    o.rules_path = rules;
    assert_int_equal(nnp_capture_open(out, &o), NNP_OK);
    float x[6] = {0};
    uint64_t shape[2] = {2, 3};
    assert_int_equal(nnp_tap_inputf("in0", NNP_F32, 2, shape, x, "layer%d", 0), NNP_OK);
    assert_true(x[1] == -2.5f);
    nnp_tap_desc d = {NULL, "in0", "Block", NNP_F32, 2, shape};
    assert_int_equal(nnp_tap_injectf(&d, x, "layer%d", 0), NNP_OK);
    assert_true(x[0] == 7);
    assert_int_equal(nnp_tap_injectf(&d, x, "layer%d", 0), NNP_ERR_NOT_FOUND);
    assert_non_null(strstr(nnp_last_error(), "layer0/in0#2"));
    assert_int_equal(nnp_capture_close(), NNP_OK);
    nnp_dump *dump = open_ok(out);
    assert_int_equal(nnp_dump_count(dump), 3);
    assert_string_equal(nnp_dump_record(dump, 1)->name, "layer0/in0#1");
    assert_string_equal(nnp_dump_record(dump, 1)->module_type, "Block");
    nnp_dump_close(dump);
}

static void test_capture_metadata(void **state)
{
    (void)state;
    /* no session: a valid pair goes nowhere, a reserved key is refused all the same */
    assert_int_equal(nnp_capture_set_meta("engine", "lost"), NNP_OK);
    assert_int_equal(nnp_capture_set_meta("nnparity.format", "x"), NNP_ERR_ARG);
    assert_non_null(strstr(nnp_last_error(), "reserved"));

    char p[512];
    scratch(p, sizeof p, "meta.safetensors");
    assert_int_equal(nnp_capture_open(p, NULL), NNP_OK);
    assert_int_equal(nnp_capture_set_meta("engine", "cpp_port 1.0"), NNP_OK);
    assert_int_equal(nnp_capture_set_meta("prompt", "a \"quoted\"\nline, caf\xc3\xa9"), NNP_OK);
    float x = 1;
    uint64_t one = 1;
    assert_int_equal(nnp_tap("a", "out0", NNP_F32, 1, &one, &x), NNP_OK);
    assert_int_equal(nnp_capture_set_meta("seed", "1"), NNP_OK);
    assert_int_equal(nnp_capture_set_meta("seed", "42"), NNP_OK); /* the last value wins */
    assert_int_equal(nnp_capture_set_meta("nnparity.format", "mine"), NNP_ERR_ARG);
    assert_non_null(strstr(nnp_last_error(), "'nnparity.format' is reserved"));
    assert_int_equal(nnp_capture_set_meta("nnparity.", "mine"), NNP_ERR_ARG);
    assert_int_equal(nnp_capture_set_meta(NULL, "v"), NNP_ERR_ARG);
    assert_int_equal(nnp_capture_set_meta("k", NULL), NNP_ERR_ARG);
    assert_int_equal(nnp_capture_set_meta("", "v"), NNP_ERR_ARG);
    assert_int_equal(nnp_capture_set_meta("bad", "\xff"), NNP_ERR_ARG);
    assert_non_null(strstr(nnp_last_error(), "not valid UTF-8"));
    assert_int_equal(nnp_capture_close(), NNP_OK);
    /* after the close: nothing, and no error */
    assert_int_equal(nnp_capture_set_meta("late", "x"), NNP_OK);

    nnp_dump *d = open_ok(p);
    assert_string_equal(nnp_dump_meta_get(d, "engine"), "cpp_port 1.0");
    assert_string_equal(nnp_dump_meta_get(d, "prompt"), "a \"quoted\"\nline, caf\xc3\xa9");
    assert_string_equal(nnp_dump_meta_get(d, "seed"), "42");
    assert_null(nnp_dump_meta_get(d, "late"));
    assert_null(nnp_dump_meta_get(d, "bad"));
    assert_string_not_equal(nnp_dump_meta_get(d, "nnparity.format"), "mine");
    nnp_dump_close(d);

    /* an injection-only session records nothing: NNP_OK */
    char ref[512];
    scratch(ref, sizeof ref, "mref.safetensors");
    write_reference(ref);
    nnp_capture_options o;
    nnp_capture_options_init(&o);
    o.inject_path = ref;
    assert_int_equal(nnp_capture_open(NULL, &o), NNP_OK);
    assert_int_equal(nnp_capture_active(), 2);
    assert_int_equal(nnp_capture_set_meta("engine", "x"), NNP_OK);
    assert_int_equal(nnp_capture_close(), NNP_OK);
}

/* A process killed after setting metadata: the journal keeps the pair for recovery. */
static void test_capture_metadata_survives_a_kill(void **state)
{
    (void)state;
    char p[512];
    scratch(p, sizeof p, "meta-killed.safetensors");
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        float x = 1;
        uint64_t one = 1;
        if (nnp_capture_open(p, NULL) || nnp_capture_set_meta("engine", "killed") ||
            nnp_tap("a", "out0", NNP_F32, 1, &one, &x))
            _exit(1);
        kill(getpid(), SIGKILL);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status));
    size_t n;
    assert_int_equal(nnp_recover(p, &n), NNP_OK);
    assert_int_equal(n, 1);
    nnp_dump *d = open_ok(p);
    assert_string_equal(nnp_dump_meta_get(d, "engine"), "killed");
    nnp_dump_close(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_session_from_environment),
        cmocka_unit_test(test_explicit_session_overrides_environment),
        cmocka_unit_test(test_a_forked_child_leaves_the_session_alone),
        cmocka_unit_test(test_no_session_is_a_no_op),
        cmocka_unit_test(test_records_and_call_indices),
        cmocka_unit_test(test_many_threads),
        cmocka_unit_test(test_injection),
        cmocka_unit_test(test_open_errors),
        cmocka_unit_test(test_sigkill_mid_capture),
        cmocka_unit_test(test_write_limit),
        cmocka_unit_test(test_journal_rules),
        cmocka_unit_test(test_recover_after_kill_during_close),
        cmocka_unit_test(test_close_while_tapping),
        cmocka_unit_test(test_formatted_names),
        cmocka_unit_test(test_parameters_are_recorded_once),
        cmocka_unit_test(test_formatted_injection),
        cmocka_unit_test(test_capture_metadata),
        cmocka_unit_test(test_capture_metadata_survives_a_kill),
    };
    return cmocka_run_group_tests_name("capture", tests, NULL, NULL);
}
