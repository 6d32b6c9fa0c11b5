/*
 * crc_speed.c - how fast the CRC-32 that checks archive members runs: each implementation
 * nnparity has (common/crc32.c) on a buffer in the L2 cache and on one far larger than the
 * caches, in GB/s, beside zlib's crc32 (and ISA-L's crc32_gzip_refl where built with
 * -DWITH_ISAL); with FILE arguments, the one-thread check pass that nnp_dump_data makes over a
 * member (16 MiB steps over the mapped file, from the page cache).
 *
 *   crc_speed [FILE...]
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/crc32.h"
#ifdef WITH_ISAL
#include <isa-l/crc.h>
#endif

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* Best of five rounds of `bytes` total, in GB/s. */
static double rate(int impl, const unsigned char *p, size_t n, size_t bytes)
{
    double best = 0;
    volatile uint32_t sink = 0;
    for (int round = 0; round < 5; round++) {
        double t = now();
        for (size_t done = 0; done < bytes; done += n) {
#ifdef WITH_ISAL
            if (impl == NNP_CRC_IMPLS) {
                sink ^= crc32_gzip_refl(0, p, n);
                continue;
            }
#endif
            sink ^= nnp__crc32_with((nnp_crc_impl)impl, 0, p, n);
        }
        double r = (double)bytes / (now() - t) / 1e9;
        best = r > best ? r : best;
    }
    (void)sink;
    return best;
}

int main(int argc, char **argv)
{
    size_t big = (size_t)256 << 20, small = (size_t)64 << 10;
    unsigned char *buf = malloc(big);
    if (!buf)
        return 1;
    for (size_t i = 0; i < big; i++)
        buf[i] = (unsigned char)(i * 2654435761u >> 13);
    int impls = NNP_CRC_IMPLS;
#ifdef WITH_ISAL
    impls++;
#endif
    for (int k = 0; k < impls; k++) {
        if (k < NNP_CRC_IMPLS && !nnp__crc32_available((nnp_crc_impl)k))
            continue;
        const char *name = k < NNP_CRC_IMPLS ? nnp__crc32_impl_name((nnp_crc_impl)k) : "isa-l";
        printf("  %-8s 64 KiB in L2: %6.2f GB/s   256 MiB: %6.2f GB/s%s\n", name,
               rate(k, buf, small, (size_t)1 << 30), rate(k, buf, big, big),
               k < NNP_CRC_IMPLS && nnp__crc32_with((nnp_crc_impl)k, 0, buf, big) !=
                       nnp__crc32_with(NNP_CRC_ZLIB, 0, buf, big) ? "  WRONG" : "");
    }
    for (int f = 1; f < argc; f++) {
        int fd = open(argv[f], O_RDONLY);
        struct stat st;
        if (fd < 0 || fstat(fd, &st) != 0)
            return 1;
        size_t n = (size_t)st.st_size, step = (size_t)16 << 20;
        unsigned char *p = mmap(NULL, n, PROT_READ, MAP_SHARED, fd, 0);
        if (p == MAP_FAILED)
            return 1;
        double t = now();
        uint32_t crc = 0;
        for (size_t done = 0; done < n; done += step)
            crc = nnp__crc32(crc, p + done, n - done < step ? n - done : step);
        t = now() - t;
        printf("  check pass over %s: %.3f s, %.2f GB/s (crc %08x)\n", argv[f], t,
               (double)n / t / 1e9, crc);
        munmap(p, n);
        close(fd);
    }
    free(buf);
    return 0;
}
