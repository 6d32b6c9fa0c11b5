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
/* nnp_writer_set_meta without the check for reserved keys: for nnparity's own facts. */
nnp_status nnp__writer_put_meta(nnp_writer *w, const char *key, const char *value);
#endif /* NNP_CAPTURE_H */
