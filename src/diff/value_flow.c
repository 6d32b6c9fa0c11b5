/*
 * value_flow.c - pairing by value checked against the dataflow (docs/diff.md, "Pairing"): a port
 * module must read what its reference counterpart reads and make what it makes. Two values that
 * agree are not enough when the port reads or makes one of them in another place.
 *
 * The counterpart of a port module is read from the value pairs themselves: wherever a kind of
 * port module (its type) reads or makes a value that agrees, the agreeing reference value is
 * read or made there by some kinds of reference module (a port ConvBN makes what a BatchNorm2d
 * makes, reads what a Conv2d reads). A pair against a value that only other kinds of module
 * read or make contradicts that; the value the counterpart stands for is then the nearest one
 * downstream in the reference's dataflow that such a module reads or makes and that nothing is
 * paired with yet:
 *
 * - a port input that equals a reference value its counterpart does not read (an activation
 *   skipped: the next module is fed the value before it) is a value of its own, paired with
 *   the value the counterpart reads: it fails there, at the place it was read;
 * - a port output that equals a reference value made before its counterpart's (a BatchNorm
 *   left unfolded) is paired with the value the counterpart makes;
 * - a port output that no value agrees with, made from inputs that agree, whose counterpart's
 *   value has another shape (a stride moved), is paired with it: structure pairs only values
 *   of one size, and the shape mismatch is the finding.
 *
 * A contradiction is believed only where the difference travels on: not when a module reading
 * the port's value, or one enclosing it, makes a value that agrees again (a port that computes
 * in other steps than the reference, or folds a module into another, agrees there), and never
 * without a reference value that no other port value has.
 *
 * Modules without a type (a C engine's taps) are of the kind their path names with its
 * indices left out; a value that no reference module reads is read by code (a residual add),
 * and the dataflow through such code is read from the order: what the enclosing module's code
 * makes after the value.
 */
#include <stdlib.h>
#include <string.h>

#include "diff/value_side.h"

#define NONE32 UINT32_MAX
#define MAX_DEPTH 3 /* reference modules walked downstream looking for a counterpart's value */

static const nnp_record *rec_at(const nnp__value_side *s, size_t i)
{
    return nnp_dump_record(s->d, s->rec[i]);
}

/* A value pair made on values, the evidence this file checks. */
static bool by_value(uint8_t how)
{
    return how == NNP_EVIDENCE_VALUE_EXACT || how == NNP_EVIDENCE_VALUE ||
           how == NNP_EVIDENCE_VALUE_LAST_ROW;
}

/* ---- module calls: which records each call reads and makes ---- */

typedef struct {
    uint64_t key; /* module and call */
    uint32_t pos; /* record */
} call_rec;

typedef struct {
    uint32_t ncalls;
    uint32_t *call;   /* per record: its call, NONE32 when the record names no module */
    uint32_t *cstart; /* per call: its records are crec[cstart[k] .. cstart[k + 1]) */
    uint32_t *crec;
    uint32_t *lo, *hi; /* per call: its first and last record (execution order) */
} calls;

static void calls_free(calls *c)
{
    free(c->call);
    free(c->cstart);
    free(c->crec);
    free(c->lo);
    free(c->hi);
}

static int call_order(const void *a, const void *b)
{
    const call_rec *x = a, *y = b;
    if (x->key != y->key)
        return x->key < y->key ? -1 : 1;
    return x->pos < y->pos ? -1 : x->pos > y->pos;
}

static nnp_status calls_build(const nnp__value_side *s, calls *c)
{
    size_t n = s->n, m = 0;
    call_rec *cr = malloc((n ? n : 1) * sizeof *cr);
    c->call = malloc((n ? n : 1) * sizeof *c->call);
    c->cstart = malloc((n + 1) * sizeof *c->cstart);
    c->crec = malloc((n ? n : 1) * sizeof *c->crec);
    c->lo = malloc((n ? n : 1) * sizeof *c->lo);
    c->hi = malloc((n ? n : 1) * sizeof *c->hi);
    if (!cr || !c->call || !c->cstart || !c->crec || !c->lo || !c->hi) {
        free(cr);
        return nnp__nomem();
    }
    for (size_t i = 0; i < n; i++) {
        const nnp_record *q = rec_at(s, i);
        c->call[i] = NONE32;
        if (*q->module)
            cr[m++] = (call_rec){nnp__hash_combine(nnp__hash_str(q->module), q->call),
                                 (uint32_t)i};
    }
    qsort(cr, m, sizeof *cr, call_order);
    c->ncalls = 0;
    for (size_t i = 0; i < m; i++) {
        if (i == 0 || cr[i].key != cr[i - 1].key) {
            c->cstart[c->ncalls] = (uint32_t)i;
            c->lo[c->ncalls] = c->hi[c->ncalls] = cr[i].pos;
            c->ncalls++;
        }
        uint32_t k = c->ncalls - 1;
        c->crec[i] = cr[i].pos;
        c->call[cr[i].pos] = k;
        c->lo[k] = cr[i].pos < c->lo[k] ? cr[i].pos : c->lo[k];
        c->hi[k] = cr[i].pos > c->hi[k] ? cr[i].pos : c->hi[k];
    }
    c->cstart[c->ncalls] = (uint32_t)m;
    free(cr);
    return NNP_OK;
}

/* Per value: the calls that read it, readers[rstart[v] .. rstart[v + 1]). */
static nnp_status readers_build(const nnp__value_side *s, const calls *c, uint32_t **rstart,
                                uint32_t **readers)
{
    *rstart = calloc(s->ncls + 2, sizeof **rstart);
    *readers = malloc((s->n ? s->n : 1) * sizeof **readers);
    uint32_t *fill = calloc(s->ncls + 1, sizeof *fill);
    if (!*rstart || !*readers || !fill) {
        free(fill);
        return nnp__nomem();
    }
    for (size_t i = 0; i < s->n; i++)
        if (c->call[i] != NONE32 && nnp__is_input_role(rec_at(s, i)->role))
            (*rstart)[s->cls[i] + 1]++;
    for (size_t v = 0; v < s->ncls; v++)
        (*rstart)[v + 1] += (*rstart)[v];
    for (size_t i = 0; i < s->n; i++)
        if (c->call[i] != NONE32 && nnp__is_input_role(rec_at(s, i)->role))
            (*readers)[(*rstart)[s->cls[i]] + fill[s->cls[i]]++] = c->call[i];
    free(fill);
    return NNP_OK;
}

/* ---- the port's calls: which make a value that agrees, or sit inside one that does ---- */

/* Call k makes a value that agrees, other than value `but` (NONE32: any): a pair is no
 * evidence for itself, so a container that passes the questioned value on does not vouch
 * for it. */
static bool call_agrees(const nnp__value_side *p, const calls *c, uint32_t k, uint32_t but)
{
    for (uint32_t x = c->cstart[k]; x < c->cstart[k + 1]; x++) {
        uint32_t i = c->crec[x];
        if (!nnp__is_input_role(rec_at(p, i)->role) && p->cls[i] != but &&
            p->partner[p->cls[i]] >= 0 && by_value(p->how[p->cls[i]]))
            return true;
    }
    return false;
}

typedef struct {
    uint32_t lo, hi, k;
} span;

static int span_order(const void *a, const void *b)
{
    const span *x = a, *y = b;
    if (x->lo != y->lo)
        return x->lo < y->lo ? -1 : 1;
    return x->hi > y->hi ? -1 : x->hi < y->hi;
}

/* parent[k]: the innermost call whose records span call k's, NONE32 for none. Spans nest (a
 * call's records enclose its children's), so a stack over the spans in order finds them. */
static nnp_status parents_build(const calls *c, uint32_t **parent)
{
    span *sp = malloc((c->ncalls ? c->ncalls : 1) * sizeof *sp);
    uint32_t *stack = malloc((c->ncalls ? c->ncalls : 1) * sizeof *stack);
    *parent = malloc((c->ncalls ? c->ncalls : 1) * sizeof **parent);
    if (!sp || !stack || !*parent) {
        free(sp);
        free(stack);
        return nnp__nomem();
    }
    for (uint32_t k = 0; k < c->ncalls; k++)
        sp[k] = (span){c->lo[k], c->hi[k], k};
    qsort(sp, c->ncalls, sizeof *sp, span_order);
    size_t top = 0;
    for (uint32_t x = 0; x < c->ncalls; x++) {
        while (top && c->hi[stack[top - 1]] < sp[x].lo)
            top--;
        (*parent)[sp[x].k] = top ? stack[top - 1] : NONE32;
        stack[top++] = sp[x].k;
    }
    free(sp);
    free(stack);
    return NNP_OK;
}

/* ---- what kinds of reference module each kind of port module stands for ---- */

/* (port type and role, reference type): how many port records of that type and role agree
 * with a value that a reference module of that type reads (an input role) or makes. */
typedef struct {
    uint64_t key, type;
    uint64_t who; /* the port module, while learning */
    uint32_t n;
} kind_count;

typedef struct {
    kind_count *v;
    size_t n, cap;
    /* per port type and role: how many of its records have any such reference module */
    kind_count *inst;
    size_t ninst, icap;
} kinds;

/* A module's kind: its type, or when the capture records none (a C engine tapping with the C
 * API), its path with every run of digits made one: the repeated blocks of a network are the
 * same kind of module under their indices ("blk.0.ffn_norm" and "blk.1.ffn_norm"). */
static uint64_t kind_of(const nnp_record *q)
{
    if (*q->module_type)
        return nnp__hash_str(q->module_type);
    uint64_t h = 0x51ed270b27a1c0d5ull;
    for (const char *c = q->module; *c; c++) {
        bool digit = *c >= '0' && *c <= '9';
        if (digit && c[1] >= '0' && c[1] <= '9')
            continue;
        h = nnp__hash_combine(h, digit ? '#' : (unsigned char)*c);
    }
    return h;
}

/* The kind standing for a value that no module reads: the code of a module's forward reads it
 * (a residual add), and a port module reading it stands where that code is. */
#define KIND_CODE 0x00c0debeef5eed01ull

static uint64_t port_key(const nnp_record *q)
{
    return nnp__hash_combine(kind_of(q), nnp__hash_str(q->role));
}

static int kind_order(const void *a, const void *b)
{
    const kind_count *x = a, *y = b;
    if (x->key != y->key)
        return x->key < y->key ? -1 : 1;
    if (x->type != y->type)
        return x->type < y->type ? -1 : 1;
    return x->who < y->who ? -1 : x->who > y->who;
}

/* Reference record q, an input of value rc, is read by a module that returns it unchanged (a
 * dropout at inference, an identity): such a module computes nothing from it, and says nothing
 * of where the value goes. */
static bool passes_on(const nnp__value_side *r, uint32_t rc, const nnp_record *q)
{
    for (uint32_t m = r->mstart[rc]; m < r->mstart[rc + 1]; m++) {
        const nnp_record *x = rec_at(r, r->members[m]);
        if (!nnp__is_input_role(x->role) && x->call == q->call && !strcmp(x->module, q->module))
            return true;
    }
    return false;
}

/* The distinct kinds of the modules that read reference value rc (in; KIND_CODE when none
 * does), or the kind of the one that made it (!in: its first record, the innermost module; the
 * containers around it pass it on, they do not make it). */
static size_t ref_types(const nnp__value_side *r, uint32_t rc, bool in, uint64_t *out,
                        size_t cap)
{
    size_t n = 0;
    if (!in) {
        const nnp_record *q = rec_at(r, r->first[rc]);
        if (nnp__is_input_role(q->role) || !*q->module || !cap)
            return 0; /* made by code, not by a module */
        out[0] = kind_of(q);
        return 1;
    }
    for (uint32_t m = r->mstart[rc]; m < r->mstart[rc + 1]; m++) {
        const nnp_record *q = rec_at(r, r->members[m]);
        if (nnp__is_input_role(q->role) != in || !*q->module || passes_on(r, rc, q))
            continue;
        uint64_t t = kind_of(q);
        size_t k = 0;
        while (k < n && out[k] != t)
            k++;
        if (k == n && n < cap)
            out[n++] = t;
    }
    if (!n && cap)
        out[n++] = KIND_CODE;
    return n;
}

#define MAX_TYPES 16

static nnp_status kinds_learn(const nnp__value_side *r, const nnp__value_side *p, kinds *kd)
{
    uint64_t t[MAX_TYPES];
    for (size_t j = 0; j < p->n; j++) {
        const nnp_record *q = rec_at(p, j);
        int64_t rc = p->partner[p->cls[j]];
        if (!*q->module || rc < 0 || !by_value(p->how[p->cls[j]]))
            continue;
        size_t nt = ref_types(r, (uint32_t)rc, nnp__is_input_role(q->role), t, MAX_TYPES);
        uint64_t key = port_key(q), who = nnp__hash_str(q->module);
        for (size_t k = 0; k < nt; k++) {
            if (!nnp__grow((void **)&kd->v, &kd->cap, kd->n + 1, sizeof *kd->v))
                return nnp__nomem();
            kd->v[kd->n++] = (kind_count){key, t[k], who, 1};
        }
        if (nt) {
            if (!nnp__grow((void **)&kd->inst, &kd->icap, kd->ninst + 1, sizeof *kd->inst))
                return nnp__nomem();
            kd->inst[kd->ninst++] = (kind_count){key, 0, who, 1};
        }
    }
    /* a module counts once, however often it is called: a module called at every decode step
     * repeats its own behaviour, it does not show another module's */
    kind_count *lists[2] = {kd->v, kd->inst};
    size_t *lens[2] = {&kd->n, &kd->ninst};
    for (int l = 0; l < 2; l++) {
        kind_count *v = lists[l];
        size_t n = *lens[l], k = 0;
        if (!n)
            continue; /* v may be NULL: nothing was ever added */
        qsort(v, n, sizeof *v, kind_order);
        for (size_t i = 0; i < n; i++) {
            if (k && v[k - 1].key == v[i].key && v[k - 1].type == v[i].type) {
                if (v[k - 1].who != v[i].who)
                    v[k - 1].n++;
                v[k - 1].who = v[i].who; /* sorted: one module's entries are adjacent */
            } else {
                v[k++] = v[i];
            }
        }
        for (size_t i = 0; i < k; i++)
            v[i].who = 0; /* looked up by kind alone */
        *lens[l] = k;
    }
    return NNP_OK;
}

static uint32_t kinds_count(const kind_count *v, size_t n, uint64_t key, uint64_t type)
{
    size_t a = 0, b = n;
    kind_count x = {key, type, 0, 0};
    while (a < b) {
        size_t m = a + (b - a) / 2;
        if (kind_order(&v[m], &x) < 0)
            a = m + 1;
        else
            b = m;
    }
    return a < n && v[a].key == key && v[a].type == type ? v[a].n : 0;
}

/* Port record j against reference value rc: 1 when the modules that read or make rc are of no
 * kind that j's kind of port module meets anywhere else, 0 when one is (or nothing tells). */
static bool contradicts(const nnp__value_side *r, const kinds *kd, const nnp_record *q,
                        uint32_t rc)
{
    uint64_t t[MAX_TYPES], key = port_key(q);
    size_t nt = ref_types(r, rc, nnp__is_input_role(q->role), t, MAX_TYPES);
    if (!nt || kinds_count(kd->inst, kd->ninst, key, 0) < 2)
        return false; /* nothing reads or makes it, or no other record of the kind to learn from */
    for (size_t k = 0; k < nt; k++)
        if (kinds_count(kd->v, kd->n, key, t[k]) > 1)
            return false;
    return true;
}

/* Reference value rc can stand for what port record q's counterpart reads or makes. */
static bool counterpart_value(const nnp__value_side *r, const kinds *kd, const nnp_record *q,
                              uint32_t rc)
{
    uint64_t t[MAX_TYPES], key = port_key(q);
    size_t nt = ref_types(r, rc, nnp__is_input_role(q->role), t, MAX_TYPES);
    for (size_t k = 0; k < nt; k++)
        if (kinds_count(kd->v, kd->n, key, t[k]) > 0)
            return true;
    return false;
}

/* ---- walking the reference's dataflow downstream ---- */

typedef struct {
    const nnp__value_side *r;
    const calls *c;
    const uint32_t *rstart, *readers;
    const uint32_t *parent; /* per call: the innermost call around it */
    uint32_t *seen; /* per reference value: the walk that last visited it */
    uint32_t walk;
    bool *taken;    /* per reference value: given to a port value by this file */
    uint32_t *front, *next; /* value lists, ncls each */
} walker;

/* Reference record i's value, reached by a walk: kept for the next depth, and the best
 * destination so far when it is paired with nothing and can stand for what port record q's
 * counterpart reads or makes (of one depth, the earliest made). */
static void walk_reach(walker *w, const kinds *kd, const nnp_record *q, uint32_t i, size_t *nn,
                       uint32_t *best)
{
    const nnp__value_side *r = w->r;
    uint32_t v = r->cls[i];
    if (w->seen[v] == w->walk)
        return;
    w->seen[v] = w->walk;
    w->next[(*nn)++] = v;
    if (r->partner[v] < 0 && !w->taken[v] && counterpart_value(r, kd, q, v) &&
        (*best == NONE32 || r->first[v] < r->first[*best]))
        *best = v;
}

/* The values the code of the modules around value u's maker makes after it: what a module's
 * forward computes between its children's calls (a residual add) is recorded only as the
 * input of the module that reads it, or as the enclosing module's output, so the dataflow
 * through that code is read from the order. The innermost module around the maker whose code
 * makes any such value is the one that reads u, as far as the records can tell. */
static void walk_code(walker *w, const kinds *kd, const nnp_record *q, uint32_t u, size_t *nn,
                      uint32_t *best)
{
    const nnp__value_side *r = w->r;
    uint32_t made = r->first[u], k = w->c->call[made];
    if (k == NONE32)
        return;
    /* a value made by code first appears as an input: that code is the reading module's parent's */
    for (uint32_t up = w->parent[k]; up != NONE32; up = w->parent[up]) {
        bool found = false;
        for (uint32_t i = made + 1; i <= w->c->hi[up]; i++) {
            const nnp_record *x = rec_at(r, i);
            if (r->first[r->cls[i]] != i ||
                (!nnp__is_input_role(x->role) && w->c->call[i] != up))
                continue; /* passed on, or made by a module inside */
            found = true;
            walk_reach(w, kd, q, i, nn, best);
        }
        if (found)
            return;
    }
}

/* The nearest reference value downstream of from[0..nfrom) (the values made by the modules
 * that read them or by the code after them, and so on, MAX_DEPTH steps deep) that is paired
 * with nothing and can stand for what port record q's counterpart reads or makes; NONE32 if
 * none. Of one depth, the earliest made. */
static uint32_t walk_down(walker *w, const kinds *kd, const nnp_record *q, const uint32_t *from,
                          size_t nfrom)
{
    const nnp__value_side *r = w->r;
    size_t nf = 0;
    w->walk++;
    for (size_t k = 0; k < nfrom; k++)
        if (w->seen[from[k]] != w->walk) {
            w->seen[from[k]] = w->walk;
            w->front[nf++] = from[k];
        }
    for (int depth = 0; depth < MAX_DEPTH && nf; depth++) {
        size_t nn = 0;
        uint32_t best = NONE32;
        for (size_t f = 0; f < nf; f++) {
            for (uint32_t x = w->rstart[w->front[f]]; x < w->rstart[w->front[f] + 1]; x++) {
                uint32_t k = w->readers[x];
                for (uint32_t y = w->c->cstart[k]; y < w->c->cstart[k + 1]; y++)
                    if (!nnp__is_input_role(rec_at(r, w->c->crec[y])->role))
                        walk_reach(w, kd, q, w->c->crec[y], &nn, &best);
            }
            walk_code(w, kd, q, w->front[f], &nn, &best);
        }
        if (best != NONE32)
            return best;
        uint32_t *t = w->front;
        w->front = w->next;
        w->next = t;
        nf = nn;
    }
    return NONE32;
}

/* ---- moving port records to other values ---- */

typedef struct {
    uint32_t rec; /* port record */
    uint32_t rc;  /* the reference value it goes to */
} move;

/* Give records their new values: a value whose first record moves moves whole, with those of
 * its records that move with it; records that move away from a value made elsewhere become a
 * value of their own per destination (the value was right where it was made, and is read in
 * the wrong place). Then pair each moved value with its destination. */
static nnp_status apply_moves(nnp__value_side *r, nnp__value_side *p, const move *mv, size_t nmv)
{
    size_t ncls = p->ncls;
    uint32_t *newcls = malloc((nmv ? nmv : 1) * sizeof *newcls);
    uint32_t *dest = malloc((nmv ? nmv : 1) * sizeof *dest);
    if (!newcls || !dest) {
        free(newcls);
        free(dest);
        return nnp__nomem();
    }
    size_t nnew = 0;
    for (size_t k = 0; k < nmv; k++) {
        uint32_t pc = p->cls[mv[k].rec];
        dest[k] = mv[k].rc;
        if (p->first[pc] == mv[k].rec) {
            newcls[k] = pc; /* moves whole */
            continue;
        }
        size_t x = 0;
        while (x < k && !(p->cls[mv[x].rec] == pc && dest[x] == mv[k].rc))
            x++;
        newcls[k] = x < k ? newcls[x] : (uint32_t)(ncls + nnew++);
    }
    nnp_status st = NNP_OK;
    size_t total = ncls + nnew;
    if (nnew) {
        void *a = realloc(p->first, total * sizeof *p->first);
        if (a)
            p->first = a;
        void *b = a ? realloc(p->partner, total * sizeof *p->partner) : NULL;
        if (b)
            p->partner = b;
        void *c = b ? realloc(p->how, total) : NULL;
        if (c)
            p->how = c;
        void *d = c ? realloc(p->agrees_after, total * sizeof *p->agrees_after) : NULL;
        if (d)
            p->agrees_after = d;
        void *e = d ? realloc(p->mstart, (total + 2) * sizeof *p->mstart) : NULL;
        if (e)
            p->mstart = e;
        void *f = e ? realloc(p->in_part, total * sizeof *p->in_part) : NULL;
        if (f)
            p->in_part = f;
        if (!f)
            st = nnp__nomem();
        for (size_t v = ncls; !st && v < total; v++) {
            p->first[v] = NONE32;
            p->partner[v] = -1;
            p->how[v] = 0;
            p->agrees_after[v] = false;
            p->in_part[v] = false;
        }
    }
    if (!st) {
        /* a value that moves whole leaves its old partner unpaired */
        for (size_t k = 0; k < nmv; k++)
            if (newcls[k] < ncls && p->partner[newcls[k]] >= 0) {
                r->partner[p->partner[newcls[k]]] = -1;
                p->partner[newcls[k]] = -1;
            }
        for (size_t k = 0; k < nmv; k++) {
            uint32_t v = newcls[k];
            p->cls[mv[k].rec] = v;
            if (p->first[v] == NONE32 || mv[k].rec < p->first[v])
                p->first[v] = mv[k].rec;
            p->partner[v] = dest[k];
            p->how[v] = NNP_EVIDENCE_DATAFLOW;
            r->partner[dest[k]] = v;
            r->how[dest[k]] = NNP_EVIDENCE_DATAFLOW;
        }
        p->ncls = total;
        /* members regrouped: a counting sort over the records' values */
        memset(p->mstart, 0, (total + 2) * sizeof *p->mstart);
        for (size_t i = 0; i < p->n; i++)
            p->mstart[p->cls[i] + 1]++;
        for (size_t v = 0; v < total; v++)
            p->mstart[v + 1] += p->mstart[v];
        uint32_t *fill = calloc(total ? total : 1, sizeof *fill);
        if (!fill)
            st = nnp__nomem();
        for (size_t i = 0; !st && i < p->n; i++)
            p->members[p->mstart[p->cls[i]] + fill[p->cls[i]]++] = (uint32_t)i;
        free(fill);
    }
    free(newcls);
    free(dest);
    return st;
}

/* ---- the checks ---- */

typedef struct {
    nnp__value_side *r, *p;
    calls rc, pc;
    uint32_t *rstart, *readers;   /* reference: who reads each value */
    uint32_t *prstart, *preaders; /* port: who reads each value */
    uint32_t *pparent, *rparent;  /* per call: the innermost call around it */
    bool *held;                   /* port calls: a call around them makes a value that agrees */
    bool *moved;                  /* port records: moved to another value */
    kinds kd;
    walker w;
    move *mv;
    size_t nmv, mvcap;
} flow;

/* held[k]: a call around call k makes a value that agrees. */
static nnp_status agreement_held(flow *f)
{
    const calls *c = &f->pc;
    f->held = calloc(c->ncalls ? c->ncalls : 1, sizeof *f->held);
    if (!f->held)
        return nnp__nomem();
    /* a parent's records span its child's, so it comes first in the spans' order */
    span *sp = malloc((c->ncalls ? c->ncalls : 1) * sizeof *sp);
    if (!sp)
        return nnp__nomem();
    for (uint32_t k = 0; k < c->ncalls; k++)
        sp[k] = (span){c->lo[k], c->hi[k], k};
    qsort(sp, c->ncalls, sizeof *sp, span_order);
    for (uint32_t x = 0; x < c->ncalls; x++) {
        uint32_t k = sp[x].k, up = f->pparent[k];
        f->held[k] = up != NONE32 && (f->held[up] || call_agrees(f->p, c, up, NONE32));
    }
    free(sp);
    return NNP_OK;
}

/* A call around call k makes a value that agrees, other than value `but`. */
static bool held_but(const flow *f, uint32_t k, uint32_t but)
{
    if (!f->held[k])
        return false;
    for (uint32_t u = f->pparent[k]; u != NONE32; u = f->pparent[u])
        if (call_agrees(f->p, &f->pc, u, but))
            return true;
    return false;
}

/* Nothing the port does downstream of record j undoes a difference: neither a module reading
 * j's value nor one enclosing j's module makes a value that agrees. The value j holds is not
 * such a value: it is the pair in question, whoever passes it on. */
static bool difference_travels(const flow *f, uint32_t j)
{
    const nnp__value_side *p = f->p;
    uint32_t k = f->pc.call[j], v = p->cls[j];
    if (k == NONE32 || held_but(f, k, v) || f->moved[j])
        return false;
    if (nnp__is_input_role(rec_at(p, j)->role))
        return !call_agrees(p, &f->pc, k, v);
    uint32_t nreaders = f->prstart[v + 1] - f->prstart[v];
    if (!nreaders)
        return false; /* a value nothing reads cannot contradict the dataflow */
    for (uint32_t x = f->prstart[v]; x < f->prstart[v + 1]; x++)
        if (held_but(f, f->preaders[x], v) || call_agrees(p, &f->pc, f->preaders[x], v))
            return false;
    return true;
}

static nnp_status push_move(flow *f, uint32_t j, uint32_t rc)
{
    if (!nnp__grow((void **)&f->mv, &f->mvcap, f->nmv + 1, sizeof *f->mv))
        return nnp__nomem();
    f->mv[f->nmv++] = (move){j, rc};
    f->w.taken[rc] = true;
    f->moved[j] = true;
    return NNP_OK;
}

/* Value pairs the dataflow contradicts, moved to the value the counterpart reads or makes. The
 * rest of the moved record's value goes along where its kind of module contradicts the pair
 * too (an unfolded shortcut's output and the merge reading it). */
static nnp_status check_value_pairs(flow *f)
{
    nnp__value_side *r = f->r, *p = f->p;
    nnp_status st = NNP_OK;
    for (uint32_t j = 0; !st && j < p->n; j++) {
        uint32_t v = p->cls[j];
        const nnp_record *q = rec_at(p, j);
        if (p->partner[v] < 0 || !by_value(p->how[v]) || !*q->module ||
            !contradicts(r, &f->kd, q, (uint32_t)p->partner[v]) || !difference_travels(f, j))
            continue;
        uint32_t from = (uint32_t)p->partner[v];
        uint32_t to = walk_down(&f->w, &f->kd, q, &from, 1);
        if (to == NONE32)
            continue;
        st = push_move(f, j, to);
        /* the value's later names that contradict the same pair go with it */
        for (uint32_t m = p->mstart[v]; !st && m < p->mstart[v + 1]; m++) {
            uint32_t i = p->members[m];
            const nnp_record *qi = rec_at(p, i);
            if (i > j && !f->moved[i] && *qi->module && contradicts(r, &f->kd, qi, from))
                st = push_move(f, i, to);
        }
    }
    return st;
}

/* Outputs no value agrees with, made from inputs that agree: paired with the value the
 * counterpart makes when that has another size (structure pairs only values of one size). */
static nnp_status check_unpaired_outputs(flow *f)
{
    nnp__value_side *r = f->r, *p = f->p;
    uint32_t *from = malloc((p->n ? p->n : 1) * sizeof *from);
    if (!from)
        return nnp__nomem();
    move *found = NULL;
    size_t nfound = 0, cap = 0;
    nnp_status st = NNP_OK;
    for (uint32_t j = 0; !st && j < p->n; j++) {
        const nnp_record *q = rec_at(p, j);
        uint32_t v = p->cls[j], k = f->pc.call[j];
        if (nnp__is_input_role(q->role) || p->first[v] != j || p->partner[v] >= 0 || k == NONE32 ||
            !*q->module_type || f->held[k] || call_agrees(p, &f->pc, k, NONE32))
            continue;
        size_t nfrom = 0;
        bool inputs_agree = true;
        for (uint32_t x = f->pc.cstart[k]; x < f->pc.cstart[k + 1] && inputs_agree; x++) {
            uint32_t i = f->pc.crec[x];
            if (!nnp__is_input_role(rec_at(p, i)->role))
                continue;
            int64_t rc = p->partner[p->cls[i]];
            inputs_agree = rc >= 0 && by_value(p->how[p->cls[i]]);
            if (inputs_agree)
                from[nfrom++] = (uint32_t)rc;
        }
        if (!inputs_agree || !nfrom)
            continue;
        uint32_t to = walk_down(&f->w, &f->kd, q, from, nfrom);
        if (to == NONE32 || rec_at(r, r->first[to])->nelem == q->nelem)
            continue; /* one size: structure's to pair */
        if (!nnp__grow((void **)&found, &cap, nfound + 1, sizeof *found)) {
            st = nnp__nomem();
            break;
        }
        found[nfound++] = (move){j, to};
    }
    /* a reference value that several port outputs would stand for is made of them (q, k and v
     * against a fused projection), not one of them in the wrong shape */
    for (size_t k = 0; !st && k < nfound; k++) {
        size_t same = 0;
        for (size_t x = 0; x < nfound; x++)
            same += found[x].rc == found[k].rc;
        if (same == 1)
            st = push_move(f, found[k].rec, found[k].rc);
    }
    free(found);
    free(from);
    return st;
}

nnp_status nnp__flow_check(nnp__value_side *r, nnp__value_side *p)
{
    flow f = {.r = r, .p = p};
    nnp_status st = calls_build(r, &f.rc);
    if (!st)
        st = calls_build(p, &f.pc);
    if (!st)
        st = readers_build(r, &f.rc, &f.rstart, &f.readers);
    if (!st)
        st = readers_build(p, &f.pc, &f.prstart, &f.preaders);
    if (!st)
        st = parents_build(&f.pc, &f.pparent);
    if (!st)
        st = parents_build(&f.rc, &f.rparent);
    if (!st)
        st = agreement_held(&f);
    if (!st && !(f.moved = calloc(p->n ? p->n : 1, sizeof *f.moved)))
        st = nnp__nomem();
    if (!st)
        st = kinds_learn(r, p, &f.kd);
    if (!st) {
        size_t nc = r->ncls ? r->ncls : 1;
        f.w = (walker){r, &f.rc, f.rstart, f.readers, f.rparent, calloc(nc, sizeof(uint32_t)), 0,
                       calloc(nc, sizeof(bool)), malloc(nc * sizeof(uint32_t)),
                       malloc(nc * sizeof(uint32_t))};
        if (!f.w.seen || !f.w.taken || !f.w.front || !f.w.next)
            st = nnp__nomem();
    }
    if (!st)
        st = check_value_pairs(&f);
    if (!st)
        st = check_unpaired_outputs(&f);
    if (!st && f.nmv)
        st = apply_moves(r, p, f.mv, f.nmv);
    calls_free(&f.rc);
    calls_free(&f.pc);
    free(f.rstart);
    free(f.readers);
    free(f.prstart);
    free(f.preaders);
    free(f.held);
    free(f.pparent);
    free(f.rparent);
    free(f.moved);
    free(f.kd.v);
    free(f.kd.inst);
    free(f.w.seen);
    free(f.w.taken);
    free(f.w.front);
    free(f.w.next);
    free(f.mv);
    return st;
}
