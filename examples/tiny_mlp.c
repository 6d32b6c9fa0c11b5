/*
 * tiny_mlp.c - a small "ported engine" in plain C that taps every layer through libnnparity's
 * capture API, the way a port does: each layer's input through nnp_tap_inject (so that, under
 * injection, the layer runs on the reference's input) and its output through nnp_tap_record. It
 * runs a LayerNorm -> Linear -> GELU -> Linear block twice (two calls of the same modules, as
 * frames or decode steps would), with weights from a fixed seed.
 *
 *   tiny_mlp [OUT.safetensors] [--bad-eps] [--crash-at LAYER]
 *
 * Capture and injection follow the environment (NNPARITY_CAPTURE, NNPARITY_INJECT, NNPARITY_RULES),
 * which is what `nnparity run` sets; when it names neither, OUT (if given) is recorded through an
 * explicit nnp_capture_open.
 *
 * --bad-eps gives the LayerNorm a negative epsilon, so that a row with a tiny variance takes the
 * square root of a negative number: the kind of slip `nnparity stats` finds as the first NaN, and
 * that `nnparity run` shows as the LayerNorm's own error.
 * --crash-at LAYER aborts the process when layer LAYER is about to run (layers count 0-3 in the
 * first call, 4-7 in the second), as a port that crashes mid-run does: the capture keeps the
 * layers before it.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nnparity.h"

enum { TOKENS = 4, DIM = 8, HIDDEN = 16, LAYERS_PER_CALL = 4, CALLS = 2 };

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static float uniform(void)
{
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(rng >> 11) / 9007199254740992.0) * 2.0f - 1.0f;
}

/* Set by the first tap that fails for a reason other than a record the reference lacks. */
static int tap_failed;
static long crash_at = -1;

static void check(nnp_status st)
{
    /* Under injection from a file that holds only some layers (a reproducer), the others are
     * simply not found: they run on their own inputs. */
    if (st != NNP_OK && st != NNP_ERR_NOT_FOUND && !tap_failed) {
        fprintf(stderr, "tiny_mlp: %s\n", nnp_last_error());
        tap_failed = 1;
    }
}

static void tap_in(const char *module, const char *type, float *x, uint64_t rows, uint64_t cols)
{
    uint64_t shape[2] = {rows, cols};
    nnp_tap_desc d = {module, "in0", type, NNP_F32, 2, shape};
    check(nnp_tap_inject(&d, x));
}

static void tap_out(const char *module, const char *type, const float *y, uint64_t rows,
                    uint64_t cols)
{
    uint64_t shape[2] = {rows, cols};
    nnp_tap_desc d = {module, "out0", type, NNP_F32, 2, shape};
    check(nnp_tap_record(&d, y));
}

/* Called as each layer starts; the layers before it have been recorded. */
static void enter_layer(long layer, const char *module)
{
    if (layer != crash_at)
        return;
    fprintf(stderr, "tiny_mlp: --crash-at %ld: aborting in %s (call %ld)\n", layer, module,
            layer / LAYERS_PER_CALL);
    abort();
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

static int usage(void)
{
    fprintf(stderr, "usage: tiny_mlp [OUT.safetensors] [--bad-eps] [--crash-at LAYER]\n");
    return 2;
}

static int env_set(const char *name)
{
    const char *v = getenv(name);
    return v && *v;
}

int main(int argc, char **argv)
{
    const char *out = NULL;
    float eps = 1e-5f;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--bad-eps") == 0) {
            eps = -1e-3f;
        } else if (strcmp(argv[i], "--crash-at") == 0 && i + 1 < argc) {
            char *end;
            errno = 0;
            crash_at = strtol(argv[++i], &end, 10);
            if (errno || *end || crash_at < 0 || crash_at >= LAYERS_PER_CALL * CALLS) {
                fprintf(stderr, "tiny_mlp: --crash-at takes a layer from 0 to %d, not '%s'\n",
                        LAYERS_PER_CALL * CALLS - 1, argv[i]);
                return 2;
            }
        } else if (argv[i][0] == '-' || out) {
            return usage();
        } else {
            out = argv[i];
        }
    }
    /* The environment wins: `nnparity run` names the files there, and an explicit open would
     * take the environment's place. */
    int from_env = env_set("NNPARITY_CAPTURE") || env_set("NNPARITY_INJECT");
    if (from_env) {
        if (out)
            fprintf(stderr, "tiny_mlp: the environment names the capture; %s is not written\n",
                    out);
        /* An environment session that cannot start has said why on stderr: stop here rather
         * than run uncaptured. */
        if (!nnp_capture_active())
            return 2;
    } else if (out) {
        nnp_capture_options o;
        nnp_capture_options_init(&o);
        o.expected_records = 2 * LAYERS_PER_CALL * CALLS;
        if (nnp_capture_open(out, &o) != NNP_OK) {
            fprintf(stderr, "tiny_mlp: %s\n", nnp_last_error());
            return 2;
        }
    }

    static float w1[HIDDEN * DIM], b1[HIDDEN], w2[DIM * HIDDEN], b2[DIM];
    for (int i = 0; i < HIDDEN * DIM; i++) w1[i] = uniform() * 0.5f;
    for (int i = 0; i < HIDDEN; i++) b1[i] = uniform() * 0.1f;
    for (int i = 0; i < DIM * HIDDEN; i++) w2[i] = uniform() * 0.25f;
    for (int i = 0; i < DIM; i++) b2[i] = uniform() * 0.1f;

    /* Each layer reads its own input buffer, as an engine's layers do; under injection the tap
     * overwrites it with the reference's input before the layer runs. */
    float x[TOKENS * DIM], n[TOKENS * DIM], h[TOKENS * HIDDEN], g[TOKENS * HIDDEN],
        y[TOKENS * DIM];
    float n_in[TOKENS * DIM], h_in[TOKENS * HIDDEN], g_in[TOKENS * HIDDEN];
    double checksum = 0;
    for (long call = 0; call < CALLS; call++) {
        long layer = call * LAYERS_PER_CALL;
        for (int i = 0; i < TOKENS * DIM; i++)
            x[i] = uniform();
        /* token 3 of the second call is nearly constant: its variance is tiny */
        if (call == 1)
            for (int c = 0; c < DIM; c++)
                x[3 * DIM + c] = 0.5f + 1e-4f * (float)c;

        enter_layer(layer++, "block.norm");
        tap_in("block.norm", "LayerNorm", x, TOKENS, DIM);
        layer_norm(x, n, TOKENS, DIM, eps);
        tap_out("block.norm", "LayerNorm", n, TOKENS, DIM);

        enter_layer(layer++, "block.fc1");
        memcpy(n_in, n, sizeof n);
        tap_in("block.fc1", "Linear", n_in, TOKENS, DIM);
        linear(n_in, w1, b1, h, TOKENS, DIM, HIDDEN);
        tap_out("block.fc1", "Linear", h, TOKENS, HIDDEN);

        enter_layer(layer++, "block.act");
        memcpy(h_in, h, sizeof h);
        tap_in("block.act", "GELU", h_in, TOKENS, HIDDEN);
        gelu(h_in, g, TOKENS * HIDDEN);
        tap_out("block.act", "GELU", g, TOKENS, HIDDEN);

        enter_layer(layer++, "block.fc2");
        memcpy(g_in, g, sizeof g);
        tap_in("block.fc2", "Linear", g_in, TOKENS, HIDDEN);
        linear(g_in, w2, b2, y, TOKENS, HIDDEN, DIM);
        tap_out("block.fc2", "Linear", y, TOKENS, DIM);

        for (int i = 0; i < TOKENS * DIM; i++)
            checksum += y[i];
    }
    if (nnp_capture_close() != NNP_OK) {
        fprintf(stderr, "tiny_mlp: %s\n", nnp_last_error());
        return 2;
    }
    if (tap_failed)
        return 2;
    if (!out && !from_env)
        printf("tiny_mlp: output sum %.6f (nothing captured: give OUT or NNPARITY_CAPTURE)\n",
               checksum);
    return 0;
}
