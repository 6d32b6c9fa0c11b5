/*
 * plot.h - the plot of `nnparity run`: error per layer in execution order, both scenarios,
 * coloured by component; laid out once (plot_layout.c) and drawn as SVG, inline in report.html
 * or alone, or rasterized into a PNG.
 */
#ifndef NNP_CLI_PLOT_H
#define NNP_CLI_PLOT_H

#include "report/report.h"

/* The geometry both renderers draw with. */
typedef struct plot_layout {
    int width, height;
    int left, right, top, bottom; /* the plotting area, in pixels from the top left */
    int lo, hi;                   /* the y axis runs over the decades 10^lo .. 10^hi */
    size_t npoints;               /* records plotted */
    int64_t marker;               /* the point of the first divergence; -1 */
    bool all_rows;                /* no layer outputs: every record is plotted */
} plot_layout;
/* plot_layout.c */
void plot_layout_of(const run_report *r, plot_layout *g);
/* Whether a row is plotted: layer outputs are; inputs repeat the output before them. */
bool plot_has(const plot_layout *g, const run_row *row);
/* The value plotted for a row in scenario 0 (standard) or 1 (injected); NaN: none. */
double plot_value(const run_report *r, const run_row *row, int scenario);
double plot_x(const plot_layout *g, size_t point);
/* Zero and values below the axis sit on the "0" line under it; infinities at the top. */
double plot_y(const plot_layout *g, double v);
/* The y of the "0" line, and of decade e. */
double plot_y_zero(const plot_layout *g);
double plot_y_decade(const plot_layout *g, int e);
/* Label every n-th point on the x axis: at most 20 labels. */
size_t plot_tick_step(const plot_layout *g);
/* A component's colour, 0xRRGGBB. */
unsigned plot_color(nnp_component_kind component);
const char *plot_metric_name(const run_report *r);

/* plot_svg.c: the plot as SVG; `standalone` adds the XML declaration for a file of its own. */
void plot_svg(FILE *o, const run_report *r, bool standalone);
/* The axes' lines, the x axis's record numbers and both titles (shared with report.html's
 * binned plot). */
void plot_svg_x_axis(FILE *o, const run_report *r, const plot_layout *g);
/* One record's mark at (x, y): a circle (standard) or an open square (injected, scenario 1) in
 * its component's colour, with a tooltip of value v; `links` wraps it in a link to its row. */
void plot_svg_mark(FILE *o, const run_report *r, const run_row *row, int scenario, double v,
                   double x, double y, bool links);
/* The legend's row of components present, from (x, y). */
void plot_svg_components(FILE *o, const run_report *r, int x, int y);
/* plot_png.c: the plot rasterized into a PNG file (written whole or not at all). */
int plot_png(const run_report *r, const char *path);

#endif
