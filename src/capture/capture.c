/*
 * capture.c - the process's capture session: records every tap into a dump through the streaming
 * writer, and for injection overwrites layer inputs with a reference dump's records.
 *
 * One session per process, because a port taps from deep inside its own code where no handle can
 * be passed around; it is opened explicitly or from the environment on the first tap. Taps are
 * serialized by one mutex, which gives a single global record order however many threads tap;
 * the data is written straight from the caller's buffer. With no session, a tap costs one
 * pthread_once check and one atomic load. A child forked while a session is open does not use
 * it: its taps record nothing, and its exit leaves the parent's files to the parent.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "capture/capture.h"

typedef struct call_count {
    char *key; /* "<name>\x1f<role>" */
    uint64_t next;
} call_count;

enum { INJECTION_REASONS = 16 };

typedef struct session {
    pthread_mutex_t lock;
    nnp_writer *writer; /* NULL: not recording */
    nnp_dump *ref;      /* NULL: not injecting */
    nnp_rules *rules;
    call_count *calls;  /* open addressing, power-of-two capacity */
    size_t ncalls, capcalls;
    nnp_status failed;  /* the first recording failure; later records are refused with it */
    char failure[1024];
    uint64_t injected, not_injected; /* inputs overwritten with the reference's, and not */
    char *reasons[INJECTION_REASONS]; /* why not, for the first few */
    size_t nreasons;
    pid_t pid; /* the process that opened it: a child forked since neither records into it
                * nor finishes it */
} session;

static nnp_status put_injection_meta(session *s);
static _Atomic(session *) active;
static void open_from_env(void);
static pthread_mutex_t open_lock = PTHREAD_MUTEX_INITIALIZER;
/* Taps hold it shared while they use the session; closing holds it exclusively, so a session is
 * never freed under a tap that is still using it. */
static pthread_rwlock_t use_lock = PTHREAD_RWLOCK_INITIALIZER;
static pthread_once_t env_once = PTHREAD_ONCE_INIT;
/* Set by an explicit nnp_capture_open: the environment is then not consulted. */
static atomic_bool env_overridden;

/* The process's id (nnp__this_process), which every tap compares with its session's: getpid()
 * is a system call each time (glibc keeps no copy), so it is kept here, and a child's fork()
 * handler puts the child's in its place. */
static atomic_int own_pid;
static pthread_once_t fork_once = PTHREAD_ONCE_INIT;

static void forked_child(void)
{
    atomic_store(&own_pid, (int)getpid());
}

static void watch_forks(void)
{
    /* the handler first: a fork between the two then still leaves the child its own id */
    pthread_atfork(NULL, NULL, forked_child);
    atomic_store(&own_pid, (int)getpid());
}

pid_t nnp__this_process(void)
{
    pthread_once(&fork_once, watch_forks);
    return (pid_t)atomic_load_explicit(&own_pid, memory_order_relaxed);
}

static void session_free(session *s)
{
    if (!s)
        return;
    nnp_writer_abort(s->writer);
    nnp_dump_close(s->ref);
    nnp_rules_free(s->rules);
    for (size_t i = 0; i < s->nreasons; i++)
        free(s->reasons[i]);
    for (size_t i = 0; i < s->capcalls; i++)
        free(s->calls[i].key);
    free(s->calls);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

/* The next call index of (name, role), counting from 0. */
static nnp_status next_call(session *s, const char *name, const char *role, uint64_t *call)
{
    if ((s->ncalls + 1) * 2 > s->capcalls) {
        size_t cap = s->capcalls ? s->capcalls * 2 : 256;
        call_count *n = calloc(cap, sizeof *n);
        if (!n)
            return nnp__nomem();
        for (size_t i = 0; i < s->capcalls; i++) {
            if (!s->calls[i].key)
                continue;
            size_t j = (size_t)nnp__hash_str(s->calls[i].key) & (cap - 1);
            while (n[j].key)
                j = (j + 1) & (cap - 1);
            n[j] = s->calls[i];
        }
        free(s->calls);
        s->calls = n;
        s->capcalls = cap;
    }
    size_t nl = strlen(name), rl = strlen(role);
    char stack[256], *key = nl + rl + 2 <= sizeof stack ? stack : malloc(nl + rl + 2);
    if (!key)
        return nnp__nomem();
    memcpy(key, name, nl);
    key[nl] = '\x1f';
    memcpy(key + nl + 1, role, rl + 1);
    size_t j = (size_t)nnp__hash_str(key) & (s->capcalls - 1);
    while (s->calls[j].key && strcmp(s->calls[j].key, key) != 0)
        j = (j + 1) & (s->capcalls - 1);
    if (!s->calls[j].key) {
        s->calls[j].key = key == stack ? strdup(stack) : key;
        if (!s->calls[j].key)
            return nnp__nomem();
        s->ncalls++;
    } else if (key != stack) {
        free(key);
    }
    *call = s->calls[j].next++;
    return NNP_OK;
}

/* ---- the ranks of a distributed run (docs/scale.md) ---- */

/* The variables that launchers set, in the order they are believed: torchrun's, Open MPI's,
 * MPICH's (PMI), Slurm's. A family counts only when both of its variables are set. Slurm's
 * size is the step's, SLURM_STEP_NUM_TASKS, which srun sets for every task it starts: an sbatch
 * script runs as SLURM_PROCID 0 with the allocation's SLURM_NTASKS, and salloc's shell has
 * SLURM_NTASKS alone; neither is one rank of several. */
static const char *const rank_vars[][2] = {{"RANK", "WORLD_SIZE"},
                                           {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"},
                                           {"PMI_RANK", "PMI_SIZE"},
                                           {"SLURM_PROCID", "SLURM_STEP_NUM_TASKS"}};

static bool decimal(const char *s, long *v)
{
    char *end;
    errno = 0;
    *v = strtol(s, &end, 10);
    return *s >= '0' && *s <= '9' && !*end && !errno && *v <= 1000000000L;
}

/* This process's rank and world size from the environment (one process when none is set). */
static nnp_status rank_from_env(int *rank, int *world)
{
    *rank = 0;
    *world = 1;
    for (size_t i = 0; i < sizeof rank_vars / sizeof *rank_vars; i++) {
        const char *r = getenv(rank_vars[i][0]), *w = getenv(rank_vars[i][1]);
        if (!r || !*r || !w || !*w)
            continue;
        long rv, wv;
        if (!decimal(r, &rv) || !decimal(w, &wv) || wv < 1 || rv >= wv)
            return nnp__fail(NNP_ERR_ARG, "capture: %s=%s and %s=%s are not a rank below a world "
                             "size", rank_vars[i][0], r, rank_vars[i][1], w);
        *rank = (int)rv;
        *world = (int)wv;
        return NNP_OK;
    }
    return NNP_OK;
}

/* Where this process records: `path` itself, or, for one rank of several (or when `path` is a
 * directory or ends with '/'), "<path>/rank-RRRRR-of-NNNNN.safetensors", the directory made
 * if missing (ranks race to make it: one that finds it made is content). *out is new. */
static nnp_status rank_path(const char *path, const nnp_capture_options *opts, char **out)
{
    int rank = opts ? opts->rank : 0, world = opts ? opts->world_size : 0;
    nnp_status st = NNP_OK;
    if (world < 0 || (world > 0 && (rank < 0 || rank >= world)))
        return nnp__fail(NNP_ERR_ARG, "nnp_capture_open: rank %d of %d ranks does not exist", rank,
                         world);
    if (world == 0 && (st = rank_from_env(&rank, &world)))
        return st;
    size_t len = strlen(path);
    struct stat sb;
    bool exists = stat(path, &sb) == 0;
    bool dir = world > 1 || path[len - 1] == '/' || (exists && S_ISDIR(sb.st_mode));
    if (!dir) {
        *out = strdup(path);
        return *out ? NNP_OK : nnp__nomem();
    }
    if (exists && !S_ISDIR(sb.st_mode))
        return nnp__fail(NNP_ERR_ARG, "%s: a capture of %d ranks records into a directory of "
                         "rank files, and this is a file", path, world);
    if (!exists && mkdir(path, 0777) != 0 && errno != EEXIST)
        return nnp__fail(NNP_ERR_IO, "%s: cannot make the capture directory: %s", path,
                         strerror(errno));
    while (len > 1 && path[len - 1] == '/')
        len--;
    nnp_sbuf b = {0};
    nnp__sbuf_put(&b, path, len);
    nnp__sbuf_printf(&b, "/rank-%05d-of-%05d.safetensors", rank, world);
    if (b.failed) {
        nnp__sbuf_free(&b);
        return nnp__nomem();
    }
    *out = b.s;
    return NNP_OK;
}

static nnp_status session_open(const char *path, const nnp_capture_options *opts, session **out)
{
    session *s = calloc(1, sizeof *s);
    if (!s)
        return nnp__nomem();
    if (pthread_mutex_init(&s->lock, NULL) != 0) {
        free(s);
        return nnp__fail(NNP_ERR_INTERNAL, "cannot create a mutex");
    }
    s->pid = nnp__this_process();
    nnp_status st = NNP_OK;
    /* The reference and the rules are read first: a bad one is reported before any layer runs
     * and before an output file is created. */
    if (opts && opts->inject_path && *opts->inject_path)
        st = nnp_dump_open(opts->inject_path, &s->ref);
    if (!st && opts && opts->rules_path && *opts->rules_path)
        st = nnp_rules_load(opts->rules_path, &s->rules);
    char *file = NULL;
    if (!st && path && *path && !(st = rank_path(path, opts, &file)))
        st = nnp_writer_open(file, opts ? opts->expected_records : 0, &s->writer);
    free(file);
    if (!st && !s->writer && !s->ref)
        st = nnp__fail(NNP_ERR_ARG, "nnp_capture_open: neither a capture path nor an injection "
                       "file");
    if (st) {
        session_free(s);
        return st;
    }
    *out = s;
    return NNP_OK;
}

/* Make `path`/`opts` the process's session. */
static nnp_status open_session(const char *path, const nnp_capture_options *opts)
{
    pthread_mutex_lock(&open_lock);
    nnp_status st;
    session *s = NULL;
    if (atomic_load(&active))
        st = nnp__fail(NNP_ERR_ARG, "nnp_capture_open: a capture session is already open");
    else if (!(st = session_open(path, opts, &s)))
        atomic_store(&active, s);
    pthread_mutex_unlock(&open_lock);
    return st;
}

void nnp_capture_options_init(nnp_capture_options *opts)
{
    if (opts)
        *opts = (nnp_capture_options){.size = sizeof *opts};
}

nnp_status nnp_capture_open(const char *path, const nnp_capture_options *opts)
{
    nnp_capture_options o;
    nnp_capture_options_init(&o);
    nnp_status st = nnp__options_take("nnp_capture_open", opts, &o, sizeof o);
    if (st)
        return st;
    /* An explicit session takes the place of one from the environment. */
    atomic_store(&env_overridden, true);
    pthread_once(&env_once, open_from_env);
    return open_session(path, &o);
}

nnp_status nnp_capture_close(void)
{
    pthread_mutex_lock(&open_lock);
    /* New taps see no session from here on; taking the lock exclusively then waits only for the
     * taps already using it. (Taking it first could wait for ever: glibc's rwlock lets readers
     * keep overtaking a waiting writer while threads keep tapping.) */
    session *s = atomic_exchange(&active, NULL);
    pthread_rwlock_wrlock(&use_lock);
    pthread_rwlock_unlock(&use_lock);
    nnp_status st = NNP_OK;
    if (s && s->pid != nnp__this_process()) {
        /* a forked child's copy (its exit runs the parent's atexit handler too): the files are
         * the parent's, which goes on writing them */
        nnp__writer_abandon(s->writer);
        s->writer = NULL;
        session_free(s);
    } else if (s) {
        if (s->writer && s->failed) {
            char why[1024];
            snprintf(why, sizeof why, "%s", s->failure);
            const char *kept = nnp__writer_abandon(s->writer);
            st = nnp__fail(s->failed, "%s; not finished: the records written before are in %s "
                           "(nnparity recover finishes it)", why, kept);
        } else if (s->writer) {
            if (s->ref)
                st = put_injection_meta(s);
            st = st ? st : nnp_writer_close(s->writer);
        }
        s->writer = NULL;
        session_free(s);
    }
    pthread_mutex_unlock(&open_lock);
    return st;
}

static void close_at_exit(void)
{
    if (nnp_capture_close() != NNP_OK)
        fprintf(stderr, "nnparity: %s\n", nnp_last_error());
}

/* NNPARITY_CAPTURE / NNPARITY_INJECT / NNPARITY_RULES: a session with no code change. A process
 * cannot be told through a return value here, so a failure is said once on stderr (the one place
 * the library prints) and the process runs on uncaptured. */
static void open_from_env(void)
{
    const char *cap = getenv("NNPARITY_CAPTURE"), *inj = getenv("NNPARITY_INJECT");
    if (atomic_load(&env_overridden) || ((!cap || !*cap) && (!inj || !*inj)))
        return;
    nnp_capture_options o;
    nnp_capture_options_init(&o);
    o.inject_path = inj;
    o.rules_path = getenv("NNPARITY_RULES");
    if (open_session(cap, &o) != NNP_OK) {
        fprintf(stderr, "nnparity: %s\n", nnp_last_error());
        return;
    }
    atexit(close_at_exit);
}

/* The open session, held shared (release with done()), or NULL: then nothing is held. */
static session *current(void)
{
    pthread_once(&env_once, open_from_env);
    if (!atomic_load_explicit(&active, memory_order_acquire))
        return NULL; /* the common case when nothing is captured: no lock at all */
    pthread_rwlock_rdlock(&use_lock);
    /* Loaded again under the lock: a close may have cleared it in between, and a session seen
     * here cannot be freed until the lock is released. */
    session *s = atomic_load_explicit(&active, memory_order_acquire);
    if (s && s->pid != nnp__this_process())
        s = NULL; /* a child forked while it was open: its taps would write the parent's file */
    if (!s)
        pthread_rwlock_unlock(&use_lock);
    return s;
}

static void done(void)
{
    pthread_rwlock_unlock(&use_lock);
}

int nnp_capture_active(void)
{
    session *s = current();
    int mode = s ? (s->writer ? 1 : 0) | (s->ref ? 2 : 0) : 0;
    if (s)
        done();
    return mode;
}

/* What a tap records: its data, or the number of an earlier record whose tensor it is. */
typedef struct tap_source {
    const void *data;
    const uint64_t *same_as; /* NULL: data */
    uint64_t *number;        /* where the record's number goes (NULL: nowhere) */
} tap_source;

/* Record under the session lock. */
static nnp_status record_locked(session *s, const nnp_tap_desc *d, uint64_t call, tap_source src)
{
    if (!s->writer)
        return NNP_OK;
    if (s->failed)
        return nnp__fail(s->failed, "%s", s->failure);
    nnp_record_desc rd = {.module = d->name, .role = d->role, .module_type = d->module_type,
                          .call = call, .dtype = d->dtype, .ndim = d->ndim, .shape = d->shape};
    size_t number = nnp__writer_count(s->writer);
    nnp_status st = NNP_OK;
    if (!src.same_as)
        st = nnp_writer_add(s->writer, &rd, src.data);
    else if (*src.same_as >= number)
        st = nnp__fail(NNP_ERR_ARG, "tap '%s/%s': the same as record %llu, but %zu are recorded",
                       d->name, d->role, (unsigned long long)*src.same_as, number);
    else
        st = nnp__writer_add_same(s->writer, &rd, (size_t)*src.same_as);
    if (!st && src.number)
        *src.number = number;
    if (st == NNP_ERR_IO) {
        /* A full disk does not get better: keep what was written, refuse the rest clearly. */
        s->failed = st;
        snprintf(s->failure, sizeof s->failure, "%s (capture stopped; earlier records are kept)",
                 nnp_last_error());
    }
    return st;
}

static nnp_status check_desc(const nnp_tap_desc *d, const void *data)
{
    if (!d || !d->name || !d->role || !*d->role)
        return nnp__fail(NNP_ERR_ARG, "tap: a name and a role are needed");
    if (nnp_dtype_size(d->dtype) == 0)
        return nnp__fail(NNP_ERR_ARG, "tap '%s/%s': invalid dtype %d", d->name, d->role,
                         (int)d->dtype);
    uint64_t n = 1;
    if (d->ndim && !d->shape)
        return nnp__fail(NNP_ERR_ARG, "tap '%s/%s': no shape", d->name, d->role);
    if (!nnp__shape_nelem(d->ndim, d->shape, &n))
        return nnp__fail(NNP_ERR_ARG, "tap '%s/%s': shape's size overflows", d->name, d->role);
    if (n && !data)
        return nnp__fail(NNP_ERR_ARG, "tap '%s/%s': no data", d->name, d->role);
    return NNP_OK;
}

/* Record d in the session s, held by the caller; with first_only, only the first time the
 * session sees its name and role (later ones still count calls). */
static nnp_status tap_record_in(session *s, const nnp_tap_desc *d, tap_source src,
                                bool first_only)
{
    /* a record of an earlier one's tensor has no data of its own: its shape is checked alone */
    static const unsigned char no_data;
    nnp_status st = check_desc(d, src.same_as ? &no_data : src.data);
    if (!st) {
        pthread_mutex_lock(&s->lock);
        uint64_t call;
        if (!(st = next_call(s, d->name, d->role, &call)) && (!first_only || call == 0))
            st = record_locked(s, d, call, src);
        pthread_mutex_unlock(&s->lock);
    }
    return st;
}

nnp_status nnp_tap_record(const nnp_tap_desc *d, const void *data)
{
    return nnp_tap_record_numbered(d, data, NULL);
}

nnp_status nnp_tap_record_numbered(const nnp_tap_desc *d, const void *data, uint64_t *number)
{
    if (number)
        *number = UINT64_MAX;
    session *s = current();
    if (!s)
        return NNP_OK;
    nnp_status st = tap_record_in(s, d, (tap_source){data, NULL, number}, false);
    done();
    return st;
}

nnp_status nnp_tap_record_same(const nnp_tap_desc *d, uint64_t number)
{
    session *s = current();
    if (!s)
        return NNP_OK;
    nnp_status st = tap_record_in(s, d, (tap_source){NULL, &number, NULL}, false);
    done();
    return st;
}

/* Count what injection did, and keep the first reasons it could not, for the capture's
 * metadata (nnparity.injection): a run whose injection did nothing must not claim a layer's
 * error as its own. */
static void note_injection(session *s, nnp_status st)
{
    if (!st) {
        s->injected++;
        return;
    }
    s->not_injected++;
    if (s->nreasons < INJECTION_REASONS) {
        char *why = strdup(nnp_last_error());
        if (why)
            s->reasons[s->nreasons++] = why;
    }
}

/* The metadata that says what injection did: {"injected": N, "not_injected": M, "reasons":
 * [...]}, the first INJECTION_REASONS reasons. */
static nnp_status put_injection_meta(session *s)
{
    nnp_sbuf b = {0};
    nnp__sbuf_printf(&b, "{\"injected\":%llu,\"not_injected\":%llu,\"reasons\":[",
                     (unsigned long long)s->injected, (unsigned long long)s->not_injected);
    for (size_t k = 0; k < s->nreasons; k++) {
        if (k)
            nnp__sbuf_puts(&b, ",");
        nnp__sbuf_json_string(&b, s->reasons[k]);
    }
    nnp__sbuf_puts(&b, "]}");
    nnp_status st = b.failed ? nnp__nomem() : nnp__writer_put_meta(s->writer, NNP_META_INJECTION_KEY, b.s);
    nnp__sbuf_free(&b);
    return st;
}

/* Whether the port-side adapters of a mapping can be undone under injection: a reshape keeps
 * the elements in C order, so the reference's bytes fit the port's tensor as they are. */
static const nnp_op *port_op_in_the_way(const nnp_mapping *m)
{
    for (size_t k = 0; k < m->nops; k++)
        if (!m->ops[k].on_ref && m->ops[k].kind != NNP_OP_RESHAPE)
            return &m->ops[k];
    return NULL;
}

/* Overwrite data with the reference record for (d, call), under the session lock: the record the
 * rules map the name to, as the rules' reference-side adapters leave it (the last row of a
 * sequence the reference re-ran whole, for a port that decodes one token). */
static nnp_status inject_locked(session *s, const nnp_tap_desc *d, uint64_t call, void *data)
{
    nnp_sbuf name = {0};
    nnp__record_name(&name, d->name, d->role, call);
    if (name.failed)
        return nnp__nomem();
    nnp_mapping *maps = NULL;
    size_t nmaps = 0;
    nnp_status st = nnp__rules_apply(s->rules, name.s, &maps, &nmaps);
    const char *mapped = !st && nmaps ? maps[0].name : NULL;
    int64_t i = mapped ? nnp_dump_find(s->ref, mapped) : -1;
    const nnp_op *blocking = mapped ? port_op_in_the_way(&maps[0]) : NULL;
    if (!st && !nmaps)
        st = nnp__fail(NNP_ERR_NOT_FOUND, "inject '%s': ignored by the rules", name.s);
    else if (!st && i < 0)
        st = nnp__fail(NNP_ERR_NOT_FOUND, "inject '%s': %s holds no record '%s'", name.s,
                       nnp_dump_path(s->ref), mapped);
    else if (!st && blocking) {
        nnp_sbuf op = {0};
        nnp__op_describe(&op, blocking);
        st = nnp__fail(NNP_ERR_NOT_FOUND, "inject '%s': the rules compare it through '%s', "
                       "which injection cannot undo", name.s, op.s ? op.s : "");
        nnp__sbuf_free(&op);
    }
    const nnp_record *r = i >= 0 ? nnp_dump_record(s->ref, (size_t)i) : NULL;
    nnp_tensor rt = {0};
    if (!st) {
        rt.dtype = r->dtype;
        rt.ndim = r->ndim;
        rt.nelem = r->nelem;
        if (r->ndim > NNP_ADAPT_MAX_DIMS)
            st = nnp__fail(NNP_ERR_ARG, "inject '%s': reference record '%s' has more than %d "
                           "axes", name.s, r->name, NNP_ADAPT_MAX_DIMS);
        else if (r->ndim)
            memcpy(rt.shape, r->shape, r->ndim * sizeof *r->shape);
    }
    if (!st)
        st = nnp_dump_data(s->ref, (size_t)i, &rt.data);
    if (!st)
        st = nnp__adapt(&rt, maps[0].ops, maps[0].nops, true, NULL);
    /* with a reshape on the port's side the elements need only be as many */
    bool reshaped = false;
    for (size_t k = 0; !st && k < maps[0].nops; k++)
        reshaped |= !maps[0].ops[k].on_ref && maps[0].ops[k].kind == NNP_OP_RESHAPE;
    bool same = !st && rt.ndim == d->ndim;
    for (uint32_t k = 0; same && k < d->ndim; k++)
        same = rt.shape[k] == d->shape[k];
    /* a port that decodes one token meets a reference that re-ran the whole sequence: the
     * reference's last row along the sequence axis is the port's input */
    bool one_row = !st && !same && !reshaped &&
                   nnp__is_one_row_of(d->ndim, d->shape, d->dtype, rt.ndim, rt.shape, rt.dtype);
    if (one_row) {
        nnp_op last = {.kind = NNP_OP_SLICE, .on_ref = true,
                       .axis = nnp__sequence_axis(d->ndim, d->dtype) - (int)d->ndim,
                       .start = -1, .end = INT64_MAX};
        st = nnp__adapt(&rt, &last, 1, true, NULL);
        same = !st;
    }
    uint64_t port_n = 1;
    for (uint32_t k = 0; k < d->ndim; k++)
        port_n *= d->shape[k];
    if (!st && !same && !(reshaped && rt.nelem == port_n)) {
        char port[256], ref[256];
        nnp__format_shape(port, sizeof port, d->ndim, d->shape);
        nnp__format_shape(ref, sizeof ref, rt.ndim, rt.shape);
        st = nnp__fail(NNP_ERR_ARG, "inject '%s': shape mismatch: the port's input is %s, "
                       "reference record '%s' is %s%s", name.s, port, r->name, ref,
                       maps[0].nops ? " after the rules' adapters" : "");
    }
    if (!st && (st = nnp_convert(rt.dtype, rt.data, (size_t)rt.nelem, d->dtype, data))) {
        char why[512]; /* the message is rewritten in place: copy it out first */
        snprintf(why, sizeof why, "%s", nnp_last_error());
        st = nnp__fail(st, "inject '%s': %s", name.s, why);
    }
    nnp__tensor_free(&rt);
    nnp__mappings_free(maps, nmaps);
    nnp__sbuf_free(&name);
    note_injection(s, st);
    return st;
}

/* Inject into and record d in the session s, held by the caller. */
static nnp_status tap_inject_in(session *s, const nnp_tap_desc *d, void *data)
{
    nnp_status st = check_desc(d, data);
    if (st)
        return st;
    pthread_mutex_lock(&s->lock);
    uint64_t call;
    st = next_call(s, d->name, d->role, &call);
    nnp_status inj = !st && s->ref ? inject_locked(s, d, call, data) : NNP_OK;
    char inj_msg[1024];
    if (inj)
        snprintf(inj_msg, sizeof inj_msg, "%s", nnp_last_error());
    /* A shape mismatch leaves data as it was; a missing reference record is still recorded. */
    if (!st && inj != NNP_ERR_ARG && inj != NNP_ERR_NOMEM)
        st = record_locked(s, d, call, (tap_source){data, NULL, NULL});
    pthread_mutex_unlock(&s->lock);
    if (!st && inj)
        return nnp__fail(inj, "%s", inj_msg);
    return st ? st : inj;
}

nnp_status nnp_tap_inject(const nnp_tap_desc *d, void *data)
{
    session *s = current();
    if (!s)
        return NNP_OK;
    nnp_status st = tap_inject_in(s, d, data);
    done();
    return st;
}

nnp_status nnp_tap(const char *name, const char *role, nnp_dtype dtype, uint32_t ndim,
                   const uint64_t *shape, const void *data)
{
    nnp_tap_desc d = {name, role, NULL, dtype, ndim, shape};
    return nnp_tap_record(&d, data);
}

nnp_status nnp_tap_input(const char *name, const char *role, nnp_dtype dtype, uint32_t ndim,
                         const uint64_t *shape, void *data)
{
    nnp_tap_desc d = {name, role, NULL, dtype, ndim, shape};
    return nnp_tap_inject(&d, data);
}

nnp_status nnp_tap_param(const char *name, const char *param, nnp_dtype dtype, uint32_t ndim,
                         const uint64_t *shape, const void *data)
{
    session *s = current();
    if (!s)
        return NNP_OK;
    nnp_status st = NNP_OK;
    char stack[128], *role = stack;
    size_t n = param ? strlen(param) : 0;
    if (!name || !n)
        st = nnp__fail(NNP_ERR_ARG, "tap param: a name and a parameter name are needed");
    else if (n + 7 > sizeof stack && !(role = malloc(n + 7)))
        st = nnp__nomem();
    if (!st) {
        memcpy(role, "param:", 6);
        memcpy(role + 6, param, n + 1);
        nnp_tap_desc d = {name, role, NULL, dtype, ndim, shape};
        /* a layer's weights are one value however often it runs: only the first is kept */
        st = tap_record_in(s, &d, (tap_source){data, NULL, NULL}, true);
    }
    if (role != stack)
        free(role);
    done();
    return st;
}

/* ---- taps whose name is formatted (the session is looked up before any formatting) ---- */

/* Format the name into buf (NNP_TAP_NAME_MAX + 1 bytes) and make it d->name. */
static nnp_status format_name(const char *who, nnp_tap_desc *d, char *buf, const char *fmt,
                              va_list args)
{
    if (!fmt)
        return nnp__fail(NNP_ERR_ARG, "%s: no name format", who);
    int n = vsnprintf(buf, NNP_TAP_NAME_MAX + 1, fmt, args);
    if (n < 0)
        return nnp__fail(NNP_ERR_ARG, "%s: the name format '%s' cannot be formatted", who, fmt);
    if (n > NNP_TAP_NAME_MAX)
        return nnp__fail(NNP_ERR_ARG, "%s: the tap name formatted from '%s' is %d bytes, over "
                         "the limit of %d (NNP_TAP_NAME_MAX); it starts '%.48s'", who, fmt, n,
                         NNP_TAP_NAME_MAX, buf);
    d->name = buf;
    return NNP_OK;
}

/* A name-formatting tap: with `inject`, one that injects into `data` (then `in` is data too);
 * otherwise one that records `in`. */
static nnp_status vtapf(const char *who, bool inject, const nnp_tap_desc *desc, const void *in,
                        void *data, const char *fmt, va_list args)
{
    session *s = current();
    if (!s)
        return NNP_OK;
    nnp_status st;
    if (!desc) {
        st = nnp__fail(NNP_ERR_ARG, "%s: no tap description", who);
    } else {
        char name[NNP_TAP_NAME_MAX + 1];
        nnp_tap_desc d = *desc;
        st = format_name(who, &d, name, fmt, args);
        if (!st)
            st = inject ? tap_inject_in(s, &d, data)
                        : tap_record_in(s, &d, (tap_source){in, NULL, NULL}, false);
    }
    done();
    return st;
}

nnp_status nnp_vtap_recordf(const nnp_tap_desc *desc, const void *data, const char *name_fmt,
                            va_list args)
{
    return vtapf("nnp_tap_recordf", false, desc, data, NULL, name_fmt, args);
}

nnp_status nnp_vtap_injectf(const nnp_tap_desc *desc, void *data, const char *name_fmt,
                            va_list args)
{
    return vtapf("nnp_tap_injectf", true, desc, data, data, name_fmt, args);
}

nnp_status nnp_tap_recordf(const nnp_tap_desc *desc, const void *data, const char *name_fmt, ...)
{
    va_list args;
    va_start(args, name_fmt);
    nnp_status st = nnp_vtap_recordf(desc, data, name_fmt, args);
    va_end(args);
    return st;
}

nnp_status nnp_tap_injectf(const nnp_tap_desc *desc, void *data, const char *name_fmt, ...)
{
    va_list args;
    va_start(args, name_fmt);
    nnp_status st = nnp_vtap_injectf(desc, data, name_fmt, args);
    va_end(args);
    return st;
}

nnp_status nnp_tapf(const char *role, nnp_dtype dtype, uint32_t ndim, const uint64_t *shape,
                    const void *data, const char *name_fmt, ...)
{
    nnp_tap_desc d = {NULL, role, NULL, dtype, ndim, shape};
    va_list args;
    va_start(args, name_fmt);
    nnp_status st = vtapf("nnp_tapf", false, &d, data, NULL, name_fmt, args);
    va_end(args);
    return st;
}

nnp_status nnp_tap_inputf(const char *role, nnp_dtype dtype, uint32_t ndim,
                          const uint64_t *shape, void *data, const char *name_fmt, ...)
{
    nnp_tap_desc d = {NULL, role, NULL, dtype, ndim, shape};
    va_list args;
    va_start(args, name_fmt);
    nnp_status st = vtapf("nnp_tap_inputf", true, &d, data, data, name_fmt, args);
    va_end(args);
    return st;
}

/* ---- the dump's metadata ---- */

nnp_status nnp_capture_set_meta(const char *key, const char *value)
{
    /* Checked with no session too: a reserved key is a mistake whether or not this run is
     * captured. */
    size_t bad;
    if (!key || !*key || !value)
        return nnp__fail(NNP_ERR_ARG, "nnp_capture_set_meta: a key and a value are needed");
    if (strncmp(key, "nnparity.", 9) == 0)
        return nnp__fail(NNP_ERR_ARG, "nnp_capture_set_meta: metadata key '%s' is reserved for "
                         "nnparity (keys starting with \"nnparity.\")", key);
    if (!nnp__utf8_valid((const unsigned char *)key, strlen(key), &bad))
        return nnp__fail(NNP_ERR_ARG, "nnp_capture_set_meta: a metadata key is not valid UTF-8 "
                         "(byte %zu)", bad);
    if (!nnp__utf8_valid((const unsigned char *)value, strlen(value), &bad))
        return nnp__fail(NNP_ERR_ARG, "nnp_capture_set_meta: the value of metadata key '%s' is "
                         "not valid UTF-8 (byte %zu)", key, bad);
    session *s = current();
    if (!s)
        return NNP_OK;
    nnp_status st = NNP_OK;
    pthread_mutex_lock(&s->lock);
    if (s->writer && s->failed)
        st = nnp__fail(s->failed, "%s", s->failure);
    else if (s->writer)
        st = nnp_writer_set_meta(s->writer, key, value);
    pthread_mutex_unlock(&s->lock);
    done();
    return st;
}
