/*
 * value_transposed.c - pairing by evidence when one side records a value with its axes in
 * another order: attention activations as [B, H, T, D] against [B, T, H, D], a C engine's
 * Linear output as [d, t] against [t, d], a channels-last port's NHWC against NCHW. Such a
 * value holds other bytes in C order than the reference's, so neither its hash nor its sketch
 * meets the reference's (value_align.c): the reference's value is read through the permutation
 * of its axes that gives the port's shape, fingerprinted as records are (kernels/sketch.c), and
 * matched as whole values are: the same bytes, or an estimated rel-L2 under the value tolerance
 * (nnp__side_tol).
 *
 * Only values that could be permuted are read: an unpaired reference value of 2 to 5 axes
 * whose dims, as a multiset, are those of an unpaired port value made between the value pairs
 * around it (at most NEAR_SCAN port values after the one before), the shapes differing or
 * holding a repeated dim (a square [d, d] transposed). So a capture whose values all found
 * partners, or whose unpaired values have no such counterpart, reads nothing, and reading costs
 * at most one pass over the reference values that could be permuted, once per permutation.
 *
 * A shape can allow several permutations ([N, C, H, H] read as [N, H, H, C] two ways; every
 * [d, d] as itself or transposed): values choose among them, and the identity, or any
 * permutation that keeps the elements in C order (moving axes of size 1), is a reshape, which
 * value_align.c already matches. Where values do not agree (a port computing the value wrongly)
 * structure may still pair the two (nnp__gap_perms, for value_align.c's gaps), but only where
 * the shapes leave no doubt: one permutation, or one that values chose elsewhere.
 */
#include <stdlib.h>
#include <string.h>

#include "diff/value_side.h"
#include "kernels/kernels.h"

#define NEAR_SCAN 256  /* port values looked at after the reference value's anchor */
#define NEAR_KEEP 16   /* ... of those, with a permuted shape, kept */
#define MAX_PERMS 8    /* permutations a reference value is read through */

/* ---- shapes ---- */

/* The dims as a multiset with the number of axes: equal for two shapes that are permutations
 * of each other. */
static uint64_t dims_key(uint32_t nd, const uint64_t *shape)
{
    uint64_t s[NNP_PERM_MAX_DIMS];
    memcpy(s, shape, nd * sizeof *s);
    for (uint32_t k = 1; k < nd; k++)
        for (uint32_t j = k; j > 0 && s[j - 1] > s[j]; j--) {
            uint64_t t = s[j];
            s[j] = s[j - 1];
            s[j - 1] = t;
        }
    uint64_t h = nnp__hash_combine(0x7472616e73706f73ull, nd);
    for (uint32_t k = 0; k < nd; k++)
        h = nnp__hash_combine(h, s[k]);
    return h;
}

static uint64_t shape_key(uint32_t nd, const uint64_t *shape)
{
    uint64_t h = nnp__hash_combine(0x73686170655f6b79ull, nd);
    for (uint32_t k = 0; k < nd; k++)
        h = nnp__hash_combine(h, shape[k]);
    return h;
}

/* Whether two axes other than of size 1 have one size: a shape that is its own permutation. */
static bool repeats(uint32_t nd, const uint64_t *shape)
{
    for (uint32_t a = 0; a < nd; a++)
        for (uint32_t b = a + 1; b < nd; b++)
            if (shape[a] > 1 && shape[a] == shape[b])
                return true;
    return false;
}

static bool same_shape(uint32_t nd, const uint64_t *a, const uint64_t *b)
{
    return !memcmp(a, b, nd * sizeof *a);
}

/* A shape that may take part: 2 to 5 axes of floats (ids and masks equal by chance too often). */
static bool permutable(uint32_t nd, nnp_dtype dtype)
{
    return nd >= 2 && nd <= NNP_PERM_MAX_DIMS && nnp_dtype_class_of(dtype) == NNP_CLASS_FLOAT;
}

/* The search for permutations: the port's axes of more than one element (qa) are given the
 * reference's (ra) of the same size, one by one. */
typedef struct {
    uint32_t nd, n1; /* axes, and those of more than one element */
    const uint64_t *r, *q;
    uint32_t ra[NNP_PERM_MAX_DIMS], qa[NNP_PERM_MAX_DIMS];
    uint32_t sigma[NNP_PERM_MAX_DIMS]; /* qa[k] takes ra[sigma[k]] */
    bool used[NNP_PERM_MAX_DIMS];
    nnp__perm *out;
    size_t max, n;
} perm_walk;

/* The whole permutation from an assignment of the axes of more than one element: the axes of
 * size 1 keep their order (where they stand moves no element). */
static void lift(const perm_walk *w, nnp__perm *p)
{
    uint32_t k1 = 0, j1 = 0;
    p->n = (uint8_t)w->nd;
    for (uint32_t k = 0; k < w->nd; k++) {
        if (w->q[k] != 1) {
            p->axes[k] = (uint8_t)w->ra[w->sigma[k1++]];
            continue;
        }
        while (w->r[j1] != 1)
            j1++;
        p->axes[k] = (uint8_t)j1++;
    }
}

static void walk(perm_walk *w, uint32_t k)
{
    if (w->n > w->max)
        return;
    if (k == w->n1) {
        bool in_order = true;
        for (uint32_t j = 0; j < w->n1 && in_order; j++)
            in_order = w->sigma[j] == j;
        if (in_order)
            return; /* the elements in their own order: a reshape, not a permutation */
        if (w->n < w->max)
            lift(w, &w->out[w->n]);
        w->n++;
        return;
    }
    for (uint32_t j = 0; j < w->n1; j++)
        if (!w->used[j] && w->r[w->ra[j]] == w->q[w->qa[k]]) {
            w->used[j] = true;
            w->sigma[k] = j;
            walk(w, k + 1);
            w->used[j] = false;
        }
}

/* The permutations that read reference shape r as port shape q with the elements in another
 * order: out[0 .. min(n, max)), where n, the return value, counts up to max + 1 of them (0: q
 * is not r permuted, or only r reshaped). */
static size_t shape_perms(uint32_t nd, const uint64_t *r, const uint64_t *q, nnp__perm *out,
                          size_t max)
{
    perm_walk w = {.nd = nd, .r = r, .q = q, .out = out, .max = max};
    uint32_t nr1 = 0;
    for (uint32_t k = 0; k < nd; k++) {
        if (r[k] != 1)
            w.ra[nr1++] = k;
        if (q[k] != 1)
            w.qa[w.n1++] = k;
    }
    if (nr1 != w.n1)
        return 0;
    walk(&w, 0);
    return w.n;
}

static bool perm_equal(const nnp__perm *a, const nnp__perm *b)
{
    return a->n == b->n && !memcmp(a->axes, b->axes, a->n);
}

/* ---- values ---- */

typedef nnp__value_side side;

static const nnp_record *rec_at(const side *s, size_t i)
{
    return nnp_dump_record(s->d, s->rec[i]);
}

static bool unpaired(const side *s, uint32_t c)
{
    return s->partner[c] < 0 && !s->in_part[c];
}

/* A value that may take part: unpaired, of a permutable shape, not all zero. */
static bool candidate_value(const side *s, uint32_t c)
{
    if (!unpaired(s, c)) /* most are paired: their records are not looked at */
        return false;
    const nnp_record *q = rec_at(s, s->first[c]);
    return permutable(q->ndim, q->dtype) && s->sk[s->first[c]].all.norm > 0;
}

/* The port's values in the order they were made. The dataflow check appends the values it
 * splits off (value_flow.c): only then does an index not say it, and *order and *rank are made
 * (NULL while the indices are the order). */
static nnp_status made_order(const side *p, uint32_t **order, uint32_t **rank)
{
    *order = *rank = NULL;
    bool sorted = true;
    for (uint32_t c = 1; c < p->ncls && sorted; c++)
        sorted = p->first[c - 1] < p->first[c];
    return sorted ? NNP_OK : nnp__made_order(p, rank, order);
}

typedef struct {
    uint32_t pc;
    nnp__perm perm[MAX_PERMS];
    size_t nperm;
} near_value;

/* The port values that reference value rc may be with its axes permuted: after rank `from`,
 * before rank `to`, unpaired, with rc's dims in another order (or rc's own shape when that is
 * its own permutation). */
static size_t near_values(const side *r, const side *p, uint32_t rc, const uint64_t *pkey,
                          const uint32_t *order, int64_t from, int64_t to, near_value *out)
{
    const nnp_record *rq = rec_at(r, r->first[rc]);
    uint64_t key = dims_key(rq->ndim, rq->shape);
    bool rep = repeats(rq->ndim, rq->shape);
    size_t n = 0;
    for (int64_t x = from + 1, seen = 0; x < to && seen < NEAR_SCAN && n < NEAR_KEEP;
         x++, seen++) {
        uint32_t pc = order ? order[x] : (uint32_t)x;
        if (pkey[pc] != key || !unpaired(p, pc))
            continue;
        const nnp_record *pq = rec_at(p, p->first[pc]);
        if (same_shape(rq->ndim, rq->shape, pq->shape) && !rep)
            continue;
        near_value *v = &out[n];
        v->pc = pc;
        v->nperm = shape_perms(rq->ndim, rq->shape, pq->shape, v->perm, MAX_PERMS);
        if (v->nperm > MAX_PERMS)
            v->nperm = MAX_PERMS; /* the first ones; a shape this ambiguous is rare */
        n += v->nperm > 0;
    }
    return n;
}

/* The fingerprint of reference value rc read through perm, from its data in hand. */
static nnp_status sketch_permuted(const nnp_record *q, const void *data, const nnp__perm *perm,
                                  nnp_sketch *out)
{
    nnp_tensor t = {.dtype = q->dtype, .ndim = q->ndim, .nelem = q->nelem, .data = data};
    memcpy(t.shape, q->shape, q->ndim * sizeof *t.shape);
    nnp_op op = {.kind = NNP_OP_TRANSPOSE, .on_ref = true, .n = perm->n};
    for (uint32_t k = 0; k < perm->n; k++)
        op.dims[k] = perm->axes[k];
    nnp_status st = nnp__adapt(&t, &op, 1, true, NULL);
    if (st)
        return st;
    nnp__sketch_tensor(t.dtype, t.ndim, t.shape, t.data, t.nelem, out);
    nnp__tensor_free(&t);
    return NNP_OK;
}

typedef struct {
    uint32_t pc;
    nnp__perm perm;
    double dist; /* -1: none */
    bool exact;  /* the same bytes */
} match;

/* Reference value rc against its near port values: the nearest that holds it permuted. The
 * value is read once, and fingerprinted once per permutation any of them needs. */
static nnp_status best_match(const side *r, const side *p, uint32_t rc, const near_value *nv,
                             size_t n, match *best)
{
    nnp__perm perms[MAX_PERMS];
    size_t np = 0;
    for (size_t j = 0; j < n; j++)
        for (size_t k = 0; k < nv[j].nperm; k++) {
            bool seen = false;
            for (size_t i = 0; i < np && !seen; i++)
                seen = perm_equal(&perms[i], &nv[j].perm[k]);
            if (!seen && np < MAX_PERMS)
                perms[np++] = nv[j].perm[k];
        }
    best->dist = -1;
    size_t ri = r->rec[r->first[rc]];
    const nnp_record *q = nnp_dump_record(r->d, ri);
    const void *data;
    nnp_status st = nnp_dump_data(r->d, ri, &data);
    if (st)
        return st;
    for (size_t i = 0; i < np && !st; i++) {
        nnp_sketch sk;
        if ((st = sketch_permuted(q, data, &perms[i], &sk)))
            break;
        for (size_t j = 0; j < n; j++) {
            bool needs = false;
            for (size_t k = 0; k < nv[j].nperm && !needs; k++)
                needs = perm_equal(&nv[j].perm[k], &perms[i]);
            if (!needs)
                continue;
            const nnp_sketch *ps = &p->sk[p->first[nv[j].pc]];
            double d = 0;
            bool exact = ps->hash == sk.hash;
            double tol = nnp__side_tol(r, rc, rec_at(p, p->first[nv[j].pc])->dtype);
            if (!exact &&
                (!nnp__sketch_distance(&ps->all, &sk.all, &d, NULL) || !(d <= tol)))
                continue;
            if (best->dist < 0 || d < best->dist)
                *best = (match){nv[j].pc, perms[i], d, exact};
        }
    }
    nnp_dump_release(r->d, ri);
    return st;
}

static nnp_status push(nnp__perm_pair **v, size_t *n, size_t *cap, nnp__perm_pair x)
{
    if (!nnp__grow((void **)v, cap, *n + 1, sizeof **v))
        return nnp__nomem();
    (*v)[(*n)++] = x;
    return NNP_OK;
}

static void choose(nnp__perm_set *chosen, const nnp__perm *p)
{
    for (size_t i = 0; i < chosen->n; i++)
        if (perm_equal(&chosen->v[i], p))
            return;
    if (chosen->n < NNP__PERMS_CHOSEN)
        chosen->v[chosen->n++] = *p;
}

nnp_status nnp__pair_transposed(side *r, side *p, nnp__perm_pair **out, size_t *nout,
                                nnp__perm_set *chosen)
{
    *out = NULL;
    *nout = 0;
    chosen->n = 0;
    /* the port's candidates by their dims: most captures have none, and stop here */
    uint64_t *pkey = NULL;
    size_t ncand = 0;
    for (uint32_t c = 0; c < p->ncls; c++) {
        if (!candidate_value(p, c))
            continue;
        if (!pkey && !(pkey = calloc(p->ncls, sizeof *pkey)))
            return nnp__nomem();
        const nnp_record *q = rec_at(p, p->first[c]);
        pkey[c] = dims_key(q->ndim, q->shape);
        ncand++;
    }
    if (!ncand)
        return NNP_OK;
    uint32_t *order, *rank;
    nnp_status st = made_order(p, &order, &rank);
    nnp__perm_pair *v = NULL;
    size_t n = 0, cap = 0;
    int64_t from = -1; /* the rank of the port partner of the last paired reference value */
    uint32_t next = 0; /* the next paired reference value from rc on */
    near_value nv[NEAR_KEEP];
    for (uint32_t rc = 0; rc < r->ncls && !st; rc++) {
        if (r->partner[rc] >= 0) {
            uint32_t pc = (uint32_t)r->partner[rc];
            from = rank ? rank[pc] : pc;
            continue;
        }
        if (!candidate_value(r, rc))
            continue;
        if (next <= rc)
            for (next = rc + 1; next < r->ncls && r->partner[next] < 0; next++)
                ;
        int64_t to = (int64_t)p->ncls;
        if (next < r->ncls) {
            uint32_t pc = (uint32_t)r->partner[next];
            to = rank ? rank[pc] : pc;
        }
        size_t nn = near_values(r, p, rc, pkey, order, from, to, nv);
        if (!nn)
            continue;
        match m;
        if ((st = best_match(r, p, rc, nv, nn, &m)) || m.dist < 0)
            continue;
        r->partner[rc] = m.pc;
        p->partner[m.pc] = rc;
        r->how[rc] = p->how[m.pc] = NNP_EVIDENCE_VALUE_TRANSPOSED;
        from = rank ? rank[m.pc] : m.pc;
        choose(chosen, &m.perm);
        /* as value_align.c's: equal bytes 1, values 0.9-1 by their distance */
        double tol = nnp__side_tol(r, rc, rec_at(p, p->first[m.pc])->dtype);
        st = push(&v, &n, &cap, (nnp__perm_pair){
                                    rc, m.pc, m.perm,
                                    m.exact ? 1.0 : nnp__value_confidence(m.dist, tol)});
    }
    free(pkey);
    free(order);
    free(rank);
    if (st) {
        free(v);
        return st;
    }
    *out = v;
    *nout = n;
    return NNP_OK;
}

/* ---- structure, gap by gap ---- */

typedef struct {
    uint64_t key, shape; /* dims_key, shape_key */
    uint32_t at;         /* the item's index on its side */
    bool port;
} gap_item;

static int gap_order(const void *a, const void *b)
{
    const gap_item *x = a, *y = b;
    if (x->key != y->key)
        return x->key < y->key ? -1 : 1;
    if (x->shape != y->shape)
        return x->shape < y->shape ? -1 : 1;
    return x->port != y->port ? (x->port ? 1 : -1) : (x->at > y->at) - (x->at < y->at);
}

/* The one permutation that reads reference shape rs as port shape ps: the only one there is,
 * or the only one of several that values chose; false when there is none or doubt. */
static bool one_perm(uint32_t nd, const uint64_t *rs, const uint64_t *ps,
                     const nnp__perm_set *chosen, nnp__perm *out)
{
    nnp__perm perms[MAX_PERMS];
    size_t n = shape_perms(nd, rs, ps, perms, MAX_PERMS);
    if (n == 1) {
        *out = perms[0];
        return true;
    }
    if (n == 0 || n > MAX_PERMS)
        return false;
    size_t found = 0;
    for (size_t k = 0; k < n; k++)
        for (size_t i = 0; i < chosen->n; i++)
            if (perm_equal(&perms[k], &chosen->v[i])) {
                *out = perms[k];
                found++;
            }
    return found == 1;
}

nnp_status nnp__gap_perms(const nnp__align_item *ri, size_t nr, const nnp__align_item *pi,
                          size_t np, const nnp__perm_set *chosen, const uint64_t **shape,
                          nnp__perm *perm)
{
    size_t nport = 0;
    for (size_t k = 0; k < np; k++) {
        shape[k] = NULL;
        nport += pi[k].shape && permutable(pi[k].ndim, pi[k].dtype);
    }
    if (!nport)
        return NNP_OK;
    gap_item *g = malloc((nr + nport) * sizeof *g);
    if (!g)
        return nnp__nomem();
    size_t n = 0;
    for (size_t k = 0; k < nr; k++)
        if (ri[k].shape && permutable(ri[k].ndim, ri[k].dtype))
            g[n++] = (gap_item){dims_key(ri[k].ndim, ri[k].shape),
                                shape_key(ri[k].ndim, ri[k].shape), (uint32_t)k, false};
    for (size_t k = 0; k < np; k++)
        if (pi[k].shape && permutable(pi[k].ndim, pi[k].dtype))
            g[n++] = (gap_item){dims_key(pi[k].ndim, pi[k].shape),
                                shape_key(pi[k].ndim, pi[k].shape), (uint32_t)k, true};
    qsort(g, n, sizeof *g, gap_order);
    /* items of one multiset of dims: one reference shape and one port shape, other than it */
    for (size_t a = 0, b; a < n; a = b) {
        size_t rshapes = 0, pshapes = 0, r0 = SIZE_MAX, p0 = SIZE_MAX;
        for (b = a; b < n && g[b].key == g[a].key; b++) {
            bool first = b == a || g[b].shape != g[b - 1].shape || g[b].port != g[b - 1].port;
            if (!first)
                continue;
            if (g[b].port) {
                pshapes++;
                p0 = p0 == SIZE_MAX ? b : p0;
            } else {
                rshapes++;
                r0 = r0 == SIZE_MAX ? b : r0;
            }
        }
        if (rshapes != 1 || pshapes != 1 || g[r0].shape == g[p0].shape)
            continue;
        const nnp__align_item *rs = &ri[g[r0].at], *ps = &pi[g[p0].at];
        nnp__perm pm;
        if (rs->ndim != ps->ndim || !one_perm(rs->ndim, rs->shape, ps->shape, chosen, &pm))
            continue;
        for (size_t k = a; k < b; k++)
            if (g[k].port) {
                shape[g[k].at] = rs->shape;
                perm[g[k].at] = pm;
            }
    }
    free(g);
    return NNP_OK;
}
