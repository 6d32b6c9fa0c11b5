/*
 * report_model.c - builds the report of `nnparity run` from the two diffs: one row per reference
 * record with its standard and injected pairs, the own/inherited label (nnp_attribute), error
 * histograms, per-component statistics, and the verdict in plain language. Every renderer reads
 * only this.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "report.h"

int run_nomem(void)
{
    cli_error("out of memory");
    return EXIT_INTERNAL;
}

void run_num(char *buf, size_t n, double v)
{
    if (isnan(v))
        snprintf(buf, n, "-");
    else if (isinf(v))
        snprintf(buf, n, v > 0 ? "inf" : "-inf");
    else
        snprintf(buf, n, "%.3g", v);
}

void run_hist_label(int bin, char *buf, size_t n)
{
    if (bin == 0)
        snprintf(buf, n, "0");
    else if (bin == 1)
        snprintf(buf, n, "< 1e%d", HIST_LO_EXP);
    else if (bin == HIST_BINS - 2)
        snprintf(buf, n, ">= 1e%d", HIST_LO_EXP + HIST_DECADES);
    else if (bin == HIST_BINS - 1)
        snprintf(buf, n, "not finite");
    else
        snprintf(buf, n, "1e%d .. 1e%d", HIST_LO_EXP + bin - 2, HIST_LO_EXP + bin - 1);
}

void run_headline(const run_report *r, char *buf, size_t n)
{
    if (r->agree && r->precision)
        snprintf(buf, n, "the port agrees with the reference within %s compute noise",
                 r->baseline_precision);
    else
        snprintf(buf, n, "%s", r->agree ? "the port agrees with the reference"
                                        : "the port does not match the reference");
}

void run_row_layer(const run_row *row, char *buf, size_t n)
{
    const nnp_record *r = row->rec;
    if (!*r->module)
        snprintf(buf, n, "%s", r->name);
    else if (r->call)
        snprintf(buf, n, "%s (call %llu)", r->module, (unsigned long long)r->call);
    else
        snprintf(buf, n, "%s", r->module);
}

static bool compared(const nnp_diff_pair *p)
{
    return p && p->verdict != NNP_SHAPE_MISMATCH && p->verdict != NNP_DTYPE_MISMATCH;
}

/* Whether the pair's two records hold the same tensor element for element, so that a pass over
 * both records' data sees what was compared (not so for pairs the rules join or adapt). */
static bool same_layout(const nnp_diff_pair *p, const nnp_dump *ref, const nnp_dump *port)
{
    return compared(p) && p->nparts <= 1 && !p->adapters &&
           nnp_dump_record(ref, p->ref)->nelem == nnp_dump_record(port, p->port)->nelem;
}

static bool fails(const nnp_diff_pair *p)
{
    return p && p->verdict != NNP_PASS && p->verdict != NNP_WARN;
}

/* The decade edges 1e-10 .. 1e2 of the histogram. */
static double edges[HIST_DECADES + 1];

static void init_edges(void)
{
    for (int k = 0; k <= HIST_DECADES; k++)
        edges[k] = pow(10.0, HIST_LO_EXP + k);
}

static int hist_bin(double ref, double port)
{
    double d = fabs(port - ref);
    if (!isfinite(d) || !isfinite(ref) || !isfinite(port))
        return HIST_BINS - 1;
    if (d == 0)
        return 0;
    /* The decade from the binary exponent, with no log10 per element: 2^e <= d < 2^(e+1) puts
     * log10(d) within [e log10(2), (e+1) log10(2)), a span shorter than one, so the decade is k
     * or k + 1, and one comparison with an edge tells which. */
    int e;
    frexp(d, &e);
    int k = (int)floor((e - 1) * 0.30102999566398120);
    if (k + 1 >= HIST_LO_EXP && k + 1 <= HIST_LO_EXP + HIST_DECADES &&
        d >= edges[k + 1 - HIST_LO_EXP])
        k++;
    if (k < HIST_LO_EXP)
        return 1;
    if (k >= HIST_LO_EXP + HIST_DECADES)
        return HIST_BINS - 2;
    return 2 + k - HIST_LO_EXP;
}

/* |port - ref| into log-spaced bins, in one pass over both records in chunks. */
static nnp_status histogram(nnp_dump *ref, nnp_dump *port, const nnp_diff_pair *p, run_hist *h)
{
    enum { CHUNK = 2048 };
    const nnp_record *a = nnp_dump_record(ref, p->ref), *b = nnp_dump_record(port, p->port);
    const void *da, *db;
    nnp_status st = nnp_dump_data(ref, p->ref, &da);
    if (!st)
        st = nnp_dump_data(port, p->port, &db);
    if (st)
        return st;
    double x[CHUNK], y[CHUNK];
    if (edges[0] == 0)
        init_edges();
    size_t sa = nnp_dtype_size(a->dtype), sb = nnp_dtype_size(b->dtype);
    uint64_t n = a->nelem;
    for (uint64_t at = 0; at < n; at += CHUNK) {
        size_t k = n - at < CHUNK ? (size_t)(n - at) : CHUNK;
        nnp_convert_to_f64(a->dtype, (const char *)da + at * sa, k, x);
        nnp_convert_to_f64(b->dtype, (const char *)db + at * sb, k, y);
        for (size_t i = 0; i < k; i++)
            h->bin[hist_bin(x[i], y[i])]++;
    }
    h->done = true;
    nnp_dump_release(ref, p->ref);
    nnp_dump_release(port, p->port);
    return NNP_OK;
}

static void components(run_report *r)
{
    for (int c = 0; c < NNP_COMPONENT_COUNT; c++)
        r->components[c] = (run_component){.kind = (nnp_component_kind)c,
                                           .name = nnp_component_name((nnp_component_kind)c)};
    for (size_t i = 0; i < r->nrows; i++) {
        const run_row *row = &r->rows[i];
        run_component *k = &r->components[row->component];
        k->rows++;
        k->own += row->label == NNP_LABEL_OWN;
        k->inherited += row->label == NNP_LABEL_INHERITED;
        k->std_fail += fails(row->std);
        k->inj_fail += fails(row->inj);
        if (compared(row->std) && row->std->metrics.finite) {
            k->compared++;
            k->std_rel_max = fmax(k->std_rel_max, row->std->metrics.rel_l2);
            k->std_abs_max = fmax(k->std_abs_max, row->std->metrics.max_abs);
        }
        if (compared(row->inj) && row->inj->metrics.finite) {
            k->inj_rel_max = fmax(k->inj_rel_max, row->inj->metrics.rel_l2);
            k->inj_abs_max = fmax(k->inj_abs_max, row->inj->metrics.max_abs);
        }
    }
}

static void say_failures(FILE *o, const run_report *r)
{
    const run_side *ref = &r->side[SIDE_REF], *port = &r->side[SIDE_PORT],
                   *inj = &r->side[SIDE_INJ];
    if (ref->failed)
        fprintf(o, "The reference %s after capturing %zu records: only those are compared. ",
                ref->status, nnp_dump_count(ref->dump));
    if (port->failed) {
        size_t missing = r->missing;
        fprintf(o, "The port %s after capturing %zu records", port->status,
                nnp_dump_count(port->dump));
        if (missing)
            fprintf(o, "; %zu of the reference's records are missing from its capture", missing);
        fprintf(o, ". ");
    }
    if (!inj->dump)
        fprintf(o, "Under injection the port captured nothing (it %s), so an own error cannot be "
                   "told from an inherited one. ", inj->status);
    else if (r->injection_known && !r->injected)
        fprintf(o, "The injection scenario had no effect: none of the port's %llu tapped inputs "
                   "could be given the reference's value%s%s%s, so an own error cannot be told "
                   "from an inherited one. ", (unsigned long long)r->not_injected,
                r->not_injected_why ? " (" : "", r->not_injected_why ? r->not_injected_why : "",
                r->not_injected_why ? ")" : "");
    else if (r->injection_known && r->not_injected)
        fprintf(o, "Under injection %llu of the port's tapped inputs could not be given the "
                   "reference's value%s%s%s. ", (unsigned long long)r->not_injected,
                r->not_injected_why ? " (" : "", r->not_injected_why ? r->not_injected_why : "",
                r->not_injected_why ? ")" : "");
    else if (inj->failed)
        fprintf(o, "Under injection the port %s after capturing %zu records. ", inj->status,
                nnp_dump_count(inj->dump));
    const run_side *base = &r->side[SIDE_BASE], *base_inj = &r->side[SIDE_BASE_INJ];
    if (run_side_used(base) && base->failed)
        fprintf(o, "The baseline %s after capturing %zu records. ", base->status,
                nnp_dump_count(base->dump));
    if (run_side_used(base_inj) && !base_inj->dump)
        fprintf(o, "Under injection the baseline captured nothing (it %s): its standard run is "
                   "the noise floor in both scenarios. ", base_inj->status);
    else if (run_side_used(base_inj) && base_inj->failed)
        fprintf(o, "Under injection the baseline %s after capturing %zu records. ",
                base_inj->status, nnp_dump_count(base_inj->dump));
}

/* Whether a command failed (exited non-zero or was killed). */
static bool run_any_failed(const run_report *r)
{
    for (int s = 0; s < NSIDES; s++)
        if (r->side[s].failed)
            return true;
    return false;
}

const nnp_culprit *run_culprit(const run_report *r)
{
    if (r->base_std)
        return nnp_attribution_culprit(r->attribution);
    return r->std ? nnp_diff_culprit(r->std) : NULL;
}

/* Who makes the error, as the port's records show it (run_culprit). */
static void say_culprit(FILE *o, const run_report *r)
{
    const nnp_culprit *c = run_culprit(r);
    const nnp_dump *port = r->side[SIDE_PORT].dump;
    if (!c)
        return;
    if (c->kind == NNP_CULPRIT_MODULE) {
        /* said only where the port names it otherwise than the reference */
        if (strcmp(c->port_module, c->ref_module) != 0)
            fprintf(o, " The first wrong value is made by the port's %s.", c->port_module);
        return;
    }
    if (c->after < 0)
        return; /* nothing agrees before it: the model's input, said above */
    if (*c->port_module)
        fprintf(o, " The code of the port's %s", c->port_module);
    else
        fprintf(o, " The port's top-level code");
    fprintf(o, " between %s and %s (not a module of its own) makes the error: the values "
               "before it agree.", nnp_dump_record(port, (size_t)c->after)->name,
            nnp_dump_record(port, (size_t)c->before)->name);
}

/* Without a baseline: when the first divergence's port values are bf16 or f16 and its error is
 * within 16 units of that type's rounding (2^-8 for bf16, 2^-11 for f16), a size the type's
 * compute noise reaches in a few layers (a dot product of a few hundred terms alone makes
 * several units), say so, and how to measure it. */
static void say_noise_size(FILE *o, const run_report *r)
{
    if (r->base_std || r->first_divergence < 0)
        return;
    const nnp_diff_pair *p = r->rows[r->first_divergence].std;
    if (!p || p->verdict != NNP_FAIL || p->metrics.nan_new || p->metrics.inf_new)
        return;
    nnp_dtype pd = nnp_dump_record(r->side[SIDE_PORT].dump, p->port)->dtype;
    nnp_dtype rd = nnp_dump_record(r->side[SIDE_REF].dump, p->ref)->dtype;
    double unit = pd == NNP_BF16 ? 0x1p-8 : pd == NNP_F16 ? 0x1p-11 : 0;
    if (!unit || nnp_dtype_size(rd) <= nnp_dtype_size(pd) || !(p->metrics.rel_l2 <= 16 * unit))
        return;
    const char *name = pd == NNP_BF16 ? "bf16" : "f16";
    fprintf(o, " The port's values there are %s and its rel-L2 of %.3g is %.1f units of %s "
               "rounding: %s compute noise reaches that size, so this may be no bug at all "
               "(--baseline %s measures the noise layer by layer).", name, p->metrics.rel_l2,
            p->metrics.rel_l2 / unit, name, name, name);
}

static void say_divergence(FILE *o, const run_report *r)
{
    char a[512], b[512];
    if (r->first_divergence >= 0) {
        const run_row *row = &r->rows[r->first_divergence];
        run_row_layer(row, a, sizeof a);
        if (row->label == NNP_LABEL_OWN) {
            fprintf(o, "%s differs from the reference on its own inputs: its own error; ", a);
            if (r->inherited_after)
                fprintf(o, "the %zu %s after it inherit%s it.", r->inherited_after,
                        cli_plural(r->inherited_after, "layer", "layers"),
                        r->inherited_after == 1 ? "s" : "");
            else
                fprintf(o, "no layer after it inherits it.");
            if (r->other_own >= 0) {
                run_row_layer(&r->rows[r->other_own], b, sizeof b);
                size_t others = r->own_layers - 1;
                if (others == 1)
                    fprintf(o, " 1 other layer has an error of its own too: %s.", b);
                else
                    fprintf(o, " %zu other layers have errors of their own too, the first %s.",
                            others, b);
            }
        } else if (row->label == NNP_LABEL_INHERITED) {
            fprintf(o, "The port first differs at %s (%s), but given the reference's inputs it "
                       "agrees: the error comes from before every captured layer (the model's "
                       "input, or code that is not tapped).", a, row->rec->name);
            if (r->first_own >= 0) {
                run_row_layer(&r->rows[r->first_own], b, sizeof b);
                fprintf(o, " The first layer with an error of its own is %s.", b);
            }
        } else {
            fprintf(o, "The port first differs at %s (%s); the injection run did not capture it, "
                       "so whether the error is its own cannot be told.", a, row->rec->name);
        }
    } else if (r->first_own >= 0) {
        run_row_layer(&r->rows[r->first_own], a, sizeof a);
        fprintf(o, "Every pair agrees in the standard scenario, but %s differs from the reference "
                   "on the reference's own inputs: an error of its own that the standard run "
                   "hides.", a);
    } else if (r->precision) {
        if (run_any_failed(r))
            fprintf(o, "Of what was captured, ");
        else
            fprintf(o, "The port agrees with the reference within %s compute noise: ",
                    r->baseline_precision);
        fprintf(o, "%zu %s differ%s from the reference, each by at most %g times what the "
                   "reference computed in %s differs at the same record (the baseline).",
                r->precision, cli_plural(r->precision, "record", "records"),
                r->precision == 1 ? "s" : "", NNP_PRECISION_FACTOR, r->baseline_precision);
    } else if (!nnp_diff_pair_count(r->std)) {
        fprintf(o, "No reference record has a partner in the port's capture: check the record "
                   "names (--rules, docs/rules.md).");
    } else {
        bool failed = run_any_failed(r);
        size_t npairs = nnp_diff_pair_count(r->std);
        fprintf(o, "%s %zu compared %s within tolerance%s.",
                failed ? "The" : "The port agrees with the reference: all", npairs,
                cli_plural(npairs, "record is", "records are"),
                r->inj ? " in both scenarios" : "");
    }
    say_noise_size(o, r);
    if (r->precision && (r->first_divergence >= 0 || r->first_own >= 0))
        fprintf(o, " %zu other %s differ%s only by %s compute noise (labelled precision).",
                r->precision, cli_plural(r->precision, "record", "records"),
                r->precision == 1 ? "s" : "", r->baseline_precision);
    say_culprit(o, r);
    if (r->order_violation >= 0)
        fprintf(o, " The order differs: the port runs %s earlier than the record before it.",
                r->rows[r->order_violation].rec->name);
}

/* The labels and the layer counts the verdict is worded from: the library's attribution. */
static int attribute(run_report *r)
{
    nnp_attribution *a;
    r->injection_known = nnp_dump_injection(r->side[SIDE_INJ].dump, &r->injected,
                                            &r->not_injected, &r->not_injected_why);
    /* an injection run that injected nothing measured nothing: no label may say own */
    bool measured = !r->injection_known || r->injected > 0;
    nnp_dump *ref = r->side[SIDE_REF].dump;
    const nnp_diff *inj = measured ? r->inj : NULL;
    nnp_status st = r->base_std
                        ? nnp_attribute_baseline(ref, r->side[SIDE_PORT].dump,
                                                 inj ? r->side[SIDE_INJ].dump : NULL, r->std, inj,
                                                 r->base_std, r->base_inj, &a)
                        : nnp_attribute(ref, r->std, inj, &a);
    if (st)
        return cli_fail(st);
    for (size_t i = 0; i < r->nrows; i++) {
        const nnp_attribution_row *row = nnp_attribution_row_at(a, i);
        r->rows[i].label = row->label;
        r->rows[i].ratio = row->ratio;
        r->rows[i].inj_floor_rel = row->inj_floor_rel_l2;
        r->rows[i].inj_floor_abs = row->inj_floor_max_abs;
        if (row->base_std_pair >= 0)
            r->rows[i].base_std = nnp_diff_pair_at(r->base_std, (size_t)row->base_std_pair);
        if (row->base_inj_pair >= 0)
            r->rows[i].base_inj = nnp_diff_pair_at(r->base_inj, (size_t)row->base_inj_pair);
    }
    const nnp_attribution_summary *s = nnp_attribution_summary_of(a);
    r->first_divergence = s->first_divergence;
    r->first_own = s->first_own;
    r->other_own = s->other_own;
    r->inherited_after = s->inherited_after;
    r->own_layers = s->own_layers;
    r->missing = s->labels[NNP_LABEL_MISSING];
    r->precision = s->precision;
    r->beyond_noise = s->labels[NNP_LABEL_OWN] + s->labels[NNP_LABEL_INHERITED] +
                      s->labels[NNP_LABEL_UNKNOWN];
    r->attribution = a;
    return EXIT_AGREE;
}

int run_report_build(run_report *r)
{
    nnp_dump *ref = r->side[SIDE_REF].dump;
    r->nrows = nnp_dump_count(ref);
    r->rows = calloc(r->nrows ? r->nrows : 1, sizeof *r->rows);
    if (!r->rows)
        return run_nomem();
    for (size_t i = 0; i < r->nrows; i++) {
        run_row *row = &r->rows[i];
        row->ref = i;
        row->rec = nnp_dump_record(ref, i);
        row->component = nnp_component_kind_of(r->rules, row->rec->name, row->rec->module_type);
        const char *role = row->rec->role;
        row->input = role[0] == 'i' && role[1] == 'n' && role[2] >= '0' && role[2] <= '9';
    }
    for (size_t i = 0; i < nnp_diff_pair_count(r->std); i++)
        r->rows[nnp_diff_pair_at(r->std, i)->ref].std = nnp_diff_pair_at(r->std, i);
    for (size_t i = 0; r->inj && i < nnp_diff_pair_count(r->inj); i++)
        r->rows[nnp_diff_pair_at(r->inj, i)->ref].inj = nnp_diff_pair_at(r->inj, i);
    int rc = attribute(r);
    if (rc)
        return rc;

    for (size_t i = 0; i < r->nrows; i++) {
        run_row *row = &r->rows[i];
        nnp_status st = NNP_OK;
        if (same_layout(row->std, ref, r->side[SIDE_PORT].dump))
            st = histogram(ref, r->side[SIDE_PORT].dump, row->std, &row->std_hist);
        if (!st && same_layout(row->inj, ref, r->side[SIDE_INJ].dump))
            st = histogram(ref, r->side[SIDE_INJ].dump, row->inj, &row->inj_hist);
        if (st)
            return cli_fail(st);
    }
    int64_t reorder = nnp_diff_order_violation(r->std);
    if (reorder >= 0)
        r->order_violation = (int64_t)nnp_diff_pair_at(r->std, (size_t)reorder)->ref;
    components(r);

    char *text = NULL;
    size_t len = 0;
    FILE *o = open_memstream(&text, &len);
    if (!o)
        return run_nomem();
    say_failures(o, r);
    say_divergence(o, r);
    if (fclose(o) != 0 || !text) {
        free(text);
        return run_nomem();
    }
    r->verdict = text;

    bool failed = run_any_failed(r);
    /* with a baseline, a record within its noise is no divergence */
    bool diverges = r->base_std ? r->beyond_noise > 0
                                : nnp_diff_first_divergence(r->std) >= 0 ||
                                      (r->inj && nnp_diff_first_divergence(r->inj) >= 0);
    r->agree = !failed && nnp_diff_pair_count(r->std) > 0 && !diverges &&
               nnp_diff_order_violation(r->std) < 0 && r->inj;
    r->exit_code = !r->side[SIDE_INJ].dump ? EXIT_BAD_INPUT : r->agree ? EXIT_AGREE : EXIT_FOUND;
    return EXIT_AGREE;
}

void run_report_free(run_report *r)
{
    for (int s = 0; s < NSIDES; s++) {
        run_side *d = &r->side[s];
        free(d->capture);
        free(d->stderr_file);
        free(d->tail);
        nnp_dump_close(d->dump);
    }
    nnp_diff_free(r->std);
    nnp_diff_free(r->inj);
    nnp_diff_free(r->base_std);
    nnp_diff_free(r->base_inj);
    nnp_attribution_free(r->attribution);
    nnp_rules_free(r->aligned_rules);
    free(r->aligned_rules_path);
    free(r->not_injected_why);
    free(r->rows);
    free(r->verdict);
    free(r->html_path);
    free(r->repro_file);
    free(r->repro_readme);
    free(r->repro_layer);
}
