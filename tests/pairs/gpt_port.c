/*
 * gpt_port.c - a C port of the tiny GPT of tests/pairs/gpt_ref.py, written apart from it the way
 * an inference engine is: it decodes with a KV cache (the prompt in one prefill, then one token
 * per step, where the reference runs the whole prefix again at every step), under llama.cpp-like
 * names of its own and its own module boundaries (one fused qkv matmul, the cache written by the
 * attention's own code, GELU inlined in the MLP, logits for the last position only). It is test
 * material for pairing such a port with its reference without a rules file.
 *
 *   gpt_port WEIGHTS.safetensors [--tokens N] [--bug NAME]   (or NNP_PAIR_BUG=NAME)
 *
 * WEIGHTS comes from `gpt_ref.py --weights` and holds the prompt. The port prints the N tokens
 * it generates (default 4) and the last step's logits, as the reference does. Capture and
 * injection need no flag: the library reads NNPARITY_CAPTURE, NNPARITY_INJECT and
 * NNPARITY_RULES at the first tap. Every module taps the inputs it reads (so that injection can
 * replace them) and its outputs. --bug plants one porting mistake; `--bug list` lists them with
 * where each one lives. With no bug the port generates the reference's tokens.
 */
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nnparity.h"

enum {
    VOCAB = 64,
    DIM = 32,
    HEADS = 4,
    HEAD_DIM = DIM / HEADS,
    FFN = 128,
    LAYERS = 2,
    CTX = 16, /* positions the model has embeddings for, and the cache's length */
    NEW_TOKENS = 4
};

static const float LN_EPS = 1e-5f; /* nn.LayerNorm's default, which the reference keeps */

/* ---------------------------------------------------------------------------------------------
 * The switchable bugs. Each sits in one place of the port: a module's own computation, or the
 * code of a parent (the top level, a block, the attention) between its modules' taps.
 * ------------------------------------------------------------------------------------------- */

typedef enum {
    BUG_NO_RESIDUAL = 1, /* the residual add around the attention dropped */
    BUG_POS_OFF_BY_ONE,  /* decode steps look up the position embedding of n_past + 1 */
    BUG_SOFTMAX_SCALE,   /* scores scaled by 1/head_dim instead of 1/sqrt(head_dim) */
    BUG_NO_CAUSAL_MASK,  /* prefill lets every token attend to the ones after it */
    BUG_KV_SLOT,         /* decode writes k and v one cache slot past their position */
    BUG_QK_SWAP,         /* the fused weight's q and k rows (and biases) swapped when loading */
    BUG_NO_BIAS,         /* the attention's output projection without its bias */
    BUG_LN_EPS,          /* every LayerNorm with eps 1e-6 */
    BUG_GELU_TANH,       /* every MLP with the tanh approximation of GELU */
    BUG_HEAD_SPLIT       /* heads taken interleaved (dimension d of head h at d*HEADS + h) */
} bug_kind;

enum { ANY_LAYER = -1 };

typedef struct {
    const char *name;
    bug_kind kind;
    int layer;        /* the block it lives in, or ANY_LAYER */
    const char *what; /* where it lives, and what is wrong there */
} bug_desc;

static const bug_desc BUGS[] = {
    {"no-residual", BUG_NO_RESIDUAL, 1, "blk.1 (code): residual add around the attention dropped"},
    {"pos-off-by-one", BUG_POS_OFF_BY_ONE, ANY_LAYER,
     "top level (code): decode looks up position n_past + 1"},
    {"softmax-scale", BUG_SOFTMAX_SCALE, 0, "blk.0.attn_kqv: scores scaled by 1/head_dim"},
    {"no-causal-mask", BUG_NO_CAUSAL_MASK, 1, "blk.1.attn_kqv: prefill without the causal mask"},
    {"kv-slot", BUG_KV_SLOT, 0, "blk.0.attn (code): decode writes k, v one slot too far"},
    {"qk-swap", BUG_QK_SWAP, 1, "blk.1.attn_qkv: q and k rows of the fused weight swapped"},
    {"no-bias", BUG_NO_BIAS, 0, "blk.0.attn_output: bias left out"},
    {"ln-eps", BUG_LN_EPS, ANY_LAYER, "every LayerNorm, first blk.0.attn_norm: eps 1e-6"},
    {"gelu-tanh", BUG_GELU_TANH, ANY_LAYER, "blk.N.ffn (code), first blk.0.ffn: tanh GELU"},
    {"head-split", BUG_HEAD_SPLIT, 1, "blk.1.attn_kqv: heads split interleaved"},
};
enum { N_BUGS = sizeof BUGS / sizeof BUGS[0] };

static const bug_desc *active_bug; /* NULL: the port as it should be */

static bool bug_in(bug_kind kind, int layer)
{
    return active_bug && active_bug->kind == kind &&
           (active_bug->layer == ANY_LAYER || active_bug->layer == layer);
}

/* ---------------------------------------------------------------------------------------------
 * Weights (see port_weights() in gpt_ref.py)
 * ------------------------------------------------------------------------------------------- */

typedef struct {
    float *w; /* [out][in], as torch stores a Linear's weight */
    float *b; /* [out]; NULL: no bias */
} linear_w;

typedef struct {
    float *w, *b; /* [DIM] scale and shift */
} norm_w;

typedef struct {
    norm_w attn_norm;
    linear_w qkv; /* [3 * DIM][DIM]: the q, k and v rows, in that order */
    linear_w out;
    norm_w ffn_norm;
    linear_w up, down;
} block_w;

typedef struct {
    float *tok; /* [VOCAB][DIM] */
    float *pos; /* [CTX][DIM] */
    block_w blk[LAYERS];
    norm_w out_norm;
    linear_w head; /* [VOCAB][DIM], no bias */
    int64_t prompt[CTX];
    int prompt_len;
    void *owned[64]; /* every tensor above, to free */
    int nowned;
} gpt_w;

typedef struct {
    nnp_dump *dump;
    const char *path;
    gpt_w *w;
    bool failed;
} loader;

/* A copy of the tensor `name`, which must be of `dtype` with exactly the dims given (d1 0: one
 * dim). A copy, because the mapped file gives no alignment guarantee. */
static void *load(loader *ld, const char *name, nnp_dtype dtype, uint64_t d0, uint64_t d1)
{
    if (ld->failed)
        return NULL;
    int64_t i = nnp_dump_find(ld->dump, name);
    if (i < 0) {
        fprintf(stderr, "gpt_port: %s: no tensor '%s'\n", ld->path, name);
        ld->failed = true;
        return NULL;
    }
    const nnp_record *r = nnp_dump_record(ld->dump, (size_t)i);
    uint32_t ndim = d1 ? 2 : 1;
    bool ok = r->dtype == dtype && r->ndim == ndim && r->shape[0] == d0 &&
              (ndim == 1 || r->shape[1] == d1);
    if (!ok) {
        fprintf(stderr, "gpt_port: %s: tensor '%s' is not the %s tensor of %u dims this model "
                        "needs (another configuration?)\n", ld->path, name, nnp_dtype_name(dtype),
                ndim);
        ld->failed = true;
        return NULL;
    }
    const void *data;
    void *copy = malloc(r->nbytes);
    if (!copy || ld->w->nowned == (int)(sizeof ld->w->owned / sizeof ld->w->owned[0])) {
        fprintf(stderr, "gpt_port: out of memory loading '%s'\n", name);
        free(copy);
        ld->failed = true;
        return NULL;
    }
    if (nnp_dump_data(ld->dump, (size_t)i, &data) != NNP_OK) {
        fprintf(stderr, "gpt_port: %s\n", nnp_last_error());
        free(copy);
        ld->failed = true;
        return NULL;
    }
    memcpy(copy, data, r->nbytes);
    ld->w->owned[ld->w->nowned++] = copy;
    return copy;
}

/* "<prefix>.<part>" */
static float *part(loader *ld, const char *prefix, const char *part, uint64_t d0, uint64_t d1)
{
    char name[64];
    snprintf(name, sizeof name, "%s.%s", prefix, part);
    return load(ld, name, NNP_F32, d0, d1);
}

static linear_w load_linear(loader *ld, const char *prefix, uint64_t out, uint64_t in, bool bias)
{
    linear_w l = {part(ld, prefix, "weight", out, in), NULL};
    if (bias)
        l.b = part(ld, prefix, "bias", out, 0);
    return l;
}

static norm_w load_norm(loader *ld, const char *prefix)
{
    norm_w n = {part(ld, prefix, "weight", DIM, 0), part(ld, prefix, "bias", DIM, 0)};
    return n;
}

static void free_weights(gpt_w *w)
{
    for (int i = 0; i < w->nowned; i++)
        free(w->owned[i]);
    w->nowned = 0;
}

/* The loader's mistake: the fused q and k thirds taken in the wrong order. */
static void swap_q_k(linear_w *qkv)
{
    for (int i = 0; i < DIM * DIM; i++) {
        float t = qkv->w[i];
        qkv->w[i] = qkv->w[DIM * DIM + i];
        qkv->w[DIM * DIM + i] = t;
    }
    for (int i = 0; i < DIM; i++) {
        float t = qkv->b[i];
        qkv->b[i] = qkv->b[DIM + i];
        qkv->b[DIM + i] = t;
    }
}

static bool load_weights(const char *path, gpt_w *w)
{
    memset(w, 0, sizeof *w);
    loader ld = {.path = path, .w = w};
    if (nnp_dump_open(path, &ld.dump) != NNP_OK) {
        fprintf(stderr, "gpt_port: %s\n", nnp_last_error());
        return false;
    }
    w->tok = part(&ld, "token_embd", "weight", VOCAB, DIM);
    w->pos = part(&ld, "position_embd", "weight", CTX, DIM);
    for (int l = 0; l < LAYERS; l++) {
        char prefix[32];
        block_w *b = &w->blk[l];
#define BLK(what) (snprintf(prefix, sizeof prefix, "blk.%d.%s", l, what), prefix)
        b->attn_norm = load_norm(&ld, BLK("attn_norm"));
        b->qkv = load_linear(&ld, BLK("attn_qkv"), 3 * DIM, DIM, true);
        b->out = load_linear(&ld, BLK("attn_output"), DIM, DIM, true);
        b->ffn_norm = load_norm(&ld, BLK("ffn_norm"));
        b->up = load_linear(&ld, BLK("ffn_up"), FFN, DIM, true);
        b->down = load_linear(&ld, BLK("ffn_down"), DIM, FFN, true);
#undef BLK
    }
    w->out_norm = load_norm(&ld, "output_norm");
    w->head = load_linear(&ld, "output", VOCAB, DIM, false);
    /* the prompt: any length that leaves room in the context */
    int64_t i = nnp_dump_find(ld.dump, "prompt");
    if (!ld.failed && i >= 0) {
        const nnp_record *r = nnp_dump_record(ld.dump, (size_t)i);
        if (r->ndim == 1 && r->shape[0] >= 1 && r->shape[0] < CTX) {
            int64_t *p = load(&ld, "prompt", NNP_I64, r->shape[0], 0);
            if (p) {
                w->prompt_len = (int)r->shape[0];
                memcpy(w->prompt, p, (size_t)w->prompt_len * sizeof *p);
            }
        } else {
            fprintf(stderr, "gpt_port: %s: 'prompt' must hold 1 to %d token ids\n", path, CTX - 1);
            ld.failed = true;
        }
    } else if (!ld.failed) {
        fprintf(stderr, "gpt_port: %s: no tensor 'prompt'\n", path);
        ld.failed = true;
    }
    nnp_dump_close(ld.dump);
    if (ld.failed) {
        free_weights(w);
        return false;
    }
    for (int l = 0; l < LAYERS; l++)
        if (bug_in(BUG_QK_SWAP, l))
            swap_q_k(&w->blk[l].qkv);
    return true;
}

/* ---------------------------------------------------------------------------------------------
 * Taps: "<module>/<role>" in the port's own names. A module taps each input it reads with
 * tap_in (under injection the buffer is first replaced by the reference's) and its result with
 * tap_out. Records keep torch's batch dimension: [1, n, cols]. With no session both return at
 * once.
 * ------------------------------------------------------------------------------------------- */

static void tap_failed(const char *what)
{
    fprintf(stderr, "gpt_port: tap %s: %s\n", what, nnp_last_error());
    exit(1);
}

/* Layer inputs the injection file held no record for: they ran on the port's own values. */
static unsigned not_injected;

static void injected(nnp_status st, const char *role)
{
    if (st == NNP_ERR_NOT_FOUND)
        not_injected++;
    else if (st != NNP_OK)
        tap_failed(role);
}

static void tap_in(const char *role, float *x, int rows, int cols, const char *fmt, ...)
    NNP_PRINTF(5, 6);
static void tap_in(const char *role, float *x, int rows, int cols, const char *fmt, ...)
{
    const uint64_t shape[] = {1, (uint64_t)rows, (uint64_t)cols};
    nnp_tap_desc d = {NULL, role, NULL, NNP_F32, 3, shape};
    va_list args;
    va_start(args, fmt);
    nnp_status st = nnp_vtap_injectf(&d, x, fmt, args);
    va_end(args);
    injected(st, role);
}

static void tap_ids_in(const char *module, int64_t *ids, int n)
{
    const uint64_t shape[] = {1, (uint64_t)n};
    injected(nnp_tap_inputf("in0", NNP_I64, 2, shape, ids, "%s", module), module);
}

static void tap_out(const float *y, int rows, int cols, const char *fmt, ...) NNP_PRINTF(4, 5);
static void tap_out(const float *y, int rows, int cols, const char *fmt, ...)
{
    const uint64_t shape[] = {1, (uint64_t)rows, (uint64_t)cols};
    nnp_tap_desc d = {NULL, "out0", NULL, NNP_F32, 3, shape};
    va_list args;
    va_start(args, fmt);
    nnp_status st = nnp_vtap_recordf(&d, y, fmt, args);
    va_end(args);
    if (st != NNP_OK)
        tap_failed("out0");
}

/* ---------------------------------------------------------------------------------------------
 * Kernels, computed as torch computes them (sums in float, in a plain order)
 * ------------------------------------------------------------------------------------------- */

/* y[r] = x[r] W^T + b for rows r; W is [out][in]; b may be NULL. */
static void matmul(const float *x, const linear_w *p, bool bias, float *y, int rows, int in,
                   int out)
{
    for (int r = 0; r < rows; r++)
        for (int o = 0; o < out; o++) {
            float s = bias && p->b ? p->b[o] : 0.0f;
            for (int i = 0; i < in; i++)
                s += x[r * in + i] * p->w[o * in + i];
            y[r * out + o] = s;
        }
}

/* LayerNorm over DIM: biased variance, as torch's. */
static void layer_norm(const float *x, const norm_w *p, float eps, float *y, int rows)
{
    for (int r = 0; r < rows; r++) {
        const float *xr = x + r * DIM;
        float mean = 0.0f, var = 0.0f;
        for (int c = 0; c < DIM; c++)
            mean += xr[c];
        mean /= DIM;
        for (int c = 0; c < DIM; c++)
            var += (xr[c] - mean) * (xr[c] - mean);
        var /= DIM;
        float inv = 1.0f / sqrtf(var + eps);
        for (int c = 0; c < DIM; c++)
            y[r * DIM + c] = (xr[c] - mean) * inv * p->w[c] + p->b[c];
    }
}

static float gelu_erf(float x)
{
    return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
}

static float gelu_tanh(float x)
{
    const float k = 0.79788456080286536f; /* sqrt(2/pi) */
    return 0.5f * x * (1.0f + tanhf(k * (x + 0.044715f * x * x * x)));
}

static void softmax(float *s, int n)
{
    float max = s[0], sum = 0.0f;
    for (int j = 1; j < n; j++)
        if (s[j] > max)
            max = s[j];
    for (int j = 0; j < n; j++) {
        s[j] = expf(s[j] - max);
        sum += s[j];
    }
    for (int j = 0; j < n; j++)
        s[j] /= sum;
}

/* ---------------------------------------------------------------------------------------------
 * The modules
 * ------------------------------------------------------------------------------------------- */

typedef struct {
    float k[LAYERS][CTX * DIM], v[LAYERS][CTX * DIM]; /* [slot][DIM] per layer */
} kv_cache;

enum { NAME_LEN = 32 }; /* room for any module name of this model */

/* "blk.<layer>.<part>" in buf, which it returns. */
static const char *blk_part(char buf[NAME_LEN], int layer, const char *part)
{
    snprintf(buf, NAME_LEN, "blk.%d.%s", layer, part);
    return buf;
}

/* `layer` says which block's bugs apply (the output norm has none of its own). */
static void norm_module(const char *name, int layer, float *x, const norm_w *p, float *y, int n)
{
    tap_in("in0", x, n, DIM, "%s", name);
    layer_norm(x, p, bug_in(BUG_LN_EPS, layer) ? 1e-6f : LN_EPS, y, n);
    tap_out(y, n, DIM, "%s", name);
}

static void linear_module(const char *name, float *x, const linear_w *p, bool bias, float *y,
                          int n, int in, int out)
{
    tap_in("in0", x, n, in, "%s", name);
    matmul(x, p, bias, y, n, in, out);
    tap_out(y, n, out, "%s", name);
}

/* Which column of a [.., DIM] row holds dimension d of head h. */
static int head_col(int layer, int h, int d)
{
    return bug_in(BUG_HEAD_SPLIT, layer) ? d * HEADS + h : h * HEAD_DIM + d;
}

/* blk.N.attn_kqv: the attention proper, softmax(q k^T * scale) v per head, for n queries at
 * positions n_past.. against the kv cached keys and values (K and V: [kv][DIM]). Its inputs are
 * q and the cache's first kv slots, tapped as in0, in1 and in2: under injection the cache itself
 * takes the reference's keys and values. */
static void attn_kqv(int layer, float *q, float *K, float *V, int n, int n_past, float *y)
{
    const int kv = n_past + n;
    tap_in("in0", q, n, DIM, "blk.%d.attn_kqv", layer);
    tap_in("in1", K, kv, DIM, "blk.%d.attn_kqv", layer);
    tap_in("in2", V, kv, DIM, "blk.%d.attn_kqv", layer);
    const float scale = bug_in(BUG_SOFTMAX_SCALE, layer) ? 1.0f / HEAD_DIM
                                                         : 1.0f / sqrtf((float)HEAD_DIM);
    for (int h = 0; h < HEADS; h++)
        for (int i = 0; i < n; i++) {
            /* the causal mask: query i sees the keys up to its own position */
            int seen = bug_in(BUG_NO_CAUSAL_MASK, layer) ? kv : n_past + i + 1;
            float s[CTX];
            for (int j = 0; j < seen; j++) {
                float dot = 0.0f;
                for (int d = 0; d < HEAD_DIM; d++)
                    dot += q[i * DIM + head_col(layer, h, d)] * K[j * DIM + head_col(layer, h, d)];
                s[j] = dot * scale;
            }
            softmax(s, seen);
            for (int d = 0; d < HEAD_DIM; d++) {
                float acc = 0.0f;
                for (int j = 0; j < seen; j++)
                    acc += s[j] * V[j * DIM + head_col(layer, h, d)];
                y[i * DIM + head_col(layer, h, d)] = acc;
            }
        }
    tap_out(y, n, DIM, "blk.%d.attn_kqv", layer);
}

/* blk.N.attn: the fused qkv projection, then (this module's own code) q split off and k, v
 * stored in the cache at their positions, then attn_kqv and the output projection. */
static void attention(int layer, float *x, const block_w *p, kv_cache *cache, int n, int n_past,
                      float *y)
{
    static float qkv[CTX * 3 * DIM], q[CTX * DIM], heads[CTX * DIM];
    float *K = cache->k[layer], *V = cache->v[layer];
    char name[NAME_LEN];
    tap_in("in0", x, n, DIM, "blk.%d.attn", layer);
    linear_module(blk_part(name, layer, "attn_qkv"), x, &p->qkv, true, qkv, n, DIM, 3 * DIM);
    for (int i = 0; i < n; i++) {
        int slot = n_past + i;
        if (bug_in(BUG_KV_SLOT, layer) && n_past > 0 && slot + 1 < CTX)
            slot++;
        memcpy(q + i * DIM, qkv + i * 3 * DIM, DIM * sizeof *q);
        memcpy(K + slot * DIM, qkv + i * 3 * DIM + DIM, DIM * sizeof *K);
        memcpy(V + slot * DIM, qkv + i * 3 * DIM + 2 * DIM, DIM * sizeof *V);
    }
    attn_kqv(layer, q, K, V, n, n_past, heads);
    linear_module(blk_part(name, layer, "attn_output"), heads, &p->out,
                  !bug_in(BUG_NO_BIAS, layer), y, n, DIM, DIM);
    tap_out(y, n, DIM, "blk.%d.attn", layer);
}

/* blk.N.ffn: ffn_up, GELU (in this module's own code, as engines fuse it), ffn_down. */
static void ffn(int layer, float *x, const block_w *p, int n, float *y)
{
    static float h[CTX * FFN];
    char name[NAME_LEN];
    tap_in("in0", x, n, DIM, "blk.%d.ffn", layer);
    linear_module(blk_part(name, layer, "ffn_up"), x, &p->up, true, h, n, DIM, FFN);
    const bool tanh_gelu = bug_in(BUG_GELU_TANH, layer);
    for (int i = 0; i < n * FFN; i++)
        h[i] = tanh_gelu ? gelu_tanh(h[i]) : gelu_erf(h[i]);
    linear_module(blk_part(name, layer, "ffn_down"), h, &p->down, true, y, n, FFN, DIM);
    tap_out(y, n, DIM, "blk.%d.ffn", layer);
}

/* blk.N, updating the residual stream x ([n][DIM]) in place:
 *   x = x + attn(attn_norm(x));  x = x + ffn(ffn_norm(x))
 * The norms tap x itself, so that under injection the stream goes on from the reference's. */
static void block(int layer, float *x, const block_w *p, kv_cache *cache, int n, int n_past)
{
    static float a[CTX * DIM], b[CTX * DIM];
    char name[NAME_LEN];
    tap_in("in0", x, n, DIM, "blk.%d", layer);
    norm_module(blk_part(name, layer, "attn_norm"), layer, x, &p->attn_norm, a, n);
    attention(layer, a, p, cache, n, n_past, b);
    if (bug_in(BUG_NO_RESIDUAL, layer))
        memcpy(x, b, (size_t)n * DIM * sizeof *x);
    else
        for (int i = 0; i < n * DIM; i++)
            x[i] += b[i];
    norm_module(blk_part(name, layer, "ffn_norm"), layer, x, &p->ffn_norm, a, n);
    ffn(layer, a, p, n, b);
    for (int i = 0; i < n * DIM; i++)
        x[i] += b[i];
    tap_out(x, n, DIM, "blk.%d", layer);
}

/* An embedding lookup: `table` [rows][DIM] at `ids` (tapped and so injectable), [1, n, DIM]. */
static void embedding(const char *module, int64_t *ids, const float *table, int64_t rows,
                      float *y, int n)
{
    tap_ids_in(module, ids, n);
    for (int i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= rows) {
            fprintf(stderr, "gpt_port: %s: id %lld at %d is outside 0..%lld\n", module,
                    (long long)ids[i], i, (long long)rows - 1);
            exit(1);
        }
        memcpy(y + i * DIM, table + ids[i] * DIM, DIM * sizeof *y);
    }
    tap_out(y, n, DIM, "%s", module);
}

/* One forward pass over the n tokens at positions n_past..n_past+n-1, the n_past before them
 * being in the cache: the logits of the last one into logits[VOCAB]. */
static void forward(const gpt_w *w, kv_cache *cache, const int64_t *tokens, int n, int n_past,
                    float *logits)
{
    static float x[CTX * DIM], pos[CTX * DIM], y[CTX * DIM];
    int64_t ids[CTX], positions[CTX];
    float last[DIM];
    memcpy(ids, tokens, (size_t)n * sizeof *ids);
    embedding("token_embd", ids, w->tok, VOCAB, x, n);
    for (int i = 0; i < n; i++)
        positions[i] = n_past + i + (bug_in(BUG_POS_OFF_BY_ONE, ANY_LAYER) && n_past > 0 ? 1 : 0);
    embedding("position_embd", positions, w->pos, CTX, pos, n);
    for (int i = 0; i < n * DIM; i++)
        x[i] += pos[i];
    for (int l = 0; l < LAYERS; l++)
        block(l, x, &w->blk[l], cache, n, n_past);
    norm_module("output_norm", ANY_LAYER, x, &w->out_norm, y, n);
    /* only the last position's logits are needed to pick the next token */
    memcpy(last, y + (n - 1) * DIM, sizeof last);
    linear_module("output", last, &w->head, false, logits, 1, DIM, VOCAB);
}

static int argmax(const float *v, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[best])
            best = i;
    return best;
}

/* ---------------------------------------------------------------------------------------------
 * main
 * ------------------------------------------------------------------------------------------- */

static int usage(void)
{
    fprintf(stderr, "usage: gpt_port WEIGHTS.safetensors [--tokens N] [--bug NAME]   "
                    "(--bug list: the bugs)\n");
    return 2;
}

static bool select_bug(const char *name)
{
    if (!name || !*name)
        return true;
    for (int i = 0; i < N_BUGS; i++)
        if (strcmp(name, BUGS[i].name) == 0) {
            active_bug = &BUGS[i];
            return true;
        }
    fprintf(stderr, "gpt_port: unknown bug '%s' (gpt_port --bug list names them)\n", name);
    return false;
}

int main(int argc, char **argv)
{
    const char *weights = NULL, *bug = getenv("NNP_PAIR_BUG");
    int steps = NEW_TOKENS;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--bug") == 0 && i + 1 < argc) {
            bug = argv[++i];
        } else if (strcmp(argv[i], "--tokens") == 0 && i + 1 < argc) {
            char *end;
            long v = strtol(argv[++i], &end, 10);
            if (*end || v < 1 || v >= CTX)
                return usage();
            steps = (int)v;
        } else if (argv[i][0] != '-' && !weights) {
            weights = argv[i];
        } else {
            return usage();
        }
    }
    if (bug && strcmp(bug, "list") == 0) {
        for (int i = 0; i < N_BUGS; i++)
            printf("%-15s %s\n", BUGS[i].name, BUGS[i].what);
        return 0;
    }
    if (!select_bug(bug))
        return 2;
    if (!weights)
        return usage();

    static gpt_w w;
    static kv_cache cache;
    if (!load_weights(weights, &w))
        return 1;
    if (w.prompt_len + steps > CTX) {
        fprintf(stderr, "gpt_port: a prompt of %d and %d new tokens pass the context of %d\n",
                w.prompt_len, steps, CTX);
        free_weights(&w);
        return 2;
    }
    int64_t tokens[CTX];
    float logits[VOCAB];
    memcpy(tokens, w.prompt, (size_t)w.prompt_len * sizeof *tokens);
    int len = w.prompt_len;
    /* prefill: the whole prompt at once; then one token a step, its past in the cache */
    forward(&w, &cache, tokens, len, 0, logits);
    tokens[len] = argmax(logits, VOCAB);
    for (int s = 1; s < steps; s++) {
        len++;
        forward(&w, &cache, tokens + len - 1, 1, len - 1, logits);
        tokens[len] = argmax(logits, VOCAB);
    }
    len++;
    free_weights(&w);

    printf("tokens:");
    for (int i = w.prompt_len; i < len; i++)
        printf(" %lld", (long long)tokens[i]);
    printf("\nlogits:");
    for (int c = 0; c < VOCAB; c++)
        printf(" %.6f", logits[c]);
    printf("\n");
    if (not_injected && (nnp_capture_active() & 2))
        fprintf(stderr, "gpt_port: %u layer inputs were not in the injection file and ran on the "
                "port's own values\n", not_injected);
    /* finish the capture here rather than at exit, so that a failure is reported */
    if (nnp_capture_close() != NNP_OK) {
        fprintf(stderr, "gpt_port: %s\n", nnp_last_error());
        return 1;
    }
    return 0;
}
