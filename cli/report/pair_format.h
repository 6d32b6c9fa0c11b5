/*
 * pair_format.h - how one diff pair reads in every report (`nnparity diff`, `weights`, `run`):
 * the coordinates of its worst element and its metrics as JSON, so that the three agree.
 */
#ifndef NNP_CLI_PAIR_FORMAT_H
#define NNP_CLI_PAIR_FORMAT_H

#include <jansson.h>

#include "nnparity.h"

/* "[i, j, k]" of a flat row-major index into the shape the pair was compared at (after the
 * adapters). */
void format_index(char *buf, size_t n, const nnp_diff_pair *p, uint64_t flat);
/* A pair's metrics as the JSON object of schema nnparity.diff/1. */
json_t *metrics_json(const nnp_diff_pair *p);
/* What the port introduced that the metrics of finite elements do not show: "3 NaN and 1 Inf in
 * the port where the reference is finite"; false (buf "") when there is none. */
bool format_nonfinite_new(char *buf, size_t n, const nnp_metrics *m);

#endif
