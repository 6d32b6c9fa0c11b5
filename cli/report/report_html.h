/*
 * report_html.h - the parts of DIR/report.html that are drawn apart from the page itself: the
 * binned error plot (report_html_plot.c) and a failing pair's heatmap with its `where:` line and
 * hints (report_html_heat.c). Both write inline SVG that the page embeds as it is.
 */
#ifndef NNP_CLI_REPORT_HTML_H
#define NNP_CLI_REPORT_HTML_H

#include <stdio.h>

#include "report.h"

/* The page renders per-record details (worst element, histograms, where and hints) for the
 * first HTML_DETAILS_MAX failing records in execution order and heatmaps for the first
 * HTML_HEAT_MAX of them: a model whose every record fails downstream of one bug still gets a
 * page of a few megabytes. The table lists every record; the JSON report has every detail. */
enum { HTML_DETAILS_MAX = 200, HTML_HEAT_MAX = 50 };

/* The plot of rel-L2 (or max-abs) per record in execution order on a log axis: one point per
 * record while they fit, else one bin per pixel column drawn from its min to its max; exact
 * zeros in a strip of their own under the log axis, and a line at the tolerance. */
void html_plot(FILE *o, const run_report *r);

/* Where pair `pair` of `d` fails: a heatmap over the two axes holding most of its error (from
 * the pair's per-axis profile), its `where:` line and its hints. `heatmap` false: the lines
 * only. Writes nothing when the pair has no profile and no hint. */
void html_explain(FILE *o, const nnp_diff *d, size_t pair, bool heatmap);

#endif
