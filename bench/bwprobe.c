/*
 * bwprobe.c - the floor for any full read of a file: map it read-only and read every byte with
 * N threads, doing the least work that still touches each byte (a sum of 64-bit words). It reads
 * the way nnparity's stats pass does (the same chunk size, chunks handed out in file order
 * through one atomic counter, each chunk prefaulted before it is read), so that the two differ
 * only in what they compute per byte.
 *
 *   bwprobe [-j N] FILE      prints bytes, seconds and GB/s (10^9 bytes per second)
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* 4 MiB: what stats.c takes as one task for an F32 tensor (2^20 elements). */
#define CHUNK (4u << 20)

typedef struct {
    const unsigned char *base;
    uint64_t size, nchunks;
    atomic_uint_fast64_t next;
    uint64_t sums[256];
} probe;

typedef struct {
    probe *p;
    int t;
} worker_arg;

static void prefault(const unsigned char *a, size_t n)
{
    /* Page-align the start; the mapping itself is page-aligned so the end needs no care. */
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t s = (uintptr_t)a & ~(page - 1);
    n += (uintptr_t)a - s;
#ifdef MADV_POPULATE_READ
    if (madvise((void *)s, n, MADV_POPULATE_READ) == 0)
        return;
#endif
    madvise((void *)s, n, MADV_WILLNEED);
}

/* Four independent accumulators over aligned 64-bit words: vectorizes at -O2 -ftree-vectorize
 * (and is bound by memory, not by the adds, either way). */
static uint64_t sum_words(const unsigned char *a, size_t n)
{
    const uint64_t *w = (const uint64_t *)a;
    size_t nw = n / 8;
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    size_t i = 0;
    for (; i + 4 <= nw; i += 4) {
        s0 += w[i];
        s1 += w[i + 1];
        s2 += w[i + 2];
        s3 += w[i + 3];
    }
    for (; i < nw; i++)
        s0 += w[i];
    for (size_t b = nw * 8; b < n; b++)
        s1 += a[b];
    return s0 + s1 + s2 + s3;
}

static void *worker(void *arg)
{
    worker_arg *wa = arg;
    probe *p = wa->p;
    uint64_t sum = 0;
    for (;;) {
        uint64_t c = atomic_fetch_add_explicit(&p->next, 1, memory_order_relaxed);
        if (c >= p->nchunks)
            break;
        uint64_t off = c * CHUNK;
        size_t n = p->size - off < CHUNK ? (size_t)(p->size - off) : CHUNK;
        prefault(p->base + off, n);
        sum += sum_words(p->base + off, n);
    }
    p->sums[wa->t] = sum;
    return NULL;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
    int threads = 2, opt;
    while ((opt = getopt(argc, argv, "j:")) != -1) {
        if (opt == 'j' && atoi(optarg) >= 1 && atoi(optarg) <= 256) {
            threads = atoi(optarg);
        } else {
            fprintf(stderr, "usage: bwprobe [-j N] FILE   (1 <= N <= 256)\n");
            return 2;
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr, "usage: bwprobe [-j N] FILE\n");
        return 2;
    }
    const char *path = argv[optind];
    double t0 = now();
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || st.st_size <= 0) {
        fprintf(stderr, "bwprobe: %s: %s\n", path, fd < 0 ? strerror(errno) : "empty or unreadable");
        return 1;
    }
    probe *p = calloc(1, sizeof *p);
    p->size = (uint64_t)st.st_size;
    p->nchunks = (p->size + CHUNK - 1) / CHUNK;
    /* MAP_PRIVATE read-only, as the library maps dumps. */
    void *m = mmap(NULL, p->size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (m == MAP_FAILED) {
        fprintf(stderr, "bwprobe: %s: cannot map: %s\n", path, strerror(errno));
        return 1;
    }
    p->base = m;

    pthread_t tid[256];
    worker_arg args[256];
    for (int t = 0; t < threads; t++)
        args[t] = (worker_arg){p, t};
    /* The calling thread is one of the workers, as in the library's thread pool. */
    for (int t = 1; t < threads; t++)
        pthread_create(&tid[t], NULL, worker, &args[t]);
    worker(&args[0]);
    uint64_t total = p->sums[0];
    for (int t = 1; t < threads; t++) {
        pthread_join(tid[t], NULL);
        total += p->sums[t];
    }
    munmap(m, p->size);
    double secs = now() - t0;
    printf("%llu bytes in %.3f s: %.2f GB/s with %d threads (checksum %016llx)\n",
           (unsigned long long)p->size, secs, (double)p->size / secs / 1e9, threads,
           (unsigned long long)total);
    free(p);
    return 0;
}
