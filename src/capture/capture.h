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
#endif /* NNP_CAPTURE_H */
