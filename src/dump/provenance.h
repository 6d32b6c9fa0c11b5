/*
 * provenance.h - nnparity's own facts about each record (module, role, call, module type and
 * execution order), kept in a safetensors __metadata__ string under "nnparity.records".
 * The format is documented in docs/dump-format.md.
 */
#ifndef NNP_PROVENANCE_H
#define NNP_PROVENANCE_H

#include "dump/dump.h"

/* Parse the "nnparity.records" value of `file` and annotate that file's records. */
nnp_status nnp__provenance_apply(nnp_dump *d, const char *file, const char *json);

/* Append one entry (with its leading comma when it is not the first) to the records array being
 * built in `b`; the caller writes the enclosing '[' and ']'. `same_as`: the earlier record whose
 * stored tensor this one is, or NULL. */
void nnp__provenance_entry(nnp_sbuf *b, bool first, const char *tensor, const char *module,
                           const char *role, const char *module_type, uint64_t call,
                           uint64_t seq, const char *same_as);

#endif
