/*
 * plot_png.c - the plot of `nnparity run` rasterized into a PNG (--plot FILE.png) with libpng: the
 * same layout as the SVG (plot_layout.c), drawn with a small line, disc and square rasterizer and
 * a built-in 5x7 bitmap font, so that no font file is needed. The same encoder writes any RGB
 * image (cli_png_write_rgb: the heatmaps of `nnparity relevance`).
 */
#include <math.h>
#include <png.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "plot.h"

/* Printable ASCII from ' ' to '~', 7 rows of 5 pixels each; bit 4 is the leftmost pixel. The
 * descenders g, p, q and y are drawn as x-height body plus tail and sit 2 rows lower. */
static const unsigned char font[95][7] = {
    {0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00}, /*   */
    {0x04, 0x04, 0x04, 0x04, 0x04, 0x00, 0x04}, /* ! */
    {0x0a, 0x0a, 0x00, 0x00, 0x00, 0x00, 0x00}, /* " */
    {0x0a, 0x0a, 0x1f, 0x0a, 0x1f, 0x0a, 0x0a}, /* # */
    {0x04, 0x0f, 0x14, 0x0e, 0x05, 0x1e, 0x04}, /* $ */
    {0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03}, /* % */
    {0x0c, 0x12, 0x14, 0x08, 0x15, 0x12, 0x0d}, /* & */
    {0x04, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00}, /* ' */
    {0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02}, /* ( */
    {0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08}, /* ) */
    {0x00, 0x04, 0x15, 0x0e, 0x15, 0x04, 0x00}, /* asterisk */
    {0x00, 0x04, 0x04, 0x1f, 0x04, 0x04, 0x00}, /* + */
    {0x00, 0x00, 0x00, 0x00, 0x0c, 0x04, 0x08}, /* , */
    {0x00, 0x00, 0x00, 0x1f, 0x00, 0x00, 0x00}, /* - */
    {0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, 0x0c}, /* . */
    {0x00, 0x01, 0x02, 0x04, 0x08, 0x10, 0x00}, /* / */
    {0x0e, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0e}, /* 0 */
    {0x04, 0x0c, 0x04, 0x04, 0x04, 0x04, 0x0e}, /* 1 */
    {0x0e, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1f}, /* 2 */
    {0x1f, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0e}, /* 3 */
    {0x02, 0x06, 0x0a, 0x12, 0x1f, 0x02, 0x02}, /* 4 */
    {0x1f, 0x10, 0x1e, 0x01, 0x01, 0x11, 0x0e}, /* 5 */
    {0x06, 0x08, 0x10, 0x1e, 0x11, 0x11, 0x0e}, /* 6 */
    {0x1f, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08}, /* 7 */
    {0x0e, 0x11, 0x11, 0x0e, 0x11, 0x11, 0x0e}, /* 8 */
    {0x0e, 0x11, 0x11, 0x0f, 0x01, 0x02, 0x0c}, /* 9 */
    {0x00, 0x0c, 0x0c, 0x00, 0x0c, 0x0c, 0x00}, /* : */
    {0x00, 0x0c, 0x0c, 0x00, 0x0c, 0x04, 0x08}, /* ; */
    {0x02, 0x04, 0x08, 0x10, 0x08, 0x04, 0x02}, /* < */
    {0x00, 0x00, 0x1f, 0x00, 0x1f, 0x00, 0x00}, /* = */
    {0x08, 0x04, 0x02, 0x01, 0x02, 0x04, 0x08}, /* > */
    {0x0e, 0x11, 0x01, 0x02, 0x04, 0x00, 0x04}, /* ? */
    {0x0e, 0x11, 0x01, 0x0d, 0x15, 0x15, 0x0e}, /* @ */
    {0x0e, 0x11, 0x11, 0x1f, 0x11, 0x11, 0x11}, /* A */
    {0x1e, 0x11, 0x11, 0x1e, 0x11, 0x11, 0x1e}, /* B */
    {0x0e, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0e}, /* C */
    {0x1c, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1c}, /* D */
    {0x1f, 0x10, 0x10, 0x1e, 0x10, 0x10, 0x1f}, /* E */
    {0x1f, 0x10, 0x10, 0x1e, 0x10, 0x10, 0x10}, /* F */
    {0x0e, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0f}, /* G */
    {0x11, 0x11, 0x11, 0x1f, 0x11, 0x11, 0x11}, /* H */
    {0x0e, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0e}, /* I */
    {0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0c}, /* J */
    {0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11}, /* K */
    {0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1f}, /* L */
    {0x11, 0x1b, 0x15, 0x15, 0x11, 0x11, 0x11}, /* M */
    {0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11}, /* N */
    {0x0e, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0e}, /* O */
    {0x1e, 0x11, 0x11, 0x1e, 0x10, 0x10, 0x10}, /* P */
    {0x0e, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0d}, /* Q */
    {0x1e, 0x11, 0x11, 0x1e, 0x14, 0x12, 0x11}, /* R */
    {0x0f, 0x10, 0x10, 0x0e, 0x01, 0x01, 0x1e}, /* S */
    {0x1f, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04}, /* T */
    {0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0e}, /* U */
    {0x11, 0x11, 0x11, 0x11, 0x11, 0x0a, 0x04}, /* V */
    {0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0a}, /* W */
    {0x11, 0x11, 0x0a, 0x04, 0x0a, 0x11, 0x11}, /* X */
    {0x11, 0x11, 0x0a, 0x04, 0x04, 0x04, 0x04}, /* Y */
    {0x1f, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1f}, /* Z */
    {0x0e, 0x08, 0x08, 0x08, 0x08, 0x08, 0x0e}, /* [ */
    {0x00, 0x10, 0x08, 0x04, 0x02, 0x01, 0x00}, /* backslash */
    {0x0e, 0x02, 0x02, 0x02, 0x02, 0x02, 0x0e}, /* ] */
    {0x04, 0x0a, 0x11, 0x00, 0x00, 0x00, 0x00}, /* ^ */
    {0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x1f}, /* _ */
    {0x08, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00}, /* ` */
    {0x00, 0x00, 0x0e, 0x01, 0x0f, 0x11, 0x0f}, /* a */
    {0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x1e}, /* b */
    {0x00, 0x00, 0x0e, 0x10, 0x10, 0x11, 0x0e}, /* c */
    {0x01, 0x01, 0x0d, 0x13, 0x11, 0x11, 0x0f}, /* d */
    {0x00, 0x00, 0x0e, 0x11, 0x1f, 0x10, 0x0e}, /* e */
    {0x06, 0x09, 0x08, 0x1c, 0x08, 0x08, 0x08}, /* f */
    {0x0f, 0x11, 0x11, 0x13, 0x0d, 0x01, 0x0e}, /* g */
    {0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x11}, /* h */
    {0x04, 0x00, 0x0c, 0x04, 0x04, 0x04, 0x0e}, /* i */
    {0x02, 0x00, 0x06, 0x02, 0x02, 0x12, 0x0c}, /* j */
    {0x10, 0x10, 0x12, 0x14, 0x18, 0x14, 0x12}, /* k */
    {0x0c, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0e}, /* l */
    {0x00, 0x00, 0x1a, 0x15, 0x15, 0x11, 0x11}, /* m */
    {0x00, 0x00, 0x16, 0x19, 0x11, 0x11, 0x11}, /* n */
    {0x00, 0x00, 0x0e, 0x11, 0x11, 0x11, 0x0e}, /* o */
    {0x1e, 0x11, 0x11, 0x11, 0x1e, 0x10, 0x10}, /* p */
    {0x0f, 0x11, 0x11, 0x11, 0x0f, 0x01, 0x01}, /* q */
    {0x00, 0x00, 0x16, 0x19, 0x10, 0x10, 0x10}, /* r */
    {0x00, 0x00, 0x0e, 0x10, 0x0e, 0x01, 0x1e}, /* s */
    {0x08, 0x08, 0x1c, 0x08, 0x08, 0x09, 0x06}, /* t */
    {0x00, 0x00, 0x11, 0x11, 0x11, 0x13, 0x0d}, /* u */
    {0x00, 0x00, 0x11, 0x11, 0x11, 0x0a, 0x04}, /* v */
    {0x00, 0x00, 0x11, 0x11, 0x15, 0x15, 0x0a}, /* w */
    {0x00, 0x00, 0x11, 0x0a, 0x04, 0x0a, 0x11}, /* x */
    {0x11, 0x11, 0x11, 0x11, 0x0f, 0x01, 0x0e}, /* y */
    {0x00, 0x00, 0x1f, 0x02, 0x04, 0x08, 0x1f}, /* z */
    {0x02, 0x04, 0x04, 0x08, 0x04, 0x04, 0x02}, /* { */
    {0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04}, /* | */
    {0x08, 0x04, 0x04, 0x02, 0x04, 0x04, 0x08}, /* } */
    {0x00, 0x00, 0x08, 0x15, 0x02, 0x00, 0x00}, /* ~ */
};

typedef struct {
    int w, h;
    unsigned char *px; /* RGB, row-major */
} canvas;

static void dot(canvas *c, int x, int y, unsigned rgb)
{
    if (x < 0 || y < 0 || x >= c->w || y >= c->h)
        return;
    unsigned char *p = c->px + ((size_t)y * (size_t)c->w + (size_t)x) * 3;
    p[0] = (unsigned char)(rgb >> 16);
    p[1] = (unsigned char)(rgb >> 8);
    p[2] = (unsigned char)rgb;
}

/* A 1-pixel line; `dash` > 0 draws dash pixels on, dash off. */
static void line(canvas *c, double x0, double y0, double x1, double y1, unsigned rgb, int dash)
{
    int ax = (int)lround(x0), ay = (int)lround(y0), bx = (int)lround(x1), by = (int)lround(y1);
    int dx = abs(bx - ax), dy = -abs(by - ay), sx = ax < bx ? 1 : -1, sy = ay < by ? 1 : -1;
    int err = dx + dy;
    for (int k = 0;; k++) {
        if (!dash || (k / dash) % 2 == 0)
            dot(c, ax, ay, rgb);
        if (ax == bx && ay == by)
            break;
        int e2 = 2 * err;
        if (e2 >= dy) {
            err += dy;
            ax += sx;
        }
        if (e2 <= dx) {
            err += dx;
            ay += sy;
        }
    }
}

static void disc(canvas *c, double cx, double cy, double r, unsigned rgb)
{
    for (int y = (int)floor(cy - r); y <= (int)ceil(cy + r); y++)
        for (int x = (int)floor(cx - r); x <= (int)ceil(cx + r); x++)
            if ((x - cx) * (x - cx) + (y - cy) * (y - cy) <= r * r)
                dot(c, x, y, rgb);
}

/* An open square of side 2*half+1 with a 2-pixel outline. */
static void square(canvas *c, double cx, double cy, int half, unsigned rgb)
{
    int x0 = (int)lround(cx) - half, y0 = (int)lround(cy) - half;
    for (int k = 0; k < 2; k++) {
        int a = x0 + k, b = y0 + k, e = 2 * (half - k);
        line(c, a, b, a + e, b, rgb, 0);
        line(c, a, b + e, a + e, b + e, rgb, 0);
        line(c, a, b, a, b + e, rgb, 0);
        line(c, a + e, b, a + e, b + e, rgb, 0);
    }
}

enum { GLYPH_ADVANCE = 6 };

/* Text with its baseline at y; align -1 left, 0 centre, 1 right of x. */
static void text(canvas *c, int x, int y, const char *s, unsigned rgb, int align)
{
    int width = (int)strlen(s) * GLYPH_ADVANCE - 1;
    x -= align < 0 ? 0 : align == 0 ? width / 2 : width;
    for (; *s; s++, x += GLYPH_ADVANCE) {
        unsigned char ch = (unsigned char)*s;
        if (ch < 32 || ch >= 127)
            ch = '?';
        const unsigned char *g = font[ch - 32];
        int top = y - 7 + (strchr("gpqy", ch) ? 2 : 0);
        for (int row = 0; row < 7; row++)
            for (int col = 0; col < 5; col++)
                if (g[row] & (0x10 >> col))
                    dot(c, x + col, top + row, rgb);
    }
}

static void axes(canvas *c, const run_report *r, const plot_layout *g)
{
    char buf[64];
    for (int e = g->lo; e <= g->hi; e++) {
        double y = plot_y_decade(g, e);
        line(c, g->left, y, g->right, y, 0xe6e8eb, 0);
        snprintf(buf, sizeof buf, "1e%d", e);
        text(c, g->left - 6, (int)lround(y) + 4, buf, 0x333333, 1);
    }
    double z = plot_y_zero(g);
    line(c, g->left, z, g->right, z, 0xd5d8dc, 2);
    text(c, g->left - 6, (int)lround(z) + 4, "0", 0x333333, 1);
    line(c, g->left, g->top, g->left, g->bottom + 4, 0x333333, 0);
    line(c, g->left, g->bottom + 4, g->right, g->bottom + 4, 0x333333, 0);
    size_t step = plot_tick_step(g), k = 0;
    for (size_t i = 0; i < r->nrows; i++) {
        const run_row *row = &r->rows[i];
        if (!plot_has(g, row))
            continue;
        if (k % step == 0) {
            snprintf(buf, sizeof buf, "%llu", (unsigned long long)row->rec->seq);
            text(c, (int)lround(plot_x(g, k)), g->bottom + 18, buf, 0x333333, 0);
        }
        k++;
    }
    snprintf(buf, sizeof buf, "%s in execution order (record seq)",
             g->all_rows ? "records" : "layer outputs");
    text(c, (g->left + g->right) / 2, g->bottom + 36, buf, 0x333333, 0);
    snprintf(buf, sizeof buf, "error per layer: %s, log scale", plot_metric_name(r));
    text(c, g->left, g->top - 14, buf, 0x111111, -1);
}

static void legend(canvas *c, const run_report *r, const plot_layout *g)
{
    int y = g->height - 28, x = g->left;
    disc(c, x + 4, y - 4, 3.5, 0x555555);
    text(c, x + 12, y, "standard: the port on its own inputs", 0x333333, -1);
    x += 260;
    square(c, x + 3, y - 4, 3, 0x555555);
    text(c, x + 12, y, "injected: on the reference's inputs", 0x333333, -1);
    y += 20;
    x = g->left;
    for (size_t k = 0; k < NNP_COMPONENT_COUNT; k++) {
        const run_component *comp = &r->components[k];
        if (!comp->rows)
            continue;
        disc(c, x + 4, y - 4, 4, plot_color(comp->kind));
        text(c, x + 12, y, comp->name, 0x333333, -1);
        x += 130;
    }
}

static void draw(canvas *c, const run_report *r, const plot_layout *g)
{
    memset(c->px, 0xff, (size_t)c->w * (size_t)c->h * 3);
    axes(c, r, g);
    if (g->marker >= 0) {
        double x = plot_x(g, (size_t)g->marker);
        line(c, x, g->top, x, g->bottom, 0xd62728, 4);
        text(c, (int)lround(x) + 4, g->top + 10, "first divergence", 0xd62728, -1);
    }
    for (int s = 0; s < 2; s++) {
        double px = NAN, py = NAN;
        size_t k = 0;
        for (size_t i = 0; i < r->nrows; i++) {
            const run_row *row = &r->rows[i];
            if (!plot_has(g, row))
                continue;
            double v = plot_value(r, row, s), x = plot_x(g, k++), y = plot_y(g, v);
            if (!isnan(v) && !isnan(px))
                line(c, px, py, x, y, s ? 0xc4c9cf : 0x9aa3ad, s ? 3 : 0);
            px = isnan(v) ? NAN : x;
            py = y;
        }
    }
    for (int s = 1; s >= 0; s--) {
        size_t k = 0;
        for (size_t i = 0; i < r->nrows; i++) {
            const run_row *row = &r->rows[i];
            if (!plot_has(g, row))
                continue;
            double v = plot_value(r, row, s), x = plot_x(g, k++);
            if (isnan(v))
                continue;
            if (s)
                square(c, x, plot_y(g, v), 3, plot_color(row->component));
            else
                disc(c, x, plot_y(g, v), 3.5, plot_color(row->component));
        }
    }
    legend(c, r, g);
}

typedef struct {
    unsigned char *data;
    size_t len, cap;
} membuf;

static void write_cb(png_structp png, png_bytep data, png_size_t n)
{
    membuf *m = png_get_io_ptr(png);
    if (m->len + n > m->cap) {
        size_t cap = m->cap ? m->cap : 65536;
        while (cap < m->len + n)
            cap *= 2;
        unsigned char *p = realloc(m->data, cap);
        if (!p)
            png_error(png, "out of memory");
        m->data = p;
        m->cap = cap;
    }
    memcpy(m->data + m->len, data, n);
    m->len += n;
}

static void flush_cb(png_structp png)
{
    (void)png;
}

/* Encode the canvas; libpng reports errors by longjmp, so this function keeps nothing in locals
 * that changes after setjmp. */
static bool encode(const canvas *c, png_bytep *rows, membuf *m)
{
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info) {
        png_destroy_write_struct(&png, NULL);
        return false;
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        return false;
    }
    png_set_write_fn(png, m, write_cb, flush_cb);
    png_set_IHDR(png, info, (png_uint_32)c->w, (png_uint_32)c->h, 8, PNG_COLOR_TYPE_RGB,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    /* who wrote it, right after the header: how nnparity knows the file is its own to replace */
    png_text text = {.compression = PNG_TEXT_COMPRESSION_NONE, .key = CLI_MARK_PNG_KEY,
                     .text = CLI_MARK_PNG_VALUE};
    png_set_text(png, info, &text, 1);
    png_write_info(png, info);
    png_write_image(png, rows);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    return true;
}

int plot_png(const run_report *r, const char *path)
{
    plot_layout g;
    plot_layout_of(r, &g);
    canvas c = {g.width, g.height, malloc((size_t)g.width * (size_t)g.height * 3)};
    png_bytep *rows = malloc((size_t)g.height * sizeof *rows);
    membuf m = {0};
    int rc;
    if (!c.px || !rows) {
        rc = run_nomem();
        goto out;
    }
    draw(&c, r, &g);
    for (int y = 0; y < c.h; y++)
        rows[y] = c.px + (size_t)y * (size_t)c.w * 3;
    if (!encode(&c, rows, &m)) {
        cli_error("%s: cannot encode the PNG", path);
        rc = EXIT_INTERNAL;
        goto out;
    }
    rc = cli_write_file(path, (const char *)m.data, m.len);
out:
    free(m.data);
    free(rows);
    free(c.px);
    return rc;
}

int cli_png_write_rgb(const char *path, int w, int h, const unsigned char *rgb)
{
    /* encode() only reads the canvas */
    canvas c = {w, h, (unsigned char *)rgb};
    png_bytep *rows = malloc((size_t)(h > 0 ? h : 1) * sizeof *rows);
    membuf m = {0};
    int rc;
    if (!rows) {
        cli_error("out of memory");
        return EXIT_INTERNAL;
    }
    for (int y = 0; y < h; y++)
        rows[y] = c.px + (size_t)y * (size_t)w * 3;
    if (w <= 0 || h <= 0 || !encode(&c, rows, &m)) {
        cli_error("%s: cannot encode the PNG", path);
        rc = EXIT_INTERNAL;
    } else {
        rc = cli_write_file(path, (const char *)m.data, m.len);
    }
    free(m.data);
    free(rows);
    return rc;
}
