/*
 * diff.c - pairs a port's records with the reference's, compares every pair, and finds where the
 * port starts to diverge and whether it runs its layers in the same order.
 *
 * Pairing (pairing.c) is by name after the rules, so repeated calls pair by call index through
 * their "#<call>" names, then by automatic alignment. Small pairs are compared many at a time,
 * one thread each; large ones one at a time, threaded over chunks. A pair the rules adapt is
 * made into buffers of its own right before it is compared and freed after.
 */
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "diff/diff.h"

/* ---- reading a diff ---- */

size_t nnp_diff_pair_count(const nnp_diff *d)
{
    return d ? d->npairs : 0;
}

const nnp_diff_pair *nnp_diff_pair_at(const nnp_diff *d, size_t i)
{
    return d && i < d->npairs ? &d->pairs[i] : NULL;
}

size_t nnp_diff_unmatched_ref_count(const nnp_diff *d)
{
    return d ? d->nunmatched_ref : 0;
}

size_t nnp_diff_unmatched_ref_at(const nnp_diff *d, size_t i)
{
    return d && i < d->nunmatched_ref ? d->unmatched_ref[i] : SIZE_MAX;
}

size_t nnp_diff_unmatched_port_count(const nnp_diff *d)
{
    return d ? d->nunmatched_port : 0;
}

size_t nnp_diff_unmatched_port_at(const nnp_diff *d, size_t i)
{
    return d && i < d->nunmatched_port ? d->unmatched_port[i] : SIZE_MAX;
}

int64_t nnp_diff_first_divergence(const nnp_diff *d)
{
    return d ? d->first_divergence : -1;
}

int64_t nnp_diff_order_violation(const nnp_diff *d)
{
    return d ? d->order_violation : -1;
}

int64_t nnp_diff_nonfinite_origin(const nnp_diff *d)
{
    return d ? d->nonfinite_origin : -1;
}

size_t nnp_diff_aligned_count(const nnp_diff *d)
{
    return d ? d->naligned : 0;
}

size_t nnp_diff_rank0_default(const nnp_diff *d)
{
    return d ? d->rank0_default : 0;
}

size_t nnp_diff_collision_count(const nnp_diff *d)
{
    return d ? d->ncollisions : 0;
}

const nnp_collision *nnp_diff_collision_at(const nnp_diff *d, size_t i)
{
    return d && i < d->ncollisions ? &d->collisions[i] : NULL;
}

void nnp_diff_free(nnp_diff *d)
{
    if (!d)
        return;
    nnp__pairing_free(d->owned);
    free(d->pairs);
    free(d->unmatched_ref);
    free(d->unmatched_port);
    free(d->ref_value_seq);
    free(d->port_value_seq);
    free(d->port_value_ref);
    free(d->culprit_module);
    nnp__diff_explained_free(d);
    free(d);
}

typedef struct {
    nnp_dump *ref, *port;
    nnp_diff *diff;
    const size_t *todo;
    size_t ntodo;
    atomic_size_t next; /* the next of todo a lane takes */
    const void **rdata, **pdata;
    int threads;
    nnp_status *status;
    const nnp_diff_options *opts; /* for the progress callback */
    pthread_mutex_t lock;         /* one progress call at a time */
    uint64_t done, total;         /* bytes compared, of all */
    bool explain;                 /* failing small pairs are explained as they are compared */
    nnp__xscratch *scratch;       /* one per lane of small pairs */
    nnp__first_failure failure;   /* of a small pair that could not be compared */
} cmp_ctx;

/* The most bytes of large failing pairs whose pages stay mapped until they are explained, a
 * batch at a time (compare_all): each is then given back whole, once, and its explanation
 * reads pages still mapped. Given back by chunks as compared and mapped again for the
 * explanation, the pages cost more than the explanation's own work (bench/README.md, "Profiles
 * and hints"). A larger pair goes back by chunks, and its explanation maps what it reads. */
#define HELD_MAX ((uint64_t)128 << 20)

/* The bytes a pair reads: its reference record and every port part. */
static uint64_t pair_bytes(const cmp_ctx *ctx, const nnp_diff_pair *p)
{
    uint64_t n = nnp_dump_record(ctx->ref, p->ref)->nbytes;
    for (uint32_t k = 0; k < p->nparts; k++)
        n += nnp_dump_record(ctx->port, p->parts[k])->nbytes;
    return n;
}

static void report_progress(cmp_ctx *ctx, const nnp_diff_pair *p)
{
    if (!ctx->opts->progress)
        return;
    pthread_mutex_lock(&ctx->lock);
    ctx->done += pair_bytes(ctx, p);
    ctx->opts->progress(ctx->opts->progress_ctx, ctx->done, ctx->total);
    pthread_mutex_unlock(&ctx->lock);
}

/* Compare one pair: straight from the dumps' data, or, when the rules adapt it, from the
 * buffers the adapters make (freed right after). A failing pair is explained at once when
 * `scratch` is given (a small pair, its elements still in the cache and its pages mapped); when
 * `hold` is, a failing pair read in place keeps its pages mapped for an explanation to come,
 * which gives them back, and the call says true. */
static bool compare_pair(cmp_ctx *ctx, size_t t, nnp__xscratch *scratch, bool hold)
{
    size_t i = ctx->todo[t];
    nnp_diff_pair *p = &ctx->diff->pairs[i];
    nnp_compare_options o = {sizeof o, p->atol, p->rtol, ctx->threads};
    nnp_status st;
    if (p->adapters) {
        nnp_tensor rt, pt;
        st = nnp__pair_tensors(ctx->diff, i, ctx->ref, ctx->port, &rt, &pt);
        if (!st)
            st = nnp_compare(rt.dtype, rt.data, pt.dtype, pt.data, rt.nelem, &o, &p->metrics);
        nnp__tensor_free(&rt);
        nnp__tensor_free(&pt);
    } else {
        /* straight from the mappings, releasing each chunk's pages behind the scan (a failing
         * pair explained at once, or held for its batch: once explained), so that the resident
         * size stays a few chunks (and HELD_MAX) whatever the dumps' size */
        nnp_cmp_side r = {p->ref_dtype, ctx->rdata[i], ctx->ref, p->ref};
        nnp_cmp_side q = {p->port_dtype, ctx->pdata[i], ctx->port, p->port};
        uint64_t n = nnp_dump_record(ctx->ref, p->ref)->nelem;
        bool keep = ctx->explain && (scratch || hold);
        st = nnp__compare_sides_keep(&r, &q, n, &o, keep, &p->metrics);
        if (!st)
            nnp__diff_verdict(p);
        if (!st && keep && !scratch && p->verdict == NNP_FAIL) {
            report_progress(ctx, p);
            return true;
        }
    }
    if (st) {
        ctx->status[t] = st;
        if (scratch) /* a lane's: said again on the caller's thread */
            nnp__first_failure_note(&ctx->failure, t, st);
    } else if (p->adapters) {
        nnp__diff_verdict(p);
    }
    if (!st && scratch && ctx->explain && p->verdict == NNP_FAIL)
        nnp__diff_explain_pair(ctx->diff, ctx->ref, ctx->port, i, scratch);
    nnp_dump_release(ctx->ref, p->ref);
    for (uint32_t k = 0; k < p->nparts; k++)
        nnp_dump_release(ctx->port, p->parts[k]);
    report_progress(ctx, p);
    return false;
}

/* One lane of the small pairs: the next one at a time, with the lane's scratch. */
static void compare_lane(void *c, size_t lane)
{
    cmp_ctx *ctx = c;
    for (;;) {
        size_t t = atomic_fetch_add_explicit(&ctx->next, 1, memory_order_relaxed);
        if (t >= ctx->ntodo)
            return;
        compare_pair(ctx, t, &ctx->scratch[lane], false);
    }
}

/* Compare the pairs that need it: small ones many at a time, each failing one explained as soon
 * as it is compared (explain.c), large ones with every thread, the failing ones explained a
 * batch at a time (HELD_MAX), a pair to a thread (a pair's explanation among the few chunks of
 * the next pair's comparison left threads waiting). */
static nnp_status compare_all(nnp_diff *d, nnp_dump *ref, nnp_dump *port,
                              const nnp_diff_options *opts)
{
    int threads = opts->threads;
    size_t n = d->npairs;
    size_t *small = malloc((n ? n : 1) * sizeof *small), *large = malloc((n ? n : 1) * sizeof *large);
    const void **rdata = calloc(n ? n : 1, sizeof *rdata), **pdata = calloc(n ? n : 1, sizeof *pdata);
    nnp_status *status = calloc(n ? n : 1, sizeof *status);
    nnp_status st = !small || !large || !rdata || !pdata || !status ? nnp__nomem() : NNP_OK;
    size_t ns = 0, nl = 0;
    for (size_t i = 0; i < n && !st; i++) {
        nnp_diff_pair *p = &d->pairs[i];
        if (p->verdict != NNP_PASS)
            continue; /* a mismatch, decided without comparing */
        /* adapted pairs fetch their data when they are compared; a view is read a chunk at
         * a time by the pass (its data left NULL), and the pass checks what it reads */
        bool ranged = false;
        if (!p->adapters &&
            ((st = nnp__dump_begin_ranged(ref, p->ref, &ranged)) ||
             (!ranged && (st = nnp__dump_data_for_pass(ref, p->ref, &rdata[i]))) ||
             (st = nnp__dump_begin_ranged(port, p->port, &ranged)) ||
             (!ranged && (st = nnp__dump_data_for_pass(port, p->port, &pdata[i])))))
            break;
        if (nnp_dump_record(ref, p->ref)->nelem < (1u << 20))
            small[ns++] = i;
        else
            large[nl++] = i;
    }
    bool explain = !opts->no_explain;
    size_t lanes = (size_t)nnp__thread_count(threads);
    lanes = lanes < ns ? lanes : ns ? ns : 1;
    nnp__xscratch *scratch = calloc(lanes, sizeof *scratch);
    if (!st && (!scratch || (explain && nnp__diff_explain_begin(d))))
        st = nnp__nomem();
    if (!st) {
        cmp_ctx ctx = {ref, port, d, small, ns, 0, rdata, pdata, 1, status, opts,
                       PTHREAD_MUTEX_INITIALIZER, 0, 0, explain, scratch,
                       NNP__FIRST_FAILURE_INIT};
        for (size_t i = 0; i < ns; i++)
            ctx.total += pair_bytes(&ctx, &d->pairs[small[i]]);
        for (size_t i = 0; i < nl; i++)
            ctx.total += pair_bytes(&ctx, &d->pairs[large[i]]);
        nnp__parallel_for(lanes, threads, compare_lane, &ctx);
        st = nnp__first_failure_say(&ctx.failure);
        ctx.todo = large;
        ctx.threads = threads;
        size_t nheld = 0; /* the first of `small`, done with, holds the batch */
        uint64_t held = 0;
        for (size_t i = 0; i < nl && !st; i++) {
            const nnp_diff_pair *p = &d->pairs[large[i]];
            uint64_t bytes = pair_bytes(&ctx, p);
            if (nheld && held + bytes > HELD_MAX) {
                st = nnp__diff_explain_some(d, ref, port, threads, small, nheld);
                if (st)
                    break;
                nheld = 0;
                held = 0;
            }
            /* only a pair there is something to explain in is held */
            bool hold = bytes <= HELD_MAX && nnp__diff_pair_explainable(p);
            status[i] = NNP_OK;
            if (compare_pair(&ctx, i, NULL, hold)) {
                small[nheld++] = large[i];
                held += bytes;
            }
            st = status[i];
        }
        if (!st && nheld)
            st = nnp__diff_explain_some(d, ref, port, threads, small, nheld);
        /* a diff that stops gives back what it held (a pair released twice loses nothing) */
        for (size_t k = 0; st && k < nheld; k++) {
            nnp_dump_release(ref, d->pairs[small[k]].ref);
            nnp_dump_release(port, d->pairs[small[k]].port);
        }
    }
    for (size_t k = 0; scratch && k < lanes; k++)
        free(scratch[k].mem);
    free(scratch);
    free(small);
    free(large);
    free(rdata);
    free(pdata);
    free(status);
    return st;
}

static bool new_nonfinite(const nnp_diff_pair *p)
{
    return p->verdict != NNP_SHAPE_MISMATCH && p->verdict != NNP_DTYPE_MISMATCH &&
           (p->metrics.nan_port > p->metrics.nan_ref || p->metrics.inf_port > p->metrics.inf_ref);
}

/* Whether record i holds a NaN or an infinity (a float record; others never do). */
static nnp_status holds_nonfinite(nnp_dump *d, size_t i, bool *out)
{
    const nnp_record *r = nnp_dump_record(d, i);
    *out = false;
    if (nnp_dtype_class_of(r->dtype) != NNP_CLASS_FLOAT || !r->nelem)
        return NNP_OK;
    nnp_tensor_stats s;
    nnp_status st = nnp_stats_compute(d, &i, 1, 1, &s);
    *out = !st && (s.nan || s.pos_inf || s.neg_inf);
    return st;
}

typedef struct {
    uint64_t seq;
    size_t pair;
} by_seq;

static int seq_order(const void *a, const void *b)
{
    uint64_t x = ((const by_seq *)a)->seq, y = ((const by_seq *)b)->seq;
    return x < y ? -1 : x > y;
}

/* Whether the inputs the port recorded for this record's module call ("<module>/in<k>" with
 * "#<call>" after the first call: the capture naming) are all finite. */
static nnp_status inputs_finite(nnp_dump *port, const nnp_record *q, bool *out)
{
    *out = true;
    if (!*q->module)
        return NNP_OK;
    for (unsigned k = 0; *out; k++) {
        char role[16];
        snprintf(role, sizeof role, "in%u", k);
        nnp_sbuf name = {0};
        nnp__record_name(&name, q->module, role, q->call);
        if (name.failed)
            return nnp__nomem();
        int64_t i = nnp_dump_find(port, name.s);
        nnp__sbuf_free(&name);
        if (i < 0)
            break;
        bool bad;
        nnp_status st = holds_nonfinite(port, (size_t)i, &bad);
        if (st)
            return st;
        *out = !bad;
    }
    return NNP_OK;
}

/* Where NaN/Inf start on the port side: the first pair, in the port's order, that has new ones
 * while its module call's recorded inputs are finite (they are upstream of it, and its own
 * computation made them). Candidates are taken in order and the search stops at the first hit,
 * so a NaN that spreads through every later layer costs one look per layer before the origin. */
static nnp_status find_nonfinite_origin(nnp_diff *d, nnp_dump *port)
{
    d->nonfinite_origin = -1;
    by_seq *c = malloc((d->npairs ? d->npairs : 1) * sizeof *c);
    if (!c)
        return nnp__nomem();
    size_t n = 0;
    for (size_t i = 0; i < d->npairs; i++) {
        const nnp_record *q = nnp_dump_record(port, d->pairs[i].port);
        if (new_nonfinite(&d->pairs[i]) && strncmp(q->role, "in", 2) != 0)
            c[n++] = (by_seq){q->seq, i};
    }
    if (n)
        qsort(c, n, sizeof *c, seq_order);
    nnp_status st = NNP_OK;
    for (size_t k = 0; k < n && !st && d->nonfinite_origin < 0; k++) {
        bool ok;
        st = inputs_finite(port, nnp_dump_record(port, d->pairs[c[k].pair].port), &ok);
        if (!st && ok)
            d->nonfinite_origin = (int64_t)c[k].pair;
    }
    /* every candidate's inputs already held NaN/Inf: the earliest is the best lead there is */
    if (!st && d->nonfinite_origin < 0 && n)
        d->nonfinite_origin = (int64_t)c[0].pair;
    free(c);
    return st;
}

void nnp_diff_options_init(nnp_diff_options *opts)
{
    if (opts)
        *opts = (nnp_diff_options){.size = sizeof *opts, .atol = -1, .rtol = -1};
}

nnp_status nnp_diff_dumps(nnp_dump *ref, nnp_dump *port, const nnp_diff_options *opts,
                          nnp_diff **out)
{
    if (!ref || !port || !out)
        return nnp__fail(NNP_ERR_ARG, "nnp_diff_dumps: missing dump or output");
    *out = NULL;
    nnp_diff_options o;
    nnp_diff_options_init(&o);
    nnp_status st = nnp__options_take("nnp_diff_dumps", opts, &o, sizeof o);
    if (st)
        return st;
    nnp_diff *d = calloc(1, sizeof *d);
    st = d ? nnp__pair_records(ref, port, &o, d) : nnp__nomem();
    if (!st)
        st = compare_all(d, ref, port, &o);
    if (!st && !o.no_explain)
        st = nnp__diff_explain(d, ref, port, o.threads);
    if (!st)
        st = nnp__diff_conclude(d, port);
    if (!st)
        st = nnp__diff_culprit(d, ref, port);
    if (st) {
        nnp_diff_free(d);
        return st;
    }
    *out = d;
    return NNP_OK;
}

nnp_status nnp__diff_conclude(nnp_diff *d, nnp_dump *port)
{
    d->first_divergence = d->order_violation = -1;
    uint64_t last_seq = 0;
    for (size_t i = 0; i < d->npairs; i++) {
        nnp_verdict v = d->pairs[i].verdict;
        const nnp_diff_pair *p = &d->pairs[i];
        if (v != NNP_PASS && v != NNP_WARN) {
            /* A port paired by evidence is read in its own order: the first failing pair is
             * the one whose port value was made first (the reference's order decides ties and
             * a port paired by names alone). */
            const nnp_diff_pair *q = d->first_divergence >= 0 ? &d->pairs[d->first_divergence]
                                                              : NULL;
            if (!q || (d->port_value_seq &&
                       d->port_value_seq[p->port] < d->port_value_seq[q->port]))
                d->first_divergence = (int64_t)i;
        }
        uint64_t seq = nnp_dump_record(port, p->port)->seq;
        /* one value under several names: its first appearance is where it was made; a later
         * name of it on the reference's side (a value read again) says nothing of order */
        if (d->port_value_seq)
            seq = d->port_value_seq[p->port];
        if (d->ref_value_seq && d->ref_value_seq[p->ref] != p->ref)
            continue;
        /* a part of a fused value is in its place by construction (value_parts.c), and the
         * record it is paired with may hold that value elsewhere too */
        if (p->evidence == NNP_EVIDENCE_VALUE_PART || p->evidence == NNP_EVIDENCE_STRUCTURE_PART)
            continue;
        if (d->order_violation < 0 && i > 0 && seq < last_seq)
            d->order_violation = (int64_t)i;
        last_seq = seq;
    }
    return find_nonfinite_origin(d, port);
}
