/*
 * cmd_weights.c - `nnparity weights SRC DST`: does a converted checkpoint hold what its source
 * holds? Every source tensor is found in the destination through the rules (renames, fused parts,
 * transposes, the rotary row order, tied aliases), compared element for element, and sorted into
 * exactly equal, within tolerance, different, missing, unexpected, shape mismatches and dtype
 * changes. Quantized GGUF tensors are judged by the error their quantization type allows.
 */
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cli.h"
#include "report/json_out.h"
#include "report/pair_format.h"

static const char weights_usage[] =
    "usage: nnparity weights [options] SRC DST\n"
    "\n"
    "Check a converted checkpoint DST against its source SRC (any readable format: safetensors,\n"
    "sharded safetensors (a directory or an index.json), npz, torch .pt/.bin, GGUF). The rules\n"
    "map DST's names onto SRC's and bring their layouts together (docs/rules.md): renames, concat\n"
    "of separate q/k/v into a fused weight, split, transpose, rotary, cast, alias for tied\n"
    "weights. Quantized GGUF tensors compare after dequantization, judged by the error their\n"
    "type allows (docs/weights.md).\n"
    "\n"
    "  --rules FILE     map DST's names onto SRC's\n"
    "  --atol X         absolute tolerance for every pair (default: by dtype)\n"
    "  --rtol X         relative tolerance for every pair (default: by dtype)\n"
    "  --all            list every tensor, not only those that need a look\n"
    "  -j, --threads N  threads (default: one per CPU)\n"
    "output\n"
    "  --json           the report as JSON on stdout instead of text (schema nnparity.weights/1)\n"
    "  --json-file FILE also write the JSON report to FILE\n"
    "  --markdown FILE  also write a short Markdown report\n"
    "  --force          replace FILEs that nnparity did not write (by default only its own\n"
    "                   reports are replaced; docs/cli.md)\n"
    "  --width N        lay the text out for N columns (default: the terminal's width, 80\n"
    "                   when stdout is not a terminal)\n"
    "  -h               this help\n"
    "\n"
    "Exit codes: 0 every source tensor found and within tolerance, nothing unexpected; 1 a tensor\n"
    "different, missing, unexpected or of another shape; 2 bad usage or input; 3 internal error.\n"
    "\n"
    "examples:\n"
    "  nnparity weights model.safetensors model-f16.gguf\n"
    "  nnparity weights --rules gguf.rules --markdown weights.md model.bin model.gguf\n"
    "  nnparity weights --json --all src.safetensors dst.safetensors > weights.json\n";

/* What a pair of weights is, worst first within the table's order. */
typedef enum { W_EQUAL, W_WITHIN, W_DIFFERENT, W_SHAPE, W_COUNT } w_class;
static const char *const class_name[] = {"equal", "within", "different", "shape"};

typedef struct {
    w_class cls;
    const char *quant; /* the destination's quantization type, or NULL */
    double bound;      /* the rel-L2 it allows (nnp_record_quantization) */
    uint32_t parts_differ; /* a joined pair that differs: bit k set when part k does */
} w_pair;

/* For a different pair joined from parts stacked on the first axis (q, k and v rows of a fused
 * in_proj), which parts differ: each part against its rows of the source, so that q and k
 * swapped read as both wrong rather than as one fused tensor. Parts joined any other way, or
 * adapted before the join (their rows are not the source's as recorded), are left to the pair's
 * own metrics. */
static void parts_that_differ(nnp_dump *src, nnp_dump *dst, const nnp_diff_pair *p, w_pair *w)
{
    if (p->nparts < 2 || p->nparts > 32 || p->join != NNP_JOIN_CONCAT || p->nadapters ||
        p->ref_ndim == 0)
        return;
    const nnp_record *r = nnp_dump_record(src, p->ref);
    uint64_t rows = 0, row_elems = r->ndim ? r->nelem / (r->shape[0] ? r->shape[0] : 1) : 0;
    for (uint32_t k = 0; k < p->nparts; k++) {
        const nnp_record *q = nnp_dump_record(dst, p->parts[k]);
        if (q->ndim != r->ndim || memcmp(q->shape + 1, r->shape + 1,
                                         (r->ndim - 1) * sizeof *r->shape) != 0)
            return;
        rows += q->shape[0];
    }
    const void *sd;
    if (rows != r->shape[0] || nnp_dump_data(src, p->ref, &sd) != NNP_OK)
        return;
    uint64_t at = 0;
    for (uint32_t k = 0; k < p->nparts; k++) {
        const nnp_record *q = nnp_dump_record(dst, p->parts[k]);
        const void *qd;
        nnp_metrics m;
        nnp_compare_options o = {.size = sizeof o, .atol = p->atol, .rtol = p->rtol};
        if (nnp_dump_data(dst, p->parts[k], &qd) == NNP_OK &&
            nnp_compare(r->dtype, (const char *)sd + at * nnp_dtype_size(r->dtype), q->dtype, qd,
                        q->nelem, &o, &m) == NNP_OK &&
            m.allclose_fail)
            w->parts_differ |= 1u << k;
        nnp_dump_release(dst, p->parts[k]);
        at += q->shape[0] * row_elems;
    }
    nnp_dump_release(src, p->ref);
}

static bool identical(const nnp_metrics *m)
{
    return m->allclose_fail == 0 && m->max_abs == 0 && m->nan_ref == m->nan_port &&
           m->inf_ref == m->inf_port && m->finite + m->nan_ref + m->inf_ref == m->count;
}

static void classify(nnp_dump *src, nnp_dump *dst, const nnp_diff *d, w_pair *w)
{
    for (size_t i = 0; i < nnp_diff_pair_count(d); i++) {
        const nnp_diff_pair *p = nnp_diff_pair_at(d, i);
        if (p->nparts != 1 || p->adapters ||
            !nnp_record_quantization(dst, p->port, &w[i].quant, &w[i].bound))
            w[i].quant = NULL;
        if (p->verdict == NNP_SHAPE_MISMATCH || p->verdict == NNP_DTYPE_MISMATCH)
            w[i].cls = W_SHAPE;
        else if (identical(&p->metrics))
            w[i].cls = W_EQUAL;
        else if (w[i].quant)
            w[i].cls = p->metrics.rel_l2 <= w[i].bound && !p->metrics.nan_port &&
                               !p->metrics.inf_port
                           ? W_WITHIN
                           : W_DIFFERENT;
        else
            w[i].cls = p->verdict == NNP_PASS || p->verdict == NNP_WARN ? W_WITHIN : W_DIFFERENT;
        if (w[i].cls == W_DIFFERENT)
            parts_that_differ(src, dst, p, &w[i]);
    }
}

typedef struct {
    size_t count[W_COUNT], dtype_changes;
} w_totals;

static w_totals totals_of(const nnp_diff *d, const w_pair *w)
{
    w_totals t = {{0}, 0};
    for (size_t i = 0; i < nnp_diff_pair_count(d); i++) {
        t.count[w[i].cls]++;
        t.dtype_changes += nnp_diff_pair_at(d, i)->ref_dtype != nnp_diff_pair_at(d, i)->port_dtype;
    }
    return t;
}

static bool agrees(const nnp_diff *d, const w_totals *t)
{
    return !t->count[W_DIFFERENT] && !t->count[W_SHAPE] && !nnp_diff_unmatched_ref_count(d) &&
           !nnp_diff_unmatched_port_count(d);
}

static void print_pair(const nnp_dump *src, const nnp_dump *dst, const nnp_diff_pair *p,
                       const w_pair *w)
{
    const nnp_record *r = nnp_dump_record(src, p->ref);
    char a[256], b[256];
    printf("  %-9s %s", class_name[w->cls], cli_text(r->name));
    if (strcmp(r->name, nnp_dump_record(dst, p->port)->name) != 0 || p->nparts > 1) {
        /* the destination's names follow when the line has room for them, else go below */
        size_t len = 12 + (size_t)cli_text_width(r->name) + 4;
        for (uint32_t k = 0; k < p->nparts; k++)
            len += (size_t)cli_text_width(nnp_dump_record(dst, p->parts[k])->name) + 3;
        if (len - 3 > (size_t)cli_width())
            printf("\n           ");
        printf(" <- %s", cli_text(nnp_dump_record(dst, p->parts[0])->name));
        for (uint32_t k = 1; k < p->nparts; k++)
            printf(" + %s", cli_text(nnp_dump_record(dst, p->parts[k])->name));
    }
    printf("\n");
    if (p->adapters)
        printf("            adapted: %s\n", cli_text(p->adapters));
    if (w->parts_differ) {
        printf("            differing parts:");
        for (uint32_t k = 0; k < p->nparts; k++)
            if (w->parts_differ & (1u << k))
                printf(" %s", cli_text(nnp_dump_record(dst, p->parts[k])->name));
        printf("\n");
    }
    if (p->problem) {
        printf("            not compared: %s\n", cli_text(p->problem));
        return;
    }
    if (w->cls == W_SHAPE) {
        cli_format_dims(a, sizeof a, p->ref_ndim, p->ref_shape);
        cli_format_dims(b, sizeof b, p->port_ndim, p->port_shape);
        printf("            source %s %s, destination %s %s\n", nnp_dtype_name(p->ref_dtype), a,
               nnp_dtype_name(p->port_dtype), b);
        return;
    }
    if (w->cls == W_EQUAL)
        return;
    format_index(a, sizeof a, p, p->metrics.max_index);
    char worst[512], error[256];
    snprintf(worst, sizeof worst, "max-abs %.3g at %s (source %.7g, destination %.7g)",
             p->metrics.max_abs, a, p->metrics.ref_at_max, p->metrics.port_at_max);
    if (w->quant)
        snprintf(error, sizeof error, "rel-L2 %.3g (%s allows %.3g)", p->metrics.rel_l2, w->quant,
                 w->bound);
    else
        snprintf(error, sizeof error, "rel-L2 %.3g, %.3g%% outside atol %.3g + rtol %.3g",
                 p->metrics.rel_l2, p->metrics.allclose_fail_pct, p->atol, p->rtol);
    char line[800];
    snprintf(line, sizeof line, "%s, %s", worst, error);
    cli_wrap(stdout, "            ", 12, cli_width(), line);
}

static void print_text(const nnp_dump *src, const nnp_dump *dst, const nnp_diff *d,
                       const w_pair *w, bool all)
{
    w_totals t = totals_of(d, w);
    printf("source:      %s (%zu tensors)\ndestination: %s (%zu tensors)\n",
           cli_text(nnp_dump_path(src)), nnp_dump_count(src), cli_text(nnp_dump_path(dst)),
           nnp_dump_count(dst));
    printf("\n%6zu exactly equal\n%6zu within tolerance\n%6zu different\n%6zu shape mismatch\n"
           "%6zu missing in the destination\n%6zu unexpected in the destination\n"
           "%6zu dtype changes (compared after conversion)\n",
           t.count[W_EQUAL], t.count[W_WITHIN], t.count[W_DIFFERENT], t.count[W_SHAPE],
           nnp_diff_unmatched_ref_count(d), nnp_diff_unmatched_port_count(d), t.dtype_changes);
    printf("\nverdict: %s\n", agrees(d, &t) ? "the destination holds the source's weights"
                                             : "the destination differs from the source");
    /* what needs a look first: different and mismatched tensors, then the rest with --all */
    for (int pass = 0; pass < 2; pass++) {
        bool header = false;
        for (size_t i = 0; i < nnp_diff_pair_count(d); i++) {
            bool bad = w[i].cls == W_DIFFERENT || w[i].cls == W_SHAPE;
            if (pass == 0 ? !bad : (bad || !all))
                continue;
            if (!header)
                printf("\n%s:\n", pass == 0 ? "to look at" : "the rest");
            header = true;
            print_pair(src, dst, nnp_diff_pair_at(d, i), &w[i]);
        }
    }
    for (int side = 0; side < 2; side++) {
        size_t count = side ? nnp_diff_unmatched_port_count(d) : nnp_diff_unmatched_ref_count(d);
        if (!count)
            continue;
        printf("\n%s (%zu):\n", side ? "unexpected in the destination (no source tensor maps to it)"
                                      : "missing in the destination",
               count);
        for (size_t k = 0; k < count && (all || k < 20); k++) {
            const nnp_record *r = nnp_dump_record(side ? dst : src,
                                                  side ? nnp_diff_unmatched_port_at(d, k)
                                                       : nnp_diff_unmatched_ref_at(d, k));
            char shape[256];
            cli_format_shape(shape, sizeof shape, r);
            printf("  %s %s %s\n", cli_text(r->name), nnp_dtype_name(r->dtype), shape);
        }
        if (!all && count > 20)
            printf("  ... and %zu more (--all lists them)\n", count - 20);
    }
}

/* The names of the records one side of the diff left unmatched (the port's: port_side). */
static json_t *names_json(const nnp_dump *dump, const nnp_diff *d, bool port_side)
{
    json_t *a = json_array();
    size_t n = port_side ? nnp_diff_unmatched_port_count(d) : nnp_diff_unmatched_ref_count(d);
    for (size_t i = 0; i < n; i++) {
        size_t rec = port_side ? nnp_diff_unmatched_port_at(d, i) : nnp_diff_unmatched_ref_at(d, i);
        json_array_append_new(a, json_string(nnp_dump_record(dump, rec)->name));
    }
    return a;
}

static json_t *weights_json(const nnp_dump *src, const nnp_dump *dst, const nnp_diff *d,
                            const w_pair *w)
{
    w_totals t = totals_of(d, w);
    json_t *pairs = json_array();
    for (size_t i = 0; i < nnp_diff_pair_count(d); i++) {
        const nnp_diff_pair *p = nnp_diff_pair_at(d, i);
        json_t *parts = json_array();
        for (uint32_t k = 0; k < p->nparts; k++)
            json_array_append_new(parts, json_string(nnp_dump_record(dst, p->parts[k])->name));
        json_t *o = json_pack(
            "{s:s, s:o, s:s, s:s, s:s, s:o, s:o, s:o, s:o, s:o, s:f, s:f}", "source",
            nnp_dump_record(src, p->ref)->name, "destination", parts, "class",
            class_name[w[i].cls], "source_dtype", nnp_dtype_name(p->ref_dtype),
            "destination_dtype", nnp_dtype_name(p->port_dtype), "shape",
            json_out_shape(p->ref_ndim, p->ref_shape), "quantization",
            w[i].quant ? json_string(w[i].quant) : json_null(), "rel_l2_bound",
            w[i].quant ? json_real(w[i].bound) : json_null(), "adapters",
            p->adapters ? json_string(p->adapters) : json_null(), "problem",
            p->problem ? json_string(p->problem) : json_null(), "atol", p->atol, "rtol", p->rtol);
        if (o && w[i].cls != W_SHAPE)
            json_object_set_new(o, "metrics", metrics_json(p));
        if (o && w[i].parts_differ) {
            json_t *differ = json_array();
            for (uint32_t k = 0; k < p->nparts; k++)
                if (w[i].parts_differ & (1u << k))
                    json_array_append_new(differ,
                                          json_string(nnp_dump_record(dst, p->parts[k])->name));
            json_object_set_new(o, "differing_parts", differ);
        }
        if (!o || json_array_append_new(pairs, o) != 0) {
            json_decref(pairs);
            return NULL;
        }
    }
    return json_pack("{s:s, s:s, s:s, s:b, s:{s:I, s:I, s:I, s:I, s:I, s:I, s:I}, s:o, s:o, s:o}",
                     "schema", "nnparity.weights/1", "source", nnp_dump_path(src), "destination",
                     nnp_dump_path(dst), "agree", agrees(d, &t), "totals", "equal",
                     (json_int_t)t.count[W_EQUAL], "within", (json_int_t)t.count[W_WITHIN],
                     "different", (json_int_t)t.count[W_DIFFERENT], "shape",
                     (json_int_t)t.count[W_SHAPE], "missing",
                     (json_int_t)nnp_diff_unmatched_ref_count(d), "unexpected",
                     (json_int_t)nnp_diff_unmatched_port_count(d), "dtype_changes",
                     (json_int_t)t.dtype_changes, "pairs", pairs, "missing",
                     names_json(src, d, false), "unexpected", names_json(dst, d, true));
}

static void markdown(FILE *o, const nnp_dump *src, const nnp_dump *dst, const nnp_diff *d,
                     const w_pair *w)
{
    w_totals t = totals_of(d, w);
    fprintf(o, "### nnparity weights: %s\n\n",
            agrees(d, &t) ? "the destination holds the source's weights"
                          : "the destination differs from the source");
    fprintf(o, "| source | destination |\n|---|---|\n| ");
    md_code(o, nnp_dump_path(src), true);
    fprintf(o, " (%zu tensors) | ", nnp_dump_count(src));
    md_code(o, nnp_dump_path(dst), true);
    fprintf(o, " (%zu tensors) |\n\n", nnp_dump_count(dst));
    fprintf(o, "| equal | within tolerance | different | shape | missing | unexpected | dtype "
               "changes |\n|---:|---:|---:|---:|---:|---:|---:|\n| %zu | %zu | %zu | %zu | %zu | "
               "%zu | %zu |\n",
            t.count[W_EQUAL], t.count[W_WITHIN], t.count[W_DIFFERENT], t.count[W_SHAPE],
            nnp_diff_unmatched_ref_count(d), nnp_diff_unmatched_port_count(d), t.dtype_changes);
    size_t shown = 0;
    for (size_t i = 0; i < nnp_diff_pair_count(d) && shown < 50; i++) {
        if (w[i].cls != W_DIFFERENT && w[i].cls != W_SHAPE)
            continue;
        if (!shown++)
            fprintf(o, "\n| tensor | verdict | rel-L2 |\n|---|---|---:|\n");
        const nnp_diff_pair *p = nnp_diff_pair_at(d, i);
        fprintf(o, "| ");
        md_code(o, nnp_dump_record(src, p->ref)->name, true);
        fprintf(o, " | %s | %.3g |\n", class_name[w[i].cls], w[i].cls == W_SHAPE ? NAN : p->metrics.rel_l2);
    }
    for (size_t k = 0; k < nnp_diff_unmatched_ref_count(d) && k < 50; k++) {
        fprintf(o, "%s- missing: ", k ? "" : "\n");
        md_code(o, nnp_dump_record(src, nnp_diff_unmatched_ref_at(d, k))->name, false);
        fprintf(o, "\n");
    }
    for (size_t k = 0; k < nnp_diff_unmatched_port_count(d) && k < 50; k++) {
        fprintf(o, "%s- unexpected: ", k ? "" : "\n");
        md_code(o, nnp_dump_record(dst, nnp_diff_unmatched_port_at(d, k))->name, false);
        fprintf(o, "\n");
    }
}

static int write_markdown(const nnp_dump *src, const nnp_dump *dst, const nnp_diff *d,
                          const w_pair *w, const char *path)
{
    char *text = NULL;
    size_t len = 0;
    FILE *o = open_memstream(&text, &len);
    if (!o) {
        cli_error("out of memory");
        return EXIT_INTERNAL;
    }
    markdown(o, src, dst, d, w);
    fclose(o);
    int rc = cli_write_file(path, text, len);
    free(text);
    return rc;
}

static int run_weights(int argc, char **argv)
{
    static const struct option opts[] = {
        {"rules", required_argument, NULL, 'r'},     {"atol", required_argument, NULL, 'a'},
        {"rtol", required_argument, NULL, 'R'},      {"json", no_argument, NULL, 'J'},
        {"json-file", required_argument, NULL, 'F'}, {"all", no_argument, NULL, 'A'},
        {"threads", required_argument, NULL, 'j'},   {"markdown", required_argument, NULL, 'M'},
        {"force", no_argument, NULL, 'f'},           {"width", required_argument, NULL, 'W'},
        {0, 0, 0, 0}};
    const char *rules_path = NULL, *json_path = NULL, *md_path = NULL;
    double atol = -1, rtol = -1;
    bool all = false, to_stdout = false, force = false;
    int threads = 0, c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":j:", opts, NULL)) != -1) {
        if (c == 'r') {
            rules_path = optarg;
        } else if (c == 'J') {
            to_stdout = true;
        } else if (c == 'F') {
            json_path = optarg;
        } else if (c == 'A') {
            all = true;
        } else if (c == 'M') {
            md_path = optarg;
        } else if (c == 'f') {
            force = true;
        } else if (c == 'W') {
            if (!cli_set_width(optarg))
                return cli_width_error(&cli_weights, optarg);
        } else if (c == 'a' || c == 'R') {
            if (!cli_parse_tolerance(optarg, c == 'a' ? &atol : &rtol))
                return cli_usage_error(&cli_weights, "--%s takes a non-negative number, not '%s'",
                                       c == 'a' ? "atol" : "rtol", optarg);
        } else if (c == 'j') {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (*end || v < 1 || v > 256)
                return cli_usage_error(&cli_weights,
                                       "-j takes a thread count from 1 to 256, not '%s'", optarg);
            threads = (int)v;
        } else {
            return cli_option_error(&cli_weights, opts, c, argc, argv);
        }
    }
    if (json_path && strcmp(json_path, "-") == 0)
        return cli_usage_error(&cli_weights, "--json-file writes a file; --json prints the JSON "
                               "report on stdout");
    if (argc - optind != 2) {
        int n = argc - optind;
        if (n > 2 && to_stdout)
            return cli_usage_error(&cli_weights, "%d arguments, but weights takes SRC and DST: "
                                   "--json takes no FILE (it prints JSON on stdout; --json-file "
                                   "FILE writes a file)", n);
        if (n < 2)
            return cli_usage_error(&cli_weights, "SRC and DST are needed");
        return cli_usage_error(&cli_weights, "%d arguments, but weights takes SRC and DST", n);
    }
    /* the reports may replace only nnparity's own reports, never an input */
    const char *outs[2] = {json_path, md_path};
    const cli_output_kind kinds[2] = {CLI_OUT_JSON, CLI_OUT_MARKDOWN};
    for (int k = 0; k < 2; k++) {
        if (!outs[k])
            continue;
        const char *inputs[3] = {argv[optind], argv[optind + 1], rules_path};
        for (int i = 0; i < 3; i++)
            if (inputs[i] && cli_same_file(outs[k], inputs[i])) {
                cli_error("%s: is %s, an input of this check; write the report elsewhere",
                          outs[k], inputs[i]);
                return EXIT_BAD_INPUT;
            }
        int rc = cli_check_output(outs[k], kinds[k], force);
        if (rc)
            return rc;
    }
    if (cli_unfinished_capture(argv[optind]) || cli_unfinished_capture(argv[optind + 1]))
        return EXIT_BAD_INPUT;
    if ((atol < 0) != (rtol < 0)) {
        if (atol < 0) atol = 0;
        if (rtol < 0) rtol = 0;
    }
    nnp_rules *rules = NULL;
    nnp_dump *src = NULL, *dst = NULL;
    nnp_diff *d = NULL;
    nnp_status st = rules_path ? nnp_rules_load(rules_path, &rules) : NNP_OK;
    if (!st)
        st = nnp_dump_open_both(argv[optind], argv[optind + 1], &src, &dst);
    /* checkpoints have no execution order to align by: pairs come from names and rules only */
    nnp_diff_options o;
    nnp_diff_options_init(&o);
    o.rules = rules;
    o.atol = atol;
    o.rtol = rtol;
    o.threads = threads;
    o.no_align = true;
    if (!st)
        st = nnp_diff_dumps(src, dst, &o, &d);
    w_pair *w = NULL;
    int rc;
    if (st) {
        rc = cli_fail(st);
    } else if (!(w = calloc(nnp_diff_pair_count(d) ? nnp_diff_pair_count(d) : 1, sizeof *w))) {
        cli_error("out of memory");
        rc = EXIT_INTERNAL;
    } else {
        classify(src, dst, d, w);
        w_totals t = totals_of(d, w);
        rc = EXIT_AGREE;
        if (to_stdout)
            rc = json_out_print(weights_json(src, dst, d, w));
        else
            print_text(src, dst, d, w, all);
        if (json_path && rc == EXIT_AGREE)
            rc = json_out_write(weights_json(src, dst, d, w), json_path);
        if (md_path && rc == EXIT_AGREE)
            rc = write_markdown(src, dst, d, w, md_path);
        if (rc == EXIT_AGREE && !agrees(d, &t))
            rc = EXIT_FOUND;
    }
    free(w);
    nnp_diff_free(d);
    nnp_dump_close(src);
    nnp_dump_close(dst);
    nnp_rules_free(rules);
    return rc;
}

const cli_command cli_weights = {"weights", "check a converted checkpoint against its source",
                                 weights_usage, run_weights};
