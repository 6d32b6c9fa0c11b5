/*
 * distrib.c - the distributed diff: the processes of one job share the comparing of two dumps,
 * over a transport the caller gives (nnp_comm; `nnparity diff --mpi` fills it from MPI through
 * a plugin, so the library never links MPI).
 *
 * Every process pairs the dumps itself: pairing is deterministic, so all agree on the pairs
 * without sending them. The work is then cut into units - one chunk of a pair compared straight
 * from the mappings, or one whole pair that the rules adapt (its adapted tensors are made where
 * it is compared) - and split among the processes by bytes, each taking a contiguous range in
 * pair order, so that each reads one stretch of the files and only that. Process 0 gathers
 * every unit's result and merges each pair's chunk partials in chunk order, as the
 * single-process pass does: the metrics are the same bits. It then draws the conclusions
 * (verdicts, first divergence, order, where NaN/Inf start) as nnp_diff_dumps does.
 *
 * A failure anywhere is agreed on before the next step (nnp_comm_agree), so that no process
 * waits for ever in a collective step that another one has left.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "diff/diff.h"

#define WHOLE UINT64_MAX /* a unit's chunk: the whole (adapted) pair */

typedef struct {
    size_t pair;
    uint64_t chunk; /* WHOLE: the pair, adapted */
    uint64_t bytes; /* read from both dumps */
} unit;

typedef struct {
    int32_t status, rank;
    char msg[1016];
} agree_msg;

nnp_status nnp_comm_agree(const nnp_comm *c, nnp_status st)
{
    if (!c || c->size <= 1)
        return st;
    agree_msg m, out;
    memset(&m, 0, sizeof m);
    memset(&out, 0, sizeof out);
    m.status = (int32_t)st;
    m.rank = c->rank;
    if (st)
        snprintf(m.msg, sizeof m.msg, "%s", nnp_last_error());
    void *all = NULL;
    /* the lengths matter at process 0 only; a fixed buffer there cannot fail */
    uint64_t one, *lens = c->rank == 0 ? calloc((size_t)c->size, sizeof *lens) : &one;
    if (!lens) {
        out.status = NNP_ERR_NOMEM;
        snprintf(out.msg, sizeof out.msg, "out of memory");
    }
    int rc = lens ? c->gather(c->ctx, &m, sizeof m, &all, lens) : 0;
    if (c->rank == 0 && lens) {
        if (rc || !all) {
            out.status = NNP_ERR_INTERNAL;
            snprintf(out.msg, sizeof out.msg, "distributed diff: the transport failed to gather");
        }
        for (int r = 0; !rc && all && r < c->size && !out.status; r++)
            if (lens[r] == sizeof m && ((agree_msg *)all)[r].status)
                out = ((agree_msg *)all)[r];
    }
    free(all);
    if (c->rank == 0)
        free(lens);
    if (c->bcast(c->ctx, &out, sizeof out))
        return nnp__fail(NNP_ERR_INTERNAL, "distributed diff: the transport failed to broadcast");
    out.msg[sizeof out.msg - 1] = 0;
    if (!out.status)
        return NNP_OK;
    if (out.rank != c->rank)
        return nnp__fail((nnp_status)out.status, "rank %d: %s", (int)out.rank, out.msg);
    return nnp__fail((nnp_status)out.status, "%s", out.msg);
}

typedef struct {
    nnp_dump *ref, *port;
    const nnp_diff *diff;
    const unit *units; /* this process's */
    const void **rdata, **pdata; /* per pair, for pairs compared from the mappings */
    unsigned char *results;      /* one slot per unit */
    size_t slot;
    nnp__first_failure failure;  /* of a unit that could not be compared */
} work;

static uint64_t pair_bytes(nnp_dump *ref, nnp_dump *port, const nnp_diff_pair *p)
{
    uint64_t n = nnp_dump_record(ref, p->ref)->nbytes;
    for (uint32_t k = 0; k < p->nparts; k++)
        n += nnp_dump_record(port, p->parts[k])->nbytes;
    return n;
}

static void run_unit(void *ctx, size_t t)
{
    work *w = ctx;
    const unit *u = &w->units[t];
    const nnp_diff_pair *p = &w->diff->pairs[u->pair];
    void *out = w->results + t * w->slot;
    if (u->chunk != WHOLE) {
        nnp_cmp_side r = {p->ref_dtype, w->rdata[u->pair], w->ref, p->ref};
        nnp_cmp_side q = {p->port_dtype, w->pdata[u->pair], w->port, p->port};
        nnp__compare_chunk(&r, &q, nnp_dump_record(w->ref, p->ref)->nelem, p->atol, p->rtol,
                           u->chunk, out);
        return;
    }
    nnp_compare_options o = {sizeof o, p->atol, p->rtol, 1};
    nnp_tensor rt, pt;
    nnp_status st = nnp__pair_tensors(w->diff, u->pair, w->ref, w->port, &rt, &pt);
    if (!st)
        st = nnp_compare(rt.dtype, rt.data, pt.dtype, pt.data, rt.nelem, &o, out);
    nnp__tensor_free(&rt);
    nnp__tensor_free(&pt);
    nnp_dump_release(w->ref, p->ref);
    for (uint32_t k = 0; k < p->nparts; k++)
        nnp_dump_release(w->port, p->parts[k]);
    nnp__first_failure_note(&w->failure, t, st);
}

/* The units of the pairs that are compared, in pair order, chunks in order. */
static nnp_status make_units(nnp_dump *ref, nnp_dump *port, const nnp_diff *d, unit **out,
                             size_t *n)
{
    uint64_t chunk = nnp__cmp_chunk_elems();
    size_t count = 0, cap = 0;
    unit *u = NULL;
    for (size_t i = 0; i < d->npairs; i++) {
        const nnp_diff_pair *p = &d->pairs[i];
        if (p->verdict != NNP_PASS)
            continue; /* a mismatch, decided without comparing */
        const nnp_record *r = nnp_dump_record(ref, p->ref);
        uint64_t chunks = p->adapters ? 1 : (r->nelem + chunk - 1) / chunk;
        size_t es = nnp_dtype_size(p->ref_dtype) + nnp_dtype_size(p->port_dtype);
        for (uint64_t c = 0; c < chunks; c++) {
            if (!nnp__grow((void **)&u, &cap, count + 1, sizeof *u)) {
                free(u);
                return nnp__nomem();
            }
            uint64_t len = r->nelem - c * chunk < chunk ? r->nelem - c * chunk : chunk;
            u[count++] = p->adapters ? (unit){i, WHOLE, pair_bytes(ref, port, p)}
                                     : (unit){i, c, len * es};
        }
    }
    *out = u;
    *n = count;
    return NNP_OK;
}

/* This process's units: a contiguous range, cut where the bytes before a unit pass each
 * process's share (every process works it out the same way). */
static void my_range(const unit *u, size_t n, const nnp_comm *c, size_t *first, size_t *end)
{
    uint64_t total = 0, before = 0;
    for (size_t i = 0; i < n; i++)
        total += u[i].bytes;
    *first = *end = n;
    for (size_t i = 0; i < n; i++) {
        int owner = total ? (int)((long double)before * c->size / total) : 0;
        owner = owner < c->size ? owner : c->size - 1;
        if (owner == c->rank && *first == n)
            *first = i;
        if (owner > c->rank) {
            *end = i;
            break;
        }
        before += u[i].bytes;
    }
    if (*first == n)
        *end = n;
}

/* Compare this process's units into results (one slot each). */
static nnp_status run_units(nnp_dump *ref, nnp_dump *port, const nnp_diff *d, const unit *u,
                            size_t n, int threads, unsigned char *results, size_t slot)
{
    const void **rdata = calloc(d->npairs ? d->npairs : 1, sizeof *rdata);
    const void **pdata = calloc(d->npairs ? d->npairs : 1, sizeof *pdata);
    nnp_status st = rdata && pdata ? NNP_OK : nnp__nomem();
    /* the data of the pairs compared from the mappings, once each (a range may start or end
     * inside a pair); adapted pairs fetch theirs when they are compared */
    for (size_t i = 0; i < n && !st; i++) {
        const nnp_diff_pair *p = &d->pairs[u[i].pair];
        if (u[i].chunk != WHOLE && (i == 0 || u[i - 1].pair != u[i].pair) &&
            !(st = nnp_dump_data(ref, p->ref, &rdata[u[i].pair])))
            st = nnp_dump_data(port, p->port, &pdata[u[i].pair]);
    }
    work w = {ref, port, d, u, rdata, pdata, results, slot, NNP__FIRST_FAILURE_INIT};
    if (!st)
        st = nnp__parallel_for(n, threads, run_unit, &w);
    if (!st)
        st = nnp__first_failure_say(&w.failure);
    free(rdata);
    free(pdata);
    return st;
}

/* At process 0: each pair's metrics from its units' results (all units, in order). */
static nnp_status merge_results(nnp_dump *ref, nnp_diff *d, const unit *u, size_t n,
                                const unsigned char *all, size_t slot)
{
    size_t psize = nnp__cmp_partial_size();
    for (size_t i = 0; i < n;) {
        nnp_diff_pair *p = &d->pairs[u[i].pair];
        if (u[i].chunk == WHOLE) {
            memcpy(&p->metrics, all + i * slot, sizeof p->metrics);
            nnp__diff_verdict(p);
            i++;
            continue;
        }
        size_t j = i;
        while (j < n && u[j].pair == u[i].pair)
            j++;
        unsigned char *parts = malloc((j - i) * psize);
        if (!parts)
            return nnp__nomem();
        for (size_t k = i; k < j; k++)
            memcpy(parts + (k - i) * psize, all + k * slot, psize);
        nnp__compare_merge(parts, j - i, &p->metrics);
        free(parts);
        nnp__diff_verdict(p);
        i = j;
    }
    /* pairs with no element have no chunk: their metrics are those of nothing compared */
    for (size_t i = 0; i < d->npairs; i++) {
        nnp_diff_pair *p = &d->pairs[i];
        if (p->verdict == NNP_PASS && !p->adapters && nnp_dump_record(ref, p->ref)->nelem == 0) {
            nnp__compare_merge(NULL, 0, &p->metrics);
            nnp__diff_verdict(p);
        }
    }
    return NNP_OK;
}

nnp_status nnp_diff_dumps_comm(nnp_dump *ref, nnp_dump *port, const nnp_diff_options *opts,
                               const nnp_comm *comm, nnp_diff **out)
{
    if (!out)
        return nnp__fail(NNP_ERR_ARG, "nnp_diff_dumps_comm: no place for the result");
    *out = NULL;
    if (!comm || comm->size <= 1)
        return nnp_diff_dumps(ref, port, opts, out);
    if (!comm->gather || !comm->bcast || comm->rank < 0 || comm->rank >= comm->size)
        return nnp__fail(NNP_ERR_ARG, "nnp_diff_dumps_comm: an incomplete transport");
    nnp_diff_options o;
    nnp_diff_options_init(&o);
    nnp_diff *d = NULL;
    unit *u = NULL;
    size_t nu = 0, first = 0, end = 0;
    unsigned char *mine = NULL, *all = NULL;
    uint64_t *lens = NULL;
    nnp_status st = ref && port ? nnp__options_take("nnp_diff_dumps_comm", opts, &o, sizeof o)
                                : nnp__fail(NNP_ERR_ARG, "nnp_diff_dumps_comm: missing dump");
    if (!st && !(d = calloc(1, sizeof *d)))
        st = nnp__nomem();
    if (!st)
        st = nnp__pair_records(ref, port, &o, d);
    if (!st)
        st = make_units(ref, port, d, &u, &nu);
    if ((st = nnp_comm_agree(comm, st)))
        goto out;
    size_t slot = nnp__cmp_partial_size() > sizeof(nnp_metrics) ? nnp__cmp_partial_size()
                                                                : sizeof(nnp_metrics);
    slot = (slot + 7) / 8 * 8;
    my_range(u, nu, comm, &first, &end);
    mine = calloc(end > first ? end - first : 1, slot);
    lens = calloc((size_t)comm->size, sizeof *lens);
    st = mine && lens ? NNP_OK : nnp__nomem();
    if (!st)
        st = run_units(ref, port, d, u + first, end - first, o.threads, mine, slot);
    /* gathered whatever happened (a failed process sends zeros), so that none is left waiting;
     * the results count only once every process says it succeeded */
    void *got = NULL;
    int rc = comm->gather(comm->ctx, mine, (uint64_t)(end - first) * slot, &got, lens);
    all = got;
    if (!st && rc)
        st = nnp__fail(NNP_ERR_INTERNAL, "distributed diff: the transport failed to gather");
    if (!st && comm->rank == 0) {
        uint64_t sum = 0;
        for (int r = 0; r < comm->size; r++)
            sum += lens[r];
        if (!all || sum != (uint64_t)nu * slot)
            st = nnp__fail(NNP_ERR_INTERNAL, "distributed diff: %llu bytes of results came "
                           "back, not %llu", (unsigned long long)sum,
                           (unsigned long long)nu * slot);
    }
    if ((st = nnp_comm_agree(comm, st)))
        goto out;
    /* then what a single process does after comparing, on process 0 alone: explanations read
     * the failing pairs again, culprit and conclusion read the merged results */
    if (comm->rank == 0) {
        st = merge_results(ref, d, u, nu, all, slot);
        if (!st && !o.no_explain)
            st = nnp__diff_explain(d, ref, port, o.threads);
        if (!st)
            st = nnp__diff_conclude(d, port);
        if (!st)
            st = nnp__diff_culprit(d, ref, port);
    }
    st = nnp_comm_agree(comm, st);
out:
    free(u);
    free(mine);
    free(all);
    free(lens);
    if (st || comm->rank != 0) {
        nnp_diff_free(d);
        return st;
    }
    *out = d;
    return NNP_OK;
}
