/*
 * relevance.c - which input tokens an output relied on, from recorded attention maps: the layers
 * found in a dump, attention rollout (Abnar & Zuidema 2020) and its gradient-weighted form,
 * Chefer et al.'s (2021) relevance propagation and its rollout form; back-mapping LLM image
 * tokens through a pixel-shuffle projector to ViT patches; normalizing and resizing the maps.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/regex.h"
#include "dump/dump.h"

/* ---- finding the layers in a dump ---- */

static bool role_is_grad(const nnp_record *r)
{
    return strncmp(r->role, "grad_", 5) == 0;
}

static nnp_status compile(nnp_regex **re, const char *what, const char *pattern)
{
    char msg[256];
    size_t at;
    nnp_status st = nnp__regex_compile(pattern, strlen(pattern), re, msg, sizeof msg, &at);
    if (st == NNP_ERR_FORMAT)
        return nnp__fail(NNP_ERR_ARG, "%s pattern '%s': bad regex: %s", what, pattern, msg);
    return st;
}

/* Separators that may stand on either side of what a pattern matched: "blocks.0.attn.probs"
 * less "probs" and "blocks.0.attn/grad_attn" less "grad_attn" are both "blocks.0.attn". */
static bool stem_sep(char c)
{
    return c == '.' || c == '/' || c == '_' || c == '#' || c == '-' || c == ':';
}

/* `name` without bytes [so, eo), the separators at the cut dropped; the two sides are kept apart
 * by a unit separator (0x1f, a control byte names do not carry), so that "a" + "b" is not "ab". */
static char *stem_of(const char *name, size_t so, size_t eo)
{
    size_t len = strlen(name);
    while (so > 0 && stem_sep(name[so - 1]))
        so--;
    while (eo < len && stem_sep(name[eo]))
        eo++;
    char *s = malloc(so + 1 + (len - eo) + 1);
    if (!s)
        return NULL;
    memcpy(s, name, so);
    s[so] = '\x1f';
    memcpy(s + so + 1, name + eo, len - eo + 1);
    return s;
}

static void free_stems(char **stems, size_t n)
{
    for (size_t i = 0; stems && i < n; i++)
        free(stems[i]);
    free(stems);
}

/* Records whose name matches `pattern` (of the `what` records), in execution order, into a new
 * array; with `stems`, also each one's name without the part the pattern matched (stem_of), in
 * a new array of new strings (free with free_stems). */
static nnp_status matching(const nnp_dump *d, const char *what, const char *pattern,
                           size_t **out, size_t *n, char ***stems)
{
    nnp_regex *re;
    nnp_status st = compile(&re, what, pattern);
    if (st)
        return st;
    size_t total = nnp_dump_count(d);
    size_t *idx = malloc((total ? total : 1) * sizeof *idx);
    if (!idx) {
        nnp__regex_free(re);
        return nnp__nomem();
    }
    char **cut = stems ? calloc(total ? total : 1, sizeof *cut) : NULL;
    if (stems && !cut) {
        free(idx);
        nnp__regex_free(re);
        return nnp__nomem();
    }
    *n = 0;
    for (size_t i = 0; i < total; i++) {
        const char *name = nnp_dump_record(d, i)->name;
        nnp_regmatch m;
        char err[256];
        int rc = nnp__regex_match(re, name, cut ? &m : NULL, cut ? 1 : 0, err, sizeof err);
        if (rc < 0) {
            free_stems(cut, *n);
            free(idx);
            nnp__regex_free(re);
            return nnp__fail(NNP_ERR_ARG, "%s pattern '%.120s%s' on '%.120s%s': %s", what,
                             pattern, strlen(pattern) > 120 ? "..." : "", name,
                             strlen(name) > 120 ? "..." : "", err);
        }
        if (rc == 0)
            continue;
        if (cut && !(cut[*n] = stem_of(name, (size_t)m.so, (size_t)m.eo))) {
            free_stems(cut, *n);
            free(idx);
            nnp__regex_free(re);
            return nnp__nomem();
        }
        idx[(*n)++] = i;
    }
    nnp__regex_free(re);
    *out = idx;
    if (stems)
        *stems = cut;
    return NNP_OK;
}

/* heads and n of a map's shape: [N, N], [heads, N, N] or [1, heads, N, N]. */
static nnp_status map_shape(const nnp_dump *d, const nnp_record *r, const char *what,
                            uint64_t *heads, uint64_t *n)
{
    char shape[128];
    nnp__format_shape(shape, sizeof shape, r->ndim, r->shape);
    if (nnp_dtype_class_of(r->dtype) != NNP_CLASS_FLOAT)
        return nnp__fail(NNP_ERR_ARG, "%s: %s '%s' is %s: relevance needs a float dtype",
                         nnp_dump_path(d), what, r->name, nnp_dtype_name(r->dtype));
    if (r->ndim < 2 || r->ndim > 4 || (r->ndim == 4 && r->shape[0] != 1))
        return nnp__fail(NNP_ERR_ARG, "%s: %s '%s' has shape %s: expected [heads, N, N] or "
                         "[1, heads, N, N] (one sample)", nnp_dump_path(d), what, r->name, shape);
    uint64_t rows = r->shape[r->ndim - 2], cols = r->shape[r->ndim - 1];
    if (rows != cols)
        return nnp__fail(NNP_ERR_ARG, "%s: %s '%s' has shape %s: attention maps are square "
                         "(N x N, rows are queries)", nnp_dump_path(d), what, r->name, shape);
    *heads = r->ndim == 2 ? 1 : r->shape[r->ndim - 3];
    *n = rows;
    if (*heads == 0 || *n == 0)
        return nnp__fail(NNP_ERR_ARG, "%s: %s '%s' has shape %s: no element", nnp_dump_path(d),
                         what, r->name, shape);
    return NNP_OK;
}

/* Whether grad record g is the gradient a tap records for attention record a. */
static bool is_grad_of(const nnp_record *g, const nnp_record *a)
{
    return *a->role && g->call == a->call && strcmp(g->module, a->module) == 0 &&
           role_is_grad(g) && strcmp(g->role + 5, a->role) == 0;
}

static nnp_status default_grads(nnp_dump *d, nnp_attn_layer *L, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const nnp_record *a = nnp_dump_record(d, L[i].attn_rec);
        if (!*a->role)
            return nnp__fail(NNP_ERR_ARG, "%s: '%s' has no module and role to find its gradient "
                             "by: give a gradient pattern", nnp_dump_path(d), a->name);
        size_t len = strlen(a->role) + 6;
        char *role = malloc(len);
        if (!role)
            return nnp__nomem();
        snprintf(role, len, "grad_%s", a->role);
        nnp_sbuf name = {0};
        nnp__record_name(&name, a->module, role, a->call);
        free(role);
        if (name.failed || !name.s) {
            nnp__sbuf_free(&name);
            return nnp__nomem();
        }
        int64_t g = nnp_dump_find(d, name.s);
        if (g < 0) {
            nnp_status st = nnp__fail(NNP_ERR_NOT_FOUND, "%s: no gradient record '%s' for '%s' "
                                      "(tap the maps with grad=True, or give a gradient pattern)",
                                      nnp_dump_path(d), name.s, a->name);
            nnp__sbuf_free(&name);
            return st;
        }
        nnp__sbuf_free(&name);
        L[i].grad_rec = (size_t)g;
    }
    return NNP_OK;
}

/* Pair each map with the gradient whose stem (its name less what its pattern matched) equals
 * the map's: true when every map finds exactly one and no gradient serves two maps. */
static bool pair_by_stem(nnp_attn_layer *L, size_t n, char *const *attn_stems,
                         const size_t *idx, char *const *grad_stems)
{
    for (size_t i = 0; i < n; i++) {
        size_t hits = 0;
        for (size_t k = 0; k < n; k++)
            if (strcmp(attn_stems[i], grad_stems[k]) == 0) {
                L[i].grad_rec = idx[k];
                hits++;
            }
        if (hits != 1)
            return false;
        for (size_t j = 0; j < i; j++)
            if (L[j].grad_rec == L[i].grad_rec)
                return false;
    }
    return true;
}

/* Pair each map with the gradient a tap records for it: same module and call, role grad_<role>. */
static bool pair_by_provenance(const nnp_dump *d, nnp_attn_layer *L, size_t n, const size_t *idx)
{
    for (size_t i = 0; i < n; i++) {
        const nnp_record *a = nnp_dump_record(d, L[i].attn_rec);
        size_t hits = 0;
        for (size_t k = 0; k < n; k++)
            if (is_grad_of(nnp_dump_record(d, idx[k]), a)) {
                L[i].grad_rec = idx[k];
                hits++;
            }
        if (hits != 1)
            return false;
    }
    return true;
}

/* The gradients matching `pattern`, one per map: paired by name (what is left of both names
 * once each pattern's match is taken out, then nnparity's provenance), else by order. */
static nnp_status pattern_grads(nnp_dump *d, nnp_attn_layer *L, size_t n, char *const *attn_stems,
                                const char *pattern, bool *by_name)
{
    size_t *idx = NULL, m = 0;
    char **grad_stems = NULL;
    nnp_status st = matching(d, "gradient", pattern, &idx, &m, &grad_stems);
    if (st)
        return st;
    if (m == 0) {
        st = nnp__fail(NNP_ERR_NOT_FOUND, "%s: no record matches the gradient pattern '%s'",
                       nnp_dump_path(d), pattern);
    } else if (m != n) {
        st = nnp__fail(NNP_ERR_ARG, "%s: %zu %s the gradient pattern '%s' but %zu %s the "
                       "attention pattern: one gradient per layer", nnp_dump_path(d), m,
                       m == 1 ? "record matches" : "records match", pattern, n,
                       n == 1 ? "matches" : "match");
    } else {
        *by_name = pair_by_stem(L, n, attn_stems, idx, grad_stems) ||
                   pair_by_provenance(d, L, n, idx);
        /* Backward runs the layers last to first, so the gradients' execution order is the
         * reverse of the maps'. */
        if (!*by_name)
            for (size_t i = 0; i < n; i++)
                L[i].grad_rec = idx[n - 1 - i];
    }
    free_stems(grad_stems, m);
    free(idx);
    return st;
}

nnp_status nnp_attn_layers_find(nnp_dump *dump, const char *attn_pattern,
                                const char *grad_pattern, bool grads, nnp_attn_layer **layers,
                                size_t *count, bool *paired_by_name)
{
    if (!dump || !attn_pattern || !layers || !count)
        return nnp__fail(NNP_ERR_ARG, "nnp_attn_layers_find: NULL argument");
    *layers = NULL;
    *count = 0;
    if (paired_by_name)
        *paired_by_name = true;
    size_t *idx = NULL, n = 0;
    char **stems = NULL; /* the maps' names less what the pattern matched, to pair gradients by */
    nnp_status st = matching(dump, "attention", attn_pattern, &idx, &n,
                                   grads && grad_pattern ? &stems : NULL);
    if (st)
        return st;
    const char *path = nnp_dump_path(dump);
    nnp_attn_layer *L = NULL;
    if (n == 0) {
        st = nnp__fail(NNP_ERR_NOT_FOUND, "%s: no record matches the attention pattern '%s' "
                       "(a POSIX extended regex on the names `nnparity ls` prints)", path,
                       attn_pattern);
        goto out;
    }
    if (!(L = calloc(n, sizeof *L))) {
        st = nnp__nomem();
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        const nnp_record *r = nnp_dump_record(dump, idx[i]);
        if (role_is_grad(r)) {
            st = nnp__fail(NNP_ERR_ARG, "%s: the attention pattern '%s' matches the gradient "
                           "record '%s': anchor it to the maps' own role (e.g. '/attn$')", path,
                           attn_pattern, r->name);
            goto out;
        }
        L[i].name = r->name;
        L[i].dtype = r->dtype;
        L[i].attn_rec = idx[i];
        L[i].grad_rec = SIZE_MAX;
        if ((st = map_shape(dump, r, "attention map", &L[i].heads, &L[i].n)))
            goto out;
        const nnp_record *first = nnp_dump_record(dump, idx[0]);
        if (i > 0 && (L[i].heads != L[0].heads || L[i].n != L[0].n)) {
            char a[128], b[128];
            nnp__format_shape(a, sizeof a, r->ndim, r->shape);
            nnp__format_shape(b, sizeof b, first->ndim, first->shape);
            st = nnp__fail(NNP_ERR_ARG, "%s: attention map '%s' has shape %s but the first "
                           "layer '%s' has %s: every layer must have the same shape", path,
                           r->name, a, first->name, b);
            goto out;
        }
    }
    if (grads) {
        bool by_name = true;
        st = grad_pattern ? pattern_grads(dump, L, n, stems, grad_pattern, &by_name)
                          : default_grads(dump, L, n);
        if (st)
            goto out;
        if (paired_by_name)
            *paired_by_name = by_name;
        for (size_t i = 0; i < n; i++) {
            const nnp_record *g = nnp_dump_record(dump, L[i].grad_rec);
            const nnp_record *a = nnp_dump_record(dump, L[i].attn_rec);
            uint64_t heads, gn;
            if ((st = map_shape(dump, g, "gradient", &heads, &gn)))
                goto out;
            if (heads != L[i].heads || gn != L[i].n) {
                char ga[128], aa[128];
                nnp__format_shape(ga, sizeof ga, g->ndim, g->shape);
                nnp__format_shape(aa, sizeof aa, a->ndim, a->shape);
                st = nnp__fail(NNP_ERR_ARG, "%s: gradient '%s' has shape %s but its attention "
                               "map '%s' has %s", path, g->name, ga, a->name, aa);
                goto out;
            }
            L[i].grad_name = g->name;
            L[i].grad_dtype = g->dtype;
        }
    }
    for (size_t i = 0; i < n; i++) {
        if ((st = nnp_dump_data(dump, L[i].attn_rec, &L[i].attn)))
            goto out;
        if (grads && (st = nnp_dump_data(dump, L[i].grad_rec, &L[i].grad)))
            goto out;
    }
out:
    free_stems(stems, n);
    free(idx);
    if (st) {
        free(L);
        return st;
    }
    *layers = L;
    *count = n;
    return NNP_OK;
}

/* ---- building one layer's matrix ---- */

/* Rows per task: enough work per task to pay for handing it out, few enough to balance. */
#define ROWS_PER_TASK 16

typedef struct {
    const nnp_attn_layer *layer;
    const nnp_relevance_options *opts;
    uint64_t n;
    double *F;       /* n x n */
    double *scratch; /* 2 n per task */
    /* the first NaN or Inf each task met: head, row, column, whether in the gradient */
    struct bad {
        bool found, in_grad;
        uint64_t h, i, j;
    } *bad;
} build_ctx;

static bool row_finite(const double *x, uint64_t n, uint64_t *j)
{
    for (uint64_t k = 0; k < n; k++)
        if (!isfinite(x[k])) {
            *j = k;
            return false;
        }
    return true;
}

/* F's rows for one task: the fused map (rollout), max(0, mean grad*attn) (grad_rollout) or
 * mean max(0, grad*attn) (chefer). Rows are read head after head: each is a contiguous run. */
static void build_rows(void *vctx, size_t task)
{
    build_ctx *c = vctx;
    const nnp_attn_layer *L = c->layer;
    uint64_t n = c->n, H = L->heads;
    size_t asz = nnp_dtype_size(L->dtype), gsz = L->grad ? nnp_dtype_size(L->grad_dtype) : 0;
    double *a = c->scratch + 2 * n * task, *g = a + n;
    nnp_relevance_method m = c->opts->method;
    uint64_t end = (task + 1) * ROWS_PER_TASK < n ? (task + 1) * ROWS_PER_TASK : n;
    for (uint64_t i = task * ROWS_PER_TASK; i < end; i++) {
        double *f = c->F + i * n;
        for (uint64_t h = 0; h < H; h++) {
            uint64_t at = (h * n + i) * n, j;
            nnp_convert_to_f64(L->dtype, (const unsigned char *)L->attn + at * asz, n, a);
            if (!row_finite(a, n, &j)) {
                c->bad[task] = (struct bad){true, false, h, i, j};
                return;
            }
            if (m != NNP_REL_ROLLOUT) {
                nnp_convert_to_f64(L->grad_dtype, (const unsigned char *)L->grad + at * gsz, n,
                                   g);
                if (!row_finite(g, n, &j)) {
                    c->bad[task] = (struct bad){true, true, h, i, j};
                    return;
                }
            }
            if (m == NNP_REL_ROLLOUT) {
                nnp_head_fusion fu = c->opts->fusion;
                if (h == 0)
                    memcpy(f, a, n * sizeof *f);
                else if (fu == NNP_FUSION_MEAN)
                    for (uint64_t k = 0; k < n; k++)
                        f[k] += a[k];
                else if (fu == NNP_FUSION_MAX)
                    for (uint64_t k = 0; k < n; k++)
                        f[k] = a[k] > f[k] ? a[k] : f[k];
                else
                    for (uint64_t k = 0; k < n; k++)
                        f[k] = a[k] < f[k] ? a[k] : f[k];
            } else if (m == NNP_REL_GRAD_ROLLOUT) {
                for (uint64_t k = 0; k < n; k++)
                    f[k] = (h ? f[k] : 0) + g[k] * a[k];
            } else {
                for (uint64_t k = 0; k < n; k++) {
                    double p = g[k] * a[k];
                    f[k] = (h ? f[k] : 0) + (p > 0 ? p : 0);
                }
            }
        }
        bool mean = m != NNP_REL_ROLLOUT || c->opts->fusion == NNP_FUSION_MEAN;
        if (mean)
            for (uint64_t k = 0; k < n; k++)
                f[k] /= (double)H;
        /* grad_rollout clamps after the mean over heads, the others before it (or never) */
        if (m == NNP_REL_GRAD_ROLLOUT)
            for (uint64_t k = 0; k < n; k++)
                f[k] = f[k] > 0 ? f[k] : 0;
    }
}

/* The k-th smallest (from 0) of a[0..n), rearranging a (Hoare's selection). */
static double kth_smallest(double *a, int64_t n, int64_t k)
{
    int64_t l = 0, r = n - 1;
    while (l < r) {
        double x = a[k];
        int64_t i = l, j = r;
        do {
            while (a[i] < x)
                i++;
            while (x < a[j])
                j--;
            if (i <= j) {
                double t = a[i];
                a[i] = a[j];
                a[j] = t;
                i++;
                j--;
            }
        } while (i <= j);
        if (j < k)
            l = i;
        if (k < i)
            r = j;
    }
    return a[k];
}

/* Zero the floor(ratio * n * n) smallest entries of F (ties: lower flat index first), but never
 * F[0][0], as the reference implementation of rollout spares the CLS token's self-attention
 * after picking the entries. */
static nnp_status discard(double *F, uint64_t n, double ratio)
{
    uint64_t nn = n * n, k = (uint64_t)floor(ratio * (double)nn);
    if (k == 0)
        return NNP_OK;
    double *copy = malloc(nn * sizeof *copy);
    if (!copy)
        return nnp__nomem();
    memcpy(copy, F, nn * sizeof *copy);
    double t = kth_smallest(copy, (int64_t)nn, (int64_t)k - 1);
    free(copy);
    uint64_t less = 0;
    for (uint64_t e = 0; e < nn; e++)
        less += F[e] < t;
    uint64_t ties = k - less;
    for (uint64_t e = 0; e < nn; e++) {
        bool zero = F[e] < t;
        if (F[e] == t && ties) {
            ties--;
            zero = true;
        }
        if (zero && e != 0)
            F[e] = 0;
    }
    return NNP_OK;
}

/* A' = rownorm(0.5 F + 0.5 I). A row that sums to 0 (possible only with negative maps) is left
 * as it is rather than filled with NaN. */
static void rollout_step(double *F, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++) {
        double *f = F + i * n, s = 0;
        for (uint64_t k = 0; k < n; k++) {
            f[k] = 0.5 * f[k] + (k == i ? 0.5 : 0);
            s += f[k];
        }
        if (s != 0)
            for (uint64_t k = 0; k < n; k++)
                f[k] /= s;
    }
}

/* ---- chaining the layers ---- */

typedef struct {
    const double *V, *M;
    double *T;
    uint64_t n;
} product_ctx;

/* Row `task` of T = V M: rows of M added in turn, so both are read in order. */
static void product_row(void *vctx, size_t task)
{
    product_ctx *c = vctx;
    uint64_t n = c->n;
    const double *v = c->V + task * n;
    double *t = c->T + task * n;
    memset(t, 0, n * sizeof *t);
    for (uint64_t k = 0; k < n; k++) {
        double s = v[k];
        if (s == 0)
            continue;
        const double *m = c->M + k * n;
        for (uint64_t j = 0; j < n; j++)
            t[j] += s * m[j];
    }
}

static const char *method_name(nnp_relevance_method m)
{
    static const char *const names[] = {"rollout", "grad_rollout", "chefer", "chefer_rollout"};
    return (unsigned)m < 4 ? names[m] : "?";
}

static nnp_status check_args(const nnp_attn_layer *layers, size_t nlayers,
                             const nnp_relevance_options *o)
{
    if (!layers || !o || nlayers == 0)
        return nnp__fail(NNP_ERR_ARG, "relevance: no layer given");
    if ((unsigned)o->method > NNP_REL_CHEFER_ROLLOUT)
        return nnp__fail(NNP_ERR_ARG, "relevance: unknown method %d", (int)o->method);
    if ((unsigned)o->fusion > NNP_FUSION_MIN)
        return nnp__fail(NNP_ERR_ARG, "relevance: unknown head fusion %d", (int)o->fusion);
    if (!(o->discard >= 0 && o->discard < 1))
        return nnp__fail(NNP_ERR_ARG, "relevance: discard ratio %g is not in [0, 1)",
                         o->discard);
    if (o->start_layer >= nlayers)
        return nnp__fail(NNP_ERR_ARG, "relevance: start layer %zu but only %zu %s",
                         o->start_layer, nlayers, nlayers == 1 ? "layer" : "layers");
    uint64_t n = layers[0].n, nn;
    if (n == 0 || !nnp__mul_u64(n, n, &nn) || nn > SIZE_MAX / 2 / sizeof(double))
        return nnp__fail(NNP_ERR_ARG, "relevance: %llu tokens: no map or too large a map",
                         (unsigned long long)n);
    for (size_t l = 0; l < nlayers; l++) {
        const nnp_attn_layer *L = &layers[l];
        const char *name = L->name ? L->name : "?";
        if (L->n != n)
            return nnp__fail(NNP_ERR_ARG, "relevance: layer %zu ('%s') has %llu tokens, layer 0 "
                             "%llu", l, name, (unsigned long long)L->n, (unsigned long long)n);
        if (!L->attn || L->heads == 0 ||
            nnp_dtype_class_of(L->dtype) != NNP_CLASS_FLOAT)
            return nnp__fail(NNP_ERR_ARG, "relevance: layer %zu ('%s') has no float map", l,
                             name);
        if (o->method != NNP_REL_ROLLOUT &&
            (!L->grad || nnp_dtype_class_of(L->grad_dtype) != NNP_CLASS_FLOAT))
            return nnp__fail(NNP_ERR_ARG, "relevance: %s needs the gradient of every map; layer "
                             "%zu ('%s') has none", method_name(o->method), l, name);
    }
    return NNP_OK;
}

void nnp_relevance_options_init(nnp_relevance_options *opts)
{
    if (opts)
        *opts = (nnp_relevance_options){.size = sizeof *opts};
}

nnp_status nnp_relevance_rows(const nnp_attn_layer *layers, size_t nlayers,
                              const nnp_relevance_options *opts, const uint64_t *rows,
                              size_t nrows, double *out)
{
    nnp_relevance_options o;
    nnp_relevance_options_init(&o);
    nnp_status st = opts ? nnp__options_take("relevance", opts, &o, sizeof o) : NNP_OK;
    if (!st)
        st = check_args(layers, nlayers, opts ? &o : NULL);
    if (st)
        return st;
    uint64_t n = layers[0].n;
    if (nrows == 0 || !rows || !out)
        return nnp__fail(NNP_ERR_ARG, "relevance: no row asked for");
    if (nrows > SIZE_MAX / 2 / sizeof(double) / n)
        return nnp__fail(NNP_ERR_ARG, "relevance: %zu rows of %llu: too large", nrows,
                         (unsigned long long)n);
    for (size_t r = 0; r < nrows; r++)
        if (rows[r] >= n)
            return nnp__fail(NNP_ERR_ARG, "relevance: row %llu but the maps have %llu tokens",
                             (unsigned long long)rows[r], (unsigned long long)n);
    size_t ntasks = (size_t)((n + ROWS_PER_TASK - 1) / ROWS_PER_TASK);
    double *F = malloc(n * n * sizeof *F);
    double *V = calloc(nrows * n, sizeof *V);
    double *T = malloc(nrows * n * sizeof *T);
    double *scratch = malloc(2 * n * ntasks * sizeof *scratch);
    struct bad *bad = calloc(ntasks, sizeof *bad);
    if (!F || !V || !T || !scratch || !bad) {
        st = nnp__nomem();
        goto out;
    }
    for (size_t r = 0; r < nrows; r++)
        V[r * n + rows[r]] = 1;
    /* Rows of the chain times the last layer's matrix first: e_q^T M_L ... M_s. */
    for (size_t l = nlayers; l-- > o.start_layer;) {
        build_ctx bc = {&layers[l], &o, n, F, scratch, bad};
        memset(bad, 0, ntasks * sizeof *bad);
        nnp__parallel_for(ntasks, o.threads, build_rows, &bc);
        for (size_t t = 0; t < ntasks; t++)
            if (bad[t].found) {
                const char *name = bad[t].in_grad ? layers[l].grad_name : layers[l].name;
                st = nnp__fail(NNP_ERR_ARG, "relevance: %s '%s' holds a NaN or Inf at [%llu, "
                               "%llu, %llu]", bad[t].in_grad ? "gradient" : "attention map",
                               name ? name : "?", (unsigned long long)bad[t].h,
                               (unsigned long long)bad[t].i, (unsigned long long)bad[t].j);
                goto out;
            }
        if (o.method == NNP_REL_CHEFER) {
            for (uint64_t i = 0; i < n; i++)
                F[i * n + i] += 1;
        } else {
            if ((st = discard(F, n, o.discard)))
                goto out;
            rollout_step(F, n);
        }
        product_ctx pc = {V, F, T, n};
        nnp__parallel_for(nrows, o.threads, product_row, &pc);
        double *swap = V;
        V = T;
        T = swap;
    }
    memcpy(out, V, nrows * n * sizeof *out);
out:
    free(F);
    free(V);
    free(T);
    free(scratch);
    free(bad);
    return st;
}

nnp_status nnp_relevance(const nnp_attn_layer *layers, size_t nlayers,
                         const nnp_relevance_options *opts, uint64_t query, double *r)
{
    nnp_status st = nnp_relevance_rows(layers, nlayers, opts, &query, 1, r);
    /* the rows succeeded: opts holds at least the method */
    if (!st && opts->method == NNP_REL_CHEFER)
        r[query] = 0;
    return st;
}

/* ---- back-mapping through a pixel-shuffle projector ---- */

nnp_status nnp_pixel_shuffle_patches(int version, uint64_t h, uint64_t w, uint64_t token,
                                     uint64_t patches[4])
{
    if (version != 1 && version != 2)
        return nnp__fail(NNP_ERR_ARG, "back-mapping: pixel shuffle version %d (1 or 2)", version);
    if (h == 0 || w == 0 || h % 2 || w % 2)
        return nnp__fail(NNP_ERR_ARG, "back-mapping: a %llux%llu patch grid cannot be "
                         "pixel-shuffled by 0.5: both sides must be even and non-zero",
                         (unsigned long long)h, (unsigned long long)w);
    uint64_t hh = h / 2, hw = w / 2;
    if (token >= hh * hw)
        return nnp__fail(NNP_ERR_ARG, "back-mapping: token %llu but a %llux%llu grid makes %llu",
                         (unsigned long long)token, (unsigned long long)h, (unsigned long long)w,
                         (unsigned long long)(hh * hw));
    /* Version 1 leaves the shuffled grid transposed (InternVL's ps_version v1). */
    uint64_t i = version == 2 ? token / hw : token % hh;
    uint64_t j = version == 2 ? token % hw : token / hh;
    for (int m = 0; m < 2; m++)
        for (int k = 0; k < 2; k++)
            patches[2 * m + k] = (2 * i + (uint64_t)m) * w + 2 * j + (uint64_t)k;
    return NNP_OK;
}

nnp_status nnp_backmap(int version, bool split, const double *tokens, uint64_t ntokens,
                       uint64_t h, uint64_t w, double *grid)
{
    uint64_t p[4];
    nnp_status st = nnp_pixel_shuffle_patches(version, h, w, 0, p);
    if (st)
        return st;
    uint64_t per = (h / 2) * (w / 2);
    if (!tokens || !grid || ntokens == 0 || ntokens % per)
        return nnp__fail(NNP_ERR_ARG, "back-mapping: %llu image tokens are not a whole number "
                         "of tiles of %llu (a %llux%llu patch grid)",
                         (unsigned long long)ntokens, (unsigned long long)per,
                         (unsigned long long)h, (unsigned long long)w);
    for (uint64_t t = 0; t < ntokens; t++) {
        double *tile = grid + (t / per) * h * w;
        nnp_pixel_shuffle_patches(version, h, w, t % per, p);
        for (int k = 0; k < 4; k++)
            tile[p[k]] = split ? tokens[t] / 4 : tokens[t];
    }
    return NNP_OK;
}

/* ---- normalizing and resizing maps ---- */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

nnp_status nnp_relevance_normalize(double *x, size_t n, nnp_norm norm, double clip_percentile)
{
    if ((unsigned)norm > NNP_NORM_NONE)
        return nnp__fail(NNP_ERR_ARG, "normalize: unknown normalization %d", (int)norm);
    if (!(clip_percentile >= 0 && clip_percentile <= 100))
        return nnp__fail(NNP_ERR_ARG, "normalize: clip percentile %g is not in (0, 100]",
                         clip_percentile);
    if (n == 0)
        return NNP_OK;
    if (!x)
        return nnp__fail(NNP_ERR_ARG, "normalize: NULL map");
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i]))
            return nnp__fail(NNP_ERR_ARG, "normalize: element %zu is not finite", i);
    if (clip_percentile > 0) {
        double *s = malloc(n * sizeof *s);
        if (!s)
            return nnp__nomem();
        memcpy(s, x, n * sizeof *s);
        qsort(s, n, sizeof *s, cmp_double);
        double pos = clip_percentile / 100 * (double)(n - 1), lo = floor(pos);
        size_t i = (size_t)lo, j = i + 1 < n ? i + 1 : i;
        double cap = s[i] + (pos - lo) * (s[j] - s[i]);
        free(s);
        for (size_t k = 0; k < n; k++)
            x[k] = x[k] > cap ? cap : x[k];
    }
    double lo = x[0], hi = x[0];
    for (size_t i = 1; i < n; i++) {
        lo = x[i] < lo ? x[i] : lo;
        hi = x[i] > hi ? x[i] : hi;
    }
    if (norm == NNP_NORM_MIN_MAX)
        for (size_t i = 0; i < n; i++)
            x[i] = hi > lo ? (x[i] - lo) / (hi - lo) : 0;
    else if (norm == NNP_NORM_MAX)
        for (size_t i = 0; i < n; i++)
            x[i] = hi > 0 ? x[i] / hi : 0;
    return NNP_OK;
}

/* Where output index d samples an axis of `in` elements: the two neighbours and the weight of
 * the second. */
static void bilinear_axis(uint64_t d, uint64_t in, uint64_t out, uint64_t *a, uint64_t *b,
                          double *t)
{
    double s = ((double)d + 0.5) * ((double)in / (double)out) - 0.5;
    if (s < 0)
        s = 0;
    *a = (uint64_t)s;
    if (*a >= in - 1) {
        *a = *b = in - 1;
        *t = 0;
        return;
    }
    *b = *a + 1;
    *t = s - (double)*a;
}

nnp_status nnp_resize_bilinear(const double *src, uint64_t sh, uint64_t sw, double *dst,
                               uint64_t dh, uint64_t dw)
{
    if (!src || !dst || !sh || !sw || !dh || !dw)
        return nnp__fail(NNP_ERR_ARG, "resize: empty map (%llux%llu to %llux%llu)",
                         (unsigned long long)sh, (unsigned long long)sw, (unsigned long long)dh,
                         (unsigned long long)dw);
    for (uint64_t y = 0; y < dh; y++) {
        uint64_t y0, y1, x0, x1;
        double ty, tx;
        bilinear_axis(y, sh, dh, &y0, &y1, &ty);
        const double *r0 = src + y0 * sw, *r1 = src + y1 * sw;
        for (uint64_t x = 0; x < dw; x++) {
            bilinear_axis(x, sw, dw, &x0, &x1, &tx);
            double top = r0[x0] + tx * (r0[x1] - r0[x0]);
            double bottom = r1[x0] + tx * (r1[x1] - r1[x0]);
            dst[y * dw + x] = top + ty * (bottom - top);
        }
    }
    return NNP_OK;
}
