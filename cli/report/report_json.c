/*
 * report_json.c - the report of `nnparity run` as JSON, schema nnparity.run/1 (docs/run.md): the
 * runs, the verdict, one object per reference record with both scenarios' metrics and its label,
 * the components and the reproducer.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cli.h"
#include "json_out.h"
#include "pair_format.h"
#include "report.h"

static json_t *opt_string(const char *s)
{
    return s ? json_string(s) : json_null();
}

static json_t *row_index(int64_t i)
{
    return i < 0 ? json_null() : json_integer(i);
}

static json_t *side_json(const run_side *s)
{
    json_t *tail = json_array();
    for (const char *p = s->tail ? s->tail : ""; *p;) {
        size_t len = strcspn(p, "\n");
        json_array_append_new(tail, json_stringn(p, len));
        p += len + (p[len] == '\n');
    }
    return json_pack("{s:s, s:s, s:o, s:b, s:o, s:o, s:s, s:o, s:s, s:I, s:b}", "command",
                     s->command, "capture", s->dump ? nnp_dump_path(s->dump) : s->capture,
                     "captured", json_boolean(s->dump != NULL), "failed", s->failed,
                     "exit_status", s->exit_status >= 0 ? json_integer(s->exit_status)
                                                        : json_null(),
                     "signal", s->signal ? json_integer(s->signal) : json_null(), "status",
                     s->status, "stderr_tail", tail, "stderr_file", s->stderr_file, "records",
                     (json_int_t)(s->dump ? nnp_dump_count(s->dump) : 0), "recovered",
                     s->recovered);
}

static json_t *pair_json(const nnp_dump *port, const nnp_diff_pair *p)
{
    if (!p)
        return json_null();
    json_t *o = json_pack("{s:s, s:I, s:s, s:f, s:f}", "port",
                          nnp_dump_record(port, p->port)->name, "port_seq",
                          (json_int_t)nnp_dump_record(port, p->port)->seq, "verdict",
                          nnp_verdict_name(p->verdict), "atol", p->atol, "rtol", p->rtol);
    if (o && p->verdict != NNP_SHAPE_MISMATCH && p->verdict != NNP_DTYPE_MISMATCH)
        json_object_set_new(o, "metrics", metrics_json(p));
    if (o) {
        json_object_set_new(o, "evidence", json_string(nnp_evidence_name(p->evidence)));
        json_object_set_new(o, "confidence", json_real(p->confidence));
    }
    return o;
}

static json_t *port_record_json(const nnp_dump *port, int64_t i)
{
    return i < 0 ? json_null() : json_string(nnp_dump_record(port, (size_t)i)->name);
}

/* Who makes the first divergence (run_culprit), or null. */
static json_t *culprit_json(const run_report *r)
{
    const nnp_culprit *c = run_culprit(r);
    if (!c)
        return json_null();
    const nnp_dump *port = r->side[SIDE_PORT].dump;
    return json_pack("{s:s, s:s, s:s, s:o, s:o}", "kind",
                     c->kind == NNP_CULPRIT_CODE ? "code" : "module", "port_module",
                     c->port_module, "ref_module", c->ref_module, "after",
                     port_record_json(port, c->after), "before",
                     port_record_json(port, c->before));
}

static json_t *hist_json(const run_hist *h)
{
    if (!h->done)
        return json_null();
    json_t *a = json_array();
    for (int i = 0; i < HIST_BINS; i++)
        json_array_append_new(a, json_integer((json_int_t)h->bin[i]));
    return a;
}

static json_t *row_json(const run_report *r, const run_row *row)
{
    const nnp_record *rec = row->rec;
    json_t *o = json_pack("{s:s, s:I, s:s, s:s, s:s, s:s, s:I, s:s, s:o, s:o, s:o}", "ref",
                          rec->name, "seq", (json_int_t)rec->seq, "module", rec->module, "role",
                          rec->role, "type", rec->module_type, "component",
                          nnp_component_name(row->component), "call", (json_int_t)rec->call,
                          "label", nnp_label_name(row->label), "ratio", json_out_number(row->ratio),
                          "standard",
                          pair_json(r->side[SIDE_PORT].dump, row->std), "injected",
                          r->side[SIDE_INJ].dump ? pair_json(r->side[SIDE_INJ].dump, row->inj)
                                                 : json_null());
    if (o)
        json_object_set_new(o, "histograms",
                            json_pack("{s:o, s:o}", "standard", hist_json(&row->std_hist),
                                      "injected", hist_json(&row->inj_hist)));
    /* the noise floor the label was measured against */
    if (o && r->base_std)
        json_object_set_new(
            o, "baseline",
            json_pack("{s:o, s:o, s:{s:o, s:o}}", "standard",
                      pair_json(r->side[SIDE_BASE].dump, row->base_std), "injected",
                      r->base_inj ? pair_json(r->side[SIDE_BASE_INJ].dump, row->base_inj)
                                  : json_null(),
                      "injected_floor", "rel_l2", json_out_number(row->inj_floor_rel),
                      "max_abs", json_out_number(row->inj_floor_abs)));
    return o;
}

static json_t *components_json(const run_report *r)
{
    json_t *o = json_object();
    for (size_t k = 0; k < NNP_COMPONENT_COUNT; k++) {
        const run_component *c = &r->components[k];
        if (!c->rows)
            continue;
        json_object_set_new(
            o, c->name,
            json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:o, s:o, s:o, s:o}", "records",
                      (json_int_t)c->rows, "compared", (json_int_t)c->compared, "own",
                      (json_int_t)c->own, "inherited", (json_int_t)c->inherited,
                      "standard_fail", (json_int_t)c->std_fail, "injected_fail",
                      (json_int_t)c->inj_fail, "standard_rel_l2_max",
                      json_out_number(c->compared ? c->std_rel_max : NAN),
                      "injected_rel_l2_max", json_out_number(c->compared ? c->inj_rel_max : NAN),
                      "standard_max_abs", json_out_number(c->compared ? c->std_abs_max : NAN),
                      "injected_max_abs", json_out_number(c->compared ? c->inj_abs_max : NAN)));
    }
    return o;
}

/* The names of the port records a diff left unmatched. */
static json_t *unmatched_port_json(const nnp_dump *port, const nnp_diff *d)
{
    json_t *a = json_array();
    for (size_t i = 0; i < nnp_diff_unmatched_port_count(d); i++)
        json_array_append_new(
            a, json_string(nnp_dump_record(port, nnp_diff_unmatched_port_at(d, i))->name));
    return a;
}

static json_t *report_json(const run_report *r)
{
    json_t *rows = json_array();
    for (size_t i = 0; rows && i < r->nrows; i++) {
        json_t *o = row_json(r, &r->rows[i]);
        if (!o || json_array_append_new(rows, o) != 0) {
            json_decref(rows);
            return NULL;
        }
    }
    json_t *repro = r->repro_file
                        ? json_pack("{s:s, s:s, s:s}", "file", r->repro_file, "readme",
                                    r->repro_readme, "layer", r->repro_layer)
                        : json_null();
    json_t *tol = json_pack("{s:o, s:o}", "atol", r->atol < 0 ? json_null() : json_real(r->atol),
                            "rtol", r->rtol < 0 ? json_null() : json_real(r->rtol));
    json_t *o = json_pack(
        "{s:s, s:b, s:i, s:s, s:{s:o, s:o, s:o}, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, "
        "s:o, s:s}",
        "schema", "nnparity.run/1", "agree", r->agree, "exit_code", r->exit_code, "verdict",
        r->verdict, "runs", "reference", side_json(&r->side[SIDE_REF]), "port",
        side_json(&r->side[SIDE_PORT]), "injected", side_json(&r->side[SIDE_INJ]), "rules",
        opt_string(r->rules_path), "tolerance", tol, "first_divergence",
        row_index(r->first_divergence), "first_own", row_index(r->first_own), "order_violation",
        row_index(r->order_violation), "records", rows, "components", components_json(r),
        "unmatched_port", unmatched_port_json(r->side[SIDE_PORT].dump, r->std),
        "unmatched_injected",
        r->inj ? unmatched_port_json(r->side[SIDE_INJ].dump, r->inj) : json_array(),
        "reproducer", repro, "report", r->html_path);
    if (o) {
        json_object_set_new(o, "culprit", culprit_json(r));
        json_object_set_new(o, "aligned_rules", opt_string(r->aligned_rules_path));
        json_t *runs = json_object_get(o, "runs");
        for (int s = SIDE_BASE; s < NSIDES; s++)
            if (run_side_used(&r->side[s]))
                json_object_set_new(runs, s == SIDE_BASE ? "baseline" : "baseline_injected",
                                    side_json(&r->side[s]));
        json_object_set_new(o, "baseline",
                            r->base_std ? json_pack("{s:s, s:f, s:I}", "precision",
                                                    r->baseline_precision, "factor",
                                                    NNP_PRECISION_FACTOR, "within_noise",
                                                    (json_int_t)r->precision)
                                        : json_null());
        json_object_set_new(o, "injection",
                            r->injection_known
                                ? json_pack("{s:I, s:I, s:o}", "injected",
                                            (json_int_t)r->injected, "not_injected",
                                            (json_int_t)r->not_injected, "first_reason",
                                            opt_string(r->not_injected_why))
                                : json_null());
    }
    return o;
}

int run_report_json(const run_report *r, const char *path)
{
    return path ? json_out_write(report_json(r), path) : json_out_print(report_json(r));
}
