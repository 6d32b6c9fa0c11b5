/*
 * internal.h - every layer's internal header at once, for the unit tests, benchmarks and fuzz
 * targets that reach below the public API. The library's own files never include it: each
 * includes the header of its own layer, which includes the layers below (docs/architecture.md).
 */
#ifndef NNP_INTERNAL_H
#define NNP_INTERNAL_H

#include "common/common.h"
#include "common/json_scan.h"
#include "common/zip.h"
#include "kernels/kernels.h"
#include "dump/dump.h"
#include "dump/provenance.h"
#include "formats/formats.h"
#include "compare/compare.h"
#include "diff/diff.h"
#include "capture/capture.h"

#endif /* NNP_INTERNAL_H */
