/*
 * match_100k.c - what `nnparity diff` of two captures of many small records costs besides
 * reading large tensors: opening both dumps (headers, provenance, indexes; at once, with
 * nnp_dump_open_both, as `nnparity diff` opens them), then nnp_diff_dumps
 * (pairing by name, comparing each pair - 16 values each in the benchmark's files - and the
 * first divergence, order check and NaN origin). Each timed RUNS times in one process; prints
 * the medians and their sum.
 *
 *   match_100k REF PORT [RUNS]      RUNS (default 5, at most 100)
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "nnparity.h"

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

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: match_100k REF PORT [RUNS]\n");
        return 2;
    }
    int runs = argc > 3 ? atoi(argv[3]) : 5;
    if (runs < 1 || runs > 100) {
        fprintf(stderr, "match_100k: RUNS must be 1 to 100, not '%s'\n", argv[3]);
        return 2;
    }
    double open_t[100], diff_t[100];
    size_t npairs = 0;
    for (int i = 0; i < runs; i++) {
        nnp_dump *ref, *port;
        nnp_diff *d;
        double t0 = now();
        if (nnp_dump_open_both(argv[1], argv[2], &ref, &port)) {
            fprintf(stderr, "match_100k: %s\n", nnp_last_error());
            return 2;
        }
        double t1 = now();
        if (nnp_diff_dumps(ref, port, NULL, &d)) {
            fprintf(stderr, "match_100k: %s\n", nnp_last_error());
            return 2;
        }
        double t2 = now();
        npairs = nnp_diff_pair_count(d);
        nnp_diff_free(d);
        nnp_dump_close(ref);
        nnp_dump_close(port);
        open_t[i] = t1 - t0;
        diff_t[i] = t2 - t1;
    }
    double o = median(open_t, runs), m = median(diff_t, runs);
    printf("match_100k: %zu pairs, median of %d\n", npairs, runs);
    printf("  open both            %.3f s\n", o);
    printf("  pair and compare     %.3f s\n", m);
    printf("  open + match         %.3f s\n", o + m);
    return 0;
}
