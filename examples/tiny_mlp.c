/*
 * tiny_mlp.c - a small "ported engine" in plain C that records every layer through libnnparity's
 * writer: the input of each layer and its output, with module paths, roles, call indices and
 * module types, the way a port taps its layers. It runs a LayerNorm -> Linear -> GELU -> Linear
 * block twice (two calls of the same modules, as frames or decode steps would), with weights from
 * a fixed seed.
 *
 *   tiny_mlp OUT.safetensors [--bad-eps]
 *
 * --bad-eps gives the LayerNorm a negative epsilon, so that a row with a tiny variance takes the
 * square root of a negative number: the kind of slip `nnparity stats` finds as the first NaN.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nnparity.h"

enum { TOKENS = 4, DIM = 8, HIDDEN = 16 };

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static float uniform(void)
{
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(rng >> 11) / 9007199254740992.0) * 2.0f - 1.0f;
}

typedef struct {
    nnp_writer *w;
    int failed;
} tap_ctx;

/* Record one [rows, cols] float32 tensor. */
static void tap(tap_ctx *t, const char *module, const char *type, const char *role,
                uint64_t call, const float *x, uint64_t rows, uint64_t cols)
{
    uint64_t shape[2] = {rows, cols};
    nnp_record_desc desc = {.module = module, .role = role, .module_type = type, .call = call,
                            .dtype = NNP_F32, .ndim = 2, .shape = shape};
    if (!t->failed && nnp_writer_add(t->w, &desc, x) != NNP_OK) {
        fprintf(stderr, "tiny_mlp: %s\n", nnp_last_error());
        t->failed = 1;
    }
}

static void layer_norm(const float *x, float *y, int rows, int cols, float eps)
{
    for (int r = 0; r < rows; r++) {
        float mean = 0, var = 0;
        for (int c = 0; c < cols; c++)
            mean += x[r * cols + c];
        mean /= (float)cols;
        for (int c = 0; c < cols; c++)
            var += (x[r * cols + c] - mean) * (x[r * cols + c] - mean);
        var /= (float)cols;
        float inv = 1.0f / sqrtf(var + eps);
        for (int c = 0; c < cols; c++)
            y[r * cols + c] = (x[r * cols + c] - mean) * inv;
    }
}

static void linear(const float *x, const float *w, const float *b, float *y, int rows, int in,
                   int out)
{
    for (int r = 0; r < rows; r++)
        for (int o = 0; o < out; o++) {
            float s = b[o];
            for (int i = 0; i < in; i++)
                s += x[r * in + i] * w[o * in + i];
            y[r * out + o] = s;
        }
}

static void gelu(const float *x, float *y, int n)
{
    for (int i = 0; i < n; i++)
        y[i] = 0.5f * x[i] * (1.0f + erff(x[i] / sqrtf(2.0f)));
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 3 || (argc == 3 && strcmp(argv[2], "--bad-eps") != 0)) {
        fprintf(stderr, "usage: tiny_mlp OUT.safetensors [--bad-eps]\n");
        return 2;
    }
    float eps = argc == 3 ? -1e-3f : 1e-5f;
    static float w1[HIDDEN * DIM], b1[HIDDEN], w2[DIM * HIDDEN], b2[DIM];
    for (int i = 0; i < HIDDEN * DIM; i++) w1[i] = uniform() * 0.5f;
    for (int i = 0; i < HIDDEN; i++) b1[i] = uniform() * 0.1f;
    for (int i = 0; i < DIM * HIDDEN; i++) w2[i] = uniform() * 0.25f;
    for (int i = 0; i < DIM; i++) b2[i] = uniform() * 0.1f;

    tap_ctx t = {0};
    if (nnp_writer_open(argv[1], 16, &t.w) != NNP_OK) {
        fprintf(stderr, "tiny_mlp: %s\n", nnp_last_error());
        return 2;
    }
    nnp_writer_set_meta(t.w, "model", "tiny_mlp");
    float x[TOKENS * DIM], n[TOKENS * DIM], h[TOKENS * HIDDEN], g[TOKENS * HIDDEN],
        y[TOKENS * DIM];
    for (uint64_t call = 0; call < 2; call++) {
        for (int i = 0; i < TOKENS * DIM; i++)
            x[i] = uniform();
        /* token 3 of the second call is nearly constant: its variance is tiny */
        if (call == 1)
            for (int c = 0; c < DIM; c++)
                x[3 * DIM + c] = 0.5f + 1e-4f * (float)c;
        tap(&t, "block.norm", "LayerNorm", "in0", call, x, TOKENS, DIM);
        layer_norm(x, n, TOKENS, DIM, eps);
        tap(&t, "block.norm", "LayerNorm", "out0", call, n, TOKENS, DIM);
        linear(n, w1, b1, h, TOKENS, DIM, HIDDEN);
        tap(&t, "block.fc1", "Linear", "out0", call, h, TOKENS, HIDDEN);
        gelu(h, g, TOKENS * HIDDEN);
        tap(&t, "block.act", "GELU", "out0", call, g, TOKENS, HIDDEN);
        linear(g, w2, b2, y, TOKENS, HIDDEN, DIM);
        tap(&t, "block.fc2", "Linear", "out0", call, y, TOKENS, DIM);
    }
    if (t.failed) {
        nnp_writer_abort(t.w);
        return 2;
    }
    if (nnp_writer_close(t.w) != NNP_OK) {
        fprintf(stderr, "tiny_mlp: %s\n", nnp_last_error());
        return 2;
    }
    return 0;
}
