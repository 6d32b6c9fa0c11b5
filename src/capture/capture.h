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
/* A record's fingerprint entry as stored (NNP_SKETCH_ENTRY_CHARS at `text`), from its data. */
void nnp__sketch_text(nnp_dtype dtype, uint32_t ndim, const uint64_t *shape, const void *data,
                      uint64_t nelem, char *text);
/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t nnp__monotonic_ns(void);

/* Records' fingerprints taken on a writer's helper thread (sketch_job.c), beside the write from
 * the caller's buffer or behind the writer from the partial file `fd` (open for reading). NULL
 * when no helper could start (then records are sketched on the writer's thread).
 * nnp__sketcher_stop stops the helper, drops what is still queued and frees s (NULL: nothing). */
typedef struct nnp_sketcher nnp_sketcher;
nnp_sketcher *nnp__sketcher_start(int fd);
void nnp__sketcher_stop(nnp_sketcher *s);

/* Beside the write: start a record's sketch before writing its data (by the sketcher s, or NULL:
 * none), finish it after (always, even when the write failed: until then another thread may
 * read the data); `text` (NNP_SKETCH_ENTRY_CHARS) then holds the entry as stored. The shape and
 * the data must stay until the job is finished; one job a sketcher at a time. */
typedef struct nnp_sketch_job {
    nnp_dtype dtype;
    uint32_t ndim;
    const uint64_t *shape;
    const void *data;
    uint64_t nelem;
    char *text;
    nnp_sketcher *by;
} nnp_sketch_job;
void nnp__sketch_job_start(nnp_sketch_job *j, nnp_sketcher *s, nnp_dtype dtype, uint32_t ndim,
                           const uint64_t *shape, const void *data, uint64_t nelem, char *text);
void nnp__sketch_job_finish(nnp_sketch_job *j);

/* Behind the writer: a written record, its bytes at `offset` in the file (they stay as they are
 * until the sketcher finishes, as do its shape's ndim values), its entry to go to `text`, which
 * nothing else touches until then. */
typedef struct nnp_sketch_task {
    uint64_t offset, nbytes;
    const uint64_t *shape;
    uint32_t ndim;
    nnp_dtype dtype;
    char *text;
} nnp_sketch_task;
/* Queue t; false when the helper is behind or out of memory: then sketch the record some other
 * way. */
bool nnp__sketcher_post(nnp_sketcher *s, const nnp_sketch_task *t);
/* Sketch everything queued and wait for it: every queued `text` is then written. False when a
 * record could not be read back, or in a forked child (whose helper is the parent's): the
 * entries are then not to be stored. Nothing is queued after. */
bool nnp__sketcher_finish(nnp_sketcher *s);

#endif /* NNP_CAPTURE_H */
