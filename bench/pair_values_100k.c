/*
 * pair_values_100k.c - pairing by evidence at scale: two captures of N records (default
 * 100,000) written by nnparity's own writer, so that they carry stored fingerprints, whose
 * names share nothing. The port holds the reference's values (its records renamed, a few
 * missing, a few of its own added, one value in ten recorded twice as the next module's input,
 * and every other record computed a little differently: 1e-3 relative noise, as a port in
 * another summation order or precision), so every pair must come from values, half of them
 * from sketches rather than equal bytes. Times, in one process, the median of RUNS runs of:
 *
 *   open      opening both captures at once, as `nnparity diff` does (nnp_dump_open_both: the
 *             headers, not the data)
 *   pair      identity classes, the value chain and the structural gaps: nnp__pair_records
 *             from the stored fingerprints (decoded on first use), the data never read
 *   total     the two: what `nnparity diff` pays before it compares a pair
 *
 * in wall-clock seconds and in CPU seconds of every thread (on a machine shared with other
 * work the wall clock counts their time too), and checks how many records were paired as the
 * captures were built.
 *
 *   pair_values_100k DIR [RECORDS [RUNS]]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "diff/diff.h"

static double clock_s(clockid_t c)
{
    struct timespec t;
    clock_gettime(c, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void fail(const char *what)
{
    fprintf(stderr, "pair_values_100k: %s: %s\n", what, nnp_last_error());
    exit(1);
}

static uint64_t rng = 0x243f6a8885a308d3ull;

static float next_value(void)
{
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((int64_t)(rng >> 11) - (1ll << 52)) / (float)(1ll << 52);
}

/* Write a capture: record i holds values[i]; `port` renames every record, drops every 200th,
 * adds one of its own every 200th, and records one value in ten a second time as an input. */
static void write_capture(const char *path, const float *values, size_t n, bool port)
{
    nnp_writer *w;
    if (nnp_writer_open(path, 2 * n, &w) != NNP_OK)
        fail(path);
    uint64_t shape[2] = {4, 16};
    char module[64];
    float extra[64];
    float noisy[64];
    for (size_t i = 0; i < n; i++) {
        const float *v = values + i * 64;
        if (port && i % 200 == 7)
            continue;
        if (port && i % 2) {
            for (int k = 0; k < 64; k++)
                noisy[k] = v[k] * (1.0f + 1e-3f * next_value());
            v = noisy;
        }
        snprintf(module, sizeof module, port ? "engine.blk%zu.op" : "model.layers.%zu.fc", i);
        nnp_record_desc d = {NULL, module, "out0", port ? "" : "Linear", 0, NNP_F32, 2, shape};
        if (nnp_writer_add(w, &d, v) != NNP_OK)
            fail("adding a record");
        if (port && i % 10 == 3) {
            snprintf(module, sizeof module, "engine.blk%zu.next", i);
            nnp_record_desc in = {NULL, module, "in0", "", 0, NNP_F32, 2, shape};
            if (nnp_writer_add(w, &in, v) != NNP_OK)
                fail("adding an input");
        }
        if (port && i % 200 == 100) {
            for (int k = 0; k < 64; k++)
                extra[k] = next_value();
            snprintf(module, sizeof module, "engine.blk%zu.scratch", i);
            nnp_record_desc x = {NULL, module, "out0", "", 0, NNP_F32, 2, shape};
            if (nnp_writer_add(w, &x, extra) != NNP_OK)
                fail("adding a port record");
        }
    }
    if (nnp_writer_close(w) != NNP_OK)
        fail(path);
}

static int by_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: pair_values_100k DIR [RECORDS [RUNS]]\n");
        return 2;
    }
    size_t n = argc > 2 ? strtoul(argv[2], NULL, 10) : 100000;
    int runs = argc > 3 ? atoi(argv[3]) : 5;
    if (runs < 1)
        runs = 1;
    float *values = malloc(n * 64 * sizeof *values);
    if (!values)
        return 1;
    for (size_t i = 0; i < n * 64; i++)
        values[i] = next_value();
    char ref_path[4096], port_path[4096];
    snprintf(ref_path, sizeof ref_path, "%s/pair_ref.safetensors", argv[1]);
    snprintf(port_path, sizeof port_path, "%s/pair_port.safetensors", argv[1]);
    /* the captures of an earlier run of the same size are reused */
    nnp_dump *old;
    bool have = nnp_dump_open(port_path, &old) == NNP_OK;
    if (have) {
        have = nnp_dump_count(old) == n + n / 10 + (n + 99) / 200 - (n + 192) / 200;
        nnp_dump_close(old);
    }
    if (!have) {
        write_capture(ref_path, values, n, false);
        write_capture(port_path, values, n, true);
    }
    free(values);

    /* wall and CPU seconds of open, pair and the two together, RUNS of each */
    double *t = malloc(6 * runs * sizeof *t);
    if (!t)
        return 1;
    size_t paired = 0, wrong = 0, nport = 0;
    for (int r = 0; r < runs; r++) {
        double t0 = clock_s(CLOCK_MONOTONIC), c0 = clock_s(CLOCK_PROCESS_CPUTIME_ID);
        nnp_dump *ref, *port;
        if (nnp_dump_open_both(ref_path, port_path, &ref, &port) != NNP_OK)
            fail("opening");
        double t1 = clock_s(CLOCK_MONOTONIC), c1 = clock_s(CLOCK_PROCESS_CPUTIME_ID);
        nnp_diff_options o;
        nnp_diff_options_init(&o);
        nnp_diff *d = calloc(1, sizeof *d);
        if (!d || nnp__pair_records(ref, port, &o, d) != NNP_OK)
            fail("pairing");
        double t2 = clock_s(CLOCK_MONOTONIC), c2 = clock_s(CLOCK_PROCESS_CPUTIME_ID);
        t[r] = t1 - t0;
        t[runs + r] = t2 - t1;
        t[2 * runs + r] = t2 - t0;
        t[3 * runs + r] = c1 - c0;
        t[4 * runs + r] = c2 - c1;
        t[5 * runs + r] = c2 - c0;
        paired = d->npairs;
        wrong = 0;
        for (size_t i = 0; i < d->npairs; i++) {
            const nnp_record *a = nnp_dump_record(ref, d->pairs[i].ref);
            const nnp_record *b = nnp_dump_record(port, d->pairs[i].port);
            /* model.layers.<i>.fc pairs with engine.blk<i>.op or engine.blk<i>.next */
            const char *x = a->module + strlen("model.layers."), *y = b->module +
                                                                    strlen("engine.blk");
            if (strtoul(x, NULL, 10) != strtoul(y, NULL, 10))
                wrong++;
        }
        nport = nnp_dump_count(port);
        nnp_diff_free(d);
        nnp_dump_close(ref);
        nnp_dump_close(port);
    }
    for (int k = 0; k < 6; k++)
        qsort(t + k * runs, runs, sizeof *t, by_double);
    size_t expect = n - (n + 192) / 200;
    printf("records: %zu reference, %zu port; paired %zu of the %zu with a partner, %zu wrongly\n",
           n, nport, paired, expect, wrong);
    printf("medians of %d, seconds:  wall   CPU\n", runs);
    static const char *const what[] = {"open both (headers, provenance)",
                                       "pair (sketches, identity, chain, gaps)", "total"};
    for (int k = 0; k < 3; k++)
        printf("  %-40s %.3f  %.3f\n", what[k], t[k * runs + runs / 2],
               t[(k + 3) * runs + runs / 2]);
    free(t);
    return wrong || paired != expect;
}
