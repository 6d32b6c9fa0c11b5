/*
 * culprit.c - who makes the first divergence: a module of the port, or code of a module that no
 * module boundary of its own covers (a residual add, a position embedding, pooling in a parent's
 * forward). Read on the port's side, in its order, from what was measured:
 *
 * - A: the last port record before the first failing one that agrees with its partner;
 * - between A and the failing record, an input that no recorded module made (the first record
 *   of its value is an input) came from the code of the receiving module's parent;
 * - a failing input came from that code too;
 * - a failing output of a module whose child's output A agrees came from the module's own code
 *   after its children ran;
 * - otherwise the module that made the failing output is the culprit.
 *
 * Which module holds which is read from execution order (a call's records span its children's).
 */
#include <stdlib.h>
#include <string.h>

#include "diff/diff.h"

/* Where each module call of the port runs: from its first record to its last. Nesting is read
 * from these spans, not from the names: a C engine's "blk.0.attn_kqv" runs inside "blk.0.attn"
 * though no dot says so. */
typedef struct {
    uint64_t key;   /* module and call */
    uint64_t lo, hi;
    size_t rec;     /* one of its records, for the module's name */
} span;


static int span_order(const void *a, const void *b)
{
    const span *x = a, *y = b;
    return x->key < y->key ? -1 : x->key > y->key;
}

/* The spans of every module call, one per call (sorted by key, *n of them). */
static span *call_spans(const nnp_dump *port, size_t *n)
{
    size_t nrec = nnp_dump_count(port), k = 0;
    span *s = malloc((nrec ? nrec : 1) * sizeof *s);
    if (!s)
        return NULL;
    for (size_t i = 0; i < nrec; i++) {
        const nnp_record *r = nnp_dump_record(port, i);
        s[i] = (span){nnp__call_key(r), i, i, i};
    }
    qsort(s, nrec, sizeof *s, span_order);
    for (size_t i = 0; i < nrec;) {
        size_t j = i;
        span m = s[i];
        for (; j < nrec && s[j].key == s[i].key; j++) {
            m.lo = s[j].lo < m.lo ? s[j].lo : m.lo;
            m.hi = s[j].hi > m.hi ? s[j].hi : m.hi;
        }
        s[k++] = m;
        i = j;
    }
    *n = k;
    return s;
}

static const span *span_of(const span *s, size_t n, const nnp_record *r)
{
    uint64_t key = nnp__call_key(r);
    size_t a = nnp__first_key_from(s, n, sizeof *s, key);
    return a < n && s[a].key == key ? &s[a] : NULL;
}

/* The innermost module call whose span holds `inner` (another call's), or NULL: the top level. */
static const span *enclosing(const span *s, size_t n, const span *inner)
{
    const span *best = NULL;
    for (size_t i = 0; i < n; i++) {
        const span *x = &s[i];
        if (x == inner || x->lo > inner->lo || x->hi < inner->hi ||
            (x->lo == inner->lo && x->hi == inner->hi))
            continue;
        if (!best || x->hi - x->lo < best->hi - best->lo)
            best = x;
    }
    return best;
}

/* Whether pair i agrees: by its verdict, or as `agrees` says when given. */
static bool pair_agrees(const nnp_diff *d, const bool *agrees, size_t i)
{
    return agrees ? agrees[i] : !nnp__pair_fails(&d->pairs[i]);
}

nnp_status nnp__culprit_of(const nnp_diff *d, const nnp_dump *ref, const nnp_dump *port,
                           size_t first, const bool *agrees, nnp_culprit *out, char **module)
{
    *out = (nnp_culprit){NNP_CULPRIT_NONE, NULL, NULL, -1, -1};
    *module = NULL;
    size_t nport = nnp_dump_count(port);
    /* what each port record's pairs say: 1 agrees, 2 fails (a failure wins) */
    uint8_t *state = calloc(nport ? nport : 1, 1);
    if (!state)
        return nnp__nomem();
    for (size_t i = 0; i < d->npairs; i++) {
        const nnp_diff_pair *p = &d->pairs[i];
        bool ok = pair_agrees(d, agrees, i);
        for (uint32_t k = 0; k < p->nparts; k++) {
            /* what one name of a value says, every name of it says */
            size_t v = d->port_value_seq ? (size_t)d->port_value_seq[p->parts[k]] : p->parts[k];
            state[v] = ok && state[v] != 2 ? 1 : 2;
        }
    }
    for (size_t j = 0; d->port_value_seq && j < nport; j++)
        state[j] = state[d->port_value_seq[j]];
    const nnp_diff_pair *fd = &d->pairs[first];
    /* where the port first goes wrong: the earliest made of the values that fail (a value
     * that is wrong under one name was made wrong where it first appears); the port's records
     * are in execution order, so an index is a seq */
    size_t fport = SIZE_MAX;
    for (size_t i = 0; i < d->npairs; i++) {
        const nnp_diff_pair *p = &d->pairs[i];
        if (pair_agrees(d, agrees, i))
            continue;
        size_t made = d->port_value_seq ? (size_t)d->port_value_seq[p->port] : p->port;
        if (made < fport)
            fport = made;
    }
    if (fport == SIZE_MAX) /* every pair agrees as `agrees` says: the first one's port record */
        fport = d->port_value_seq ? (size_t)d->port_value_seq[fd->port] : fd->port;
    const nnp_record *f = nnp_dump_record(port, fport);
    int64_t a = -1, b = -1;
    for (int64_t j = (int64_t)fport - 1; j >= 0 && a < 0; j--)
        if (state[j] == 1)
            a = j;
    for (int64_t j = a + 1; d->port_value_seq && j < (int64_t)fport && b < 0; j++) {
        const nnp_record *q = nnp_dump_record(port, (size_t)j);
        if (!state[j] && nnp__is_input_role(q->role) && d->port_value_seq[j] == (uint64_t)j)
            b = j;
    }
    free(state);
    size_t nspans = 0;
    span *spans = call_spans(port, &nspans);
    if (!spans)
        return nnp__nomem();
    const span *fs = span_of(spans, nspans, f);
    const span *as = a >= 0 ? span_of(spans, nspans, nnp_dump_record(port, (size_t)a)) : NULL;
    nnp_culprit *c = out;
    c->ref_module = nnp__module_of(nnp_dump_record(ref, fd->ref));
    const span *at = NULL; /* the call whose own code errs, NULL: the top level */
    if (b >= 0 || nnp__is_input_role(f->role)) {
        c->kind = NNP_CULPRIT_CODE;
        c->before = b >= 0 ? b : (int64_t)fport;
        at = enclosing(spans, nspans, span_of(spans, nspans,
                                              nnp_dump_record(port, (size_t)c->before)));
    } else if (as && fs && as != fs && as->lo > fs->lo && as->hi < fs->hi) {
        /* a module whose child's output agrees fails after it: its own code after the child */
        c->kind = NNP_CULPRIT_CODE;
        c->before = (int64_t)fport;
        at = fs;
    } else {
        c->kind = NNP_CULPRIT_MODULE;
        at = fs;
    }
    /* a call that spans the whole capture is the model itself: its code is the top level */
    if (at && at->lo == 0 && at->hi + 1 == nnp_dump_count(port) && c->kind == NNP_CULPRIT_CODE)
        at = NULL;
    *module = strdup(at ? nnp__module_of(nnp_dump_record(port, at->rec)) : "");
    free(spans);
    if (!*module) {
        *out = (nnp_culprit){NNP_CULPRIT_NONE, NULL, NULL, -1, -1};
        return nnp__nomem();
    }
    c->port_module = *module;
    c->after = c->kind == NNP_CULPRIT_CODE ? a : -1;
    return NNP_OK;
}

nnp_status nnp__diff_culprit(nnp_diff *d, nnp_dump *ref, nnp_dump *port)
{
    d->culprit = (nnp_culprit){NNP_CULPRIT_NONE, NULL, NULL, -1, -1};
    if (d->first_divergence < 0)
        return NNP_OK;
    return nnp__culprit_of(d, ref, port, (size_t)d->first_divergence, NULL, &d->culprit,
                           &d->culprit_module);
}

const nnp_culprit *nnp_diff_culprit(const nnp_diff *d)
{
    return d && d->culprit.kind != NNP_CULPRIT_NONE ? &d->culprit : NULL;
}
