/*
 * crc_diff.c - what checking archive members' CRC-32 adds to a diff, measured in one process
 * on the same two files, so that nothing but the check differs. Each round opens both dumps
 * afresh (their pages stay in the page cache) and times nnp_diff_dumps in one of three ways,
 * the three taken in turn RUNS times:
 *   none      every member checked beforehand, untimed: the diff has nothing left to check
 *   folded    nnp_dump_defer_checks, as `nnparity diff` does: the comparing pass computes the
 *             CRC of what it has just compared; then nnp_dump_finish_checks
 *   separate  nnp_dump_data's own check: one pass over each member before the diff reads it
 * Prints the median seconds of each and their ratios to `none`.
 *
 *   crc_diff REF PORT [RUNS [THREADS]]     RUNS (default 7, at most 100), THREADS (default 0:
 *                                          one per CPU)
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "nnparity.h"

enum { NONE, FOLDED, SEPARATE, MODES };
static const char *const mode_name[MODES] = {"none", "folded", "separate"};

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
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
    fprintf(stderr, "crc_diff: %s: %s\n", what, nnp_last_error());
    return 1;
}

/* Ask for every record's data: nnp_dump_data checks each member it has not checked yet. */
static nnp_status touch_all(nnp_dump *d)
{
    for (size_t i = 0; i < nnp_dump_count(d); i++) {
        const void *p;
        nnp_status st = nnp_dump_data(d, i, &p);
        if (st)
            return st;
        nnp_dump_release(d, i);
    }
    return NNP_OK;
}

static int one_round(const char *ref_path, const char *port_path, int mode, int threads,
                     double *seconds)
{
    nnp_dump *ref, *port;
    if (nnp_dump_open_both(ref_path, port_path, &ref, &port))
        return fail("open");
    if (mode == NONE && (touch_all(ref) || touch_all(port)))
        return fail("check");
    nnp_diff_options o;
    nnp_diff_options_init(&o);
    o.threads = threads;
    nnp_diff *diff = NULL;
    double t = now();
    if (mode == FOLDED) {
        nnp_dump_defer_checks(ref);
        nnp_dump_defer_checks(port);
    }
    nnp_status st = mode == SEPARATE ? touch_all(ref) : NNP_OK;
    if (!st && mode == SEPARATE)
        st = touch_all(port);
    if (!st)
        st = nnp_diff_dumps(ref, port, &o, &diff);
    if (!st && mode == FOLDED && !(st = nnp_dump_finish_checks(ref)))
        st = nnp_dump_finish_checks(port);
    *seconds = now() - t;
    nnp_diff_free(diff);
    nnp_dump_close(ref);
    nnp_dump_close(port);
    return st ? fail("diff") : 0;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: crc_diff REF PORT [RUNS [THREADS]]\n");
        return 2;
    }
    int runs = argc > 3 ? atoi(argv[3]) : 7, threads = argc > 4 ? atoi(argv[4]) : 0;
    if (runs < 1 || runs > 100)
        runs = 7;
    double t[MODES][100];
    for (int m = 0; m < MODES; m++) { /* one untimed round each */
        double ignored;
        if (one_round(argv[1], argv[2], m, threads, &ignored))
            return 1;
    }
    for (int r = 0; r < runs; r++)
        for (int m = 0; m < MODES; m++)
            if (one_round(argv[1], argv[2], m, threads, &t[m][r]))
                return 1;
    double med[MODES];
    for (int m = 0; m < MODES; m++)
        med[m] = median(t[m], runs);
    printf("crc_diff: nnp_diff_dumps of %s and %s, median of %d\n", argv[1], argv[2], runs);
    for (int m = 0; m < MODES; m++)
        printf("  %-9s %.3f s   %.2f x none\n", mode_name[m], med[m], med[m] / med[NONE]);
    return 0;
}
