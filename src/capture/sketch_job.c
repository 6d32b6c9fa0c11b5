/*
 * sketch_job.c - a record's fingerprint taken while the writer writes it (docs/sketch.md).
 *
 * The writer must sketch a record while the caller's buffer is at hand, and writing it to the
 * page cache and sketching it each read every byte: one after the other, the sketch adds a
 * quarter to a record's cost. So a writer that is given large records keeps a helper thread (a
 * sketcher) to which it hands a record's sketch before writing the record, and takes the sketch
 * back after (writer.c decides which records: handing over a small one costs about what
 * sketching it does).
 *
 * The writer never waits for the helper to wake up: a job the helper has not taken by the time
 * the write is done is taken back and sketched on the writer's thread, as without a helper. Nor
 * does it wake a sleeping helper for a job unless asked to (writer.c asks for large records, and
 * for records added back to back): waking it is a system call, and in a virtual machine the
 * other core's wake-up costs more than sketching a small record.
 * Only a job the helper is running is waited for, and it is already under way. The helper keeps
 * looking for work for a short while after each job (records come every few tens of
 * microseconds during a forward pass), then sleeps until the next one. The result is the same
 * whichever thread sketches.
 *
 * One job at a time: the writer finishes a record's job before it starts the next. The slot
 * holds the job posted (the helper may take it), BUSY (the helper took it and runs it), or NULL
 * (none; the helper leaves it so when done). The helper touches a job only after taking it from
 * the slot, so a job the writer took back is never read by the helper.
 */
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "capture/capture.h"
#include "kernels/kernels.h"

/* How long the helper keeps looking for the next job before it sleeps. */
#define SPIN_NS 50000

struct nnp_sketcher {
    _Atomic(nnp_sketch_job *) slot;
    atomic_bool sleeping, stop;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    pthread_t thread;
    pid_t pid; /* the process the helper runs in: a forked child has no helper to join */
};

/* The slot's value while the helper runs the job it took. */
static nnp_sketch_job busy_mark;
#define BUSY (&busy_mark)

static void run(nnp_sketch_job *j)
{
    nnp_sketch k;
    unsigned char entry[NNP_SKETCH_ENTRY_BYTES];
    nnp__sketch_tensor(j->dtype, j->ndim, j->shape, j->data, j->nelem, &k);
    nnp__sketch_pack(&k, entry);
    nnp__sketch_entry_text(entry, j->text);
}

uint64_t nnp__monotonic_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* Take and run the posted job, if there is one; whether it did. */
static bool take(nnp_sketcher *s)
{
    nnp_sketch_job *j = atomic_load(&s->slot);
    if (!j || j == BUSY || !atomic_compare_exchange_strong(&s->slot, &j, BUSY))
        return false;
    run(j);
    atomic_store(&s->slot, NULL); /* releases the entry to the writer */
    return true;
}

static void *helper(void *arg)
{
    nnp_sketcher *s = arg;
    while (!atomic_load(&s->stop)) {
        uint64_t until = nnp__monotonic_ns() + SPIN_NS;
        bool worked = false;
        while (!atomic_load(&s->stop) && !(worked = take(s)) && nnp__monotonic_ns() < until)
            ;
        if (worked || atomic_load(&s->stop))
            continue;
        pthread_mutex_lock(&s->lock);
        atomic_store(&s->sleeping, true);
        /* seen after `sleeping` is set, or the poster sees `sleeping` and signals */
        nnp_sketch_job *j = atomic_load(&s->slot);
        while ((!j || j == BUSY) && !atomic_load(&s->stop)) {
            pthread_cond_wait(&s->wake, &s->lock);
            j = atomic_load(&s->slot);
        }
        atomic_store(&s->sleeping, false);
        pthread_mutex_unlock(&s->lock);
    }
    return NULL;
}

nnp_sketcher *nnp__sketcher_start(void)
{
    nnp_sketcher *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    atomic_init(&s->slot, NULL);
    atomic_init(&s->sleeping, false);
    atomic_init(&s->stop, false);
    if (pthread_mutex_init(&s->lock, NULL) != 0) {
        free(s);
        return NULL;
    }
    if (pthread_cond_init(&s->wake, NULL) != 0) {
        pthread_mutex_destroy(&s->lock);
        free(s);
        return NULL;
    }
    s->pid = nnp__this_process();
    if (pthread_create(&s->thread, NULL, helper, s) != 0) {
        pthread_cond_destroy(&s->wake);
        pthread_mutex_destroy(&s->lock);
        free(s);
        return NULL;
    }
    pthread_setname_np(s->thread, "nnparity-sketch"); /* what `top -H` and perf show */
    return s;
}

void nnp__sketcher_stop(nnp_sketcher *s)
{
    if (!s)
        return;
    if (s->pid != nnp__this_process()) {
        free(s); /* a forked child's copy: its helper is the parent's */
        return;
    }
    pthread_mutex_lock(&s->lock);
    atomic_store(&s->stop, true);
    pthread_cond_signal(&s->wake);
    pthread_mutex_unlock(&s->lock);
    pthread_join(s->thread, NULL);
    pthread_cond_destroy(&s->wake);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

void nnp__sketch_job_start(nnp_sketch_job *j, nnp_sketcher *s, bool wake, nnp_dtype dtype,
                           uint32_t ndim, const uint64_t *shape, const void *data, uint64_t nelem,
                           char *text)
{
    *j = (nnp_sketch_job){.dtype = dtype, .ndim = ndim, .shape = shape, .data = data,
                          .nelem = nelem, .text = text};
    /* a helper asleep is left so unless asked: the writer sketches the record itself */
    if (!s || (!wake && atomic_load(&s->sleeping)))
        return;
    j->by = s;
    atomic_store(&s->slot, j);
    /* one that fell asleep since is not woken either: the writer takes the job back */
    if (wake && atomic_load(&s->sleeping)) {
        pthread_mutex_lock(&s->lock);
        pthread_cond_signal(&s->wake);
        pthread_mutex_unlock(&s->lock);
    }
}

void nnp__sketch_job_finish(nnp_sketch_job *j)
{
    nnp_sketcher *s = j->by;
    nnp_sketch_job *posted = j;
    if (!s || atomic_compare_exchange_strong(&s->slot, &posted, NULL)) {
        run(j); /* no helper, or it has not taken the job: taken back */
        return;
    }
    /* the helper is running it: wait for the slot to empty */
    for (unsigned spins = 0; atomic_load(&s->slot) == BUSY; spins++)
        if (spins % 64 == 63)
            sched_yield(); /* a helper preempted by another thread gets the core */
}
