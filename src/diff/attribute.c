/*
 * attribute.c - own error or inherited: each reference record's label from the standard diff and
 * the injected diff (the port fed the reference's inputs), and the layer counts the verdict of
 * `nnparity run` is worded from. A library call, so that a program holding its own two diffs gets
 * the same labels as the report. With a baseline (the reference run in the port's precision) an
 * error no larger than the baseline's at the same record is labelled precision.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "diff/diff.h"

struct nnp_attribution {
    nnp_attribution_row *rows;
    size_t n;
    nnp_attribution_summary summary;
    nnp_culprit culprit; /* with a baseline: who makes the first divergence beyond the noise */
    char *culprit_module;
};

const char *nnp_label_name(nnp_label label)
{
    static const char *const names[NNP_LABEL_COUNT] = {
        [NNP_LABEL_OK] = "ok",           [NNP_LABEL_OWN] = "own",
        [NNP_LABEL_INHERITED] = "inherited", [NNP_LABEL_UNKNOWN] = "unknown",
        [NNP_LABEL_MISSING] = "missing"};
    if (label == NNP_LABEL_PRECISION)
        return "precision";
    return (unsigned)label < NNP_LABEL_COUNT ? names[label] : "?";
}

static const nnp_diff_pair *pair_of(const nnp_diff *d, int64_t i)
{
    return i < 0 ? NULL : &d->pairs[i];
}

/* The diffs a row points into: the port's in both scenarios, and the baseline's. */
enum { SCEN_STD, SCEN_INJ, SCEN_BASE_STD, SCEN_BASE_INJ };

static int64_t *row_pair(nnp_attribution_row *row, int scenario)
{
    switch (scenario) {
    case SCEN_STD: return &row->std_pair;
    case SCEN_INJ: return &row->inj_pair;
    case SCEN_BASE_STD: return &row->base_std_pair;
    default: return &row->base_inj_pair;
    }
}

/* Point each row at its pair in `d`; a pair that names a record the reference does not hold
 * means the diff was made against another dump. */
static nnp_status index_pairs(nnp_attribution *a, const nnp_diff *d, int scenario)
{
    static const char *const what[] = {"standard", "injected", "baseline's standard",
                                       "baseline's injected"};
    for (size_t i = 0; d && i < d->npairs; i++) {
        if (d->pairs[i].ref >= a->n)
            return nnp__fail(NNP_ERR_ARG, "nnp_attribute: pair %zu of the %s diff names "
                             "reference record %zu, and the reference holds %zu", i,
                             what[scenario], d->pairs[i].ref, a->n);
        nnp_attribution_row *row = &a->rows[d->pairs[i].ref];
        int64_t *at = row_pair(row, scenario);
        /* a record paired several times (the parts of a fused one) is as wrong as its first
         * failing pair */
        if (*at < 0 || (!nnp__pair_fails(&d->pairs[*at]) && nnp__pair_fails(&d->pairs[i])))
            *at = (int64_t)i;
    }
    return NNP_OK;
}

static void label_row(nnp_attribution_row *row, const nnp_diff_pair *std, const nnp_diff_pair *inj)
{
    /* an error that stays on the reference's inputs is the layer's own */
    row->label = nnp__pair_fails(inj)    ? NNP_LABEL_OWN
                 : !std                  ? NNP_LABEL_MISSING
                 : !nnp__pair_fails(std) ? NNP_LABEL_OK
                 : inj                   ? NNP_LABEL_INHERITED
                                         : NNP_LABEL_UNKNOWN;
    row->ratio = NAN;
    if (nnp__pair_compared(std) && nnp__pair_compared(inj)) {
        double s = std->metrics.rel_l2, j = inj->metrics.rel_l2;
        row->ratio = s > 0 ? j / s : j > 0 ? INFINITY : NAN;
    }
}

/* The floor of a baseline pair itself. */
static nnp__floor floor_of(const nnp_diff_pair *b)
{
    if (!nnp__pair_compared(b))
        return (nnp__floor){0, 0, false};
    return (nnp__floor){b->metrics.rel_l2, b->metrics.max_abs, true};
}

/* Whether the port's pair `p` differs no more than the baseline does at the same record: `b`
 * is the baseline's pair there (its NaN and infinities), `f` the floor. Compared, no NaN or
 * infinity the baseline does not also introduce, rel-L2 and max-abs within
 * NNP_PRECISION_FACTOR of the floor's. Both measures, because a wrong channel among many moves
 * the rel-L2 of the whole tensor little but its max-abs much. */
static bool within_noise(const nnp_diff_pair *p, const nnp_diff_pair *b, nnp__floor f)
{
    if (!nnp__pair_compared(p) || !nnp__pair_compared(b) || !f.known)
        return false;
    const nnp_metrics *m = &p->metrics, *n = &b->metrics;
    if (m->nan_new > n->nan_new || m->inf_new > n->inf_new)
        return false;
    return isfinite(m->rel_l2) && isfinite(f.rel_l2) &&
           m->rel_l2 <= NNP_PRECISION_FACTOR * f.rel_l2 &&
           m->max_abs <= NNP_PRECISION_FACTOR * f.max_abs;
}

/* Own, inherited or unknown, but each failing pair within the baseline's noise: the standard
 * one within the baseline's accumulated error there, the injected one within the floor of the
 * span its port module computes (noise_floor.c). */
static bool precision_only(const nnp_diff_pair *std, const nnp_diff_pair *inj,
                           const nnp_diff_pair *base_std, const nnp_diff_pair *base_inj,
                           nnp__floor inj_floor)
{
    if (!nnp__pair_fails(std) && !nnp__pair_fails(inj))
        return false;
    return (!nnp__pair_fails(std) || within_noise(std, base_std, floor_of(base_std))) &&
           (!nnp__pair_fails(inj) || within_noise(inj, base_inj, inj_floor));
}

/* ---- layers: the records of one module call ---- */

/* The layer key of a record: module and call, or the record's name when there is no module. */
static char *layer_key(const nnp_record *r)
{
    const char *base = *r->module ? r->module : r->name;
    size_t n = strlen(base) + 32;
    char *k = malloc(n);
    if (k)
        snprintf(k, n, "%s\x1f%llu", base, (unsigned long long)(*r->module ? r->call : 0));
    return k;
}

typedef struct {
    char *key;
    size_t row;
} keyed;

static int by_key(const void *a, const void *b)
{
    const keyed *x = a, *y = b;
    int c = strcmp(x->key, y->key);
    return c ? c : x->row < y->row ? -1 : x->row > y->row;
}

/* Count layers rather than records: a layer's input and output are one layer. Fills own_layers,
 * inherited_after and other_own of the summary, whose first_divergence is set. */
static nnp_status count_layers(const nnp_dump *ref, nnp_attribution *a)
{
    nnp_attribution_summary *s = &a->summary;
    const nnp_attribution_row *rows = a->rows;
    size_t n = a->n;
    int64_t fd = s->first_divergence;
    s->other_own = -1;
    keyed *k = calloc(n ? n : 1, sizeof *k);
    if (!k)
        return nnp__nomem();
    nnp_status st = NNP_OK;
    for (size_t i = 0; i < n && !st; i++) {
        k[i].row = i;
        if (!(k[i].key = layer_key(nnp_dump_record(ref, i))))
            st = nnp__nomem();
    }
    /* where the next own error starts: what follows it inherits that one */
    size_t until = n;
    if (!st && fd >= 0) {
        const char *fd_key = k[fd].key;
        for (size_t i = (size_t)fd + 1; i < n && until == n; i++)
            if (rows[i].label == NNP_LABEL_OWN && strcmp(k[i].key, fd_key) != 0)
                until = i;
    }
    if (!st) {
        qsort(k, n, sizeof *k, by_key);
        const char *fd_key = NULL;
        for (size_t i = 0; i < n; i++)
            if ((int64_t)k[i].row == fd)
                fd_key = k[i].key;
        for (size_t i = 0; i < n;) {
            size_t j = i;
            bool own = false, inherited_after = false;
            int64_t first_own = -1;
            for (; j < n && strcmp(k[j].key, k[i].key) == 0; j++) {
                const nnp_attribution_row *row = &rows[k[j].row];
                if (row->label == NNP_LABEL_OWN) {
                    own = true;
                    if (first_own < 0)
                        first_own = (int64_t)k[j].row;
                }
                if (row->label == NNP_LABEL_INHERITED && (int64_t)k[j].row > fd &&
                    k[j].row < until)
                    inherited_after = true;
            }
            bool is_fd = fd_key && strcmp(fd_key, k[i].key) == 0;
            s->own_layers += own;
            if (fd >= 0 && inherited_after && !own && !is_fd)
                s->inherited_after++;
            if (own && !is_fd && (s->other_own < 0 || first_own < s->other_own))
                s->other_own = first_own;
            i = j;
        }
    }
    for (size_t i = 0; i < n; i++)
        free(k[i].key);
    free(k);
    return st;
}

/* Who makes the first divergence beyond the noise: the standard diff's culprit, reckoned with
 * the pairs of precision records as agreeing. */
static nnp_status culprit_beyond_noise(nnp_attribution *a, const nnp_dump *ref,
                                       const nnp_dump *port, const nnp_diff *std,
                                       const nnp_diff *base_std)
{
    a->culprit = (nnp_culprit){NNP_CULPRIT_NONE, NULL, NULL, -1, -1};
    int64_t fd = a->summary.first_divergence;
    if (fd < 0 || a->rows[fd].std_pair < 0)
        return NNP_OK;
    bool *agrees = malloc((std->npairs ? std->npairs : 1) * sizeof *agrees);
    if (!agrees)
        return nnp__nomem();
    /* pair by pair: one part of a fused record may be noise while another is the bug */
    for (size_t i = 0; i < std->npairs; i++) {
        const nnp_diff_pair *p = &std->pairs[i];
        const nnp_diff_pair *b = pair_of(base_std, a->rows[p->ref].base_std_pair);
        agrees[i] = !nnp__pair_fails(p) || a->rows[p->ref].label == NNP_LABEL_PRECISION ||
                    within_noise(p, b, floor_of(b));
    }
    agrees[a->rows[fd].std_pair] = false; /* the divergence itself, whatever its pair says */
    nnp_status st = nnp__culprit_of(std, ref, port, (size_t)a->rows[fd].std_pair, agrees,
                                    &a->culprit, &a->culprit_module);
    free(agrees);
    return st;
}

static nnp_status attribute(const nnp_dump *ref, const nnp_dump *port, const nnp_dump *injected,
                            const nnp_diff *std, const nnp_diff *inj, const nnp_diff *base_std,
                            const nnp_diff *base_inj, nnp_attribution **out)
{
    if (!out)
        return nnp__fail(NNP_ERR_ARG, "nnp_attribute: no output");
    *out = NULL;
    if (!ref || !std)
        return nnp__fail(NNP_ERR_ARG, "nnp_attribute: missing reference or standard diff");
    nnp_attribution *a = calloc(1, sizeof *a);
    if (!a)
        return nnp__nomem();
    a->n = nnp_dump_count(ref);
    a->rows = calloc(a->n ? a->n : 1, sizeof *a->rows);
    if (!a->rows) {
        free(a);
        return nnp__nomem();
    }
    for (size_t i = 0; i < a->n; i++)
        a->rows[i] = (nnp_attribution_row){.ref = i, .std_pair = -1, .inj_pair = -1,
                                           .base_std_pair = -1, .base_inj_pair = -1,
                                           .inj_floor_rel_l2 = NAN, .inj_floor_max_abs = NAN};
    const nnp_diff *diffs[] = {std, inj, base_std, base_inj};
    nnp_status st = NNP_OK;
    for (int k = 0; k < 4 && !st; k++)
        st = index_pairs(a, diffs[k], k);
    /* without an injected baseline, the standard one is the floor in both scenarios */
    const nnp_diff *floor_inj = base_inj ? base_inj : base_std;
    nnp__floor *floors = NULL;
    if (!st && base_inj && inj && injected) {
        if (!(floors = malloc((a->n ? a->n : 1) * sizeof *floors)))
            st = nnp__nomem();
        else
            st = nnp__injected_floors(port, std, injected, inj, base_inj, a->rows, a->n,
                                      floors);
    }
    nnp_attribution_summary *s = &a->summary;
    s->first_divergence = -1;
    s->first_own = -1;
    for (size_t i = 0; !st && i < a->n; i++) {
        nnp_attribution_row *row = &a->rows[i];
        const nnp_diff_pair *sp = pair_of(std, row->std_pair),
                            *ip = inj ? pair_of(inj, row->inj_pair) : NULL;
        label_row(row, sp, ip);
        const nnp_diff_pair *bi =
            pair_of(floor_inj, base_inj ? row->base_inj_pair : row->base_std_pair);
        nnp__floor fl = floors ? floors[i] : floor_of(bi);
        if (base_std && fl.known) {
            row->inj_floor_rel_l2 = fl.rel_l2;
            row->inj_floor_max_abs = fl.max_abs;
        }
        if (base_std && (row->label == NNP_LABEL_OWN || row->label == NNP_LABEL_INHERITED ||
                         row->label == NNP_LABEL_UNKNOWN) &&
            precision_only(sp, ip, pair_of(base_std, row->base_std_pair), bi, fl))
            row->label = NNP_LABEL_PRECISION;
        if (row->label == NNP_LABEL_PRECISION)
            s->precision++;
        else
            s->labels[row->label]++;
        if (row->label == NNP_LABEL_OWN && s->first_own < 0)
            s->first_own = (int64_t)i;
        /* with a baseline, the first divergence is the first beyond its noise */
        if (base_std && s->first_divergence < 0 && nnp__pair_fails(sp) &&
            row->label != NNP_LABEL_PRECISION)
            s->first_divergence = (int64_t)i;
    }
    if (!st && !base_std && std->first_divergence >= 0)
        s->first_divergence = (int64_t)std->pairs[std->first_divergence].ref;
    if (!st)
        st = count_layers(ref, a);
    if (!st && base_std && port)
        st = culprit_beyond_noise(a, ref, port, std, base_std);
    free(floors);
    if (st) {
        nnp_attribution_free(a);
        return st;
    }
    *out = a;
    return NNP_OK;
}

nnp_status nnp_attribute(const nnp_dump *ref, const nnp_diff *std, const nnp_diff *inj,
                         nnp_attribution **out)
{
    return attribute(ref, NULL, NULL, std, inj, NULL, NULL, out);
}

nnp_status nnp_attribute_baseline(const nnp_dump *ref, const nnp_dump *port,
                                  const nnp_dump *injected, const nnp_diff *std,
                                  const nnp_diff *inj, const nnp_diff *base_std,
                                  const nnp_diff *base_inj, nnp_attribution **out)
{
    const char *missing = !base_std ? "baseline diff" : !port ? "port dump"
                          : inj && !injected ? "injected dump" : NULL;
    if (missing) {
        if (out)
            *out = NULL;
        return nnp__fail(NNP_ERR_ARG, "nnp_attribute_baseline: no %s", missing);
    }
    return attribute(ref, port, injected, std, inj, base_std, base_inj, out);
}

const nnp_culprit *nnp_attribution_culprit(const nnp_attribution *a)
{
    return a && a->culprit.kind != NNP_CULPRIT_NONE ? &a->culprit : NULL;
}

size_t nnp_attribution_count(const nnp_attribution *a)
{
    return a ? a->n : 0;
}

const nnp_attribution_row *nnp_attribution_row_at(const nnp_attribution *a, size_t i)
{
    return a && i < a->n ? &a->rows[i] : NULL;
}

const nnp_attribution_summary *nnp_attribution_summary_of(const nnp_attribution *a)
{
    return a ? &a->summary : NULL;
}

void nnp_attribution_free(nnp_attribution *a)
{
    if (!a)
        return;
    free(a->rows);
    free(a->culprit_module);
    free(a);
}
