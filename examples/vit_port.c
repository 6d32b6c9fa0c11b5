/*
 * vit_port.c - a plain float32 C port of torchvision's VisionTransformer, in the small
 * configuration of examples/vit/reference.py, written the way an engine port is written: weights
 * read from a safetensors file in the port's own GGUF-like names, one function per layer, and
 * every layer tapped through libnnparity so that `nnparity diff` can say where the port stops
 * matching the reference.
 *
 *   vit_port WEIGHTS.safetensors [--bug NAME]        (or VIT_PORT_BUG=NAME)
 *
 * WEIGHTS comes from `reference.py --weights` and holds the input image too. The port prints its
 * logits. Capture and injection need no flag: the library reads NNPARITY_CAPTURE,
 * NNPARITY_INJECT and NNPARITY_RULES at the first tap (examples/vit/README.md shows the
 * commands). --bug plants one real porting mistake in one module; `--bug list` lists them.
 * With no bug the port matches the reference within float32 tolerance.
 */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nnparity.h"

/* The model's shape: image_size 32, patch_size 8, 4 layers, 4 heads, hidden 64, MLP 128. */
enum {
    IMAGE = 32,
    CHANNELS = 3,
    PATCH = 8,
    GRID = IMAGE / PATCH,             /* patches per side */
    PATCHES = GRID * GRID,
    TOKENS = PATCHES + 1,             /* the class token comes first */
    PATCH_IN = CHANNELS * PATCH * PATCH,
    DIM = 64,
    HEADS = 4,
    HEAD_DIM = DIM / HEADS,
    MLP = 128,
    LAYERS = 4,
    CLASSES = 10
};

/* torchvision builds the ViT's LayerNorms with eps 1e-6, not PyTorch's default 1e-5. */
static const float LN_EPS = 1e-6f;

/* ---------------------------------------------------------------------------------------------
 * The switchable bugs: mistakes real ports make, each confined to one module of one block.
 * ------------------------------------------------------------------------------------------- */

typedef enum {
    BUG_GELU_TANH = 1, /* GELU with the tanh approximation instead of erf */
    BUG_NO_K_BIAS,     /* the k projection's bias left out: k is wrong, the attention is not */
    BUG_NO_V_BIAS,     /* the v projection's bias left out */
    BUG_LN_EPS,        /* LayerNorm epsilon 1e-5 (nn.LayerNorm's default) instead of 1e-6 */
    BUG_QK_SWAP,       /* q and k projections swapped (the fused in_proj split as k, q, v) */
    BUG_NO_RESIDUAL,   /* the residual connection around the MLP dropped */
    BUG_BF16_BLOCK     /* the block's output stored in bfloat16 */
} bug_kind;

typedef struct {
    const char *name;
    bug_kind kind;
    int layer;        /* the block it lives in */
    const char *what; /* the module it lives in, and what is wrong there */
} bug_desc;

/* An epsilon matters only for rows of small variance: ln-eps sits in the first norm of all,
 * where the class token's row (class token plus position embedding, both small) has a variance
 * of about 8e-4, and shows plainly; in a later block the same slip stays within float32
 * tolerance (examples/vit/README.md). */
static const bug_desc BUGS[] = {
    {"gelu-tanh", BUG_GELU_TANH, 2, "blk.2.ffn_act: tanh-approximated GELU instead of erf"},
    {"no-k-bias", BUG_NO_K_BIAS, 1, "blk.1.attn_k: k bias missing (softmax hides it downstream)"},
    {"no-v-bias", BUG_NO_V_BIAS, 1, "blk.1.attn_v: v bias missing"},
    {"ln-eps", BUG_LN_EPS, 0, "blk.0.attn_norm: LayerNorm eps 1e-5 instead of 1e-6"},
    {"qk-swap", BUG_QK_SWAP, 3, "blk.3.attn_q, attn_k: q and k projections swapped"},
    {"no-residual", BUG_NO_RESIDUAL, 1, "blk.1: residual connection around the MLP dropped"},
    {"bf16-block", BUG_BF16_BLOCK, 2, "blk.2: block output rounded to bfloat16"},
};
enum { N_BUGS = sizeof BUGS / sizeof BUGS[0] };

static const bug_desc *active_bug; /* NULL: the port as it should be */

static bool bug_in(bug_kind kind, int layer)
{
    return active_bug && active_bug->kind == kind && active_bug->layer == layer;
}

/* ---------------------------------------------------------------------------------------------
 * Weights, in the port's names (see port_weights() in examples/vit/reference.py)
 * ------------------------------------------------------------------------------------------- */

enum { NAME_LEN = 64 }; /* room for any tensor or record name of this model */

/* "blk.<layer>.<part>" (or "blk.<layer>" when part is NULL) in buf, which it returns. */
static const char *block_part(char buf[NAME_LEN], int layer, const char *part)
{
    if (part)
        snprintf(buf, NAME_LEN, "blk.%d.%s", layer, part);
    else
        snprintf(buf, NAME_LEN, "blk.%d", layer);
    return buf;
}

typedef struct {
    const float *w; /* [out][in], as torch stores a Linear's weight */
    const float *b; /* [out] */
} linear_w;

typedef struct {
    const float *w, *b; /* [DIM] scale and shift */
} norm_w;

typedef struct {
    norm_w attn_norm;
    linear_w q, k, v, out;
    norm_w ffn_norm;
    linear_w up, down;
} block_w;

typedef struct {
    linear_w patch;          /* the patch convolution as a [DIM][PATCH_IN] matrix */
    const float *cls;        /* [DIM] */
    const float *pos;        /* [TOKENS][DIM] */
    block_w blk[LAYERS];
    norm_w out_norm;
    linear_w head;           /* [CLASSES][DIM] */
    float *image;            /* [CHANNELS][IMAGE][IMAGE]; writable: injection replaces it */
    float *owned[96];        /* every tensor above, to free */
    int nowned;
} vit_w;

typedef struct {
    nnp_dump *dump;
    const char *path;
    vit_w *w;
    bool failed;
} loader;

/* A copy of the F32 tensor `name`, which must have exactly the given dims. A copy, because the
 * mapped file gives no alignment guarantee for floats and the image must be writable. */
static float *load(loader *ld, const char *name, uint32_t ndim, uint64_t d0, uint64_t d1,
                   uint64_t d2, uint64_t d3)
{
    if (ld->failed)
        return NULL;
    const uint64_t want[4] = {d0, d1, d2, d3};
    int64_t i = nnp_dump_find(ld->dump, name);
    if (i < 0) {
        fprintf(stderr, "vit_port: %s: no tensor '%s'\n", ld->path, name);
        ld->failed = true;
        return NULL;
    }
    const nnp_record *r = nnp_dump_record(ld->dump, (size_t)i);
    bool ok = r->dtype == NNP_F32 && r->ndim == ndim;
    for (uint32_t k = 0; ok && k < ndim; k++)
        ok = r->shape[k] == want[k];
    if (!ok) {
        fprintf(stderr, "vit_port: %s: tensor '%s' is not the F32 tensor of %u dims this "
                        "model needs (another configuration?)\n", ld->path, name, ndim);
        ld->failed = true;
        return NULL;
    }
    const void *data;
    float *copy = malloc(r->nbytes);
    if (!copy || ld->w->nowned == (int)(sizeof ld->w->owned / sizeof ld->w->owned[0])) {
        fprintf(stderr, "vit_port: out of memory loading '%s'\n", name);
        free(copy);
        ld->failed = true;
        return NULL;
    }
    if (nnp_dump_data(ld->dump, (size_t)i, &data) != NNP_OK) {
        fprintf(stderr, "vit_port: %s\n", nnp_last_error());
        free(copy);
        ld->failed = true;
        return NULL;
    }
    memcpy(copy, data, r->nbytes);
    ld->w->owned[ld->w->nowned++] = copy;
    return copy;
}

static const float *vec(loader *ld, const char *name, uint64_t n)
{
    return load(ld, name, 1, n, 0, 0, 0);
}

static const float *mat(loader *ld, const char *name, uint64_t rows, uint64_t cols)
{
    return load(ld, name, 2, rows, cols, 0, 0);
}

/* "<prefix>.weight" [out][in] and "<prefix>.bias" [out]. */
static linear_w load_linear(loader *ld, const char *prefix, uint64_t out, uint64_t in)
{
    char name[NAME_LEN];
    linear_w l;
    snprintf(name, sizeof name, "%s.weight", prefix);
    l.w = mat(ld, name, out, in);
    snprintf(name, sizeof name, "%s.bias", prefix);
    l.b = vec(ld, name, out);
    return l;
}

static norm_w load_norm(loader *ld, const char *prefix)
{
    char name[NAME_LEN];
    norm_w n;
    snprintf(name, sizeof name, "%s.weight", prefix);
    n.w = vec(ld, name, DIM);
    snprintf(name, sizeof name, "%s.bias", prefix);
    n.b = vec(ld, name, DIM);
    return n;
}

static void free_weights(vit_w *w)
{
    for (int i = 0; i < w->nowned; i++)
        free(w->owned[i]);
    w->nowned = 0;
}

static bool load_weights(const char *path, vit_w *w)
{
    memset(w, 0, sizeof *w);
    loader ld = {.path = path, .w = w};
    if (nnp_dump_open(path, &ld.dump) != NNP_OK) {
        fprintf(stderr, "vit_port: %s\n", nnp_last_error());
        return false;
    }
    w->patch = load_linear(&ld, "token_embd", DIM, PATCH_IN);
    w->cls = vec(&ld, "class_embd", DIM);
    w->pos = mat(&ld, "position_embd", TOKENS, DIM);
    for (int l = 0; l < LAYERS; l++) {
        char n[NAME_LEN];
        block_w *b = &w->blk[l];
        b->attn_norm = load_norm(&ld, block_part(n, l, "attn_norm"));
        b->q = load_linear(&ld, block_part(n, l, "attn_q"), DIM, DIM);
        b->k = load_linear(&ld, block_part(n, l, "attn_k"), DIM, DIM);
        b->v = load_linear(&ld, block_part(n, l, "attn_v"), DIM, DIM);
        b->out = load_linear(&ld, block_part(n, l, "attn_output"), DIM, DIM);
        b->ffn_norm = load_norm(&ld, block_part(n, l, "ffn_norm"));
        b->up = load_linear(&ld, block_part(n, l, "ffn_up"), MLP, DIM);
        b->down = load_linear(&ld, block_part(n, l, "ffn_down"), DIM, MLP);
    }
    w->out_norm = load_norm(&ld, "output_norm");
    w->head = load_linear(&ld, "output", CLASSES, DIM);
    w->image = load(&ld, "input", 4, 1, CHANNELS, IMAGE, IMAGE);
    nnp_dump_close(ld.dump);
    if (ld.failed)
        free_weights(w);
    return !ld.failed;
}

/* ---------------------------------------------------------------------------------------------
 * Taps. Records are named "<module>/<role>" in the port's own names; examples/vit/vit.rules maps
 * them onto torchvision's. Every module taps its input with tap_in (under injection the input is
 * replaced by the reference's, so the module runs on what the reference's module saw) and its
 * output with tap_out. With no capture session both return at once.
 * ------------------------------------------------------------------------------------------- */

/* [1, TOKENS, cols]: torch keeps a batch dimension, so the port's records do too. */
#define SEQ_SHAPE(cols) ((const uint64_t[]){1, TOKENS, (cols)})

static void tap_failed(const char *module, const char *role)
{
    fprintf(stderr, "vit_port: tap %s/%s: %s\n", module, role, nnp_last_error());
    exit(1);
}

/* Layer inputs the injection file held no record for. */
static unsigned not_injected;

static void tap_in(const char *module, const char *type, float *x, uint32_t ndim,
                   const uint64_t *shape)
{
    nnp_tap_desc d = {module, "in0", type, NNP_F32, ndim, shape};
    nnp_status st = nnp_tap_inject(&d, x);
    /* A reference without this record leaves the input as the port computed it. That is normal
     * when injecting from a reproducer, which holds one layer's inputs only, so it is counted
     * and said once at the end rather than for every layer. */
    if (st == NNP_ERR_NOT_FOUND)
        not_injected++;
    else if (st != NNP_OK)
        tap_failed(module, "in0");
}

static void tap_out(const char *module, const char *type, const float *y, uint32_t ndim,
                    const uint64_t *shape)
{
    nnp_tap_desc d = {module, "out0", type, NNP_F32, ndim, shape};
    if (nnp_tap_record(&d, y) != NNP_OK)
        tap_failed(module, "out0");
}

/* ---------------------------------------------------------------------------------------------
 * The layers, computed as torch computes them (sums in float, in a plain order)
 * ------------------------------------------------------------------------------------------- */

/* y[r] = x[r] W^T + b for rows r; W is [out][in]; b may be NULL (no bias). */
static void linear(const float *x, const float *w, const float *b, float *y, int rows, int in,
                   int out)
{
    for (int r = 0; r < rows; r++)
        for (int o = 0; o < out; o++) {
            float s = b ? b[o] : 0.0f;
            for (int i = 0; i < in; i++)
                s += x[r * in + i] * w[o * in + i];
            y[r * out + o] = s;
        }
}

/* LayerNorm over the last dimension: biased variance, as torch's. */
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

/* nn.GELU(): the exact form, x * Phi(x). */
static float gelu_erf(float x)
{
    return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
}

/* nn.GELU(approximate="tanh"): what many engines use, and not what torchvision's ViT uses. */
static float gelu_tanh(float x)
{
    const float k = 0.79788456080286536f; /* sqrt(2/pi) */
    return 0.5f * x * (1.0f + tanhf(k * (x + 0.044715f * x * x * x)));
}

/* Round to the nearest bfloat16 (ties to even), kept in a float: what storing an activation in
 * a bf16 buffer does. Inputs here are finite. */
static float round_bf16(float x)
{
    uint32_t bits;
    memcpy(&bits, &x, sizeof bits);
    bits += 0x7fffu + ((bits >> 16) & 1u);
    bits &= 0xffff0000u;
    memcpy(&x, &bits, sizeof x);
    return x;
}

/* Softmax of one row, shifted by its maximum so that exp cannot overflow. */
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
 * The modules, each tapped under its own name
 * ------------------------------------------------------------------------------------------- */

static void norm_module(const char *name, float *x, const norm_w *p, float eps, float *y)
{
    tap_in(name, "LayerNorm", x, 3, SEQ_SHAPE(DIM));
    layer_norm(x, p, eps, y, TOKENS);
    tap_out(name, "LayerNorm", y, 3, SEQ_SHAPE(DIM));
}

static void linear_module(const char *name, float *x, const linear_w *p, float *y, int in,
                          int out)
{
    tap_in(name, "Linear", x, 3, SEQ_SHAPE(in));
    linear(x, p->w, p->b, y, TOKENS, in, out);
    tap_out(name, "Linear", y, 3, SEQ_SHAPE(out));
}

/* Multi-head self-attention as nn.MultiheadAttention computes it: q, k and v projections, per
 * head softmax(q k^T / sqrt(HEAD_DIM)) v, the heads side by side, then the output projection.
 * `name` is the attention's record name, `layer` its block. The input is tapped (and so injected)
 * like any module's. The projections are tapped apart, as blk.N.attn_q, attn_k and attn_v: the
 * reference computes them in one fused matmul, and vit.rules joins the three records to compare
 * them with it. They are the only place a missing k bias shows: it adds q.b to every score of a
 * query alike, a shift that softmax cancels, so the attention's output stays right. */
static void attention_module(const char *name, int layer, float *x, const block_w *p, float *y)
{
    static float q[TOKENS * DIM], k[TOKENS * DIM], v[TOKENS * DIM], heads[TOKENS * DIM];
    char n[NAME_LEN];
    tap_in(name, "MultiheadAttention", x, 3, SEQ_SHAPE(DIM));
    const linear_w *wq = &p->q, *wk = &p->k;
    if (bug_in(BUG_QK_SWAP, layer)) {
        wq = &p->k;
        wk = &p->q;
    }
    linear(x, wq->w, wq->b, q, TOKENS, DIM, DIM);
    linear(x, wk->w, bug_in(BUG_NO_K_BIAS, layer) ? NULL : wk->b, k, TOKENS, DIM, DIM);
    linear(x, p->v.w, bug_in(BUG_NO_V_BIAS, layer) ? NULL : p->v.b, v, TOKENS, DIM, DIM);
    tap_out(block_part(n, layer, "attn_q"), "Linear", q, 3, SEQ_SHAPE(DIM));
    tap_out(block_part(n, layer, "attn_k"), "Linear", k, 3, SEQ_SHAPE(DIM));
    tap_out(block_part(n, layer, "attn_v"), "Linear", v, 3, SEQ_SHAPE(DIM));
    /* torch scales q before the product rather than the scores after it; doing the same keeps
     * the port's rounding close to the reference's */
    const float scale = 1.0f / sqrtf((float)HEAD_DIM);
    for (int i = 0; i < TOKENS * DIM; i++)
        q[i] *= scale;

    for (int h = 0; h < HEADS; h++) {
        const int off = h * HEAD_DIM;
        for (int i = 0; i < TOKENS; i++) {
            float s[TOKENS];
            for (int j = 0; j < TOKENS; j++) {
                float dot = 0.0f;
                for (int d = 0; d < HEAD_DIM; d++)
                    dot += q[i * DIM + off + d] * k[j * DIM + off + d];
                s[j] = dot;
            }
            softmax(s, TOKENS);
            for (int d = 0; d < HEAD_DIM; d++) {
                float acc = 0.0f;
                for (int j = 0; j < TOKENS; j++)
                    acc += s[j] * v[j * DIM + off + d];
                heads[i * DIM + off + d] = acc;
            }
        }
    }
    linear(heads, p->out.w, p->out.b, y, TOKENS, DIM, DIM);
    tap_out(name, "MultiheadAttention", y, 3, SEQ_SHAPE(DIM));
}

/* The MLP: ffn_up, GELU, ffn_down (torchvision's mlp.0, mlp.1, mlp.3; its dropouts are the
 * identity in eval mode). x is [TOKENS][DIM], y too. */
static void ffn_module(int layer, float *x, const block_w *p, float *y)
{
    static float h[TOKENS * MLP];
    char n[NAME_LEN];
    tap_in(block_part(n, layer, "ffn"), "MLPBlock", x, 3, SEQ_SHAPE(DIM));

    linear_module(block_part(n, layer, "ffn_up"), x, &p->up, h, DIM, MLP);

    block_part(n, layer, "ffn_act");
    tap_in(n, "GELU", h, 3, SEQ_SHAPE(MLP));
    bool tanh_gelu = bug_in(BUG_GELU_TANH, layer);
    for (int i = 0; i < TOKENS * MLP; i++)
        h[i] = tanh_gelu ? gelu_tanh(h[i]) : gelu_erf(h[i]);
    tap_out(n, "GELU", h, 3, SEQ_SHAPE(MLP));

    linear_module(block_part(n, layer, "ffn_down"), h, &p->down, y, MLP, DIM);

    tap_out(block_part(n, layer, "ffn"), "MLPBlock", y, 3, SEQ_SHAPE(DIM));
}

/* One pre-LN encoder block, updating the residual stream x in place:
 *   x = x + attn(attn_norm(x));  x = x + ffn(ffn_norm(x))
 * The norms tap x itself as their input, so under injection the residual stream also continues
 * from the reference's values, and the attention and the MLP tap their normed inputs: an error
 * stays in the module that made it. */
static void block(int layer, float *x, const block_w *p)
{
    static float a[TOKENS * DIM], b[TOKENS * DIM];
    char n[NAME_LEN];
    tap_in(block_part(n, layer, NULL), "EncoderBlock", x, 3, SEQ_SHAPE(DIM));

    float eps = bug_in(BUG_LN_EPS, layer) ? 1e-5f : LN_EPS;
    norm_module(block_part(n, layer, "attn_norm"), x, &p->attn_norm, eps, a);
    attention_module(block_part(n, layer, "attn"), layer, a, p, b);
    for (int i = 0; i < TOKENS * DIM; i++)
        x[i] += b[i];

    norm_module(block_part(n, layer, "ffn_norm"), x, &p->ffn_norm, LN_EPS, a);
    ffn_module(layer, a, p, b);
    if (bug_in(BUG_NO_RESIDUAL, layer))
        memcpy(x, b, sizeof b);
    else
        for (int i = 0; i < TOKENS * DIM; i++)
            x[i] += b[i];

    if (bug_in(BUG_BF16_BLOCK, layer))
        for (int i = 0; i < TOKENS * DIM; i++)
            x[i] = round_bf16(x[i]);
    tap_out(block_part(n, layer, NULL), "EncoderBlock", x, 3, SEQ_SHAPE(DIM));
}

/* The patch embedding: torchvision's 8x8 stride-8 convolution, as one matrix product over the
 * flattened patches. The result is laid out as the convolution's [DIM][GRID][GRID] output, so
 * that it pairs with the reference's conv_proj record. */
static void patch_embedding(float *image, const linear_w *p, float *conv)
{
    static float patches[PATCHES * PATCH_IN], tokens[PATCHES * DIM];
    const uint64_t image_shape[] = {1, CHANNELS, IMAGE, IMAGE};
    const uint64_t conv_shape[] = {1, DIM, GRID, GRID};
    tap_in("token_embd", "Conv2d", image, 4, image_shape);
    /* patch (py, px) flattened in the weight's (channel, ky, kx) order */
    for (int py = 0; py < GRID; py++)
        for (int px = 0; px < GRID; px++)
            for (int c = 0; c < CHANNELS; c++)
                for (int ky = 0; ky < PATCH; ky++)
                    for (int kx = 0; kx < PATCH; kx++)
                        patches[(py * GRID + px) * PATCH_IN + (c * PATCH + ky) * PATCH + kx] =
                            image[(c * IMAGE + py * PATCH + ky) * IMAGE + px * PATCH + kx];
    linear(patches, p->w, p->b, tokens, PATCHES, PATCH_IN, DIM);
    for (int t = 0; t < PATCHES; t++)
        for (int d = 0; d < DIM; d++)
            conv[d * PATCHES + t] = tokens[t * DIM + d];
    tap_out("token_embd", "Conv2d", conv, 4, conv_shape);
}

/* The whole forward pass: image -> logits. */
static void forward(vit_w *w, float *logits)
{
    static float conv[DIM * PATCHES], x[TOKENS * DIM], cls[DIM];
    const uint64_t image_shape[] = {1, CHANNELS, IMAGE, IMAGE};
    const uint64_t row_shape[] = {1, DIM}, logits_shape[] = {1, CLASSES};
    tap_in("vit", "VisionTransformer", w->image, 4, image_shape);
    patch_embedding(w->image, &w->patch, conv);

    /* the class token, then one token per patch */
    memcpy(x, w->cls, DIM * sizeof *x);
    for (int t = 0; t < PATCHES; t++)
        for (int d = 0; d < DIM; d++)
            x[(t + 1) * DIM + d] = conv[d * PATCHES + t];
    tap_in("encoder", "Encoder", x, 3, SEQ_SHAPE(DIM));
    for (int i = 0; i < TOKENS * DIM; i++)
        x[i] += w->pos[i];
    for (int l = 0; l < LAYERS; l++)
        block(l, x, &w->blk[l]);
    static float y[TOKENS * DIM];
    norm_module("output_norm", x, &w->out_norm, LN_EPS, y);
    tap_out("encoder", "Encoder", y, 3, SEQ_SHAPE(DIM));

    /* the classifier reads the class token only */
    memcpy(cls, y, sizeof cls);
    tap_in("output", "Linear", cls, 2, row_shape);
    linear(cls, w->head.w, w->head.b, logits, 1, DIM, CLASSES);
    tap_out("output", "Linear", logits, 2, logits_shape);
    tap_out("vit", "VisionTransformer", logits, 2, logits_shape);
}

static int usage(void)
{
    fprintf(stderr, "usage: vit_port WEIGHTS.safetensors [--bug NAME]   (--bug list: the bugs)\n");
    return 2;
}

int main(int argc, char **argv)
{
    const char *weights = NULL, *bug = getenv("VIT_PORT_BUG");
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--bug") == 0 && i + 1 < argc)
            bug = argv[++i];
        else if (strncmp(argv[i], "--bug=", 6) == 0)
            bug = argv[i] + 6;
        else if (argv[i][0] != '-' && !weights)
            weights = argv[i];
        else
            return usage();
    }
    if (bug && strcmp(bug, "list") == 0) {
        for (int i = 0; i < N_BUGS; i++)
            printf("%-12s %s\n", BUGS[i].name, BUGS[i].what);
        return 0;
    }
    if (bug && *bug) {
        for (int i = 0; i < N_BUGS && !active_bug; i++)
            if (strcmp(bug, BUGS[i].name) == 0)
                active_bug = &BUGS[i];
        if (!active_bug) {
            fprintf(stderr, "vit_port: unknown bug '%s' (vit_port --bug list names them)\n", bug);
            return 2;
        }
    }
    if (!weights)
        return usage();

    vit_w w;
    if (!load_weights(weights, &w))
        return 1;
    float logits[CLASSES];
    forward(&w, logits);
    free_weights(&w);

    printf("logits:");
    for (int c = 0; c < CLASSES; c++)
        printf(" %.6f", logits[c]);
    printf("\n");
    if (not_injected && (nnp_capture_active() & 2))
        fprintf(stderr, "vit_port: %u layer inputs were not in the injection file and ran on the "
                "port's own values\n", not_injected);
    /* finish the capture here rather than at exit, so that a failure is reported */
    if (nnp_capture_close() != NNP_OK) {
        fprintf(stderr, "vit_port: %s\n", nnp_last_error());
        return 1;
    }
    return 0;
}
