/*
 * report_html_heat.c - where a failing pair's error lies, on report.html: a heatmap over the two
 * axes that hold most of it, then the pair's `where:` line and its hints (the same lines the text
 * report prints). The profile keeps each axis' shares of the squared error, not their joint
 * distribution, so the cells show the product of the two axes' shares, and bars beside them show
 * each axis' own shares exactly (with a tooltip per bar).
 */
#include <math.h>
#include <string.h>

#include "report_html.h"

/* At most this many cells along an axis: longer axes are summed into equal runs of indices, so
 * that a heatmap stays a few tens of kilobytes however large the tensor. */
enum { HEAT_MAX = 24, HEAT_PX = 240, BAR_PX = 36 };

/* How much an axis concentrates its error: the largest share times the axis' size (1 for an
 * even spread, the size itself when one index holds it all). */
static double concentration(const nnp_axis_profile *ax)
{
    double most = 0;
    for (uint64_t i = 0; i < ax->size; i++)
        most = fmax(most, ax->sq_share[i]);
    return most * (double)ax->size;
}

/* The two axes to draw (b is -1 when only one axis has more than one index); false: none. */
static bool pick_axes(const nnp_profile *pr, int *a, int *b)
{
    double ca = -1, cb = -1;
    *a = *b = -1;
    for (uint32_t k = 0; k < pr->ndim; k++) {
        const nnp_axis_profile *ax = &pr->axes[k];
        if (ax->size < 2 || !ax->sq_share)
            continue;
        double c = concentration(ax);
        if (c > ca) {
            *b = *a;
            cb = ca;
            *a = (int)k;
            ca = c;
        } else if (c > cb) {
            *b = (int)k;
            cb = c;
        }
    }
    if (*a < 0)
        return false;
    if (*b >= 0 && *b < *a) { /* draw them in the order of the shape: rows, then columns */
        int t = *a;
        *a = *b;
        *b = t;
    }
    return true;
}

/* The axis' shares summed into n cells of equal runs of indices; returns n. */
static int cells(const nnp_axis_profile *ax, double *out)
{
    int n = ax->size < HEAT_MAX ? (int)ax->size : HEAT_MAX;
    for (int c = 0; c < n; c++)
        out[c] = 0;
    for (uint64_t i = 0; i < ax->size; i++)
        out[(uint64_t)n * i / ax->size] += ax->sq_share[i];
    return n;
}

/* The indices cell c of n covers along an axis of `size`, for a tooltip. */
static void cell_range(FILE *o, uint64_t size, int c, int n)
{
    uint64_t from = (size * (uint64_t)c + (uint64_t)n - 1) / (uint64_t)n;
    uint64_t to = (size * (uint64_t)(c + 1) + (uint64_t)n - 1) / (uint64_t)n - 1;
    if (from == to)
        fprintf(o, "index %llu", (unsigned long long)from);
    else
        fprintf(o, "indices %llu-%llu", (unsigned long long)from, (unsigned long long)to);
}

static void axis_title(FILE *o, const nnp_axis_profile *ax, int k)
{
    html_escape(o, ax->name);
    if (strncmp(ax->name, "axis", 4) != 0)
        fprintf(o, " (axis %d)", k);
}

static void heatmap(FILE *o, const nnp_profile *pr)
{
    int ka, kb;
    if (!pick_axes(pr, &ka, &kb))
        return;
    static const nnp_axis_profile one = {"", 1, NULL, NULL};
    static const double whole[1] = {1};
    const nnp_axis_profile *A = &pr->axes[ka], *B = kb >= 0 ? &pr->axes[kb] : &one;
    double sa[HEAT_MAX], sb[HEAT_MAX];
    int na = cells(A, sa), nb = B->sq_share ? cells(B, sb) : (sb[0] = whole[0], 1);
    /* rows along A, columns along B; cells square while they fit HEAT_PX */
    int cw = HEAT_PX / (nb > na ? nb : na);
    cw = cw > 24 ? 24 : cw < 6 ? 6 : cw;
    int ch = cw, x0 = BAR_PX + 4, y0 = BAR_PX + 4;
    int w = x0 + nb * cw + 2, h = y0 + na * ch + 30;
    w = w < 200 ? 200 : w; /* room for the axes' names under it */
    double most = 0;
    for (int i = 0; i < na; i++)
        for (int j = 0; j < nb; j++)
            most = fmax(most, sa[i] * sb[j]);
    double ma = 0, mb = 0;
    for (int i = 0; i < na; i++)
        ma = fmax(ma, sa[i]);
    for (int j = 0; j < nb; j++)
        mb = fmax(mb, sb[j]);
    fprintf(o, "<svg class=\"heat\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
               "font-family=\"sans-serif\" font-size=\"10\" role=\"img\"><title>share of the "
               "squared error over ", w, h, w, h);
    axis_title(o, A, ka);
    if (kb >= 0) {
        fputs(" and ", o);
        axis_title(o, B, kb);
    }
    fputs("</title>\n", o);
    fprintf(o, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"#f5f6f8\"/>\n", x0, y0,
            nb * cw, na * ch);
    /* the cells: one rect each where the product is not 0, its opacity the share */
    fputs("<g fill=\"#b3191c\">", o);
    for (int i = 0; i < na; i++)
        for (int j = 0; j < nb; j++) {
            double v = most > 0 ? sa[i] * sb[j] / most : 0;
            if (v < 0.005)
                continue;
            fprintf(o, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill-opacity=\"%.2f\"/>",
                    x0 + j * cw, y0 + i * ch, cw, ch, v);
        }
    fputs("</g>\n<g fill=\"#1f77b4\">", o);
    /* each axis' own shares: bars along the left (A) and the top (B), with their figures */
    for (int i = 0; i < na; i++) {
        double len = ma > 0 ? BAR_PX * sa[i] / ma : 0;
        fprintf(o, "<rect x=\"%.1f\" y=\"%d\" width=\"%.1f\" height=\"%d\"><title>", x0 - 2 - len,
                y0 + i * ch, len > 0.5 ? len : 0.5, ch - 1);
        axis_title(o, A, ka);
        fputc(' ', o);
        cell_range(o, A->size, i, na);
        fprintf(o, ": %.3g%% of the squared error</title></rect>", 100 * sa[i]);
    }
    if (kb >= 0)
        for (int j = 0; j < nb; j++) {
            double len = mb > 0 ? BAR_PX * sb[j] / mb : 0;
            fprintf(o, "<rect x=\"%d\" y=\"%.1f\" width=\"%d\" height=\"%.1f\"><title>",
                    x0 + j * cw, y0 - 2 - len, cw - 1, len > 0.5 ? len : 0.5);
            axis_title(o, B, kb);
            fputc(' ', o);
            cell_range(o, B->size, j, nb);
            fprintf(o, ": %.3g%% of the squared error</title></rect>", 100 * sb[j]);
        }
    fputs("</g>\n", o);
    /* the axes' names: rows on the left, columns under the cells */
    fprintf(o, "<text x=\"2\" y=\"%d\">rows: ", h - 17);
    axis_title(o, A, ka);
    fprintf(o, " (%llu)</text>\n<text x=\"2\" y=\"%d\">", (unsigned long long)A->size, h - 4);
    if (kb >= 0) {
        fputs("columns: ", o);
        axis_title(o, B, kb);
        fprintf(o, " (%llu)", (unsigned long long)B->size);
    }
    fputs("</text>\n</svg>\n", o);
}

void html_explain(FILE *o, const nnp_diff *d, size_t pair, bool draw)
{
    const nnp_profile *pr = nnp_diff_profile(d, pair);
    size_t nh = nnp_diff_hint_count(d, pair);
    if (!pr && !nh)
        return;
    fputs("<div class=\"explain\">", o);
    if (pr && draw)
        heatmap(o, pr);
    fputs("<ul class=\"mono\">", o);
    if (pr && pr->where) {
        fputs("<li>where: ", o);
        html_escape(o, pr->where);
        if (pr->sampled)
            fprintf(o, " (from a sample of %llu elements)", (unsigned long long)pr->elements);
        fputs("</li>", o);
    }
    for (size_t k = 0; k < nh; k++) {
        const nnp_hint *h = nnp_diff_hint_at(d, pair, k);
        if (!h || !h->text)
            continue;
        fputs("<li>hint: ", o);
        html_escape(o, h->text);
        fprintf(o, " (fit %.3f)</li>", h->fit);
    }
    fputs("</ul>", o);
    if (pr && draw)
        fputs("<p class=\"note\">Bars: each axis' share of the squared error; cells: the product "
              "of the two (the profile keeps each axis' shares, not their joint).</p>", o);
    fputs("</div>\n", o);
}
