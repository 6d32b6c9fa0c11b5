/*
 * sketch_job.c - records' fingerprints taken on a helper thread of the writer's, beside or
 * behind the writer (docs/sketch.md).
 *
 * Writing a record to the page cache and sketching it each read every byte: one after the
 * other, the sketch adds a fifth to a quarter of a record's cost. So each writer keeps a helper
 * thread (a sketcher), which takes a record's sketch in one of two ways (writer.c chooses):
 *
 * - Beside the write, from the caller's buffer: the writer hands the job over before writing the
 *   record, and takes it back after. It never waits for the helper to wake up: a job the helper
 *   has not taken by the time the write is done is taken back and run on the writer's thread.
 *   Only a job the helper is running is waited for, and it is already under way. For large
 *   records, whose sketch the write hides, and for records added back to back.
 * - Behind the writer, from the file: once a record is written (its bytes in the partial file,
 *   which nothing overwrites), the writer queues its place in the file and returns; the helper
 *   reads the bytes back from the page cache and sketches them while the caller goes on with
 *   its own work, a forward pass between two layers' records. Records are handed over in
 *   batches, so that waking the helper (a system call, and in a virtual machine a costly wake-up
 *   of the other core) is paid once a batch and not once a record. When the helper falls behind
 *   (no core free for it), the writer sketches new records itself.
 *
 * The helper keeps looking for work for a short while after each job, then sleeps. At close the
 * writer sketches what is still queued itself, beside the helper finishing its batch, then waits
 * for that batch. Whichever thread sketches, from the buffer or from the file, the result is the
 * same: the bytes are those.
 *
 * One beside job at a time: the writer finishes a record's job before it starts the next. The
 * slot holds the job posted (the helper may take it), BUSY (the helper took it and runs it), or
 * NULL (none; the helper leaves it so when done). The helper touches a job only after taking it
 * from the slot, so a job the writer took back is never read by the helper.
 */
#include <errno.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "capture/capture.h"
#include "kernels/kernels.h"

/* How long the helper keeps looking for the next job before it sleeps. */
#define SPIN_NS 50000
/* A batch of records to sketch behind the writer is handed over when it holds this many
 * records or this many bytes of data. */
#define BATCH_RECORDS 64
#define BATCH_BYTES (256u << 10)
/* A helper with this many records handed over and not yet taken is behind. */
#define BEHIND_RECORDS (4 * BATCH_RECORDS)

/* A thread's buffer for the records it reads back. */
typedef struct reader {
    unsigned char *buf;
    size_t cap;
} reader;

struct nnp_sketcher {
    int fd; /* the partial file, open for reading */
    _Atomic(nnp_sketch_job *) slot;
    atomic_bool sleeping, stop;
    pthread_mutex_t lock;
    pthread_cond_t wake, idle;
    /* under `lock` */
    nnp_sketch_task *queue; /* handed over, not yet taken by the helper */
    atomic_size_t nqueue;   /* changed under `lock`; read without it to look for work */
    size_t capqueue;
    bool busy;   /* the helper runs a batch it took */
    bool failed; /* a record could not be read back: the sketches are not to be stored */
    /* the writer's own */
    nnp_sketch_task *pending; /* not yet handed over */
    size_t npending, cappending;
    uint64_t pending_bytes;
    reader mine;
    /* the helper's own */
    nnp_sketch_task *batch;
    size_t capbatch;
    reader its;
    pthread_t thread;
    pid_t pid; /* the process the helper runs in: a forked child has no helper to join */
};

/* The slot's value while the helper runs the job it took. */
static nnp_sketch_job busy_mark;
#define BUSY (&busy_mark)

void nnp__sketch_text(nnp_dtype dtype, uint32_t ndim, const uint64_t *shape, const void *data,
                      uint64_t nelem, char *text)
{
    nnp_sketch k;
    unsigned char entry[NNP_SKETCH_ENTRY_BYTES];
    nnp__sketch_tensor(dtype, ndim, shape, data, nelem, &k);
    nnp__sketch_pack(&k, entry);
    nnp__sketch_entry_text(entry, text);
}

static void run(nnp_sketch_job *j)
{
    nnp__sketch_text(j->dtype, j->ndim, j->shape, j->data, j->nelem, j->text);
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

static bool read_back(int fd, unsigned char *dst, uint64_t n, uint64_t off)
{
    while (n) {
        ssize_t k = pread(fd, dst, n > (1u << 30) ? (1u << 30) : (size_t)n, (off_t)off);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return false;
        dst += k;
        n -= (uint64_t)k;
        off += (uint64_t)k;
    }
    return true;
}

/* Sketch a written record from the file (through the thread's buffer r: such records are small,
 * the large ones are sketched beside their write); false when its bytes cannot be read back. */
static bool run_task(int fd, const nnp_sketch_task *t, reader *r)
{
    if (t->nbytes > SIZE_MAX / 2)
        return false;
    size_t need = t->nbytes ? (size_t)t->nbytes : 1;
    if (need > r->cap) {
        unsigned char *b = malloc(need);
        if (!b)
            return false;
        free(r->buf);
        r->buf = b;
        r->cap = need;
    }
    if (!read_back(fd, r->buf, t->nbytes, t->offset))
        return false;
    nnp__sketch_text(t->dtype, t->ndim, t->shape, r->buf, t->nbytes / nnp_dtype_size(t->dtype),
                     t->text);
    return true;
}

/* Take the queue and sketch it, serving a job posted beside a write between two records. */
static void run_queue(nnp_sketcher *s)
{
    pthread_mutex_lock(&s->lock);
    nnp_sketch_task *b = s->batch;
    size_t cap = s->capbatch, n = atomic_load(&s->nqueue);
    s->batch = s->queue; /* the writer's next hand-over fills the other array */
    s->capbatch = s->capqueue;
    s->queue = b;
    s->capqueue = cap;
    atomic_store(&s->nqueue, 0);
    s->busy = true;
    pthread_mutex_unlock(&s->lock);
    bool ok = true;
    for (size_t i = 0; i < n; i++) {
        take(s);
        ok = run_task(s->fd, &s->batch[i], &s->its) && ok;
    }
    pthread_mutex_lock(&s->lock);
    s->busy = false;
    s->failed = s->failed || !ok;
    pthread_cond_broadcast(&s->idle);
    pthread_mutex_unlock(&s->lock);
}

static bool has_work(nnp_sketcher *s)
{
    nnp_sketch_job *j = atomic_load(&s->slot);
    return (j && j != BUSY) || atomic_load(&s->nqueue) > 0;
}

static void *helper(void *arg)
{
    nnp_sketcher *s = arg;
    while (!atomic_load(&s->stop)) {
        uint64_t until = nnp__monotonic_ns() + SPIN_NS;
        bool worked = false;
        while (!atomic_load(&s->stop) && !worked && nnp__monotonic_ns() < until) {
            worked = take(s);
            if (!worked && atomic_load(&s->nqueue) > 0) {
                run_queue(s);
                worked = true;
            }
        }
        if (worked || atomic_load(&s->stop))
            continue;
        pthread_mutex_lock(&s->lock);
        atomic_store(&s->sleeping, true);
        /* work posted before `sleeping` was set is seen here; work posted after sees it set,
         * and signals */
        while (!has_work(s) && !atomic_load(&s->stop))
            pthread_cond_wait(&s->wake, &s->lock);
        atomic_store(&s->sleeping, false);
        pthread_mutex_unlock(&s->lock);
    }
    return NULL;
}

nnp_sketcher *nnp__sketcher_start(int fd)
{
    nnp_sketcher *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->fd = fd;
    atomic_init(&s->slot, NULL);
    atomic_init(&s->sleeping, false);
    atomic_init(&s->stop, false);
    atomic_init(&s->nqueue, 0);
    if (pthread_mutex_init(&s->lock, NULL) != 0) {
        free(s);
        return NULL;
    }
    if (pthread_cond_init(&s->wake, NULL) != 0) {
        pthread_mutex_destroy(&s->lock);
        free(s);
        return NULL;
    }
    if (pthread_cond_init(&s->idle, NULL) != 0) {
        pthread_cond_destroy(&s->wake);
        pthread_mutex_destroy(&s->lock);
        free(s);
        return NULL;
    }
    s->pid = nnp__this_process();
    if (pthread_create(&s->thread, NULL, helper, s) != 0) {
        pthread_cond_destroy(&s->idle);
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
    /* A forked child's copy has no helper to join, and its lock may have been held by the
     * parent's helper at the fork: only its memory is freed. */
    if (s->pid == nnp__this_process()) {
        pthread_mutex_lock(&s->lock);
        atomic_store(&s->stop, true);
        pthread_cond_signal(&s->wake);
        pthread_mutex_unlock(&s->lock);
        pthread_join(s->thread, NULL);
        pthread_cond_destroy(&s->idle);
        pthread_cond_destroy(&s->wake);
        pthread_mutex_destroy(&s->lock);
    }
    free(s->queue);
    free(s->pending);
    free(s->batch);
    free(s->mine.buf);
    free(s->its.buf);
    free(s);
}

static void signal_if_asleep(nnp_sketcher *s)
{
    if (atomic_load(&s->sleeping)) {
        pthread_mutex_lock(&s->lock);
        pthread_cond_signal(&s->wake);
        pthread_mutex_unlock(&s->lock);
    }
}

void nnp__sketch_job_start(nnp_sketch_job *j, nnp_sketcher *s, nnp_dtype dtype, uint32_t ndim,
                           const uint64_t *shape, const void *data, uint64_t nelem, char *text)
{
    *j = (nnp_sketch_job){.dtype = dtype, .ndim = ndim, .shape = shape, .data = data,
                          .nelem = nelem, .text = text, .by = s};
    if (!s)
        return;
    atomic_store(&s->slot, j);
    signal_if_asleep(s);
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

/* Give the helper what is pending; kept pending when there is no memory for it. */
static void hand_over(nnp_sketcher *s)
{
    pthread_mutex_lock(&s->lock);
    size_t n = atomic_load(&s->nqueue);
    if (nnp__grow((void **)&s->queue, &s->capqueue, n + s->npending, sizeof *s->queue)) {
        memcpy(s->queue + n, s->pending, s->npending * sizeof *s->pending);
        atomic_store(&s->nqueue, n + s->npending);
        s->npending = 0;
        s->pending_bytes = 0;
        if (atomic_load(&s->sleeping))
            pthread_cond_signal(&s->wake);
    }
    pthread_mutex_unlock(&s->lock);
}

bool nnp__sketcher_post(nnp_sketcher *s, const nnp_sketch_task *t)
{
    if (atomic_load(&s->nqueue) + s->npending >= BEHIND_RECORDS ||
        !nnp__grow((void **)&s->pending, &s->cappending, s->npending + 1, sizeof *s->pending))
        return false;
    s->pending[s->npending++] = *t;
    s->pending_bytes += t->nbytes;
    if (s->npending >= BATCH_RECORDS || s->pending_bytes >= BATCH_BYTES)
        hand_over(s);
    return true;
}

bool nnp__sketcher_finish(nnp_sketcher *s)
{
    if (s->pid != nnp__this_process())
        return false; /* a forked child's copy: the parent's helper took part of the work */
    /* what the helper has not taken yet, the writer takes, and sketches beside it */
    pthread_mutex_lock(&s->lock);
    nnp_sketch_task *queued = s->queue;
    size_t nqueued = atomic_load(&s->nqueue);
    s->queue = NULL;
    s->capqueue = 0;
    atomic_store(&s->nqueue, 0);
    pthread_mutex_unlock(&s->lock);
    bool ok = true;
    for (size_t i = 0; i < nqueued; i++)
        ok = run_task(s->fd, &queued[i], &s->mine) && ok;
    for (size_t i = 0; i < s->npending; i++)
        ok = run_task(s->fd, &s->pending[i], &s->mine) && ok;
    free(queued);
    s->npending = 0;
    s->pending_bytes = 0;
    pthread_mutex_lock(&s->lock);
    while (s->busy)
        pthread_cond_wait(&s->idle, &s->lock);
    ok = ok && !s->failed;
    pthread_mutex_unlock(&s->lock);
    return ok;
}
