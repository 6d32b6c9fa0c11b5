/*
 * attribute.c - own error or inherited: each reference record's label from the standard diff and
 * the injected diff (the port fed the reference's inputs), and the layer counts the verdict of
 * `nnparity run` is worded from. A library call, so that a program holding its own two diffs gets
 * the same labels as the report.
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
};

const char *nnp_label_name(nnp_label label)
{
    static const char *const names[NNP_LABEL_COUNT] = {
        [NNP_LABEL_OK] = "ok",           [NNP_LABEL_OWN] = "own",
        [NNP_LABEL_INHERITED] = "inherited", [NNP_LABEL_UNKNOWN] = "unknown",
        [NNP_LABEL_MISSING] = "missing"};
    return (unsigned)label < NNP_LABEL_COUNT ? names[label] : "?";
}

/* Compared: neither a shape nor a dtype mismatch. */
static bool compared(const nnp_diff_pair *p)
{
    return p && p->verdict != NNP_SHAPE_MISMATCH && p->verdict != NNP_DTYPE_MISMATCH;
}

static bool fails(const nnp_diff_pair *p)
{
    return p && p->verdict != NNP_PASS && p->verdict != NNP_WARN;
}

static const nnp_diff_pair *pair_of(const nnp_diff *d, int64_t i)
{
    return i < 0 ? NULL : &d->pairs[i];
}

/* Point each row at its pair in `d` (std: false, inj: true); a pair that names a record the
 * reference does not hold means the diff was made against another dump. */
static nnp_status index_pairs(nnp_attribution *a, const nnp_diff *d, bool inj)
{
    for (size_t i = 0; d && i < d->npairs; i++) {
        if (d->pairs[i].ref >= a->n)
            return nnp__fail(NNP_ERR_ARG, "nnp_attribute: pair %zu of the %s diff names "
                             "reference record %zu, and the reference holds %zu", i,
                             inj ? "injected" : "standard", d->pairs[i].ref, a->n);
        nnp_attribution_row *row = &a->rows[d->pairs[i].ref];
        int64_t *at = inj ? &row->inj_pair : &row->std_pair;
        /* a record paired several times (the parts of a fused one) is as wrong as its first
         * failing pair */
        if (*at < 0 || (!fails(&d->pairs[*at]) && fails(&d->pairs[i])))
            *at = (int64_t)i;
    }
    return NNP_OK;
}

static void label_row(nnp_attribution_row *row, const nnp_diff_pair *std, const nnp_diff_pair *inj)
{
    /* an error that stays on the reference's inputs is the layer's own */
    row->label = fails(inj)    ? NNP_LABEL_OWN
                 : !std        ? NNP_LABEL_MISSING
                 : !fails(std) ? NNP_LABEL_OK
                 : inj         ? NNP_LABEL_INHERITED
                               : NNP_LABEL_UNKNOWN;
    row->ratio = NAN;
    if (compared(std) && compared(inj)) {
        double s = std->metrics.rel_l2, j = inj->metrics.rel_l2;
        row->ratio = s > 0 ? j / s : j > 0 ? INFINITY : NAN;
    }
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

nnp_status nnp_attribute(const nnp_dump *ref, const nnp_diff *std, const nnp_diff *inj,
                         nnp_attribution **out)
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
        a->rows[i] = (nnp_attribution_row){.ref = i, .std_pair = -1, .inj_pair = -1};
    nnp_status st = index_pairs(a, std, false);
    if (!st)
        st = index_pairs(a, inj, true);
    nnp_attribution_summary *s = &a->summary;
    s->first_divergence = -1;
    s->first_own = -1;
    for (size_t i = 0; !st && i < a->n; i++) {
        nnp_attribution_row *row = &a->rows[i];
        label_row(row, pair_of(std, row->std_pair), inj ? pair_of(inj, row->inj_pair) : NULL);
        s->labels[row->label]++;
        if (row->label == NNP_LABEL_OWN && s->first_own < 0)
            s->first_own = (int64_t)i;
    }
    if (!st && std->first_divergence >= 0)
        s->first_divergence = (int64_t)std->pairs[std->first_divergence].ref;
    if (!st)
        st = count_layers(ref, a);
    if (st) {
        nnp_attribution_free(a);
        return st;
    }
    *out = a;
    return NNP_OK;
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
    free(a);
}
