/*
 * explain_format.c - the `where:` and `hint:` lines of a failing pair and their JSON
 * (docs/report-schema.md, "profile" and "hints").
 */
#include "report/explain_format.h"

#include <string.h>

#include "cli.h"
#include "report/json_out.h"

void explain_print(FILE *o, const nnp_diff *d, size_t pair, const char *indent)
{
    /* long lines wrap at the report's width, under the text after "where: " */
    char first[64];
    int width = cli_width(), in = (int)strlen(indent);
    const nnp_profile *pr = nnp_diff_profile(d, pair);
    if (pr) {
        snprintf(first, sizeof first, "%swhere: ", indent);
        cli_wrap(o, first, in + 4, width, pr->where);
    }
    for (size_t k = 0; k < nnp_diff_hint_count(d, pair); k++) {
        const nnp_hint *h = nnp_diff_hint_at(d, pair, k);
        char line[768];
        snprintf(line, sizeof line, "%s (fit %.3f)", h->text, h->fit);
        snprintf(first, sizeof first, "%shint: ", indent);
        cli_wrap(o, first, in + 4, width, line);
    }
}

static json_t *axis_json(const nnp_axis_profile *ax)
{
    json_t *share = json_array(), *fail = json_array();
    for (uint64_t i = 0; share && fail && i < ax->size; i++)
        if (json_array_append_new(share, json_out_number(ax->sq_share[i])) ||
            json_array_append_new(fail, json_integer((json_int_t)ax->fail[i])))
            break;
    if (!share || !fail || json_array_size(fail) != ax->size) {
        json_decref(share);
        json_decref(fail);
        return NULL;
    }
    return json_pack("{s:s, s:I, s:o, s:o}", "name", ax->name, "size", (json_int_t)ax->size,
                     "sq_share", share, "fail", fail);
}

static json_t *profile_json(const nnp_profile *pr)
{
    json_t *axes = json_array();
    for (uint32_t a = 0; axes && a < pr->ndim; a++)
        if (json_array_append_new(axes, axis_json(&pr->axes[a]))) {
            json_decref(axes);
            return NULL;
        }
    return axes ? json_pack("{s:s, s:I, s:b, s:I, s:o}", "where", pr->where, "elements",
                            (json_int_t)pr->elements, "sampled", pr->sampled, "fail",
                            (json_int_t)pr->fail, "axes", axes)
                : NULL;
}

int explain_json_set(json_t *obj, const nnp_diff *d, size_t pair)
{
    const nnp_profile *pr = nnp_diff_profile(d, pair);
    json_t *p = pr ? profile_json(pr) : json_null(), *hints = json_array();
    for (size_t k = 0; hints && k < nnp_diff_hint_count(d, pair); k++) {
        const nnp_hint *h = nnp_diff_hint_at(d, pair, k);
        json_t *o = json_pack("{s:s, s:f, s:o, s:o, s:o, s:s}", "kind",
                              nnp_hint_kind_name(h->kind), "fit", h->fit, "axis",
                              h->axis < 0 ? json_null() : json_integer(h->axis), "axis2",
                              h->axis2 < 0 ? json_null() : json_integer(h->axis2), "value",
                              json_out_number(h->value), "text", h->text);
        if (json_array_append_new(hints, o)) {
            json_decref(hints);
            hints = NULL;
        }
    }
    if (!p || !hints) {
        json_decref(p);
        json_decref(hints);
        return -1;
    }
    /* json_object_set_new releases the value when it fails */
    return json_object_set_new(obj, "profile", p) || json_object_set_new(obj, "hints", hints)
               ? -1 : 0;
}
