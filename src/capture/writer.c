/*
 * safetensors_write.c - the streaming safetensors writer.
 *
 * safetensors puts its header before the data, but a capture learns its tensors one at a time.
 * The writer therefore keeps room for the header at the start of "<path>.partial", streams each
 * tensor's bytes after that room as it arrives, and on close writes the header into the room,
 * padded with spaces (JSON whitespace) to exactly fill it. Only when the header outgrows the room
 * is the data copied once, in the kernel, behind a header of the right size. The finished file is
 * then renamed to <path>, so <path> never holds a half-written dump.
 *
 * Until then the room holds a placeholder header that names "<path>.journal", to which each
 * record appends one JSON line once its data is on disk. A process killed mid-capture thus leaves
 * a partial dump that nnparity reads as it is (formats/journal.c), and that nnp_recover finishes
 * by resuming the writer from the journal.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "capture/capture.h"
#include "dump/provenance.h"

typedef struct w_rec {
    char *name, *module, *role, *module_type;
    uint64_t call;
    nnp_dtype dtype;
    uint32_t ndim;
    uint64_t *shape;
    uint64_t begin, end;
    int64_t same_as; /* the earlier record whose stored tensor this one is (no bytes of its
                      * own), or -1 */
    bool sketched; /* false for a record resumed from a journal: its data is not at hand */
} w_rec;

struct nnp_writer {
    char *path, *tmp_path, *journal_path;
    int fd, jfd;          /* the partial file and the journal (-1 when closed) */
    uint64_t room;     /* bytes kept for the header after the 8-byte length */
    uint64_t room_used; /* how much of the room may hold other bytes than spaces */
    uint64_t jlen;     /* the journal's length */
    uint64_t data_len; /* tensor bytes written so far */
    w_rec *recs;
    size_t nrecs, caprecs;
    /* The stored records' fingerprints as the header stores them (NNP_SKETCH_ENTRY_CHARS each,
     * in adding order, one a record with bytes of its own), one after the other in blocks of
     * TEXT_BLOCK: the header's value is then written from here, not copied into it (for 10^5
     * records, 25 MB). Blocks, not one array: the helper fills entries while more records
     * come, and an entry must not move under it. */
    char **texts;
    size_t ntexts, nblocks, capblocks;
    nnp_strindex names; /* the records by name */
    char **meta;       /* key, value, key, value, ... */
    size_t nmeta, capmeta;
    bool sketch;       /* records are sketched as they are added (NNPARITY_SKETCH=0: not) */
    nnp_sketcher *sketcher; /* the helper that sketches them, started with the first record */
    bool sketcher_tried;
    uint64_t added_at; /* when the last record was added (nnp__monotonic_ns) */
    uint64_t size_limit; /* RLIMIT_FSIZE as last read (UINT64_MAX: none) */
    nnp_status failed; /* a write failed: the partial file is kept, nothing more is added */
    char failure[512];
};

/* How the writer's helper sketches a record (sketch_job.c). Beside its write, from the caller's
 * buffer: a record of at least BESIDE_MIN_BYTES, whose sketch (a few hundred microseconds) the
 * write hides, and a record added back to back with the one before (less than BACK_TO_BACK_NS
 * after it returned: the caller does nothing between them, as a loop of taps, and the helper is
 * awake). Else behind the writer, read back from the file while the caller computes, in batches:
 * a forward pass records a layer's output every few tens of microseconds, and waking the helper
 * for each would cost more than sketching it. bench/README.md has the figures. */
#define BESIDE_MIN_BYTES (1u << 20)
#define BACK_TO_BACK_NS 5000u
/* Fingerprint entries a block of the writer's texts (256 KiB). */
#define TEXT_BLOCK 1024

static const char *name_at(const void *w, size_t i)
{
    return ((const nnp_writer *)w)->recs[i].name;
}

/* Where the fingerprint entry of stored record number i (in adding order) goes. */
static char *text_at(const nnp_writer *w, size_t i)
{
    return w->texts[i / TEXT_BLOCK] + (i % TEXT_BLOCK) * NNP_SKETCH_ENTRY_CHARS;
}

static uint64_t size_limit_now(void)
{
    struct rlimit r;
    return getrlimit(RLIMIT_FSIZE, &r) != 0 || r.rlim_cur == RLIM_INFINITY ? UINT64_MAX
                                                                           : (uint64_t)r.rlim_cur;
}

/* How many of n bytes may be written at offset off. A write that starts at or past the
 * RLIMIT_FSIZE limit raises SIGXFSZ, whose default action kills the process; a host running
 * under such a limit (a batch scheduler's ulimit -f) would lose its run mid-capture. Stopping at
 * the limit gives the EFBIG error instead, which is handled like a full disk. The limit is read
 * when the writer starts and again when a write would reach it, which honours a limit raised
 * since (one lowered since is not seen): reading it for every write costs a system call a
 * record, as much as a small record's write. */
static size_t under_size_limit(nnp_writer *w, uint64_t off, size_t n)
{
    if (w->size_limit == UINT64_MAX || (off < w->size_limit && w->size_limit - off >= n))
        return n;
    uint64_t lim = w->size_limit = size_limit_now();
    return off >= lim ? 0 : lim - off < n ? (size_t)(lim - off) : n;
}

static nnp_status write_all(nnp_writer *w, int fd, const void *buf, uint64_t n, uint64_t off)
{
    const unsigned char *p = buf;
    while (n) {
        size_t chunk = under_size_limit(w, off, n > (1u << 30) ? (1u << 30) : (size_t)n);
        errno = EFBIG;
        ssize_t k = chunk ? pwrite(fd, p, chunk, (off_t)off) : -1;
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return nnp__fail(NNP_ERR_IO, "%s: cannot write at byte %llu: %s", w->tmp_path,
                             (unsigned long long)off, k < 0 ? strerror(errno) : "no progress");
        p += k;
        n -= (uint64_t)k;
        off += (uint64_t)k;
    }
    return NNP_OK;
}

static void free_rec(w_rec *r)
{
    free(r->name);
    free(r->module);
    free(r->role);
    free(r->module_type);
    free(r->shape);
}

static void writer_free(nnp_writer *w)
{
    nnp__sketcher_stop(w->sketcher);
    for (size_t i = 0; i < w->nrecs; i++)
        free_rec(&w->recs[i]);
    for (size_t i = 0; i < w->nmeta * 2; i++)
        free(w->meta[i]);
    free(w->recs);
    for (size_t i = 0; i < w->nblocks; i++)
        free(w->texts[i]);
    free(w->texts);
    nnp__strindex_free(&w->names);
    free(w->meta);
    free(w->path);
    free(w->tmp_path);
    free(w->journal_path);
    free(w);
}

static char *with_suffix(const char *path, const char *suffix)
{
    size_t n = strlen(path), m = strlen(suffix);
    char *p = malloc(n + m + 1);
    if (p) {
        memcpy(p, path, n);
        memcpy(p + n, suffix, m + 1);
    }
    return p;
}

/* A writer for final path `path`, with no files opened yet. */
static nnp_status writer_new(const char *path, nnp_writer **out)
{
    nnp_writer *w = calloc(1, sizeof *w);
    if (!w)
        return nnp__nomem();
    w->fd = w->jfd = -1;
    w->size_limit = size_limit_now();
    /* the fingerprints' cost can be left out of a capture (docs/sketch.md); readers then
     * compute them from the data */
    const char *env = getenv("NNPARITY_SKETCH");
    w->sketch = !env || strcmp(env, "0") != 0;
    w->path = strdup(path);
    w->tmp_path = with_suffix(path, ".partial");
    w->journal_path = with_suffix(path, ".journal");
    w->names = (nnp_strindex){.key = name_at, .ctx = w};
    if (!w->path || !w->tmp_path || !w->journal_path) {
        writer_free(w);
        return nnp__nomem();
    }
    *out = w;
    return NNP_OK;
}

static nnp_status journal_append(nnp_writer *w, nnp_sbuf *line)
{
    if (line->failed)
        return nnp__nomem();
    const char *p = line->s;
    size_t n = line->len;
    while (n) {
        size_t chunk = under_size_limit(w, w->jlen, n);
        errno = EFBIG;
        ssize_t k = chunk ? write(w->jfd, p, chunk) : -1;
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return nnp__fail(NNP_ERR_IO, "%s: cannot write: %s", w->journal_path,
                             k < 0 ? strerror(errno) : "no progress");
        p += k;
        n -= (size_t)k;
        w->jlen += (uint64_t)k;
    }
    return NNP_OK;
}

/* The header JSON, unpadded, in three parts written one after the other: `head`, then the
 * fingerprints' text straight from the writer's array (none when a record has none: a resumed
 * capture's are not stored, and readers compute them from the data), then `tail`. */
typedef struct header_text {
    nnp_sbuf head, tail;
    char *const *texts; /* the writer's blocks */
    size_t ntexts;
    size_t len; /* of the three */
} header_text;

static nnp_status put_header(nnp_writer *w, int fd, const header_text *t, uint64_t room,
                             uint64_t used);

/* The header a partial file carries until close: it names the journal that lists its records. */
static nnp_status write_placeholder(nnp_writer *w)
{
    const char *base = strrchr(w->journal_path, '/');
    base = base ? base + 1 : w->journal_path;
    nnp_sbuf h = {0}, j = {0};
    nnp__sbuf_puts(&h, "{\"__metadata__\":{\"" NNP_META_FORMAT_KEY "\":\"" NNP_META_FORMAT_VALUE
                       "\",\"" NNP_META_PARTIAL_KEY "\":");
    nnp__sbuf_json_string(&h, base);
    nnp__sbuf_puts(&h, "}}");
    if (h.failed) {
        nnp__sbuf_free(&h);
        return nnp__nomem();
    }
    if (h.len > w->room) /* a very long file name */
        w->room = (h.len + 7) / 8 * 8;
    nnp__sbuf_printf(&j, "{\"nnparity.journal\":1,\"room\":%llu}\n", (unsigned long long)w->room);
    header_text t = {.head = h, .len = h.len};
    nnp_status st = put_header(w, w->fd, &t, w->room, w->room);
    if (!st) {
        w->room_used = h.len;
        st = journal_append(w, &j);
    }
    nnp__sbuf_free(&h);
    nnp__sbuf_free(&j);
    return st;
}

/* What a path that is not a regular file is, for a message. */
static const char *node_kind(mode_t m)
{
    return S_ISDIR(m) ? "a directory" : S_ISFIFO(m) ? "a FIFO" : S_ISCHR(m) ? "a character device"
         : S_ISBLK(m) ? "a block device" : S_ISSOCK(m) ? "a socket" : "a symbolic link";
}

/* The finished dump is renamed over `path`: only over a regular file or nothing (through a
 * symbolic link, the link is what is replaced, and only when it leads to a regular file or
 * nowhere). A rename over a FIFO or a device would replace the node: /dev/null as a capture
 * path must not take the system's device away. */
static nnp_status check_final(const char *path)
{
    struct stat sb;
    if (lstat(path, &sb) != 0)
        return NNP_OK;
    if (S_ISLNK(sb.st_mode) && stat(path, &sb) != 0)
        return NNP_OK;
    if (!S_ISREG(sb.st_mode))
        return nnp__fail(NNP_ERR_IO, "%s: not a regular file (%s); a dump is written to a "
                         "regular file and renamed over it: not replaced", path,
                         node_kind(sb.st_mode));
    return NNP_OK;
}

#define ONE_WRITER "one writer per capture path"

/* One writer per capture path: the partial file carries a lock for as long as a writer has it
 * open, released by the kernel when that process ends however it ends. The lock that excludes is
 * an open-file-description lock on byte 0: two writers in one process exclude each other too,
 * and the lock survives the process closing some other descriptor of the file (which drops a
 * classic POSIX lock). A classic lock on byte 1 only names the holder's process id to whoever
 * is refused; it is best effort. On a file system without such locks the writer goes on
 * unlocked, as before. */
static nnp_status lock_partial(const char *path, int fd, const char *doing)
{
    struct flock ofd = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 1};
    if (fcntl(fd, F_OFD_SETLK, &ofd) == 0) {
        struct flock mine = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 1, .l_len = 1};
        (void)fcntl(fd, F_SETLK, &mine);
        return NNP_OK;
    }
    if (errno != EAGAIN && errno != EACCES)
        return NNP_OK;
    struct flock who = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 1, .l_len = 1};
    if (fcntl(fd, F_GETLK, &who) == 0 && who.l_type != F_UNLCK && who.l_pid > 0)
        return nnp__fail(NNP_ERR_IO, "%s: a capture by process %ld is writing it: %s", path,
                         (long)who.l_pid, doing);
    return nnp__fail(NNP_ERR_IO, "%s: another capture (in this process or one whose id is not "
                     "known) is writing it: %s", path, doing);
}

/* Open one of the writer's own files (the partial, the journal) empty for writing. It is
 * created with O_EXCL and O_NOFOLLOW; one left by an earlier capture is reused only if it is a
 * plain regular file with no other name: a symbolic link planted there is never followed (its
 * target would be truncated), and a FIFO or a device is never opened for writing. */
static nnp_status open_own(const char *path, int flags, bool lock, int *out)
{
    flags |= O_CLOEXEC | O_NOFOLLOW;
    int fd = open(path, flags | O_CREAT | O_EXCL, 0644);
    nnp_status st;
    if (fd >= 0) {
        if (lock && (st = lock_partial(path, fd, ONE_WRITER))) {
            close(fd); /* another writer took the new file first: it is that writer's now */
            return st;
        }
        *out = fd;
        return NNP_OK;
    }
    if (errno != EEXIST)
        return nnp__fail(NNP_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    struct stat sb;
    if (lstat(path, &sb) != 0)
        return nnp__fail(NNP_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    if (!S_ISREG(sb.st_mode))
        return nnp__fail(NNP_ERR_IO, "%s: exists and is %s, not a file an earlier capture left: "
                         "not replaced (remove it)", path, node_kind(sb.st_mode));
    /* O_NONBLOCK: should a FIFO take the name after lstat, the open does not wait on it */
    fd = open(path, flags | O_NONBLOCK);
    if (fd < 0)
        return nnp__fail(NNP_ERR_IO, "%s: cannot open for writing: %s", path, strerror(errno));
    const char *why = NULL;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode))
        why = "it is no longer a regular file";
    else if (sb.st_nlink != 1)
        why = "it has other names (hard links) whose content a capture would overwrite";
    else if (lock && (st = lock_partial(path, fd, ONE_WRITER))) {
        close(fd); /* a live capture's file: not truncated */
        return st;
    } else if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) != 0 || ftruncate(fd, 0) != 0)
        why = strerror(errno);
    if (why) {
        close(fd);
        return nnp__fail(NNP_ERR_IO, "%s: not replaced: %s", path, why);
    }
    *out = fd;
    return NNP_OK;
}

nnp_status nnp_writer_open(const char *path, size_t expected_records, nnp_writer **out)
{
    if (!out || !path || !*path)
        return nnp__fail(NNP_ERR_ARG, "nnp_writer_open: no path");
    *out = NULL;
    nnp_writer *w;
    nnp_status st = writer_new(path, &w);
    if (st)
        return st;
    /* About 300 header bytes a record (entry plus provenance) and 256 for its fingerprint;
     * 64 KiB when the count is unknown; never past safetensors' header limit. 8 + room is a
     * multiple of 8 so the data starts aligned. */
    uint64_t room = 65536, limit = 100000000u / 8 * 8, per = 320 + 256;
    if (expected_records)
        room = expected_records > (limit - 4096) / per ? limit
                                                       : 4096 + (uint64_t)expected_records * per;
    w->room = (room + 7) / 8 * 8;
    if ((st = check_final(path)) || (st = open_own(w->tmp_path, O_RDWR, true, &w->fd))) {
        writer_free(w);
        return st;
    }
    st = open_own(w->journal_path, O_WRONLY | O_APPEND, false, &w->jfd);
    if (!st)
        st = write_placeholder(w);
    if (st) {
        nnp_writer_abort(w);
        return st;
    }
    *out = w;
    return NNP_OK;
}

nnp_status nnp_writer_set_meta(nnp_writer *w, const char *key, const char *value)
{
    if (!w || !key || !value)
        return nnp__fail(NNP_ERR_ARG, "nnp_writer_set_meta: missing key or value");
    if (strncmp(key, "nnparity.", 9) == 0)
        return nnp__fail(NNP_ERR_ARG, "%s: metadata key '%s' is reserved for nnparity", w->path,
                         key);
    return nnp__writer_put_meta(w, key, value);
}

nnp_status nnp__writer_put_meta(nnp_writer *w, const char *key, const char *value)
{
    if (w->failed)
        return nnp__fail(w->failed, "%s: nothing more is written after an earlier failure: %s",
                         w->path, w->failure);
    size_t bad;
    if (!nnp__utf8_valid((const unsigned char *)key, strlen(key), &bad) ||
        !nnp__utf8_valid((const unsigned char *)value, strlen(value), &bad))
        return nnp__fail(NNP_ERR_ARG, "%s: metadata '%s' is not valid UTF-8", w->path, key);
    nnp_sbuf line = {0};
    nnp__sbuf_puts(&line, "{\"meta\":[");
    nnp__sbuf_json_string(&line, key);
    nnp__sbuf_puts(&line, ",");
    nnp__sbuf_json_string(&line, value);
    nnp__sbuf_puts(&line, "]}\n");
    nnp_status st = w->jfd >= 0 ? journal_append(w, &line) : NNP_OK;
    nnp__sbuf_free(&line);
    if (st)
        return st;
    for (size_t i = 0; i < w->nmeta; i++)
        if (strcmp(w->meta[2 * i], key) == 0) {
            char *v = strdup(value);
            if (!v)
                return nnp__nomem();
            free(w->meta[2 * i + 1]);
            w->meta[2 * i + 1] = v;
            return NNP_OK;
        }
    if (w->nmeta == w->capmeta) {
        size_t cap = w->capmeta ? w->capmeta * 2 : 8;
        char **m = realloc(w->meta, cap * 2 * sizeof *m);
        if (!m)
            return nnp__nomem();
        w->meta = m;
        w->capmeta = cap;
    }
    char *k = strdup(key), *v = strdup(value);
    if (!k || !v) {
        free(k);
        free(v);
        return nnp__nomem();
    }
    w->meta[2 * w->nmeta] = k;
    w->meta[2 * w->nmeta + 1] = v;
    w->nmeta++;
    return NNP_OK;
}

static char *dup_or_empty(const char *s)
{
    return strdup(s ? s : "");
}

static char *default_name(const nnp_record_desc *desc)
{
    nnp_sbuf b = {0};
    nnp__record_name(&b, desc->module, desc->role, desc->call);
    if (b.failed) {
        nnp__sbuf_free(&b);
        return NULL;
    }
    return b.s;
}

/* Room for one more record: called before its journal line is written, so that a record
 * journalled is always kept (a journal whose lines repeat a seq cannot be read back). */
static bool room_for_rec(nnp_writer *w)
{
    if (!nnp__strindex_reserve(&w->names, w->nrecs) ||
        !nnp__grow((void **)&w->recs, &w->caprecs, w->nrecs + 1, sizeof *w->recs))
        return false;
    if (!w->sketch || w->ntexts < w->nblocks * TEXT_BLOCK)
        return true;
    if (!nnp__grow((void **)&w->texts, &w->capblocks, w->nblocks + 1, sizeof *w->texts))
        return false;
    w->texts[w->nblocks] = malloc((size_t)TEXT_BLOCK * NNP_SKETCH_ENTRY_CHARS);
    return w->texts[w->nblocks] && ++w->nblocks;
}

/* Take ownership of r as the next record (its name known to be new); r is freed on failure,
 * which room_for_rec() rules out. */
static nnp_status push_rec(nnp_writer *w, w_rec *r)
{
    if (!room_for_rec(w)) {
        free_rec(r);
        return nnp__nomem();
    }
    w->recs[w->nrecs] = *r;
    w->names.slots[nnp__strindex_slot(&w->names, r->name)] = (uint32_t)(++w->nrecs);
    w->ntexts += w->sketch && r->same_as < 0; /* its slot, filled by its sketch or never read */
    return NNP_OK;
}

/* A stored record's safetensors entry inside its braces, "dtype":..,"shape":[..],
 * "data_offsets":[..]: the header's entry, and the journal line's tail. */
static void put_entry_fields(nnp_sbuf *b, const w_rec *r)
{
    nnp__sbuf_puts(b, "\"dtype\":\"");
    nnp__sbuf_puts(b, nnp_dtype_name(r->dtype));
    nnp__sbuf_puts(b, "\",\"shape\":[");
    for (uint32_t k = 0; k < r->ndim; k++) {
        if (k)
            nnp__sbuf_puts(b, ",");
        nnp__sbuf_u64(b, r->shape[k]);
    }
    nnp__sbuf_puts(b, "],\"data_offsets\":[");
    nnp__sbuf_u64(b, r->begin);
    nnp__sbuf_puts(b, ",");
    nnp__sbuf_u64(b, r->end);
    nnp__sbuf_puts(b, "]");
}

/* One journal line: the record's provenance and its safetensors entry. It is appended only once
 * the data is written, so every journalled record is complete on disk. */
static nnp_status journal_record(nnp_writer *w, const w_rec *r)
{
    nnp_sbuf line = {0};
    nnp__provenance_entry(&line, true, r->name, r->module, r->role, r->module_type, r->call,
                          w->nrecs, r->same_as >= 0 ? w->recs[r->same_as].name : NULL);
    if (r->same_as >= 0) {
        nnp__sbuf_puts(&line, "\n");
    } else {
        if (!line.failed)
            line.len--; /* reopen the object the entry closed */
        nnp__sbuf_puts(&line, ",");
        put_entry_fields(&line, r);
        nnp__sbuf_puts(&line, "}\n");
    }
    nnp_status st = journal_append(w, &line);
    nnp__sbuf_free(&line);
    return st;
}

static bool utf8_ok(const char *s)
{
    size_t bad;
    return !s || nnp__utf8_valid((const unsigned char *)s, strlen(s), &bad);
}

/* Check desc (data: the bytes it describes; NULL with has_data unset, for a record with no bytes
 * of its own) and make its record in r, not yet added: names copied, shape and call set. */
static nnp_status rec_from_desc(nnp_writer *w, const nnp_record_desc *desc, const void *data,
                                bool has_data, uint64_t *nbytes, w_rec *r)
{
    if (!w || !desc)
        return nnp__fail(NNP_ERR_ARG, "nnp_writer_add: no writer or description");
    if (w->failed)
        return nnp__fail(w->failed, "%s: nothing more is written after an earlier failure: %s",
                         w->path, w->failure);
    if (nnp_dtype_size(desc->dtype) == 0)
        return nnp__fail(NNP_ERR_ARG, "%s: invalid dtype %d", w->path, (int)desc->dtype);
    if (desc->ndim && !desc->shape)
        return nnp__fail(NNP_ERR_ARG, "%s: %u dimensions but no shape", w->path, desc->ndim);
    if (!utf8_ok(desc->name) || !utf8_ok(desc->module) || !utf8_ok(desc->role) ||
        !utf8_ok(desc->module_type))
        return nnp__fail(NNP_ERR_ARG, "%s: a name is not valid UTF-8", w->path);
    uint64_t nelem, end;
    if (!nnp__shape_nelem(desc->ndim, desc->shape, &nelem) ||
        !nnp__mul_u64(nelem, nnp_dtype_size(desc->dtype), nbytes) ||
        !nnp__add_u64(w->data_len, *nbytes, &end))
        return nnp__fail(NNP_ERR_ARG, "%s: shape's size overflows 64 bits", w->path);
    if (has_data && *nbytes && !data)
        return nnp__fail(NNP_ERR_ARG, "%s: no data for a tensor of %llu bytes", w->path,
                         (unsigned long long)*nbytes);

    memset(r, 0, sizeof *r);
    r->name = desc->name && *desc->name ? strdup(desc->name) : default_name(desc);
    r->module = dup_or_empty(desc->module);
    r->role = dup_or_empty(desc->role);
    r->module_type = dup_or_empty(desc->module_type);
    r->shape = malloc((desc->ndim ? desc->ndim : 1) * sizeof *r->shape);
    if (!r->name || !r->module || !r->role || !r->module_type || !r->shape) {
        free_rec(r);
        return nnp__nomem();
    }
    if (strcmp(r->name, "__metadata__") == 0) {
        free_rec(r);
        return nnp__fail(NNP_ERR_ARG, "%s: '__metadata__' cannot name a tensor", w->path);
    }
    if (nnp__strindex_find(&w->names, r->name) >= 0) {
        nnp_status st = nnp__fail(NNP_ERR_ARG, "%s: tensor '%s' added twice", w->path, r->name);
        free_rec(r);
        return st;
    }
    if (desc->ndim)
        memcpy(r->shape, desc->shape, desc->ndim * sizeof *r->shape);
    r->call = desc->call;
    r->dtype = desc->dtype;
    r->ndim = desc->ndim;
    r->same_as = -1;
    return NNP_OK;
}

/* Writing r's data or its journal line failed: stop here. A torn journal line must stay the
 * journal's last, and what was written before stays recoverable. */
static nnp_status stop_writing(nnp_writer *w, nnp_status st, w_rec *r)
{
    w->failed = st;
    snprintf(w->failure, sizeof w->failure, "%s", nnp_last_error());
    free_rec(r);
    return st;
}

/* Fingerprint stored record r, whose bytes (`data`, the caller's) were written at `at` in the
 * partial file, into its entry `text`, behind the writer: from the file by the helper, or here
 * from `data` when the helper cannot take it. */
static void sketch_behind(nnp_writer *w, const w_rec *r, uint64_t at, const void *data,
                          char *text)
{
    nnp_sketch_task t = {.offset = at, .nbytes = r->end - r->begin, .shape = r->shape,
                         .ndim = r->ndim, .dtype = r->dtype, .text = text};
    if (!w->sketcher || !nnp__sketcher_post(w->sketcher, &t))
        nnp__sketch_text(r->dtype, r->ndim, r->shape, data, t.nbytes / nnp_dtype_size(r->dtype),
                         text);
}

/* Finish the fingerprints of every record when `wanted`, and stop the helper (whose reads must
 * end before the partial file closes): whether each is there to be stored. */
static bool finish_sketches(nnp_writer *w, bool wanted)
{
    bool ok = wanted && (!w->sketcher || nnp__sketcher_finish(w->sketcher));
    nnp__sketcher_stop(w->sketcher);
    w->sketcher = NULL;
    return ok;
}

nnp_status nnp_writer_add(nnp_writer *w, const nnp_record_desc *desc, const void *data)
{
    w_rec r;
    uint64_t nbytes;
    nnp_status st = rec_from_desc(w, desc, data, true, &nbytes, &r);
    if (st)
        return st;
    if (!room_for_rec(w)) {
        free_rec(&r);
        return nnp__nomem();
    }
    r.begin = w->data_len;
    r.end = w->data_len + nbytes;
    r.sketched = w->sketch;
    uint64_t at = 8 + w->room + w->data_len;
    char *text = w->sketch ? text_at(w, w->ntexts) : NULL;
    if (w->sketch && !w->sketcher_tried) {
        w->sketcher = nnp__sketcher_start(w->fd);
        w->sketcher_tried = true;
    }
    /* the whole tensor is at hand now, and never again without reading the file back */
    bool beside = w->sketch && (nbytes >= BESIDE_MIN_BYTES ||
                                nnp__monotonic_ns() - w->added_at < BACK_TO_BACK_NS);
    nnp_sketch_job job;
    if (beside)
        nnp__sketch_job_start(&job, w->sketcher, desc->dtype, desc->ndim, desc->shape, data,
                              nbytes / nnp_dtype_size(desc->dtype), text);
    st = write_all(w, w->fd, data, nbytes, at);
    if (!st)
        st = journal_record(w, &r);
    if (beside)
        nnp__sketch_job_finish(&job);
    if (st)
        return stop_writing(w, st, &r);
    if ((st = push_rec(w, &r)))
        return st;
    w->data_len = r.end;
    if (w->sketch && !beside)
        sketch_behind(w, &w->recs[w->nrecs - 1], at, data, text);
    if (w->sketch)
        w->added_at = nnp__monotonic_ns();
    return NNP_OK;
}

size_t nnp__writer_count(const nnp_writer *w)
{
    return w->nrecs;
}

nnp_status nnp__writer_add_same(nnp_writer *w, const nnp_record_desc *desc, size_t earlier)
{
    w_rec r;
    uint64_t nbytes;
    nnp_status st = rec_from_desc(w, desc, NULL, false, &nbytes, &r);
    if (st)
        return st;
    if (earlier >= w->nrecs) {
        st = nnp__fail(NNP_ERR_ARG, "%s: tensor '%s' is said to be the same as record %zu, but "
                       "%zu are written", w->path, r.name, earlier, w->nrecs);
        free_rec(&r);
        return st;
    }
    /* the record that stores the bytes, however many names came between */
    size_t src = w->recs[earlier].same_as >= 0 ? (size_t)w->recs[earlier].same_as : earlier;
    const w_rec *s = &w->recs[src];
    if (s->dtype != r.dtype || s->ndim != r.ndim ||
        (r.ndim && memcmp(s->shape, r.shape, r.ndim * sizeof *r.shape) != 0)) {
        st = nnp__fail(NNP_ERR_ARG, "%s: tensor '%s' is said to be the same as '%s', whose dtype "
                       "or shape differs", w->path, r.name, s->name);
        free_rec(&r);
        return st;
    }
    r.same_as = (int64_t)src;
    if (!room_for_rec(w)) {
        free_rec(&r);
        return nnp__nomem();
    }
    if ((st = journal_record(w, &r)))
        return stop_writing(w, st, &r);
    return push_rec(w, &r);
}

static void header_free(header_text *t)
{
    nnp__sbuf_free(&t->head);
    nnp__sbuf_free(&t->tail);
}

/* Whether every stored record has its fingerprint. */
static bool all_sketched(const nnp_writer *w)
{
    for (size_t i = 0; i < w->nrecs; i++)
        if (w->recs[i].same_as < 0 && !w->recs[i].sketched)
            return false;
    return w->ntexts > 0;
}

/* The header of the records so far; with their fingerprints when `sketches` is set and each has
 * one. False when out of memory. */
static bool build_header(nnp_writer *w, bool sketches, header_text *t)
{
    nnp_sbuf prov = {0};
    memset(t, 0, sizeof *t);
    bool same = false;
    nnp__sbuf_puts(&prov, "[");
    for (size_t i = 0; i < w->nrecs; i++) {
        w_rec *r = &w->recs[i];
        nnp__provenance_entry(&prov, i == 0, r->name, r->module, r->role, r->module_type, r->call,
                              i, r->same_as >= 0 ? w->recs[r->same_as].name : NULL);
        same = same || r->same_as >= 0;
    }
    nnp__sbuf_puts(&prov, "]");

    nnp_sbuf *h = &t->head;
    nnp__sbuf_puts(h, "{\"__metadata__\":{");
    for (size_t i = 0; i < w->nmeta; i++) {
        nnp__sbuf_json_string(h, w->meta[2 * i]);
        nnp__sbuf_puts(h, ":");
        nnp__sbuf_json_string(h, w->meta[2 * i + 1]);
        nnp__sbuf_puts(h, ",");
    }
    nnp__sbuf_puts(h, same ? "\"" NNP_META_FORMAT_KEY "\":\"" NNP_META_FORMAT_VALUE_SAME "\","
                           : "\"" NNP_META_FORMAT_KEY "\":\"" NNP_META_FORMAT_VALUE "\",");
    nnp__sbuf_puts(h, "\"" NNP_META_RECORDS_KEY "\":");
    nnp__sbuf_json_string(h, prov.failed ? "" : prov.s);
    nnp_sbuf *tail = &t->tail;
    if (sketches && all_sketched(w)) {
        /* base64 needs no JSON escaping */
        nnp__sbuf_puts(h, ",\"" NNP_META_SKETCHES_KEY "\":\"" NNP_SKETCH_VALUE_PREFIX);
        t->texts = w->texts;
        t->ntexts = w->ntexts;
        nnp__sbuf_puts(tail, "\"");
    }
    nnp__sbuf_puts(tail, "}");
    for (size_t i = 0; i < w->nrecs; i++) {
        w_rec *r = &w->recs[i];
        if (r->same_as >= 0)
            continue; /* listed in the records only: its tensor is stored once */
        nnp__sbuf_puts(tail, ",");
        nnp__sbuf_json_string(tail, r->name);
        nnp__sbuf_puts(tail, ":{");
        put_entry_fields(tail, r);
        nnp__sbuf_puts(tail, "}");
    }
    nnp__sbuf_puts(tail, "}");
    bool failed = prov.failed || h->failed || tail->failed;
    nnp__sbuf_free(&prov);
    if (failed) {
        header_free(t);
        return false;
    }
    t->len = h->len + t->ntexts * NNP_SKETCH_ENTRY_CHARS + tail->len;
    return true;
}

/* Write the 8-byte length and the header padded with spaces to `room` bytes at the start of fd,
 * of whose room only the first `used` bytes may hold anything but spaces: the rest is not written
 * again (a placeholder's room is mostly spaces, sized for every record a capture may make). */
static nnp_status put_header(nnp_writer *w, int fd, const header_text *t, uint64_t room,
                             uint64_t used)
{
    unsigned char prefix[8];
    for (int i = 0; i < 8; i++)
        prefix[i] = (unsigned char)(room >> (8 * i));
    uint64_t len = t->len, texts = t->ntexts * NNP_SKETCH_ENTRY_CHARS;
    nnp_status st = write_all(w, fd, prefix, 8, 0);
    if (!st)
        st = write_all(w, fd, t->head.s, t->head.len, 8);
    for (size_t b = 0, done = 0; !st && done < t->ntexts; b++) {
        size_t n = t->ntexts - done < TEXT_BLOCK ? t->ntexts - done : TEXT_BLOCK;
        st = write_all(w, fd, t->texts[b], n * NNP_SKETCH_ENTRY_CHARS,
                       8 + t->head.len + done * NNP_SKETCH_ENTRY_CHARS);
        done += n;
    }
    if (!st)
        st = write_all(w, fd, t->tail.s, t->tail.len, 8 + t->head.len + texts);
    if (st || used <= len)
        return st;
    enum { PAD = 65536 };
    char *spaces = malloc(PAD);
    if (!spaces)
        return nnp__nomem();
    memset(spaces, ' ', PAD);
    for (uint64_t at = len; !st && at < used; at += PAD)
        st = write_all(w, fd, spaces, used - at < PAD ? used - at : PAD, 8 + at);
    free(spaces);
    return st;
}

/* The header outgrew its room: build "<path>.partial2" with a header of the right size and the
 * data copied behind it (copy_file_range copies inside the kernel), then make it the partial. */
static nnp_status relocate(nnp_writer *w, const header_text *t, uint64_t room)
{
    size_t n = strlen(w->path);
    char *tmp2 = malloc(n + sizeof ".partial2");
    if (!tmp2)
        return nnp__nomem();
    memcpy(tmp2, w->path, n);
    memcpy(tmp2 + n, ".partial2", sizeof ".partial2");
    nnp_status st = NNP_OK;
    int in = open(w->tmp_path, O_RDONLY | O_CLOEXEC);
    int out = -1;
    if (in < 0) {
        st = nnp__fail(NNP_ERR_IO, "%s: cannot reopen to grow its header: %s", w->tmp_path,
                       strerror(errno));
        goto out;
    }
    if ((st = open_own(tmp2, O_WRONLY, false, &out))) {
        free(tmp2); /* not ours: nothing to remove */
        tmp2 = NULL;
        goto out;
    }
    if ((st = put_header(w, out, t, room, room)))
        goto out;
    off_t src = (off_t)(8 + w->room), dst = (off_t)(8 + room);
    uint64_t left = w->data_len;
    while (left) {
        size_t chunk = under_size_limit(w, (uint64_t)dst, left > (1u << 30) ? (1u << 30)
                                                                        : (size_t)left);
        errno = EFBIG;
        ssize_t k = chunk ? copy_file_range(in, &src, out, &dst, chunk, 0) : -1;
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            st = nnp__fail(NNP_ERR_IO, "%s: cannot copy data to grow the header: %s", tmp2,
                           k < 0 ? strerror(errno) : "unexpected end of file");
            goto out;
        }
        left -= (uint64_t)k;
    }
    if (close(out) != 0) {
        out = -1;
        st = nnp__fail(NNP_ERR_IO, "%s: cannot close: %s", tmp2, strerror(errno));
        goto out;
    }
    out = -1;
    if (rename(tmp2, w->tmp_path) != 0)
        st = nnp__fail(NNP_ERR_IO, "%s: cannot rename to %s: %s", tmp2, w->tmp_path,
                       strerror(errno));
out:
    if (in >= 0)
        close(in);
    if (out >= 0)
        close(out);
    if (st && tmp2)
        unlink(tmp2);
    free(tmp2);
    return st;
}

nnp_status nnp_writer_close(nnp_writer *w)
{
    if (!w)
        return nnp__fail(NNP_ERR_ARG, "nnp_writer_close: no writer");
    nnp_status st = w->failed ? nnp__fail(w->failed, "%s: a write failed: %s", w->path,
                                          w->failure)
                              : NNP_OK;
    bool sketched = finish_sketches(w, !st);
    header_text t = {0};
    bool built = !st && build_header(w, sketched, &t);
    if (built && t.len > 100000000u) {
        /* the fingerprints are what makes it too long: a dump without them is still whole,
         * and readers compute them from the data */
        header_free(&t);
        built = build_header(w, false, &t);
    }
    if (!st && !built)
        st = nnp__nomem();
    if (!st && t.len > 100000000u)
        st = nnp__fail(NNP_ERR_ARG, "%s: header of %zu bytes is over safetensors' 100,000,000 "
                       "byte limit (too many records)", w->path, t.len);
    /* A resumed writer's file may end in the torn bytes of a record that was never journalled. */
    if (!st && ftruncate(w->fd, (off_t)(8 + w->room + w->data_len)) != 0)
        st = nnp__fail(NNP_ERR_IO, "%s: cannot truncate: %s", w->tmp_path, strerror(errno));
    if (!st && t.len <= w->room) {
        st = put_header(w, w->fd, &t, w->room, w->room_used);
    } else if (!st) {
        st = relocate(w, &t, (t.len + 7) / 8 * 8);
    }
    if (built)
        header_free(&t);
    if (w->fd >= 0) {
        /* No fsync: the journal makes a dump safe against the process dying, and forcing every
         * capture to the platters would cost more than the capture (a dump is reproducible).
         * close() still reports a write-back error a file system defers to it. */
        if (close(w->fd) != 0 && !st)
            st = nnp__fail(NNP_ERR_IO, "%s: cannot close: %s", w->tmp_path, strerror(errno));
        w->fd = -1;
    }
    /* checked again: the path may have become a FIFO or a device since the writer opened */
    if (!st)
        st = check_final(w->path);
    if (!st && rename(w->tmp_path, w->path) != 0)
        st = nnp__fail(NNP_ERR_IO, "%s: cannot rename to %s: %s", w->tmp_path, w->path,
                       strerror(errno));
    if (w->jfd >= 0)
        close(w->jfd);
    w->jfd = -1;
    if (!st) {
        unlink(w->journal_path);
    } else {
        /* What was written is kept for `nnparity recover`, never presented as a finished dump. */
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", nnp_last_error());
        st = nnp__fail(st, "%s; the records written so far stay in %s", msg, w->tmp_path);
    }
    writer_free(w);
    return st;
}

void nnp_writer_abort(nnp_writer *w)
{
    if (!w)
        return;
    nnp__sketcher_stop(w->sketcher); /* before the file it reads closes */
    w->sketcher = NULL;
    /* only the files this writer opened: a name it refused belongs to someone else */
    if (w->fd >= 0) {
        close(w->fd);
        unlink(w->tmp_path);
    }
    if (w->jfd >= 0) {
        close(w->jfd);
        unlink(w->journal_path);
    }
    writer_free(w);
}

const char *nnp__writer_abandon(nnp_writer *w)
{
    static _Thread_local char kept[1024];
    kept[0] = 0;
    if (!w)
        return kept;
    nnp__sketcher_stop(w->sketcher); /* before the file it reads closes */
    w->sketcher = NULL;
    if (w->fd >= 0)
        close(w->fd);
    if (w->jfd >= 0)
        close(w->jfd);
    snprintf(kept, sizeof kept, "%s", w->tmp_path);
    writer_free(w);
    return kept;
}

/* Append a copy of dump record r (its data already in the partial file, or, with same_as, that
 * of the earlier record so named) to the writer's list. */
static nnp_status resume_record(nnp_writer *w, const nnp_record *r, const char *same_as)
{
    w_rec x = {.same_as = -1};
    if (same_as) {
        int64_t src = nnp__strindex_find(&w->names, same_as);
        if (src < 0) /* journal.c added it after its source, and resumes in that order */
            return nnp__fail(NNP_ERR_INTERNAL, "%s: '%s' is resumed before '%s'", w->tmp_path,
                             r->name, same_as);
        x.same_as = src;
    }
    x.name = strdup(r->name);
    x.module = strdup(r->module);
    x.role = strdup(r->role);
    x.module_type = strdup(r->module_type);
    x.shape = malloc((r->ndim ? r->ndim : 1) * sizeof *x.shape);
    if (!x.name || !x.module || !x.role || !x.module_type || !x.shape) {
        free_rec(&x);
        return nnp__nomem();
    }
    if (r->ndim)
        memcpy(x.shape, r->shape, r->ndim * sizeof *x.shape);
    x.ndim = r->ndim;
    x.dtype = r->dtype;
    x.call = r->call;
    /* journalled records are contiguous in execution order (journal.c checks) */
    x.begin = w->data_len;
    x.end = w->data_len + (same_as ? 0 : r->nbytes);
    nnp_status st = push_rec(w, &x);
    if (!st)
        w->data_len = x.end;
    return st;
}

/* Rebuild the writer's state from a partial dump, read through its journal whatever its header
 * holds (the placeholder, a header torn by a kill during close, or a complete one written just
 * before the kill), so that nnp_writer_close can finish it. */
static nnp_status writer_resume(const char *final_path, nnp_writer **out, size_t *nrecs)
{
    nnp_writer *w;
    nnp_status st = writer_new(final_path, &w);
    if (st)
        return st;
    const char *journal = strrchr(w->journal_path, '/');
    journal = journal ? journal + 1 : w->journal_path;
    nnp_dump *d = NULL;
    /* Locked before it is read: a capture still running is refused, not finished under it. */
    w->fd = open(w->tmp_path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    struct stat sb;
    if (w->fd >= 0 && (fstat(w->fd, &sb) != 0 || !S_ISREG(sb.st_mode))) {
        close(w->fd);
        w->fd = -1;
        errno = EINVAL;
    }
    if (w->fd < 0) {
        st = nnp__fail(NNP_ERR_IO, "%s: cannot open for writing: %s", w->tmp_path,
                       strerror(errno));
        goto fail;
    }
    if ((st = lock_partial(w->tmp_path, w->fd, "not recovered while it runs")) ||
        (st = nnp__dump_open_journal(w->tmp_path, journal, &d)))
        goto fail;
    for (size_t i = 0; i < nnp_dump_meta_count(d) && !st; i++) {
        const char *k, *v;
        nnp_dump_meta_at(d, i, &k, &v);
        if (strncmp(k, "nnparity.", 9) != 0)
            st = nnp_writer_set_meta(w, k, v);
    }
    size_t n;
    const nnp_rec *recs = nnp__dump_recs(d, &n);
    for (size_t i = 0; i < n && !st; i++)
        st = resume_record(w, &recs[i].pub, recs[i].same_as);
    if (st)
        goto fail;
    w->room = nnp__dump_header_room(d);
    w->room_used = w->room; /* a placeholder, or a header torn or written whole by a close */
    *nrecs = nnp_dump_count(d);
    nnp_dump_close(d);
    d = NULL;
    *out = w;
    return NNP_OK;
fail:
    nnp_dump_close(d);
    if (w->fd >= 0)
        close(w->fd);
    writer_free(w);
    return st;
}

nnp_status nnp_recover(const char *path, size_t *records)
{
    if (records)
        *records = 0;
    if (!path || !*path)
        return nnp__fail(NNP_ERR_ARG, "nnp_recover: no path");
    size_t n = strlen(path), k = strlen(".partial");
    char *final_path = n > k && strcmp(path + n - k, ".partial") == 0 ? strndup(path, n - k)
                                                                      : strdup(path);
    if (!final_path)
        return nnp__nomem();
    nnp_writer *w = NULL;
    size_t count = 0;
    nnp_status st = writer_resume(final_path, &w, &count);
    free(final_path);
    if (!st)
        st = nnp_writer_close(w);
    if (records && !st)
        *records = count;
    return st;
}
