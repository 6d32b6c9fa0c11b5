/*
 * gen_dump.c - writes the benchmark dumps with nnparity's own streaming writer, so that they
 * carry the provenance metadata a real capture has. Values come from a fixed-seed generator:
 * the same command always writes the same bytes.
 *
 *   gen_dump big OUT [TENSORS [MIB [DTYPE [port]]]]
 *                                      TENSORS (default 8) tensors of MIB MiB (default 256) each,
 *                                      standard normal values stored as DTYPE (F32, the default;
 *                                      BF16 and F16 round to nearest even). With the word `port`,
 *                                      the same values with a small known difference (below), as
 *                                      a port's capture of the same layers would hold
 *   gen_dump many OUT [COUNT]          COUNT (default 100000) small F32 tensors [4, 4], as a
 *                                      long capture of a deep model leaves behind
 */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nnparity.h"

/* The port's known difference from the reference of the same DTYPE: every 16th element (flat
 * index 5 mod 16) is one unit in the last place away (its lowest stored bit flipped), and in
 * tensor t the element at PORT_WORST(t, n) is 0.5 larger (then rounded to DTYPE): the one
 * element outside the default tolerances, and the worst by max-abs. */
#define PORT_WORST(t, n) (((uint64_t)(t) * 2654435761u + 12345u) % (n))

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

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* float to bfloat16, rounding to nearest even (the values here are finite). */
static uint16_t to_bf16(float f)
{
    uint32_t u = f32_bits(f);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

/* float to IEEE half, rounding to nearest even; overflow to infinity, subnormals kept. */
static uint16_t to_f16(float f)
{
    uint32_t u = f32_bits(f), sign = (u >> 16) & 0x8000u;
    u &= 0x7fffffffu;
    if (u >= 0x7f800000u)
        return (uint16_t)(sign | 0x7c00u | (u > 0x7f800000u ? 0x200u : 0));
    if (u >= 0x477ff000u) /* 65520 and up round to infinity */
        return (uint16_t)(sign | 0x7c00u);
    if (u < 0x38800000u) /* below 2^-14: a subnormal, in units of 2^-24 */
        return (uint16_t)(sign | (uint32_t)lrintf(fabsf(f) * 0x1p24f));
    return (uint16_t)(sign | ((u + 0xfffu + ((u >> 13) & 1u) - 0x38000000u) >> 13));
}

/* Store x[0..n) as dtype into out (n elements of its size). */
static void store_as(nnp_dtype dtype, const float *x, size_t n, void *out)
{
    if (dtype == NNP_F32) {
        memcpy(out, x, n * sizeof *x);
        return;
    }
    uint16_t *h = out;
    for (size_t i = 0; i < n; i++)
        h[i] = dtype == NNP_BF16 ? to_bf16(x[i]) : to_f16(x[i]);
}

/* Turn the reference's stored elements into the port's: see PORT_WORST. */
static void perturb(nnp_dtype dtype, float *x, void *stored, size_t n, size_t t)
{
    size_t w = (size_t)PORT_WORST(t, n);
    x[w] += 0.5f; /* F32 is stored in x itself */
    if (dtype != NNP_F32)
        store_as(dtype, x + w, 1, (unsigned char *)stored + w * nnp_dtype_size(dtype));
    for (size_t i = 5; i < n; i += 16) {
        if (i == w)
            continue;
        if (dtype == NNP_F32) {
            uint32_t *u = stored;
            u[i] ^= 1u;
        } else {
            uint16_t *h = stored;
            h[i] ^= 1u;
        }
    }
}

static int gen_big(const char *out, size_t tensors, size_t mib, nnp_dtype dtype, bool port)
{
    size_t es = nnp_dtype_size(dtype);
    size_t n = mib * (1u << 20) / es;
    float *x = malloc(n * sizeof *x);
    void *stored = dtype == NNP_F32 ? (void *)x : malloc(n * es);
    if (!x || !stored) {
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
        store_as(dtype, x, n, stored);
        if (port)
            perturb(dtype, x, stored, n, t);
        nnp_record_desc desc = {NULL, module, "out0", "Linear", 0, dtype, 2, shape};
        if ((st = nnp_writer_add(w, &desc, stored))) {
            nnp_writer_abort(w);
            return fail(out, st);
        }
    }
    if (stored != x)
        free(stored);
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
    if (argc >= 3 && strcmp(argv[1], "big") == 0 && argc <= 7) {
        nnp_dtype dtype = argc > 5 ? nnp_dtype_from_name(argv[5]) : NNP_F32;
        bool port = argc > 6 && strcmp(argv[6], "port") == 0;
        if ((dtype == NNP_F32 || dtype == NNP_BF16 || dtype == NNP_F16) && (argc <= 6 || port))
            return gen_big(argv[2], argc > 3 ? strtoul(argv[3], NULL, 10) : 8,
                           argc > 4 ? strtoul(argv[4], NULL, 10) : 256, dtype, port);
    }
    if (argc >= 3 && strcmp(argv[1], "many") == 0 && argc <= 4)
        return gen_many(argv[2], argc > 3 ? strtoul(argv[3], NULL, 10) : 100000);
    fprintf(stderr, "usage: gen_dump big OUT [TENSORS [MIB [F32|BF16|F16 [port]]]]\n"
                    "       gen_dump many OUT [COUNT]\n");
    return 2;
}
