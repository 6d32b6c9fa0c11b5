/*
 * sketch.c - the fingerprints of a dump's records (kernels/sketch.c): what pairing by value
 * reads. A capture stores them in its header (sketch_codec.c); a file's stored value is
 * checked and decoded whole the first time one of its records is asked for, and kept with the
 * dump. Records without one are sketched from their data, a task per record over the threads,
 * their pages let go right after, so that sketching a dump larger than memory streams it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dump/dump.h"
#include "kernels/kernels.h"

/* Decoding is once per file and quick: one lock for all dumps keeps two threads that ask for
 * the same dump's sketches from decoding it twice. */
static pthread_mutex_t decode_lock = PTHREAD_MUTEX_INITIALIZER;

#define DECODE_CHUNK 4096 /* entries a task */

typedef struct {
    const nnp_sketch_store *s;
    nnp_sketch *all;
    size_t *first_bad; /* per task: its first entry that fails to decode, or SIZE_MAX */
} decode_ctx;

static void decode_chunk(void *c, size_t task)
{
    decode_ctx *x = c;
    size_t a = task * DECODE_CHUNK, b = a + DECODE_CHUNK < x->s->count ? a + DECODE_CHUNK
                                                                        : x->s->count;
    x->first_bad[task] = SIZE_MAX;
    for (size_t i = a; i < b; i++)
        if (nnp__sketch_unpack(x->s->file, x->s->value, i, &x->all[i]) != NNP_OK) {
            x->first_bad[task] = i;
            return;
        }
}

/* Decode a chunk of entries a task on `threads` threads: 100,000 entries are 25 MB of base64
 * to decode. The entry reported when several fail is the first, as when decoded in order: it
 * is decoded again on the caller's thread, whose message is the one kept. */
static nnp_status decode_store(nnp_sketch_store *s, int threads)
{
    nnp_status st = nnp__sketch_value_check(s->file, s->value, s->len, s->count);
    if (st)
        return st;
    size_t ntasks = (s->count + DECODE_CHUNK - 1) / DECODE_CHUNK;
    /* the value's length was checked against the count: this is bounded by the header's size */
    nnp_sketch *all = malloc((s->count ? s->count : 1) * sizeof *all);
    size_t *first_bad = malloc((ntasks ? ntasks : 1) * sizeof *first_bad);
    if (!all || !first_bad) {
        free(all);
        free(first_bad);
        return nnp__nomem();
    }
    decode_ctx x = {s, all, first_bad};
    st = nnp__parallel_for(ntasks, threads, decode_chunk, &x);
    for (size_t t = 0; !st && t < ntasks; t++)
        if (first_bad[t] != SIZE_MAX) {
            nnp_sketch k;
            st = nnp__sketch_unpack(s->file, s->value, first_bad[t], &k);
            if (!st) /* cannot be: the same entry failed on another thread */
                st = nnp__fail(NNP_ERR_INTERNAL, "%s: metadata '%s': entry %zu decoded twice "
                               "differently", s->file, NNP_META_SKETCHES_KEY, first_bad[t]);
        }
    free(first_bad);
    if (st) {
        free(all);
        return st;
    }
    s->decoded = all;
    return NNP_OK;
}

/* Whether a stored sketch describes its record: the kernel's counts for that shape. */
static nnp_status check_fits(const nnp_sketch_store *s, const nnp_rec *r, const nnp_sketch *k)
{
    const nnp_record *p = &r->pub;
    bool last = p->ndim >= 2 && p->shape[p->ndim - 2] >= 2 && p->nelem;
    uint64_t last_count = last ? p->nelem / p->shape[p->ndim - 2] : 0;
    if (k->all.count != p->nelem)
        return nnp__fail(NNP_ERR_FORMAT, "%s: metadata '%s': entry %llu counts %llu elements, "
                         "but tensor '%s' has %llu", s->file, NNP_META_SKETCHES_KEY,
                         (unsigned long long)r->sketch_at, (unsigned long long)k->all.count,
                         p->name, (unsigned long long)p->nelem);
    if (k->last.count != last_count)
        return nnp__fail(NNP_ERR_FORMAT, "%s: metadata '%s': entry %llu counts %llu elements in "
                         "its last rows, but tensor '%s' has %llu", s->file,
                         NNP_META_SKETCHES_KEY, (unsigned long long)r->sketch_at,
                         (unsigned long long)k->last.count, p->name,
                         (unsigned long long)last_count);
    return NNP_OK;
}

static nnp_status stored_sketch(nnp_dump *d, const nnp_rec *r, int threads, nnp_sketch *out)
{
    nnp_sketch_store *s = nnp__dump_sketch_store(d, r->sketch_store - 1);
    if (!s || r->sketch_at >= s->count)
        return nnp__fail(NNP_ERR_INTERNAL, "%s: tensor '%s': no such stored sketch",
                         r->pub.file, r->pub.name);
    nnp_status st = NNP_OK;
    pthread_mutex_lock(&decode_lock);
    if (!s->decoded)
        st = decode_store(s, threads);
    pthread_mutex_unlock(&decode_lock);
    if (st)
        return st;
    const nnp_sketch *k = &s->decoded[r->sketch_at];
    if ((st = check_fits(s, r, k)))
        return st;
    *out = *k;
    return NNP_OK;
}

typedef struct {
    nnp_dump *d;
    const size_t *idx; /* the records to compute, as indices into the caller's idx */
    const size_t *rec;
    nnp_sketch *out;
    nnp__first_failure failure; /* of a record whose data could not be had */
} sketch_ctx;

static void sketch_one(void *c, size_t t)
{
    sketch_ctx *ctx = c;
    size_t j = ctx->idx[t], i = ctx->rec[j];
    const nnp_record *r = nnp_dump_record(ctx->d, i);
    const void *data = NULL;
    nnp_status st = r->nbytes ? nnp_dump_data(ctx->d, i, &data) : NNP_OK;
    if (st) {
        nnp__first_failure_note(&ctx->failure, t, st);
        return;
    }
    nnp__sketch_tensor(r->dtype, r->ndim, r->shape, data, r->nelem, &ctx->out[j]);
    nnp_dump_release(ctx->d, i);
}

nnp_status nnp__dump_sketches(nnp_dump *d, const size_t *idx, size_t n, int threads,
                              nnp_sketch *out)
{
    if (!n)
        return NNP_OK;
    size_t nrecs;
    const nnp_rec *recs = nnp__dump_recs(d, &nrecs);
    size_t *todo = malloc(n * sizeof *todo), ntodo = 0;
    if (!todo)
        return nnp__nomem();
    nnp_status st = NNP_OK;
    for (size_t t = 0; t < n && !st; t++) {
        if (recs[idx[t]].sketch_store)
            st = stored_sketch(d, &recs[idx[t]], threads, &out[t]);
        else
            todo[ntodo++] = t;
    }
    if (!st && ntodo) {
        sketch_ctx ctx = {d, todo, idx, out, NNP__FIRST_FAILURE_INIT};
        st = nnp__parallel_for(ntodo, nnp__thread_count(threads), sketch_one, &ctx);
        if (!st)
            st = nnp__first_failure_say(&ctx.failure);
    }
    free(todo);
    return st;
}

nnp_status nnp_dump_sketches(nnp_dump *dump, const size_t *idx, size_t n, int threads,
                             nnp_sketch *out)
{
    if (!dump || (n && (!idx || !out)))
        return nnp__fail(NNP_ERR_ARG, "nnp_dump_sketches: missing dump, indices or output");
    for (size_t t = 0; t < n; t++)
        if (idx[t] >= nnp_dump_count(dump))
            return nnp__fail(NNP_ERR_ARG, "nnp_dump_sketches: no record %zu", idx[t]);
    return nnp__dump_sketches(dump, idx, n, threads, out);
}
