/*
 * cmd_stats.c - `nnparity stats`: per-tensor min, max, mean, std, abs-max, zero, NaN and Inf
 * counts, and the first record in execution order that holds a NaN or an Inf.
 */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "report/json_out.h"

static const char stats_usage[] =
    "usage: nnparity stats [--json] [-j N] [--check-finite] [--width N] FILE [PATTERN]\n"
    "\n"
    "Statistics of each tensor of a dump, in execution order: min, max, mean, std (population),\n"
    "abs-max over the finite elements, and the zero, NaN and Inf counts. Names the first record\n"
    "that holds a NaN or an Inf.\n"
    "\n"
    "  PATTERN          only tensors whose name matches this glob (a plain word matches as a\n"
    "                   substring), e.g. 'blocks.3.*' or 'attn'\n"
    "  --json           one JSON document on stdout (schema nnparity.stats/1)\n"
    "  -j, --threads N  threads (default: one per CPU)\n"
    "  --check-finite   exit 1 when any selected tensor holds a NaN or an Inf\n"
    "  --width N        lay the table out for N columns (default: the terminal's width, 80\n"
    "                   when stdout is not a terminal)\n"
    "  -h               this help\n"
    "\n"
    "stats reads one file; to compare two, use nnparity diff REF PORT.\n"
    "\n"
    "examples:\n"
    "  nnparity stats port.safetensors\n"
    "  nnparity stats --check-finite port.safetensors 'blocks.3.*'\n"
    "  nnparity stats --json model.gguf attn > attn-stats.json\n";

static json_t *stats_json(const nnp_tensor_stats *s)
{
    return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:o, s:o, s:o, s:o, s:o}", "count",
                     (json_int_t)s->count, "finite", (json_int_t)s->finite, "nan",
                     (json_int_t)s->nan, "pos_inf", (json_int_t)s->pos_inf, "neg_inf",
                     (json_int_t)s->neg_inf, "zeros", (json_int_t)s->zeros, "min",
                     json_out_number(s->min), "max", json_out_number(s->max), "mean",
                     json_out_number(s->mean), "std", json_out_number(s->std), "abs_max",
                     json_out_number(s->abs_max));
}

static void print_text(const nnp_dump *d, const size_t *idx, size_t n,
                       const nnp_tensor_stats *s, long first_bad)
{
    size_t w = 4;
    for (size_t i = 0; i < n; i++) {
        size_t len = (size_t)cli_text_width(nnp_dump_record(d, idx[i])->name);
        w = len > w ? len : w;
    }
    /* the name column takes what the figures leave of the line, at least 48 columns (a longer
     * name pushes the rest of its row to the right) */
    int room = cli_width() - (6 + 2 + 2 + 7 + 5 * (2 + 11) + 2 + 9 + 2 + 7 + 2 + 7);
    size_t cap = room > 48 ? (size_t)room : 48;
    w = w > cap ? cap : w;
    printf("%s: %s, %zu of %zu %s\n", cli_text(nnp_dump_path(d)), nnp_dump_format(d), n, nnp_dump_count(d),
           cli_plural(nnp_dump_count(d), "record", "records"));
    printf("%6s  %-*s  %-7s  %11s  %11s  %11s  %11s  %11s  %9s  %7s  %7s\n", "seq", (int)w,
           "name", "dtype", "min", "max", "mean", "std", "abs-max", "zeros", "nan", "inf");
    char v[5][32];
    for (size_t i = 0; i < n; i++) {
        const nnp_record *r = nnp_dump_record(d, idx[i]);
        const nnp_tensor_stats *t = &s[i];
        cli_format_number(v[0], sizeof v[0], t->min);
        cli_format_number(v[1], sizeof v[1], t->max);
        cli_format_number(v[2], sizeof v[2], t->mean);
        cli_format_number(v[3], sizeof v[3], t->std);
        cli_format_number(v[4], sizeof v[4], t->abs_max);
        printf("%6llu  %-*s  %-7s  %11s  %11s  %11s  %11s  %11s  %9llu  %7llu  %7llu\n",
               (unsigned long long)r->seq, (int)w, cli_text(r->name), nnp_dtype_name(r->dtype), v[0], v[1],
               v[2], v[3], v[4], (unsigned long long)t->zeros, (unsigned long long)t->nan,
               (unsigned long long)(t->pos_inf + t->neg_inf));
    }
    if (first_bad < 0) {
        printf("no NaN or Inf in %zu %s\n", n, cli_plural(n, "tensor", "tensors"));
    } else {
        const nnp_record *r = nnp_dump_record(d, idx[first_bad]);
        const nnp_tensor_stats *t = &s[first_bad];
        printf("first NaN/Inf: %s (seq %llu%s%s): %llu NaN, %llu +Inf, %llu -Inf of %llu\n",
               cli_text(r->name), (unsigned long long)r->seq, *r->module_type ? ", " : "",
               cli_text(r->module_type),
               (unsigned long long)t->nan, (unsigned long long)t->pos_inf,
               (unsigned long long)t->neg_inf, (unsigned long long)t->count);
    }
}

static int print_json(const nnp_dump *d, const size_t *idx, size_t n, const nnp_tensor_stats *s,
                      long first_bad)
{
    json_t *recs = json_array();
    for (size_t i = 0; i < n; i++) {
        json_t *r = json_out_record(nnp_dump_record(d, idx[i]));
        bool ok = r && json_object_set_new(r, "stats", stats_json(&s[i])) == 0;
        if (!ok)
            json_decref(r);
        /* json_array_append_new takes r even when it fails */
        if (!ok || json_array_append_new(recs, r) != 0) {
            json_decref(recs);
            return json_out_print(NULL);
        }
    }
    json_t *bad = first_bad < 0 ? json_null() : json_string(nnp_dump_record(d, idx[first_bad])->name);
    return json_out_print(json_pack("{s:s, s:s, s:s, s:o, s:o}", "schema", "nnparity.stats/1",
                                    "path", nnp_dump_path(d), "format", nnp_dump_format(d),
                                    "records", recs, "first_nonfinite", bad));
}

/* A second argument that names a file nnparity reads is a dump, not a pattern: `stats REF PORT`
 * meant `diff`. */
static bool is_dump(const char *path)
{
    struct stat st;
    nnp_dump *d;
    if (stat(path, &st) != 0 || nnp_dump_open(path, &d) != NNP_OK)
        return false;
    nnp_dump_close(d);
    return true;
}

static int run_stats(int argc, char **argv)
{
    static const struct option opts[] = {{"json", no_argument, NULL, 'J'},
                                         {"threads", required_argument, NULL, 'j'},
                                         {"check-finite", no_argument, NULL, 'c'},
                                         {"width", required_argument, NULL, 'W'},
                                         {0, 0, 0, 0}};
    bool json = false, check = false;
    int threads = 0, c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":j:", opts, NULL)) != -1) {
        if (c == 'J') {
            json = true;
        } else if (c == 'c') {
            check = true;
        } else if (c == 'W') {
            if (!cli_set_width(optarg))
                return cli_width_error(&cli_stats, optarg);
        } else if (c == 'j') {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (*end || v < 1 || v > 256)
                return cli_usage_error(&cli_stats, "-j takes a thread count from 1 to 256, not '%s'",
                                       optarg);
            threads = (int)v;
        } else {
            return cli_option_error(&cli_stats, opts, c, argc, argv);
        }
    }
    if (optind >= argc)
        return cli_usage_error(&cli_stats, "no FILE given");
    if (argc - optind > 2)
        return cli_usage_error(&cli_stats, "too many arguments: one FILE and one PATTERN");
    const char *pattern = argc - optind == 2 ? argv[optind + 1] : NULL;
    if (cli_unfinished_capture(argv[optind]))
        return EXIT_BAD_INPUT;

    nnp_dump *d;
    nnp_status st = nnp_dump_open(argv[optind], &d);
    if (st)
        return cli_fail(st);
    if (pattern && is_dump(pattern)) {
        nnp_dump_close(d);
        return cli_usage_error(&cli_stats, "'%s' is a file, not a PATTERN: stats takes one FILE "
                               "and a name pattern; nnparity diff %s %s compares two files",
                               pattern, argv[optind], pattern);
    }
    size_t total = nnp_dump_count(d), n = 0;
    size_t *idx = malloc((total ? total : 1) * sizeof *idx);
    nnp_tensor_stats *s = calloc(total ? total : 1, sizeof *s);
    int rc = EXIT_AGREE;
    if (!idx || !s) {
        cli_error("out of memory");
        rc = EXIT_INTERNAL;
        goto out;
    }
    for (size_t i = 0; i < total; i++)
        if (cli_name_matches(pattern, nnp_dump_record(d, i)->name))
            idx[n++] = i;
    if (pattern && n == 0) {
        cli_error("%s: no tensor matches '%s'", argv[optind], pattern);
        rc = EXIT_BAD_INPUT;
        goto out;
    }
    if ((st = nnp_stats_compute(d, idx, n, threads, s))) {
        rc = cli_fail(st);
        goto out;
    }
    long first_bad = -1;
    for (size_t i = 0; i < n && first_bad < 0; i++)
        if (s[i].nan || s[i].pos_inf || s[i].neg_inf)
            first_bad = (long)i;
    if (json)
        rc = print_json(d, idx, n, s, first_bad);
    else
        print_text(d, idx, n, s, first_bad);
    if (rc == EXIT_AGREE && check && first_bad >= 0)
        rc = EXIT_FOUND;
out:
    free(idx);
    free(s);
    nnp_dump_close(d);
    return rc;
}

const cli_command cli_stats = {"stats", "per-tensor statistics; finds the first NaN or Inf",
                               stats_usage, run_stats};
