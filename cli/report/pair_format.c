/*
 * pair_format.c - one diff pair as every report shows it: the coordinates of its worst element,
 * and its metrics as JSON (schema nnparity.diff/1, shared by nnparity.weights/1 and
 * nnparity.run/1).
 */
#include <stdio.h>

#include "json_out.h"
#include "pair_format.h"

/* The coordinates of a flat row-major index into the shape the pair was compared at (after the
 * adapters), into idx (at most 64); returns how many. */
static uint32_t unravel(const nnp_diff_pair *p, uint64_t flat, uint64_t *idx)
{
    uint32_t nd = p->ref_ndim < 64 ? p->ref_ndim : 64;
    for (uint32_t k = nd; k-- > 0;) {
        uint64_t len = p->ref_shape[k];
        idx[k] = len ? flat % len : 0;
        flat = len ? flat / len : 0;
    }
    return nd;
}

void format_index(char *buf, size_t n, const nnp_diff_pair *p, uint64_t flat)
{
    uint64_t idx[64];
    uint32_t nd = unravel(p, flat, idx);
    size_t used = (size_t)snprintf(buf, n, "[");
    for (uint32_t k = 0; k < nd && used < n; k++)
        used += (size_t)snprintf(buf + used, n - used, k ? ", %llu" : "%llu",
                                 (unsigned long long)idx[k]);
    if (used < n)
        snprintf(buf + used, n - used, "]");
}

json_t *metrics_json(const nnp_diff_pair *p)
{
    const nnp_metrics *m = &p->metrics;
    json_t *idx = json_array();
    uint64_t tmp[64];
    uint32_t nd = unravel(p, m->max_index, tmp);
    for (uint32_t k = 0; k < nd; k++)
        json_array_append_new(idx, json_integer((json_int_t)tmp[k]));
    return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:o, s:o, s:o, s:o, s:o, s:o, "
                     "s:o, s:o, s:o, s:o, s:o, s:o, s:o}",
                     "count", (json_int_t)m->count, "finite", (json_int_t)m->finite, "nan_ref",
                     (json_int_t)m->nan_ref, "nan_port", (json_int_t)m->nan_port, "inf_ref",
                     (json_int_t)m->inf_ref, "inf_port", (json_int_t)m->inf_port, "nan_new",
                     (json_int_t)m->nan_new, "inf_new", (json_int_t)m->inf_new,
                     "allclose_fail", (json_int_t)m->allclose_fail, "allclose_fail_pct",
                     json_out_number(m->allclose_fail_pct), "mse", json_out_number(m->mse),
                     "rmse", json_out_number(m->rmse), "mean_abs", json_out_number(m->mean_abs),
                     "max_abs", json_out_number(m->max_abs), "max_index", idx, "ref_at_max",
                     json_out_number(m->ref_at_max), "port_at_max",
                     json_out_number(m->port_at_max), "rel_l2", json_out_number(m->rel_l2),
                     "nmse", json_out_number(m->nmse), "snr_db", json_out_number(m->snr_db),
                     "cosine", json_out_number(m->cosine), "pcc", json_out_number(m->pcc));
}

bool format_nonfinite_new(char *buf, size_t n, const nnp_metrics *m)
{
    buf[0] = '\0';
    if (!m->nan_new && !m->inf_new)
        return false;
    char nan[40] = "", inf[40] = "";
    if (m->nan_new)
        snprintf(nan, sizeof nan, "%llu NaN", (unsigned long long)m->nan_new);
    if (m->inf_new)
        snprintf(inf, sizeof inf, "%llu Inf", (unsigned long long)m->inf_new);
    snprintf(buf, n, "%s%s%s in the port where the reference is finite", nan,
             m->nan_new && m->inf_new ? " and " : "", inf);
    return true;
}
