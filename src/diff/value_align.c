/*
 * value_align.c - pairing by evidence for what names leave unmatched (DESIGN.md, "Pairing by
 * evidence"): values first, structure only where values cannot speak, and "no partner" rather
 * than a guess.
 *
 * 1. Identity. Within one dump, records with one hash (kernels/sketch.c: the same dtype, shape
 *    and bytes) are one value with several names: a module's output that is the next one's
 *    input, a container that passes data through.
 * 2. Values. A port value and a reference value are the same when their hashes are equal, or
 *    when their sketches put them within the value tolerance of each other (estimated rel-L2,
 *    nnp__side_tol: 5% between float32 values, the baseline's noise where one is given) over
 *    the same elements: the same element count (a reshape), or the port's whole tensor against
 *    the last row of the reference's sequence axis (a decoder with a cache against a reference
 *    that re-runs the prefix). Of the candidates, the heaviest chain that runs forward on both sides
 *    is kept (a weighted longest increasing subsequence over the values' first appearances).
 * 3. Structure. Upstream of the first bug every correct value matches by value; downstream none
 *    does, so what is left is aligned gap by gap between the value anchors by execution order,
 *    shape, dtype, role kind and name (align.c). Such a pair is believed only while nothing
 *    says otherwise: when a module that reads the port's (or the reference's) value makes a
 *    value that matches again, the difference did not travel on, so the two records are not one
 *    quantity computed two ways (a residual added in another place, a scale folded elsewhere)
 *    and the pair is dropped: both stay unmatched.
 * 4. Parts. A fused value that nothing paired (q, k and v side by side) is matched part by part
 *    with the other side's values (value_parts.c); those take no part in the structure step.
 * 5. Axes. After the chain, a reference value that nothing paired is read with its axes in the
 *    order of an unpaired port value near it whose shape is its own permuted ([B, H, T, D] as
 *    [B, T, H, D]) and matched by value (value_transposed.c); the structure step may pair such
 *    shapes too where only one permutation fits.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "diff/diff.h"
#include "diff/value_side.h"

#define MAX_SCAN 512   /* reference values looked at per port value and table */
#define MAX_CAND 8     /* candidates kept per port value */
#define NONE32 UINT32_MAX

/* Two correct computations of one value in float32 differ by far less than 5%; a wrong one
 * mostly by more. A side that computes in bf16 or f16 carries its compute noise, which grows
 * through the layers: a bf16 port of ResNet-18 is 6% off its float32 reference by the last block
 * (tests/pairs/cnn_port.py with NNP_PAIR_DTYPE=bf16), so there two records are one value within
 * 15%; in an 8-bit float, 25%. The narrower dtype of the two decides. */
double nnp__value_tol(nnp_dtype a, nnp_dtype b)
{
    size_t sa = nnp_dtype_size(a), sb = nnp_dtype_size(b);
    size_t narrow = sa < sb ? sa : sb;
    return narrow >= 4 ? 0.05 : narrow == 2 ? 0.15 : NNP__VALUE_TOL_MAX;
}

double nnp__side_tol(const nnp__value_side *r, uint32_t rc, nnp_dtype pd)
{
    const nnp_record *q = nnp_dump_record(r->d, r->rec[r->first[rc]]);
    double tol = nnp__value_tol(q->dtype, pd);
    double noise = r->noise ? r->noise[r->rec[r->first[rc]]] : NAN;
    /* measured: twice what the reference itself is off by in the port's precision there */
    if (isfinite(noise))
        tol = fmin(NNP__VALUE_TOL_MAX, fmax(0.05, 2 * noise));
    return tol;
}

double nnp__value_confidence(double dist, double tol)
{
    return 0.9 + 0.1 * (1.0 - (dist > tol ? 1.0 : dist / tol));
}

/* One side: the records taking part, their values and what those are paired with. */
typedef nnp__value_side side;

static void side_free(side *s)
{
    free(s->sk);
    free(s->cls);
    free(s->first);
    free(s->mstart);
    free(s->members);
    free(s->partner);
    free(s->how);
    free(s->agrees_after);
    free(s->in_part);
}

/* Sketch every record and group them into values. */
static nnp_status side_build(side *s, int threads)
{
    size_t n = s->n, cap = 16;
    while (cap < 2 * n)
        cap *= 2;
    s->sk = malloc((n ? n : 1) * sizeof *s->sk);
    s->cls = malloc((n ? n : 1) * sizeof *s->cls);
    s->first = malloc((n ? n : 1) * sizeof *s->first);
    s->mstart = calloc(n + 2, sizeof *s->mstart);
    s->members = malloc((n ? n : 1) * sizeof *s->members);
    uint32_t *tab = malloc(cap * sizeof *tab);
    if (!s->sk || !s->cls || !s->first || !s->mstart || !s->members || !tab) {
        free(tab);
        return nnp__nomem();
    }
    nnp_status st = nnp__dump_sketches(s->d, s->rec, n, threads, s->sk);
    if (st) {
        free(tab);
        return st;
    }
    memset(tab, 0xff, cap * sizeof *tab);
    s->ncls = 0;
    for (size_t i = 0; i < n; i++) {
        size_t h = (size_t)nnp__mix64(s->sk[i].hash) & (cap - 1);
        while (tab[h] != NONE32 && s->sk[s->first[tab[h]]].hash != s->sk[i].hash)
            h = (h + 1) & (cap - 1);
        if (tab[h] == NONE32) {
            tab[h] = (uint32_t)s->ncls;
            s->first[s->ncls++] = (uint32_t)i;
        }
        s->cls[i] = tab[h];
        s->mstart[tab[h] + 1]++;
    }
    free(tab);
    for (size_t c = 0; c < s->ncls; c++)
        s->mstart[c + 1] += s->mstart[c];
    uint32_t *fill = calloc(s->ncls ? s->ncls : 1, sizeof *fill);
    s->partner = malloc((s->ncls ? s->ncls : 1) * sizeof *s->partner);
    s->how = calloc(s->ncls ? s->ncls : 1, 1);
    s->agrees_after = calloc(s->ncls ? s->ncls : 1, sizeof *s->agrees_after);
    s->in_part = calloc(s->ncls ? s->ncls : 1, sizeof *s->in_part);
    if (!fill || !s->partner || !s->how || !s->agrees_after || !s->in_part) {
        free(fill);
        return nnp__nomem();
    }
    for (size_t i = 0; i < n; i++)
        s->members[s->mstart[s->cls[i]] + fill[s->cls[i]]++] = (uint32_t)i;
    for (size_t c = 0; c < s->ncls; c++)
        s->partner[c] = -1;
    free(fill);
    return NNP_OK;
}

static const nnp_record *rec_at(const side *s, size_t i)
{
    return nnp_dump_record(s->d, s->rec[i]);
}

/* ---- candidates: reference values a port value may be ---- */

/* A reference part port values are compared with: the record's whole sketch or its last rows'. */
typedef struct {
    const nnp_sketch_part *part;
    uint32_t cls;
    uint8_t last; /* the value's last-row sketch, not its whole one */
} entry;

typedef struct {
    uint32_t pc, rc;
    uint8_t how;
    double dist;
    int64_t val;   /* chain weight ending here */
    uint32_t prev; /* the candidate before it in the chain */
} cand;

/* A candidate's weight in the chain: first its evidence (equal bytes over values: more pairs
 * always outweigh fewer), then, below every sum of those, how near it is. Near matters where
 * a port value is within tolerance of two reference values (x and x plus a small position
 * embedding, beside a bf16 side's noise): the nearer is the one it computes. */
static int64_t cand_weight(const cand *c)
{
    int64_t near = c->how == NNP_EVIDENCE_VALUE_EXACT || !(c->dist > 0)
                       ? 1000
                       : (int64_t)(1000.0 * fmax(0.0, 1.0 - c->dist / NNP__VALUE_TOL_MAX));
    return (int64_t)(c->how == NNP_EVIDENCE_VALUE_EXACT ? 4 : 3) * ((int64_t)1 << 32) + near;
}

/* Reference values by hash (open addressing), the hash kept in the slot so that a lookup reads
 * the table alone, not the sketches. */
typedef struct {
    uint64_t hash;
    uint32_t cls; /* NONE32: empty */
} hash_slot;

static size_t hash_home(uint64_t h, size_t cap)
{
    return (size_t)nnp__mix64(h) & (cap - 1);
}

/* The reference value with hash h, or NONE32. */
static uint32_t find_hash(const hash_slot *tab, size_t cap, uint64_t h)
{
    for (size_t k = hash_home(h, cap); tab[k].cls != NONE32; k = (k + 1) & (cap - 1))
        if (tab[k].hash == h)
            return tab[k].cls;
    return NONE32;
}

static void keep_best(cand *c, size_t *n, cand x)
{
    for (size_t i = 0; i < *n; i++)
        if (c[i].rc == x.rc) {
            if (x.dist < c[i].dist)
                c[i] = x;
            return;
        }
    if (*n < MAX_CAND) {
        c[(*n)++] = x;
        return;
    }
    size_t worst = 0;
    for (size_t i = 1; i < *n; i++)
        if (c[i].dist > c[worst].dist)
            worst = i;
    if (x.dist < c[worst].dist)
        c[worst] = x;
}

/* Reference parts indexed by locality-sensitive keys: a part's element count with the signs of
 * LSH_BITS of its projection's components, LSH_TABLES times over other components. Two parts
 * within the value tolerance of each other differ in a component's sign only where that
 * component is about as small as their difference, so a part meets its match in some table with
 * near certainty (a few in a thousand are missed by all; at the 15% allowed beside a bf16 side,
 * under one in a hundred), while the tables keep the candidates a
 * part is compared with to a few hundred out of a capture of 100,000 alike records. */
#define LSH_TABLES 8
#define LSH_BITS 16

/* A slot holds the entry's norm: most entries of a bucket are turned away on it, without
 * reading the entry or its sketch. */
typedef struct {
    uint64_t key;
    double norm;
    uint32_t entry;
} lsh_slot;

/* Table t's key takes the signs of components (11 t + 3 b) % W, b = 0 .. LSH_BITS - 1, first
 * to last from the top bit down: the signs of the components rotated right by 11 t, at the
 * fixed positions 3 b % W. Those 16 bits are gathered a byte of the signs at a time through
 * gather[byte][its value], the key bits that byte's bits make: four lookups instead of sixteen
 * tests a table (computing keys was a twentieth of pairing two 100k-record captures). */
static uint16_t lsh_gather[4][256];
static pthread_once_t lsh_gather_once = PTHREAD_ONCE_INIT;

static void lsh_gather_init(void)
{
    for (int b = 0; b < LSH_BITS; b++) {
        int m = b * 3 % NNP_SKETCH_WIDTH;
        for (int v = 0; v < 256; v++)
            if (v >> (m % 8) & 1)
                lsh_gather[m / 8][v] |= (uint16_t)(1u << (LSH_BITS - 1 - b));
    }
}

/* The part's key in every table, from one read of its projection. */
static void lsh_keys(const nnp_sketch_part *p, uint64_t *keys)
{
    pthread_once(&lsh_gather_once, lsh_gather_init);
    uint32_t signs = 0;
    for (int m = 0; m < NNP_SKETCH_WIDTH; m++)
        signs |= (uint32_t)(p->proj[m] > 0) << m;
    uint64_t c = nnp__hash_combine(0x9e3779b9u, p->count);
    for (int table = 0; table < LSH_TABLES; table++) {
        unsigned r = (unsigned)(table * 11) % NNP_SKETCH_WIDTH;
        uint32_t x = r ? signs >> r | signs << (NNP_SKETCH_WIDTH - r) : signs;
        uint64_t k = (uint64_t)(lsh_gather[0][x & 255] | lsh_gather[1][x >> 8 & 255] |
                                lsh_gather[2][x >> 16 & 255] | lsh_gather[3][x >> 24]);
        keys[table] = nnp__hash_combine(c, k);
    }
}

/* The tables: slots[t * n + k] are table t's slots grouped by bucket (a counting sort, which
 * keeps the entries' order within a bucket), bucket b's run from start[t * (nbk + 1) + b]; a
 * lookup is one run. */
typedef struct {
    lsh_slot *slots;
    uint32_t *start;
    size_t n, nbk;
} lsh_index;

static void lsh_free(lsh_index *x)
{
    free(x->slots);
    free(x->start);
    x->slots = NULL;
    x->start = NULL;
}

static nnp_status lsh_build(const entry *e, size_t ne, lsh_index *x)
{
    x->n = ne;
    x->nbk = 16;
    while (x->nbk < ne)
        x->nbk *= 2;
    x->slots = malloc((LSH_TABLES * ne + 1) * sizeof *x->slots);
    x->start = calloc((size_t)LSH_TABLES * (x->nbk + 1), sizeof *x->start);
    uint64_t *keys = malloc((LSH_TABLES * ne + 1) * sizeof *keys);
    uint32_t *fill = malloc(x->nbk * sizeof *fill);
    nnp_status st = x->slots && x->start && keys && fill ? NNP_OK : nnp__nomem();
    for (size_t k = 0; !st && k < ne; k++)
        lsh_keys(e[k].part, keys + k * LSH_TABLES);
    for (int t = 0; !st && t < LSH_TABLES; t++) {
        lsh_slot *row = x->slots + (size_t)t * ne;
        uint32_t *run = x->start + (size_t)t * (x->nbk + 1);
        for (size_t k = 0; k < ne; k++)
            run[(keys[k * LSH_TABLES + t] & (x->nbk - 1)) + 1]++;
        for (size_t k = 0; k < x->nbk; k++)
            run[k + 1] += run[k];
        memset(fill, 0, x->nbk * sizeof *fill);
        for (size_t k = 0; k < ne; k++) {
            uint64_t key = keys[k * LSH_TABLES + t];
            size_t bk = key & (x->nbk - 1);
            row[run[bk] + fill[bk]++] = (lsh_slot){key, e[k].part->norm, (uint32_t)k};
        }
    }
    free(keys);
    free(fill);
    if (st)
        lsh_free(x);
    return st;
}

/* ---- probing: each port value's candidates, port values a chunk at a time on the threads ---- */

#define PROBE_CHUNK 256 /* port values a task: its lookups fit on the stack */

typedef struct {
    const side *r, *p;
    const entry *e;
    const hash_slot *tab;
    size_t cap;
    const lsh_index *lsh;
    cand *c;       /* task k's candidates from c[k * PROBE_CHUNK * MAX_CAND] */
    size_t *count; /* ... and how many */
} probe_ctx;

typedef struct {
    uint64_t key;
    uint32_t pc, table;
} lsh_query;

static bool probe_eligible(const side *p, uint32_t pc)
{
    return nnp_dtype_class_of(rec_at(p, p->first[pc])->dtype) == NNP_CLASS_FLOAT &&
           p->sk[p->first[pc]].all.norm > 0;
}

/* A lookup's bucket run in its table. */
static void query_run(const probe_ctx *x, const lsh_query *q, const lsh_slot **row, size_t *k0,
                      size_t *k1)
{
    const lsh_index *l = x->lsh;
    const uint32_t *run = l->start + (size_t)q->table * (l->nbk + 1);
    size_t bk = q->key & (l->nbk - 1);
    *row = l->slots + (size_t)q->table * l->n;
    *k0 = run[bk];
    *k1 = run[bk + 1];
}

/* One lookup: the reference parts in q's bucket with q's key that lie within the value
 * tolerance of ps (the pair's dtypes say how wide). */
static void query_run_all(const probe_ctx *x, const lsh_query *q, const nnp_sketch_part *ps,
                          cand *best, size_t *nb)
{
    const lsh_slot *row;
    size_t k0, k1;
    query_run(x, q, &row, &k0, &k1);
    nnp_dtype pd = rec_at(x->p, x->p->first[q->pc])->dtype;
    double lo = ps->norm / (1 + NNP__VALUE_TOL_MAX), hi = ps->norm / (1 - NNP__VALUE_TOL_MAX);
    for (size_t k = k0, seen = 0; k < k1 && seen < MAX_SCAN; k++) {
        if (row[k].key != q->key)
            continue;
        seen++;
        if (row[k].norm < lo || row[k].norm > hi)
            continue;
        const entry *y = &x->e[row[k].entry];
        if (y->part->count != ps->count)
            continue;
        double d;
        double tol = nnp__side_tol(x->r, y->cls, pd);
        if (!nnp__sketch_distance(ps, y->part, &d, NULL) || !(d <= tol))
            continue;
        keep_best(best, nb, (cand){q->pc, y->cls, y->last ? NNP_EVIDENCE_VALUE_LAST_ROW
                                                          : NNP_EVIDENCE_VALUE,
                                   d, 0, NONE32});
    }
}

static void probe_chunk(void *arg, size_t task)
{
    probe_ctx *x = arg;
    const side *p = x->p;
    uint32_t a = (uint32_t)(task * PROBE_CHUNK);
    uint32_t b = p->ncls - a < PROBE_CHUNK ? (uint32_t)p->ncls : a + PROBE_CHUNK;
    uint32_t exact[PROBE_CHUNK];
    lsh_query q[PROBE_CHUNK * LSH_TABLES];
    size_t nq = 0;
    for (uint32_t pc = a; pc < b; pc++) {
        exact[pc - a] = NONE32 - 1; /* not a value to look for */
        if (!probe_eligible(p, pc))
            continue;
        const nnp_sketch *ps = &p->sk[p->first[pc]];
        exact[pc - a] = find_hash(x->tab, x->cap, ps->hash);
        /* a value that is the same bytes needs no nearer one: the search is for the others */
        if (exact[pc - a] != NONE32)
            continue;
        uint64_t keys[LSH_TABLES];
        lsh_keys(&ps->all, keys);
        for (uint32_t t = 0; t < LSH_TABLES; t++)
            q[nq++] = (lsh_query){keys[t], pc, t};
    }
    cand *out = x->c + task * PROBE_CHUNK * MAX_CAND;
    size_t nout = 0, qi = 0;
    for (uint32_t pc = a; pc < b; pc++) {
        if (exact[pc - a] == NONE32 - 1)
            continue;
        cand best[MAX_CAND];
        size_t nb = 0;
        if (exact[pc - a] != NONE32)
            keep_best(best, &nb, (cand){pc, exact[pc - a], NNP_EVIDENCE_VALUE_EXACT, -1.0, 0,
                                        NONE32});
        for (; qi < nq && q[qi].pc == pc; qi++)
            query_run_all(x, &q[qi], &p->sk[p->first[pc]].all, best, &nb);
        memcpy(out + nout, best, nb * sizeof *best);
        nout += nb;
    }
    x->count[task] = nout;
}

/* Every candidate pair of values, in the port's order. */
static nnp_status find_candidates(const side *r, const side *p, int threads, cand **out,
                                  size_t *nout)
{
    size_t ne = 0, cap = 16, nc = 0, ntasks = (p->ncls + PROBE_CHUNK - 1) / PROBE_CHUNK;
    while (cap < 2 * r->ncls)
        cap *= 2;
    entry *e = malloc((2 * r->ncls + 1) * sizeof *e);
    hash_slot *tab = malloc(cap * sizeof *tab);
    cand *c = malloc((ntasks * PROBE_CHUNK * MAX_CAND + 1) * sizeof *c);
    size_t *count = calloc(ntasks + 1, sizeof *count);
    lsh_index lsh = {0};
    nnp_status st = e && tab && c && count ? NNP_OK : nnp__nomem();
    if (st)
        goto done;
    for (size_t k = 0; k < cap; k++)
        tab[k] = (hash_slot){0, NONE32};
    for (uint32_t k = 0; k < r->ncls; k++) {
        const nnp_sketch *s = &r->sk[r->first[k]];
        size_t h = hash_home(s->hash, cap);
        while (tab[h].cls != NONE32)
            h = (h + 1) & (cap - 1);
        tab[h] = (hash_slot){s->hash, k};
        if (nnp_dtype_class_of(rec_at(r, r->first[k])->dtype) != NNP_CLASS_FLOAT)
            continue; /* ids and masks: equal by chance too often to be evidence */
        if (s->all.norm > 0)
            e[ne++] = (entry){&s->all, k, 0};
        if (s->has_last && s->last.norm > 0)
            e[ne++] = (entry){&s->last, k, 1};
    }
    if ((st = lsh_build(e, ne, &lsh)))
        goto done;
    probe_ctx x = {r, p, e, tab, cap, &lsh, c, count};
    if ((st = nnp__parallel_for(ntasks, threads, probe_chunk, &x)))
        goto done;
    for (size_t k = 0; k < ntasks; k++) {
        memmove(c + nc, c + k * PROBE_CHUNK * MAX_CAND, count[k] * sizeof *c);
        nc += count[k];
    }
done:
    free(e);
    free(tab);
    free(count);
    lsh_free(&lsh);
    if (st) {
        free(c);
        return st;
    }
    *out = c;
    *nout = nc;
    return NNP_OK;
}

/* ---- the chain ---- */

static nnp_status chain_values(side *r, side *p, cand *c, size_t nc)
{
    size_t R = r->ncls;
    int64_t *fw = calloc(R + 1, sizeof *fw);
    uint32_t *fa = malloc((R + 1) * sizeof *fa);
    if (!fw || !fa) {
        free(fw);
        free(fa);
        return nnp__nomem();
    }
    for (size_t k = 0; k <= R; k++)
        fa[k] = NONE32;
    int64_t best = 0;
    uint32_t best_k = NONE32;
    for (size_t i = 0; i < nc;) {
        size_t j = i;
        while (j < nc && c[j].pc == c[i].pc)
            j++;
        /* the candidates of one port value cannot follow each other: query all, then update */
        for (size_t k = i; k < j; k++) {
            int64_t b = 0;
            uint32_t arg = NONE32;
            for (size_t pos = c[k].rc; pos > 0; pos &= pos - 1)
                if (fw[pos] > b) {
                    b = fw[pos];
                    arg = fa[pos];
                }
            c[k].val = b + cand_weight(&c[k]);
            c[k].prev = arg;
        }
        for (size_t k = i; k < j; k++) {
            for (size_t pos = c[k].rc + 1; pos <= R; pos += pos & (~pos + 1))
                if (c[k].val > fw[pos]) {
                    fw[pos] = c[k].val;
                    fa[pos] = (uint32_t)k;
                }
            if (c[k].val > best) {
                best = c[k].val;
                best_k = (uint32_t)k;
            }
        }
        i = j;
    }
    for (uint32_t k = best_k; k != NONE32; k = c[k].prev) {
        r->partner[c[k].rc] = c[k].pc;
        p->partner[c[k].pc] = c[k].rc;
        r->how[c[k].rc] = p->how[c[k].pc] = c[k].how;
    }
    free(fw);
    free(fa);
    return NNP_OK;
}

/* ---- what reads a value: per value, whether a module that reads it makes a paired value ---- */

typedef struct {
    uint64_t key; /* module and call */
    uint32_t pos;
    bool input;
} call_rec;

static int call_order(const void *a, const void *b)
{
    const call_rec *x = a, *y = b;
    return x->key < y->key ? -1 : x->key > y->key;
}

static nnp_status find_agreement_after(side *s)
{
    call_rec *cr = malloc((s->n ? s->n : 1) * sizeof *cr);
    if (!cr)
        return nnp__nomem();
    size_t n = 0;
    for (size_t i = 0; i < s->n; i++) {
        const nnp_record *q = rec_at(s, i);
        if (!*q->module)
            continue;
        cr[n++] = (call_rec){nnp__hash_combine(nnp__hash_str(q->module), q->call), (uint32_t)i,
                             nnp__is_input_role(q->role)};
    }
    qsort(cr, n, sizeof *cr, call_order);
    for (size_t i = 0; i < n;) {
        size_t j = i;
        bool made_paired = false;
        for (; j < n && cr[j].key == cr[i].key; j++)
            if (!cr[j].input && s->partner[s->cls[cr[j].pos]] >= 0)
                made_paired = true;
        for (size_t k = i; made_paired && k < j; k++)
            if (cr[k].input)
                s->agrees_after[s->cls[cr[k].pos]] = true;
        i = j;
    }
    free(cr);
    return NNP_OK;
}

/* ---- the result ---- */

typedef struct {
    nnp__value_pair *v;
    size_t n, cap;
} pair_list;

static nnp_status push_pair(pair_list *l, nnp__value_pair x)
{
    if (!nnp__grow((void **)&l->v, &l->cap, l->n + 1, sizeof *l->v))
        return nnp__nomem();
    l->v[l->n++] = x;
    return NNP_OK;
}

static double value_confidence(uint8_t how, double dist, double tol)
{
    if (how == NNP_EVIDENCE_VALUE_EXACT)
        return 1.0;
    if (how == NNP_EVIDENCE_DATAFLOW)
        return 0.5; /* no value agrees: as sure as structure can be */
    return nnp__value_confidence(dist, tol);
}

/* Pairs of records from one pair of values: each reference record with a port record of the
 * value, inputs with inputs, the k-th with the k-th where the counts allow. */
static nnp_status pair_class(const side *r, const side *p, uint32_t rc, uint32_t pc, uint8_t how,
                             double confidence, const nnp__perm *perm, pair_list *out,
                             bool *port_covered)
{
    const uint32_t *pm = p->members + p->mstart[pc];
    size_t npm = p->mstart[pc + 1] - p->mstart[pc];
    size_t used_in = 0, used_out = 0;
    for (size_t k = 0; k < npm; k++)
        port_covered[pm[k]] = true;
    nnp_status st = NNP_OK;
    for (uint32_t m = r->mstart[rc]; m < r->mstart[rc + 1] && !st; m++) {
        uint32_t ri = r->members[m];
        bool in = nnp__is_input_role(rec_at(r, ri)->role);
        size_t *used = in ? &used_in : &used_out;
        uint32_t pick = NONE32, seen = 0, fallback = NONE32;
        for (size_t k = 0; k < npm && pick == NONE32; k++) {
            if (nnp__is_input_role(rec_at(p, pm[k])->role) != in)
                continue;
            if (fallback == NONE32)
                fallback = pm[k];
            if (seen++ == *used)
                pick = pm[k];
        }
        if (pick == NONE32)
            pick = fallback != NONE32 ? fallback : pm[0];
        else
            (*used)++;
        st = push_pair(out, (nnp__value_pair){.ref = r->rec[ri], .port = p->rec[pick],
                                              .how = how, .confidence = confidence,
                                              .perm = perm ? *perm : (nnp__perm){0}});
    }
    return st;
}

/* The record pairs of the values the chain paired. */
static nnp_status pair_members(const side *r, const side *p, const cand *c, size_t nc,
                               pair_list *out, bool *port_covered)
{
    double *dist = calloc(r->ncls ? r->ncls : 1, sizeof *dist);
    if (!dist)
        return nnp__nomem();
    for (size_t k = 0; k < nc; k++)
        if (r->partner[c[k].rc] == (int64_t)c[k].pc)
            dist[c[k].rc] = c[k].dist;
    nnp_status st = NNP_OK;
    for (uint32_t rc = 0; rc < r->ncls && !st; rc++)
        if (r->partner[rc] >= 0 && r->how[rc] != NNP_EVIDENCE_VALUE_TRANSPOSED)
            st = pair_class(r, p, rc, (uint32_t)r->partner[rc], r->how[rc],
                            value_confidence(r->how[rc], dist[rc],
                                             nnp__side_tol(r, rc,
                                                           rec_at(p, p->first[r->partner[rc]])
                                                               ->dtype)),
                            NULL, out, port_covered);
    free(dist);
    return st;
}

/* The record pairs of values paired with their axes permuted (value_transposed.c). */
static nnp_status pair_transposed(const side *r, const side *p, const nnp__perm_pair *v, size_t n,
                                  pair_list *out, bool *port_covered)
{
    nnp_status st = NNP_OK;
    for (size_t k = 0; k < n && !st; k++)
        st = pair_class(r, p, v[k].rc, v[k].pc, NNP_EVIDENCE_VALUE_TRANSPOSED, v[k].confidence,
                        &v[k].perm, out, port_covered);
    return st;
}

/* Between the pairs that roles allowed, what is left is aligned once more without roles: a value
 * one side's module makes (an output) may be made by the other side's own code (only ever an
 * input there: a KV cache written by the attention's code, a sum no module returns). Roles go
 * first because they separate most look-alikes; this pass only adds pairs, never moves one. */
static nnp_status align_roleless_rest(nnp__align_item *ri, size_t nr, nnp__align_item *pi,
                                      size_t np, int64_t *to, double *score)
{
    size_t *rmap = malloc(nr * sizeof *rmap), *pmap = malloc(np * sizeof *pmap);
    nnp__align_item *sr = malloc(nr * sizeof *sr), *sp = malloc(np * sizeof *sp);
    int64_t *sto = malloc(np * sizeof *sto);
    double *ssc = malloc(np * sizeof *ssc);
    nnp_status st = rmap && pmap && sr && sp && sto && ssc ? NNP_OK : nnp__nomem();
    size_t r0 = 0, p0 = 0;
    for (size_t k = 0; !st && k <= np; k++) {
        if (k < np && to[k] < 0)
            continue;
        size_t r1 = k < np ? (size_t)to[k] : nr, n_r = 0, n_p = 0;
        for (size_t i = r0; i < r1; i++) {
            sr[n_r] = ri[i];
            sr[n_r].role = NULL;
            rmap[n_r++] = i;
        }
        for (size_t j = p0; j < k; j++) {
            sp[n_p] = pi[j];
            sp[n_p].role = NULL;
            pmap[n_p++] = j;
        }
        if (n_r && n_p)
            st = nnp__align(sr, n_r, sp, n_p, sto, ssc);
        for (size_t j = 0; !st && n_r && j < n_p; j++)
            if (sto[j] >= 0) {
                to[pmap[j]] = (int64_t)rmap[sto[j]];
                score[pmap[j]] = ssc[j];
            }
        r0 = r1 + 1;
        p0 = k + 1;
    }
    free(rmap);
    free(pmap);
    free(sr);
    free(sp);
    free(sto);
    free(ssc);
    return st;
}

/* ---- parts of fused values (value_parts.c) ---- */

static nnp__parts_side parts_view(const side *s)
{
    return (nnp__parts_side){s->d, s->rec, s->sk, s->first, s->ncls, s->partner};
}

/* The record pairs of a fused value's parts: each reference record of the one value with a port
 * record of the other, inputs with inputs where there are some. */
static nnp_status pair_parts(side *r, side *p, pair_list *out, bool *port_covered)
{
    nnp__parts_side rv = parts_view(r), pv = parts_view(p);
    nnp__part_pair *v = NULL;
    size_t n = 0;
    nnp_status st = nnp__pair_parts(&rv, &pv, r->in_part, p->in_part, &v, &n);
    /* A reference value whose last row is a part of the port's fused one (a decode step's
     * q, k, v against a prefix re-run) gave the port only that row: the whole value may still
     * be held by the port elsewhere (k and v in the cache), so structure may still pair it. */
    for (size_t k = 0; !st && k < n; k++)
        if (!v[k].ref_fused && v[k].last_row)
            r->in_part[v[k].rc] = false;
    for (size_t k = 0; !st && k < n; k++) {
        const uint32_t *pm = p->members + p->mstart[v[k].pc];
        size_t npm = p->mstart[v[k].pc + 1] - p->mstart[v[k].pc];
        for (size_t j = 0; j < npm; j++)
            port_covered[pm[j]] = true;
        for (uint32_t m = r->mstart[v[k].rc]; m < r->mstart[v[k].rc + 1] && !st; m++) {
            uint32_t ri = r->members[m], pick = pm[0];
            bool in = nnp__is_input_role(rec_at(r, ri)->role);
            for (size_t j = 0; j < npm; j++)
                if (nnp__is_input_role(rec_at(p, pm[j])->role) == in) {
                    pick = pm[j];
                    break;
                }
            st = push_pair(out, (nnp__value_pair){
                                    .ref = r->rec[ri],
                                    .port = p->rec[pick],
                                    .how = v[k].by_value ? NNP_EVIDENCE_VALUE_PART
                                                         : NNP_EVIDENCE_STRUCTURE_PART,
                                    .confidence = v[k].confidence,
                                    .part = v[k].part,
                                    .nparts = v[k].nparts,
                                    .ref_fused = v[k].ref_fused,
                                    .last_row = v[k].last_row});
        }
    }
    free(v);
    return st;
}

static int first_order(const void *a, const void *b)
{
    const uint32_t *x = a, *y = b;
    return x[0] < y[0] ? -1 : x[0] > y[0];
}

nnp_status nnp__made_order(const nnp__value_side *p, uint32_t **rank, uint32_t **order)
{
    size_t n = p->ncls ? p->ncls : 1;
    uint32_t *pairs = malloc(2 * n * sizeof *pairs);
    *rank = malloc(n * sizeof **rank);
    *order = malloc(n * sizeof **order);
    if (!pairs || !*rank || !*order) {
        free(pairs);
        return nnp__nomem();
    }
    for (uint32_t c = 0; c < p->ncls; c++) {
        pairs[2 * c] = p->first[c];
        pairs[2 * c + 1] = c;
    }
    qsort(pairs, p->ncls, 2 * sizeof *pairs, first_order);
    for (uint32_t k = 0; k < p->ncls; k++) {
        (*order)[k] = pairs[2 * k + 1];
        (*rank)[pairs[2 * k + 1]] = k;
    }
    free(pairs);
    return NNP_OK;
}

/* Structure, gap by gap between the paired values: one item per value that no value paired,
 * placed by its first record (where it was made) and named by it. A port value with the axes
 * of a reference shape of its gap in another order is aligned as that shape where the shapes
 * leave no doubt (value_transposed.c); `chosen`: the permutations values chose. */
static nnp_status pair_gaps(side *r, side *p, const char *const *port_names,
                            const nnp__perm_set *chosen, pair_list *out, bool *port_covered)
{
    size_t na = 0;
    uint32_t *ar = malloc((r->ncls + 1) * sizeof *ar), *ap = malloc((r->ncls + 1) * sizeof *ap);
    nnp__align_item *ri = malloc((r->ncls ? r->ncls : 1) * sizeof *ri);
    nnp__align_item *pi = malloc((p->ncls ? p->ncls : 1) * sizeof *pi);
    uint32_t *rcls = malloc((r->ncls ? r->ncls : 1) * sizeof *rcls);
    uint32_t *pcls = malloc((p->ncls ? p->ncls : 1) * sizeof *pcls);
    int64_t *to = malloc((p->ncls ? p->ncls : 1) * sizeof *to);
    double *score = malloc((p->ncls ? p->ncls : 1) * sizeof *score);
    uint64_t *shapes = malloc((p->ncls ? p->ncls : 1) * NNP_ADAPT_MAX_DIMS * sizeof *shapes);
    bool *last = calloc(p->ncls ? p->ncls : 1, sizeof *last);
    const uint64_t **pshape = malloc((p->ncls ? p->ncls : 1) * sizeof *pshape);
    nnp__perm *perm = malloc((p->ncls ? p->ncls : 1) * sizeof *perm);
    uint32_t *prank = NULL, *porder = NULL;
    nnp_status st = ar && ap && ri && pi && rcls && pcls && to && score && shapes && last &&
                    pshape && perm ? nnp__made_order(p, &prank, &porder) : nnp__nomem();
    for (uint32_t rc = 0; !st && rc < r->ncls; rc++)
        if (r->partner[rc] >= 0) {
            ar[na] = rc;
            ap[na++] = prank[r->partner[rc]];
        }
    if (!st) {
        ar[na] = (uint32_t)r->ncls;
        ap[na] = (uint32_t)p->ncls;
    }
    size_t r0 = 0, p0 = 0;
    for (size_t g = 0; !st && g <= na; g++) {
        size_t nr = 0, np = 0;
        for (size_t c = r0; c < ar[g]; c++) {
            if (r->partner[c] >= 0 || r->in_part[c])
                continue;
            const nnp_record *q = rec_at(r, r->first[c]);
            ri[nr] = (nnp__align_item){q->name, nnp__is_input_role(q->role) ? "in" : "out", q->ndim,
                                       q->shape, q->dtype, &r->sk[r->first[c]].all};
            rcls[nr++] = (uint32_t)c;
        }
        for (size_t x = p0; x < ap[g]; x++) {
            uint32_t c = porder[x];
            if (p->partner[c] >= 0 || p->in_part[c])
                continue;
            const nnp_record *q = rec_at(p, p->first[c]);
            pi[np] = (nnp__align_item){port_names[p->first[c]],
                                       nnp__is_input_role(q->role) ? "in" : "out", q->ndim, q->shape,
                                       q->dtype, &p->sk[p->first[c]].all};
            /* a one-row value meets a reference value of any number of rows along the
             * sequence axis whose other axes agree: a decode step against a prefix re-run */
            int a = nnp__sequence_axis(q->ndim, q->dtype);
            if (a >= 0 && q->ndim <= NNP_ADAPT_MAX_DIMS && q->shape[a] == 1) {
                uint64_t *sh = shapes + np * NNP_ADAPT_MAX_DIMS, rows = 0;
                for (size_t k = 0; k < nr && rows != UINT64_MAX; k++) {
                    const nnp__align_item *x = &ri[k];
                    if (nnp__is_one_row_of(q->ndim, q->shape, q->dtype, x->ndim, x->shape,
                                           x->dtype))
                        rows = rows == 0 || rows == x->shape[a] ? x->shape[a] : UINT64_MAX;
                }
                if (rows && rows != UINT64_MAX) {
                    memcpy(sh, q->shape, q->ndim * sizeof *sh);
                    sh[a] = rows;
                    pi[np].shape = sh;
                    last[c] = true;
                }
            }
            pcls[np++] = (uint32_t)c;
        }
        /* a shape that is a reference shape of the gap permuted is aligned as that one; its
         * values, in another order, say nothing of which it is */
        if (nr && np)
            st = nnp__gap_perms(ri, nr, pi, np, chosen, pshape, perm);
        for (size_t k = 0; !st && nr && k < np; k++)
            if (pshape[k] && !last[pcls[k]]) {
                pi[k].shape = pshape[k];
                pi[k].values = NULL;
            } else {
                pshape[k] = NULL;
            }
        if (!st && nr && np)
            st = nnp__align(ri, nr, pi, np, to, score);
        if (!st && nr && np)
            st = align_roleless_rest(ri, nr, pi, np, to, score);
        for (size_t k = 0; !st && nr && k < np; k++) {
            if (to[k] < 0)
                continue;
            uint32_t rc = rcls[to[k]], pc = pcls[k];
            /* a difference that a later module undoes was never the same quantity */
            if (r->agrees_after[rc] || p->agrees_after[pc])
                continue;
            st = pair_class(r, p, rc, pc,
                            last[pc]    ? NNP_EVIDENCE_STRUCTURE_LAST_ROW
                            : pshape[k] ? NNP_EVIDENCE_STRUCTURE_TRANSPOSED
                                        : NNP_EVIDENCE_STRUCTURE,
                            0.5 * score[k], pshape[k] ? &perm[k] : NULL, out, port_covered);
        }
        if (g < na) {
            r0 = ar[g] + 1;
            p0 = ap[g] + 1;
        }
    }
    free(ar);
    free(ap);
    free(ri);
    free(pi);
    free(rcls);
    free(pcls);
    free(to);
    free(score);
    free(shapes);
    free(last);
    free(pshape);
    free(perm);
    free(prank);
    free(porder);
    return st;
}

nnp_status nnp__align_values(nnp_dump *ref, const size_t *ref_recs, size_t nref, nnp_dump *port,
                             const size_t *port_recs, size_t nport, const char *const *port_names,
                             const double *ref_noise, int threads, bool structure,
                             nnp__value_result *res)
{
    nnp__value_pair **out = &res->pairs;
    size_t *nout = &res->npairs;
    bool *port_covered = res->port_covered;
    *out = NULL;
    *nout = 0;
    if (nref >= NONE32 || nport >= NONE32)
        return nnp__fail(NNP_ERR_ARG, "nnp__align_values: more than 2^32 - 2 records");
    side r = {.d = ref, .rec = ref_recs, .n = nref, .noise = ref_noise},
         p = {.d = port, .rec = port_recs, .n = nport};
    cand *c = NULL;
    size_t nc = 0;
    pair_list l = {0};
    nnp__perm_pair *tp = NULL;
    size_t ntp = 0;
    nnp__perm_set chosen = {0};
    nnp_status st = side_build(&r, threads);
    if (!st)
        st = side_build(&p, threads);
    if (!st)
        st = find_candidates(&r, &p, threads, &c, &nc);
    if (!st)
        st = chain_values(&r, &p, c, nc);
    if (!st && structure)
        st = nnp__flow_check(&r, &p);
    if (!st)
        st = nnp__pair_transposed(&r, &p, &tp, &ntp, &chosen);
    if (!st)
        st = find_agreement_after(&r);
    if (!st)
        st = find_agreement_after(&p);
    if (!st)
        st = pair_members(&r, &p, c, nc, &l, port_covered);
    if (!st)
        st = pair_transposed(&r, &p, tp, ntp, &l, port_covered);
    if (!st && structure)
        st = pair_parts(&r, &p, &l, port_covered);
    if (!st && structure)
        st = pair_gaps(&r, &p, port_names, &chosen, &l, port_covered);
    /* what the rest of a diff needs of the values: each record's first appearance of its value,
     * and for a port record, a reference record of its value */
    for (size_t i = 0; !st && i < r.n; i++)
        res->ref_first[i] = rec_at(&r, r.first[r.cls[i]])->seq;
    for (size_t j = 0; !st && j < p.n; j++) {
        res->port_first[j] = rec_at(&p, p.first[p.cls[j]])->seq;
        int64_t rc = p.partner[p.cls[j]];
        res->port_value_ref[j] = rc >= 0 ? r.rec[r.first[rc]] : SIZE_MAX;
    }
    free(c);
    free(tp);
    side_free(&r);
    side_free(&p);
    if (st) {
        free(l.v);
        return st;
    }
    *out = l.v;
    *nout = l.n;
    return NNP_OK;
}

const char *nnp_evidence_name(nnp_evidence e)
{
    static const char *const names[] = {"name",           "value-exact",       "value",
                                        "value-last-row", "structure",         "structure-last-row",
                                        "value-part",     "structure-part",    "dataflow",
                                        "value-transposed", "structure-transposed"};
    return (unsigned)e < sizeof names / sizeof *names ? names[e] : "?";
}
