/*
 * explain.c - where each failing pair's error lies and what explains it (compare/profile.c,
 * compare/hints.c), with the axes named from the reference's module type, and one hint only a
 * diff can give: the port holding another reference record's values (q and k swapped, a layer
 * wired to the wrong input).
 *
 * Only failing pairs are read again, and each at most a bounded sample, so a diff whose pairs
 * agree costs nothing more, and one whose pairs all fail a fixed amount per pair. The comparing
 * pass explains a failing small pair as soon as it has compared it (nnp__diff_explain_pair),
 * while its elements are in the cache and its pages mapped; failing large pairs, their pages
 * still mapped, a batch at a time (nnp__diff_explain_some), a pair to a thread; and
 * nnp__diff_explain the others at the end. What a pair's explanation says depends on the pair
 * alone, never on when or on which thread it is made.
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "diff/diff.h"

/* Records this many pairs before or after a failing one are the candidates it may hold. */
#define OTHER_WINDOW 4
/* The least fit of another record's values that is offered (the hints' own floor). */
#define MIN_FIT 0.99

static bool has(const char *type, const char *word)
{
    return strstr(type, word) != NULL;
}

/* What each axis of a module's output is, where its type says the layout. */
static void axis_names(const char *type, uint32_t ndim, const char **names)
{
    static const char *const nchw[] = {"batch", "channel", "height", "width"};
    static const char *const ncl[] = {"batch", "channel", "length"};
    static const char *const attn[] = {"batch", "head", "query", "key"};
    static const char *const btf[] = {"batch", "token", "feature"};
    static const char *const rf[] = {"row", "feature"};
    const char *const *pick = NULL;
    bool conv2 = has(type, "Conv2d") || has(type, "BatchNorm2d") || has(type, "InstanceNorm2d") ||
                 has(type, "Pool2d") || has(type, "GroupNorm");
    bool conv1 = has(type, "Conv1d") || has(type, "BatchNorm1d") || has(type, "Pool1d");
    bool attention = has(type, "Attention") || has(type, "Attn");
    bool tokens = has(type, "Linear") || has(type, "LayerNorm") || has(type, "RMSNorm") ||
                  has(type, "Embedding") || has(type, "MLP") || has(type, "FeedForward") ||
                  has(type, "GELU") || has(type, "SiLU") || attention;
    if (ndim == 4 && conv2)
        pick = nchw;
    else if (ndim == 3 && conv1)
        pick = ncl;
    else if (ndim == 4 && attention)
        pick = attn;
    else if (ndim == 3 && tokens)
        pick = btf;
    else if (ndim == 2 && has(type, "Linear"))
        pick = rf;
    for (uint32_t a = 0; a < ndim && a < NNP__X_MAX_DIMS; a++)
        names[a] = pick ? pick[a] : NULL;
}

typedef struct {
    nnp_diff *d;
    nnp_dump *ref, *port;
    atomic_size_t next;     /* the next of the pairs to explain */
    nnp__xscratch *scratch; /* one per lane */
    const size_t *which;    /* the pairs to explain; NULL: every pair */
    size_t n;               /* how many */
} ctx;

static bool same_shape(uint32_t n, const uint64_t *a, uint32_t m, const uint64_t *b)
{
    if (n != m)
        return false;
    for (uint32_t k = 0; k < n; k++)
        if (a[k] != b[k])
            return false;
    return true;
}

/* The nearby reference record, compared as recorded and of the same shape, whose values the
 * port's explain all its error. */
static nnp_status other_record(const ctx *c, size_t i, nnp__explained *x)
{
    const nnp_diff *d = c->d;
    const nnp_diff_pair *p = &d->pairs[i];
    double best = 0;
    size_t who = SIZE_MAX;
    size_t lo = i > OTHER_WINDOW ? i - OTHER_WINDOW : 0;
    for (size_t j = lo; j < d->npairs && j <= i + OTHER_WINDOW; j++) {
        const nnp_diff_pair *q = &d->pairs[j];
        const nnp_record *r = nnp_dump_record(c->ref, q->ref);
        if (j == i || q->ref == p->ref || q->adapters ||
            nnp_dtype_class_of(r->dtype) != NNP_CLASS_FLOAT ||
            !same_shape(r->ndim, r->shape, p->ref_ndim, p->ref_shape))
            continue;
        const void *data;
        nnp_status st = nnp_dump_data(c->ref, q->ref, &data);
        if (st)
            return st;
        /* a fit under the floor or the best so far cannot be taken: stop reading it there */
        double fit = nnp__x_other_fit(x, r->dtype, data, best > MIN_FIT ? best : MIN_FIT);
        if (fit > best) {
            best = fit;
            who = q->ref;
        }
    }
    if (who == SIZE_MAX || best < MIN_FIT)
        return NNP_OK;
    return nnp__x_hint_add(x, NNP_HINT_OTHER_RECORD, best, -1, -1, (double)who,
                           "the port holds the reference's %s (records swapped, or wired to the "
                           "wrong input)", nnp_dump_record(c->ref, who)->name);
}

bool nnp__diff_pair_explainable(const nnp_diff_pair *p)
{
    return nnp_dtype_class_of(p->ref_dtype) == NNP_CLASS_FLOAT ||
           nnp_dtype_class_of(p->port_dtype) == NNP_CLASS_FLOAT;
}

static void explain_data(ctx *c, size_t i, nnp__xscratch *scratch)
{
    nnp_diff *d = c->d;
    const nnp_diff_pair *p = &d->pairs[i];
    bool permuted = p->verdict == NNP_SHAPE_MISMATCH && !p->problem &&
                    p->ref_ndim == p->port_ndim && p->ref_ndim >= 2;
    if (p->verdict != NNP_FAIL && !permuted)
        return;
    if (!nnp__diff_pair_explainable(p))
        return;
    nnp_tensor rt, pt;
    nnp_status st = nnp__pair_tensors(d, i, c->ref, c->port, &rt, &pt);
    if (st) {
        /* a pair whose data cannot be had again (a view past its cap) has no profile; only
         * running out of memory fails the diff */
        if (st == NNP_ERR_NOMEM)
            d->explain_status[i] = st;
        return;
    }
    nnp__explained *x = calloc(1, sizeof *x);
    if (!x || rt.ndim > NNP__X_MAX_DIMS || rt.nelem != pt.nelem || !rt.nelem) {
        st = x ? NNP_OK : nnp__nomem();
        free(x);
        x = NULL;
        goto out;
    }
    nnp__xinput in = {rt.dtype, pt.dtype, rt.data, pt.data, rt.ndim, rt.shape, rt.nelem,
                      p->atol, p->rtol, {0}, p->metrics.allclose_fail};
    axis_names(nnp_dump_record(c->ref, p->ref)->module_type, rt.ndim, in.names);
    if (permuted) {
        if (same_shape(rt.ndim, rt.shape, pt.ndim, pt.shape))
            goto drop;
        st = nnp__x_permuted_shape(&in, pt.ndim, pt.shape, x);
        if (!st && !x->nhints)
            goto drop;
    } else {
        st = nnp__x_profile(&in, x);
        if (!st)
            st = nnp__x_hints(&in, &p->metrics, x, scratch);
        if (!st && x->nhints == 0)
            st = other_record(c, i, x);
        x->profile.where = x->where;
    }
    nnp__x_sample_free(x);
    if (st) {
drop:
        nnp__explained_free(x);
        free(x);
        x = NULL;
    }
out:
    d->explained[i] = x;
    if (st)
        d->explain_status[i] = st;
    nnp__tensor_free(&rt);
    nnp__tensor_free(&pt);
}

/* Explain pair i, then give back the pages it read, and those the comparing pass left mapped
 * for it (diff.c), whether or not it could be explained. */
static void explain_one(ctx *c, size_t i, nnp__xscratch *scratch)
{
    const nnp_diff_pair *p = &c->d->pairs[i];
    explain_data(c, i, scratch);
    nnp_dump_release(c->ref, p->ref);
    for (uint32_t k = 0; k < p->nparts; k++)
        nnp_dump_release(c->port, p->parts[k]);
}

nnp_status nnp__diff_explain_begin(nnp_diff *d)
{
    size_t n = d->npairs ? d->npairs : 1;
    if (d->explained)
        return NNP_OK;
    d->explained = calloc(n, sizeof *d->explained);
    d->explain_status = calloc(n, sizeof *d->explain_status);
    d->explain_done = calloc(n, sizeof *d->explain_done);
    if (!d->explained || !d->explain_status || !d->explain_done)
        return nnp__nomem();
    return NNP_OK;
}

void nnp__diff_explain_pair(nnp_diff *d, nnp_dump *ref, nnp_dump *port, size_t i,
                            nnp__xscratch *scratch)
{
    ctx c = {d, ref, port, 0, NULL, NULL, 0};
    explain_one(&c, i, scratch);
    d->explain_done[i] = true;
}

/* One lane of the pool: the pairs not explained yet, taken one at a time (the uneven ones
 * balance themselves, as in nnp__parallel_for), with the lane's own scratch for their
 * samples. */
static void explain_lane(void *cv, size_t lane)
{
    ctx *c = cv;
    nnp_diff *d = c->d;
    for (;;) {
        size_t t = atomic_fetch_add_explicit(&c->next, 1, memory_order_relaxed);
        if (t >= c->n)
            return;
        size_t i = c->which ? c->which[t] : t;
        if (d->explain_done[i])
            continue;
        explain_one(c, i, &c->scratch[lane]);
        d->explain_done[i] = true;
    }
}

/* Explain pairs `which` (n; NULL: every pair not explained yet) a pair to a lane. */
static nnp_status explain_lanes(nnp_diff *d, nnp_dump *ref, nnp_dump *port, int threads,
                                const size_t *which, size_t n)
{
    size_t lanes = (size_t)nnp__thread_count(threads);
    lanes = lanes < n ? lanes : n ? n : 1;
    nnp__xscratch *scratch = calloc(lanes, sizeof *scratch);
    if (!scratch)
        return nnp__nomem();
    ctx c = {d, ref, port, 0, scratch, which, n};
    nnp_status st = nnp__parallel_for(lanes, threads, explain_lane, &c);
    for (size_t k = 0; k < lanes; k++)
        free(scratch[k].mem);
    free(scratch);
    return st;
}

nnp_status nnp__diff_explain_some(nnp_diff *d, nnp_dump *ref, nnp_dump *port, int threads,
                                  const size_t *which, size_t n)
{
    nnp_status st = nnp__diff_explain_begin(d);
    return st ? st : explain_lanes(d, ref, port, threads, which, n);
}

nnp_status nnp__diff_explain(nnp_diff *d, nnp_dump *ref, nnp_dump *port, int threads)
{
    size_t n = d->npairs;
    nnp_status st = nnp__diff_explain_begin(d);
    if (!st)
        st = explain_lanes(d, ref, port, threads, NULL, n);
    for (size_t i = 0; i < n && !st; i++)
        st = d->explain_status[i];
    if (st == NNP_ERR_NOMEM) /* the only status a lane keeps; its message was its thread's */
        st = nnp__nomem();
    free(d->explain_status);
    free(d->explain_done);
    d->explain_status = NULL;
    d->explain_done = NULL;
    return st;
}

void nnp__diff_explained_free(nnp_diff *d)
{
    free(d->explain_status);
    free(d->explain_done);
    d->explain_status = NULL;
    d->explain_done = NULL;
    for (size_t i = 0; d->explained && i < d->npairs; i++) {
        nnp__explained_free(d->explained[i]);
        free(d->explained[i]);
    }
    free(d->explained);
    d->explained = NULL;
}

const nnp_profile *nnp_diff_profile(const nnp_diff *d, size_t pair)
{
    if (!d || !d->explained || pair >= d->npairs || !d->explained[pair] ||
        !d->explained[pair]->where)
        return NULL;
    return &d->explained[pair]->profile;
}

size_t nnp_diff_hint_count(const nnp_diff *d, size_t pair)
{
    if (!d || !d->explained || pair >= d->npairs || !d->explained[pair])
        return 0;
    return d->explained[pair]->nhints;
}

const nnp_hint *nnp_diff_hint_at(const nnp_diff *d, size_t pair, size_t i)
{
    return i < nnp_diff_hint_count(d, pair) ? &d->explained[pair]->hints[i] : NULL;
}
