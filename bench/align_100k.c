/*
 * align_100k.c - automatic alignment at the scale of a long capture: two synthetic captures of a
 * 32-layer Llama-style decoder, one under Hugging Face names, one under GGUF-style names (a
 * prefill call, then decode steps as repeated calls "#<call>"), about 100,000 records each. The
 * port misses 0.5% of the records and adds 0.5% of its own (half of them of a shape the layer
 * already has many of). Times nnp__align, then nnp__align_rules on every port name (the
 * aligned ones with their reference names, the others with themselves), and says what fraction
 * of the port's records were aligned as built (or left unaligned when they have no
 * counterpart). Links against libnnparity.a for the library's internal functions.
 *
 *   align_100k [RECORDS [RUNS]]     RECORDS per side (default 100000), RUNS timings (default 5)
 *
 * ALIGN_PRINT_WRONG=1 lists the records aligned otherwise than built, ALIGN_PRINT_RULES=1 prints
 * the proposed rules.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

enum { LAYERS = 32, D = 4096, KV = 1024, FF = 11008, VOCAB = 32000, HEADS = 32, PREFILL = 16 };

/* A record kind of a decoder layer: its names on the two sides and its width. */
static const struct {
    const char *ref, *port;
    uint64_t width;
} kinds[] = {
    {"input_layernorm", "attn_norm", D},   {"self_attn.q_proj", "attn_q", D},
    {"self_attn.k_proj", "attn_k", KV},     {"self_attn.v_proj", "attn_v", KV},
    {"self_attn.o_proj", "attn_output", D}, {"post_attention_layernorm", "ffn_norm", D},
    {"mlp.gate_proj", "ffn_gate", FF},      {"mlp.up_proj", "ffn_up", FF},
    {"mlp.act_fn", "ffn_silu", FF},         {"mlp.down_proj", "ffn_down", D},
    {"", "l_out", D},
};
#define NKINDS (sizeof kinds / sizeof *kinds)

typedef struct {
    nnp__align_item *it;
    uint64_t (*shape)[3];
    int64_t *truth; /* port side: the reference record it was built from, -1 for an extra */
    size_t n, cap;
} capture;

static uint64_t rng = 0x853c49e6748fea9bull;

static double uniform(void)
{
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(rng >> 11) * 0x1.0p-53;
}

static size_t add(capture *c, const char *name, uint32_t ndim, uint64_t d0, uint64_t d1,
                  uint64_t d2, int64_t truth)
{
    if (c->n == c->cap) {
        c->cap = c->cap ? 2 * c->cap : 1024;
        c->it = realloc(c->it, c->cap * sizeof *c->it);
        c->shape = realloc(c->shape, c->cap * sizeof *c->shape);
        c->truth = realloc(c->truth, c->cap * sizeof *c->truth);
        if (!c->it || !c->shape || !c->truth) {
            fprintf(stderr, "align_100k: out of memory\n");
            exit(2);
        }
    }
    size_t i = c->n++;
    c->shape[i][0] = d0;
    c->shape[i][1] = d1;
    c->shape[i][2] = d2;
    c->it[i] = (nnp__align_item){strdup(name), "out0", ndim, c->shape[i], NNP_F32, NULL};
    c->truth[i] = truth;
    return i;
}

/* One record of both sides, unless the port misses it; now and then an extra port record
 * after the k-th kind of a layer. */
static void record(capture *ref, capture *port, const char *rname, const char *pname,
                   uint32_t ndim, uint64_t d0, uint64_t d1, int layer, int k, int call,
                   const char *call_s)
{
    size_t r = add(ref, rname, ndim, d0, d1, 0, -1);
    double u = uniform();
    if (u >= 0.005)
        add(port, pname, ndim, d0, d1, 0, (int64_t)r);
    if (layer >= 0 && u >= 0.005 && u < 0.010) {
        char name[128];
        if (u < 0.0075)
            snprintf(name, sizeof name, "blk.%d.kq_soft_max_%d/out0%s", layer, k, call_s);
        else
            snprintf(name, sizeof name, "blk.%d.ffn_inp_%d/out0%s", layer, k, call_s);
        if (u < 0.0075)
            add(port, name, 3, HEADS, d0, (uint64_t)(PREFILL + call), -1);
        else
            add(port, name, 2, d0, D, 0, -1);
    }
}

static void build(capture *ref, capture *port, size_t records)
{
    char rn[128], pn[128], call_s[16];
    for (int call = 0; ref->n < records; call++) {
        uint64_t t = call ? 1 : PREFILL;
        call_s[0] = 0;
        if (call)
            snprintf(call_s, sizeof call_s, "#%d", call);
        snprintf(rn, sizeof rn, "model.embed_tokens/out0%s", call_s);
        snprintf(pn, sizeof pn, "token_embd/out0%s", call_s);
        record(ref, port, rn, pn, 2, t, D, -1, 0, call, call_s);
        for (int l = 0; l < LAYERS; l++)
            for (size_t k = 0; k < NKINDS; k++) {
                snprintf(rn, sizeof rn, "model.layers.%d%s%s/out0%s", l, *kinds[k].ref ? "." : "",
                         kinds[k].ref, call_s);
                snprintf(pn, sizeof pn, "blk.%d.%s/out0%s", l, kinds[k].port, call_s);
                record(ref, port, rn, pn, 2, t, kinds[k].width, l, (int)k, call, call_s);
            }
        snprintf(rn, sizeof rn, "model.norm/out0%s", call_s);
        snprintf(pn, sizeof pn, "output_norm/out0%s", call_s);
        record(ref, port, rn, pn, 2, t, D, -1, 0, call, call_s);
        snprintf(rn, sizeof rn, "lm_head/out0%s", call_s);
        snprintf(pn, sizeof pn, "output/out0%s", call_s);
        record(ref, port, rn, pn, 2, t, VOCAB, -1, 0, call, call_s);
    }
    /* the shape arrays moved as they grew */
    for (size_t i = 0; i < ref->n; i++)
        ref->it[i].shape = ref->shape[i];
    for (size_t j = 0; j < port->n; j++)
        port->it[j].shape = port->shape[j];
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void fail(const char *what)
{
    fprintf(stderr, "align_100k: %s: %s\n", what, nnp_last_error());
    exit(2);
}

int main(int argc, char **argv)
{
    size_t records = argc > 1 ? (size_t)atol(argv[1]) : 100000;
    int runs = argc > 2 ? atoi(argv[2]) : 5;
    if (records == 0 || runs <= 0 || runs > 100) {
        fprintf(stderr, "usage: align_100k [RECORDS [RUNS]]\n");
        return 2;
    }
    capture ref = {0}, port = {0};
    build(&ref, &port, records);
    int64_t *to = malloc(port.n * sizeof *to);
    double *score = malloc(port.n * sizeof *score);
    const char **pn = malloc(port.n * sizeof *pn), **rn = malloc(port.n * sizeof *rn);
    double ta[100], tr[100], tt[100], order[100];
    size_t nnames = 0;
    nnp_sbuf rules = {0};
    if (!to || !score || !pn || !rn)
        return 2;
    for (int k = 0; k < runs; k++) {
        double t0 = now();
        if (nnp__align(ref.it, ref.n, port.it, port.n, to, score) != NNP_OK)
            fail("nnp__align");
        double t1 = now();
        /* every port name: the aligned ones with their reference names, the others with
         * themselves, so that the rules leave them as they are */
        nnames = port.n;
        for (size_t j = 0; j < port.n; j++) {
            pn[j] = port.it[j].name;
            rn[j] = to[j] >= 0 ? ref.it[to[j]].name : port.it[j].name;
        }
        nnp__sbuf_free(&rules);
        double t2 = now();
        if (nnp__align_rules(pn, rn, nnames, &rules) != NNP_OK)
            fail("nnp__align_rules");
        double t3 = now();
        ta[k] = t1 - t0;
        tr[k] = t3 - t2;
        tt[k] = order[k] = ta[k] + tr[k];
    }
    size_t right = 0, extras = 0, missing = 0;
    for (size_t j = 0; j < port.n; j++) {
        right += to[j] == port.truth[j];
        extras += port.truth[j] < 0;
    }
    missing = ref.n - (port.n - extras);
    /* ALIGN_PRINT_WRONG=1: each port record aligned otherwise than built, with its place */
    if (getenv("ALIGN_PRINT_WRONG"))
        for (size_t j = 0; j < port.n; j++)
            if (to[j] != port.truth[j])
                printf("wrong: %s (score %.3f) aligned with %s, built from %s\n", port.it[j].name,
                       score[j], to[j] < 0 ? "nothing" : ref.it[to[j]].name,
                       port.truth[j] < 0 ? "nothing" : ref.it[port.truth[j]].name);
    size_t renames = 0;
    for (const char *p = rules.s; p && (p = strstr(p, "\nrename ")); p++)
        renames++;

    /* ALIGN_PRINT_RULES=1: the proposed rules */
    if (getenv("ALIGN_PRINT_RULES"))
        fputs(rules.s, stdout);
    /* the rules must map every port name as asked: checked through the real parser on every
     * 20th name, outside the timing */
    nnp_rules *r = NULL;
    if (nnp_rules_parse(rules.s, "proposed.rules", &r) != NNP_OK)
        fail("nnp_rules_parse");
    size_t checked = 0;
    for (size_t i = 0; i < nnames; i += 20, checked++) {
        char *out = NULL;
        bool ignored;
        if (nnp_rules_map(r, pn[i], &out, &ignored) != NNP_OK)
            fail("nnp_rules_map");
        if (ignored || strcmp(out, rn[i]) != 0) {
            fprintf(stderr, "align_100k: the rules map %s to %s, not %s\n", pn[i], out, rn[i]);
            return 1;
        }
        free(out);
    }
    nnp_rules_free(r);

    qsort(ta, (size_t)runs, sizeof *ta, cmp_double);
    qsort(tr, (size_t)runs, sizeof *tr, cmp_double);
    qsort(tt, (size_t)runs, sizeof *tt, cmp_double);
    printf("align_100k: reference %zu records, port %zu (%zu missing, %zu extra), median of %d\n",
           ref.n, port.n, missing, extras, runs);
    printf("  runs, align + rules (s):");
    for (int k = 0; k < runs; k++)
        printf(" %.3f", order[k]);
    printf("\n  nnp__align        %.3f s\n", ta[runs / 2]);
    printf("  nnp__align_rules  %.3f s  (%zu names, %zu renames; %zu checked through the parser)\n",
           tr[runs / 2], nnames, renames, checked);
    printf("  total             %.3f s  (target about 1 s or less)\n", tt[runs / 2]);
    printf("  aligned correctly %.4f  (%zu of %zu port records)\n",
           (double)right / (double)port.n, right, port.n);
    for (size_t i = 0; i < ref.n; i++)
        free((char *)ref.it[i].name);
    for (size_t j = 0; j < port.n; j++)
        free((char *)port.it[j].name);
    free(ref.it);
    free(ref.shape);
    free(ref.truth);
    free(port.it);
    free(port.shape);
    free(port.truth);
    free(to);
    free(score);
    free(pn);
    free(rn);
    nnp__sbuf_free(&rules);
    return 0;
}
