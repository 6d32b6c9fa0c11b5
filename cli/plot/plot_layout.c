/*
 * plot_layout.c - what the SVG and PNG plots of `nnparity run` share: which records are plotted,
 * the log-scale y axis, the pixel geometry and the component colours. Both renderers draw the
 * same picture from these, so the PNG is the SVG rasterized.
 */
#include <math.h>
#include <string.h>

#include "plot.h"

enum { WIDTH = 960, HEIGHT = 420, LEFT = 64, RIGHT = 20, TOP = 34, BOTTOM = 84,
       ZERO_GAP = 22, MAX_DECADES = 16 };

/* Layer outputs are plotted; an input repeats the output before it (and under injection is the
 * reference's own, with no error at all). A dump with no outputs plots every record. */
static bool any_output(const run_report *r)
{
    for (size_t i = 0; i < r->nrows; i++)
        if (!r->rows[i].input)
            return true;
    return false;
}

bool plot_has(const plot_layout *g, const run_row *row)
{
    return g->all_rows || !row->input;
}

double plot_value(const run_report *r, const run_row *row, int scenario)
{
    const nnp_diff_pair *p = scenario ? row->inj : row->std;
    if (!p || p->verdict == NNP_SHAPE_MISMATCH || p->verdict == NNP_DTYPE_MISMATCH)
        return NAN;
    return r->plot_max_abs ? p->metrics.max_abs : p->metrics.rel_l2;
}

const char *plot_metric_name(const run_report *r)
{
    return r->plot_max_abs ? "max-abs" : "rel-L2";
}

void plot_layout_of(const run_report *r, plot_layout *g)
{
    memset(g, 0, sizeof *g);
    g->width = WIDTH;
    g->height = HEIGHT;
    g->left = LEFT;
    g->right = WIDTH - RIGHT;
    g->top = TOP;
    g->bottom = HEIGHT - BOTTOM;
    g->all_rows = !any_output(r);
    g->marker = -1;
    double lo = INFINITY, hi = -INFINITY;
    for (size_t i = 0; i < r->nrows; i++) {
        const run_row *row = &r->rows[i];
        if (!plot_has(g, row))
            continue;
        if (g->marker < 0 && r->first_divergence >= 0 && (int64_t)i >= r->first_divergence)
            g->marker = (int64_t)g->npoints;
        g->npoints++;
        for (int s = 0; s < 2; s++) {
            double v = plot_value(r, row, s);
            if (v > 0 && isfinite(v)) {
                lo = fmin(lo, v);
                hi = fmax(hi, v);
            }
        }
    }
    if (lo > hi) {
        g->lo = -8;
        g->hi = 0;
        return;
    }
    g->lo = (int)floor(log10(lo));
    g->hi = (int)ceil(log10(hi));
    if (g->hi <= g->lo)
        g->hi = g->lo + 1;
    if (g->hi - g->lo > MAX_DECADES)
        g->lo = g->hi - MAX_DECADES;
}

double plot_x(const plot_layout *g, size_t point)
{
    size_t n = g->npoints ? g->npoints : 1;
    return g->left + ((double)point + 0.5) * (g->right - g->left) / (double)n;
}

double plot_y_zero(const plot_layout *g)
{
    return g->bottom;
}

double plot_y_decade(const plot_layout *g, int e)
{
    double span = (double)(g->bottom - ZERO_GAP - g->top);
    return g->bottom - ZERO_GAP - span * (e - g->lo) / (double)(g->hi - g->lo);
}

double plot_y(const plot_layout *g, double v)
{
    if (!(v > 0))
        return plot_y_zero(g);
    if (isinf(v))
        return g->top;
    double e = log10(v);
    if (e < g->lo)
        e = g->lo;
    if (e > g->hi)
        e = g->hi;
    double span = (double)(g->bottom - ZERO_GAP - g->top);
    return g->bottom - ZERO_GAP - span * (e - g->lo) / (double)(g->hi - g->lo);
}

size_t plot_tick_step(const plot_layout *g)
{
    /* 1, 2 or 5 times a power of ten, leaving at most 20 labels */
    for (size_t p = 1;; p *= 10)
        for (size_t m = 1; m <= 5; m += m == 1 ? 1 : 3)
            if (g->npoints <= 20 * m * p)
                return m * p;
}

unsigned plot_color(nnp_component_kind component)
{
    /* one hue per component, distinct for the colour-blind in the common cases */
    static const unsigned colors[NNP_COMPONENT_COUNT] = {
        [NNP_COMPONENT_EMBEDDING] = 0x9467bd,     [NNP_COMPONENT_ATTENTION] = 0x1f77b4,
        [NNP_COMPONENT_MLP] = 0x2ca02c,           [NNP_COMPONENT_NORMALIZATION] = 0xd62728,
        [NNP_COMPONENT_HEAD] = 0xff7f0e,          [NNP_COMPONENT_OTHER] = 0x7f7f7f};
    return colors[(unsigned)component < NNP_COMPONENT_COUNT ? component : NNP_COMPONENT_OTHER];
}
