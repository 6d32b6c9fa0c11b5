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
    SIZE(nnp_tensor_stats),
    SIZE(nnp_compare_options),
    SIZE(nnp_diff_options),
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
