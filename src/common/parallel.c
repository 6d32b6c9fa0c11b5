/*
 * parallel.c - a minimal parallel for-loop: `ntasks` independent tasks handed out one at a time
 * to a few threads through an atomic counter, so uneven tasks (a large tensor's chunk, many small
 * tensors) balance themselves. Results must be written by task index, never by thread, so that
 * they do not depend on the number of threads.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "common/common.h"

typedef struct {
    void (*fn)(void *ctx, size_t task);
    void *ctx;
    size_t ntasks;
    atomic_size_t next;
} pool_job;

static void *worker(void *arg)
{
    pool_job *job = arg;
    for (;;) {
        size_t t = atomic_fetch_add_explicit(&job->next, 1, memory_order_relaxed);
        if (t >= job->ntasks)
            return NULL;
        job->fn(job->ctx, t);
    }
}

int nnp__thread_count(int requested)
{
    if (requested > 0)
        return requested > 256 ? 256 : requested;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > 256 ? 256 : (int)n;
}

nnp_status nnp__parallel_for(size_t ntasks, int threads, void (*fn)(void *ctx, size_t task),
                             void *ctx)
{
    pool_job job = {fn, ctx, ntasks, 0};
    int n = nnp__thread_count(threads);
    if ((size_t)n > ntasks)
        n = (int)ntasks;
    pthread_t tids[256];
    int started = 0;
    /* The calling thread works too; if a thread cannot start, fewer threads do the same work. */
    for (; started < n - 1; started++)
        if (pthread_create(&tids[started], NULL, worker, &job) != 0)
            break;
    worker(&job);
    for (int i = 0; i < started; i++)
        pthread_join(tids[i], NULL);
    return NNP_OK;
}

void nnp__first_failure_note(nnp__first_failure *f, size_t task, nnp_status st)
{
    if (!st)
        return;
    pthread_mutex_lock(&f->lock);
    if (task < f->task) {
        f->task = task;
        f->status = st;
        snprintf(f->message, sizeof f->message, "%s", nnp_last_error());
    }
    pthread_mutex_unlock(&f->lock);
}

nnp_status nnp__first_failure_say(const nnp__first_failure *f)
{
    return f->status ? nnp__fail(f->status, "%s", f->message) : NNP_OK;
}
