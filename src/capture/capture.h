/*
 * capture.h - what the capture runtime needs of the streaming writer beyond the public API.
 */
#ifndef NNP_CAPTURE_H
#define NNP_CAPTURE_H

#include <sys/types.h>

#include "diff/diff.h"
#include "formats/formats.h"

/* Stop writing but keep "<path>.partial" and its journal for nnp_recover: a capture that lost
 * records must not pass for a finished dump. Returns the partial file's path (valid until the
 * next call on this thread). */
const char *nnp__writer_abandon(nnp_writer *w);
/* Add a record whose tensor is that of the writer's record number `earlier` (in adding order),
 * unchanged since: listed as a record of its own, with no bytes of its own (docs/dump-format.md,
 * "same_as"). Its dtype and shape must be that record's. */
nnp_status nnp__writer_add_same(nnp_writer *w, const nnp_record_desc *desc, size_t earlier);
/* How many records the writer holds: the next one added is number nnp__writer_count(w). */
size_t nnp__writer_count(const nnp_writer *w);
/* The calling process's id, kept (getpid() is a system call) and put right in a forked child:
 * what a session and a writer's helper compare with the process that made them. */
pid_t nnp__this_process(void);
/* nnp_writer_set_meta without the check for reserved keys: for nnparity's own facts. */
nnp_status nnp__writer_put_meta(nnp_writer *w, const char *key, const char *value);
/* A record's sketch taken beside its write (sketch_job.c). A writer's sketcher is a helper
 * thread that sketches a record while the writer writes it; NULL when none could start (then
 * records are sketched on the writer's thread). nnp__sketcher_stop(NULL) does nothing. */
typedef struct nnp_sketcher nnp_sketcher;
nnp_sketcher *nnp__sketcher_start(void);
void nnp__sketcher_stop(nnp_sketcher *s);
/* Start a record's sketch before writing its data (by the sketcher s, or NULL: none; a sketcher
 * that sleeps is woken only when `wake` is set, else the writer sketches it), finish it
 * after (always, even when the write failed: until then another thread may read the data);
 * `text` (NNP_SKETCH_ENTRY_CHARS) then holds the entry as stored. The shape and the data must
 * stay until the job is finished; one job a sketcher at a time. */
typedef struct nnp_sketch_job {
    nnp_dtype dtype;
    uint32_t ndim;
    const uint64_t *shape;
    const void *data;
    uint64_t nelem;
    char *text;
    nnp_sketcher *by;
} nnp_sketch_job;
void nnp__sketch_job_start(nnp_sketch_job *j, nnp_sketcher *s, bool wake, nnp_dtype dtype,
                           uint32_t ndim, const uint64_t *shape, const void *data, uint64_t nelem,
                           char *text);
/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t nnp__monotonic_ns(void);
void nnp__sketch_job_finish(nnp_sketch_job *j);

#endif /* NNP_CAPTURE_H */
