/*
 * gen_dump.c - writes the benchmark dumps with nnparity's own streaming writer, so that they
 * carry the provenance metadata a real capture has. Values come from a fixed-seed generator:
 * the same command always writes the same bytes.
 *
 *   gen_dump big OUT [TENSORS [MIB]]   TENSORS (default 8) F32 tensors of MIB MiB (default 256)
 *                                      each, standard normal values
 *   gen_dump many OUT [COUNT]          COUNT (default 100000) small F32 tensors [4, 4], as a
 *                                      long capture of a deep model leaves behind
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nnparity.h"

/* xoshiro256** with splitmix64 seeding: fast, and reproducible across libcs (rand() is not). */
static uint64_t rng_s[4];

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t rng_next(void)
{
    uint64_t r = rotl(rng_s[1] * 5, 7) * 9, t = rng_s[1] << 17;
    rng_s[2] ^= rng_s[0];
    rng_s[3] ^= rng_s[1];
    rng_s[1] ^= rng_s[2];
    rng_s[0] ^= rng_s[3];
    rng_s[2] ^= t;
    rng_s[3] = rotl(rng_s[3], 45);
    return r;
}

static void rng_seed(uint64_t seed)
{
    for (int i = 0; i < 4; i++) {
        uint64_t z = (seed += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        rng_s[i] = z ^ (z >> 31);
    }
}

/* Standard normal pairs by Box-Muller; u1 is kept away from 0 so log() stays finite. */
static void fill_normal(float *x, size_t n)
{
    for (size_t i = 0; i < n; i += 2) {
        double u1 = ((double)(rng_next() >> 11) + 1.0) * 0x1.0p-53;
        double u2 = (double)(rng_next() >> 11) * 0x1.0p-53;
        double r = sqrt(-2.0 * log(u1)), a = 6.283185307179586 * u2;
        x[i] = (float)(r * cos(a));
        if (i + 1 < n)
            x[i + 1] = (float)(r * sin(a));
    }
}

static int fail(const char *what, nnp_status st)
{
    fprintf(stderr, "gen_dump: %s: %s: %s\n", what, nnp_status_name(st), nnp_last_error());
    return 1;
}

static int gen_big(const char *out, size_t tensors, size_t mib)
{
    size_t n = mib * (1u << 20) / sizeof(float);
    float *x = malloc(n * sizeof *x);
    if (!x) {
        fprintf(stderr, "gen_dump: out of memory\n");
        return 1;
    }
    nnp_writer *w;
    nnp_status st = nnp_writer_open(out, tensors, &w);
    if (st)
        return fail(out, st);
    rng_seed(20261123);
    /* Square-ish 2-d shapes, like the weight or activation tensors of a large layer. */
    uint64_t shape[2] = {n / 4096, 4096};
    for (size_t t = 0; t < tensors; t++) {
        char module[64];
        snprintf(module, sizeof module, "layers.%zu.mlp", t);
        fill_normal(x, n);
        nnp_record_desc desc = {NULL, module, "out0", "Linear", 0, NNP_F32, 2, shape};
        if ((st = nnp_writer_add(w, &desc, x))) {
            nnp_writer_abort(w);
            return fail(out, st);
        }
    }
    free(x);
    if ((st = nnp_writer_close(w)))
        return fail(out, st);
    return 0;
}

static int gen_many(const char *out, size_t count)
{
    nnp_writer *w;
    nnp_status st = nnp_writer_open(out, count, &w);
    if (st)
        return fail(out, st);
    rng_seed(20261123);
    static const char *const roles[] = {"in0", "out0", "grad_out0", "weight"};
    static const char *const types[] = {"Linear", "LayerNorm", "GELU", "Attention"};
    uint64_t shape[2] = {4, 4};
    float x[16];
    for (size_t i = 0; i < count; i++) {
        char module[64];
        /* A deep model called many times: blocks.B.sub.S, each module's role repeated per call */
        snprintf(module, sizeof module, "blocks.%zu.sub.%zu", i / 64 % 512, i / 4 % 16);
        fill_normal(x, 16);
        nnp_record_desc desc = {NULL, module, roles[i % 4], types[i / 4 % 4], i / 32768,
                                NNP_F32, 2, shape};
        if ((st = nnp_writer_add(w, &desc, x))) {
            nnp_writer_abort(w);
            return fail(out, st);
        }
    }
    if ((st = nnp_writer_close(w)))
        return fail(out, st);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 3 && strcmp(argv[1], "big") == 0 && argc <= 5)
        return gen_big(argv[2], argc > 3 ? strtoul(argv[3], NULL, 10) : 8,
                       argc > 4 ? strtoul(argv[4], NULL, 10) : 256);
    if (argc >= 3 && strcmp(argv[1], "many") == 0 && argc <= 4)
        return gen_many(argv[2], argc > 3 ? strtoul(argv[3], NULL, 10) : 100000);
    fprintf(stderr, "usage: gen_dump big OUT [TENSORS [MIB]]\n"
                    "       gen_dump many OUT [COUNT]\n");
    return 2;
}
