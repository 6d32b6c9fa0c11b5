/*
 * test_ranks.c - unit tests of scale-out: rank file names, a capture of several ranks written
 * through the capture API and read back as one dump (names, merged order, a missing rank), and
 * the distributed diff run by three threads over an in-memory transport, which must give the
 * single-process diff bit for bit.
 */
#include <math.h>
#include <pthread.h>

#include "testutil.h"
#include "internal.h"

static void test_rank_file_names(void **state)
{
    (void)state;
    uint32_t r, w;
    assert_true(nnp__rank_file_name("rank-00003-of-00008.safetensors", &r, &w));
    assert_int_equal(r, 3);
    assert_int_equal(w, 8);
    assert_true(nnp__rank_file_name("rank-1-of-2.safetensors", &r, &w));
    assert_false(nnp__rank_file_name("rank-1-of-2.safetensors.partial", &r, &w));
    assert_false(nnp__rank_file_name("rank--of-2.safetensors", &r, &w));
    assert_false(nnp__rank_file_name("rank-1-of-.safetensors", &r, &w));
    assert_false(nnp__rank_file_name("model-00001-of-00002.safetensors", &r, &w));
    assert_false(nnp__rank_file_name("rank-1234567890-of-2.safetensors", &r, &w));
}

/* One rank of a pipeline: `layers` taps per call, `calls` micro-batches; layer names are
 * prefixed so that each rank holds its own, plus one name every rank holds. */
static void capture_rank(const char *dir, int rank, int world, const char *prefix)
{
    nnp_capture_options o = {.size = sizeof o, .rank = rank, .world_size = world};
    assert_int_equal(nnp_capture_open(dir, &o), NNP_OK);
    uint64_t shape[1] = {2};
    float x[2] = {(float)rank, 1};
    for (int call = 0; call < 2; call++) {
        for (int l = 0; l < 2; l++) {
            char name[32];
            snprintf(name, sizeof name, "%s%d", prefix, l);
            assert_int_equal(nnp_tap(name, "out0", NNP_F32, 1, shape, x), NNP_OK);
        }
        assert_int_equal(nnp_tap("shared", "out0", NNP_F32, 1, shape, x), NNP_OK);
    }
    assert_int_equal(nnp_capture_close(), NNP_OK);
}

static void test_rank_capture_reads_as_one_dump(void **state)
{
    (void)state;
    char dir[300], path[400];
    scratch(dir, sizeof dir, "pipe");
    capture_rank(dir, 1, 2, "late");  /* the order the ranks finish in does not matter */
    capture_rank(dir, 0, 2, "early");
    nnp_dump *d;
    assert_int_equal(nnp_dump_open(dir, &d), NNP_OK);
    assert_string_equal(nnp_dump_format(d), "safetensors-ranks");
    assert_string_equal(nnp_dump_meta_get(d, "nnparity.world_size"), "2");
    /* each micro-batch: rank 0's records, then rank 1's; a name both hold says whose it is */
    static const char *const order[] = {
        "early0/out0",   "early1/out0",   "shared/out0@rank0",   "late0/out0",
        "late1/out0",    "shared/out0@rank1", "early0/out0#1", "early1/out0#1",
        "shared/out0#1@rank0", "late0/out0#1", "late1/out0#1", "shared/out0#1@rank1"};
    assert_int_equal(nnp_dump_count(d), 12);
    for (size_t i = 0; i < 12; i++) {
        const nnp_record *r = nnp_dump_record(d, i);
        assert_string_equal(r->name, order[i]);
        assert_int_equal(r->seq, i);
        assert_int_equal(r->world_size, 2);
        assert_int_equal(r->rank, strncmp(r->name, "late", 4) == 0 || strstr(r->name, "@rank1"));
    }
    assert_int_equal(nnp_dump_find(d, "late1/out0#1"), 10);
    nnp_dump_close(d);
    snprintf(path, sizeof path, "%s/rank-00001-of-00002.safetensors", dir);
    assert_int_equal(remove(path), 0);
    assert_int_equal(nnp_dump_open(dir, &d), NNP_ERR_FORMAT);
    assert_non_null(strstr(nnp_last_error(), "rank 1's file rank-00001-of-00002.safetensors is "
                                             "missing"));
}

/* One rank's records, each "<module>/<role>" of one float. */
static void capture_names(const char *dir, int rank, int world, const char *const *names,
                          size_t n)
{
    nnp_capture_options o = {.size = sizeof o, .rank = rank, .world_size = world};
    assert_int_equal(nnp_capture_open(dir, &o), NNP_OK);
    uint64_t shape[1] = {1};
    float x = (float)rank;
    for (size_t i = 0; i < n; i += 2)
        assert_int_equal(nnp_tap(names[i], names[i + 1], NNP_F32, 1, shape, &x), NNP_OK);
    assert_int_equal(nnp_capture_close(), NNP_OK);
}

/* Rank 1's copy of an "x" both ranks hold reads as "x@rank1": a record rank 0 itself calls
 * "x@rank1" would be a second record of that name, so the set is refused. */
static void test_rank_names_that_clash_refused(void **state)
{
    (void)state;
    char dir[300];
    static const char *const r0[] = {"x", "out0", "x", "out0@rank1"};
    static const char *const r1[] = {"x", "out0"};
    scratch(dir, sizeof dir, "clash");
    capture_names(dir, 0, 2, r0, 4);
    capture_names(dir, 1, 2, r1, 2);
    nnp_dump *d;
    assert_int_equal(nnp_dump_open(dir, &d), NNP_ERR_FORMAT);
    const char *e = nnp_last_error();
    assert_non_null(strstr(e, dir));
    assert_non_null(strstr(e, "rank 0's record 'x/out0@rank1' (rank-00000-of-00002.safetensors)"));
    assert_non_null(strstr(e, "rank 1's record 'x/out0' (rank-00001-of-00002.safetensors)"));
    assert_non_null(strstr(e, "would both read as 'x/out0@rank1'"));
    assert_non_null(strstr(e, "\"<name>@rank<R>\""));
    assert_null(strchr(e, '\n'));

    /* without rank 1's "x", rank 0's "x" and "x@rank1" are two names: read as they are */
    static const char *const r1b[] = {"y", "out0"};
    scratch(dir, sizeof dir, "noclash");
    capture_names(dir, 0, 2, r0, 4);
    capture_names(dir, 1, 2, r1b, 2);
    assert_int_equal(nnp_dump_open(dir, &d), NNP_OK);
    assert_int_equal(nnp_dump_count(d), 3);
    assert_int_not_equal(nnp_dump_find(d, "x/out0"), nnp_dump_find(d, "x/out0@rank1"));
    nnp_dump_close(d);
}

static void test_capture_rank_options_checked(void **state)
{
    (void)state;
    char dir[300];
    nnp_capture_options o = {.size = sizeof o, .rank = 2, .world_size = 2};
    assert_int_equal(nnp_capture_open(scratch(dir, sizeof dir, "bad"), &o), NNP_ERR_ARG);
    assert_non_null(strstr(nnp_last_error(), "rank 2 of 2 ranks does not exist"));
    /* a file where a directory of rank files must go */
    write_bytes(scratch(dir, sizeof dir, "file"), "x", 1);
    o.rank = 0;
    assert_int_equal(nnp_capture_open(dir, &o), NNP_ERR_ARG);
    assert_non_null(strstr(nnp_last_error(), "this is a file"));
}

/* ---- an in-memory transport: threads stand for processes ---- */

#define PROCS 3

typedef struct {
    pthread_barrier_t barrier;
    const void *send[PROCS];
    uint64_t n[PROCS];
    void *bcast;
} shared_mem;

typedef struct {
    shared_mem *s;
    int rank;
} mem_ctx;

static int mem_gather(void *ctx, const void *send, uint64_t n, void **all, uint64_t *lens)
{
    mem_ctx *c = ctx;
    c->s->send[c->rank] = send;
    c->s->n[c->rank] = n;
    pthread_barrier_wait(&c->s->barrier);
    *all = NULL;
    if (c->rank == 0) {
        uint64_t total = 0;
        for (int r = 0; r < PROCS; r++)
            total += c->s->n[r];
        unsigned char *b = malloc(total ? total : 1), *w = b;
        for (int r = 0; r < PROCS; r++) {
            memcpy(w, c->s->send[r], c->s->n[r]);
            w += c->s->n[r];
            lens[r] = c->s->n[r];
        }
        *all = b;
    }
    pthread_barrier_wait(&c->s->barrier);
    return 0;
}

static int mem_bcast(void *ctx, void *buf, uint64_t n)
{
    mem_ctx *c = ctx;
    if (c->rank == 0)
        c->s->bcast = buf;
    pthread_barrier_wait(&c->s->barrier);
    if (c->rank != 0)
        memcpy(buf, c->s->bcast, n);
    pthread_barrier_wait(&c->s->barrier);
    return 0;
}

typedef struct {
    mem_ctx ctx;
    const char *ref, *port;
    nnp_rules *rules;
    nnp_status st;
    nnp_diff *diff;
    nnp_dump *r, *p;
} proc;

static void *run_proc(void *arg)
{
    proc *pr = arg;
    nnp_comm c = {pr->ctx.rank, PROCS, &pr->ctx, mem_gather, mem_bcast};
    nnp_status st = nnp_dump_open(pr->ref, &pr->r);
    if (!st)
        st = nnp_dump_open(pr->port, &pr->p);
    st = nnp_comm_agree(&c, st);
    nnp_diff_options o = {sizeof o, pr->rules, -1, -1, 1, false, NULL, NULL, NULL, NULL, false,
                          NULL};
    if (!st)
        st = nnp_diff_dumps_comm(pr->r, pr->p, &o, &c, &pr->diff);
    pr->st = st;
    return NULL;
}

static void write_pair(const char *ref, const char *port)
{
    nnp_writer *a, *b;
    assert_int_equal(nnp_writer_open(ref, 0, &a), NNP_OK);
    assert_int_equal(nnp_writer_open(port, 0, &b), NNP_OK);
    /* 2.5 chunks, one with a NaN: the chunks are shared among the processes */
    uint64_t n = nnp__cmp_chunk_elems() * 5 / 2, shape[2] = {n / 2, 2};
    float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y);
    for (uint64_t i = 0; i < n; i++) {
        x[i] = (float)((i * 2654435761u) % 1000) / 333.0f - 1.5f;
        y[i] = x[i] + (float)(i % 7) * 1e-6f;
    }
    y[n - 3] = NAN;
    nnp_record_desc d = {.module = "big", .role = "out0", .dtype = NNP_F32, .ndim = 2,
                         .shape = shape};
    assert_int_equal(nnp_writer_add(a, &d, x), NNP_OK);
    assert_int_equal(nnp_writer_add(b, &d, y), NNP_OK);
    uint64_t s2[2] = {3, 4};
    nnp_record_desc t = {.module = "small", .role = "out0", .dtype = NNP_F32, .ndim = 2,
                         .shape = s2};
    assert_int_equal(nnp_writer_add(a, &t, x), NNP_OK);
    uint64_t s3[2] = {4, 3};
    t.shape = s3;
    assert_int_equal(nnp_writer_add(b, &t, x + 5), NNP_OK); /* transposed by the rules */
    assert_int_equal(nnp_writer_close(a), NNP_OK);
    assert_int_equal(nnp_writer_close(b), NNP_OK);
    free(x);
    free(y);
}

static void test_distributed_diff_equals_one_process(void **state)
{
    (void)state;
    char ref[300], port[300];
    write_pair(scratch(ref, sizeof ref, "ref.safetensors"),
               scratch(port, sizeof port, "port.safetensors"));
    nnp_rules *rules;
    assert_int_equal(nnp_rules_parse("transpose ^small/ 1,0\n", "t", &rules), NNP_OK);
    nnp_dump *r, *p;
    nnp_diff *one;
    assert_int_equal(nnp_dump_open(ref, &r), NNP_OK);
    assert_int_equal(nnp_dump_open(port, &p), NNP_OK);
    nnp_diff_options o = {sizeof o, rules, -1, -1, 0, false, NULL, NULL, NULL, NULL, false, NULL};
    assert_int_equal(nnp_diff_dumps(r, p, &o, &one), NNP_OK);

    shared_mem s;
    pthread_barrier_init(&s.barrier, NULL, PROCS);
    proc procs[PROCS];
    pthread_t th[PROCS];
    for (int k = 0; k < PROCS; k++) {
        procs[k] = (proc){{&s, k}, ref, port, rules, NNP_OK, NULL, NULL, NULL};
        assert_int_equal(pthread_create(&th[k], NULL, run_proc, &procs[k]), 0);
    }
    for (int k = 0; k < PROCS; k++)
        pthread_join(th[k], NULL);
    for (int k = 0; k < PROCS; k++) {
        assert_int_equal(procs[k].st, NNP_OK);
        assert_true(k == 0 ? procs[k].diff != NULL : procs[k].diff == NULL);
    }
    nnp_diff *many = procs[0].diff;
    assert_int_equal(nnp_diff_pair_count(many), nnp_diff_pair_count(one));
    assert_int_equal(nnp_diff_pair_count(one), 2);
    assert_non_null(nnp_diff_pair_at(one, 1)->adapters);
    assert_true(nnp_diff_pair_at(one, 0)->metrics.nan_port == 1);
    for (size_t i = 0; i < nnp_diff_pair_count(one); i++) {
        const nnp_diff_pair *m = nnp_diff_pair_at(many, i), *s = nnp_diff_pair_at(one, i);
        assert_int_equal(m->verdict, s->verdict);
        assert_memory_equal(&m->metrics, &s->metrics, sizeof s->metrics);
    }
    assert_int_equal(nnp_diff_first_divergence(many), nnp_diff_first_divergence(one));
    assert_int_equal(nnp_diff_nonfinite_origin(many), nnp_diff_nonfinite_origin(one));

    /* a failure on one process is every process's, with its rank in the message */
    remove(port);
    procs[0].diff = NULL;
    for (int k = 0; k < PROCS; k++) {
        nnp_dump_close(procs[k].r);
        nnp_dump_close(procs[k].p);
        procs[k] = (proc){{&s, k}, ref, k == 2 ? port : ref, rules, NNP_OK, NULL, NULL, NULL};
        assert_int_equal(pthread_create(&th[k], NULL, run_proc, &procs[k]), 0);
    }
    for (int k = 0; k < PROCS; k++)
        pthread_join(th[k], NULL);
    for (int k = 0; k < PROCS; k++) {
        assert_int_equal(procs[k].st, NNP_ERR_IO);
        nnp_dump_close(procs[k].r);
        nnp_dump_close(procs[k].p);
    }
    pthread_barrier_destroy(&s.barrier);
    nnp_diff_free(many);
    nnp_diff_free(one);
    nnp_dump_close(r);
    nnp_dump_close(p);
    nnp_rules_free(rules);
}

/* A gather joins at most 64 ranks' copies of a name (docs/scale.md): a name 70 ranks hold is left
 * unmatched on both sides, with a word, and nothing is written past the parts a join holds. */
static void test_gather_beyond_its_limit(void **state)
{
    (void)state;
    enum { RANKS = 70 };
    char dir[300], ref[300], prefix[16];
    scratch(dir, sizeof dir, "wide");
    for (int k = 0; k < RANKS; k++) {
        snprintf(prefix, sizeof prefix, "r%d_", k);
        capture_rank(dir, k, RANKS, prefix);
    }
    nnp_writer *w;
    assert_int_equal(nnp_writer_open(scratch(ref, sizeof ref, "wide_ref.safetensors"), 0, &w),
                     NNP_OK);
    float x[2 * RANKS] = {0};
    uint64_t shape[1] = {2 * RANKS};
    nnp_record_desc desc = {.name = "shared/out0", .dtype = NNP_F32, .ndim = 1, .shape = shape};
    assert_int_equal(nnp_writer_add(w, &desc, x), NNP_OK);
    assert_int_equal(nnp_writer_close(w), NNP_OK);

    nnp_rules *rules;
    assert_int_equal(nnp_rules_parse("gather ^shared/ concat 0\n", "g", &rules), NNP_OK);
    nnp_dump *r, *p;
    assert_int_equal(nnp_dump_open_both(ref, dir, &r, &p), NNP_OK);
    nnp_diff_options o = {sizeof o, rules, -1, -1, 0, true, NULL, NULL, NULL, NULL, false, NULL};
    nnp_diff *d;
    assert_int_equal(nnp_diff_dumps(r, p, &o, &d), NNP_OK);
    assert_int_equal(nnp_diff_pair_count(d), 0);
    assert_int_equal(nnp_diff_unmatched_ref_count(d), 1);
    /* every rank's two copies of shared/out0 and its four own records */
    assert_int_equal(nnp_diff_unmatched_port_count(d), RANKS * 6);
    nnp_diff_free(d);
    nnp_dump_close(r);
    nnp_dump_close(p);
    nnp_rules_free(rules);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rank_file_names),
        cmocka_unit_test(test_rank_capture_reads_as_one_dump),
        cmocka_unit_test(test_rank_names_that_clash_refused),
        cmocka_unit_test(test_capture_rank_options_checked),
        cmocka_unit_test(test_distributed_diff_equals_one_process),
        cmocka_unit_test(test_gather_beyond_its_limit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
