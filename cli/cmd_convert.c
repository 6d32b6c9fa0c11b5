/*
 * cmd_convert.c - `nnparity convert`: any file nnparity reads (safetensors, shards, npy, npz, a
 * PyTorch checkpoint, GGUF) written out as one safetensors file, record by record through the
 * streaming writer, so that tools which only read safetensors can use it.
 */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

static const char convert_usage[] =
    "usage: nnparity convert [--dtype DTYPE] [--only PATTERN]... [--force] IN OUT\n"
    "\n"
    "Write any file nnparity reads (safetensors, sharded safetensors, npy, npz, a PyTorch\n"
    "checkpoint, GGUF) as one safetensors file OUT: the same tensor names in the same order,\n"
    "each with the dtype it is read as (GGUF's quantized tensors dequantized to F32), the\n"
    "records' module, role and call, and the file's metadata in __metadata__. Tensors are\n"
    "streamed one at a time; OUT is built as OUT.partial and renamed into place once complete,\n"
    "so on an error nothing is left behind.\n"
    "\n"
    "  --dtype DTYPE    convert float tensors to F32, F16, BF16 or F64 (round to nearest even);\n"
    "                   integer and bool tensors keep their dtype\n"
    "  --only PATTERN   keep the tensors whose name matches this glob (a plain word matches as\n"
    "                   a substring), e.g. 'blk.0.*'; repeat it to keep several sets\n"
    "  --force          replace an OUT that nnparity did not write (by default only a\n"
    "                   safetensors file nnparity wrote is replaced; docs/cli.md)\n"
    "  -h               this help\n"
    "\n"
    "examples:\n"
    "  nnparity convert model.gguf model.safetensors\n"
    "  nnparity convert --dtype F32 --only 'blk.0.*' model.gguf blk0.safetensors\n"
    "  nnparity convert pytorch_model.bin model.safetensors\n";

/* nnp_dump_release gives back only the pages of records mapped in place; a record converted on
 * first access (a dequantized GGUF tensor, a deflated npz member, a strided torch view) keeps its
 * copy until the dump is closed. For the formats that make such copies, the dump is closed and
 * opened again once this many bytes were read, so that a conversion holds about this much
 * besides the record it is writing, however large the model (a 7B GGUF dequantizes to 28 GB).
 * Reopening costs one header parse, milliseconds next to the work on this many bytes. */
#define REOPEN_AFTER_BYTES (64ull << 20)

typedef struct convert_opts {
    nnp_dtype dtype; /* NNP_DTYPE_INVALID: keep each record's dtype */
    const char **only;
    size_t nonly;
    bool force;      /* replace an OUT nnparity did not write */
} convert_opts;

static bool selected(const convert_opts *o, const char *name)
{
    if (!o->nonly)
        return true;
    for (size_t i = 0; i < o->nonly; i++)
        if (cli_name_matches(o->only[i], name))
            return true;
    return false;
}

static nnp_dtype parse_dtype(const char *s)
{
    char up[8];
    size_t n = strlen(s);
    if (n >= sizeof up)
        return NNP_DTYPE_INVALID;
    for (size_t i = 0; i <= n; i++)
        up[i] = (char)toupper((unsigned char)s[i]);
    nnp_dtype t = nnp_dtype_from_name(up);
    return t == NNP_F32 || t == NNP_F16 || t == NNP_BF16 || t == NNP_F64 ? t : NNP_DTYPE_INVALID;
}

static char *with_suffix(const char *path, const char *suffix)
{
    size_t n = strlen(path), m = strlen(suffix);
    char *p = malloc(n + m + 1);
    if (p) {
        memcpy(p, path, n);
        memcpy(p + n, suffix, m + 1);
    }
    return p;
}

/* The files the writer creates or replaces: OUT, OUT.partial and OUT.journal. */
typedef struct out_paths {
    const char *path[3];
    char *owned[2];
} out_paths;

static bool out_paths_init(out_paths *p, const char *out)
{
    p->owned[0] = with_suffix(out, ".partial");
    p->owned[1] = with_suffix(out, ".journal");
    p->path[0] = out;
    p->path[1] = p->owned[0];
    p->path[2] = p->owned[1];
    return p->owned[0] && p->owned[1];
}

static void out_paths_free(out_paths *p)
{
    free(p->owned[0]);
    free(p->owned[1]);
}

/* Refuse an OUT that would destroy the input or a capture: OUT (or the OUT.partial the writer
 * truncates) being one of the dump's files, OUT a directory, or an OUT.journal beside it, which
 * means a capture into OUT is running or was killed and can still be recovered. The writer
 * renames over OUT, so a mapped input would survive, but converting a file onto itself is never
 * what was meant. */
static int check_out(nnp_dump *d, const out_paths *p, bool force)
{
    struct stat os[3], is;
    bool exists[3], any = false;
    for (int k = 0; k < 3; k++) {
        exists[k] = stat(p->path[k], &os[k]) == 0;
        any = any || exists[k];
    }
    if (exists[0] && S_ISDIR(os[0].st_mode)) {
        cli_error("%s: is a directory; OUT names the safetensors file to write", p->path[0]);
        return EXIT_BAD_INPUT;
    }
    const char *prev = NULL;
    for (size_t i = 0; any && i <= nnp_dump_count(d); i++) {
        const char *f = i == 0 ? nnp_dump_path(d) : nnp_dump_record(d, i - 1)->file;
        if (!f || (prev && strcmp(f, prev) == 0) || stat(f, &is) != 0)
            continue;
        prev = f;
        for (int k = 0; k < 2; k++)
            if (exists[k] && os[k].st_dev == is.st_dev && os[k].st_ino == is.st_ino) {
                cli_error("%s: would overwrite %s, which is being converted; write the "
                          "output elsewhere", p->path[0], f);
                return EXIT_BAD_INPUT;
            }
    }
    if (exists[2]) {
        cli_error("%s: exists: a capture into %s is running or was killed ('nnparity recover "
                  "%s' finishes it); remove it to overwrite", p->path[2], p->path[0], p->path[0]);
        return EXIT_BAD_INPUT;
    }
    return exists[0] ? cli_check_output(p->path[0], CLI_OUT_DUMP, force) : EXIT_AGREE;
}

/* What the writer should keep room for, as the record count its header sizing takes: it counts
 * about 320 bytes a record, and the dump's metadata (a GGUF file's chat template, say) would
 * otherwise make it copy the whole output once more behind a larger header. */
static size_t header_estimate(const nnp_dump *d, const size_t *idx, size_t n)
{
    unsigned long long bytes = 0;
    for (size_t i = 0; i < n; i++) {
        const nnp_record *r = nnp_dump_record(d, idx[i]);
        /* the name twice (entry, provenance), provenance quoted inside a string */
        bytes += 2 * strlen(r->name) + 2 * (strlen(r->module) + strlen(r->role) +
                                            strlen(r->module_type)) + 200 + 21ull * r->ndim;
    }
    for (size_t i = 0; i < nnp_dump_meta_count(d); i++) {
        const char *k, *v;
        nnp_dump_meta_at(d, i, &k, &v);
        bytes += (strlen(k) + strlen(v)) * 5 / 4 + 16;
    }
    return (size_t)(bytes / 320 + 1);
}

/* Whether metadata pair (key, value) of the dump goes into the output. nnparity's own keys are
 * the writer's to set (the format and the records, rebuilt from the records written), and a
 * partial dump's journal name would be false; a GGUF tensor's stored type is dropped with the
 * tensor. */
static bool keep_meta(const nnp_dump *d, const bool *kept, const char *key)
{
    if (strncmp(key, "nnparity.", 9) == 0)
        return false;
    size_t n = strlen(NNP_GGUF_TENSOR_TYPE_PREFIX);
    if (strncmp(key, NNP_GGUF_TENSOR_TYPE_PREFIX, n) == 0) {
        int64_t r = nnp_dump_find(d, key + n);
        return r < 0 || kept[r];
    }
    return true;
}

/* Close the dump and open IN again (see REOPEN_AFTER_BYTES); the file must still hold the same
 * records. Returns an exit code, the error printed. */
static int reopen(nnp_dump **d, const char *in)
{
    nnp_dump *fresh;
    nnp_status st = nnp_dump_open(in, &fresh);
    if (st)
        return cli_fail(st);
    bool same = nnp_dump_count(fresh) == nnp_dump_count(*d);
    for (size_t i = 0; same && i < nnp_dump_count(fresh); i++) {
        const nnp_record *a = nnp_dump_record(*d, i), *b = nnp_dump_record(fresh, i);
        same = a->dtype == b->dtype && a->nbytes == b->nbytes && a->ndim == b->ndim &&
               strcmp(a->name, b->name) == 0;
    }
    nnp_dump_close(*d);
    *d = fresh;
    if (!same) {
        cli_error("%s: the file changed while it was being converted", in);
        return EXIT_BAD_INPUT;
    }
    return EXIT_AGREE;
}

/* The writer gave up in nnp_writer_close and kept OUT.partial and OUT.journal for `nnparity
 * recover`; a conversion is simply run again, so they go, and the message stops promising
 * them. */
static int close_failed(nnp_status st, const out_paths *p)
{
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", nnp_last_error());
    char *kept = strstr(msg, "; the records written so far stay in ");
    if (kept)
        *kept = 0;
    unlink(p->path[1]);
    unlink(p->path[2]);
    cli_error("%s", msg);
    return st == NNP_ERR_NOMEM || st == NNP_ERR_INTERNAL ? EXIT_INTERNAL : EXIT_BAD_INPUT;
}

/* The bytes to write for one record: its own when its dtype stays, else `*buf` (grown as
 * needed) holding them converted. Returns an exit code, the error printed. */
static int record_bytes(const nnp_record *r, const void *data, nnp_dtype to, void **buf,
                        size_t *cap, const void **out, nnp_dtype *out_dtype)
{
    *out = data;
    *out_dtype = r->dtype;
    if (to == NNP_DTYPE_INVALID || r->dtype == to ||
        nnp_dtype_class_of(r->dtype) != NNP_CLASS_FLOAT)
        return EXIT_AGREE;
    *out_dtype = to;
    if (!r->nelem)
        return EXIT_AGREE;
    size_t need = (size_t)r->nelem * nnp_dtype_size(to);
    if (need > *cap) {
        free(*buf);
        *cap = 0;
        if (!(*buf = malloc(need))) {
            cli_error("%s: tensor '%s': out of memory converting %llu elements to %s", r->file,
                      r->name, (unsigned long long)r->nelem, nnp_dtype_name(to));
            return EXIT_INTERNAL;
        }
        *cap = need;
    }
    nnp_status st = nnp_convert(r->dtype, data, (size_t)r->nelem, to, *buf);
    *out = *buf;
    return st ? cli_fail(st) : EXIT_AGREE;
}

/* Stream records idx[0..n) of *d into the open writer. *d may be replaced (reopened). */
static int write_records(nnp_dump **d, const char *in, const size_t *idx, size_t n,
                         const convert_opts *o, nnp_writer *w, unsigned long long *written)
{
    const char *fmt = nnp_dump_format(*d);
    bool copies = strcmp(fmt, "gguf") == 0 || strcmp(fmt, "npz") == 0 ||
                  strcmp(fmt, "torch") == 0;
    unsigned long long since_open = 0;
    void *buf = NULL;
    size_t cap = 0;
    int rc = EXIT_AGREE;
    for (size_t k = 0; k < n && rc == EXIT_AGREE; k++) {
        if (copies && since_open >= REOPEN_AFTER_BYTES) {
            if ((rc = reopen(d, in)))
                break;
            since_open = 0;
        }
        const nnp_record *r = nnp_dump_record(*d, idx[k]);
        const void *data = NULL, *bytes;
        nnp_dtype dtype;
        nnp_status st = nnp_dump_data(*d, idx[k], &data);
        if (st) {
            rc = cli_fail(st);
            break;
        }
        if ((rc = record_bytes(r, data, o->dtype, &buf, &cap, &bytes, &dtype)))
            break;
        nnp_record_desc desc = {.name = r->name, .module = r->module, .role = r->role,
                                .module_type = r->module_type, .call = r->call, .dtype = dtype,
                                .ndim = r->ndim, .shape = r->shape};
        if ((st = nnp_writer_add(w, &desc, bytes)))
            rc = cli_fail(st);
        nnp_dump_release(*d, idx[k]);
        since_open += r->nbytes;
        *written += r->nelem * nnp_dtype_size(dtype);
    }
    free(buf);
    return rc;
}

static int parse_args(int argc, char **argv, convert_opts *o)
{
    static const struct option opts[] = {{"dtype", required_argument, NULL, 'd'},
                                         {"only", required_argument, NULL, 'o'},
                                         {"force", no_argument, NULL, 'f'},
                                         {0, 0, 0, 0}};
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        if (c == 'd') {
            if ((o->dtype = parse_dtype(optarg)) == NNP_DTYPE_INVALID)
                return cli_usage_error(&cli_convert, "--dtype takes F32, F16, BF16 or F64, not "
                                       "'%s'", optarg);
        } else if (c == 'o') {
            o->only[o->nonly++] = optarg; /* room for argc patterns was made */
        } else if (c == 'f') {
            o->force = true;
        } else {
            return cli_option_error(&cli_convert, opts, c, argc, argv);
        }
    }
    if (argc - optind != 2)
        return cli_usage_error(&cli_convert, argc - optind < 2 ? "IN and OUT are needed"
                                                               : "too many arguments: IN OUT");
    if (strcmp(argv[optind], argv[optind + 1]) == 0) {
        cli_error("%s: OUT is IN; write the output elsewhere", argv[optind]);
        return EXIT_BAD_INPUT;
    }
    return cli_unfinished_capture(argv[optind]);
}

/* The kept records' indices into idx (n of them) and kept[] (per record); refuses a name the
 * writer cannot keep and an --only that keeps nothing. Returns an exit code, the error
 * printed. */
static int select_records(const nnp_dump *d, const char *in, const convert_opts *o, size_t *idx,
                          bool *kept, size_t *n)
{
    *n = 0;
    for (size_t i = 0; i < nnp_dump_count(d); i++) {
        const nnp_record *r = nnp_dump_record(d, i);
        if (!selected(o, r->name))
            continue;
        /* The writer names a tensor given no name after its module and role. */
        if (!*r->name) {
            cli_error("%s: the record at seq %zu has an empty name, which the writer cannot "
                      "keep", in, i);
            return EXIT_BAD_INPUT;
        }
        kept[i] = true;
        idx[(*n)++] = i;
    }
    if (o->nonly && *n == 0) {
        cli_error("%s: no tensor matches --only", in);
        return EXIT_BAD_INPUT;
    }
    return EXIT_AGREE;
}

/* Write the records idx[0..n) of *d, and its metadata, to OUT through the writer. Nothing is
 * left at OUT (or beside it) unless this succeeds. */
static int write_out(nnp_dump **d, const char *in, const out_paths *p, const size_t *idx,
                     const bool *kept, size_t n, const convert_opts *o)
{
    nnp_writer *w;
    nnp_status st = nnp_writer_open(p->path[0], header_estimate(*d, idx, n), &w);
    if (st)
        return cli_fail(st);
    cli_sigbus_output(p->path[0]);
    int rc = EXIT_AGREE;
    for (size_t i = 0; i < nnp_dump_meta_count(*d) && rc == EXIT_AGREE; i++) {
        const char *k, *v;
        nnp_dump_meta_at(*d, i, &k, &v);
        if (keep_meta(*d, kept, k) && (st = nnp_writer_set_meta(w, k, v)))
            rc = cli_fail(st);
    }
    unsigned long long written = 0;
    if (rc == EXIT_AGREE)
        rc = write_records(d, in, idx, n, o, w, &written);
    if (rc) {
        nnp_writer_abort(w);
        cli_sigbus_output(NULL);
        return rc;
    }
    st = nnp_writer_close(w);
    cli_sigbus_output(NULL);
    if (st)
        return close_failed(st, p);
    char size[32];
    cli_format_bytes(size, sizeof size, written);
    printf("%s: %zu %s, %s, from %s (%s)\n", cli_text(p->path[0]), n,
           cli_plural(n, "record", "records"), size, cli_text(in), nnp_dump_format(*d));
    return EXIT_AGREE;
}

static int run_convert(int argc, char **argv)
{
    convert_opts o = {.dtype = NNP_DTYPE_INVALID};
    if (!(o.only = malloc((size_t)argc * sizeof *o.only))) {
        cli_error("out of memory");
        return EXIT_INTERNAL;
    }
    int rc = parse_args(argc, argv, &o);
    if (rc) {
        free(o.only);
        return rc;
    }
    const char *in = argv[optind], *out = argv[optind + 1];
    out_paths paths;
    nnp_dump *d = NULL;
    size_t *idx = NULL, n = 0;
    bool *kept = NULL;
    nnp_status st;
    if (!out_paths_init(&paths, out)) {
        cli_error("out of memory");
        rc = EXIT_INTERNAL;
    } else if ((st = nnp_dump_open(in, &d))) {
        rc = cli_fail(st);
    } else if (!(rc = check_out(d, &paths, o.force))) {
        size_t total = nnp_dump_count(d) ? nnp_dump_count(d) : 1;
        idx = malloc(total * sizeof *idx);
        kept = calloc(total, sizeof *kept);
        if (!idx || !kept) {
            cli_error("out of memory");
            rc = EXIT_INTERNAL;
        } else if (!(rc = select_records(d, in, &o, idx, kept, &n))) {
            rc = write_out(&d, in, &paths, idx, kept, n, &o);
        }
    }
    nnp_dump_close(d);
    free(idx);
    free(kept);
    out_paths_free(&paths);
    free(o.only);
    return rc;
}

const cli_command cli_convert = {"convert", "write any readable file as one safetensors file",
                                 convert_usage, run_convert};
