/*
 * report_markdown.c - a short Markdown report of `nnparity run`, sized for a pull request
 * comment: the verdict, the runs, the first divergence in both scenarios, the components and
 * (folded) the records that are not within tolerance.
 */
#include <string.h>

#include "cli.h"
#include "pair_format.h"
#include "report.h"

static void metrics_cell(FILE *o, const nnp_diff_pair *p)
{
    char a[32], b[32], idx[256];
    if (!p) {
        fputs("not captured", o);
        return;
    }
    if (p->verdict == NNP_SHAPE_MISMATCH || p->verdict == NNP_DTYPE_MISMATCH) {
        fprintf(o, "%s mismatch", nnp_verdict_name(p->verdict));
        return;
    }
    format_index(idx, sizeof idx, p, p->metrics.max_index);
    run_num(a, sizeof a, p->metrics.max_abs);
    run_num(b, sizeof b, p->metrics.rel_l2);
    fprintf(o, "%s: max-abs %s at %s (reference %.7g, port %.7g), rel-L2 %s",
            nnp_verdict_name(p->verdict), a, idx, p->metrics.ref_at_max, p->metrics.port_at_max,
            b);
}

void run_report_markdown(FILE *o, const run_report *r)
{
    char headline[128];
    run_headline(r, headline, sizeof headline);
    fprintf(o, "### nnparity run: %s\n\n", headline);
    md_text(o, r->verdict, false);
    fprintf(o, "\n\n");
    fprintf(o, "| run | command | result | records |\n|---|---|---|---:|\n");
    for (int s = 0; s < NSIDES; s++) {
        const run_side *d = &r->side[s];
        if (!run_side_used(d))
            continue;
        fprintf(o, "| %s | ", d->role);
        md_code(o, d->command, true);
        fprintf(o, " | ");
        md_text(o, d->status, true);
        fprintf(o, " | %zu |\n", d->dump ? nnp_dump_count(d->dump) : 0);
    }
    if (r->first_divergence >= 0) {
        const run_row *row = &r->rows[r->first_divergence];
        fprintf(o, "\n**First divergence:** seq %llu, ", (unsigned long long)row->rec->seq);
        md_code(o, row->rec->name, false);
        fprintf(o, "%s", *row->rec->module_type ? " (" : "");
        md_text(o, row->rec->module_type, false);
        fprintf(o, "%s, **%s**\n\n- standard: ", *row->rec->module_type ? ")" : "",
                nnp_label_name(row->label));
        metrics_cell(o, row->std);
        fprintf(o, "\n- on the reference's inputs: ");
        metrics_cell(o, row->inj);
        fprintf(o, "\n");
    }
    if (r->repro_file) {
        fprintf(o, "\n**Reproducer:** ");
        md_code(o, r->repro_file, false);
        fprintf(o, " (see ");
        md_code(o, r->repro_readme, false);
        fprintf(o, ")\n");
    }
    fprintf(o, "\n| component | records | own | inherited | std rel-L2 max | inj rel-L2 max |\n"
               "|---|---:|---:|---:|---:|---:|\n");
    for (size_t k = 0; k < NNP_COMPONENT_COUNT; k++) {
        const run_component *c = &r->components[k];
        char a[32] = "-", b[32] = "-";
        if (!c->rows)
            continue;
        if (c->compared) {
            run_num(a, sizeof a, c->std_rel_max);
            run_num(b, sizeof b, c->inj_rel_max);
        }
        fprintf(o, "| %s | %zu | %zu | %zu | %s | %s |\n", c->name, c->rows, c->own,
                c->inherited, a, b);
    }
    size_t bad = 0;
    for (size_t i = 0; i < r->nrows; i++)
        bad += !run_row_quiet(&r->rows[i]);
    if (!bad)
        return;
    char words[64] = "not within tolerance";
    if (r->base_std)
        snprintf(words, sizeof words, "beyond %s compute noise", r->baseline_precision);
    fprintf(o, "\n<details><summary>%zu of %zu records are %s</summary>\n\n"
               "| seq | label | std rel-L2 | inj rel-L2 | name |\n|---:|---|---:|---:|---|\n",
            bad, r->nrows, words);
    size_t shown = 0;
    for (size_t i = 0; i < r->nrows && shown < 50; i++) {
        const run_row *row = &r->rows[i];
        if (run_row_quiet(row))
            continue;
        char a[32] = "-", b[32] = "-";
        if (row->std && row->std->verdict <= NNP_FAIL)
            run_num(a, sizeof a, row->std->metrics.rel_l2);
        if (row->inj && row->inj->verdict <= NNP_FAIL)
            run_num(b, sizeof b, row->inj->metrics.rel_l2);
        fprintf(o, "| %llu | %s | %s | %s | ", (unsigned long long)row->rec->seq,
                nnp_label_name(row->label), a, b);
        md_code(o, row->rec->name, true);
        fprintf(o, " |\n");
        shown++;
    }
    if (shown < bad)
        fprintf(o, "\n... and %zu more (see the JSON or HTML report)\n", bad - shown);
    fprintf(o, "\n</details>\n");
}
