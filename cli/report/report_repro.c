/*
 * report_repro.c - the reproducer `nnparity run` writes for the first layer with an error of its
 * own: DIR/repro/layer.safetensors with the inputs the port received under injection, the
 * reference's outputs and, where captured, the layer's parameters; and DIR/repro/README.md saying
 * how to re-run that layer alone against it.
 *
 * The records are stored as the layer's first call (no "#<call>" in their names): injected into
 * the port, the file then feeds the layer's first call, and a unit test that calls the layer once
 * records names that pair with it. The reference's own names are kept otherwise, so a rules file
 * that maps the port onto the reference maps it onto the reproducer too.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "pair_format.h"
#include "report.h"

void run_repro_clear(const char *out_dir)
{
    static const char *const names[] = {"repro/layer.safetensors",
                                        "repro/layer.safetensors.partial",
                                        "repro/layer.safetensors.journal", "repro/README.md"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        char *p = cli_join_path(out_dir, names[i]);
        if (p)
            remove(p);
        free(p);
    }
}

static bool starts_with(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

static bool is_input(const char *role)
{
    return starts_with(role, "in") && role[2] >= '0' && role[2] <= '9';
}

static bool is_output(const char *role)
{
    return starts_with(role, "out") && role[3] >= '0' && role[3] <= '9';
}

/* What the file holds for one record, and where its data comes from. */
typedef struct {
    const nnp_record *ref; /* names it */
    const run_row *row;    /* its row of the report */
    nnp_dump *dump;        /* holds its data */
    size_t index;
    const char *what;
} member;

/* The layer's records: its inputs and outputs of this call, and its parameters (any other role
 * but gradients; of this call, or of the first call when this one has none). */
static size_t members_of(const run_report *r, const run_row *layer, member *m)
{
    const nnp_record *lr = layer->rec;
    size_t n = 0;
    for (size_t i = 0; i < r->nrows; i++) {
        const run_row *row = &r->rows[i];
        const nnp_record *rec = row->rec;
        bool same = *lr->module ? strcmp(rec->module, lr->module) == 0 : row == layer;
        if (!same || starts_with(rec->role, "grad"))
            continue;
        bool io = is_input(rec->role) || is_output(rec->role);
        if (io && rec->call != lr->call)
            continue;
        if (!io && rec->call != lr->call) {
            if (rec->call != 0)
                continue;
            bool has_own_call = false;
            for (size_t k = 0; k < r->nrows; k++) {
                const nnp_record *o = r->rows[k].rec;
                has_own_call |= strcmp(o->module, rec->module) == 0 &&
                                strcmp(o->role, rec->role) == 0 && o->call == lr->call;
            }
            if (has_own_call)
                continue;
        }
        member *e = &m[n++];
        e->ref = rec;
        e->row = row;
        /* the injected capture's record, when it is the same tensor as the reference's (not
         * joined or adapted by the rules) */
        const nnp_diff_pair *p = row->inj;
        if (is_input(rec->role) && p && p->verdict != NNP_SHAPE_MISMATCH && p->nparts <= 1 &&
            !p->adapters) {
            e->dump = r->side[SIDE_INJ].dump;
            e->index = row->inj->port;
            e->what = "input, as the port received it under injection (the reference's values)";
        } else {
            e->dump = r->side[SIDE_REF].dump;
            e->index = i;
            e->what = is_input(rec->role) ? "input: the reference's (the injection run did not "
                                            "capture it)"
                      : is_output(rec->role) ? "the reference's output"
                      : starts_with(rec->role, "param:") ? "parameter, the reference's"
                      : starts_with(rec->role, "buffer:") ? "buffer, the reference's"
                                                          : "parameter or tap, from the reference";
        }
    }
    return n;
}

static nnp_status write_file(const char *path, const run_report *r, const member *m, size_t n,
                             const char *layer)
{
    nnp_writer *w;
    nnp_status st = nnp_writer_open(path, n, &w);
    if (st)
        return st;
    cli_sigbus_output(path);
    st = nnp_writer_set_meta(w, "layer", layer);
    if (!st)
        st = nnp_writer_set_meta(w, "made_by", "nnparity run");
    if (!st)
        st = nnp_writer_set_meta(w, "reference_command", r->side[SIDE_REF].command);
    if (!st)
        st = nnp_writer_set_meta(w, "port_command", r->side[SIDE_PORT].command);
    for (size_t i = 0; i < n && !st; i++) {
        const nnp_record *data_rec = nnp_dump_record(m[i].dump, m[i].index);
        const nnp_record *ref = m[i].ref;
        const void *data;
        st = nnp_dump_data(m[i].dump, m[i].index, &data);
        nnp_record_desc d = {.name = *ref->module ? NULL : ref->name, .module = ref->module,
                             .role = ref->role, .module_type = ref->module_type, .call = 0,
                             .dtype = data_rec->dtype, .ndim = data_rec->ndim,
                             .shape = data_rec->shape};
        if (!st)
            st = nnp_writer_add(w, &d, data);
    }
    if (st)
        nnp_writer_abort(w);
    else
        st = nnp_writer_close(w);
    cli_sigbus_output(NULL);
    return st;
}

/* `s` quoted for sh. */
static void shell_quote(FILE *o, const char *s)
{
    fputc('\'', o);
    for (; *s; s++)
        if (*s == '\'')
            fputs("'\\''", o);
        else
            fputc(*s, o);
    fputc('\'', o);
}

static void error_line(FILE *o, const char *label, const run_row *row, const nnp_diff_pair *p)
{
    if (!p) {
        fprintf(o, "- %s: not captured\n", label);
        return;
    }
    if (p->verdict == NNP_SHAPE_MISMATCH || p->verdict == NNP_DTYPE_MISMATCH) {
        fprintf(o, "- %s: %s mismatch, not compared\n", label, nnp_verdict_name(p->verdict));
        return;
    }
    char idx[256], a[32], b[32];
    format_index(idx, sizeof idx, p, p->metrics.max_index);
    run_num(a, sizeof a, p->metrics.max_abs);
    run_num(b, sizeof b, p->metrics.rel_l2);
    fprintf(o, "- %s (", label);
    md_code(o, row->rec->name, false);
    fprintf(o, ", %s): max-abs %s at %s (reference %.7g, port %.7g), rel-L2 %s, "
               "%.3g%% of the elements outside tolerance\n", nnp_verdict_name(p->verdict), a, idx, p->metrics.ref_at_max, p->metrics.port_at_max,
            b, p->metrics.allclose_fail_pct);
}

static void readme(FILE *o, const run_report *r, const run_row *layer, const member *m, size_t n,
                   const char *name)
{
    const nnp_record *lr = layer->rec;
    const char *dir = r->out_dir;
    fprintf(o, "# Reproducer: ");
    md_text(o, name, false);
    fprintf(o, "%s", *lr->module_type ? " (" : "");
    md_text(o, lr->module_type, false);
    fprintf(o, "%s\n\n`nnparity run` found that ", *lr->module_type ? ")" : "");
    md_code(o, name, false);
    fprintf(o, " differs from the reference even when it is given the reference's own inputs: "
               "the error is its own, not inherited from an earlier layer.\n\n- reference: ");
    md_code(o, r->side[SIDE_REF].command, false);
    fprintf(o, "\n- port: ");
    md_code(o, r->side[SIDE_PORT].command, false);
    fprintf(o, "\n");
    /* the layer's worst output, or the row that was labelled own */
    const run_row *worst = layer;
    for (size_t i = 0; i < r->nrows; i++) {
        const run_row *row = &r->rows[i];
        if (row->label == NNP_LABEL_OWN && strcmp(row->rec->module, lr->module) == 0 &&
            row->rec->call == lr->call && *lr->module && is_output(row->rec->role)) {
            worst = row;
            break;
        }
    }
    error_line(o, "on the reference's inputs", worst, worst->inj);
    error_line(o, "in the standard run", worst, worst->std);
    /* the layer's own parameters that the port holds otherwise: likely what to fix */
    for (size_t i = 0; i < n; i++) {
        const nnp_diff_pair *p = m[i].row->inj ? m[i].row->inj : m[i].row->std;
        if (!is_input(m[i].ref->role) && !is_output(m[i].ref->role) && p &&
            p->verdict != NNP_PASS)
            error_line(o, "the port's parameter differs", m[i].row, p);
    }
    fprintf(o, "\n`layer.safetensors` holds (as the layer's first call):\n\n"
               "| tensor | what | dtype | shape |\n|---|---|---|---|\n");
    for (size_t i = 0; i < n; i++) {
        const nnp_record *d = nnp_dump_record(m[i].dump, m[i].index);
        char shape[256];
        cli_format_shape(shape, sizeof shape, d);
        char *tensor = NULL;
        if (*m[i].ref->module && asprintf(&tensor, "%s/%s", m[i].ref->module, m[i].ref->role) < 0)
            tensor = NULL;
        fprintf(o, "| ");
        md_code(o, tensor ? tensor : m[i].ref->name, true);
        fprintf(o, " | %s | %s | %s |\n", m[i].what, nnp_dtype_name(d->dtype), shape);
        free(tensor);
    }
    fprintf(o, "\n## Re-run this layer alone\n\n"
               "Give the layer the inputs above, record its outputs under the same names, and "
               "compare them with the reference's outputs. (Paths are as `nnparity run` was "
               "given them, from the directory it ran in.)\n\n"
               "With the port itself: inject from this file. It holds only this layer's inputs, "
               "so the layer's first call runs on them while every other layer runs on its own "
               "data (their inputs are not in the file and are left alone):\n\n");
    fprintf(o, "    NNPARITY_INJECT=%s/repro/layer.safetensors NNPARITY_CAPTURE=%s/repro/"
               "mine.safetensors", dir, dir);
    if (r->rules_path)
        fprintf(o, " NNPARITY_RULES=%s", r->rules_path);
    fprintf(o, " sh -c ");
    shell_quote(o, r->side[SIDE_PORT].command);
    fprintf(o, "\n    nnparity diff %s%s%s%s/repro/layer.safetensors %s/repro/mine.safetensors\n\n",
            r->rules_path ? "--rules " : "", r->rules_path ? r->rules_path : "",
            r->rules_path ? " " : "", dir, dir);
    fprintf(o, "The port's other records are listed as only in the port; this layer's outputs "
               "are compared. In a unit test of the layer instead: read the inputs "
               "(`nnp_dump_open` and `nnp_dump_data`, or `safetensors.torch.load_file`), run "
               "the layer once, record its outputs with `nnp_tap` (or `nnparity.tap`) under the "
               "names above, and run the same `nnparity diff`.\n\n"
               "`nnparity diff` exits 0 once the layer matches the reference.\n");
}

int run_write_repro(run_report *r)
{
    if (r->first_own < 0)
        return EXIT_AGREE;
    const run_row *layer = &r->rows[r->first_own];
    member *m = calloc(r->nrows, sizeof *m);
    char name[512];
    run_row_layer(layer, name, sizeof name);
    /* the layer, as its first call is named */
    const char *lname = *layer->rec->module ? layer->rec->module : layer->rec->name;
    char *dir = cli_join_path(r->out_dir, "repro");
    r->repro_file = cli_join_path(r->out_dir, "repro/layer.safetensors");
    r->repro_readme = cli_join_path(r->out_dir, "repro/README.md");
    r->repro_layer = strdup(name);
    if (!m || !dir || !r->repro_file || !r->repro_readme || !r->repro_layer) {
        free(m);
        free(dir);
        return run_nomem();
    }
    if (mkdir(dir, 0777) != 0 && errno != EEXIST) {
        cli_error("%s: cannot create the directory: %s", dir, strerror(errno));
        free(m);
        free(dir);
        return EXIT_BAD_INPUT;
    }
    free(dir);
    size_t n = members_of(r, layer, m);
    nnp_status st = write_file(r->repro_file, r, m, n, lname);
    int rc = st ? cli_fail(st) : EXIT_AGREE;
    char *text = NULL;
    size_t len = 0;
    FILE *o = rc ? NULL : open_memstream(&text, &len);
    if (!rc && !o)
        rc = run_nomem();
    if (o) {
        readme(o, r, layer, m, n, name);
        if (fclose(o) != 0 || !text)
            rc = run_nomem();
        else
            rc = cli_write_file(r->repro_readme, text, len);
    }
    free(text);
    free(m);
    return rc;
}
