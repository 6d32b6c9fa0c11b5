/*
 * capture.h - what the capture runtime needs of the streaming writer beyond the public API.
 */
#ifndef NNP_CAPTURE_H
#define NNP_CAPTURE_H

#include "diff/diff.h"
#include "formats/formats.h"


/* Stop writing but keep "<path>.partial" and its journal for nnp_recover: a capture that lost
 * records must not pass for a finished dump. Returns the partial file's path (valid until the
 * next call on this thread). */
const char *nnp__writer_abandon(nnp_writer *w);
/* Whether writers sketch the records they add (default on); off only to time what it costs
 * (bench/sketch_cost.c). Not thread-safe: set before any capture starts. */
void nnp__writer_sketching(bool on);
#endif /* NNP_CAPTURE_H */
