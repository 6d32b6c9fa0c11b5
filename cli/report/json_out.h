/*
 * json_out.h - the JSON forms of dumps and records shared by the subcommands' --json output,
 * and writing a report whole.
 */
#ifndef NNP_JSON_OUT_H
#define NNP_JSON_OUT_H

#include <jansson.h>

#include "nnparity.h"

/* {"seq", "name", "module", "role", "call", "type", "dtype", "shape", "nelem", "nbytes", "file"} */
json_t *json_out_record(const nnp_record *r);
/* {"path", "format", "records": [...], "metadata": {...} when with_meta}; NULL when a string is not
 * valid UTF-8 */
json_t *json_out_dump(const nnp_dump *d, bool with_meta);
/* A number, or null for NaN and infinities (JSON has neither). */
json_t *json_out_number(double v);
/* Print `doc` (stolen) to stdout with a newline; an error when it is NULL (it could not be built). */
int json_out_print(json_t *doc);
/* Write `doc` (stolen) to `path` whole (cli_write_file). */
int json_out_write(json_t *doc, const char *path);
/* [d0, d1, ...] */
json_t *json_out_shape(uint32_t ndim, const uint64_t *shape);

#endif
