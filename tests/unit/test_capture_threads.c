/*
 * test_capture_threads.c - many threads using one capture session at once: recording, injecting
 * from a reference while recording, asking whether a session is active, and a session opened and
 * closed while threads keep tapping. Built normally, under ASan and under ThreadSanitizer
 * (`make unit-tsan`), which is what it is for: the asserts check that no record is lost or
 * mixed up, and TSan checks that the session's locks leave no data race behind them.
 */
#include <pthread.h>
#include <stdatomic.h>

#include "testutil.h"

enum { THREADS = 8, TAPS = 200, ELEMS = 32 };

static nnp_dump *open_ok(const char *path)
{
    nnp_dump *d = NULL;
    if (nnp_dump_open(path, &d))
        fail_msg("%s", nnp_last_error());
    return d;
}

/* The content of thread t's k-th tap. */
static void fill(float *x, unsigned t, unsigned k)
{
    for (unsigned i = 0; i < ELEMS; i++)
        x[i] = (float)(t * 100000u + k * 100u + i);
}

typedef struct {
    unsigned thread;
    bool inject; /* tap inputs through nnp_tap_input (the session has a reference) */
    pthread_barrier_t *start;
} worker;

static void *tap_worker(void *arg)
{
    worker *w = arg;
    char name[32];
    snprintf(name, sizeof name, "worker.%u", w->thread);
    float x[ELEMS];
    uint64_t n = ELEMS;
    pthread_barrier_wait(w->start); /* all threads tap at the same moment */
    for (unsigned k = 0; k < TAPS; k++) {
        fill(x, w->thread, k);
        nnp_status st = w->inject ? nnp_tap_input(name, "in0", NNP_F32, 1, &n, x)
                                  : nnp_tap(name, "out0", NNP_F32, 1, &n, x);
        if (st != NNP_OK)
            return (void *)1;
        if (nnp_capture_active() == 0)
            return (void *)2;
    }
    return NULL;
}

static void run_workers(bool inject)
{
    pthread_t th[THREADS];
    worker w[THREADS];
    pthread_barrier_t start;
    assert_int_equal(pthread_barrier_init(&start, NULL, THREADS), 0);
    for (unsigned t = 0; t < THREADS; t++) {
        w[t] = (worker){t, inject, &start};
        assert_int_equal(pthread_create(&th[t], NULL, tap_worker, &w[t]), 0);
    }
    for (unsigned t = 0; t < THREADS; t++) {
        void *rv;
        assert_int_equal(pthread_join(th[t], &rv), 0);
        if (rv)
            fail_msg("thread %u: %s", t, nnp_last_error());
    }
    pthread_barrier_destroy(&start);
}

/* Every thread's records are all there, in its own call order, each with its own data; the
 * records of all threads together are numbered 0..n-1 in one global order. */
static void check_dump(const char *path, const char *role, int shift)
{
    nnp_dump *d = open_ok(path);
    assert_int_equal(nnp_dump_count(d), THREADS * TAPS);
    uint64_t next[THREADS] = {0};
    float want[ELEMS];
    for (size_t i = 0; i < nnp_dump_count(d); i++) {
        const nnp_record *r = nnp_dump_record(d, i);
        unsigned t;
        assert_int_equal(sscanf(r->module, "worker.%u", &t), 1);
        assert_true(t < THREADS);
        assert_string_equal(r->role, role);
        assert_int_equal(r->seq, i);
        assert_int_equal(r->call, next[t]);
        const void *data;
        assert_int_equal(nnp_dump_data(d, i, &data), NNP_OK);
        fill(want, (t + (unsigned)shift) % THREADS, (unsigned)next[t]);
        assert_memory_equal(data, want, sizeof want);
        next[t]++;
    }
    for (unsigned t = 0; t < THREADS; t++)
        assert_int_equal(next[t], TAPS);
    nnp_dump_close(d);
}

static void test_threads_record(void **state)
{
    (void)state;
    char p[512];
    scratch(p, sizeof p, "threads.safetensors");
    assert_int_equal(nnp_capture_open(p, NULL), NNP_OK);
    run_workers(false);
    assert_int_equal(nnp_capture_close(), NNP_OK);
    check_dump(p, "out0", 0);
}

/* A reference in which worker.t's k-th input holds what thread t+1 taps: injection must hand
 * every thread the reference's record for its own (name, call), never a neighbour's. */
static void write_reference(const char *path)
{
    nnp_writer *w;
    assert_int_equal(nnp_writer_open(path, THREADS * TAPS, &w), NNP_OK);
    float x[ELEMS];
    uint64_t n = ELEMS;
    char name[32];
    for (unsigned t = 0; t < THREADS; t++)
        for (unsigned k = 0; k < TAPS; k++) {
            snprintf(name, sizeof name, "worker.%u", t);
            fill(x, (t + 1) % THREADS, k);
            nnp_record_desc d = {.module = name, .role = "in0", .call = k, .dtype = NNP_F32,
                                 .ndim = 1, .shape = &n};
            assert_int_equal(nnp_writer_add(w, &d, x), NNP_OK);
        }
    assert_int_equal(nnp_writer_close(w), NNP_OK);
}

static void test_threads_inject_and_record(void **state)
{
    (void)state;
    char ref[512], p[512];
    scratch(ref, sizeof ref, "threads_ref.safetensors");
    scratch(p, sizeof p, "threads_injected.safetensors");
    write_reference(ref);
    nnp_capture_options o = {.size = sizeof o, .inject_path = ref};
    assert_int_equal(nnp_capture_open(p, &o), NNP_OK);
    assert_int_equal(nnp_capture_active(), 3);
    run_workers(true);
    assert_int_equal(nnp_capture_close(), NNP_OK);
    check_dump(p, "in0", 1); /* what was recorded is what was injected */
}

static atomic_bool keep_tapping;

static void *tap_until_told(void *arg)
{
    (void)arg;
    float x[ELEMS] = {0};
    uint64_t n = ELEMS;
    while (atomic_load(&keep_tapping)) {
        nnp_tap("busy", "out0", NNP_F32, 1, &n, x);
        nnp_capture_active();
    }
    return NULL;
}

/* Sessions opened and closed, one after another, under threads that never stop tapping: taps
 * outside a session are no-ops, and every session's file is a whole dump. */
static void test_sessions_come_and_go_under_taps(void **state)
{
    (void)state;
    atomic_store(&keep_tapping, true);
    pthread_t th[THREADS];
    for (int t = 0; t < THREADS; t++)
        assert_int_equal(pthread_create(&th[t], NULL, tap_until_told, NULL), 0);
    for (int round = 0; round < 4; round++) {
        char p[512], name[64];
        snprintf(name, sizeof name, "round%d.safetensors", round);
        scratch(p, sizeof p, name);
        assert_int_equal(nnp_capture_open(p, NULL), NNP_OK);
        usleep(5000);
        assert_int_equal(nnp_capture_close(), NNP_OK);
        nnp_dump *d = open_ok(p);
        for (size_t i = 0; i < nnp_dump_count(d); i++)
            assert_int_equal(nnp_dump_record(d, i)->call, i);
        nnp_dump_close(d);
    }
    atomic_store(&keep_tapping, false);
    for (int t = 0; t < THREADS; t++)
        pthread_join(th[t], NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_threads_record),
        cmocka_unit_test(test_threads_inject_and_record),
        cmocka_unit_test(test_sessions_come_and_go_under_taps),
    };
    return cmocka_run_group_tests_name("capture_threads", tests, NULL, NULL);
}
