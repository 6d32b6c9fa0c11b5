/*
 * sketch_job.c - a record's fingerprint taken while the writer writes it (docs/sketch.md).
 *
 * The writer must sketch a record while the caller's buffer is at hand, and writing it to the
 * page cache and sketching it each read every byte: one after the other, a large record's
 * sketch would add a third to its write. So a record of NNP_SKETCH_JOB_BYTES or more is
 * sketched on a thread of its own while the writer's thread writes it; smaller ones, whose
 * sketch costs less than starting a thread, are sketched on the writer's thread. The result
 * is the same either way.
 */
#include <string.h>

#include "capture/capture.h"
#include "kernels/kernels.h"

/* From this size on a thread pays for itself: it costs tens of microseconds to start, and a
 * megabyte takes about a hundred to sketch. */
#define NNP_SKETCH_JOB_BYTES (1u << 20)

static void run(nnp_sketch_job *j)
{
    nnp_sketch k;
    nnp__sketch_tensor(j->dtype, j->ndim, j->shape, j->data, j->nelem, &k);
    nnp__sketch_pack(&k, j->entry);
}

static void *run_thread(void *arg)
{
    run(arg);
    return NULL;
}

void nnp__sketch_job_start(nnp_sketch_job *j, nnp_dtype dtype, uint32_t ndim,
                           const uint64_t *shape, const void *data, uint64_t nelem,
                           unsigned char *entry)
{
    *j = (nnp_sketch_job){.dtype = dtype, .ndim = ndim, .shape = shape, .data = data,
                          .nelem = nelem, .entry = entry};
    j->threaded = nelem * nnp_dtype_size(dtype) >= NNP_SKETCH_JOB_BYTES &&
                  pthread_create(&j->thread, NULL, run_thread, j) == 0;
}

void nnp__sketch_job_finish(nnp_sketch_job *j)
{
    if (j->threaded)
        pthread_join(j->thread, NULL);
    else
        run(j); /* small, or no thread could start */
}
