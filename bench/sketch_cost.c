/*
 * sketch_cost.c - what records' fingerprints (docs/sketch.md) cost: at capture, where the
 * writer sketches every record it adds, and on reading, where a dump's stored sketches are
 * decoded the first time they are asked for. The peer runs capture with NNPARITY_SKETCH=0,
 * which leaves the sketches out. Linked against the static library (`records` calls the
 * kernel itself).
 *
 *   sketch_cost capture OUT COUNT ELEMS RUNS
 *       COUNT float32 records of ELEMS elements through nnp_tap into OUT, RUNS times with
 *       sketches and RUNS times without, alternately (which goes first swaps from run to run);
 *       prints the medians and the share of the capture's time that the sketches take, (with
 *       - without) / with, in wall-clock and in CPU time (all threads), then the median of
 *       that share taken in each run's pair: two captures a few tenths of a second apart see
 *       the same machine, where the medians of each side may come from different minutes.
 *   sketch_cost decode A B RUNS
 *       opens A and B with nnp_dump_open_both, then times nnp_dump_sketches over every record
 *       of both (the stored sketches decoded and checked), RUNS times on fresh opens; prints
 *       the median, and the header size of A.
 *   sketch_cost records FILE RUNS
 *       copies every record of FILE into memory, as a capture's writer is handed them, then
 *       times sketching them on one thread (nnp__sketch_tensor, what the writer runs for each
 *       record it writes: not for one of a tensor stored before, same_as); prints the median
 *       in seconds (bench/sketch_torch.py sets it against the capture that wrote FILE).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

static double clock_s(clockid_t c)
{
    struct timespec t;
    clock_gettime(c, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static double now(void)
{
    return clock_s(CLOCK_MONOTONIC);
}

static int by_value(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, by_value);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static int fail(const char *what)
{
    fprintf(stderr, "sketch_cost: %s: %s\n", what, nnp_last_error());
    return 2;
}

/* The capture's wall-clock seconds; *cpu gets the CPU seconds of every thread of the process:
 * on a machine whose cores are all busy the wall clock counts other programs' time too. */
static double capture(const char *out, int count, uint64_t elems, const float *x, double *cpu)
{
    remove(out);
    double t = now(), c = clock_s(CLOCK_PROCESS_CPUTIME_ID);
    nnp_capture_options o;
    nnp_capture_options_init(&o);
    o.expected_records = (size_t)count;
    if (nnp_capture_open(out, &o) != NNP_OK)
        return -1;
    char name[64];
    for (int k = 0; k < count; k++) {
        snprintf(name, sizeof name, "layers.%d", k);
        if (nnp_tap(name, "out0", NNP_F32, 1, &elems, x) != NNP_OK)
            return -1;
    }
    if (nnp_capture_close() != NNP_OK)
        return -1;
    *cpu = clock_s(CLOCK_PROCESS_CPUTIME_ID) - c;
    return now() - t;
}

static int run_capture(const char *out, int count, uint64_t elems, int runs)
{
    float *x = malloc(elems * sizeof *x);
    /* wall with, wall without, cpu, cpu; then each pair's share of wall time */
    double *t = malloc(5 * (size_t)runs * sizeof *t);
    if (!x || !t || count <= 0 || runs <= 0)
        return 2;
    for (uint64_t i = 0; i < elems; i++)
        x[i] = (float)(i % 1000) * 0.001f - 0.5f;
    double c;
    capture(out, count, elems, x, &c); /* warm the page cache and the file system */
    for (int r = 0; r < runs; r++) {
        for (int k = 0; k < 2; k++) {
            bool with = (k + r) % 2 == 0;
            if (with)
                unsetenv("NNPARITY_SKETCH");
            else
                setenv("NNPARITY_SKETCH", "0", 1);
            int at = with ? r : runs + r;
            t[at] = capture(out, count, elems, x, &t[2 * runs + at]);
            if (t[at] < 0)
                return fail("capture");
        }
        t[4 * runs + r] = (t[r] - t[runs + r]) / t[r];
    }
    unsetenv("NNPARITY_SKETCH");
    remove(out);
    double paired = median(t + 4 * runs, runs);
    double w = median(t, runs), wo = median(t + runs, runs);
    double cw = median(t + 2 * runs, runs), cwo = median(t + 3 * runs, runs);
    printf("sketch_cost capture: %d x %llu float32 (%.1f MiB), median of %d\n", count,
           (unsigned long long)elems, (double)count * (double)elems * 4 / 1048576, runs);
    printf("  with sketches     %.4f s wall, %.4f s CPU\n", w, cw);
    printf("  without sketches  %.4f s wall, %.4f s CPU\n", wo, cwo);
    printf("  sketch share of capture time = %.1f%% wall, %.1f%% CPU  (target < 5%%)\n",
           100 * (w - wo) / w, 100 * (cw - cwo) / cw);
    printf("  median of each run's pair = %.1f%% wall\n", 100 * paired);
    free(x);
    free(t);
    return 0;
}

static int run_decode(const char *a, const char *b, int runs)
{
    double *t = malloc((size_t)runs * sizeof *t);
    if (!t || runs <= 0)
        return 2;
    size_t n = 0;
    uint64_t header = 0;
    for (int r = 0; r < runs; r++) {
        nnp_dump *da, *db;
        if (nnp_dump_open_both(a, b, &da, &db) != NNP_OK)
            return fail("open");
        if (!nnp_dump_meta_get(da, NNP_META_SKETCHES_KEY) ||
            !nnp_dump_meta_get(db, NNP_META_SKETCHES_KEY)) {
            fprintf(stderr, "sketch_cost: %s or %s stores no sketches\n", a, b);
            return 2;
        }
        header = nnp__dump_header_room(da);
        size_t na = nnp_dump_count(da), nb = nnp_dump_count(db), m = na > nb ? na : nb;
        size_t *idx = malloc(m * sizeof *idx);
        nnp_sketch *out = malloc(m * sizeof *out);
        if (!idx || !out)
            return 2;
        for (size_t i = 0; i < m; i++)
            idx[i] = i;
        double t0 = now();
        if (nnp_dump_sketches(da, idx, na, 0, out) != NNP_OK ||
            nnp_dump_sketches(db, idx, nb, 0, out) != NNP_OK)
            return fail("sketches");
        t[r] = now() - t0;
        n = na + nb;
        free(idx);
        free(out);
        nnp_dump_close(da);
        nnp_dump_close(db);
    }
    printf("sketch_cost decode: the stored sketches of %zu records (two dumps), median of %d\n",
           n, runs);
    printf("  decode and check  %.4f s  (target well under 1 s)\n", median(t, runs));
    printf("  header of %s: %.1f MB (safetensors' limit: 100 MB)\n", a, (double)header / 1e6);
    free(t);
    return 0;
}

static int run_records(const char *path, int runs)
{
    nnp_dump *d;
    if (nnp_dump_open(path, &d) != NNP_OK)
        return fail("open");
    size_t n = nnp_dump_count(d);
    void **copy = calloc(n ? n : 1, sizeof *copy);
    double *t = malloc((size_t)(runs > 0 ? runs : 1) * sizeof *t);
    if (!copy || !t || runs <= 0)
        return 2;
    for (size_t i = 0; i < n; i++) {
        const nnp_record *r = nnp_dump_record(d, i);
        const void *data = NULL;
        if (r->nbytes && nnp_dump_data(d, i, &data) != NNP_OK)
            return fail("data");
        if (!(copy[i] = malloc(r->nbytes ? r->nbytes : 1)))
            return 2;
        if (r->nbytes)
            memcpy(copy[i], data, r->nbytes);
    }
    for (int k = 0; k < runs; k++) {
        double t0 = now();
        for (size_t i = 0; i < n; i++) {
            const nnp_record *r = nnp_dump_record(d, i);
            nnp_sketch s;
            /* a record of a tensor recorded before (same_as) is not sketched at capture */
            if (!nnp_record_same_as(d, i))
                nnp__sketch_tensor(r->dtype, r->ndim, r->shape, copy[i], r->nelem, &s);
        }
        t[k] = now() - t0;
    }
    printf("%.6f\n", median(t, runs));
    for (size_t i = 0; i < n; i++)
        free(copy[i]);
    free(copy);
    free(t);
    nnp_dump_close(d);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 6 && strcmp(argv[1], "capture") == 0)
        return run_capture(argv[2], atoi(argv[3]), strtoull(argv[4], NULL, 10), atoi(argv[5]));
    if (argc == 5 && strcmp(argv[1], "decode") == 0)
        return run_decode(argv[2], argv[3], atoi(argv[4]));
    if (argc == 4 && strcmp(argv[1], "records") == 0)
        return run_records(argv[2], atoi(argv[3]));
    fprintf(stderr, "usage: sketch_cost capture OUT COUNT ELEMS RUNS\n"
                    "       sketch_cost decode A.safetensors B.safetensors RUNS\n"
                    "       sketch_cost records FILE RUNS\n");
    return 2;
}
