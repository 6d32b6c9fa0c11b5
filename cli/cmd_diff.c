/*
 * cmd_diff.c - `nnparity diff REF PORT`: does the port agree with the reference, and if not,
 * where does it start to diverge and by how much.
 */
#include <dlfcn.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "report/json_out.h"
#include "report/explain_format.h"
#include "report/pair_format.h"

static const char diff_usage[] =
    "usage: nnparity diff [options] REF PORT\n"
    "\n"
    "Pair the port's records with the reference's by name (after --rules), then what is left by\n"
    "automatic alignment (execution order, shape, name similarity); compare every pair in one\n"
    "pass, and report the verdict, the first divergence in execution order, the worst pairs,\n"
    "the per-pair table, unmatched records and whether both ran in the same order. Records are\n"
    "named by their seq in the reference, from 0, as `nnparity ls` lists them.\n"
    "\n"
    "  --rules FILE     map the port's names onto the reference's and adapt their layouts\n"
    "                   (docs/rules.md)\n"
    "  --no-align       do not pair what names leave unmatched by automatic alignment\n"
    "  --atol X         absolute tolerance for every pair (default: by dtype, docs/diff.md)\n"
    "  --rtol X         relative tolerance for every pair (default: by dtype)\n"
    "  --all            list every pair, not only those that are not a pass\n"
    "  -j, --threads N  threads (default: one per CPU; with --mpi, per process)\n"
    "  --mpi            share the comparing among the processes of an MPI job\n"
    "                   (mpirun -np N / srun nnparity diff --mpi ...): process 0 writes the\n"
    "                   report, the same one a single process writes (docs/scale.md)\n"
    "output\n"
    "  --json           the report as JSON on stdout instead of text (schema nnparity.diff/1)\n"
    "  --json-file FILE also write the JSON report to FILE\n"
    "  --markdown FILE  also write a short Markdown report (fits a pull request comment)\n"
    "  --emit-rules FILE  write the rules (--rules' and the aligned pairs' renames) that pair\n"
    "                   the same records by name: review, edit and reuse them\n"
    "  --force          replace FILEs that nnparity did not write (by default only its own\n"
    "                   reports are replaced; docs/cli.md)\n"
    "  --width N        lay the text out for N columns (default: the terminal's width, 80\n"
    "                   when stdout is not a terminal)\n"
    "  -h               this help\n"
    "\n"
    "Exit codes: 0 every pair within tolerance and the same order, 1 a divergence or a reordering,\n"
    "2 bad usage or input, 3 internal error.\n"
    "\n"
    "examples:\n"
    "  nnparity diff ref.safetensors port.safetensors\n"
    "  nnparity diff --rules port.rules --markdown report.md ref.safetensors port.safetensors\n"
    "  nnparity diff --json ref.safetensors port.safetensors | jq .first_divergence_seq\n";

static void num(char *buf, size_t n, double v)
{
    if (isnan(v))
        snprintf(buf, n, "-");
    else if (isinf(v))
        snprintf(buf, n, v > 0 ? "inf" : "-inf");
    else
        snprintf(buf, n, "%.3g", v);
}

/* Verdicts in colour, only on a terminal and unless NO_COLOR is set (no-color.org). */
static bool use_colour;

static const char *verdict_text(nnp_verdict v, char *buf, size_t n)
{
    static const char *const colour[] = {"32", "33", "31", "31", "31"};
    if (!use_colour)
        return nnp_verdict_name(v);
    snprintf(buf, n, "\033[%sm%-5s\033[0m", colour[v], nnp_verdict_name(v));
    return buf;
}

static void print_pair_details(const nnp_dump *ref, const nnp_dump *port, const nnp_diff_pair *p)
{
    (void)ref;
    char a[256], b[256];
    if (p->aligned || p->nparts > 1) {
        printf("  port record%s: %s", p->nparts > 1 ? "s" : "",
               cli_text(nnp_dump_record(port, p->parts[0])->name));
        for (uint32_t k = 1; k < p->nparts; k++)
            printf(", %s", cli_text(nnp_dump_record(port, p->parts[k])->name));
        if (p->aligned)
            printf(" (paired by %s, confidence %.2f)\n",
                   p->evidence == NNP_EVIDENCE_VALUE_EXACT       ? "equal bytes"
                   : p->evidence == NNP_EVIDENCE_VALUE           ? "values"
                   : p->evidence == NNP_EVIDENCE_VALUE_LAST_ROW  ? "values of the last row"
                   : p->evidence == NNP_EVIDENCE_STRUCTURE_LAST_ROW
                       ? "structure, one row against the last"
                   : p->evidence == NNP_EVIDENCE_VALUE_PART ? "values of a part of a fused record"
                   : p->evidence == NNP_EVIDENCE_STRUCTURE_PART
                       ? "structure, a part of a fused record whose other parts agree"
                   : p->evidence == NNP_EVIDENCE_DATAFLOW
                       ? "dataflow, what the counterpart reads or makes"
                   : p->evidence == NNP_EVIDENCE_VALUE_TRANSPOSED
                       ? "values, with the axes in another order"
                   : p->evidence == NNP_EVIDENCE_STRUCTURE_TRANSPOSED
                       ? "structure, with the axes in another order"
                       : "structure",
                   p->confidence);
        else
            printf("\n");
    }
    if (p->adapters)
        printf("  adapted: %s\n", cli_text(p->adapters));
    if (p->problem) {
        printf("  not compared: %s\n", cli_text(p->problem));
        return;
    }
    if (p->verdict == NNP_SHAPE_MISMATCH || p->verdict == NNP_DTYPE_MISMATCH) {
        cli_format_dims(a, sizeof a, p->ref_ndim, p->ref_shape);
        cli_format_dims(b, sizeof b, p->port_ndim, p->port_shape);
        printf("  reference %s %s, port %s %s%s: not compared\n", nnp_dtype_name(p->ref_dtype),
               a, nnp_dtype_name(p->port_dtype), b, p->adapters ? " (adapted)" : "");
        return;
    }
    const nnp_metrics *m = &p->metrics;
    char v[6][32];
    /* a NaN or Inf the port made is the finding; the figures below are of the finite pairs */
    bool made = format_nonfinite_new(b, sizeof b, m);
    if (made)
        printf("  %s\n", b);
    format_index(a, sizeof a, p, m->max_index);
    num(v[0], sizeof v[0], m->max_abs);
    printf("  %smax-abs %s at %s: reference %.7g, port %.7g\n",
           made ? "finite elements: " : "", v[0], a, m->ref_at_max, m->port_at_max);
    num(v[1], sizeof v[1], m->rel_l2);
    num(v[2], sizeof v[2], m->mse);
    snprintf(v[3], sizeof v[3], "%.6f", m->cosine);
    snprintf(v[4], sizeof v[4], "%.6f", m->pcc);
    num(v[5], sizeof v[5], m->snr_db);
    printf("  rel-L2 %s  mse %s  cosine %s  pcc %s  snr %s dB\n", v[1], v[2], v[3], v[4], v[5]);
    printf("  outside atol %.3g + rtol %.3g: %llu of %llu (%.3g%%)", p->atol, p->rtol,
           (unsigned long long)m->allclose_fail, (unsigned long long)m->count,
           m->allclose_fail_pct);
    if (m->nan_ref || m->nan_port || m->inf_ref || m->inf_port)
        printf("\n  NaN %llu/%llu, Inf %llu/%llu (ref/port)", (unsigned long long)m->nan_ref,
               (unsigned long long)m->nan_port, (unsigned long long)m->inf_ref,
               (unsigned long long)m->inf_port);
    printf("\n");
}

/* The figures of a table row take ROW_FIGURES columns; a name that would carry the row past the
 * width of the output goes on a line of its own below them, whole (it is what a user searches
 * for). */
#define ROW_FIGURES 55
#define ROW_NAME_INDENT 8

/* One line of the pair table; '~' before the name marks a pair made by alignment, '*' one the
 * rules adapted. */
static void print_row(const nnp_dump *ref, const nnp_diff_pair *p)
{
    const nnp_record *r = nnp_dump_record(ref, p->ref);
    char a[32], b[32], c[32], v[32], pct[32];
    const char *mark = p->aligned ? "~" : p->adapters ? "*" : "";
    if (p->verdict == NNP_SHAPE_MISMATCH || p->verdict == NNP_DTYPE_MISMATCH) {
        snprintf(a, sizeof a, "-");
        snprintf(b, sizeof b, "-");
        snprintf(c, sizeof c, "-");
        snprintf(pct, sizeof pct, "-");
    } else {
        num(a, sizeof a, p->metrics.max_abs);
        num(b, sizeof b, p->metrics.rel_l2);
        snprintf(c, sizeof c, "%.5f", p->metrics.cosine);
        snprintf(pct, sizeof pct, "%.2f", p->metrics.allclose_fail_pct);
    }
    printf("%6llu  %-5s  %9s  %9s  %8s  %6s", (unsigned long long)r->seq,
           verdict_text(p->verdict, v, sizeof v), a, b, c, pct);
    const char *name = cli_text(r->name);
    if (ROW_FIGURES + 2 + strlen(mark) + strlen(name) <= (size_t)cli_width())
        printf("  %s%s\n", mark, name);
    else
        printf("\n%*s%s%s\n", ROW_NAME_INDENT, "", mark, name);
}

static int by_rel_l2(const void *a, const void *b, void *diff);

/* Per-component statistics over the compared pairs, as in a layer-by-layer verification report:
 * one per nnp_component_kind. */
enum { NCOMP = NNP_COMPONENT_COUNT };

typedef struct {
    size_t pairs, verdicts[5], compared;
    double rel_min, rel_max, rel_sum, abs_max, cos_min;
} comp_stats;

/* `rules` gives the `component` lines that override the names' components. */
static void component_stats(const nnp_dump *ref, const nnp_diff *d, const nnp_rules *rules,
                            comp_stats *c)
{
    memset(c, 0, NCOMP * sizeof *c);
    for (size_t k = 0; k < NCOMP; k++) {
        c[k].rel_min = INFINITY;
        c[k].cos_min = INFINITY;
    }
    for (size_t i = 0; i < nnp_diff_pair_count(d); i++) {
        const nnp_diff_pair *p = nnp_diff_pair_at(d, i);
        const nnp_record *r = nnp_dump_record(ref, p->ref);
        nnp_component_kind k = nnp_component_kind_of(rules, r->name, r->module_type);
        c[k].pairs++;
        c[k].verdicts[p->verdict]++;
        if (p->verdict == NNP_SHAPE_MISMATCH || p->verdict == NNP_DTYPE_MISMATCH ||
            p->metrics.finite == 0)
            continue;
        const nnp_metrics *m = &p->metrics;
        c[k].compared++;
        c[k].rel_min = fmin(c[k].rel_min, m->rel_l2);
        c[k].rel_max = fmax(c[k].rel_max, m->rel_l2);
        c[k].rel_sum += m->rel_l2;
        c[k].abs_max = fmax(c[k].abs_max, m->max_abs);
        c[k].cos_min = fmin(c[k].cos_min, m->cosine);
    }
}

static void print_components(const comp_stats *c)
{
    /* 80 columns: rel-L2's three figures under one heading */
    printf("\n%36s%s\n", "", "--------- rel-L2 ---------");
    printf("%-13s %5s %4s %4s %4s  %8s %8s %8s %8s %7s\n", "component", "pairs", "pass",
           "warn", "fail", "min", "mean", "max", "max-abs", "cos min");
    for (size_t k = 0; k < NCOMP; k++) {
        if (!c[k].pairs)
            continue;
        char a[32] = "-", b[32] = "-", e[32] = "-", f[32] = "-", g[32] = "-";
        if (c[k].compared) {
            num(a, sizeof a, c[k].rel_min);
            num(b, sizeof b, c[k].rel_sum / (double)c[k].compared);
            num(e, sizeof e, c[k].rel_max);
            num(f, sizeof f, c[k].abs_max);
            snprintf(g, sizeof g, "%.5f", c[k].cos_min);
        }
        size_t failed = c[k].verdicts[NNP_FAIL] + c[k].verdicts[NNP_SHAPE_MISMATCH] +
                        c[k].verdicts[NNP_DTYPE_MISMATCH];
        printf("%-13s %5zu %4zu %4zu %4zu  %8s %8s %8s %8s %7s\n",
               nnp_component_name((nnp_component_kind)k), c[k].pairs,
               c[k].verdicts[NNP_PASS], c[k].verdicts[NNP_WARN], failed, a, b, e, f, g);
    }
}

static json_t *components_json(const comp_stats *c)
{
    json_t *o = json_object();
    for (size_t k = 0; k < NCOMP; k++) {
        if (!c[k].pairs)
            continue;
        bool any = c[k].compared > 0;
        json_object_set_new(
            o, nnp_component_name((nnp_component_kind)k),
            json_pack("{s:I, s:I, s:I, s:I, s:I, s:o, s:o, s:o, s:o, s:o}", "pairs",
                      (json_int_t)c[k].pairs, "compared", (json_int_t)c[k].compared, "pass",
                      (json_int_t)c[k].verdicts[NNP_PASS], "warn",
                      (json_int_t)c[k].verdicts[NNP_WARN], "fail",
                      (json_int_t)(c[k].verdicts[NNP_FAIL] + c[k].verdicts[NNP_SHAPE_MISMATCH] +
                                   c[k].verdicts[NNP_DTYPE_MISMATCH]),
                      "rel_l2_min", json_out_number(any ? c[k].rel_min : NAN), "rel_l2_mean",
                      json_out_number(any ? c[k].rel_sum / (double)c[k].compared : NAN),
                      "rel_l2_max", json_out_number(any ? c[k].rel_max : NAN), "max_abs",
                      json_out_number(any ? c[k].abs_max : NAN), "cosine_min",
                      json_out_number(any ? c[k].cos_min : NAN)));
    }
    return o;
}

static void print_text(const nnp_dump *ref, const nnp_dump *port, const nnp_diff *d,
                       const comp_stats *comps, bool all)
{
    size_t npairs = nnp_diff_pair_count(d);
    int64_t first = nnp_diff_first_divergence(d), reorder = nnp_diff_order_violation(d),
            nonfinite = nnp_diff_nonfinite_origin(d);
    size_t counts[5] = {0};
    for (size_t i = 0; i < npairs; i++)
        counts[nnp_diff_pair_at(d, i)->verdict]++;
    printf("reference: %s (%zu records)\nport:      %s (%zu records)\n",
           cli_text(nnp_dump_path(ref)), nnp_dump_count(ref), cli_text(nnp_dump_path(port)),
           nnp_dump_count(port));
    printf("pairs: %zu: %zu pass, %zu warn, %zu fail, %zu shape mismatch, %zu dtype mismatch\n"
           "unmatched: %zu in the reference, %zu in the port\n",
           npairs, counts[NNP_PASS], counts[NNP_WARN], counts[NNP_FAIL],
           counts[NNP_SHAPE_MISMATCH], counts[NNP_DTYPE_MISMATCH], nnp_diff_unmatched_ref_count(d),
           nnp_diff_unmatched_port_count(d));
    size_t rank0 = nnp_diff_rank0_default(d);
    if (rank0)
        printf("ranks: %zu %s that several ranks of the port hold no gather rule covers:\n"
               "  each compared as its lowest rank's copy (docs/scale.md)\n",
               rank0, cli_plural(rank0, "name", "names"));
    if (first < 0 && reorder < 0)
        printf("\nverdict: the port agrees with the reference%s\n",
               counts[NNP_WARN] ? " (some pairs only nearly: see warn)" : "");
    if (first >= 0) {
        const nnp_diff_pair *p = nnp_diff_pair_at(d, first);
        const nnp_record *r = nnp_dump_record(ref, p->ref);
        char v[32];
        printf("\nverdict: the port diverges.\nFirst divergence in execution order, at seq %llu:\n"
               "  %s%s%s%s (%s)\n", (unsigned long long)r->seq, cli_text(r->name),
               *r->module_type ? " [" : "", cli_text(r->module_type), *r->module_type ? "]" : "",
               verdict_text(p->verdict, v, sizeof v));
        print_pair_details(ref, port, p);
        explain_print(stdout, d, (size_t)first, "  ");
    }
    if (reorder >= 0) {
        size_t i = (size_t)reorder;
        printf("\norder: the port runs seq %llu earlier than the pair before it:\n",
               (unsigned long long)nnp_dump_record(ref, nnp_diff_pair_at(d, i)->ref)->seq);
        printf("  %6s %6s  %s\n", "ref", "port", "name (reference)");
        for (size_t k = i >= 2 ? i - 2 : 0; k <= i + 1 && k < npairs; k++)
            printf("%s %6llu %6llu  %s\n", k == i ? ">" : " ",
                   (unsigned long long)nnp_dump_record(ref, nnp_diff_pair_at(d, k)->ref)->seq,
                   (unsigned long long)nnp_dump_record(port, nnp_diff_pair_at(d, k)->port)->seq,
                   cli_text(nnp_dump_record(ref, nnp_diff_pair_at(d, k)->ref)->name));
    } else {
        printf("order: the matched pairs run in the same order on both sides\n");
    }
    if (nonfinite >= 0) {
        const nnp_diff_pair *p = nnp_diff_pair_at(d, nonfinite);
        const nnp_record *r = nnp_dump_record(ref, p->ref);
        printf("NaN/Inf: first appear at %s%s%s%s (seq %llu)\n  NaN %llu/%llu, Inf %llu/%llu "
               "(ref/port)\n", cli_text(r->name), *r->module_type ? " [" : "",
               cli_text(r->module_type),
               *r->module_type ? "]" : "", (unsigned long long)r->seq,
               (unsigned long long)p->metrics.nan_ref, (unsigned long long)p->metrics.nan_port,
               (unsigned long long)p->metrics.inf_ref, (unsigned long long)p->metrics.inf_port);
    }
    /* the five pairs with the largest relative error */
    size_t *order = malloc((npairs ? npairs : 1) * sizeof *order), n = 0;
    for (size_t i = 0; order && i < npairs; i++) {
        nnp_verdict v = nnp_diff_pair_at(d, i)->verdict;
        if (v == NNP_WARN || v == NNP_FAIL)
            order[n++] = i;
    }
    if (order && n) {
        qsort_r(order, n, sizeof *order, by_rel_l2, (void *)d);
        printf("\nworst pairs by rel-L2:\n");
        for (size_t k = 0; k < n && k < 5; k++)
            print_row(ref, nnp_diff_pair_at(d, order[k]));
    }
    free(order);
    printf("\n%6s  %-5s  %9s  %9s  %8s  %6s  %s\n", "seq", "verd.", "max-abs", "rel-L2",
           "cosine", "out%", "name (reference)");
    size_t shown = 0;
    for (size_t i = 0; i < npairs; i++)
        if (all || nnp_diff_pair_at(d, i)->verdict != NNP_PASS) {
            print_row(ref, nnp_diff_pair_at(d, i));
            shown++;
        }
    if (!all && shown < npairs)
        printf("%6s  (%zu pairs pass; --all lists them)\n", "", npairs - shown);
    if (npairs)
        print_components(comps);
    for (int side = 0; side < 2; side++) {
        size_t count = side ? nnp_diff_unmatched_port_count(d) : nnp_diff_unmatched_ref_count(d);
        const nnp_dump *dump = side ? port : ref;
        if (!count)
            continue;
        printf("\nonly in the %s (%zu):\n", side ? "port" : "reference", count);
        for (size_t k = 0; k < count && k < 20; k++)
            printf("  %s\n", cli_text(nnp_dump_record(dump, side ? nnp_diff_unmatched_port_at(d, k)
                                                               : nnp_diff_unmatched_ref_at(d, k))
                                           ->name));
        if (count > 20)
            printf("  ... and %zu more\n", count - 20);
    }
    size_t ncoll = nnp_diff_collision_count(d);
    if (ncoll) {
        printf("\nrules: %zu port %s renamed onto a name another port record took first:\n",
               ncoll, cli_plural(ncoll, "record", "records"));
        for (size_t k = 0; k < ncoll && k < 20; k++) {
            const nnp_collision *c = nnp_diff_collision_at(d, k);
            const char *from = cli_text(nnp_dump_record(port, c->port)->name),
                       *to = cli_text(c->name);
            printf(2 + strlen(from) + 4 + strlen(to) <= (size_t)cli_width() ? "  %s -> %s\n"
                                                                             : "  %s\n    -> %s\n",
                   from, to);
            printf("    (taken by %s)\n", cli_text(nnp_dump_record(port, c->taken_by)->name));
        }
        if (ncoll > 20)
            printf("  ... and %zu more\n", ncoll - 20);
    }
    if (nnp_diff_aligned_count(d)) {
        printf("\npaired by automatic alignment (%zu; '~' in the table), port -> reference:\n",
               nnp_diff_aligned_count(d));
        size_t shown_aligned = 0;
        for (size_t i = 0; i < npairs && shown_aligned < 20; i++)
            if (nnp_diff_pair_at(d, i)->aligned) {
                const char *from = cli_text(nnp_dump_record(port, nnp_diff_pair_at(d, i)->port)->name);
                const char *to = cli_text(nnp_dump_record(ref, nnp_diff_pair_at(d, i)->ref)->name);
                if (2 + strlen(from) + 4 + strlen(to) <= (size_t)cli_width())
                    printf("  %s -> %s\n", from, to);
                else
                    printf("  %s\n    -> %s\n", from, to);
                shown_aligned++;
            }
        if (nnp_diff_aligned_count(d) > 20)
            printf("  ... and %zu more\n", nnp_diff_aligned_count(d) - 20);
        printf("  (--emit-rules FILE writes these as rules to review and reuse)\n");
    }
}

static int by_rel_l2(const void *a, const void *b, void *ctx)
{
    const nnp_diff *d = ctx;
    double x = nnp_diff_pair_at(d, *(const size_t *)a)->metrics.rel_l2;
    double y = nnp_diff_pair_at(d, *(const size_t *)b)->metrics.rel_l2;
    if (isnan(x)) x = INFINITY;
    if (isnan(y)) y = INFINITY;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* The reference seq of pair i, or null for -1. */
static json_t *ref_seq(const nnp_dump *ref, const nnp_diff *d, int64_t i)
{
    if (i < 0)
        return json_null();
    const nnp_diff_pair *p = nnp_diff_pair_at(d, (size_t)i);
    return json_integer((json_int_t)nnp_dump_record(ref, p->ref)->seq);
}

static json_t *diff_json(const nnp_dump *ref, const nnp_dump *port, const nnp_diff *d,
                         const comp_stats *comps)
{
    size_t npairs = nnp_diff_pair_count(d);
    int64_t first = nnp_diff_first_divergence(d), reorder = nnp_diff_order_violation(d),
            nonfinite = nnp_diff_nonfinite_origin(d);
    json_t *pairs = json_array(), *ur = json_array(), *up = json_array();
    for (size_t i = 0; i < npairs; i++) {
        const nnp_diff_pair *p = nnp_diff_pair_at(d, i);
        const nnp_record *r = nnp_dump_record(ref, p->ref), *q = nnp_dump_record(port, p->port);
        json_t *o = json_pack("{s:s, s:s, s:I, s:I, s:s, s:s, s:s, s:s, s:f, s:f, s:b, s:o, s:o, "
                              "s:o, s:o}", "ref",
                              r->name, "port", q->name, "ref_seq", (json_int_t)r->seq,
                              "port_seq", (json_int_t)q->seq, "type", r->module_type, "verdict",
                              nnp_verdict_name(p->verdict), "ref_dtype",
                              nnp_dtype_name(p->ref_dtype), "port_dtype",
                              nnp_dtype_name(p->port_dtype), "atol", p->atol, "rtol", p->rtol,
                              "aligned", p->aligned, "ref_shape",
                              json_out_shape(p->ref_ndim, p->ref_shape), "port_shape",
                              json_out_shape(p->port_ndim, p->port_shape), "adapters",
                              p->adapters ? json_string(p->adapters) : json_null(), "problem",
                              p->problem ? json_string(p->problem) : json_null());
        if (!o)
            goto fail;
        json_object_set_new(o, "evidence", json_string(nnp_evidence_name(p->evidence)));
        json_object_set_new(o, "confidence", json_real(p->confidence));
        if (p->nparts > 1) {
            json_t *parts = json_array();
            for (uint32_t k = 0; k < p->nparts; k++)
                json_array_append_new(parts,
                                      json_string(nnp_dump_record(port, p->parts[k])->name));
            json_object_set_new(o, "port_parts", parts);
        }
        if (p->verdict != NNP_SHAPE_MISMATCH && p->verdict != NNP_DTYPE_MISMATCH)
            json_object_set_new(o, "metrics", metrics_json(p));
        if (explain_json_set(o, d, i) != 0) {
            json_decref(o);
            goto fail;
        }
        if (json_array_append_new(pairs, o) != 0)
            goto fail;
    }
    for (size_t i = 0; i < nnp_diff_unmatched_ref_count(d); i++)
        json_array_append_new(
            ur, json_string(nnp_dump_record(ref, nnp_diff_unmatched_ref_at(d, i))->name));
    for (size_t i = 0; i < nnp_diff_unmatched_port_count(d); i++)
        json_array_append_new(
            up, json_string(nnp_dump_record(port, nnp_diff_unmatched_port_at(d, i))->name));
    json_t *coll = json_array();
    for (size_t i = 0; coll && i < nnp_diff_collision_count(d); i++) {
        const nnp_collision *c = nnp_diff_collision_at(d, i);
        json_array_append_new(coll, json_pack("{s:s, s:s, s:s}", "port",
                                              nnp_dump_record(port, c->port)->name, "name",
                                              c->name, "taken_by",
                                              nnp_dump_record(port, c->taken_by)->name));
    }
    json_t *doc = json_pack(
        "{s:s, s:o, s:o, s:s, s:s, s:b, s:o, s:o, s:o, s:o, s:o, s:I, s:o}", "schema",
        "nnparity.diff/1", "components", components_json(comps), "nonfinite_origin",
        nonfinite < 0 ? json_null() : json_integer(nonfinite), "ref", nnp_dump_path(ref), "port",
        nnp_dump_path(port), "agree", first < 0 && reorder < 0, "first_divergence",
        first < 0 ? json_null() : json_integer(first), "order_violation",
        reorder < 0 ? json_null() : json_integer(reorder), "pairs", pairs, "unmatched_ref", ur,
        "unmatched_port", up, "aligned", (json_int_t)nnp_diff_aligned_count(d), "collisions",
        coll ? coll : json_null());
    /* the same places by the number the text and `nnparity ls` give them */
    if (doc && (json_object_set_new(doc, "first_divergence_seq", ref_seq(ref, d, first)) ||
                json_object_set_new(doc, "order_violation_seq", ref_seq(ref, d, reorder)) ||
                json_object_set_new(doc, "nonfinite_origin_seq", ref_seq(ref, d, nonfinite)))) {
        json_decref(doc);
        return NULL;
    }
    return doc;
fail:
    json_decref(pairs);
    json_decref(ur);
    json_decref(up);
    return NULL;
}

/* The report as Markdown, short enough for a pull request comment. */
static void markdown(FILE *o, const nnp_dump *ref, const nnp_dump *port, const nnp_diff *d,
                     const comp_stats *c)
{
    size_t npairs = nnp_diff_pair_count(d);
    int64_t first = nnp_diff_first_divergence(d), reorder = nnp_diff_order_violation(d),
            nonfinite = nnp_diff_nonfinite_origin(d);
    bool agree = first < 0 && reorder < 0;
    fprintf(o, "### nnparity diff: the port %s\n\n", agree ? "agrees with the reference"
                                                             : "diverges from the reference");
    fprintf(o, "| | reference | port |\n|---|---|---|\n| file | ");
    md_code(o, nnp_dump_path(ref), true);
    fprintf(o, " | ");
    md_code(o, nnp_dump_path(port), true);
    fprintf(o, " |\n| records | %zu | %zu |\n| unmatched | %zu | %zu |\n\n",
            nnp_dump_count(ref), nnp_dump_count(port),
            nnp_diff_unmatched_ref_count(d), nnp_diff_unmatched_port_count(d));
    char a[32], b[32], idx[256];
    if (first >= 0) {
        const nnp_diff_pair *p = nnp_diff_pair_at(d, first);
        const nnp_record *r = nnp_dump_record(ref, p->ref);
        fprintf(o, "**First divergence:** seq %llu, ", (unsigned long long)r->seq);
        md_code(o, r->name, false);
        fprintf(o, "%s", *r->module_type ? " (" : "");
        md_text(o, r->module_type, false);
        fprintf(o, "%s, %s", *r->module_type ? ")" : "", nnp_verdict_name(p->verdict));
        if (p->verdict == NNP_FAIL) {
            char made[128];
            if (format_nonfinite_new(made, sizeof made, &p->metrics))
                fprintf(o, ": %s; finite elements", made);
            format_index(idx, sizeof idx, p, p->metrics.max_index);
            num(a, sizeof a, p->metrics.max_abs);
            num(b, sizeof b, p->metrics.rel_l2);
            fprintf(o, ": max-abs %s at %s (reference %.7g, port %.7g), rel-L2 %s, %.3g%% of "
                       "the elements outside tolerance", a, idx, p->metrics.ref_at_max,
                    p->metrics.port_at_max, b, p->metrics.allclose_fail_pct);
        }
        fprintf(o, "\n\n");
    }
    if (nonfinite >= 0) {
        const nnp_record *r = nnp_dump_record(ref, nnp_diff_pair_at(d, nonfinite)->ref);
        fprintf(o, "**NaN/Inf first appear at:** seq %llu, ", (unsigned long long)r->seq);
        md_code(o, r->name, false);
        fprintf(o, "\n\n");
    }
    if (reorder >= 0) {
        const nnp_record *r = nnp_dump_record(ref, nnp_diff_pair_at(d, reorder)->ref);
        fprintf(o, "**Order:** the port runs seq %llu, ", (unsigned long long)r->seq);
        md_code(o, r->name, false);
        fprintf(o, ", earlier than the pair before it\n\n");
    }
    fprintf(o, "| component | pairs | pass | warn | fail | rel-L2 max | max-abs |\n"
               "|---|---:|---:|---:|---:|---:|---:|\n");
    for (size_t k = 0; k < NCOMP; k++) {
        if (!c[k].pairs)
            continue;
        num(a, sizeof a, c[k].compared ? c[k].rel_max : NAN);
        num(b, sizeof b, c[k].compared ? c[k].abs_max : NAN);
        fprintf(o, "| %s | %zu | %zu | %zu | %zu | %s | %s |\n",
                nnp_component_name((nnp_component_kind)k), c[k].pairs,
                c[k].verdicts[NNP_PASS], c[k].verdicts[NNP_WARN],
                c[k].verdicts[NNP_FAIL] + c[k].verdicts[NNP_SHAPE_MISMATCH] +
                    c[k].verdicts[NNP_DTYPE_MISMATCH], a, b);
    }
    size_t bad = 0;
    for (size_t i = 0; i < npairs; i++)
        bad += nnp_diff_pair_at(d, i)->verdict != NNP_PASS;
    if (!bad)
        return;
    fprintf(o, "\n<details><summary>%zu of %zu pairs are not a pass</summary>\n\n"
               "| seq | verdict | max-abs | rel-L2 | name |\n|---:|---|---:|---:|---|\n",
            bad, npairs);
    size_t shown = 0;
    for (size_t i = 0; i < npairs && shown < 50; i++) {
        const nnp_diff_pair *p = nnp_diff_pair_at(d, i);
        if (p->verdict == NNP_PASS)
            continue;
        bool cmp = p->verdict != NNP_SHAPE_MISMATCH && p->verdict != NNP_DTYPE_MISMATCH;
        num(a, sizeof a, cmp ? p->metrics.max_abs : NAN);
        num(b, sizeof b, cmp ? p->metrics.rel_l2 : NAN);
        const nnp_record *r = nnp_dump_record(ref, p->ref);
        fprintf(o, "| %llu | %s | %s | %s | ", (unsigned long long)r->seq,
                nnp_verdict_name(p->verdict), a, b);
        md_code(o, r->name, true);
        fprintf(o, " |\n");
        shown++;
    }
    if (shown < bad)
        fprintf(o, "\n... and %zu more (see the JSON report)\n", bad - shown);
    fprintf(o, "\n</details>\n");
}

static int write_markdown(const nnp_dump *ref, const nnp_dump *port, const nnp_diff *d,
                          const comp_stats *c, const char *path)
{
    char *text = NULL;
    size_t len = 0;
    FILE *o = open_memstream(&text, &len);
    if (!o) {
        cli_error("out of memory");
        return EXIT_INTERNAL;
    }
    markdown(o, ref, port, d, c);
    fclose(o);
    int rc = cli_write_file(path, text, len);
    free(text);
    return rc;
}

/* A progress line on stderr while a long diff runs, on a terminal only, at most ten times a
 * second. */
typedef struct {
    bool tty;
    double last;
    bool shown;
} progress_line;

static void show_progress(void *ctx, uint64_t done, uint64_t total)
{
    progress_line *l = ctx;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    double now = (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
    if (!l->tty || (l->shown && now - l->last < 0.1) || (!l->shown && l->last == 0)) {
        if (l->last == 0)
            l->last = now; /* nothing for the first tenth of a second: short diffs stay quiet */
        return;
    }
    char a[32], b[32];
    cli_format_bytes(a, sizeof a, done);
    cli_format_bytes(b, sizeof b, total);
    fprintf(stderr, "\r\033[Kdiff: %s of %s compared (%.0f%%)", a, b,
            total ? 100.0 * (double)done / (double)total : 100.0);
    l->last = now;
    l->shown = true;
}

/* --emit-rules: the rules the diff ran with, then the renames alignment proposes. */
static int emit_rules(const nnp_diff *d, const nnp_dump *ref, const char *rules_path,
                      const char *path)
{
    char *aligned = NULL;
    nnp_status st = nnp_diff_aligned_rules(d, ref, &aligned);
    if (st)
        return cli_fail(st);
    char *given = NULL;
    size_t given_len = 0;
    FILE *o = open_memstream(&given, &given_len);
    if (!o) {
        nnp_free(aligned);
        cli_error("out of memory");
        return EXIT_INTERNAL;
    }
    fprintf(o, CLI_MARK_RULES " diff --emit-rules: %sthe renames automatic alignment made\n",
            rules_path ? "the rules it ran with (--rules), then " : "");
    if (rules_path) {
        FILE *in = fopen(rules_path, "r");
        char buf[4096];
        size_t n;
        while (in && (n = fread(buf, 1, sizeof buf, in)) > 0)
            fwrite(buf, 1, n, o);
        if (in)
            fclose(in);
        fprintf(o, "\n");
    }
    if (!*aligned)
        fprintf(o, "# automatic alignment paired nothing: the rules above pair every record\n");
    fputs(aligned, o);
    fclose(o);
    nnp_free(aligned);
    int rc = cli_write_file(path, given, given_len);
    free(given);
    return rc;
}

/* --mpi: the MPI transport, a plugin loaded only when asked for, so that nnparity itself never
 * depends on MPI (docs/scale.md). It sits beside the nnparity binary (a build tree), in
 * <its directory>/../lib/nnparity/ (where `make install` puts it), or where
 * NNPARITY_MPI_PLUGIN says. */
static void (*mpi_close)(void);

static int mpi_start(nnp_comm *comm)
{
    char path[4096];
    const char *env = getenv("NNPARITY_MPI_PLUGIN");
    ssize_t n = env && *env ? -1 : readlink("/proc/self/exe", path, sizeof path - 64);
    if (env && *env)
        snprintf(path, sizeof path, "%s", env);
    else if (n <= 0)
        snprintf(path, sizeof path, "libnnparity_mpi.so");
    else {
        path[n] = 0;
        char *name = strrchr(path, '/') + 1;
        strcpy(name, "libnnparity_mpi.so");
        if (access(path, F_OK) != 0)
            strcpy(name, "../lib/nnparity/libnnparity_mpi.so");
    }
    /* global: MPI's own components, which it loads in turn, look for its symbols */
    void *h = dlopen(path, RTLD_NOW | RTLD_GLOBAL);
    if (!h) {
        cli_error("--mpi needs the MPI plugin: %s (it is built by `make` where mpicc is "
                  "installed; NNPARITY_MPI_PLUGIN names another; docs/scale.md)", dlerror());
        return EXIT_BAD_INPUT;
    }
    int (*open_fn)(nnp_comm *, char *, size_t) = NULL;
    void *a = dlsym(h, "nnp_mpi_open"), *b = dlsym(h, "nnp_mpi_close");
    memcpy(&open_fn, &a, sizeof a); /* ISO C has no cast from an object to a function pointer */
    memcpy(&mpi_close, &b, sizeof b);
    char why[256] = "";
    if (!open_fn || !mpi_close) {
        cli_error("%s: not an nnparity MPI plugin (no nnp_mpi_open)", path);
        return EXIT_BAD_INPUT;
    }
    if (open_fn(comm, why, sizeof why)) {
        cli_error("--mpi: %s", why);
        return EXIT_BAD_INPUT;
    }
    return EXIT_AGREE;
}

/* The exit code for a failure another process reported (process 0 prints it). */
static int exit_code_of(nnp_status st)
{
    return st == NNP_ERR_NOMEM || st == NNP_ERR_INTERNAL ? EXIT_INTERNAL : EXIT_BAD_INPUT;
}

/* The files this diff writes, checked before any work: each may replace only a file nnparity
 * wrote as that kind (or any with --force), and never one of the inputs (the rules excepted for
 * --emit-rules: extending them in place is a way to use it). */
typedef struct {
    const char *json, *markdown, *emit;
    bool force;
} diff_outputs;

static int check_outputs(const diff_outputs *o, char *const *inputs, int ninputs)
{
    const char *paths[] = {o->json, o->markdown, o->emit};
    const cli_output_kind kinds[] = {CLI_OUT_JSON, CLI_OUT_MARKDOWN, CLI_OUT_RULES};
    for (int k = 0; k < 3; k++) {
        if (!paths[k])
            continue;
        for (int i = 0; i < ninputs - (kinds[k] == CLI_OUT_RULES); i++)
            if (inputs[i] && cli_same_file(paths[k], inputs[i])) {
                cli_error("%s: is %s, an input of this diff; write the report elsewhere",
                          paths[k], inputs[i]);
                return EXIT_BAD_INPUT;
            }
        int rc = cli_check_output(paths[k], kinds[k], o->force);
        if (rc)
            return rc;
    }
    return EXIT_AGREE;
}

static int run_diff(int argc, char **argv)
{
    static const struct option opts[] = {
        {"rules", required_argument, NULL, 'r'},      {"atol", required_argument, NULL, 'a'},
        {"rtol", required_argument, NULL, 'R'},       {"json", no_argument, NULL, 'J'},
        {"json-file", required_argument, NULL, 'F'},  {"all", no_argument, NULL, 'A'},
        {"threads", required_argument, NULL, 'j'},    {"markdown", required_argument, NULL, 'M'},
        {"no-align", no_argument, NULL, 'N'},         {"emit-rules", required_argument, NULL, 'E'},
        {"mpi", no_argument, NULL, 'P'},              {"force", no_argument, NULL, 'f'},
        {"width", required_argument, NULL, 'W'},      {0, 0, 0, 0}};
    const char *rules_path = NULL;
    diff_outputs out = {NULL, NULL, NULL, false};
    double atol = -1, rtol = -1;
    bool all = false, no_align = false, mpi = false, to_stdout = false;
    int threads = 0, c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":j:", opts, NULL)) != -1) {
        if (c == 'r') {
            rules_path = optarg;
        } else if (c == 'J') {
            to_stdout = true;
        } else if (c == 'F') {
            out.json = optarg;
        } else if (c == 'A') {
            all = true;
        } else if (c == 'M') {
            out.markdown = optarg;
        } else if (c == 'N') {
            no_align = true;
        } else if (c == 'E') {
            out.emit = optarg;
        } else if (c == 'P') {
            mpi = true;
        } else if (c == 'f') {
            out.force = true;
        } else if (c == 'W') {
            if (!cli_set_width(optarg))
                return cli_width_error(&cli_diff, optarg);
        } else if (c == 'a' || c == 'R') {
            if (!cli_parse_tolerance(optarg, c == 'a' ? &atol : &rtol))
                return cli_usage_error(&cli_diff, "--%s takes a non-negative number, not '%s'",
                                       c == 'a' ? "atol" : "rtol", optarg);
        } else if (c == 'j') {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (*end || v < 1 || v > 256)
                return cli_usage_error(&cli_diff, "-j takes a thread count from 1 to 256, not '%s'",
                                       optarg);
            threads = (int)v;
        } else {
            return cli_option_error(&cli_diff, opts, c, argc, argv);
        }
    }
    if (out.json && strcmp(out.json, "-") == 0)
        return cli_usage_error(&cli_diff, "--json-file writes a file; --json prints the JSON "
                               "report on stdout");
    if (argc - optind != 2) {
        int n = argc - optind;
        if (n > 2 && to_stdout)
            return cli_usage_error(&cli_diff, "%d arguments, but diff takes REF and PORT: --json "
                                   "takes no FILE (it prints JSON on stdout; --json-file FILE "
                                   "writes a file)", n);
        if (n < 2)
            return cli_usage_error(&cli_diff, "REF and PORT are needed");
        return cli_usage_error(&cli_diff, "%d arguments, but diff takes REF and PORT", n);
    }
    if ((atol < 0) != (rtol < 0)) {
        /* one given: the other from the dtype would mix two rules; take it as zero */
        if (atol < 0) atol = 0;
        if (rtol < 0) rtol = 0;
    }
    nnp_comm comm = {0, 1, NULL, NULL, NULL};
    int rc;
    if (mpi && (rc = mpi_start(&comm)))
        return rc;
    bool root = comm.rank == 0;
    nnp_rules *rules = NULL;
    nnp_dump *ref = NULL, *port = NULL;
    nnp_diff *d = NULL;
    /* what is wrong with the command line is said (by process 0) before any work */
    char *inputs[] = {argv[optind], argv[optind + 1], (char *)rules_path};
    int pre = EXIT_AGREE;
    if (root && !(pre = cli_unfinished_capture(argv[optind])) &&
        !(pre = cli_unfinished_capture(argv[optind + 1])))
        pre = check_outputs(&out, inputs, 3);
    nnp_status st = pre ? NNP_ERR_ARG : NNP_OK;
    if (!st && rules_path)
        st = nnp_rules_load(rules_path, &rules);
    if (!st)
        st = nnp_dump_open_both(argv[optind], argv[optind + 1], &ref, &port);
    if (mpi) /* every process opened the files itself (a shared file system) */
        st = nnp_comm_agree(&comm, st);
    use_colour = !mpi && !to_stdout && isatty(STDOUT_FILENO) && !getenv("NO_COLOR");
    progress_line line = {isatty(STDERR_FILENO), 0, false};
    nnp_diff_options o;
    nnp_diff_options_init(&o);
    o.rules = rules;
    o.atol = atol;
    o.rtol = rtol;
    o.threads = threads;
    o.no_align = no_align;
    o.progress = mpi ? NULL : show_progress;
    o.progress_ctx = &line;
    if (!st && !mpi) {
        /* the diff reads every byte it compares: it checks archive members as it reads them,
         * and what it read otherwise is checked before anything is reported */
        nnp_dump_defer_checks(ref);
        nnp_dump_defer_checks(port);
    }
    if (!st)
        st = mpi ? nnp_diff_dumps_comm(ref, port, &o, &comm, &d)
                 : nnp_diff_dumps(ref, port, &o, &d);
    if (!st && !mpi && !(st = nnp_dump_finish_checks(ref)))
        st = nnp_dump_finish_checks(port);
    if (line.shown)
        fprintf(stderr, "\r\033[K");
    if (st) {
        rc = pre ? pre : root ? cli_fail(st) : exit_code_of(st);
    } else if (!root) {
        rc = EXIT_AGREE; /* process 0 reports, and says how every process exits */
    } else {
        comp_stats comps[NCOMP];
        component_stats(ref, d, rules, comps);
        rc = out.emit ? emit_rules(d, ref, rules_path, out.emit) : EXIT_AGREE;
        if (rc == EXIT_AGREE && !to_stdout)
            print_text(ref, port, d, comps, all);
        if (rc == EXIT_AGREE && to_stdout)
            rc = json_out_print(diff_json(ref, port, d, comps));
        if (out.json && rc == EXIT_AGREE)
            rc = json_out_write(diff_json(ref, port, d, comps), out.json);
        if (out.markdown && rc == EXIT_AGREE)
            rc = write_markdown(ref, port, d, comps, out.markdown);
        if (rc == EXIT_AGREE &&
            (nnp_diff_first_divergence(d) >= 0 || nnp_diff_order_violation(d) >= 0))
            rc = EXIT_FOUND;
    }
    /* Process 0 exits with the diff's code and the others with 0, which mpirun and srun pass
     * on; a process that exits non-zero first would make mpirun stop process 0 while it still
     * writes the report. The broadcast keeps the others until process 0 has written it. */
    fflush(stdout);
    int root_rc = rc;
    if (mpi && comm.bcast(comm.ctx, &root_rc, sizeof root_rc))
        rc = EXIT_INTERNAL;
    else if (mpi && !root)
        rc = EXIT_AGREE;
    nnp_diff_free(d);
    nnp_dump_close(ref);
    nnp_dump_close(port);
    nnp_rules_free(rules);
    if (mpi)
        mpi_close();
    return rc;
}

const cli_command cli_diff = {"diff", "compare a port's dump with the reference's", diff_usage,
                              run_diff};
