/*
 * kernel_cached.c - how fast the diff's compare kernel runs when memory is not in the way: each
 * of THREADS threads compares its own block of NNP_CMP_BLOCK pairs (16 KiB of F32, in the core's
 * L1 cache) over and over through nnp__cmp_block, the call `nnparity diff` makes for every block
 * of a large tensor. Prints the pairs compared per second by all threads together, as
 * nanoseconds a pair, the median of RUNS timings of about 0.2 s each.
 *
 * diff_vs_probe.sh sets this beside the memory-bandwidth probe: a diff can be no faster than
 * either, so the two say which one bounds it on this machine and the best ratio to the probe
 * that any reading strategy could reach with this kernel.
 *
 *   kernel_cached [-j THREADS] DTYPE [RUNS]     DTYPE F32, BF16 or F16 (both sides); RUNS 5
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

enum { MAX_THREADS = 64, MAX_RUNS = 100 };

typedef struct {
    nnp_dtype dtype;
    uint64_t repeats;
    unsigned char ref[NNP_CMP_BLOCK * 4], port[NNP_CMP_BLOCK * 4];
    double sink; /* read after the run, so the calls cannot be dropped */
} worker;

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

/* Standard normal values (Box-Muller over a fixed LCG) and a port a relative 1e-3 off them,
 * stored as the dtype: the data the diff benchmark's dumps hold, in the kernel's common path
 * (finite, pivot near the mean). */
static void fill(worker *w, unsigned seed)
{
    float r[NNP_CMP_BLOCK], p[NNP_CMP_BLOCK];
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    for (size_t i = 0; i < NNP_CMP_BLOCK; i++) {
        double u[3];
        for (int k = 0; k < 3; k++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            u[k] = ((double)(s >> 11) + 0.5) / 9007199254740992.0;
        }
        r[i] = (float)(sqrt(-2 * log(u[0])) * cos(6.283185307179586 * u[1]));
        p[i] = r[i] * (float)(1 + 1e-3 * (u[2] - 0.5));
    }
    nnp_convert(NNP_F32, r, NNP_CMP_BLOCK, w->dtype, w->ref);
    nnp_convert(NNP_F32, p, NNP_CMP_BLOCK, w->dtype, w->port);
}

static void *run(void *arg)
{
    worker *w = arg;
    nnp_cmp_sums s;
    double acc = 0;
    for (uint64_t i = 0; i < w->repeats; i++)
        if (nnp__cmp_block(w->dtype, w->ref, w->dtype, w->port, NNP_CMP_BLOCK, 1e-5, 1e-3, &s))
            acc += s.sd2;
    w->sink = acc;
    return NULL;
}

/* Seconds for every thread to run its repeats, started together. */
static double timed(worker *w, int threads)
{
    pthread_t id[MAX_THREADS];
    double t0 = now();
    int started = 0;
    for (; started < threads; started++)
        if (pthread_create(&id[started], NULL, run, &w[started]) != 0)
            break;
    for (int t = 0; t < started; t++)
        pthread_join(id[t], NULL);
    if (started < threads) {
        fprintf(stderr, "kernel_cached: could not start thread %d\n", started + 1);
        exit(1);
    }
    return now() - t0;
}

int main(int argc, char **argv)
{
    int threads = 1, a = 1;
    if (argc > 2 && strcmp(argv[1], "-j") == 0) {
        threads = atoi(argv[2]);
        a = 3;
    }
    nnp_dtype dtype = argc > a ? nnp_dtype_from_name(argv[a]) : NNP_DTYPE_INVALID;
    int runs = argc > a + 1 ? atoi(argv[a + 1]) : 5;
    if (threads < 1 || threads > MAX_THREADS || runs < 1 || runs > MAX_RUNS ||
        !nnp__cmp_fast_dtype(dtype)) {
        fprintf(stderr, "usage: kernel_cached [-j THREADS (1..%d)] F32|BF16|F16 [RUNS (1..%d)]\n",
                MAX_THREADS, MAX_RUNS);
        return 2;
    }
    worker *w = calloc((size_t)threads, sizeof *w);
    if (!w) {
        fprintf(stderr, "kernel_cached: out of memory\n");
        return 1;
    }
    for (int t = 0; t < threads; t++) {
        w[t].dtype = dtype;
        w[t].repeats = 1000;
        fill(&w[t], (unsigned)t + 1);
    }
    /* size the repeats for about 0.2 s a timing, from a first short one */
    double first = timed(w, threads);
    uint64_t repeats = (uint64_t)(1000 * 0.2 / (first > 1e-6 ? first : 1e-6)) + 1;
    for (int t = 0; t < threads; t++)
        w[t].repeats = repeats;
    double ns[MAX_RUNS];
    for (int r = 0; r < runs; r++)
        ns[r] = timed(w, threads) * 1e9 / ((double)repeats * NNP_CMP_BLOCK * threads);
    for (int t = 0; t < threads; t++)
        if (!(w[t].sink > 0)) { /* every block is finite and differs: the kernel did not run */
            fprintf(stderr, "kernel_cached: the kernel refused the %s blocks\n", argv[a]);
            free(w);
            return 1;
        }
    qsort(ns, (size_t)runs, sizeof *ns, by_value);
    double med = runs % 2 ? ns[runs / 2] : (ns[runs / 2 - 1] + ns[runs / 2]) / 2;
    printf("%s %.4f ns a pair with %d threads\n", argv[a], med, threads);
    free(w);
    return 0;
}
