/*
 * cmd_ls.c - `nnparity ls`: one line per record, in execution order, with the bytes each
 * presents and, where they differ, the bytes it takes in the file.
 */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "report/json_out.h"

static const char ls_usage[] =
    "usage: nnparity ls [--json] [--meta] [--sketch] [--width N] FILE...\n"
    "\n"
    "List the records of each dump in execution order: seq (the number every report gives a\n"
    "record, from 0), name, dtype, shape and size (and the module type when the dump records\n"
    "it). size is what a record presents (nelem times its dtype's size); when a record takes\n"
    "another number of bytes in the file, a \"stored\" column says how many: a PyTorch view\n"
    "that repeats elements (torch.zeros(1).expand(1000) stores one float), a deflated npz\n"
    "member, a quantized GGUF tensor, and 0 B for a capture's record whose tensor an earlier\n"
    "record stores (the same tensor given again). The JSON gives both for every record\n"
    "(nbytes, stored_bytes), and \"same_as\", the earlier record's name, for the latter.\n"
    "\n"
    "  --json       one JSON document on stdout (schema nnparity.ls/1)\n"
    "  --meta       also print each file's metadata\n"
    "  --sketch     also each record's fingerprint (docs/sketch.md): the hash of its bytes and\n"
    "               its norm; with --json the whole sketch. A capture stores them; other\n"
    "               files are read to compute them\n"
    "  --width N    lay the table out for N columns (default: the terminal's width, 80 when\n"
    "               stdout is not a terminal)\n"
    "  -h           this help\n"
    "\n"
    "examples:\n"
    "  nnparity ls ref.safetensors\n"
    "  nnparity ls --meta --sketch model.gguf\n"
    "  nnparity ls --json ref.safetensors port.safetensors > records.json\n";

/* Whether any record takes another number of bytes in the file than it presents. */
static bool any_stored_apart(const nnp_dump *d)
{
    for (size_t i = 0; i < nnp_dump_count(d); i++)
        if (nnp_record_stored_bytes(d, i) != nnp_dump_record(d, i)->nbytes)
            return true;
    return false;
}

/* The name column: as wide as the longest name, within what the line leaves it (at least 60
 * columns; a longer name pushes the rest of its row to the right). */
static int name_width(const nnp_dump *d, bool stored)
{
    size_t w = 4, type = 0;
    for (size_t i = 0; i < nnp_dump_count(d); i++) {
        const nnp_record *r = nnp_dump_record(d, i);
        size_t n = (size_t)cli_text_width(r->name), t = (size_t)cli_text_width(r->module_type);
        w = n > w ? n : w;
        type = t > type ? t : type;
    }
    /* seq, dtype, shape and size with their gaps, and the type column when there is one */
    int rest = 6 + 2 + 2 + 7 + 2 + 20 + 2 + 10 + (stored ? 2 + 10 : 0) + (type ? 2 + (int)type : 0);
    int room = cli_width() - rest;
    if (room < 60)
        room = 60;
    return (int)w < room ? (int)w : room;
}

static void print_meta_text(const nnp_dump *d)
{
    size_t n = nnp_dump_meta_count(d);
    printf("metadata (%zu):\n", n);
    for (size_t i = 0; i < n; i++) {
        const char *k, *v;
        nnp_dump_meta_at(d, i, &k, &v);
        /* The provenance list is what the table above already shows. */
        if (strcmp(k, "nnparity.records") == 0)
            printf("  %s: (provenance of the %zu %s above)\n", cli_text(k), nnp_dump_count(d),
                   cli_plural(nnp_dump_count(d), "record", "records"));
        else if (strcmp(k, "nnparity.sketches") == 0)
            printf("  %s: (fingerprints of the records above, %zu characters; ls --sketch "
                   "shows them)\n", cli_text(k), strlen(v));
        else
            printf("  %s: %s\n", cli_text(k), cli_text(v));
    }
}

/* The fingerprints of every record of d, or NULL (the error printed, *rc set). */
static nnp_sketch *all_sketches(nnp_dump *d, int *rc)
{
    size_t n = nnp_dump_count(d);
    nnp_sketch *out = malloc((n ? n : 1) * sizeof *out);
    size_t *idx = malloc((n ? n : 1) * sizeof *idx);
    if (!out || !idx) {
        free(out);
        free(idx);
        cli_error("out of memory");
        *rc = EXIT_INTERNAL;
        return NULL;
    }
    for (size_t i = 0; i < n; i++)
        idx[i] = i;
    nnp_status st = nnp_dump_sketches(d, idx, n, 0, out);
    free(idx);
    if (st) {
        free(out);
        *rc = cli_fail(st);
        return NULL;
    }
    return out;
}

static json_t *sketch_part_json(const nnp_sketch_part *p)
{
    json_t *proj = json_array();
    for (int m = 0; m < NNP_SKETCH_WIDTH; m++)
        json_array_append_new(proj, json_real(p->proj[m]));
    return json_pack("{s:I, s:o, s:o, s:o}", "count", (json_int_t)p->count, "norm",
                     json_out_number(p->norm), "sum", json_out_number(p->sum), "proj", proj);
}

/* {"hash": 16 hex digits, "nonfinite", "count", "norm", "sum", "proj": [32], "last": {...}} */
static json_t *sketch_json(const nnp_sketch *k)
{
    char hash[17];
    snprintf(hash, sizeof hash, "%016llx", (unsigned long long)k->hash);
    json_t *o = sketch_part_json(&k->all);
    json_object_set_new(o, "hash", json_string(hash));
    json_object_set_new(o, "nonfinite", json_integer((json_int_t)k->nonfinite));
    if (k->has_last)
        json_object_set_new(o, "last", sketch_part_json(&k->last));
    return o;
}

static void print_text(const nnp_dump *d, bool meta, const nnp_sketch *sk)
{
    unsigned long long total = 0, total_stored = 0;
    bool typed = false, stored = any_stored_apart(d);
    for (size_t i = 0; i < nnp_dump_count(d); i++) {
        total += nnp_dump_record(d, i)->nbytes;
        total_stored += nnp_record_stored_bytes(d, i);
        typed = typed || *nnp_dump_record(d, i)->module_type;
    }
    char size[32], kept[32], shape[256];
    cli_format_bytes(size, sizeof size, total);
    cli_format_bytes(kept, sizeof kept, total_stored);
    printf("%s: %s, %zu %s, %s%s%s\n", cli_text(nnp_dump_path(d)), nnp_dump_format(d),
           nnp_dump_count(d), cli_plural(nnp_dump_count(d), "record", "records"), size,
           stored ? ", stored in " : "", stored ? kept : "");
    int w = name_width(d, stored);
    printf("%6s  %-*s  %-7s  %-20s  %10s%s%s%s\n", "seq", w, "name", "dtype", "shape", "size",
           stored ? "      stored" : "", sk ? "  hash              norm        " : "",
           typed ? "  type" : "");
    for (size_t i = 0; i < nnp_dump_count(d); i++) {
        const nnp_record *r = nnp_dump_record(d, i);
        cli_format_shape(shape, sizeof shape, r);
        cli_format_bytes(size, sizeof size, r->nbytes);
        cli_format_bytes(kept, sizeof kept, nnp_record_stored_bytes(d, i));
        char fp[64] = "";
        if (sk)
            snprintf(fp, sizeof fp, "  %016llx  %-12.6g", (unsigned long long)sk[i].hash,
                     sk[i].all.norm);
        printf("%6llu  %-*s  %-7s  %-20s  %10s%s%*s%s%s%s\n", (unsigned long long)r->seq, w,
               cli_text(r->name), nnp_dtype_name(r->dtype), shape, size, stored ? "  " : "",
               stored ? 10 : 0, stored ? kept : "", fp, typed ? "  " : "",
               cli_text(r->module_type));
    }
    if (meta)
        print_meta_text(d);
}

/* Each record of a dump's JSON gains "stored_bytes" (nnp_record_stored_bytes), after the
 * fields every record has, and "same_as" where it has one (nnp_record_same_as). NULL stays
 * NULL. */
static json_t *with_stored_bytes(const nnp_dump *d, json_t *o)
{
    json_t *recs = o ? json_object_get(o, "records") : NULL;
    for (size_t i = 0; i < json_array_size(recs); i++) {
        json_t *r = json_array_get(recs, i);
        const char *same = nnp_record_same_as(d, i);
        if (json_object_set_new(r, "stored_bytes",
                                json_integer((json_int_t)nnp_record_stored_bytes(d, i))) != 0 ||
            (same && json_object_set_new(r, "same_as", json_string(same)) != 0)) {
            json_decref(o);
            return NULL;
        }
    }
    return o;
}

static int run_ls(int argc, char **argv)
{
    static const struct option opts[] = {{"json", no_argument, NULL, 'j'},
                                         {"meta", no_argument, NULL, 'm'},
                                         {"sketch", no_argument, NULL, 's'},
                                         {"width", required_argument, NULL, 'W'},
                                         {0, 0, 0, 0}};
    bool json = false, meta = false, sketch = false;
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        if (c == 'j')
            json = true;
        else if (c == 'm')
            meta = true;
        else if (c == 's')
            sketch = true;
        else if (c == 'W' && !cli_set_width(optarg))
            return cli_width_error(&cli_ls, optarg);
        else if (c != 'W')
            return cli_option_error(&cli_ls, opts, c, argc, argv);
    }
    if (optind >= argc)
        return cli_usage_error(&cli_ls, "no FILE given");
    for (int a = optind; a < argc; a++)
        if (cli_unfinished_capture(argv[a]))
            return EXIT_BAD_INPUT;

    json_t *files = json ? json_array() : NULL;
    int rc = EXIT_AGREE;
    for (int a = optind; a < argc; a++) {
        nnp_dump *d;
        nnp_status st = nnp_dump_open(argv[a], &d);
        if (st) {
            rc = cli_fail(st);
            break;
        }
        nnp_sketch *sk = sketch ? all_sketches(d, &rc) : NULL;
        if (sketch && !sk) {
            nnp_dump_close(d);
            break;
        }
        if (json) {
            json_t *o = with_stored_bytes(d, json_out_dump(d, meta));
            json_t *recs = o ? json_object_get(o, "records") : NULL;
            for (size_t i = 0; sk && recs && i < nnp_dump_count(d); i++)
                json_object_set_new(json_array_get(recs, i), "sketch", sketch_json(&sk[i]));
            if (json_array_append_new(files, o) != 0) {
                free(sk);
                nnp_dump_close(d);
                rc = json_out_print(NULL);
                break;
            }
        } else {
            if (a > optind)
                putchar('\n');
            print_text(d, meta, sk);
        }
        free(sk);
        nnp_dump_close(d);
    }
    if (json) {
        if (rc == EXIT_AGREE) {
            json_t *doc = json_pack("{s:s, s:o}", "schema", "nnparity.ls/1", "files", files);
            rc = json_out_print(doc);
        } else {
            json_decref(files);
        }
    }
    return rc;
}

const cli_command cli_ls = {"ls", "list the records of dumps in execution order", ls_usage,
                            run_ls};
