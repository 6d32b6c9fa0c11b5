/*
 * sketch.c - the fingerprints of a dump's records (kernels/sketch.c): what pairing by value
 * reads. A record's sketch is computed from its data, a task per record over the threads, and
 * its pages are let go right after, so that sketching a dump larger than memory streams it.
 */
#include <stdlib.h>

#include "dump/dump.h"
#include "kernels/kernels.h"

typedef struct {
    nnp_dump *d;
    const size_t *idx;
    nnp_sketch *out;
    nnp_status *status;
} sketch_ctx;

static void sketch_one(void *c, size_t t)
{
    sketch_ctx *ctx = c;
    size_t i = ctx->idx[t];
    const nnp_record *r = nnp_dump_record(ctx->d, i);
    const void *data = NULL;
    nnp_status st = r->nbytes ? nnp_dump_data(ctx->d, i, &data) : NNP_OK;
    if (st) {
        ctx->status[t] = st;
        return;
    }
    nnp__sketch_tensor(r->dtype, r->ndim, r->shape, data, r->nelem, &ctx->out[t]);
    nnp_dump_release(ctx->d, i);
}

nnp_status nnp__dump_sketches(nnp_dump *d, const size_t *idx, size_t n, int threads,
                              nnp_sketch *out)
{
    if (!n)
        return NNP_OK;
    nnp_status *status = calloc(n, sizeof *status);
    if (!status)
        return nnp__nomem();
    sketch_ctx ctx = {d, idx, out, status};
    nnp_status st = nnp__parallel_for(n, nnp__thread_count(threads), sketch_one, &ctx);
    for (size_t t = 0; t < n && !st; t++)
        st = status[t];
    free(status);
    return st;
}
