/*
 * cmd_relevance.c - `nnparity relevance`: which image patches an output relied on, from the
 * attention maps (and their gradients) in a dump: rollout or gradient-weighted relevance
 * (src/relevance.c), optionally mapped back from LLM image tokens through a pixel-shuffle
 * projector, written as safetensors, a JET heatmap and an overlay on the input picture.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"

static const char relevance_usage[] =
    "usage: nnparity relevance --attn PATTERN [options] FILE\n"
    "\n"
    "Relevance of each input token for one query row, from the attention probabilities recorded\n"
    "per layer ([heads, N, N] or [1, heads, N, N], post-softmax, rows are queries) and, for the\n"
    "gradient methods, their gradients; mapped onto the image patches, written as safetensors\n"
    "and PNG heatmaps (docs/relevance.md).\n"
    "\n"
    "layers\n"
    "  --attn PATTERN        attention maps: records whose name matches this POSIX extended\n"
    "                        regex (as `nnparity ls` prints them), in execution order, e.g.\n"
    "                        '/attn_probs$'\n"
    "  --grad PATTERN        their gradients, one per layer (default: <module>/grad_<role> of\n"
    "                        each map, as nnparity.tap(name, attn, grad=True) records them)\n"
    "  --start-layer L       skip the layers before L (0-based; default 0)\n"
    "method\n"
    "  --method M            rollout (default), grad_rollout, chefer or chefer_rollout\n"
    "  --fusion F            how rollout fuses the heads: mean (default), max or min\n"
    "  --discard R           rollout methods: zero the floor(R*N*N) smallest entries of each\n"
    "                        fused map (never entry 0,0); 0 <= R < 1 (default 0)\n"
    "  --query-row Q         the row whose relevance is shown: 0 (default, CLS) or 'last'\n"
    "patches\n"
    "  --prefix P            tokens before the patches: CLS and registers (default 1)\n"
    "  --grid HxW            the patch grid (default: a square one)\n"
    "back-mapping through a pixel-shuffle projector (downsample 0.5, InternVL style)\n"
    "  --backmap v1|v2       map LLM image tokens back to ViT patches\n"
    "  --llm-span A:B        the image tokens in the LLM sequence, A included, B not\n"
    "  --tile-tokens T       image tokens per tile (default 256); --grid is one tile's patches\n"
    "  --backmap-mode M      copy (default): each patch gets its token's value; split: a quarter\n"
    "  --tile K              the tile drawn in the PNGs (default 0)\n"
    "output\n"
    "  --norm N              min-max (default) or max, for the heatmap\n"
    "  --clip-percentile P   clip the map at its P-th percentile first (0 < P <= 100)\n"
    "  --out DIR             write DIR/relevance.safetensors and DIR/heatmap.png\n"
    "  --image IMG.png       also DIR/overlay.png: the heatmap upsampled over the picture\n"
    "  --scale K             heatmap pixels per patch (default: the longer side >= 256 px)\n"
    "  --force               replace files in DIR that nnparity did not write (by default\n"
    "                        only its own are replaced; docs/cli.md)\n"
    "  -j, --threads N       threads (default: one per CPU)\n"
    "  -h                    this help\n"
    "\n"
    "examples:\n"
    "  nnparity relevance --attn '/attn_probs$' --out rel vit.safetensors\n"
    "  nnparity relevance --attn '/attn_probs$' --method chefer --image cat.png \\\n"
    "      --out rel vit.safetensors\n"
    "  nnparity relevance --attn 'attn$' --backmap v2 --llm-span 5:261 --out rel \\\n"
    "      vlm.safetensors\n";

typedef struct {
    const char *file, *attn, *grad, *out, *image;
    nnp_relevance_options rel;
    bool fusion_set, discard_set, query_last, prefix_set, grid_set, span_set;
    bool tile_tokens_set, mode_set, tile_set, split, force;
    uint64_t query, prefix, gh, gw, span_a, span_b, tile_tokens, tile;
    int backmap, scale;
    nnp_norm norm;
    double clip;
} rel_args;

static const char *const method_names[] = {"rollout", "grad_rollout", "chefer", "chefer_rollout"};
static const char *const fusion_names[] = {"mean", "max", "min"};
static const char *const norm_names[] = {"min-max", "max"};

static int pick(const char *s, const char *const *names, int n)
{
    for (int i = 0; i < n; i++)
        if (strcmp(s, names[i]) == 0)
            return i;
    return -1;
}

/* A decimal count without sign or suffix, at most max. */
static bool parse_count(const char *s, uint64_t max, uint64_t *out)
{
    if (!*s || strspn(s, "0123456789") != strlen(s) || strlen(s) > 12)
        return false;
    *out = strtoull(s, NULL, 10);
    return *out <= max;
}

/* "AxB" or "A:B" with two counts. */
static bool parse_pair(const char *s, char sep, uint64_t *a, uint64_t *b)
{
    const char *at = strchr(s, sep);
    if (!at || at - s > 12)
        return false;
    char first[16];
    memcpy(first, s, (size_t)(at - s));
    first[at - s] = 0;
    return parse_count(first, UINT32_MAX, a) && parse_count(at + 1, UINT32_MAX, b);
}

static bool parse_real(const char *s, double *out)
{
    char *end;
    double v = strtod(s, &end);
    if (!*s || *end || !isfinite(v))
        return false;
    *out = v;
    return true;
}

#define BAD(...) return cli_usage_error(&cli_relevance, __VA_ARGS__)

enum {
    O_ATTN = 256, O_GRAD, O_METHOD, O_FUSION, O_DISCARD, O_START, O_QUERY, O_PREFIX, O_GRID,
    O_BACKMAP, O_SPAN, O_TILE_TOKENS, O_MODE, O_TILE, O_NORM, O_CLIP, O_OUT, O_IMAGE, O_SCALE,
    O_FORCE
};

static int parse_option(rel_args *a, int c, const char *v)
{
    int k;
    double d;
    uint64_t u;
    switch (c) {
    case O_ATTN: a->attn = v; break;
    case O_GRAD: a->grad = v; break;
    case O_OUT: a->out = v; break;
    case O_IMAGE: a->image = v; break;
    case O_FORCE: a->force = true; break;
    case O_METHOD:
        if ((k = pick(v, method_names, 4)) < 0)
            BAD("--method takes rollout, grad_rollout, chefer or chefer_rollout, not '%s'", v);
        a->rel.method = (nnp_relevance_method)k;
        break;
    case O_FUSION:
        if ((k = pick(v, fusion_names, 3)) < 0)
            BAD("--fusion takes mean, max or min, not '%s'", v);
        a->rel.fusion = (nnp_head_fusion)k;
        a->fusion_set = true;
        break;
    case O_DISCARD:
        if (!parse_real(v, &d) || d < 0 || d >= 1)
            BAD("--discard takes a ratio R with 0 <= R < 1, not '%s'", v);
        a->rel.discard = d;
        a->discard_set = true;
        break;
    case O_START:
        if (!parse_count(v, SIZE_MAX, &u))
            BAD("--start-layer takes a layer number from 0, not '%s'", v);
        a->rel.start_layer = (size_t)u;
        break;
    case O_QUERY:
        a->query_last = strcmp(v, "last") == 0;
        if (!a->query_last && !parse_count(v, UINT64_MAX, &a->query))
            BAD("--query-row takes a row number from 0 or 'last', not '%s'", v);
        break;
    case O_PREFIX:
        if (!parse_count(v, UINT32_MAX, &a->prefix))
            BAD("--prefix takes a number of tokens, not '%s'", v);
        a->prefix_set = true;
        break;
    case O_GRID:
        if (!parse_pair(v, 'x', &a->gh, &a->gw) || !a->gh || !a->gw)
            BAD("--grid takes HxW (patch rows x columns, e.g. 14x14), not '%s'", v);
        a->grid_set = true;
        break;
    case O_BACKMAP:
        if (strcmp(v, "v1") && strcmp(v, "v2"))
            BAD("--backmap takes v1 or v2 (the pixel-shuffle version), not '%s'", v);
        a->backmap = v[1] - '0';
        break;
    case O_SPAN:
        if (!parse_pair(v, ':', &a->span_a, &a->span_b) || a->span_a >= a->span_b)
            BAD("--llm-span takes A:B with A < B (image tokens A to B-1), not '%s'", v);
        a->span_set = true;
        break;
    case O_TILE_TOKENS:
        if (!parse_count(v, UINT32_MAX, &a->tile_tokens) || !a->tile_tokens)
            BAD("--tile-tokens takes a number of tokens per tile, not '%s'", v);
        a->tile_tokens_set = true;
        break;
    case O_MODE:
        if (strcmp(v, "copy") && strcmp(v, "split"))
            BAD("--backmap-mode takes copy or split, not '%s'", v);
        a->split = strcmp(v, "split") == 0;
        a->mode_set = true;
        break;
    case O_TILE:
        if (!parse_count(v, UINT32_MAX, &a->tile))
            BAD("--tile takes a tile number from 0, not '%s'", v);
        a->tile_set = true;
        break;
    case O_NORM:
        if ((k = pick(v, norm_names, 2)) < 0)
            BAD("--norm takes min-max or max, not '%s'", v);
        a->norm = (nnp_norm)k;
        break;
    case O_CLIP:
        if (!parse_real(v, &d) || d <= 0 || d > 100)
            BAD("--clip-percentile takes P with 0 < P <= 100, not '%s'", v);
        a->clip = d;
        break;
    case O_SCALE:
        if (!parse_count(v, 64, &u) || !u)
            BAD("--scale takes pixels per patch from 1 to 64, not '%s'", v);
        a->scale = (int)u;
        break;
    case 'j':
        if (!parse_count(v, 256, &u) || !u)
            BAD("-j takes a thread count from 1 to 256, not '%s'", v);
        a->rel.threads = (int)u;
        break;
    default:
        return -1;
    }
    return EXIT_AGREE;
}

/* Options that contradict each other or the method. */
static int check_args(const rel_args *a)
{
    nnp_relevance_method m = a->rel.method;
    if (!a->attn)
        BAD("no --attn PATTERN given: which records hold the attention maps");
    if (a->fusion_set && m != NNP_REL_ROLLOUT)
        BAD("--fusion applies to --method rollout only (%s fuses the heads by its own rule)",
            method_names[m]);
    if (a->discard_set && m == NNP_REL_CHEFER)
        BAD("--discard applies to the rollout methods, not chefer");
    if (a->grad && m == NNP_REL_ROLLOUT)
        BAD("--grad applies to the gradient methods (grad_rollout, chefer, chefer_rollout)");
    if (!a->backmap && (a->span_set || a->tile_tokens_set || a->mode_set || a->tile_set))
        BAD("--llm-span, --tile-tokens, --backmap-mode and --tile need --backmap v1|v2");
    if (a->backmap && !a->span_set)
        BAD("--backmap needs --llm-span A:B: where the image tokens are in the LLM sequence");
    if (a->backmap && a->prefix_set)
        BAD("--prefix does not apply with --backmap (--llm-span says where the image tokens are)");
    if (a->image && !a->out)
        BAD("--image needs --out DIR for the overlay");
    return EXIT_AGREE;
}

static int parse_args(rel_args *a, int argc, char **argv)
{
    static const struct option opts[] = {
        {"attn", required_argument, NULL, O_ATTN},
        {"grad", required_argument, NULL, O_GRAD},
        {"method", required_argument, NULL, O_METHOD},
        {"fusion", required_argument, NULL, O_FUSION},
        {"discard", required_argument, NULL, O_DISCARD},
        {"start-layer", required_argument, NULL, O_START},
        {"query-row", required_argument, NULL, O_QUERY},
        {"prefix", required_argument, NULL, O_PREFIX},
        {"grid", required_argument, NULL, O_GRID},
        {"backmap", required_argument, NULL, O_BACKMAP},
        {"llm-span", required_argument, NULL, O_SPAN},
        {"tile-tokens", required_argument, NULL, O_TILE_TOKENS},
        {"backmap-mode", required_argument, NULL, O_MODE},
        {"tile", required_argument, NULL, O_TILE},
        {"norm", required_argument, NULL, O_NORM},
        {"clip-percentile", required_argument, NULL, O_CLIP},
        {"out", required_argument, NULL, O_OUT},
        {"image", required_argument, NULL, O_IMAGE},
        {"scale", required_argument, NULL, O_SCALE},
        {"threads", required_argument, NULL, 'j'},
        {"force", no_argument, NULL, O_FORCE},
        {0, 0, 0, 0}};
    memset(a, 0, sizeof *a);
    nnp_relevance_options_init(&a->rel);
    a->prefix = 1;
    a->tile_tokens = 256;
    int c, rc;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":j:", opts, NULL)) != -1) {
        if (c == '?' || c == ':' || (rc = parse_option(a, c, optarg)) < 0)
            return cli_option_error(&cli_relevance, opts, c, argc, argv);
        if (rc != EXIT_AGREE)
            return rc;
    }
    if (optind >= argc)
        BAD("no FILE given");
    if (argc - optind > 1)
        BAD("too many arguments: one FILE");
    a->file = argv[optind];
    if ((rc = check_args(a)))
        return rc;
    return cli_unfinished_capture(a->file);
}

/* ---- where the patches are ---- */

static bool isqrt_exact(uint64_t v, uint64_t *root)
{
    uint64_t r = (uint64_t)llround(sqrt((double)v));
    *root = r;
    return r * r == v && r > 0;
}

/* The raw map to draw: tiles x gh x gw values (one tile without back-mapping). */
typedef struct {
    double *grid;
    uint64_t tiles;
} patch_map;

static int map_patches(rel_args *a, const double *r, uint64_t n, patch_map *pm)
{
    if (!a->backmap) {
        uint64_t rest = a->prefix < n ? n - a->prefix : 0, side;
        if (!a->grid_set) {
            if (!isqrt_exact(rest, &side)) {
                cli_error("cannot infer the patch grid: %llu tokens - %llu prefix = %llu is not a "
                          "square; give --grid HxW", (unsigned long long)n,
                          (unsigned long long)a->prefix, (unsigned long long)rest);
                return EXIT_BAD_INPUT;
            }
            a->gh = a->gw = side;
        }
        if (a->gh * a->gw > rest) {
            cli_error("--grid %llux%llu after %llu prefix %s needs %llu tokens but the maps have "
                      "%llu", (unsigned long long)a->gh, (unsigned long long)a->gw,
                      (unsigned long long)a->prefix, cli_plural(a->prefix, "token", "tokens"),
                      (unsigned long long)(a->prefix + a->gh * a->gw), (unsigned long long)n);
            return EXIT_BAD_INPUT;
        }
        pm->tiles = 1;
        if (!(pm->grid = malloc(a->gh * a->gw * sizeof *pm->grid))) {
            cli_error("out of memory");
            return EXIT_INTERNAL;
        }
        memcpy(pm->grid, r + a->prefix, a->gh * a->gw * sizeof *pm->grid);
        return EXIT_AGREE;
    }
    if (a->span_b > n) {
        cli_error("--llm-span %llu:%llu but the maps have %llu tokens",
                  (unsigned long long)a->span_a, (unsigned long long)a->span_b,
                  (unsigned long long)n);
        return EXIT_BAD_INPUT;
    }
    uint64_t ntok = a->span_b - a->span_a, side;
    if (ntok % a->tile_tokens) {
        cli_error("--llm-span %llu:%llu holds %llu tokens: not a whole number of tiles of "
                  "--tile-tokens %llu", (unsigned long long)a->span_a,
                  (unsigned long long)a->span_b, (unsigned long long)ntok,
                  (unsigned long long)a->tile_tokens);
        return EXIT_BAD_INPUT;
    }
    if (!a->grid_set) {
        if (!isqrt_exact(4 * a->tile_tokens, &side)) {
            cli_error("cannot infer the patch grid: 4 x %llu tokens per tile is not a square; "
                      "give --grid HxW", (unsigned long long)a->tile_tokens);
            return EXIT_BAD_INPUT;
        }
        a->gh = a->gw = side;
    }
    if (a->gh % 2 || a->gw % 2 || (a->gh / 2) * (a->gw / 2) != a->tile_tokens) {
        cli_error("--grid %llux%llu pixel-shuffles into %llu tokens per tile, not --tile-tokens "
                  "%llu (both sides must be even)", (unsigned long long)a->gh,
                  (unsigned long long)a->gw, (unsigned long long)((a->gh / 2) * (a->gw / 2)),
                  (unsigned long long)a->tile_tokens);
        return EXIT_BAD_INPUT;
    }
    pm->tiles = ntok / a->tile_tokens;
    if (a->tile >= pm->tiles) {
        cli_error("--tile %llu but the span holds %llu %s", (unsigned long long)a->tile,
                  (unsigned long long)pm->tiles, cli_plural(pm->tiles, "tile", "tiles"));
        return EXIT_BAD_INPUT;
    }
    if (!(pm->grid = malloc(pm->tiles * a->gh * a->gw * sizeof *pm->grid))) {
        cli_error("out of memory");
        return EXIT_INTERNAL;
    }
    nnp_status st = nnp_backmap(a->backmap, a->split, r + a->span_a, ntok, a->gh, a->gw,
                                pm->grid);
    return st ? cli_fail(st) : EXIT_AGREE;
}

/* ---- output ---- */

/* Matplotlib's JET: piecewise linear in each channel. */
static double jet_channel(double v, const double (*p)[2], int n)
{
    for (int i = 1; i < n; i++)
        if (v <= p[i][0])
            return p[i - 1][1] + (v - p[i - 1][0]) / (p[i][0] - p[i - 1][0]) * (p[i][1] - p[i - 1][1]);
    return p[n - 1][1];
}

static void jet(double v, double rgb[3])
{
    static const double r[][2] = {{0, 0}, {0.35, 0}, {0.66, 1}, {0.89, 1}, {1, 0.5}};
    static const double g[][2] = {{0, 0}, {0.125, 0}, {0.375, 1}, {0.64, 1}, {0.91, 0}, {1, 0}};
    static const double b[][2] = {{0, 0.5}, {0.11, 1}, {0.34, 1}, {0.65, 0}, {1, 0}};
    v = v > 0 ? v < 1 ? v : 1 : 0; /* NaN too goes to 0 */
    rgb[0] = jet_channel(v, r, 5);
    rgb[1] = jet_channel(v, g, 6);
    rgb[2] = jet_channel(v, b, 5);
}

static unsigned char byte_of(double v)
{
    long x = lround(v);
    return (unsigned char)(x < 0 ? 0 : x > 255 ? 255 : x);
}

/* Whether the heatmap of a gh x gw grid at `scale` pixels a patch fits a PNG of at most 16384
 * pixels a side; says why not. */
static bool heatmap_fits(const char *path, uint64_t gh, uint64_t gw, int scale)
{
    uint64_t w = gw * (uint64_t)scale, h = gh * (uint64_t)scale;
    if (w <= 16384 && h <= 16384)
        return true;
    /* both sizes rows x columns, as --grid is written */
    cli_error("%s: a %llux%llu patch grid at %d pixels per patch makes a %llux%llu image; at "
              "most 16384 a side (lower --scale)", path, (unsigned long long)gh,
              (unsigned long long)gw, scale, (unsigned long long)h, (unsigned long long)w);
    return false;
}

static int write_heatmap(const char *path, const double *heat, uint64_t gh, uint64_t gw,
                         int scale)
{
    uint64_t w = gw * (uint64_t)scale, h = gh * (uint64_t)scale;
    unsigned char *px = malloc(w * h * 3);
    if (!px) {
        cli_error("out of memory");
        return EXIT_INTERNAL;
    }
    for (uint64_t y = 0; y < h; y++)
        for (uint64_t x = 0; x < w; x++) {
            double c[3];
            jet(heat[(y / (uint64_t)scale) * gw + x / (uint64_t)scale], c);
            for (int k = 0; k < 3; k++)
                px[(y * w + x) * 3 + (uint64_t)k] = byte_of(255 * c[k]);
        }
    int rc = cli_png_write_rgb(path, (int)w, (int)h, px);
    free(px);
    return rc;
}

/* A picture read for the overlay: RGB, row-major. */
typedef struct {
    unsigned char *px;
    int w, h;
} picture;

/* The heatmap upsampled bilinearly to the picture's size and laid over it at alpha 0.5 (the
 * picture's pixels are blended in place). */
static int write_overlay(const char *path, picture *pic, const double *heat, uint64_t gh,
                         uint64_t gw)
{
    unsigned char *px = pic->px;
    int w = pic->w, h = pic->h, rc;
    double *up = malloc((size_t)w * (size_t)h * sizeof *up);
    if (!up) {
        cli_error("out of memory");
        return EXIT_INTERNAL;
    }
    nnp_status st = nnp_resize_bilinear(heat, gh, gw, up, (uint64_t)h, (uint64_t)w);
    if (st) {
        rc = cli_fail(st);
    } else {
        for (size_t i = 0; i < (size_t)w * (size_t)h; i++) {
            double c[3];
            jet(up[i], c);
            for (int k = 0; k < 3; k++)
                px[i * 3 + (size_t)k] = byte_of(0.5 * px[i * 3 + (size_t)k] + 0.5 * 255 * c[k]);
        }
        rc = cli_png_write_rgb(path, w, h, px);
    }
    free(up);
    return rc;
}

static int add_tensor(nnp_writer *w, const char *name, uint32_t ndim, const uint64_t *shape,
                      const double *data)
{
    nnp_record_desc d = {.name = name, .dtype = NNP_F64, .ndim = ndim, .shape = shape};
    return nnp_writer_add(w, &d, data) ? cli_fail(NNP_ERR_IO) : EXIT_AGREE;
}

typedef struct {
    const nnp_attn_layer *layers;
    size_t nlayers;
    uint64_t n, query;
    const double *r, *heat;
    patch_map pm;
} result;

static int write_safetensors(const rel_args *a, const result *res, const char *path)
{
    nnp_writer *w;
    nnp_status st = nnp_writer_open(path, 4, &w);
    if (st)
        return cli_fail(st);
    cli_sigbus_output(path);
    char buf[64];
    snprintf(buf, sizeof buf, "%llu", (unsigned long long)res->query);
    int rc = EXIT_AGREE;
    if (nnp_writer_set_meta(w, "relevance.method", method_names[a->rel.method]) ||
        nnp_writer_set_meta(w, "relevance.query_row", buf) ||
        nnp_writer_set_meta(w, "relevance.norm", norm_names[a->norm]))
        rc = cli_fail(NNP_ERR_IO);
    uint64_t shape[3] = {res->n};
    if (!rc)
        rc = add_tensor(w, "relevance", 1, shape, res->r);
    if (!rc && !a->backmap) {
        shape[0] = a->gh;
        shape[1] = a->gw;
        rc = add_tensor(w, "patches", 2, shape, res->pm.grid);
    } else if (!rc) {
        shape[0] = res->pm.tiles;
        shape[1] = a->gh;
        shape[2] = a->gw;
        rc = add_tensor(w, "backmap", 3, shape, res->pm.grid);
    }
    shape[0] = a->gh;
    shape[1] = a->gw;
    if (!rc)
        rc = add_tensor(w, "heatmap", 2, shape, res->heat);
    if (rc) {
        nnp_writer_abort(w);
        cli_sigbus_output(NULL);
        return rc;
    }
    st = nnp_writer_close(w);
    cli_sigbus_output(NULL);
    return st ? cli_fail(st) : EXIT_AGREE;
}

static int write_outputs(const rel_args *a, const result *res, picture *pic)
{
    uint64_t longer = a->gh > a->gw ? a->gh : a->gw;
    int scale = a->scale ? a->scale : (int)(longer >= 256 ? 1 : (255 + longer) / longer);
    char *st_path = cli_join_path(a->out, "relevance.safetensors");
    char *heat_path = cli_join_path(a->out, "heatmap.png");
    char *over_path = cli_join_path(a->out, "overlay.png");
    int rc = EXIT_AGREE;
    struct stat sb;
    if (!st_path || !heat_path || !over_path) {
        cli_error("out of memory");
        rc = EXIT_INTERNAL;
    } else if (!heatmap_fits(heat_path, a->gh, a->gw, scale)) {
        /* checked before anything is written, so that a heatmap too large leaves no output */
        rc = EXIT_BAD_INPUT;
    } else if (mkdir(a->out, 0777) != 0 && (errno != EEXIST || stat(a->out, &sb) != 0 ||
                                             !S_ISDIR(sb.st_mode))) {
        cli_error("%s: cannot create the output directory: %s", a->out,
                  errno == EEXIST ? "a file is in the way" : strerror(errno));
        rc = EXIT_BAD_INPUT;
    } else if (!(rc = write_safetensors(a, res, st_path)) &&
               !(rc = write_heatmap(heat_path, res->heat, a->gh, a->gw, scale)) &&
               !(rc = a->image ? write_overlay(over_path, pic, res->heat, a->gh, a->gw) : 0)) {
        printf("wrote %s, %s%s%s\n", cli_text(st_path), cli_text(heat_path),
               a->image ? ", " : "", a->image ? cli_text(over_path) : "");
    }
    free(st_path);
    free(heat_path);
    free(over_path);
    return rc;
}

static void print_summary(const rel_args *a, const nnp_dump *d, const result *res,
                          bool grads_by_name)
{
    const nnp_attn_layer *L = res->layers;
    printf("%s: %s over %zu of %zu %s, %llu tokens, %llu %s, query row %llu\n",
           cli_text(nnp_dump_path(d)), method_names[a->rel.method], res->nlayers - a->rel.start_layer,
           res->nlayers, cli_plural(res->nlayers, "layer", "layers"),
           (unsigned long long)res->n, (unsigned long long)L[0].heads,
           cli_plural(L[0].heads, "head", "heads"), (unsigned long long)res->query);
    for (size_t l = a->rel.start_layer; l < res->nlayers; l++) {
        printf("  layer %-3zu %s (seq %llu)", l, cli_text(L[l].name),
               (unsigned long long)nnp_dump_record(d, L[l].attn_rec)->seq);
        if (L[l].grad_name)
            printf("  grad %s (seq %llu)", cli_text(L[l].grad_name),
                   (unsigned long long)nnp_dump_record(d, L[l].grad_rec)->seq);
        putchar('\n');
    }
    if (L[0].grad_name && !grads_by_name)
        printf("gradients paired in reverse execution order\n");
    if (a->backmap)
        printf("image tokens %llu:%llu, %llu %s of %llu, pixel shuffle v%d (%s) onto %llux%llu "
               "patches; drawn: tile %llu\n", (unsigned long long)a->span_a,
               (unsigned long long)a->span_b, (unsigned long long)res->pm.tiles,
               cli_plural(res->pm.tiles, "tile", "tiles"), (unsigned long long)a->tile_tokens,
               a->backmap, a->split ? "split" : "copy", (unsigned long long)a->gh,
               (unsigned long long)a->gw, (unsigned long long)a->tile);
    else
        printf("patches: %llux%llu from token %llu\n", (unsigned long long)a->gh,
               (unsigned long long)a->gw, (unsigned long long)a->prefix);
    /* the five largest of the drawn map, largest first, lower index first among equals */
    const double *g = res->pm.grid + a->tile * a->gh * a->gw;
    uint64_t np = a->gh * a->gw, top[5];
    int ntop = 0;
    for (uint64_t i = 0; i < np; i++) {
        int at = ntop < 5 ? ntop++ : 5;
        while (at > 0 && g[i] > g[top[at - 1]]) {
            if (at < 5)
                top[at] = top[at - 1];
            at--;
        }
        if (at < 5)
            top[at] = i;
    }
    printf("top patches (row, col):");
    for (int k = 0; k < ntop; k++) {
        char v[32];
        cli_format_number(v, sizeof v, g[top[k]]);
        printf("%s (%llu, %llu) %s", k ? "," : "", (unsigned long long)(top[k] / a->gw),
               (unsigned long long)(top[k] % a->gw), v);
    }
    putchar('\n');
}

/* DIR's files: each replaced only when nnparity wrote it (or with --force). A DIR that does not
 * exist yet holds nothing to replace. */
static int check_outputs(const rel_args *a)
{
    struct stat sb;
    if (stat(a->out, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return EXIT_AGREE; /* write_outputs makes it, or says why it cannot */
    static const char *const names[] = {"relevance.safetensors", "heatmap.png", "overlay.png"};
    static const cli_output_kind kinds[] = {CLI_OUT_DUMP, CLI_OUT_PNG, CLI_OUT_PNG};
    int rc = EXIT_AGREE;
    for (int k = 0; k < (a->image ? 3 : 2) && rc == EXIT_AGREE; k++) {
        char *p = cli_join_path(a->out, names[k]);
        if (!p) {
            cli_error("out of memory");
            return EXIT_INTERNAL;
        }
        rc = cli_check_output(p, kinds[k], a->force);
        free(p);
    }
    return rc;
}

static int run_relevance(int argc, char **argv)
{
    rel_args a;
    int rc = parse_args(&a, argc, argv);
    if (!rc && a.out)
        rc = check_outputs(&a);
    if (rc)
        return rc;
    /* the picture is read first, so that a bad one leaves no output behind */
    picture pic = {0};
    if (a.image && (rc = cli_png_read_rgb(a.image, &pic.px, &pic.w, &pic.h)))
        return rc;
    nnp_dump *d;
    nnp_status st = nnp_dump_open(a.file, &d);
    if (st) {
        free(pic.px);
        return cli_fail(st);
    }
    nnp_attn_layer *L = NULL;
    size_t nl = 0;
    bool by_name = true;
    result res = {0};
    double *r = NULL, *heat = NULL;
    if ((st = nnp_attn_layers_find(d, a.attn, a.grad, a.rel.method != NNP_REL_ROLLOUT, &L, &nl,
                                   &by_name))) {
        rc = cli_fail(st);
        goto out;
    }
    /* a pairing by order may be wrong without any other sign: say it where it is seen */
    if (L[0].grad_name && !by_name)
        fprintf(stderr, "nnparity: note: no name pairs each map with one gradient matching '%s': "
                "paired in reverse execution order (backward visits the last layer first); "
                "check the summary's pairs\n", cli_text(a.grad));
    uint64_t n = L[0].n, query = a.query_last ? n - 1 : a.query;
    if (query >= n) {
        cli_error("--query-row %llu but the maps have %llu tokens (rows 0 to %llu)",
                  (unsigned long long)query, (unsigned long long)n, (unsigned long long)(n - 1));
        rc = EXIT_BAD_INPUT;
        goto out;
    }
    if (a.rel.start_layer >= nl) {
        cli_error("--start-layer %zu but %zu %s match '%s' (layers 0 to %zu)", a.rel.start_layer,
                  nl, cli_plural(nl, "record", "records"), a.attn, nl - 1);
        rc = EXIT_BAD_INPUT;
        goto out;
    }
    if (!(r = malloc(n * sizeof *r))) {
        cli_error("out of memory");
        rc = EXIT_INTERNAL;
        goto out;
    }
    if ((st = nnp_relevance(L, nl, &a.rel, query, r))) {
        rc = cli_fail(st);
        goto out;
    }
    res = (result){L, nl, n, query, r, NULL, {0}};
    if ((rc = map_patches(&a, r, n, &res.pm)))
        goto out;
    uint64_t np = a.gh * a.gw;
    if (!(heat = malloc(np * sizeof *heat))) {
        cli_error("out of memory");
        rc = EXIT_INTERNAL;
        goto out;
    }
    memcpy(heat, res.pm.grid + a.tile * np, np * sizeof *heat);
    if ((st = nnp_relevance_normalize(heat, np, a.norm, a.clip))) {
        rc = cli_fail(st);
        goto out;
    }
    res.heat = heat;
    print_summary(&a, d, &res, by_name);
    if (a.out)
        rc = write_outputs(&a, &res, &pic);
out:
    free(pic.px);
    free(heat);
    free(res.pm.grid);
    free(r);
    nnp_free(L);
    nnp_dump_close(d);
    return rc;
}

const cli_command cli_relevance = {"relevance",
                                   "which patches an output relied on: rollout, gradient "
                                   "relevance, heatmaps",
                                   relevance_usage, run_relevance};
