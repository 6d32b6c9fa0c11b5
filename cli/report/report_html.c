/*
 * report_html.c - DIR/report.html of `nnparity run`: one self-contained page (inline CSS, SVG and
 * a small script; no network, no external fonts, scripts or images) with the verdict at the
 * top, the plot (report_html_plot.c), a table of every record drawn by the script from one JSON
 * array (failing records first, the rest folded by module prefix, a name filter, sorting), the
 * components, the runs and their stderr, and details of the failing records: the worst element
 * in both scenarios, where the error lies with a heatmap and hints (report_html_heat.c), and a
 * histogram of |port - ref|. It stays a few megabytes for 10,000 records. Every name that comes
 * from a dump or a command is HTML-escaped (and \u-escaped in the row data).
 */
#include <ctype.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "pair_format.h"
#include "plot/plot.h"
#include "report.h"
#include "report_html.h"

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
    /* the records table takes the page's width and never more: long names wrap anywhere, the
     * rest of the columns keep their figures on one line (1280 px shows every column) */
    "#records-wrap{max-width:100%;overflow-x:auto}#records-table{width:100%}\n"
    "#records-table td,#records-table th{padding:2px 5px}\n"
    "#records-table td.name{overflow-wrap:anywhere;word-break:break-word;min-width:14em}\n"
    "#records-table td.t{overflow-wrap:anywhere;max-width:9em}\n"
    "table.sortable th{cursor:pointer;user-select:none;white-space:nowrap;background:#f5f6f8}\n"
    "th[aria-sort=ascending]::after{content:' \\25B2'}th[aria-sort=descending]::after{content:"
    "' \\25BC'}\n"
    "tr.grp th,tr.grp-fail th{background:#fff;cursor:default;font-weight:normal;padding-top:6px;"
    "white-space:normal}\n"
    "tr.grp button,tr.grp-fail button{font:inherit;border:0;background:none;cursor:pointer;"
    "padding:0;text-align:left}\n"
    "tr.grp-fail th{color:#b3191c;font-weight:600}\n"
    ".tools{display:flex;flex-wrap:wrap;gap:12px;align-items:center;margin:6px 0}\n"
    ".tools input[type=search]{font:inherit;padding:3px 6px;width:22em;max-width:100%}\n"
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
    ".grid{display:flex;flex-wrap:wrap;gap:24px}\n"
    ".explain{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}"
    ".explain ul{margin:0;padding-left:18px;max-width:60em}.note{color:#6b7280;font-size:12px;"
    "flex-basis:100%;margin:0}\n";

/* The records table, rendered from the page's row data (one JSON array, far smaller than a row
 * of HTML per record): failing records first and open, the rest folded by module prefix and
 * rendered only when a block is opened or the filter finds something in it; sorting by a
 * column sorts within each block. At its end it records how long the page took to become
 * usable (data-ready-ms, a performance mark) and whether the table is wider than its frame.
 * In parts, as ISO C bounds the length of one string literal. */
static const char *const script[] = {
    "(function () {\n"
    "  var table = document.getElementById('records-table');\n"
    "  var data = document.getElementById('nnp-rows');\n"
    "  if (!table || !data) return;\n"
    "  var D = JSON.parse(data.textContent), R = D.rows, C = {};\n"
    "  D.columns.forEach(function (c, i) { C[c] = i; });\n"
    "  var heads = table.tHead.rows[0].cells, ncol = heads.length, det = {};\n"
    "  D.detailed.forEach(function (i) { det[i] = true; });\n"
    "  var blocks = [], at = D.failing;\n"
    "  if (D.failing) blocks.push({title: D.failing + ' ' + D.words[0], fail: true,\n"
    "    rows: D.order.slice(0, D.failing), open: true});\n"
    "  D.groups.forEach(function (g) {\n"
    "    blocks.push({title: g.prefix, count: g.count, other: g.fail,\n"
    "      rows: D.order.slice(at, at + g.count), open: false});\n"
    "    at += g.count;\n"
    "  });\n"
    "  function esc(s) {\n"
    "    return String(s).replace(/[&<>\"']/g, function (c) {\n"
    "      return {'&': '&amp;', '<': '&lt;', '>': '&gt;', '\"': '&quot;', \"'\": '&#39;'}[c];\n"
    "    });\n"
    "  }\n"
    "  function num(v) {\n"
    "    if (v === null) return '-';\n"
    "    if (typeof v === 'string') return v;\n"
    "    if (v === 0) return '0';\n"
    "    var e = Math.floor(Math.log10(Math.abs(v)));\n"
    "    if (e < -4 || e >= 3) {\n"
    "      var s = v.toExponential(2).replace(/\\.?0+e/, 'e');\n"
    "      return s.replace(/e([+-])(\\d)$/, 'e$10$2');\n"
    "    }\n"
    "    return String(parseFloat(v.toPrecision(3)));\n"
    "  }\n"
    "  function cell(v) {\n"
    "    return '<td class=\"n\">' + num(v) + '</td>';\n"
    "  }\n"
    "  function row(i) {\n"
    "    var r = R[i], label = r[C.label];\n"
    "    var name = esc(r[C.name]);\n"
    "    if (det[i]) name = '<a href=\"#row-' + i + '\">' + name + '</a>';\n"
    "    return '<tr class=\"r-' + label + (i === D.first ? ' r-first' : '') +\n"
    "      '\" data-label=\"' + label + '\"><td class=\"n\">' + r[C.seq] +\n"
    "      '</td><td class=\"name\">' + name + '</td><td class=\"t\">' + esc(r[C.type]) +\n"
    "      '</td><td><span class=\"swatch\" style=\"background:#' + D.colors[r[C.component]] +\n"
    "      '\"></span>' + esc(r[C.component]) + '</td><td class=\"' + label + '\">' + label +\n"
    "      '</td><td>' + (r[C.standard] || '-') + '</td>' + cell(r[C.std_rel]) +\n"
    "      cell(r[C.std_abs]) + '<td>' + (r[C.injected] || '-') + '</td>' +\n"
    "      cell(r[C.inj_rel]) + cell(r[C.inj_abs]) + cell(r[C.ratio]) + '</tr>';\n"
    "  }\n"
    "  var filter = document.getElementById('filter'), only = document.getElementById('only-bad');\n"
    "  var shown = document.getElementById('filter-count');\n"
    "  function render() {\n"
    "    var q = filter ? filter.value.trim().toLowerCase() : '', bad = only && only.checked;\n"
    "    var html = [], total = 0;\n"
    "    blocks.forEach(function (b, k) {\n"
    "      var rows = b.rows;\n"
    "      if (bad && !b.fail) return;\n"
    "      if (q) rows = rows.filter(function (i) {\n"
    "        return R[i][C.name].toLowerCase().indexOf(q) >= 0;\n"
    "      });\n"
    "      if (q && !rows.length) return;\n"
    "      total += rows.length;\n"
    "      var open = b.open || (q && !b.fail);\n"
    "      html.push('<tbody data-block=\"' + k + '\"><tr class=\"' + (b.fail ? 'grp-fail' : 'grp') +\n"
    "        '\"><th colspan=\"' + ncol + '\"><button type=\"button\" aria-expanded=\"' + open +\n"
    "        '\">' + (open ? '\\u25BE ' : '\\u25B8 ') + esc(b.title) + '</button>' +\n"
    "        (b.fail ? '' : ': ' + (q ? rows.length + ' of ' : '') + b.count +\n"
    "        ' ' + D.words[1] + (b.other ? ' (' + b.other + ' more listed above)' : '')) +\n"
    "        '</th></tr>');\n"
    "      if (open) html.push(rows.map(row).join(''));\n"
    "      html.push('</tbody>');\n"
    "    });\n"
    "    Array.prototype.slice.call(table.tBodies).forEach(function (t) { t.remove(); });\n"
    "    table.insertAdjacentHTML('beforeend', html.join(''));\n"
    "    if (shown) shown.textContent = q || bad ? total + ' of ' + R.length + ' records' : '';\n"
    "  }\n",
    "  table.addEventListener('click', function (e) {\n"
    "    var btn = e.target.closest('tr.grp button, tr.grp-fail button');\n"
    "    if (!btn) return;\n"
    "    var b = blocks[+btn.closest('tbody').getAttribute('data-block')];\n"
    "    b.open = btn.getAttribute('aria-expanded') !== 'true';\n"
    "    render();\n"
    "  });\n"
    "  function key(i, col, numeric) {\n"
    "    var v = R[i][col];\n"
    "    if (!numeric) return String(v === null ? '' : v).toLowerCase();\n"
    "    if (v === 'inf') return Infinity;\n"
    "    if (v === '-inf') return -Infinity;\n"
    "    return v === null ? -Infinity : v;\n"
    "  }\n"
    "  Array.prototype.forEach.call(heads, function (th) {\n"
    "    var col = C[th.getAttribute('data-col')];\n"
    "    function sort() {\n"
    "      var numeric = th.getAttribute('data-type') === 'num';\n"
    "      var asc = th.getAttribute('aria-sort') !== 'ascending';\n"
    "      Array.prototype.forEach.call(heads, function (h) { h.removeAttribute('aria-sort'); });\n"
    "      th.setAttribute('aria-sort', asc ? 'ascending' : 'descending');\n"
    "      blocks.forEach(function (b) {\n"
    "        b.rows.sort(function (x, y) {\n"
    "          var a = key(x, col, numeric), c = key(y, col, numeric);\n"
    "          return (a < c ? -1 : a > c ? 1 : x - y) * (asc ? 1 : -1);\n"
    "        });\n"
    "      });\n"
    "      render();\n"
    "    }\n"
    "    th.tabIndex = 0;\n"
    "    th.title = 'sort by this column (within each block)';\n"
    "    th.addEventListener('click', sort);\n"
    "    th.addEventListener('keydown', function (e) {\n"
    "      if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); sort(); }\n"
    "    });\n"
    "  });\n"
    "  var timer = 0;\n"
    "  if (filter) filter.addEventListener('input', function () {\n"
    "    clearTimeout(timer);\n"
    "    timer = setTimeout(render, 120);\n"
    "  });\n"
    "  if (only) only.addEventListener('change', render);\n"
    "  function fold(open) {\n"
    "    blocks.forEach(function (b) { if (!b.fail) b.open = open; });\n"
    "    render();\n"
    "  }\n"
    "  document.getElementById('fold-all').addEventListener('click', function () { fold(false); });\n"
    "  document.getElementById('unfold-all').addEventListener('click', function () { fold(true); });\n"
    "  render();\n"
    "  table.setAttribute('data-sortable', 'ready');\n"
    "  var wrap = document.getElementById('records-wrap');\n"
    "  table.setAttribute('data-overflow', String(Math.max(0, table.scrollWidth - wrap.clientWidth,\n"
    "    document.documentElement.scrollWidth - document.documentElement.clientWidth)));\n"
    "  if (performance.mark) performance.mark('nnp-interactive');\n"
    "  document.body.setAttribute('data-ready-ms', performance.now().toFixed(0));\n"
    "})();\n"
};

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

static void runs(FILE *o, const run_report *r)
{
    fputs("<h2 id=\"runs\">Runs</h2>\n<table>\n<thead><tr><th>run</th><th>command</th>"
          "<th>result</th><th class=\"n\">records</th><th>capture</th></tr></thead><tbody>\n", o);
    for (int s = 0; s < NSIDES; s++) {
        const run_side *d = &r->side[s];
        if (!run_side_used(d))
            continue;
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
        fputs("<tr><td class=\"mono\">", o);
        html_escape(o, label); /* "< 1e-10" */
        fprintf(o, "</td><td style=\"width:180px\"><span class=\"bar%s\" style=\"width:%.1f%%\">"
                   "</span></td><td class=\"n\">%llu</td></tr>", inj ? " inj" : "", pct,
                (unsigned long long)h->bin[i]);
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

/* A string as a JSON string inside a <script> element: besides JSON's own escapes, <, > and &
 * are written as \u escapes, so that no name can close the element or read as markup. */
static void json_str(FILE *o, const char *s)
{
    fputc('"', o);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(o, "\\%c", c);
        else if (c < 0x20 || c == '<' || c == '>' || c == '&' || c == 0x7f)
            fprintf(o, "\\u%04x", c);
        else
            fputc(c, o);
    }
    fputc('"', o);
}

/* A number for the row data: 4 significant digits (the table shows 3; sorting needs no more);
 * JSON has no NaN or infinity: null and "inf". */
static void json_num(FILE *o, double v)
{
    if (isnan(v))
        fputs("null", o);
    else if (isinf(v))
        fputs(v > 0 ? "\"inf\"" : "\"-inf\"", o);
    else
        fprintf(o, "%.4g", v);
}

static void json_pair(FILE *o, const nnp_diff_pair *p)
{
    if (!p) {
        fputs(",null,null,null", o);
        return;
    }
    fprintf(o, ",\"%s\",", nnp_verdict_name(p->verdict));
    json_num(o, compared(p) ? p->metrics.rel_l2 : NAN);
    fputc(',', o);
    json_num(o, compared(p) ? p->metrics.max_abs : NAN);
}

/* The block a passing record is folded into: its module path up to the first part that is an
 * index ("model.layers.3" of "model.layers.3.mlp.fc1": a repeated block), else its first part
 * ("encoder" of "encoder.norm"); a record whose file has no module path, by its name up to the
 * role. The length of that prefix of prefix_of(rec). */
static size_t prefix_len(const nnp_record *rec)
{
    const char *m = *rec->module ? rec->module : rec->name;
    size_t end = *rec->module ? strlen(m) : strcspn(m, "/"), first = end, s = 0;
    for (size_t i = 0; i <= end; i++) {
        if (i < end && m[i] != '.')
            continue;
        if (first == end)
            first = i;
        size_t d = s;
        while (d < i && m[d] >= '0' && m[d] <= '9')
            d++;
        if (d == i && i > s)
            return i;
        s = i + 1;
    }
    return first;
}

static const char *prefix_of(const nnp_record *rec)
{
    return *rec->module ? rec->module : rec->name;
}

/* Failing rows first (in execution order), then the passing ones grouped by prefix, the groups
 * in the order of their first record: order[] holds row indices so, group[g] the groups' first
 * rows, count[g] their sizes, other[g] the failing rows of the same prefix. */
typedef struct layout {
    size_t *order, nfail;
    size_t *first, *count, *other, ngroups;
} layout;

static void layout_free(layout *l)
{
    free(l->order);
    free(l->first);
    free(l->count);
    free(l->other);
    memset(l, 0, sizeof *l);
}

static bool same_prefix(const run_report *r, const size_t *len, size_t a, size_t b)
{
    return len[a] == len[b] && memcmp(prefix_of(r->rows[a].rec), prefix_of(r->rows[b].rec),
                                      len[a]) == 0;
}

static int layout_of(const run_report *r, layout *l)
{
    memset(l, 0, sizeof *l);
    size_t n = r->nrows ? r->nrows : 1;
    size_t *group = malloc(n * sizeof *group), *len = malloc(n * sizeof *len);
    l->order = malloc(n * sizeof *l->order);
    l->first = malloc(n * sizeof *l->first);
    l->count = calloc(n, sizeof *l->count);
    l->other = calloc(n, sizeof *l->other);
    if (!group || !len || !l->order || !l->first || !l->count || !l->other) {
        free(group);
        free(len);
        layout_free(l);
        return -1;
    }
    for (size_t i = 0; i < r->nrows; i++)
        len[i] = prefix_len(r->rows[i].rec);
    /* each row's group; most models run a prefix's records together, so the last group is
     * tried first and the search stays short */
    for (size_t i = 0; i < r->nrows; i++) {
        size_t g = l->ngroups;
        if (g && same_prefix(r, len, l->first[g - 1], i)) {
            g = g - 1;
        } else {
            for (size_t k = 0; k < l->ngroups; k++)
                if (same_prefix(r, len, l->first[k], i)) {
                    g = k;
                    break;
                }
        }
        if (g == l->ngroups)
            l->first[l->ngroups++] = i;
        group[i] = g;
        if (!run_row_quiet(&r->rows[i])) {
            l->order[l->nfail++] = i;
            l->other[g]++;
        } else {
            l->count[g]++;
        }
    }
    /* the passing rows, group after group: start[g] is where group g's rows go */
    free(len);
    size_t *start = malloc(n * sizeof *start);
    if (!start) {
        free(group);
        layout_free(l);
        return -1;
    }
    size_t at = l->nfail;
    for (size_t g = 0; g < l->ngroups; g++) {
        start[g] = at;
        at += l->count[g];
    }
    for (size_t i = 0; i < r->nrows; i++)
        if (run_row_quiet(&r->rows[i]))
            l->order[start[group[i]]++] = i;
    free(start);
    free(group);
    return 0;
}

/* What the folded rows are, and the others: "within tolerance", or with a baseline "within
 * tolerance or bf16 noise" (the precision name is made of letters and digits). */
static void quiet_words(const run_report *r, char *fail, size_t nf, char *pass, size_t np)
{
    if (r->base_std) {
        snprintf(fail, nf, "beyond %s compute noise", r->baseline_precision);
        snprintf(pass, np, "within tolerance or %s noise", r->baseline_precision);
    } else {
        snprintf(fail, nf, "not within tolerance");
        snprintf(pass, np, "within tolerance");
    }
}

static void row_data(FILE *o, const run_report *r, const layout *l)
{
    fputs("<script type=\"application/json\" id=\"nnp-rows\">{\"columns\":[\"seq\",\"name\","
          "\"type\",\"component\",\"label\",\"standard\",\"std_rel\",\"std_abs\",\"injected\","
          "\"inj_rel\",\"inj_abs\",\"ratio\"],\n\"rows\":[", o);
    for (size_t i = 0; i < r->nrows; i++) {
        const run_row *row = &r->rows[i];
        fprintf(o, "%s[%llu,", i ? ",\n" : "\n", (unsigned long long)row->rec->seq);
        json_str(o, row->rec->name);
        fputc(',', o);
        json_str(o, row->rec->module_type);
        fprintf(o, ",\"%s\",\"%s\"", nnp_component_name(row->component),
                nnp_label_name(row->label));
        json_pair(o, row->std);
        json_pair(o, row->inj);
        fputc(',', o);
        json_num(o, row->ratio);
        fputc(']', o);
    }
    fputs("],\n\"order\":[", o);
    for (size_t i = 0; i < r->nrows; i++)
        fprintf(o, "%s%zu", i ? "," : "", l->order[i]);
    char fail_words[64], pass_words[64];
    quiet_words(r, fail_words, sizeof fail_words, pass_words, sizeof pass_words);
    fprintf(o, "],\n\"failing\":%zu,\"words\":[\"%s\",\"%s\"],\"first\":%lld,\"detailed\":[",
            l->nfail, fail_words, pass_words, (long long)r->first_divergence);
    for (size_t k = 0; k < l->nfail && k < HTML_DETAILS_MAX; k++)
        fprintf(o, "%s%zu", k ? "," : "", l->order[k]);
    fputs("],\n\"colors\":{", o);
    for (size_t k = 0; k < NNP_COMPONENT_COUNT; k++)
        fprintf(o, "%s\"%s\":\"%06x\"", k ? "," : "",
                nnp_component_name((nnp_component_kind)k), plot_color((nnp_component_kind)k));
    fputs("},\n\"groups\":[", o);
    bool comma = false;
    for (size_t g = 0; g < l->ngroups; g++) {
        if (!l->count[g])
            continue; /* every record of it fails: it is listed in the first block */
        const nnp_record *rec = r->rows[l->first[g]].rec;
        size_t n = prefix_len(rec);
        char *p = strndup(prefix_of(rec), n);
        fputs(comma ? ",\n{\"prefix\":" : "\n{\"prefix\":", o);
        json_str(o, p ? p : "?");
        free(p);
        fprintf(o, ",\"count\":%zu,\"fail\":%zu}", l->count[g], l->other[g]);
        comma = true;
    }
    fputs("]}</script>\n", o);
}

static void records_table(FILE *o, const run_report *r, const layout *l)
{
    char fail_words[64], pass_words[64];
    quiet_words(r, fail_words, sizeof fail_words, pass_words, sizeof pass_words);
    fprintf(o, "<h2 id=\"records\">Records</h2>\n<p>One row per reference record. Records %s "
               "come first, in execution order; the others are folded by module prefix. ",
            fail_words);
    fputs("<b>own</b>: the record differs even on the reference's inputs; <b>inherited</b>: it "
          "differs only on the port's own upstream outputs. Click a column to sort (within each "
          "block).</p>\n<div class=\"tools\"><input type=\"search\" id=\"filter\" "
          "placeholder=\"filter by name\" aria-label=\"filter records by name\">"
          "<label><input type=\"checkbox\" id=\"only-bad\"> only the records listed first"
          "</label><button type=\"button\" id=\"unfold-all\">unfold all</button>"
          "<button type=\"button\" id=\"fold-all\">fold all</button>"
          "<span id=\"filter-count\"></span></div>\n", o);
    fprintf(o, "<p>%zu of %zu %s %s; %zu %s, in %zu %s.</p>\n", l->nfail, r->nrows,
            cli_plural(r->nrows, "record is", "records are"), fail_words, r->nrows - l->nfail,
            pass_words, l->ngroups, cli_plural(l->ngroups, "block", "blocks"));
    fputs("<noscript><p>The table is drawn by the page's script; the per-record details below "
          "and the JSON report (--json-file) hold the same figures.</p></noscript>\n", o);
    fputs("<div id=\"records-wrap\"><table class=\"sortable\" id=\"records-table\">\n<thead><tr>"
          "<th class=\"n\" data-type=\"num\" data-col=\"seq\">seq</th>"
          "<th data-col=\"name\">name (reference)</th><th data-col=\"type\">type</th>"
          "<th data-col=\"component\">component</th><th data-col=\"label\">label</th>"
          "<th data-col=\"standard\">standard</th><th class=\"n\" data-type=\"num\" "
          "data-col=\"std_rel\">std rel-L2</th><th class=\"n\" data-type=\"num\" "
          "data-col=\"std_abs\">std max-abs</th><th data-col=\"injected\">injected</th>"
          "<th class=\"n\" data-type=\"num\" data-col=\"inj_rel\">inj rel-L2</th>"
          "<th class=\"n\" data-type=\"num\" data-col=\"inj_abs\">inj max-abs</th>"
          "<th class=\"n\" data-type=\"num\" data-col=\"ratio\">inj/std</th></tr></thead>\n"
          "</table></div>\n", o);
    row_data(o, r, l);
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

/* Index of each reference record's pair in a diff; SIZE_MAX where it has none. */
static size_t *pair_index(const run_report *r, const nnp_diff *d)
{
    size_t *ix = malloc((r->nrows ? r->nrows : 1) * sizeof *ix);
    if (!ix)
        return NULL;
    for (size_t i = 0; i < r->nrows; i++)
        ix[i] = SIZE_MAX;
    for (size_t k = 0; d && k < nnp_diff_pair_count(d); k++) {
        size_t ref = nnp_diff_pair_at(d, k)->ref;
        if (ref < r->nrows)
            ix[ref] = k;
    }
    return ix;
}

static void detail(FILE *o, const run_report *r, size_t i, const size_t *std_ix,
                   const size_t *inj_ix, bool heat)
{
    const run_row *row = &r->rows[i];
    char shape[256];
    cli_format_shape(shape, sizeof shape, row->rec);
    fprintf(o, "<details id=\"row-%zu\"%s><summary><span class=\"mono\">%llu</span> <code>", i,
            (int64_t)i == r->first_divergence ? " open" : "", (unsigned long long)row->rec->seq);
    html_escape(o, row->rec->name);
    fprintf(o, "</code> <span class=\"%s\">%s</span></summary>\n<p>",
            nnp_label_name(row->label), nnp_label_name(row->label));
    if (*row->rec->module_type) {
        html_escape(o, row->rec->module_type);
        fputs(", ", o);
    }
    fprintf(o, "%s, %s %s", nnp_component_name(row->component), nnp_dtype_name(row->rec->dtype),
            shape);
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
    /* where the error lies: the standard scenario's, and the injected one's where it says
     * something else (an own error reads the same in both) */
    const nnp_profile *sp = NULL;
    if (std_ix && std_ix[i] != SIZE_MAX) {
        sp = nnp_diff_profile(r->std, std_ix[i]);
        html_explain(o, r->std, std_ix[i], heat);
    }
    if (inj_ix && inj_ix[i] != SIZE_MAX) {
        const nnp_profile *ip = nnp_diff_profile(r->inj, inj_ix[i]);
        if (ip && (!sp || !sp->where || !ip->where || strcmp(sp->where, ip->where) != 0)) {
            fputs("<p>On the reference's inputs (injected):</p>\n", o);
            html_explain(o, r->inj, inj_ix[i], heat && !sp);
        }
    }
    fputs("<div class=\"grid\">", o);
    histogram(o, "standard", &row->std_hist, false);
    histogram(o, "injected", &row->inj_hist, true);
    fputs("</div></details>\n", o);
}

/* Details of the failing records only (the first HTML_DETAILS_MAX): what passes is in the
 * table, and a page of 10,000 passing records' details would weigh tens of megabytes. */
static void details(FILE *o, const run_report *r, const layout *l)
{
    fputs("<h2 id=\"details\">Records not within tolerance</h2>\n", o);
    if (!l->nfail) {
        fputs("<p>None.</p>\n", o);
        return;
    }
    size_t *std_ix = pair_index(r, r->std), *inj_ix = pair_index(r, r->inj);
    if (!std_ix || !inj_ix)
        fputs("<p>Where the errors lie is left out: out of memory.</p>\n", o);
    size_t n = l->nfail < HTML_DETAILS_MAX ? l->nfail : HTML_DETAILS_MAX;
    for (size_t k = 0; k < n; k++)
        detail(o, r, l->order[k], std_ix, inj_ix, k < HTML_HEAT_MAX);
    if (l->nfail > n)
        fprintf(o, "<p>%zu more records not within tolerance are in the table; the JSON report "
                   "(--json-file) has the details of every one.</p>\n", l->nfail - n);
    free(std_ix);
    free(inj_ix);
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
    char headline[128];
    run_headline(r, headline, sizeof headline);
    headline[0] = (char)toupper((unsigned char)headline[0]);
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
    html_plot(o, r);
    layout l;
    bool table = layout_of(r, &l) == 0;
    if (table)
        records_table(o, r, &l);
    else
        fputs("<p>The records table is left out: out of memory.</p>\n", o);
    components(o, r);
    runs(o, r);
    unmatched(o, r);
    if (table)
        details(o, r, &l);
    layout_free(&l);
    fprintf(o, "<p class=\"mono\">nnparity %s</p>\n<script>\n", nnp_version());
    for (size_t k = 0; k < sizeof script / sizeof *script; k++)
        fputs(script[k], o);
    fputs("</script>\n</body>\n</html>\n", o);
}
