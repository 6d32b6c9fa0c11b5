/*
 * explain_format.h - where a failing pair's error lies and the hints that explain it, as every
 * report shows them (`nnparity diff`, `run`): `where:` and `hint:` lines, and their JSON.
 */
#ifndef NNP_CLI_EXPLAIN_FORMAT_H
#define NNP_CLI_EXPLAIN_FORMAT_H

#include <jansson.h>
#include <stdio.h>

#include "nnparity.h"

/* "<indent>where: ..." and one "<indent>hint: ... (fit 0.999)" per hint; nothing for a pair
 * without them. */
void explain_print(FILE *o, const nnp_diff *d, size_t pair, const char *indent);
/* Set "profile" (null when none) and "hints" (a list, empty when none) on the pair's object;
 * -1 when memory runs out. */
int explain_json_set(json_t *obj, const nnp_diff *d, size_t pair);

#endif
