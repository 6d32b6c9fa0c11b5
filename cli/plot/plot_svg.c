/*
 * plot_svg.c - the plot of `nnparity run` as SVG: error per layer output in execution order on a
 * log scale, the standard scenario as filled circles and the injection scenario as open squares,
 * coloured by component, with the first divergence marked. Inline in report.html (each point
 * links to its record's details) or as a file of its own (--plot FILE.svg).
 */
#include <math.h>

#include "cli.h"
#include "plot.h"

static const char STD_LINE[] = "#9aa3ad", INJ_LINE[] = "#c4c9cf";

static void polyline(FILE *o, const run_report *r, const plot_layout *g, int scenario)
{
    /* one polyline per run of points that have a value */
    bool open = false;
    size_t k = 0;
    for (size_t i = 0; i < r->nrows; i++) {
        const run_row *row = &r->rows[i];
        if (!plot_has(g, row))
            continue;
        double v = plot_value(r, row, scenario);
        if (isnan(v)) {
            if (open)
                fputs("\"/>\n", o);
            open = false;
        } else {
            if (!open)
                fprintf(o, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1\"%s points=\"",
                        scenario ? INJ_LINE : STD_LINE,
                        scenario ? " stroke-dasharray=\"4 3\"" : "");
            fprintf(o, "%s%.1f,%.1f", open ? " " : "", plot_x(g, k), plot_y(g, v));
            open = true;
        }
        k++;
    }
    if (open)
        fputs("\"/>\n", o);
}

static void point(FILE *o, const run_report *r, const plot_layout *g, const run_row *row,
                  size_t k, int scenario, bool links)
{
    double v = plot_value(r, row, scenario);
    if (!isnan(v))
        plot_svg_mark(o, r, row, scenario, v, plot_x(g, k), plot_y(g, v), links);
}

void plot_svg_mark(FILE *o, const run_report *r, const run_row *row, int scenario, double v,
                   double x, double y, bool links)
{
    char num[32];
    run_num(num, sizeof num, v);
    if (links)
        fprintf(o, "<a href=\"#row-%zu\">", row->ref);
    if (scenario)
        fprintf(o, "<rect x=\"%.1f\" y=\"%.1f\" width=\"7\" height=\"7\" fill=\"none\" "
                   "stroke=\"#%06x\" stroke-width=\"1.5\">", x - 3.5, y - 3.5,
                plot_color(row->component));
    else
        fprintf(o, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3.5\" fill=\"#%06x\">", x, y,
                plot_color(row->component));
    fprintf(o, "<title>%llu ", (unsigned long long)row->rec->seq);
    html_escape(o, row->rec->name);
    fprintf(o, " (%s, %s): %s %s %s</title>", nnp_component_name(row->component),
            nnp_label_name(row->label), scenario ? "injected" : "standard", plot_metric_name(r),
            num);
    fputs(scenario ? "</rect>" : "</circle>", o);
    fputs(links ? "</a>\n" : "\n", o);
}

static void axes(FILE *o, const run_report *r, const plot_layout *g)
{
    for (int e = g->lo; e <= g->hi; e++) {
        double y = plot_y_decade(g, e);
        fprintf(o, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#e6e8eb\"/>\n",
                g->left, y, g->right, y);
        fprintf(o, "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">1e%d</text>\n", g->left - 6,
                y + 4, e);
    }
    double z = plot_y_zero(g);
    fprintf(o, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#e6e8eb\" "
               "stroke-dasharray=\"2 3\"/>\n<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">0"
               "</text>\n", g->left, z, g->right, z, g->left - 6, z + 4);
    plot_svg_x_axis(o, r, g);
}

void plot_svg_x_axis(FILE *o, const run_report *r, const plot_layout *g)
{
    fprintf(o, "<path d=\"M%d %dV%dH%d\" fill=\"none\" stroke=\"#333\"/>\n", g->left, g->top,
            g->bottom + 4, g->right);
    size_t step = plot_tick_step(g), k = 0;
    for (size_t i = 0; i < r->nrows; i++) {
        const run_row *row = &r->rows[i];
        if (!plot_has(g, row))
            continue;
        if (k % step == 0)
            fprintf(o, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%llu</text>\n",
                    plot_x(g, k), g->bottom + 18, (unsigned long long)row->rec->seq);
        k++;
    }
    fprintf(o, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">%s in execution order (record "
               "seq)</text>\n", (g->left + g->right) / 2, g->bottom + 36,
            g->all_rows ? "records" : "layer outputs");
    fprintf(o, "<text x=\"%d\" y=\"%d\" font-size=\"13\" font-weight=\"bold\">error per layer: "
               "%s, log scale</text>\n", g->left, g->top - 14, plot_metric_name(r));
}

/* Two rows under the axis label: the two scenarios, then the components present. */
static void legend(FILE *o, const run_report *r, const plot_layout *g)
{
    int y = g->height - 28, x = g->left;
    fprintf(o, "<circle cx=\"%d\" cy=\"%d\" r=\"3.5\" fill=\"#555\"/><text x=\"%d\" y=\"%d\">"
               "standard: the port on its own inputs</text>\n", x + 4, y - 4, x + 12, y);
    x += 260;
    fprintf(o, "<rect x=\"%d\" y=\"%d\" width=\"7\" height=\"7\" fill=\"none\" stroke=\"#555\" "
               "stroke-width=\"1.5\"/><text x=\"%d\" y=\"%d\">injected: on the reference's "
               "inputs</text>\n", x, y - 8, x + 12, y);
    plot_svg_components(o, r, g->left, y + 20);
}

void plot_svg_components(FILE *o, const run_report *r, int x, int y)
{
    for (size_t k = 0; k < NNP_COMPONENT_COUNT; k++) {
        const run_component *c = &r->components[k];
        if (!c->rows)
            continue;
        fprintf(o, "<circle cx=\"%d\" cy=\"%d\" r=\"4\" fill=\"#%06x\"/><text x=\"%d\" y=\"%d\">"
                   "%s</text>\n", x + 4, y - 4, plot_color(c->kind), x + 12, y, c->name);
        x += 130;
    }
}

void plot_svg(FILE *o, const run_report *r, bool standalone)
{
    plot_layout g;
    plot_layout_of(r, &g);
    if (standalone)
        fputs("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n" CLI_MARK_SVG "\n", o);
    fprintf(o, "<svg %swidth=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" font-family=\"sans-serif\" "
               "font-size=\"11\" role=\"img\" class=\"plot\">\n",
            standalone ? "xmlns=\"http://www.w3.org/2000/svg\" " : "", g.width, g.height,
            g.width, g.height);
    fprintf(o, "<title>error per layer (%s, log scale) in the standard and injection "
               "scenarios</title>\n", plot_metric_name(r));
    fprintf(o, "<rect width=\"%d\" height=\"%d\" fill=\"#fff\"/>\n", g.width, g.height);
    axes(o, r, &g);
    if (g.marker >= 0) {
        double x = plot_x(&g, (size_t)g.marker);
        fprintf(o, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#d62728\" "
                   "stroke-dasharray=\"5 3\"/>\n<text x=\"%.1f\" y=\"%d\" fill=\"#d62728\">first "
                   "divergence</text>\n", x, g.top, x, g.bottom, x + 4, g.top + 10);
    }
    polyline(o, r, &g, 0);
    polyline(o, r, &g, 1);
    for (int s = 1; s >= 0; s--) {
        size_t k = 0;
        for (size_t i = 0; i < r->nrows; i++) {
            const run_row *row = &r->rows[i];
            if (!plot_has(&g, row))
                continue;
            point(o, r, &g, row, k++, s, !standalone);
        }
    }
    legend(o, r, &g);
    fputs("</svg>\n", o);
}
