/*
 * where_cost.c - what profiles and hints add to a diff (docs/diff.md, "Where and hints"): two
 * F32 dumps of `count` tensors of `elems` elements whose every pair fails (the worst case: each
 * is read again), diffed with and without them, alternately, `runs` times; prints the medians
 * and the ratio (target: at most 1.15).
 *
 *   where_cost DIR COUNT ELEMS RUNS
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nnparity.h"

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int write_dump(const char *path, int count, uint64_t elems, int port)
{
    float *v = malloc(elems * sizeof *v);
    nnp_writer *w;
    if (!v || nnp_writer_open(path, (size_t)count, &w))
        return 1;
    uint64_t shape[3] = {4, elems / 4 / 256, 256}, s = 1;
    for (int k = 0; k < count; k++) {
        for (uint64_t i = 0; i < elems; i++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            v[i] = (float)((double)(s >> 40) / (double)(1ull << 24) - 0.5);
            if (port) /* a small error everywhere: every pair fails, nothing explains it */
                v[i] += (float)(1e-3 * ((double)((s >> 20) & 1023) / 1024.0 - 0.5));
        }
        char name[32];
        snprintf(name, sizeof name, "layer%d/out0", k);
        nnp_record_desc d = {.name = name, .module_type = "Linear", .dtype = NNP_F32, .ndim = 3,
                             .shape = shape};
        if (nnp_writer_add(w, &d, v))
            return 1;
    }
    free(v);
    return nnp_writer_close(w) != NNP_OK;
}

static double one(nnp_dump *r, nnp_dump *p, bool explain)
{
    nnp_diff_options o;
    nnp_diff_options_init(&o);
    o.no_explain = !explain;
    nnp_diff *d;
    double t = now();
    if (nnp_diff_dumps(r, p, &o, &d)) {
        fprintf(stderr, "where_cost: %s\n", nnp_last_error());
        exit(1);
    }
    t = now() - t;
    /* every pair explained, whichever batch it was explained in */
    for (size_t i = 0; explain && i < nnp_diff_pair_count(d); i++)
        if (!nnp_diff_profile(d, i)) {
            fprintf(stderr, "where_cost: pair %zu has no profile\n", i);
            exit(1);
        }
    nnp_diff_free(d);
    return t;
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: where_cost DIR COUNT ELEMS RUNS\n");
        return 2;
    }
    int count = atoi(argv[2]), runs = atoi(argv[4]);
    uint64_t elems = strtoull(argv[3], NULL, 10);
    char ref[4096], port[4096];
    snprintf(ref, sizeof ref, "%s/where_ref.safetensors", argv[1]);
    snprintf(port, sizeof port, "%s/where_port.safetensors", argv[1]);
    if (write_dump(ref, count, elems, 0) || write_dump(port, count, elems, 1)) {
        fprintf(stderr, "where_cost: %s\n", nnp_last_error());
        return 1;
    }
    nnp_dump *r, *p;
    if (nnp_dump_open_both(ref, port, &r, &p)) {
        fprintf(stderr, "where_cost: %s\n", nnp_last_error());
        return 1;
    }
    double *with = malloc(runs * sizeof *with), *without = malloc(runs * sizeof *without);
    one(r, p, false); /* warm the page cache */
    for (int k = 0; k < runs; k++) {
        without[k] = one(r, p, false);
        with[k] = one(r, p, true);
    }
    qsort(with, runs, sizeof *with, cmp);
    qsort(without, runs, sizeof *without, cmp);
    double a = without[runs / 2], b = with[runs / 2];
    printf("where_cost: %d x %llu F32, every pair failing: diff %.3f s, with profiles and hints "
           "%.3f s: x%.3f (target <= 1.15)\n", count, (unsigned long long)elems, a, b, b / a);
    nnp_dump_close(r);
    nnp_dump_close(p);
    if (!getenv("WHERE_KEEP")) {
        remove(ref);
        remove(port);
    }
    free(with);
    free(without);
    return 0;
}
