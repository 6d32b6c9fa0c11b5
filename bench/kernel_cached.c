/*
 * kernel_cached.c - how fast the diff's compare kernel runs when memory is not in the way: each
 * of THREADS threads compares its own block of NNP_CMP_BLOCK pairs (16 KiB of F32, in the core's
 * L1 cache, 64-byte aligned) over and over through nnp__cmp_block, the call `nnparity diff`
 * makes for every block of a large tensor. Prints the pairs compared per second by all threads
 * together, as nanoseconds a pair (so 2 threads print half of one thread's time a pair), the
 * fastest of RUNS timings of about 0.2 s each: the kernel's best, for a lower bound.
 *
 * diff_vs_probe.sh sets this beside the memory-bandwidth probe: a diff can be no faster than
 * its kernel, so the two say whether the kernel or the reading bounds it on this machine.
 *
 *   kernel_cached [-j THREADS] DTYPE [RUNS]     THREADS 1 (1..64); DTYPE F32, BF16 or F16 (both
 *                                               sides); RUNS 5 (1..100)
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
    _Alignas(64) unsigned char ref[NNP_CMP_BLOCK * 4];
    _Alignas(64) unsigned char port[NNP_CMP_BLOCK * 4];
    nnp_dtype dtype;
    uint64_t repeats;
    pthread_barrier_t *start;
    double began, ended; /* when this thread's repeats began and ended */
    double sink;         /* read after the run, so the calls cannot be dropped */
} worker;

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* Standard normal values (Box-Muller over a fixed LCG), as the diff benchmark's dumps hold, and
 * a port off them by a relative amount within +-5e-4, both stored as the dtype (rounding leaves
 * some pairs equal). The kernel has no branch on the values but its checks that the block is
 * finite and that its pivot, the first pair, lies near the mean: these blocks pass both, as the
 * dumps' blocks do, so the kernel's one-pass path is what is timed. */
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
    pthread_barrier_wait(w->start);
    w->began = now();
    for (uint64_t i = 0; i < w->repeats; i++)
        if (nnp__cmp_block(w->dtype, w->ref, w->dtype, w->port, NNP_CMP_BLOCK, 1e-5, 1e-3, &s))
            acc += s.sd2;
    w->ended = now();
    w->sink = acc;
    return NULL;
}

/* Seconds from the first thread's start of its repeats to the last one's end, every thread
 * having waited for the others to be ready. Timed by the threads themselves: the main thread
 * may be scheduled out while they run. */
static double timed(worker *w, int threads)
{
    pthread_t id[MAX_THREADS];
    pthread_barrier_t start;
    if (pthread_barrier_init(&start, NULL, (unsigned)threads + 1) != 0) {
        fprintf(stderr, "kernel_cached: no barrier for %d threads\n", threads);
        exit(1);
    }
    for (int t = 0; t < threads; t++) {
        w[t].start = &start;
        if (pthread_create(&id[t], NULL, run, &w[t]) != 0) {
            fprintf(stderr, "kernel_cached: could not start thread %d\n", t + 1);
            exit(1); /* the started ones wait at the barrier: nothing to join */
        }
    }
    pthread_barrier_wait(&start);
    double began = 0, ended = 0;
    for (int t = 0; t < threads; t++) {
        pthread_join(id[t], NULL);
        began = t == 0 || w[t].began < began ? w[t].began : began;
        ended = t == 0 || w[t].ended > ended ? w[t].ended : ended;
    }
    pthread_barrier_destroy(&start);
    return ended - began;
}

/* A whole decimal number in lo..hi, or -1. */
static long number(const char *s, long lo, long hi)
{
    char *end;
    long v = strtol(s, &end, 10);
    return end != s && *end == '\0' && v >= lo && v <= hi ? v : -1;
}

int main(int argc, char **argv)
{
    int threads = 1, a = 1;
    if (argc > 2 && strcmp(argv[1], "-j") == 0) {
        threads = (int)number(argv[2], 1, MAX_THREADS);
        a = 3;
    }
    nnp_dtype dtype = argc > a ? nnp_dtype_from_name(argv[a]) : NNP_DTYPE_INVALID;
    int runs = argc > a + 1 ? (int)number(argv[a + 1], 1, MAX_RUNS) : 5;
    if (threads < 1 || runs < 1 || argc > a + 2 || !nnp__cmp_fast_dtype(dtype)) {
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
        w[t].repeats = 10000;
        fill(&w[t], (unsigned)t + 1);
    }
    /* size the repeats for about 0.2 s a timing, from a first short one */
    double first = timed(w, threads);
    uint64_t repeats = (uint64_t)(10000 * 0.2 / (first > 1e-6 ? first : 1e-6)) + 1;
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
    double best = ns[0];
    for (int r = 1; r < runs; r++)
        best = ns[r] < best ? ns[r] : best;
    printf("%s %.4f ns a pair with %d threads\n", argv[a], best, threads);
    free(w);
    return 0;
}
