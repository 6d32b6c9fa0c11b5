/*
 * pairing.c - which port record(s) each reference record is compared with, and how: the names
 * the rules give the port's records, the parts a concat rule joins, automatic alignment for what
 * names leave unmatched, and the shape each side is compared at once the adapters have run.
 * The copies of a name that several ranks of a rank capture hold ("<name>@rank<R>") are parts
 * too: a gather rule joins or sums them, or keeps the lowest rank's (docs/scale.md).
 *
 * Shapes are worked out before any data is read (the adapters run in shape-only mode), so
 * mismatches are known up front; the data of an adapted pair is made when it is compared
 * (nnp__pair_tensors), one pair at a time, and freed right after.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "diff/diff.h"

typedef struct arena_block {
    struct arena_block *next;
    max_align_t data[];
} arena_block;

/* What a diff owns besides its arrays (nnp_diff.owned). */
typedef struct {
    nnp_mapping **maps;         /* per port record: what the rules made of its name */
    size_t *nmaps;
    size_t nport;
    const nnp_mapping ***pair_maps; /* per pair: the mapping of each part */
    size_t pairs_cap;           /* room in pairs and pair_maps */
    arena_block *arena;         /* shapes, part lists, texts */
} owned;

static void *arena_alloc(owned *o, size_t n)
{
    arena_block *b = malloc(sizeof *b + (n ? n : 1));
    if (!b)
        return NULL;
    b->next = o->arena;
    o->arena = b;
    return b->data;
}

void nnp__pairing_free(void *p)
{
    owned *o = p;
    if (!o)
        return;
    for (size_t i = 0; i < o->nport; i++)
        nnp__mappings_free(o->maps[i], o->nmaps[i]);
    free(o->maps);
    free(o->nmaps);
    free(o->pair_maps);
    for (arena_block *b = o->arena, *next; b; b = next) {
        next = b->next;
        free(b);
    }
    free(o);
}

/* A name the rules gave a port record. */
typedef struct {
    const char *name;
    size_t port;
    const nnp_mapping *map;
    bool used;
} entry;

/* The port's entries grouped by name, found through a hash index: e[start[g] .. start[g + 1])
 * are the entries of group g, in (part, port) order. Sorting 100k names and binary-searching
 * them compared long common prefixes and missed the cache at every step; a group is found with
 * one probe or two. */
typedef struct {
    entry *e;
    size_t ngroups;
    size_t *start; /* ngroups + 1 */
    nnp_strindex index; /* name -> group */
} entry_set;

static const char *group_name(const void *ctx, size_t g)
{
    const entry_set *s = ctx;
    return s->e[s->start[g]].name;
}

static void entry_set_free(entry_set *s)
{
    free(s->e);
    free(s->start);
    nnp__strindex_free(&s->index);
}

static int entry_order(const void *a, const void *b)
{
    const entry *x = a, *y = b;
    if (x->map->part != y->map->part)
        return x->map->part < y->map->part ? -1 : 1;
    return x->port < y->port ? -1 : x->port > y->port;
}

/* Group the n entries of `all` (taken over, freed) by name, groups in order of first appearance. */
static nnp_status group_entries(entry *all, size_t n, entry_set *s)
{
    memset(s, 0, sizeof *s);
    uint32_t *group_of = malloc((n ? n : 1) * sizeof *group_of);
    size_t *first = malloc((n ? n : 1) * sizeof *first), *count = calloc(n + 1, sizeof *count);
    s->e = malloc((n ? n : 1) * sizeof *s->e);
    s->start = calloc(n + 2, sizeof *s->start);
    nnp_status st = group_of && first && count && s->e && s->start ? NNP_OK : nnp__nomem();
    /* while grouping, group g's name is all[first[g]]: the index reads it through start[] */
    entry_set probe = {all, 0, first, {NULL, 0, group_name, NULL}};
    probe.index.ctx = &probe;
    if (!st && !nnp__strindex_room(&probe.index, 0, n))
        st = nnp__nomem();
    for (size_t k = 0; !st && k < n; k++) {
        size_t slot = nnp__strindex_slot(&probe.index, all[k].name);
        uint32_t g = probe.index.slots[slot];
        if (!g) {
            first[probe.ngroups] = k;
            g = (uint32_t)++probe.ngroups;
            probe.index.slots[slot] = g;
        }
        group_of[k] = g - 1;
        count[g - 1]++;
    }
    if (!st) {
        s->ngroups = probe.ngroups;
        for (size_t g = 0; g < s->ngroups; g++)
            s->start[g + 1] = s->start[g] + count[g];
        memset(count, 0, (n + 1) * sizeof *count);
        for (size_t k = 0; k < n; k++)
            s->e[s->start[group_of[k]] + count[group_of[k]]++] = all[k];
        for (size_t g = 0; g < s->ngroups; g++)
            if (s->start[g + 1] - s->start[g] > 1)
                qsort(s->e + s->start[g], s->start[g + 1] - s->start[g], sizeof *s->e,
                      entry_order);
        /* the same slots now find each group through the grouped entries */
        s->index = probe.index;
        s->index.ctx = s;
        probe.index.slots = NULL;
    }
    nnp__strindex_free(&probe.index);
    free(group_of);
    free(first);
    free(count);
    free(all);
    if (st)
        entry_set_free(s);
    return st;
}

/* Pick the port entries for one reference name among its group e[at..end): a whole record if
 * one is left, else one entry for every part of a join. Returns how many (0: none), their
 * indices in pick[]. */
static uint32_t pick_entries(const entry *e, size_t at, size_t end, size_t *pick)
{
    for (size_t i = at; i < end; i++)
        if (!e[i].used && e[i].map->nparts == 0) {
            pick[0] = i;
            return 1;
        }
    uint32_t nparts = 0;
    for (size_t i = at; i < end && !nparts; i++)
        if (!e[i].used)
            nparts = e[i].map->nparts;
    if (nparts > 64)
        return 0; /* more parts than pick[] and adapt_pair hold: left unmatched */
    for (uint32_t k = 0; k < nparts; k++) {
        size_t i = at;
        while (i < end && (e[i].used || e[i].map->nparts != nparts || e[i].map->part != k))
            i++;
        if (i == end)
            return 0; /* a part is missing: the join cannot be made */
        pick[k] = i;
    }
    return nparts;
}

/* The tensor a record holds, without its data. */
static void tensor_of(const nnp_record *r, nnp_tensor *t)
{
    memset(t, 0, sizeof *t);
    t->dtype = r->dtype;
    t->ndim = r->ndim;
    memcpy(t->shape, r->shape, r->ndim * sizeof *r->shape);
    t->nelem = r->nelem;
}

/* The sum of n parts of one shape, each rounded to double and added in part (rank) order, then
 * rounded once to the parts' float dtype (F64 for integer parts or mixed dtypes); shape only
 * when the parts have no data. Made a block at a time: no buffer beyond the result. */
static nnp_status sum_parts(const nnp_tensor *parts, size_t n, nnp_tensor *out)
{
    memset(out, 0, sizeof *out);
    const nnp_tensor *p0 = &parts[0];
    nnp_dtype dt = p0->dtype;
    for (size_t i = 0; i < n; i++) {
        const nnp_tensor *p = &parts[i];
        bool same = p->ndim == p0->ndim && !memcmp(p->shape, p0->shape, p->ndim * sizeof *p->shape);
        if (!same) {
            char s0[256], s1[256];
            nnp__format_shape(s0, sizeof s0, p0->ndim, p0->shape);
            nnp__format_shape(s1, sizeof s1, p->ndim, p->shape);
            return nnp__fail(NNP_ERR_ARG, "parts %s and %s do not sum: the shapes differ", s0, s1);
        }
        if (p->dtype != dt || nnp_dtype_class_of(p->dtype) != NNP_CLASS_FLOAT ||
            p->dtype == NNP_F8_E4M3 || p->dtype == NNP_F8_E5M2)
            dt = NNP_F64;
    }
    *out = *p0;
    out->owned = NULL;
    out->dtype = dt;
    if (!p0->data) {
        out->data = NULL;
        return NNP_OK;
    }
    size_t es = nnp_dtype_size(dt);
    unsigned char *dst = malloc(out->nelem ? out->nelem * es : 1);
    if (!dst)
        return nnp__nomem();
    double acc[1024], x[1024];
    for (uint64_t at = 0; at < out->nelem; at += 1024) {
        size_t k = out->nelem - at < 1024 ? (size_t)(out->nelem - at) : 1024;
        memset(acc, 0, sizeof acc);
        for (size_t i = 0; i < n; i++) {
            nnp_convert_to_f64(parts[i].dtype,
                               (const unsigned char *)parts[i].data +
                                   at * nnp_dtype_size(parts[i].dtype), k, x);
            for (size_t j = 0; j < k; j++)
                acc[j] += x[j];
        }
        nnp_status st = nnp_convert(NNP_F64, acc, k, dt, dst + at * es);
        if (st) {
            free(dst);
            return st;
        }
    }
    out->owned = dst;
    out->data = dst;
    return NNP_OK;
}

static bool adapted(const nnp_diff_pair *p, const nnp_mapping *const *maps)
{
    return p->nparts > 1 || maps[0]->nops > 0;
}

/* Both sides of pair p as the adapters leave them: shape only when `data` is false. */
static nnp_status adapt_pair(nnp_dump *ref, nnp_dump *port, const nnp_diff_pair *p,
                             const nnp_mapping *const *maps, bool data, nnp_tensor *rt,
                             nnp_tensor *pt)
{
    const nnp_record *r = nnp_dump_record(ref, p->ref);
    nnp_tensor parts[64];
    uint32_t n = p->nparts;
    nnp_status st = NNP_OK;
    memset(pt, 0, sizeof *pt);
    if (r->ndim > NNP_ADAPT_MAX_DIMS)
        return nnp__fail(NNP_ERR_ARG, "adapters work on at most %d axes",
                         NNP_ADAPT_MAX_DIMS);
    tensor_of(r, rt);
    if (data)
        st = nnp_dump_data(ref, p->ref, &rt->data);
    if (!st)
        st = nnp__adapt(rt, maps[0]->ops, maps[0]->nops, true, NULL);
    uint32_t made = 0;
    for (; !st && made < n; made++) {
        const nnp_record *q = nnp_dump_record(port, p->parts[made]);
        if (q->ndim > NNP_ADAPT_MAX_DIMS) {
            st = nnp__fail(NNP_ERR_ARG, "adapters work on at most %d axes", NNP_ADAPT_MAX_DIMS);
            break;
        }
        tensor_of(q, &parts[made]);
        if (data && (st = nnp_dump_data(port, p->parts[made], &parts[made].data)))
            break;
        st = nnp__adapt(&parts[made], maps[made]->ops, maps[made]->nops, false, rt);
    }
    if (!st && n == 1) {
        *pt = parts[0];
        made = 0;
    } else if (!st && maps[0]->join_sum) {
        st = sum_parts(parts, n, pt);
    } else if (!st) {
        st = nnp__concat(parts, n, maps[0]->join_axis, pt);
    }
    for (uint32_t k = 0; k < made && k < n; k++)
        nnp__tensor_free(&parts[k]);
    if (st)
        nnp__tensor_free(rt);
    return st;
}

nnp_status nnp__pair_tensors(const nnp_diff *d, size_t i, nnp_dump *ref, nnp_dump *port,
                             nnp_tensor *rt, nnp_tensor *pt)
{
    const owned *o = d->owned;
    return adapt_pair(ref, port, &d->pairs[i], o->pair_maps[i], true, rt, pt);
}

static const uint64_t *arena_shape(owned *o, const nnp_tensor *t)
{
    uint64_t *s = arena_alloc(o, t->ndim * sizeof *s);
    if (s)
        memcpy(s, t->shape, t->ndim * sizeof *s);
    return s;
}

static char *arena_text(owned *o, const char *s)
{
    size_t n = strlen(s) + 1;
    char *c = arena_alloc(o, n);
    if (c)
        memcpy(c, s, n);
    return c;
}

static bool comparable_dtypes(nnp_dtype a, nnp_dtype b)
{
    nnp_dtype_class ca = nnp_dtype_class_of(a), cb = nnp_dtype_class_of(b);
    return ca == cb || (ca != NNP_CLASS_FLOAT && cb != NNP_CLASS_FLOAT);
}

/* How the parts of pair p are joined, as the mapping of its first part says: the parts come
 * from one rules chain (or one gather rule), so the first stands for all. */
static nnp_join_kind join_of(const nnp_diff_pair *p, const nnp_mapping *first)
{
    if (p->nparts <= 1)
        return NNP_JOIN_NONE;
    if (first->gather == NNP_GATHER_SUM)
        return NNP_JOIN_GATHER_SUM;
    if (first->gather == NNP_GATHER_CONCAT)
        return NNP_JOIN_GATHER_CONCAT;
    return NNP_JOIN_CONCAT;
}

/* Work out how pair p is compared: the shapes and dtypes after the adapters, a verdict when they
 * cannot be compared, the tolerances, and the text of the adapters for the report. */
static nnp_status plan_pair(owned *o, nnp_dump *ref, nnp_dump *port, nnp_diff_pair *p,
                            const nnp_mapping *const *maps, const nnp_diff_options *opts)
{
    const nnp_record *r = nnp_dump_record(ref, p->ref), *q = nnp_dump_record(port, p->port);
    nnp_tensor rt, pt;
    p->ref_dtype = r->dtype;
    p->port_dtype = q->dtype;
    p->ref_ndim = r->ndim;
    p->port_ndim = q->ndim;
    p->ref_shape = r->shape;
    p->port_shape = q->shape;
    p->join = join_of(p, maps[0]);
    p->join_axis = p->join == NNP_JOIN_CONCAT || p->join == NNP_JOIN_GATHER_CONCAT
                       ? maps[0]->join_axis
                       : 0;
    p->nadapters = (uint32_t)maps[0]->nops;
    if (adapted(p, maps)) {
        nnp_sbuf text = {0};
        /* the first part's adapters stand for all: the parts come from one rules chain */
        for (size_t i = 0; i < maps[0]->nops; i++) {
            if (text.len)
                nnp__sbuf_puts(&text, "; ");
            nnp__op_describe(&text, &maps[0]->ops[i]);
        }
        if (p->join == NNP_JOIN_GATHER_SUM)
            nnp__sbuf_printf(&text, "%sgather sum of %u ranks", text.len ? "; " : "", p->nparts);
        else if (p->join == NNP_JOIN_GATHER_CONCAT)
            nnp__sbuf_printf(&text, "%sgather concat of %u ranks on axis %lld",
                             text.len ? "; " : "", p->nparts, (long long)p->join_axis);
        else if (p->join == NNP_JOIN_CONCAT)
            nnp__sbuf_printf(&text, "%sconcat %u parts on axis %lld", text.len ? "; " : "",
                             p->nparts, (long long)p->join_axis);
        if (text.failed || !(p->adapters = arena_text(o, text.s))) {
            nnp__sbuf_free(&text);
            return nnp__nomem();
        }
        nnp__sbuf_free(&text);
        nnp_status st = adapt_pair(ref, port, p, maps, false, &rt, &pt);
        if (st == NNP_ERR_NOMEM)
            return st;
        if (st) {
            if (!(p->problem = arena_text(o, nnp_last_error())))
                return nnp__nomem();
            p->verdict = NNP_SHAPE_MISMATCH;
            return NNP_OK;
        }
        p->ref_dtype = rt.dtype;
        p->port_dtype = pt.dtype;
        p->ref_ndim = rt.ndim;
        p->port_ndim = pt.ndim;
        if (!(p->ref_shape = arena_shape(o, &rt)) || !(p->port_shape = arena_shape(o, &pt)))
            return nnp__nomem();
    }
    bool same_shape = p->ref_ndim == p->port_ndim &&
                      !memcmp(p->ref_shape, p->port_shape, p->ref_ndim * sizeof *p->ref_shape);
    p->verdict = !same_shape                                         ? NNP_SHAPE_MISMATCH
                 : !comparable_dtypes(p->ref_dtype, p->port_dtype) ? NNP_DTYPE_MISMATCH
                                                                   : NNP_PASS;
    if (maps[0]->has_tolerance) {
        p->atol = maps[0]->atol;
        p->rtol = maps[0]->rtol;
    } else if (opts->atol >= 0 && opts->rtol >= 0) {
        p->atol = opts->atol;
        p->rtol = opts->rtol;
    } else {
        nnp_default_tolerance(p->ref_dtype, p->port_dtype, &p->atol, &p->rtol);
    }
    return NNP_OK;
}

/* Room for `more` pairs besides those made: one per reference record, unless the parts of a
 * fused record (value_parts.c) pair it several times. */
static nnp_status pairs_room(owned *o, nnp_diff *d, size_t more)
{
    size_t need = d->npairs + more;
    if (need <= o->pairs_cap)
        return NNP_OK;
    nnp_diff_pair *p = realloc(d->pairs, need * sizeof *p);
    if (!p)
        return nnp__nomem();
    d->pairs = p;
    memset(p + o->pairs_cap, 0, (need - o->pairs_cap) * sizeof *p);
    const nnp_mapping ***m = realloc(o->pair_maps, need * sizeof *m);
    if (!m)
        return nnp__nomem();
    o->pair_maps = m;
    memset(m + o->pairs_cap, 0, (need - o->pairs_cap) * sizeof *m);
    o->pairs_cap = need;
    return NNP_OK;
}

/* Pairs made by name, in the reference's order; what is left goes to alignment. */
static nnp_status pair_by_name(owned *o, nnp_dump *ref, const bool *ref_ignored, entry_set *s,
                               nnp_diff *d)
{
    size_t nref = nnp_dump_count(ref), pick[64];
    entry *e = s->e;
    for (size_t i = 0; i < nref; i++) {
        if (ref_ignored[i])
            continue;
        int64_t g = nnp__strindex_find(&s->index, nnp_dump_record(ref, i)->name);
        uint32_t n = g < 0 ? 0 : pick_entries(e, s->start[g], s->start[g + 1], pick);
        if (!n)
            continue;
        nnp_diff_pair *p = &d->pairs[d->npairs];
        const nnp_mapping **maps = arena_alloc(o, n * sizeof *maps);
        size_t *parts = arena_alloc(o, n * sizeof *parts);
        if (!maps || !parts)
            return nnp__nomem();
        for (uint32_t k = 0; k < n; k++) {
            e[pick[k]].used = true;
            maps[k] = e[pick[k]].map;
            parts[k] = e[pick[k]].port;
        }
        p->ref = i;
        p->port = parts[0];
        p->parts = parts;
        p->nparts = n;
        o->pair_maps[d->npairs++] = maps;
    }
    return NNP_OK;
}

static int by_port(const void *a, const void *b)
{
    const nnp_collision *x = a, *y = b;
    if (x->port != y->port)
        return x->port < y->port ? -1 : 1;
    /* one port record may collide under several of its names: those in name order */
    return strcmp(x->name, y->name);
}

/* Port records that the rules renamed onto a name that another port record took first: a
 * rename too general (or two that meet) would otherwise leave them unmatched without a word.
 * They are in the group of the one that was paired. Counts them, and fills out[] when it is
 * given. */
static size_t collect_collisions(const entry_set *s, nnp_collision *out)
{
    size_t n = 0;
    for (size_t g = 0; g < s->ngroups; g++) {
        const entry *e = s->e;
        size_t taken = SIZE_MAX, begin = s->start[g], end = s->start[g + 1];
        for (size_t j = begin; j < end && taken == SIZE_MAX; j++)
            if (e[j].used)
                taken = j;
        for (size_t j = begin; taken != SIZE_MAX && j < end; j++)
            if (!e[j].used && e[j].port != e[taken].port) {
                if (out)
                    out[n] = (nnp_collision){e[j].port, e[taken].port, e[j].name};
                n++;
            }
    }
    return n;
}

static nnp_status find_collisions(owned *o, const entry_set *s, nnp_diff *d)
{
    size_t n = collect_collisions(s, NULL);
    if (!n)
        return NNP_OK;
    if (!(d->collisions = arena_alloc(o, n * sizeof *d->collisions)))
        return nnp__nomem();
    d->ncollisions = collect_collisions(s, d->collisions);
    qsort(d->collisions, d->ncollisions, sizeof *d->collisions, by_port);
    return NNP_OK;
}

/* The mapping an evidence pair is compared through: the port record's own, with the adapters
 * its layout needs: the reference's axes in the port's order, the fused side's part along the
 * last axis, the reference's last row for a decode step, a reshape for the same elements in
 * another shape. Lives in the arena. */
static const nnp_mapping *evidence_mapping(owned *o, const nnp_mapping *base, const nnp_record *r,
                                           const nnp_record *q, const nnp__value_pair *x)
{
    nnp_mapping *m = arena_alloc(o, sizeof *m);
    nnp_op *ops = arena_alloc(o, 4 * sizeof *ops);
    if (!m || !ops)
        return NULL;
    *m = *base;
    m->ops = ops;
    m->nops = 0;
    uint8_t how = x->how;
    uint64_t want[NNP_ADAPT_MAX_DIMS];
    uint32_t nd = r->ndim <= NNP_ADAPT_MAX_DIMS ? r->ndim : 0;
    if (nd)
        memcpy(want, r->shape, nd * sizeof *want);
    /* on the reference's side, so that injection can feed the port the reference's value */
    if (x->perm.n && x->perm.n == nd) {
        nnp_op *t = &ops[m->nops++];
        *t = (nnp_op){.kind = NNP_OP_TRANSPOSE, .on_ref = true, .n = x->perm.n};
        for (uint32_t k = 0; k < nd; k++) {
            t->dims[k] = x->perm.axes[k];
            want[k] = r->shape[x->perm.axes[k]];
        }
    }
    const nnp_record *fused = x->ref_fused ? r : q;
    if (x->nparts && fused->ndim >= 1 && nd) {
        int64_t d = (int64_t)(fused->shape[fused->ndim - 1] / x->nparts);
        ops[m->nops++] = (nnp_op){.kind = NNP_OP_SLICE, .on_ref = x->ref_fused, .axis = -1,
                                  .start = d * x->part, .end = d * (x->part + 1)};
        if (x->ref_fused)
            want[nd - 1] = (uint64_t)d;
    }
    if (how == NNP_EVIDENCE_VALUE_LAST_ROW || how == NNP_EVIDENCE_STRUCTURE_LAST_ROW ||
        x->last_row) {
        int a = nnp__sequence_axis(r->ndim, r->dtype);
        ops[m->nops++] = (nnp_op){.kind = NNP_OP_SLICE, .on_ref = true,
                                  .axis = a >= 0 ? a - (int)r->ndim : -2, .start = -1,
                                  .end = INT64_MAX};
        if (nd && a >= 0)
            want[a] = 1;
    }
    uint64_t got[NNP_ADAPT_MAX_DIMS];
    if (q->ndim <= NNP_ADAPT_MAX_DIMS && q->ndim)
        memcpy(got, q->shape, q->ndim * sizeof *got);
    if (x->nparts && !x->ref_fused && q->ndim && q->ndim <= NNP_ADAPT_MAX_DIMS)
        got[q->ndim - 1] /= x->nparts;
    bool same = q->ndim == nd && (!nd || !memcmp(got, want, nd * sizeof *want));
    if (!same)
        ops[m->nops++] = (nnp_op){.kind = NNP_OP_RESHAPE, .on_ref = false, .n = 0};
    return m;
}

/* Per reference record, the rel-L2 the noise diff (the reference against itself in the port's
 * precision) measured there; NaN where it has no compared pair for it. */
static double *noise_of(const nnp_diff *noise, size_t nref)
{
    double *v = malloc((nref ? nref : 1) * sizeof *v);
    if (!v)
        return NULL;
    for (size_t i = 0; i < nref; i++)
        v[i] = NAN;
    for (size_t k = 0; k < noise->npairs; k++) {
        const nnp_diff_pair *p = &noise->pairs[k];
        if (p->ref < nref && nnp__pair_compared(p) && isfinite(p->metrics.rel_l2))
            v[p->ref] = p->metrics.rel_l2;
    }
    return v;
}

/* Pair what names left unmatched by evidence (value_align.c): values, then structure. Only port
 * records that map to one whole reference record take part. */
static nnp_status pair_by_alignment(owned *o, nnp_dump *ref, nnp_dump *port, const bool *ref_used,
                                    bool *port_used, const nnp_diff_options *opts, bool structure,
                                    nnp_diff *d)
{
    size_t nref = nnp_dump_count(ref), nport = nnp_dump_count(port), nr = 0, np = 0;
    size_t *rmap = malloc((nref ? nref : 1) * sizeof *rmap);
    size_t *pmap = malloc((nport ? nport : 1) * sizeof *pmap);
    const char **pnames = malloc((nport ? nport : 1) * sizeof *pnames);
    nnp__value_result v = {
        .port_covered = calloc(nport ? nport : 1, sizeof *v.port_covered),
        .port_value_ref = malloc((nport ? nport : 1) * sizeof *v.port_value_ref),
        .ref_first = malloc((nref ? nref : 1) * sizeof *v.ref_first),
        .port_first = malloc((nport ? nport : 1) * sizeof *v.port_first)};
    if (!d->ref_value_seq)
        d->ref_value_seq = malloc((nref ? nref : 1) * sizeof *d->ref_value_seq);
    if (!d->port_value_seq)
        d->port_value_seq = malloc((nport ? nport : 1) * sizeof *d->port_value_seq);
    if (!d->port_value_ref)
        d->port_value_ref = malloc((nport ? nport : 1) * sizeof *d->port_value_ref);
    nnp_status st = rmap && pmap && pnames && v.port_covered && v.port_value_ref &&
                    v.ref_first && v.port_first && d->ref_value_seq && d->port_value_seq &&
                    d->port_value_ref ? NNP_OK : nnp__nomem();
    for (size_t i = 0; !st && i < nref; i++) {
        d->ref_value_seq[i] = i;
        if (!ref_used[i])
            rmap[nr++] = i;
    }
    for (size_t j = 0; !st && j < nport; j++) {
        d->port_value_seq[j] = j;
        d->port_value_ref[j] = SIZE_MAX;
        if (!port_used[j] && o->nmaps[j] == 1 && o->maps[j][0].nparts == 0) {
            pnames[np] = o->maps[j][0].name;
            pmap[np++] = j;
        }
    }
    /* the baseline's noise per reference record, where the caller measured it */
    double *noise = NULL;
    if (!st && opts->noise && !(noise = noise_of(opts->noise, nref)))
        st = nnp__nomem();
    if (!st && nr && np)
        st = nnp__align_values(ref, rmap, nr, port, pmap, np, pnames, noise, opts->threads,
                               structure, &v);
    free(noise);
    if (!st)
        st = pairs_room(o, d, v.npairs);
    for (size_t k = 0; !st && k < v.npairs; k++) {
        const nnp__value_pair *x = &v.pairs[k];
        const nnp_mapping **maps = arena_alloc(o, sizeof *maps);
        size_t *parts = arena_alloc(o, sizeof *parts);
        if (!maps || !parts ||
            !(maps[0] = evidence_mapping(o, &o->maps[x->port][0], nnp_dump_record(ref, x->ref),
                                         nnp_dump_record(port, x->port), x))) {
            st = nnp__nomem();
            break;
        }
        parts[0] = x->port;
        nnp_diff_pair *p = &d->pairs[d->npairs];
        p->ref = x->ref;
        p->port = x->port;
        p->parts = parts;
        p->nparts = 1;
        p->aligned = true;
        p->evidence = (nnp_evidence)x->how;
        p->confidence = x->confidence;
        o->pair_maps[d->npairs++] = maps;
        d->naligned++;
    }
    for (size_t i = 0; !st && nr && np && i < nr; i++)
        d->ref_value_seq[rmap[i]] = v.ref_first[i];
    for (size_t k = 0; !st && nr && np && k < np; k++) {
        d->port_value_seq[pmap[k]] = v.port_first[k];
        d->port_value_ref[pmap[k]] = v.port_value_ref[k];
        /* a port record whose value was paired through another of its names is not unmatched */
        if (v.port_covered[k])
            port_used[pmap[k]] = true;
    }
    free(rmap);
    free(pmap);
    free(pnames);
    free(v.pairs);
    free(v.port_covered);
    free(v.port_value_ref);
    free(v.ref_first);
    free(v.port_first);
    return st;
}

/* Pair as another diff of the same reference did (opts->like, made against opts->like_port):
 * by the names of its port records, which a second run of the same port (under injection)
 * records again. The mappings are copied, adapters and all. */
static nnp_status pair_like(owned *o, nnp_dump *port, const nnp_diff_options *opts, bool *ref_used,
                            bool *port_used, nnp_diff *d)
{
    const nnp_diff *m = opts->like;
    const owned *mo = m->owned;
    size_t first = d->npairs;
    nnp_status st = pairs_room(o, d, m->npairs);
    if (st)
        return st;
    for (size_t i = 0; i < m->npairs; i++) {
        const nnp_diff_pair *mp = &m->pairs[i];
        if (ref_used[mp->ref])
            continue;
        uint32_t n = mp->nparts;
        const nnp_mapping **maps = arena_alloc(o, n * sizeof *maps);
        size_t *parts = arena_alloc(o, n * sizeof *parts);
        if (!maps || !parts)
            return nnp__nomem();
        bool found = true;
        for (uint32_t k = 0; k < n && found; k++) {
            int64_t j = nnp_dump_find(port, nnp_dump_record(opts->like_port, mp->parts[k])->name);
            found = j >= 0;
            if (!found)
                break;
            parts[k] = (size_t)j;
            const nnp_mapping *src = mo->pair_maps[i][k];
            nnp_mapping *c = arena_alloc(o, sizeof *c);
            nnp_op *ops = arena_alloc(o, (src->nops ? src->nops : 1) * sizeof *ops);
            char *name = arena_text(o, src->name ? src->name : "");
            if (!c || !ops || !name)
                return nnp__nomem();
            *c = *src;
            if (src->nops)
                memcpy(ops, src->ops, src->nops * sizeof *ops);
            c->ops = ops;
            c->name = name;
            maps[k] = c;
        }
        if (!found)
            continue;
        nnp_diff_pair *p = &d->pairs[d->npairs];
        p->ref = mp->ref;
        p->port = parts[0];
        p->parts = parts;
        p->nparts = n;
        p->aligned = mp->aligned;
        p->evidence = mp->evidence;
        p->confidence = mp->confidence;
        o->pair_maps[d->npairs++] = maps;
        d->naligned += mp->aligned;
        for (uint32_t k = 0; k < n; k++)
            port_used[parts[k]] = true;
    }
    /* marked once all are in: the parts of a fused record are several pairs of one record */
    for (size_t i = first; i < d->npairs; i++)
        ref_used[d->pairs[i].ref] = true;
    return NNP_OK;
}

typedef struct {
    nnp_diff_pair pair;
    const nnp_mapping **maps;
} pair_and_maps;

static int by_ref(const void *a, const void *b)
{
    size_t x = ((const pair_and_maps *)a)->pair.ref, y = ((const pair_and_maps *)b)->pair.ref;
    return x < y ? -1 : x > y;
}

/* Aligned pairs were appended: put every pair back in the reference's order. */
static nnp_status sort_pairs(owned *o, nnp_diff *d)
{
    pair_and_maps *t = malloc((d->npairs ? d->npairs : 1) * sizeof *t);
    if (!t)
        return nnp__nomem();
    for (size_t i = 0; i < d->npairs; i++)
        t[i] = (pair_and_maps){d->pairs[i], o->pair_maps[i]};
    qsort(t, d->npairs, sizeof *t, by_ref);
    for (size_t i = 0; i < d->npairs; i++) {
        d->pairs[i] = t[i].pair;
        o->pair_maps[i] = t[i].maps;
    }
    free(t);
    return NNP_OK;
}

/* Where a port record stands among the copies of its name in a rank capture: the length of
 * the name without "@rank<R>", its place among the ranks that hold the name, and how many do
 * (holders 0: a name one rank alone holds, or not a rank capture). */
typedef struct {
    size_t base_len;
    uint32_t index, holders;
    size_t rec;
} rank_copy;

static int by_copy(const void *pa, const void *pb, void *ctx)
{
    const rank_copy *a = pa, *b = pb;
    nnp_dump *port = ctx;
    const nnp_record *x = nnp_dump_record(port, a->rec), *y = nnp_dump_record(port, b->rec);
    size_t n = a->base_len < b->base_len ? a->base_len : b->base_len;
    int c = memcmp(x->name, y->name, n);
    if (c)
        return c;
    if (a->base_len != b->base_len)
        return a->base_len < b->base_len ? -1 : 1;
    return x->rank < y->rank ? -1 : x->rank > y->rank;
}

static nnp_status rank_copies(nnp_dump *port, rank_copy *rc)
{
    size_t n = nnp_dump_count(port), k = 0;
    rank_copy *t = malloc((n ? n : 1) * sizeof *t);
    if (!t)
        return nnp__nomem();
    for (size_t i = 0; i < n; i++) {
        const nnp_record *r = nnp_dump_record(port, i);
        rc[i] = (rank_copy){0, 0, 0, i};
        char suffix[24];
        size_t len = strlen(r->name),
               sl = r->rank >= 0 ? (size_t)snprintf(suffix, sizeof suffix, "@rank%d", r->rank) : 0;
        if (sl && len > sl && strcmp(r->name + len - sl, suffix) == 0)
            t[k++] = (rank_copy){len - sl, 0, 0, i};
    }
    qsort_r(t, k, sizeof *t, by_copy, port);
    for (size_t i = 0; i < k;) {
        size_t j = i + 1;
        while (j < k && t[j].base_len == t[i].base_len &&
               memcmp(nnp_dump_record(port, t[j].rec)->name,
                      nnp_dump_record(port, t[i].rec)->name, t[i].base_len) == 0)
            j++;
        for (size_t m = i; m < j; m++)
            rc[t[m].rec] = (rank_copy){t[m].base_len, (uint32_t)(m - i), (uint32_t)(j - i),
                                       t[m].rec};
        i = j;
    }
    free(t);
    return NNP_OK;
}

/* What a gather rule makes of one rank's copy: a part of a join or sum over the holders, or,
 * for rank0 (also when no gather rule matched), the lowest rank's copy alone: the others'
 * mappings are dropped, as an ignore rule drops them. */
static void apply_gather(nnp_mapping *m, size_t *n, const rank_copy *rc, size_t *defaulted)
{
    size_t kept = 0;
    for (size_t j = 0; j < *n; j++) {
        int mode = m[j].gather ? m[j].gather : NNP_GATHER_RANK0;
        if (mode == NNP_GATHER_RANK0 && rc->index != 0) {
            free(m[j].name);
            free(m[j].ops);
            continue;
        }
        if (mode == NNP_GATHER_RANK0 && !m[j].gather && j == 0)
            (*defaulted)++;
        if (mode != NNP_GATHER_RANK0) {
            m[j].part = rc->index;
            m[j].nparts = rc->holders;
            m[j].join_axis = m[j].gather_axis;
            m[j].join_sum = mode == NNP_GATHER_SUM;
        }
        m[kept++] = m[j];
    }
    *n = kept;
}

static nnp_status map_port_names(owned *o, nnp_dump *port, const nnp_rules *rules,
                                 entry_set *out, size_t *defaulted)
{
    size_t ne = 0;
    rank_copy *rc = malloc((o->nport ? o->nport : 1) * sizeof *rc);
    nnp_status st = rc ? rank_copies(port, rc) : nnp__nomem();
    for (size_t i = 0; !st && i < o->nport; i++) {
        const char *name = nnp_dump_record(port, i)->name;
        /* the rules see a rank's copy under the name the ranks share */
        char *base = rc[i].holders ? strndup(name, rc[i].base_len) : NULL;
        if (rc[i].holders && !base)
            st = nnp__nomem();
        if (!st)
            st = nnp__rules_apply(rules, base ? base : name, &o->maps[i], &o->nmaps[i]);
        free(base);
        if (!st && rc[i].holders)
            apply_gather(o->maps[i], &o->nmaps[i], &rc[i], defaulted);
        if (!st)
            ne += o->nmaps[i];
    }
    free(rc);
    if (st)
        return st;
    entry *e = malloc((ne ? ne : 1) * sizeof *e);
    if (!e)
        return nnp__nomem();
    size_t k = 0;
    for (size_t i = 0; i < o->nport; i++)
        for (size_t j = 0; j < o->nmaps[i]; j++)
            e[k++] = (entry){o->maps[i][j].name, i, &o->maps[i][j], false};
    return group_entries(e, ne, out);
}

nnp_status nnp__pair_records(nnp_dump *ref, nnp_dump *port, const nnp_diff_options *opts,
                             nnp_diff *d)
{
    size_t nref = nnp_dump_count(ref), nport = nnp_dump_count(port);
    owned *o = calloc(1, sizeof *o);
    if (!o)
        return nnp__nomem();
    d->owned = o;
    o->nport = nport;
    o->maps = calloc(nport ? nport : 1, sizeof *o->maps);
    o->nmaps = calloc(nport ? nport : 1, sizeof *o->nmaps);
    o->pair_maps = calloc(nref ? nref : 1, sizeof *o->pair_maps);
    d->pairs = calloc(nref ? nref : 1, sizeof *d->pairs);
    o->pairs_cap = nref ? nref : 1;
    d->unmatched_ref = calloc(nref ? nref : 1, sizeof *d->unmatched_ref);
    d->unmatched_port = calloc(nport ? nport : 1, sizeof *d->unmatched_port);
    bool *ref_used = calloc(nref ? nref : 1, sizeof *ref_used);
    bool *port_used = calloc(nport ? nport : 1, sizeof *port_used);
    entry_set e = {0};
    nnp_status st = o->maps && o->nmaps && o->pair_maps && d->pairs && d->unmatched_ref &&
                    d->unmatched_port && ref_used && port_used ? NNP_OK : nnp__nomem();
    if (!st)
        st = map_port_names(o, port, opts->rules, &e, &d->rank0_default);
    /* reference records a `ref ignore` rule drops count as used: not paired, not listed */
    for (size_t i = 0; !st && i < nref; i++)
        st = nnp__rules_check_ref(opts->rules, nnp_dump_record(ref, i)->name, &ref_used[i]);
    if (!st && opts->like)
        st = pair_like(o, port, opts, ref_used, port_used, d);
    if (!st && !opts->like)
        st = pair_by_name(o, ref, ref_used, &e, d);
    if (!st)
        st = find_collisions(o, &e, d);
    for (size_t i = 0; !st && i < d->npairs; i++) {
        ref_used[d->pairs[i].ref] = true;
        for (uint32_t k = 0; k < d->pairs[i].nparts; k++)
            port_used[d->pairs[i].parts[k]] = true;
    }
    size_t named = d->npairs;
    for (size_t i = 0; !opts->like && i < named; i++)
        d->pairs[i].confidence = 1.0;
    /* pairing like another diff: only values may add to it (what had no partner there must not
     * gain one by structure here) */
    if (!st && !opts->no_align && named < nref && named < nport)
        st = pair_by_alignment(o, ref, port, ref_used, port_used, opts, !opts->like, d);

    for (size_t i = named; !st && i < d->npairs; i++) {
        ref_used[d->pairs[i].ref] = true;
        port_used[d->pairs[i].port] = true;
    }
    if (!st && d->npairs > named)
        st = sort_pairs(o, d);
    for (size_t i = 0; !st && i < d->npairs; i++)
        st = plan_pair(o, ref, port, &d->pairs[i], o->pair_maps[i], opts);
    for (size_t i = 0; !st && i < nref; i++)
        if (!ref_used[i])
            d->unmatched_ref[d->nunmatched_ref++] = i;
    /* a port record the rules ignore has no mapping: it is neither paired nor unmatched */
    for (size_t j = 0; !st && j < nport; j++)
        if (!port_used[j] && o->nmaps[j])
            d->unmatched_port[d->nunmatched_port++] = j;
    entry_set_free(&e);
    free(ref_used);
    free(port_used);
    return st;
}

/* A name as a regex that matches it whole. */
static void put_literal(nnp_sbuf *b, const char *s)
{
    for (; *s; s++) {
        if (strchr("\\.^$|?*+()[]{}", *s))
            nnp__sbuf_puts(b, "\\");
        nnp__sbuf_printf(b, "%c", *s);
    }
}

static void put_literal_regex(nnp_sbuf *b, const char *s)
{
    nnp__sbuf_puts(b, "^");
    put_literal(b, s);
    nnp__sbuf_puts(b, "$");
}

static bool is_part_pair(const nnp_diff_pair *p)
{
    return p->aligned &&
           (p->evidence == NNP_EVIDENCE_VALUE_PART || p->evidence == NNP_EVIDENCE_STRUCTURE_PART);
}

/* Whether a record's name can stand in a rule as a regex or a label: words are split at blanks,
 * '#' starts a comment, ':' would end a split label. */
static bool ruleable(const char *name)
{
    return !strpbrk(name, " \t\r\n#:");
}

/* One pair's adapters as rules on `name` (the name the rules have made by then). */
static nnp_status op_rules(const nnp_mapping *m, const char *name, bool skip_port_part,
                           nnp_sbuf *b)
{
    for (size_t k = 0; k < m->nops; k++) {
        if (skip_port_part && !m->ops[k].on_ref && m->ops[k].kind == NNP_OP_SLICE &&
            m->ops[k].axis == -1)
            continue; /* the split made it */
        nnp_sbuf op = {0};
        nnp__op_describe(&op, &m->ops[k]);
        if (op.failed) {
            nnp__sbuf_free(&op);
            return nnp__nomem();
        }
        /* "ref slice -2 -1:" -> "ref slice REGEX -2 -1:" */
        const char *t = op.s;
        bool on_ref = strncmp(t, "ref ", 4) == 0;
        if (on_ref)
            t += 4;
        size_t kw = strcspn(t, " ");
        nnp__sbuf_printf(b, "%s%.*s ", on_ref ? "ref " : "", (int)kw, t);
        put_literal_regex(b, name);
        nnp__sbuf_printf(b, "%s\n", t + kw);
        nnp__sbuf_free(&op);
    }
    return NNP_OK;
}

/* The parts of fused records (value_parts.c), before the renames, on the names they meet
 * there. A port record that is one part of a fused reference record takes its slice of the
 * reference's by its own name: several port records become the one reference name. A fused
 * port record is split into the reference's names, each with its share of the last axis. */
static nnp_status part_rules(const nnp_diff *d, const nnp_dump *ref, bool *renamed, nnp_sbuf *b)
{
    const owned *o = d->owned;
    bool said = false;
    nnp_status st = NNP_OK;
    for (size_t i = 0; i < d->npairs && !st; i++) {
        const nnp_diff_pair *p = &d->pairs[i];
        if (!is_part_pair(p) || o->nmaps[p->port] != 1)
            continue;
        const char *pname = o->maps[p->port][0].name;
        if (renamed[p->port] || !ruleable(pname))
            continue;
        /* the port's side sliced: the fused record is the port's, and its parts are the
         * reference records paired with it, in part order */
        const nnp_mapping *m = o->pair_maps[i][0];
        bool port_fused = false;
        for (size_t k = 0; k < m->nops; k++)
            port_fused |= !m->ops[k].on_ref && m->ops[k].kind == NNP_OP_SLICE;
        if (!said)
            nnp__sbuf_puts(b, "# parts of fused records: a port record that is a part of a "
                              "fused reference record, or a fused port record split into the "
                              "reference's\n");
        said = true;
        if (!port_fused) {
            st = op_rules(m, pname, false, b);
            continue;
        }
        /* one reference record a part (a value's other names would be parts again), in part
         * order: by the start of each pair's slice of the port's last axis */
        size_t at[16], n = 0;
        int64_t start[16];
        bool ok = true;
        for (size_t j = i; j < d->npairs && n < 16; j++) {
            if (!is_part_pair(&d->pairs[j]) || d->pairs[j].port != p->port)
                continue;
            const nnp_mapping *mj = o->pair_maps[j][0];
            int64_t sj = INT64_MAX;
            for (size_t q = 0; q < mj->nops; q++)
                if (!mj->ops[q].on_ref && mj->ops[q].kind == NNP_OP_SLICE)
                    sj = mj->ops[q].start;
            bool seen = false;
            for (size_t k = 0; k < n; k++)
                seen |= start[k] == sj;
            if (seen)
                continue;
            ok &= ruleable(nnp_dump_record(ref, d->pairs[j].ref)->name);
            start[n] = sj;
            at[n++] = j;
        }
        renamed[p->port] = true;
        if (!ok)
            continue;
        for (size_t k = 1; k < n; k++)
            for (size_t q = k; q > 0 && start[q - 1] > start[q]; q--) {
                int64_t ts = start[q];
                size_t ta = at[q];
                start[q] = start[q - 1];
                at[q] = at[q - 1];
                start[q - 1] = ts;
                at[q - 1] = ta;
            }
        nnp__sbuf_puts(b, "split ^(");
        put_literal(b, pname);
        nnp__sbuf_puts(b, ")$ -1");
        for (size_t k = 0; k < n; k++)
            nnp__sbuf_printf(b, " %s", nnp_dump_record(ref, d->pairs[at[k]].ref)->name);
        nnp__sbuf_puts(b, "\n");
        for (size_t k = 0; k < n && !st; k++)
            st = op_rules(o->pair_maps[at[k]][0], nnp_dump_record(ref, d->pairs[at[k]].ref)->name,
                          true, b);
    }
    if (!st && said)
        nnp__sbuf_puts(b, "\n");
    return st ? st : b->failed ? nnp__nomem() : NNP_OK;
}

/* The adapters the aligned pairs are compared through (the reference's last row, a reshape,
 * the reference's axes in the port's order), one rule each after the renames: by then the
 * port's name is the reference's. */
static nnp_status adapter_rules(const nnp_diff *d, const nnp_dump *ref, nnp_sbuf *b)
{
    const owned *o = d->owned;
    bool said = false;
    for (size_t i = 0; i < d->npairs; i++) {
        const nnp_diff_pair *p = &d->pairs[i];
        const nnp_mapping *m = o->pair_maps[i][0];
        const char *name = nnp_dump_record(ref, p->ref)->name;
        if (!p->aligned || !m->nops || strpbrk(name, " \t\r\n#") || is_part_pair(p))
            continue;
        if (!said)
            nnp__sbuf_puts(b, "\n# how the aligned records meet: the reference's last row of a "
                              "sequence, the same elements in another shape, the reference's "
                              "axes in the port's order\n");
        said = true;
        nnp_status st = op_rules(m, name, false, b);
        if (st)
            return st;
    }
    return b->failed ? nnp__nomem() : NNP_OK;
}

nnp_status nnp_diff_aligned_rules(const nnp_diff *d, const nnp_dump *ref, char **text)
{
    if (!d || !ref || !text)
        return nnp__fail(NNP_ERR_ARG, "nnp_diff_aligned_rules: missing diff, dump or output");
    *text = NULL;
    if (!d->naligned) {
        *text = strdup("");
        return *text ? NNP_OK : nnp__nomem();
    }
    const owned *o = d->owned;
    /* Every name the rules will meet goes in, not only the aligned ones: a name that keeps its
     * name maps to itself, so that a general rename cannot catch it when the file is reused. */
    size_t n = 0;
    for (size_t j = 0; j < o->nport; j++)
        n += o->nmaps[j];
    const char **port_names = malloc((n ? n : 1) * sizeof *port_names);
    const char **ref_names = malloc((n ? n : 1) * sizeof *ref_names);
    nnp_sbuf b = {0};
    nnp_status st = port_names && ref_names ? NNP_OK : nnp__nomem();
    size_t k = 0;
    for (size_t j = 0; !st && j < o->nport; j++)
        for (size_t m = 0; m < o->nmaps[j]; m++, k++)
            port_names[k] = ref_names[k] = o->maps[j][m].name;
    /* an aligned port record has one mapping: it now maps to its reference partner */
    size_t *first = malloc((o->nport ? o->nport : 1) * sizeof *first);
    bool *split = calloc(o->nport ? o->nport : 1, sizeof *split);
    if (!st && (!first || !split))
        st = nnp__nomem();
    /* the parts go first: they meet the port's names before any rename */
    if (!st)
        st = part_rules(d, ref, split, &b);
    for (size_t j = 0, at = 0; !st && j < o->nport; at += o->nmaps[j], j++)
        first[j] = at;
    /* a port record whose value another of its names carried into a pair holds a reference
     * record's value too: injection can feed it */
    for (size_t j = 0; !st && d->port_value_ref && j < o->nport; j++)
        if (o->nmaps[j] == 1 && d->port_value_ref[j] != SIZE_MAX)
            ref_names[first[j]] = nnp_dump_record(ref, d->port_value_ref[j])->name;
    for (size_t i = 0; !st && i < d->npairs; i++)
        if (d->pairs[i].aligned && !split[d->pairs[i].port])
            ref_names[first[d->pairs[i].port]] = nnp_dump_record(ref, d->pairs[i].ref)->name;
    free(first);
    free(split);
    if (!st)
        st = nnp__align_rules(port_names, ref_names, n, &b);
    if (!st)
        st = adapter_rules(d, ref, &b);
    free(port_names);
    free(ref_names);
    if (!st && !(*text = b.s ? b.s : strdup("")))
        st = nnp__nomem();
    if (st)
        nnp__sbuf_free(&b);
    return st;
}
