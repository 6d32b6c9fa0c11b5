/*
 * report_text.c - the text report of `nnparity run` on stdout, as wide as the terminal: the
 * three runs, the verdict, the first divergence in both scenarios, the order check, the records
 * that are not within tolerance with their own/inherited label, and the components.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "pair_format.h"
#include "explain_format.h"
#include "report.h"

enum { MISSING_SHOWN = 10, ROW_FIGURES = 50, ROW_NAME_INDENT = 8 };

/* The line's width, for this report (run_report_text). */
static int width = 80;

/* `text` after `first`, wrapped at this report's width (cli_wrap). */
static void wrap(FILE *o, const char *first, const char *text, int indent)
{
    cli_wrap(o, first, indent, width, text);
}

static const char *base_name(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

static void print_side(FILE *o, const run_side *s, int pad)
{
    char line[1024], head[32];
    size_t n = s->dump ? nnp_dump_count(s->dump) : 0;
    snprintf(head, sizeof head, "%-*s ", pad, s->role);
    if (s->dump)
        snprintf(line, sizeof line, "%s: %zu %s in %s%s", s->status, n,
                 cli_plural(n, "record", "records"), base_name(nnp_dump_path(s->dump)),
                 s->recovered ? " (finished from its partial capture)" : "");
    else
        snprintf(line, sizeof line, "%s: captured nothing", s->status);
    wrap(o, head, line, pad + 1);
    if ((s->failed || !s->dump) && s->tail && *s->tail) {
        fprintf(o, "  stderr, last %zu %s (all of it in %s):\n", s->tail_lines,
                cli_plural(s->tail_lines, "line", "lines"), base_name(s->stderr_file));
        /* the command's own output: its colours and other escapes are shown, not run */
        for (const char *p = s->tail; *p;) {
            size_t len = strcspn(p, "\n");
            char *l = strndup(p, len);
            fprintf(o, "  | %s\n", l ? cli_text(l) : "(out of memory)");
            free(l);
            p += len + (p[len] == '\n');
        }
    }
}

/* "standard 16 (2 pass, 14 fail)": warnings and failures only when there are some. */
static int counts(char *buf, size_t n, const char *label, const nnp_diff *d)
{
    size_t c[5] = {0};
    for (size_t i = 0; i < nnp_diff_pair_count(d); i++)
        c[nnp_diff_pair_at(d, i)->verdict]++;
    size_t fail = c[NNP_FAIL] + c[NNP_SHAPE_MISMATCH] + c[NNP_DTYPE_MISMATCH];
    char warn[32] = "", failed[32] = "";
    if (c[NNP_WARN])
        snprintf(warn, sizeof warn, ", %zu warn", c[NNP_WARN]);
    if (fail)
        snprintf(failed, sizeof failed, ", %zu fail", fail);
    return snprintf(buf, n, "%s %zu (%zu pass%s%s)", label, nnp_diff_pair_count(d), c[NNP_PASS],
                    warn, failed);
}

/* Where the pair's error lies and what explains it, under its scenario's line. */
static void explain_row(FILE *o, const nnp_diff *d, const nnp_diff_pair *p)
{
    if (d && p && nnp_diff_pair_count(d))
        explain_print(o, d, (size_t)(p - nnp_diff_pair_at(d, 0)), "            ");
}

static void print_scenario(FILE *o, const char *label, const nnp_diff_pair *p)
{
    if (!p) {
        fprintf(o, "  %-9s not captured\n", label);
        return;
    }
    if (p->verdict == NNP_SHAPE_MISMATCH || p->verdict == NNP_DTYPE_MISMATCH) {
        fprintf(o, "  %-9s %s mismatch: not compared%s%s\n", label, nnp_verdict_name(p->verdict),
                p->problem ? ": " : "", p->problem ? cli_text(p->problem) : "");
        return;
    }
    const nnp_metrics *m = &p->metrics;
    char idx[256], a[32], b[32];
    format_index(idx, sizeof idx, p, m->max_index);
    run_num(a, sizeof a, m->max_abs);
    run_num(b, sizeof b, m->rel_l2);
    char head[32], line[512], made[128];
    snprintf(head, sizeof head, "  %-9s ", label);
    /* a NaN or Inf the port made is the finding; the figures after it are of the finite pairs */
    if (format_nonfinite_new(made, sizeof made, m)) {
        snprintf(line, sizeof line, "%s: %s", nnp_verdict_name(p->verdict), made);
        wrap(o, head, line, 12);
        snprintf(line, sizeof line, "finite elements: max-abs %s at %s: reference %.7g, port "
                 "%.7g", a, idx, m->ref_at_max, m->port_at_max);
        wrap(o, "            ", line, 12);
    } else {
        snprintf(line, sizeof line, "%s: max-abs %s at %s: reference %.7g, port %.7g",
                 nnp_verdict_name(p->verdict), a, idx, m->ref_at_max, m->port_at_max);
        wrap(o, head, line, 12);
    }
    snprintf(line, sizeof line, "rel-L2 %s; %llu of %llu outside atol %.3g + rtol %.3g", b,
             (unsigned long long)m->allclose_fail, (unsigned long long)m->count, p->atol,
             p->rtol);
    wrap(o, "            ", line, 12);
}

static void metric(char *buf, size_t n, const nnp_diff_pair *p)
{
    if (!p)
        snprintf(buf, n, "-");
    else if (p->verdict == NNP_SHAPE_MISMATCH || p->verdict == NNP_DTYPE_MISMATCH)
        snprintf(buf, n, "%s", nnp_verdict_name(p->verdict));
    else
        run_num(buf, n, p->metrics.rel_l2);
}

static void print_row(FILE *o, const run_row *row)
{
    char a[32], b[32], c[32];
    metric(a, sizeof a, row->std);
    metric(b, sizeof b, row->inj);
    if (row->ratio != row->ratio)
        snprintf(c, sizeof c, "-");
    else
        snprintf(c, sizeof c, "%.2f", row->ratio);
    fprintf(o, "%6llu  %-9s  %10s  %10s  %7s", (unsigned long long)row->rec->seq,
            nnp_label_name(row->label), a, b, c);
    /* a name that would pass the width goes, whole, on a line of its own */
    const char *name = cli_text(row->rec->name);
    if (ROW_FIGURES + 2 + strlen(name) <= (size_t)width)
        fprintf(o, "  %s\n", name);
    else
        fprintf(o, "\n%*s%s\n", ROW_NAME_INDENT, "", name);
}

static void print_table(FILE *o, const run_report *r, bool all)
{
    fprintf(o, "\n%6s  %-9s  %10s  %10s  %7s  %s\n", "seq", "label", "std rel-L2", "inj rel-L2",
            "inj/std", "name (reference)");
    size_t hidden_ok = 0, hidden_noise = 0, missing = 0, missing_hidden = 0;
    for (size_t i = 0; i < r->nrows; i++) {
        const run_row *row = &r->rows[i];
        if (run_row_quiet(row) && !all) {
            hidden_ok += row->label == NNP_LABEL_OK;
            hidden_noise += row->label == NNP_LABEL_PRECISION;
            continue;
        }
        if (row->label == NNP_LABEL_MISSING && !all && ++missing > MISSING_SHOWN) {
            missing_hidden++;
            continue;
        }
        print_row(o, row);
    }
    if (missing_hidden)
        fprintf(o, "%6s  (%zu more records missing from the port's capture; --all lists them)\n",
                "", missing_hidden);
    if (hidden_noise)
        fprintf(o, "%6s  (%zu %s within %s compute noise; --all lists them)\n", "",
                hidden_noise, cli_plural(hidden_noise, "record", "records"),
                r->baseline_precision);
    if (hidden_ok)
        fprintf(o, "%6s  (%zu %s within tolerance in both scenarios; --all lists them)\n", "",
                hidden_ok, cli_plural(hidden_ok, "record", "records"));
}

static void print_components(FILE *o, const run_report *r)
{
    fprintf(o, "\n%-13s  %7s  %4s  %9s  %14s  %14s\n", "component", "records", "own", "inherited",
            "std rel-L2 max", "inj rel-L2 max");
    for (size_t k = 0; k < NNP_COMPONENT_COUNT; k++) {
        const run_component *c = &r->components[k];
        if (!c->rows)
            continue;
        char a[32] = "-", b[32] = "-";
        if (c->compared) {
            run_num(a, sizeof a, c->std_rel_max);
            run_num(b, sizeof b, c->inj_rel_max);
        }
        fprintf(o, "%-13s  %7zu  %4zu  %9zu  %14s  %14s\n", c->name, c->rows, c->own,
                c->inherited, a, b);
    }
}

/* The port records a diff left unmatched. */
static void print_unmatched(FILE *o, const char *what, const nnp_dump *dump, const nnp_diff *d)
{
    size_t count = nnp_diff_unmatched_port_count(d);
    if (!count)
        return;
    fprintf(o, "\nonly in the %s (%zu):\n", what, count);
    for (size_t k = 0; k < count && k < 10; k++)
        fprintf(o, "  %s\n", cli_text(nnp_dump_record(dump, nnp_diff_unmatched_port_at(d, k))->name));
    if (count > 10)
        fprintf(o, "  ... and %zu more\n", count - 10);
}

/* The baseline's errors at a record: the noise floor its label was measured against. */
static void print_floor(FILE *o, const run_report *r, const run_row *row)
{
    if (!r->base_std)
        return;
    char line[512], a[32], b[32], c[32], d[32];
    const nnp_diff_pair *s = row->base_std;
    metric(a, sizeof a, s);
    run_num(b, sizeof b, s && s->verdict <= NNP_FAIL ? s->metrics.max_abs : NAN);
    run_num(c, sizeof c, row->inj_floor_rel);
    run_num(d, sizeof d, row->inj_floor_abs);
    snprintf(line, sizeof line, "the reference in %s differs by rel-L2 %s, max-abs %s as it "
             "is; fed the reference's inputs, by up to rel-L2 %s, max-abs %s over what the "
             "port's module computes (precision: within %g times both)",
             r->baseline_precision, a, b, c, d, NNP_PRECISION_FACTOR);
    wrap(o, "  baseline  ", line, 12);
}

void run_report_text(FILE *o, const run_report *r, bool all, int line_width)
{
    width = line_width;
    char headline[128];
    run_headline(r, headline, sizeof headline);
    fprintf(o, "nnparity run: %s\n", headline);
    char line[1024];
    snprintf(line, sizeof line, "%s/ (the commands' stderr: *.stderr)", r->out_dir);
    wrap(o, "captures in ", line, 2);
    /* the roles' column: as wide as "baseline injected" when that run took part */
    int pad = run_side_used(&r->side[SIDE_BASE_INJ]) ? 17 : 10;
    for (int s = 0; s < NSIDES; s++)
        if (run_side_used(&r->side[s]))
            print_side(o, &r->side[s], pad);
    int n = counts(line, sizeof line, "standard", r->std);
    if (r->inj && n > 0 && (size_t)n + 2 < sizeof line) {
        memcpy(line + n, ", ", 3);
        counts(line + n + 2, sizeof line - (size_t)n - 2, "injected", r->inj);
    }
    wrap(o, "pairs: ", line, 2);
    if (r->base_std) {
        n = counts(line, sizeof line, "standard", r->base_std);
        if (r->base_inj && n > 0 && (size_t)n + 2 < sizeof line) {
            memcpy(line + n, ", ", 3);
            counts(line + n + 2, sizeof line - (size_t)n - 2, "injected", r->base_inj);
        }
        wrap(o, "baseline pairs: ", line, 2);
    }

    fputc('\n', o);
    wrap(o, "verdict: ", r->verdict, 2);
    if (r->first_divergence >= 0) {
        const run_row *row = &r->rows[r->first_divergence];
        const nnp_record *rec = row->rec;
        char what[1024];
        snprintf(what, sizeof what, "%s%s%s%s, seq %llu: %s", rec->name,
                 *rec->module_type ? " [" : "", rec->module_type, *rec->module_type ? "]" : "",
                 (unsigned long long)rec->seq, nnp_label_name(row->label));
        wrap(o, "first divergence: ", what, 2);
        print_scenario(o, "standard", row->std);
        explain_row(o, r->std, row->std);
        print_scenario(o, "injected", row->inj);
        explain_row(o, r->inj, row->inj);
        print_floor(o, r, row);
    } else if (r->first_own >= 0) {
        const run_row *row = &r->rows[r->first_own];
        fprintf(o, "first own error: %s, seq %llu\n", cli_text(row->rec->name),
                (unsigned long long)row->rec->seq);
        print_scenario(o, "standard", row->std);
        print_scenario(o, "injected", row->inj);
    }
    if (r->order_violation >= 0)
        fprintf(o, "order: the port runs %s earlier than the record before it\n",
                cli_text(r->rows[r->order_violation].rec->name));
    else
        fprintf(o, "order: the matched pairs run in the same order on both sides\n");
    if (r->repro_file) {
        char line[2048];
        snprintf(line, sizeof line, "%s (%s); how to re-run it: %s", r->repro_file,
                 r->repro_layer, r->repro_readme);
        wrap(o, "reproducer: ", line, 2);
    }
    fprintf(o, "report: %s\n", cli_text(r->html_path));

    print_table(o, r, all);
    print_components(o, r);
    print_unmatched(o, "port", r->side[SIDE_PORT].dump, r->std);
}
