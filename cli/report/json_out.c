/*
 * json_out.c - JSON forms of dumps and records for --json output.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "json_out.h"

json_t *json_out_number(double v)
{
    return isfinite(v) ? json_real(v) : json_null();
}

json_t *json_out_record(const nnp_record *r)
{
    json_t *shape = json_array();
    for (uint32_t k = 0; k < r->ndim; k++)
        json_array_append_new(shape, json_integer((json_int_t)r->shape[k]));
    return json_pack("{s:I, s:s, s:s, s:s, s:I, s:s, s:s, s:o, s:I, s:I, s:s}", "seq",
                     (json_int_t)r->seq, "name", r->name, "module", r->module, "role", r->role,
                     "call", (json_int_t)r->call, "type", r->module_type, "dtype",
                     nnp_dtype_name(r->dtype), "shape", shape, "nelem", (json_int_t)r->nelem,
                     "nbytes", (json_int_t)r->nbytes, "file", r->file);
}

json_t *json_out_dump(const nnp_dump *d, bool with_meta)
{
    json_t *recs = json_array();
    for (size_t i = 0; i < nnp_dump_count(d); i++)
        if (json_array_append_new(recs, json_out_record(nnp_dump_record(d, i))) != 0) {
            json_decref(recs);
            return NULL;
        }
    json_t *o = json_pack("{s:s, s:s, s:o}", "path", nnp_dump_path(d), "format",
                          nnp_dump_format(d), "records", recs);
    if (o && with_meta) {
        json_t *meta = json_object();
        for (size_t i = 0; i < nnp_dump_meta_count(d); i++) {
            const char *k, *v;
            nnp_dump_meta_at(d, i, &k, &v);
            json_object_set_new(meta, k, json_string(v));
        }
        json_object_set_new(o, "metadata", meta);
    }
    return o;
}

int json_out_print(json_t *doc)
{
    if (!doc) {
        /* jansson refuses strings that are not UTF-8 (a file name can be anything) */
        cli_error("cannot build the JSON output: a name or path is not valid UTF-8, or memory "
                  "ran out");
        return EXIT_BAD_INPUT;
    }
    int rc = json_dumpf(doc, stdout, JSON_INDENT(1) | JSON_REAL_PRECISION(17));
    json_decref(doc);
    if (rc != 0) {
        cli_error("cannot write the JSON output");
        return EXIT_BAD_INPUT;
    }
    putchar('\n');
    return EXIT_AGREE;
}

int json_out_write(json_t *doc, const char *path)
{
    if (!doc)
        return json_out_print(doc);
    char *text = json_dumps(doc, JSON_INDENT(1) | JSON_REAL_PRECISION(17));
    json_decref(doc);
    if (!text)
        return json_out_print(NULL);
    int rc = cli_write_file(path, text, strlen(text));
    free(text);
    return rc;
}

json_t *json_out_shape(uint32_t ndim, const uint64_t *shape)
{
    json_t *a = json_array();
    for (uint32_t k = 0; k < ndim; k++)
        json_array_append_new(a, json_integer((json_int_t)shape[k]));
    return a;
}
