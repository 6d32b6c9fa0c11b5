/*
 * report_html_plot.c - the plot on report.html: error per record in execution order on a log
 * axis, for models of a few records and of tens of thousands alike. While the records fit (one
 * point each, POINT_MAX at most) every record is a point linked to its details; past that the
 * plotting area's pixel columns are bins, each drawn as a line from its smallest to its largest
 * value, so the page stays small and the spikes stay visible (a mean would hide them). Exact
 * zeros have no place on a log axis: they get a strip of their own under it, so that 1,000
 * equal records do not pile up on one line. A dashed line marks the tolerance the verdict
 * judges rel-L2 by (10 x rtol, docs/diff.md). The standalone SVG and PNG (--plot) are
 * plot/plot_svg.c's and plot_png.c's.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "plot/plot.h"
#include "report_html.h"

enum { POINT_MAX = 300 };

static const char INJ[] = "#555";

typedef struct bin {
    double lo[2], hi[2];      /* smallest and largest value > 0 per scenario; lo > hi: none */
    size_t zeros[2], n;       /* exact zeros per scenario, records in the bin */
    nnp_component_kind comp;  /* the component of the standard scenario's largest value */
    uint64_t first, last;     /* seq of its first and last record */
    double tol;               /* the largest tolerance line of its records; NaN: none */
} bin;

/* The rel-L2 above which a pair fails whatever its elements do: 10 x rtol. */
static double tolerance(const run_report *r, const run_row *row)
{
    if (r->plot_max_abs)
        return NAN;
    const nnp_diff_pair *p = row->std ? row->std : row->inj;
    return p ? 10 * p->rtol : NAN;
}

static void sci(char *buf, size_t n, double v)
{
    char t[32];
    snprintf(t, sizeof t, "%.0e", v);
    if (strtod(t, NULL) == v)
        snprintf(buf, n, "%s", t);
    else
        snprintf(buf, n, "%.3g", v);
}

/* y in the strip of exact zeros under the log axis: the standard scenario's upper half, the
 * injected one's lower half. */
static double zero_y(const plot_layout *g, int scenario)
{
    double top = plot_y_decade(g, g->lo) + 6;
    return top + (scenario ? (g->bottom - top) / 2 : 0);
}

static double strip_h(const plot_layout *g)
{
    return (g->bottom - (plot_y_decade(g, g->lo) + 6)) / 2;
}

static void axes(FILE *o, const run_report *r, const plot_layout *g)
{
    for (int e = g->lo; e <= g->hi; e++) {
        double y = plot_y_decade(g, e);
        fprintf(o, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#e6e8eb\"/>\n"
                   "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">1e%d</text>\n",
                g->left, y, g->right, y, g->left - 6, y + 4, e);
    }
    double z = zero_y(g, 0);
    fprintf(o, "<g class=\"zeros\"><rect x=\"%d\" y=\"%.1f\" width=\"%d\" height=\"%.1f\" "
               "fill=\"#f3f4f6\"/><text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">exact 0</text>"
               "</g>\n", g->left, z, g->right - g->left, g->bottom - z, g->left - 6,
            z + strip_h(g) + 4);
    plot_svg_x_axis(o, r, g);
}

static void legend(FILE *o, const run_report *r, const plot_layout *g, bool binned)
{
    int y = g->height - 28, x = g->left;
    if (binned)
        fprintf(o, "<path d=\"M%d %dv-10\" stroke=\"#555\" stroke-width=\"3\"/><text x=\"%d\" "
                   "y=\"%d\">standard: the port on its own inputs (a bin's min to max)</text>\n",
                x + 4, y, x + 12, y);
    else
        fprintf(o, "<circle cx=\"%d\" cy=\"%d\" r=\"3.5\" fill=\"#555\"/><text x=\"%d\" y=\"%d\">"
                   "standard: the port on its own inputs</text>\n", x + 4, y - 4, x + 12, y);
    x += binned ? 340 : 260;
    if (binned)
        fprintf(o, "<path d=\"M%d %dv-10\" stroke=\"%s\" stroke-opacity=\".35\" stroke-width=\"3\""
                   "/><text x=\"%d\" y=\"%d\">injected: on the reference's inputs</text>\n",
                x + 4, y, INJ, x + 12, y);
    else
        fprintf(o, "<rect x=\"%d\" y=\"%d\" width=\"7\" height=\"7\" fill=\"none\" stroke=\"%s\" "
                   "stroke-width=\"1.5\"/><text x=\"%d\" y=\"%d\">injected: on the reference's "
                   "inputs</text>\n", x, y - 8, INJ, x + 12, y);
    plot_svg_components(o, r, g->left, y + 20);
}

/* The tolerance line: straight where every record has the same, else a step per bin. */
static void tolerance_line(FILE *o, const run_report *r, const plot_layout *g, const bin *b,
                           size_t nb)
{
    double one = NAN;
    bool same = true;
    for (size_t i = 0; i < nb; i++)
        if (!isnan(b[i].tol)) {
            if (isnan(one))
                one = b[i].tol;
            else if (b[i].tol != one)
                same = false;
        }
    if (isnan(one)) {
        if (r->plot_max_abs)
            fprintf(o, "<text x=\"%d\" y=\"%d\" fill=\"#555\">no tolerance line: max-abs is "
                       "judged per element, against atol + rtol x |reference|</text>\n",
                    g->right - 420, g->top - 14);
        return;
    }
    double w = (double)(g->right - g->left) / (double)nb;
    fputs("<g class=\"tolerance\"><path fill=\"none\" stroke=\"#7b3294\" stroke-width=\"1.2\" "
          "stroke-dasharray=\"6 3\" d=\"", o);
    if (same) {
        fprintf(o, "M%d %.1fH%d", g->left, plot_y(g, one), g->right);
    } else {
        bool open = false;
        for (size_t i = 0; i < nb; i++) {
            if (isnan(b[i].tol)) {
                open = false;
                continue;
            }
            fprintf(o, "%c%.1f %.1fH%.1f", open ? 'L' : 'M', g->left + w * (double)i,
                    plot_y(g, b[i].tol), g->left + w * (double)(i + 1));
            open = true;
        }
    }
    char t[32];
    sci(t, sizeof t, one);
    fprintf(o, "\"/><text x=\"%d\" y=\"%.1f\" text-anchor=\"end\" fill=\"#7b3294\">", g->right - 4,
            plot_y(g, one) - 4);
    if (same)
        fprintf(o, "tolerance: rel-L2 10 x rtol = %s", t);
    else
        fputs("tolerance: rel-L2 10 x rtol (by dtype)", o);
    fputs("</text></g>\n", o);
}

/* One point per record: circles (standard) and open squares (injected) in the component's
 * colour, each with a tooltip, linking to the record's details where the page has them. */
static void point(FILE *o, const run_report *r, const plot_layout *g, const run_row *row,
                  size_t k, int s, bool link)
{
    double v = plot_value(r, row, s);
    if (isnan(v))
        return;
    /* zeros in their strip, apart from the log axis */
    double y = v > 0 ? plot_y(g, v) : zero_y(g, s) + strip_h(g) / 2;
    plot_svg_mark(o, r, row, s, v, plot_x(g, k), y, link);
}

/* The bins' lines: per scenario and component one path of vertical strokes, and per scenario
 * one path of ticks in the strip of zeros; a transparent rect per bin carries its tooltip. */
static void bins(FILE *o, const run_report *r, const plot_layout *g, const bin *b, size_t nb)
{
    double w = (double)(g->right - g->left) / (double)nb, sw = w < 3 ? w : 3;
    for (int s = 1; s >= 0; s--) {
        for (int c = 0; c < (s ? 1 : NNP_COMPONENT_COUNT); c++) {
            bool any = false;
            for (size_t i = 0; i < nb; i++) {
                if (b[i].lo[s] > b[i].hi[s] || (!s && (int)b[i].comp != c))
                    continue;
                if (!any) {
                    if (s)
                        fprintf(o, "<path stroke=\"%s\" stroke-opacity=\".35\"", INJ);
                    else
                        fprintf(o, "<path stroke=\"#%06x\"", plot_color((nnp_component_kind)c));
                    fprintf(o, " stroke-width=\"%.2f\" d=\"", sw);
                    any = true;
                }
                double y1 = plot_y(g, b[i].hi[s]), y2 = plot_y(g, b[i].lo[s]);
                if (y2 - y1 < 2)
                    y2 = y1 + 2;
                fprintf(o, "M%.1f %.1fV%.1f", g->left + w * ((double)i + 0.5), y1, y2);
            }
            if (any)
                fputs("\"/>\n", o);
        }
        bool any = false;
        for (size_t i = 0; i < nb; i++) {
            if (!b[i].zeros[s])
                continue;
            if (!any)
                fprintf(o, "<path stroke=\"%s\" stroke-width=\"%.2f\" d=\"", s ? "#aaa" : "#555",
                        sw);
            any = true;
            fprintf(o, "M%.1f %.1fv%.1f", g->left + w * ((double)i + 0.5), zero_y(g, s) + 1,
                    strip_h(g) - 2);
        }
        if (any)
            fputs("\"/>\n", o);
    }
    fputs("<g fill=\"transparent\">", o);
    for (size_t i = 0; i < nb; i++) {
        if (!b[i].n)
            continue;
        char lo[32], hi[32];
        fprintf(o, "<rect x=\"%.1f\" y=\"%d\" width=\"%.2f\" height=\"%d\"><title>seq %llu",
                g->left + w * (double)i, g->top, w, g->bottom - g->top,
                (unsigned long long)b[i].first);
        if (b[i].last != b[i].first)
            fprintf(o, "-%llu (%zu records)", (unsigned long long)b[i].last, b[i].n);
        for (int s = 0; s < 2; s++) {
            fprintf(o, "; %s ", s ? "injected" : "standard");
            if (b[i].lo[s] <= b[i].hi[s]) {
                run_num(lo, sizeof lo, b[i].lo[s]);
                run_num(hi, sizeof hi, b[i].hi[s]);
                fprintf(o, "%s %s", plot_metric_name(r), lo);
                if (b[i].hi[s] != b[i].lo[s])
                    fprintf(o, " .. %s", hi);
                if (b[i].zeros[s])
                    fputs(", ", o);
            }
            if (b[i].zeros[s])
                fprintf(o, "%zu exact 0", b[i].zeros[s]);
            else if (b[i].lo[s] > b[i].hi[s])
                fputs("-", o);
        }
        fputs("</title></rect>", o);
    }
    fputs("</g>\n", o);
}

void html_plot(FILE *o, const run_report *r)
{
    plot_layout g;
    plot_layout_of(r, &g);
    size_t n = g.npoints, width = (size_t)(g.right - g.left);
    bool binned = n > POINT_MAX;
    size_t nb = binned ? (n < width ? n : width) : (n ? n : 1);
    bin *b = calloc(nb, sizeof *b);
    if (!b) {
        fputs("<p>The plot is left out: out of memory.</p>\n", o);
        return;
    }
    for (size_t i = 0; i < nb; i++)
        for (int s = 0; s < 2; s++) {
            b[i].lo[s] = INFINITY;
            b[i].hi[s] = -INFINITY;
            b[i].tol = NAN;
        }
    double tlo = INFINITY, thi = -INFINITY;
    size_t k = 0;
    for (size_t i = 0; i < r->nrows; i++) {
        const run_row *row = &r->rows[i];
        if (!plot_has(&g, row))
            continue;
        bin *x = &b[k * nb / (n ? n : 1)];
        if (!x->n)
            x->first = row->rec->seq;
        x->last = row->rec->seq;
        x->n++;
        for (int s = 0; s < 2; s++) {
            double v = plot_value(r, row, s);
            if (isnan(v))
                continue;
            if (v == 0) {
                x->zeros[s]++;
                continue;
            }
            if (!s && v > x->hi[0])
                x->comp = row->component;
            x->lo[s] = fmin(x->lo[s], v);
            x->hi[s] = fmax(x->hi[s], v);
        }
        double t = tolerance(r, row);
        if (t > 0 && isfinite(t)) {
            x->tol = isnan(x->tol) ? t : fmax(x->tol, t);
            tlo = fmin(tlo, t);
            thi = fmax(thi, t);
        }
        k++;
    }
    /* the axis reaches the tolerance, so that its line is where it says */
    if (tlo <= thi) {
        int e0 = (int)floor(log10(tlo)), e1 = (int)floor(log10(thi)) + 1;
        if (e0 < g.lo)
            g.lo = e0;
        if (e1 > g.hi)
            g.hi = e1;
    }
    fprintf(o, "<svg width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" font-family=\"sans-serif\" "
               "font-size=\"11\" role=\"img\" class=\"plot%s\" id=\"plot-svg\">\n", g.width,
            g.height, g.width, g.height, binned ? " binned" : "");
    fprintf(o, "<title>error per layer (%s, log scale) in the standard and injection "
               "scenarios%s</title>\n", plot_metric_name(r),
            binned ? ", one bin per pixel column from its smallest to its largest value" : "");
    fprintf(o, "<rect width=\"%d\" height=\"%d\" fill=\"#fff\"/>\n", g.width, g.height);
    axes(o, r, &g);
    tolerance_line(o, r, &g, b, nb);
    if (g.marker >= 0) {
        double x = plot_x(&g, (size_t)g.marker);
        fprintf(o, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#d62728\" "
                   "stroke-dasharray=\"5 3\"/>\n<text x=\"%.1f\" y=\"%d\" fill=\"#d62728\">first "
                   "divergence</text>\n", x, g.top, x, g.bottom, x + 4, g.top + 10);
    }
    if (binned) {
        bins(o, r, &g, b, nb);
    } else {
        /* a record has details on the page when it is one of the first failing ones */
        size_t failing = 0;
        for (int s = 1; s >= 0; s--) {
            k = 0;
            failing = 0;
            for (size_t i = 0; i < r->nrows; i++) {
                const run_row *row = &r->rows[i];
                bool fails = !run_row_quiet(row);
                bool link = fails && failing < HTML_DETAILS_MAX;
                failing += fails;
                if (!plot_has(&g, row))
                    continue;
                point(o, r, &g, row, k++, s, link);
            }
        }
    }
    legend(o, r, &g, binned);
    fputs("</svg>\n", o);
    free(b);
}
