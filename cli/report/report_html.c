/*
 * report_html.c - DIR/report.html of `nnparity run`: one self-contained page (inline CSS, SVG and
 * a few lines of JavaScript; no network, no external fonts, scripts or images) with the verdict
 * at the top, the runs and their stderr, the plot, a sortable table of every record, the
 * components, and per-record details: the worst element in both scenarios and a histogram of
 * |port - ref|. Every name that comes from a dump or a command is HTML-escaped.
 */
#include <math.h>
#include <string.h>

#include "cli.h"
#include "pair_format.h"
#include "plot/plot.h"
#include "report.h"

void html_escape(FILE *o, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '&': fputs("&amp;", o); break;
        case '<': fputs("&lt;", o); break;
        case '>': fputs("&gt;", o); break;
        case '"': fputs("&quot;", o); break;
        case '\'': fputs("&#39;", o); break;
        default:
            /* a control character is shown as its escape (as in text output): XML, and so
             * the SVG plot, may not hold one, and a page should not hide one; line breaks and
             * tabs of multi-line text (a command's stderr) stay */
            if (((unsigned char)*s < 0x20 && *s != '\n' && *s != '\t') || *s == 0x7f)
                fprintf(o, "\\x%02x", (unsigned char)*s);
            else
                fputc(*s, o);
        }
    }
}

static const char style[] =
    "body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:0 auto;"
    "max-width:1200px;padding:16px 24px;color:#1d2329;background:#fff}\n"
    "h1{font-size:22px;margin:0 0 6px}h2{font-size:17px;margin:26px 0 8px;border-bottom:1px "
    "solid #e3e6ea;padding-bottom:4px}\n"
    ".verdict{border-left:6px solid;padding:10px 16px;border-radius:4px}\n"
    ".verdict.agree{border-color:#2ca02c;background:#eef8ee}.verdict.differ{border-color:#d62728;"
    "background:#fdf0f0}\n"
    "table{border-collapse:collapse;font-size:13px}th,td{padding:3px 8px;border-bottom:1px solid "
    "#eceef1;text-align:left;vertical-align:top}\n"
    "td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}td.nw{white-space:nowrap}\n"
    "table.sortable th{cursor:pointer;user-select:none;white-space:nowrap;background:#f5f6f8}\n"
    "th[aria-sort=ascending]::after{content:' \\25B2'}th[aria-sort=descending]::after{content:"
    "' \\25BC'}\n"
    "code,pre,.mono{font-family:ui-monospace,'DejaVu Sans Mono',monospace;font-size:12px}\n"
    "pre{background:#f5f6f8;padding:8px;overflow:auto;max-height:24em}\n"
    ".own{color:#b3191c;font-weight:600}.inherited{color:#a05a00}.missing,.unknown{color:#6b7280}"
    ".ok{color:#237a23}\n"
    "tr.r-own td{background:#fdf0f0}tr.r-first td:first-child{box-shadow:inset 4px 0 0 #d62728}\n"
    ".plot{max-width:100%;height:auto;border:1px solid #e3e6ea}\n"
    "details{margin:4px 0}details>summary{cursor:pointer}\n"
    ".hist td{padding:1px 6px;border:0}.bar{display:inline-block;height:10px;background:#1f77b4;"
    "min-width:1px}.bar.inj{background:#ff7f0e}\n"
    ".swatch{display:inline-block;width:10px;height:10px;border-radius:5px;margin-right:4px}\n"
    ".grid{display:flex;flex-wrap:wrap;gap:24px}\n";

/* Sorting by a column's data-v (or its text), and the filter checkbox; runs once at load. */
static const char script[] =
    "(function () {\n"
    "  var table = document.getElementById('records-table');\n"
    "  if (!table) return;\n"
    "  var heads = table.tHead.rows[0].cells, body = table.tBodies[0];\n"
    "  function key(row, col, num) {\n"
    "    var cell = row.cells[col], v = cell.getAttribute('data-v');\n"
    "    if (v === null) v = cell.textContent;\n"
    "    if (!num) return v.toLowerCase();\n"
    "    var f = parseFloat(v);\n"
    "    return isNaN(f) ? -Infinity : f;\n"
    "  }\n"
    "  Array.prototype.forEach.call(heads, function (th, col) {\n"
    "    function sort() {\n"
    "      var num = th.getAttribute('data-type') === 'num';\n"
    "      var asc = th.getAttribute('aria-sort') !== 'ascending';\n"
    "      Array.prototype.forEach.call(heads, function (h) { h.removeAttribute('aria-sort'); });\n"
    "      th.setAttribute('aria-sort', asc ? 'ascending' : 'descending');\n"
    "      var rows = Array.prototype.slice.call(body.rows);\n"
    "      rows.sort(function (a, b) {\n"
    "        var x = key(a, col, num), y = key(b, col, num);\n"
    "        return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1);\n"
    "      });\n"
    "      rows.forEach(function (row) { body.appendChild(row); });\n"
    "    }\n"
    "    th.tabIndex = 0;\n"
    "    th.title = 'sort by this column';\n"
    "    th.addEventListener('click', sort);\n"
    "    th.addEventListener('keydown', function (e) {\n"
    "      if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); sort(); }\n"
    "    });\n"
    "  });\n"
    "  var only = document.getElementById('only-bad');\n"
    "  if (only) only.addEventListener('change', function () {\n"
    "    Array.prototype.forEach.call(body.rows, function (row) {\n"
    "      row.hidden = only.checked && row.getAttribute('data-label') === 'ok';\n"
    "    });\n"
    "  });\n"
    "  table.setAttribute('data-sortable', 'ready');\n"
    "})();\n";

/* A number for a data-v attribute: what parseFloat reads back. */
static void data_v(FILE *o, double v)
{
    if (isnan(v))
        fputs(" data-v=\"\"", o);
    else if (isinf(v))
        fprintf(o, " data-v=\"%sInfinity\"", v < 0 ? "-" : "");
    else
        fprintf(o, " data-v=\"%.17g\"", v);
}

static bool compared(const nnp_diff_pair *p)
{
    return p && p->verdict != NNP_SHAPE_MISMATCH && p->verdict != NNP_DTYPE_MISMATCH;
}

static void num_cell(FILE *o, double v)
{
    char buf[32];
    run_num(buf, sizeof buf, v);
    fputs("<td class=\"n\"", o);
    data_v(o, v);
    fprintf(o, ">%s</td>", buf);
}

static void pair_cells(FILE *o, const nnp_diff_pair *p)
{
    if (!p) {
        fputs("<td>-</td><td class=\"n\" data-v=\"\">-</td><td class=\"n\" data-v=\"\">-</td>", o);
        return;
    }
    fprintf(o, "<td>%s</td>", nnp_verdict_name(p->verdict));
    num_cell(o, compared(p) ? p->metrics.rel_l2 : NAN);
    num_cell(o, compared(p) ? p->metrics.max_abs : NAN);
}

static void runs(FILE *o, const run_report *r)
{
    fputs("<h2 id=\"runs\">Runs</h2>\n<table>\n<thead><tr><th>run</th><th>command</th>"
          "<th>result</th><th class=\"n\">records</th><th>capture</th></tr></thead><tbody>\n", o);
    for (int s = 0; s < NSIDES; s++) {
        const run_side *d = &r->side[s];
        fprintf(o, "<tr><td>%s</td><td><code>", d->role);
        html_escape(o, d->command);
        fprintf(o, "</code></td><td class=\"nw %s\">", d->failed ? "own" : "ok");
        html_escape(o, d->status);
        fprintf(o, "</td><td class=\"n\">%zu</td><td><code>",
                d->dump ? nnp_dump_count(d->dump) : 0);
        if (d->dump) {
            html_escape(o, nnp_dump_path(d->dump));
            fprintf(o, "%s", d->recovered ? "</code> (finished from its partial capture)"
                                          : "</code>");
        } else {
            fputs("</code>nothing captured", o);
        }
        fputs("</td></tr>\n", o);
    }
    fputs("</tbody></table>\n", o);
    for (int s = 0; s < NSIDES; s++) {
        const run_side *d = &r->side[s];
        if (!d->tail || !*d->tail)
            continue;
        fprintf(o, "<details%s><summary>stderr of the %s run: last %zu %s (all of it in "
                   "<code>", d->failed || !d->dump ? " open" : "", d->role, d->tail_lines,
                cli_plural(d->tail_lines, "line", "lines"));
        html_escape(o, d->stderr_file);
        fputs("</code>)</summary><pre>", o);
        html_escape(o, d->tail);
        fputs("</pre></details>\n", o);
    }
}

static void scenario_row(FILE *o, const char *label, const nnp_diff_pair *p)
{
    fprintf(o, "<tr><td>%s</td>", label);
    if (!p) {
        fputs("<td colspan=\"8\">not captured</td></tr>\n", o);
        return;
    }
    if (!compared(p)) {
        fprintf(o, "<td>%s</td><td colspan=\"7\">not compared", nnp_verdict_name(p->verdict));
        if (p->problem) {
            fputs(": ", o);
            html_escape(o, p->problem);
        }
        fputs("</td></tr>\n", o);
        return;
    }
    const nnp_metrics *m = &p->metrics;
    char idx[256], a[32], b[32], c[32];
    format_index(idx, sizeof idx, p, m->max_index);
    run_num(a, sizeof a, m->max_abs);
    run_num(b, sizeof b, m->rel_l2);
    snprintf(c, sizeof c, "%.6f", m->cosine);
    fprintf(o, "<td>%s</td><td class=\"n\">%s</td><td class=\"mono\">%s</td><td class=\"n\">"
               "%.7g</td><td class=\"n\">%.7g</td><td class=\"n\">%s</td><td class=\"n\">%s</td>"
               "<td class=\"n\">%llu of %llu (%.3g%%)</td></tr>\n",
            nnp_verdict_name(p->verdict), a, idx, m->ref_at_max, m->port_at_max, b, c,
            (unsigned long long)m->allclose_fail, (unsigned long long)m->count,
            m->allclose_fail_pct);
}

static void scenario_table(FILE *o, const run_row *row)
{
    fputs("<table><thead><tr><th>scenario</th><th>verdict</th><th class=\"n\">max-abs</th>"
          "<th>at</th><th class=\"n\">reference</th><th class=\"n\">port</th><th class=\"n\">"
          "rel-L2</th><th class=\"n\">cosine</th><th class=\"n\">outside tolerance</th></tr>"
          "</thead><tbody>\n", o);
    scenario_row(o, "standard", row->std);
    scenario_row(o, "injected", row->inj);
    fputs("</tbody></table>\n", o);
}

static void histogram(FILE *o, const char *title, const run_hist *h, bool inj)
{
    if (!h->done)
        return;
    int first = HIST_BINS, last = -1;
    uint64_t most = 0, total = 0;
    for (int i = 0; i < HIST_BINS; i++)
        if (h->bin[i]) {
            first = first < i ? first : i;
            last = i;
            most = h->bin[i] > most ? h->bin[i] : most;
            total += h->bin[i];
        }
    fprintf(o, "<div><b>%s</b>: |port - ref| of %llu elements<table class=\"hist\">", title,
            (unsigned long long)total);
    for (int i = first; i <= last; i++) {
        char label[48];
        run_hist_label(i, label, sizeof label);
        double pct = most ? 100.0 * (double)h->bin[i] / (double)most : 0;
        fprintf(o, "<tr><td class=\"mono\">%s</td><td style=\"width:180px\"><span class=\"bar%s\" "
                   "style=\"width:%.1f%%\"></span></td><td class=\"n\">%llu</td></tr>", label,
                inj ? " inj" : "", pct, (unsigned long long)h->bin[i]);
    }
    fputs("</table></div>\n", o);
}

static void first_divergence(FILE *o, const run_report *r)
{
    int64_t i = r->first_divergence >= 0 ? r->first_divergence : r->first_own;
    if (i >= 0) {
        const run_row *row = &r->rows[i];
        fprintf(o, "<h2 id=\"first\">%s: seq %llu, <code>",
                r->first_divergence >= 0 ? "First divergence" : "First own error",
                (unsigned long long)row->rec->seq);
        html_escape(o, row->rec->name);
        fprintf(o, "</code> <span class=\"%s\">%s</span></h2>\n", nnp_label_name(row->label),
                nnp_label_name(row->label));
        scenario_table(o, row);
    }
    fputs("<p>Order: ", o);
    if (r->order_violation >= 0) {
        fputs("the port runs <code>", o);
        html_escape(o, r->rows[r->order_violation].rec->name);
        fputs("</code> earlier than the record before it.</p>\n", o);
    } else {
        fputs("the matched pairs run in the same order on both sides.</p>\n", o);
    }
    if (r->repro_file) {
        fputs("<p>Reproducer for <code>", o);
        html_escape(o, r->repro_layer);
        fputs("</code>: <code>", o);
        html_escape(o, r->repro_file);
        fputs("</code>; <code>", o);
        html_escape(o, r->repro_readme);
        fputs("</code> says how to re-run the layer alone.</p>\n", o);
    }
}

static void records_table(FILE *o, const run_report *r)
{
    fputs("<h2 id=\"records\">Records</h2>\n<p>One row per reference record in execution order. "
          "<b>own</b>: the record differs even on the reference's inputs; <b>inherited</b>: it "
          "differs only on the port's own upstream outputs. Click a column to sort. "
          "<label><input type=\"checkbox\" id=\"only-bad\"> only records not within tolerance"
          "</label></p>\n", o);
    fputs("<table class=\"sortable\" id=\"records-table\">\n<thead><tr>"
          "<th class=\"n\" data-type=\"num\">seq</th><th>name (reference)</th><th>type</th>"
          "<th>component</th><th>label</th><th>standard</th><th class=\"n\" data-type=\"num\">"
          "std rel-L2</th><th class=\"n\" data-type=\"num\">std max-abs</th><th>injected</th>"
          "<th class=\"n\" data-type=\"num\">inj rel-L2</th><th class=\"n\" data-type=\"num\">"
          "inj max-abs</th><th class=\"n\" data-type=\"num\">inj/std</th></tr></thead>\n<tbody>\n",
          o);
    for (size_t i = 0; i < r->nrows; i++) {
        const run_row *row = &r->rows[i];
        const char *label = nnp_label_name(row->label);
        fprintf(o, "<tr class=\"r-%s%s\" data-label=\"%s\"><td class=\"n\">%llu</td><td><a "
                   "href=\"#row-%zu\">", label, (int64_t)i == r->first_divergence ? " r-first" : "",
                label, (unsigned long long)row->rec->seq, i);
        html_escape(o, row->rec->name);
        fputs("</a></td><td>", o);
        html_escape(o, row->rec->module_type);
        fprintf(o, "</td><td><span class=\"swatch\" style=\"background:#%06x\"></span>%s</td>"
                   "<td class=\"%s\">%s</td>", plot_color(row->component),
                nnp_component_name(row->component), label, label);
        pair_cells(o, row->std);
        pair_cells(o, row->inj);
        num_cell(o, row->ratio);
        fputs("</tr>\n", o);
    }
    fputs("</tbody></table>\n", o);
}

static void components(FILE *o, const run_report *r)
{
    fputs("<h2 id=\"components\">Components</h2>\n<table><thead><tr><th>component</th>"
          "<th class=\"n\">records</th><th class=\"n\">own</th><th class=\"n\">inherited</th>"
          "<th class=\"n\">std fail</th><th class=\"n\">inj fail</th><th class=\"n\">std rel-L2 "
          "max</th><th class=\"n\">inj rel-L2 max</th><th class=\"n\">std max-abs</th>"
          "<th class=\"n\">inj max-abs</th></tr></thead><tbody>\n", o);
    for (size_t k = 0; k < NNP_COMPONENT_COUNT; k++) {
        const run_component *c = &r->components[k];
        if (!c->rows)
            continue;
        fprintf(o, "<tr><td><span class=\"swatch\" style=\"background:#%06x\"></span>%s</td>"
                   "<td class=\"n\">%zu</td><td class=\"n\">%zu</td><td class=\"n\">%zu</td>"
                   "<td class=\"n\">%zu</td><td class=\"n\">%zu</td>", plot_color(c->kind),
                c->name, c->rows, c->own, c->inherited, c->std_fail, c->inj_fail);
        num_cell(o, c->compared ? c->std_rel_max : NAN);
        num_cell(o, c->compared ? c->inj_rel_max : NAN);
        num_cell(o, c->compared ? c->std_abs_max : NAN);
        num_cell(o, c->compared ? c->inj_abs_max : NAN);
        fputs("</tr>\n", o);
    }
    fputs("</tbody></table>\n", o);
}

static void details(FILE *o, const run_report *r)
{
    fputs("<h2 id=\"details\">Per-record details</h2>\n", o);
    for (size_t i = 0; i < r->nrows; i++) {
        const run_row *row = &r->rows[i];
        char shape[256];
        cli_format_shape(shape, sizeof shape, row->rec);
        fprintf(o, "<details id=\"row-%zu\"%s><summary><span class=\"mono\">%llu</span> <code>",
                i, (int64_t)i == r->first_divergence ? " open" : "",
                (unsigned long long)row->rec->seq);
        html_escape(o, row->rec->name);
        fprintf(o, "</code> <span class=\"%s\">%s</span></summary>\n<p>",
                nnp_label_name(row->label), nnp_label_name(row->label));
        if (*row->rec->module_type) {
            html_escape(o, row->rec->module_type);
            fputs(", ", o);
        }
        fprintf(o, "%s, %s %s", nnp_component_name(row->component),
                nnp_dtype_name(row->rec->dtype), shape);
        if (row->std) {
            fputs("; port record <code>", o);
            html_escape(o, nnp_dump_record(r->side[SIDE_PORT].dump, row->std->port)->name);
            fputs("</code>", o);
            if (row->std->adapters) {
                fputs(" adapted by <code>", o);
                html_escape(o, row->std->adapters);
                fputs("</code>", o);
            }
        }
        fputs("</p>\n", o);
        scenario_table(o, row);
        fputs("<div class=\"grid\">", o);
        histogram(o, "standard", &row->std_hist, false);
        histogram(o, "injected", &row->inj_hist, true);
        fputs("</div></details>\n", o);
    }
}

static void unmatched(FILE *o, const run_report *r)
{
    const nnp_diff *d = r->std;
    size_t n = nnp_diff_unmatched_port_count(d);
    if (!n)
        return;
    fprintf(o, "<h2>Only in the port (%zu)</h2>\n<ul>\n", n);
    for (size_t k = 0; k < n; k++) {
        fputs("<li><code>", o);
        html_escape(o, nnp_dump_record(r->side[SIDE_PORT].dump, nnp_diff_unmatched_port_at(d, k))
                           ->name);
        fputs("</code></li>\n", o);
    }
    fputs("</ul>\n", o);
}

void run_report_html(FILE *o, const run_report *r)
{
    const char *headline = r->agree ? "The port agrees with the reference"
                                    : "The port does not match the reference";
    fprintf(o, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
               CLI_MARK_HTML "\n"
               "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
               "<title>nnparity run: %s</title>\n<style>\n%s</style>\n</head>\n<body>\n",
            headline, style);
    fprintf(o, "<div class=\"verdict %s\" id=\"verdict\"><h1>%s</h1>\n<p>",
            r->agree ? "agree" : "differ", headline);
    html_escape(o, r->verdict);
    fputs("</p></div>\n", o);
    first_divergence(o, r);
    fputs("<h2 id=\"plot\">Error per layer</h2>\n", o);
    plot_svg(o, r, false);
    records_table(o, r);
    components(o, r);
    runs(o, r);
    unmatched(o, r);
    details(o, r);
    fprintf(o, "<p class=\"mono\">nnparity %s</p>\n<script>\n%s</script>\n</body>\n</html>\n",
            nnp_version(), script);
}
