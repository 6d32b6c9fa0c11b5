/*
 * layout.c - the offsets and sizes of the public structs, for bindings that declare them in
 * their own language (python/nnparity/_lib.py checks its ctypes structures against these when
 * it loads the library, so a struct that changed is an error at import, not a wrong read).
 */
#include <stddef.h>
#include <string.h>

#include "nnparity.h"

typedef struct {
    const char *type, *field; /* field NULL: the struct's size */
    size_t value;
} layout_entry;

#define SIZE(T) {#T, NULL, sizeof(T)}
#define FIELD(T, F) {#T, #F, offsetof(T, F)}

static const layout_entry layouts[] = {
    SIZE(nnp_record),
    FIELD(nnp_record, name), FIELD(nnp_record, module), FIELD(nnp_record, role),
    FIELD(nnp_record, module_type), FIELD(nnp_record, call), FIELD(nnp_record, seq),
    FIELD(nnp_record, dtype), FIELD(nnp_record, ndim), FIELD(nnp_record, shape),
    FIELD(nnp_record, nelem), FIELD(nnp_record, nbytes), FIELD(nnp_record, file),
    FIELD(nnp_record, rank), FIELD(nnp_record, world_size),
    SIZE(nnp_tap_desc),
    FIELD(nnp_tap_desc, name), FIELD(nnp_tap_desc, role), FIELD(nnp_tap_desc, module_type),
    FIELD(nnp_tap_desc, dtype), FIELD(nnp_tap_desc, ndim), FIELD(nnp_tap_desc, shape),
    SIZE(nnp_capture_options),
    FIELD(nnp_capture_options, size), FIELD(nnp_capture_options, inject_path),
    FIELD(nnp_capture_options, rules_path),
    FIELD(nnp_capture_options, expected_records), FIELD(nnp_capture_options, rank),
    FIELD(nnp_capture_options, world_size),
    SIZE(nnp_record_desc),
    FIELD(nnp_record_desc, name), FIELD(nnp_record_desc, module), FIELD(nnp_record_desc, role),
    FIELD(nnp_record_desc, module_type), FIELD(nnp_record_desc, call),
    FIELD(nnp_record_desc, dtype), FIELD(nnp_record_desc, ndim), FIELD(nnp_record_desc, shape),
    SIZE(nnp_metrics),
    FIELD(nnp_metrics, count), FIELD(nnp_metrics, finite), FIELD(nnp_metrics, nan_ref),
    FIELD(nnp_metrics, nan_port), FIELD(nnp_metrics, inf_ref), FIELD(nnp_metrics, inf_port),
    FIELD(nnp_metrics, allclose_fail), FIELD(nnp_metrics, allclose_fail_pct),
    FIELD(nnp_metrics, mse), FIELD(nnp_metrics, rmse), FIELD(nnp_metrics, mean_abs),
    FIELD(nnp_metrics, max_abs), FIELD(nnp_metrics, max_index), FIELD(nnp_metrics, ref_at_max),
    FIELD(nnp_metrics, port_at_max), FIELD(nnp_metrics, rel_l2), FIELD(nnp_metrics, nmse),
    FIELD(nnp_metrics, snr_db), FIELD(nnp_metrics, cosine), FIELD(nnp_metrics, pcc),
    FIELD(nnp_metrics, nan_new), FIELD(nnp_metrics, inf_new), FIELD(nnp_metrics, reserved),
    SIZE(nnp_tensor_stats),
    SIZE(nnp_compare_options),
    SIZE(nnp_diff_options),
    FIELD(nnp_diff_options, size), FIELD(nnp_diff_options, rules), FIELD(nnp_diff_options, atol),
    FIELD(nnp_diff_options, rtol), FIELD(nnp_diff_options, threads),
    FIELD(nnp_diff_options, no_align), FIELD(nnp_diff_options, progress),
    FIELD(nnp_diff_options, progress_ctx), FIELD(nnp_diff_options, like),
    FIELD(nnp_diff_options, like_port), FIELD(nnp_diff_options, no_explain),
    FIELD(nnp_diff_options, noise),
    SIZE(nnp_diff_pair),
    FIELD(nnp_diff_pair, ref), FIELD(nnp_diff_pair, port), FIELD(nnp_diff_pair, verdict),
    FIELD(nnp_diff_pair, atol), FIELD(nnp_diff_pair, rtol), FIELD(nnp_diff_pair, metrics),
    FIELD(nnp_diff_pair, aligned), FIELD(nnp_diff_pair, nparts), FIELD(nnp_diff_pair, parts),
    FIELD(nnp_diff_pair, adapters), FIELD(nnp_diff_pair, problem),
    FIELD(nnp_diff_pair, ref_dtype), FIELD(nnp_diff_pair, port_dtype),
    FIELD(nnp_diff_pair, ref_ndim), FIELD(nnp_diff_pair, port_ndim),
    FIELD(nnp_diff_pair, ref_shape), FIELD(nnp_diff_pair, port_shape),
    FIELD(nnp_diff_pair, join), FIELD(nnp_diff_pair, join_axis),
    FIELD(nnp_diff_pair, nadapters), FIELD(nnp_diff_pair, evidence),
    FIELD(nnp_diff_pair, confidence),
    SIZE(nnp_collision),
    FIELD(nnp_collision, port), FIELD(nnp_collision, taken_by), FIELD(nnp_collision, name),
    SIZE(nnp_culprit),
    FIELD(nnp_culprit, kind), FIELD(nnp_culprit, port_module), FIELD(nnp_culprit, ref_module),
    FIELD(nnp_culprit, after), FIELD(nnp_culprit, before),
    SIZE(nnp_axis_profile),
    FIELD(nnp_axis_profile, name), FIELD(nnp_axis_profile, size),
    FIELD(nnp_axis_profile, sq_share), FIELD(nnp_axis_profile, fail),
    SIZE(nnp_profile),
    FIELD(nnp_profile, ndim), FIELD(nnp_profile, axes), FIELD(nnp_profile, elements),
    FIELD(nnp_profile, sampled), FIELD(nnp_profile, fail), FIELD(nnp_profile, where),
    SIZE(nnp_hint),
    FIELD(nnp_hint, kind), FIELD(nnp_hint, fit), FIELD(nnp_hint, axis), FIELD(nnp_hint, axis2),
    FIELD(nnp_hint, value), FIELD(nnp_hint, text),
    SIZE(nnp_relevance_options),
    SIZE(nnp_attn_layer),
};

bool nnp_struct_layout(const char *type, const char *field, size_t *out)
{
    if (!type || !out)
        return false;
    for (size_t i = 0; i < sizeof layouts / sizeof *layouts; i++) {
        const layout_entry *e = &layouts[i];
        bool same_field = field ? e->field && strcmp(e->field, field) == 0 : !e->field;
        if (strcmp(e->type, type) == 0 && same_field) {
            *out = e->value;
            return true;
        }
    }
    return false;
}
