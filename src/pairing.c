/*
 * pairing.c - which port record(s) each reference record is compared with, and how: the names
 * the rules give the port's records, the parts a concat rule joins, automatic alignment for what
 * names leave unmatched, and the shape each side is compared at once the adapters have run.
 *
 * Shapes are worked out before any data is read (the adapters run in shape-only mode), so
 * mismatches are known up front; the data of an adapted pair is made when it is compared
 * (nnp__pair_tensors), one pair at a time, and freed right after.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

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

typedef struct {
    const char *name;
    size_t port;
    const nnp_mapping *map;
    bool used;
} entry;

static int entry_order(const void *a, const void *b)
{
    const entry *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    if (c)
        return c;
    if (x->map->part != y->map->part)
        return x->map->part < y->map->part ? -1 : 1;
    return x->port < y->port ? -1 : x->port > y->port;
}

/* The first entry named `name`, or n. */
static size_t lower_bound(const entry *e, size_t n, const char *name)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(e[mid].name, name) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Pick the port entries for one reference name: a whole record if one is left, else one entry for
 * every part of a join. Returns how many (0: none), their indices in pick[]. */
static uint32_t pick_entries(entry *e, size_t n, size_t at, const char *name, size_t *pick)
{
    size_t end = at;
    while (end < n && strcmp(e[end].name, name) == 0)
        end++;
    for (size_t i = at; i < end; i++)
        if (!e[i].used && e[i].map->nparts == 0) {
            pick[0] = i;
            return 1;
        }
    uint32_t nparts = 0;
    for (size_t i = at; i < end && !nparts; i++)
        if (!e[i].used)
            nparts = e[i].map->nparts;
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
    if (adapted(p, maps)) {
        nnp_sbuf text = {0};
        /* the first part's adapters stand for all: the parts come from one rules chain */
        for (size_t i = 0; i < maps[0]->nops; i++) {
            if (text.len)
                nnp__sbuf_puts(&text, "; ");
            nnp__op_describe(&text, &maps[0]->ops[i]);
        }
        if (p->nparts > 1)
            nnp__sbuf_printf(&text, "%sconcat %u parts on axis %lld", text.len ? "; " : "",
                             p->nparts, (long long)maps[0]->join_axis);
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

/* Pairs made by name, in the reference's order; what is left goes to alignment. */
static nnp_status pair_by_name(owned *o, nnp_dump *ref, const bool *ref_ignored, entry *e,
                               size_t ne, nnp_diff *d)
{
    size_t nref = nnp_dump_count(ref), pick[64];
    for (size_t i = 0; i < nref; i++) {
        if (ref_ignored[i])
            continue;
        const char *name = nnp_dump_record(ref, i)->name;
        size_t at = lower_bound(e, ne, name);
        uint32_t n = pick_entries(e, ne, at, name, pick);
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

static void align_item(const nnp_record *r, const char *name, nnp__align_item *it)
{
    *it = (nnp__align_item){name, r->role, r->ndim, r->shape, r->dtype};
}

/* Pair what names left unmatched by execution order, signatures and name similarity. Only port
 * records that map to one whole reference record take part. */
static nnp_status pair_by_alignment(owned *o, nnp_dump *ref, nnp_dump *port, const bool *ref_used,
                                    const bool *port_used, nnp_diff *d)
{
    size_t nref = nnp_dump_count(ref), nport = nnp_dump_count(port), nr = 0, np = 0;
    nnp__align_item *ri = malloc((nref ? nref : 1) * sizeof *ri);
    nnp__align_item *pi = malloc((nport ? nport : 1) * sizeof *pi);
    size_t *rmap = malloc((nref ? nref : 1) * sizeof *rmap);
    size_t *pmap = malloc((nport ? nport : 1) * sizeof *pmap);
    int64_t *to = malloc((nport ? nport : 1) * sizeof *to);
    nnp_status st = ri && pi && rmap && pmap && to ? NNP_OK : nnp__nomem();
    for (size_t i = 0; !st && i < nref; i++)
        if (!ref_used[i]) {
            const nnp_record *r = nnp_dump_record(ref, i);
            align_item(r, r->name, &ri[nr]);
            rmap[nr++] = i;
        }
    for (size_t j = 0; !st && j < nport; j++)
        if (!port_used[j] && o->nmaps[j] == 1 && o->maps[j][0].nparts == 0) {
            align_item(nnp_dump_record(port, j), o->maps[j][0].name, &pi[np]);
            pmap[np++] = j;
        }
    if (!st && nr && np)
        st = nnp__align(ri, nr, pi, np, to, NULL);
    for (size_t j = 0; !st && nr && j < np; j++) {
        if (to[j] < 0)
            continue;
        const nnp_mapping **maps = arena_alloc(o, sizeof *maps);
        size_t *parts = arena_alloc(o, sizeof *parts);
        if (!maps || !parts) {
            st = nnp__nomem();
            break;
        }
        maps[0] = &o->maps[pmap[j]][0];
        parts[0] = pmap[j];
        nnp_diff_pair *p = &d->pairs[d->npairs];
        p->ref = rmap[to[j]];
        p->port = pmap[j];
        p->parts = parts;
        p->nparts = 1;
        p->aligned = true;
        o->pair_maps[d->npairs++] = maps;
        d->naligned++;
    }
    free(ri);
    free(pi);
    free(rmap);
    free(pmap);
    free(to);
    return st;
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

static nnp_status map_port_names(owned *o, nnp_dump *port, const nnp_rules *rules, entry **out,
                                 size_t *nentries)
{
    size_t ne = 0;
    for (size_t i = 0; i < o->nport; i++) {
        nnp_status st = nnp__rules_apply(rules, nnp_dump_record(port, i)->name, &o->maps[i],
                                         &o->nmaps[i]);
        if (st)
            return st;
        ne += o->nmaps[i];
    }
    entry *e = malloc((ne ? ne : 1) * sizeof *e);
    if (!e)
        return nnp__nomem();
    size_t k = 0;
    for (size_t i = 0; i < o->nport; i++)
        for (size_t j = 0; j < o->nmaps[i]; j++)
            e[k++] = (entry){o->maps[i][j].name, i, &o->maps[i][j], false};
    qsort(e, ne, sizeof *e, entry_order);
    *out = e;
    *nentries = ne;
    return NNP_OK;
}

nnp_status nnp__pair_records(nnp_dump *ref, nnp_dump *port, const nnp_diff_options *opts,
                             nnp_diff *d)
{
    size_t nref = nnp_dump_count(ref), nport = nnp_dump_count(port), ne = 0;
    owned *o = calloc(1, sizeof *o);
    if (!o)
        return nnp__nomem();
    d->owned = o;
    o->nport = nport;
    o->maps = calloc(nport ? nport : 1, sizeof *o->maps);
    o->nmaps = calloc(nport ? nport : 1, sizeof *o->nmaps);
    o->pair_maps = calloc(nref ? nref : 1, sizeof *o->pair_maps);
    d->pairs = calloc(nref ? nref : 1, sizeof *d->pairs);
    d->unmatched_ref = calloc(nref ? nref : 1, sizeof *d->unmatched_ref);
    d->unmatched_port = calloc(nport ? nport : 1, sizeof *d->unmatched_port);
    bool *ref_used = calloc(nref ? nref : 1, sizeof *ref_used);
    bool *port_used = calloc(nport ? nport : 1, sizeof *port_used);
    entry *e = NULL;
    nnp_status st = o->maps && o->nmaps && o->pair_maps && d->pairs && d->unmatched_ref &&
                    d->unmatched_port && ref_used && port_used ? NNP_OK : nnp__nomem();
    if (!st)
        st = map_port_names(o, port, opts->rules, &e, &ne);
    /* reference records a `ref ignore` rule drops count as used: not paired, not listed */
    for (size_t i = 0; !st && i < nref; i++)
        ref_used[i] = nnp__rules_ref_ignored(opts->rules, nnp_dump_record(ref, i)->name);
    if (!st)
        st = pair_by_name(o, ref, ref_used, e, ne, d);
    for (size_t i = 0; !st && i < d->npairs; i++) {
        ref_used[d->pairs[i].ref] = true;
        for (uint32_t k = 0; k < d->pairs[i].nparts; k++)
            port_used[d->pairs[i].parts[k]] = true;
    }
    size_t named = d->npairs;
    if (!st && !opts->no_align && named < nref && named < nport)
        st = pair_by_alignment(o, ref, port, ref_used, port_used, d);
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
    free(e);
    free(ref_used);
    free(port_used);
    return st;
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
    if (!st && !first)
        st = nnp__nomem();
    for (size_t j = 0, at = 0; !st && j < o->nport; at += o->nmaps[j], j++)
        first[j] = at;
    for (size_t i = 0; !st && i < d->npairs; i++)
        if (d->pairs[i].aligned)
            ref_names[first[d->pairs[i].port]] = nnp_dump_record(ref, d->pairs[i].ref)->name;
    free(first);
    if (!st)
        st = nnp__align_rules(port_names, ref_names, n, &b);
    free(port_names);
    free(ref_names);
    if (!st && !(*text = b.s ? b.s : strdup("")))
        st = nnp__nomem();
    if (st)
        nnp__sbuf_free(&b);
    return st;
}
