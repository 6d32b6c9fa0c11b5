/*
 * common.h - the foundation every layer builds on: error reporting, checked arithmetic, a
 * growable string, a string index, file mapping and the thread pool. Includes nothing of
 * nnparity's but the public header.
 */
#ifndef NNP_COMMON_H
#define NNP_COMMON_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>

#include "nnparity.h"

#if defined(__GNUC__)
#define NNP_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define NNP_PRINTF(a, b)
#endif

/* ---- errors (util.c) ---- */

/* Keep a message for nnp_last_error() and return `status`, so readers can write
 * `return nnp__fail(NNP_ERR_FORMAT, "%s: byte %llu: ... (Rule)", path, off);` */
nnp_status nnp__fail(nnp_status status, const char *fmt, ...) NNP_PRINTF(2, 3);
/* The out-of-memory failure, with a fixed message that needs no allocation. */
nnp_status nnp__nomem(void);

/* Options a caller passed, which start with their own size (nnparity.h): `dst` (dst_size bytes)
 * holds the defaults; the caller's bytes are copied over them, as many as both know, and
 * dst's size set to its own. NULL options keep the defaults; a size too small to hold even
 * itself (options never initialized) is NNP_ERR_ARG naming `fn`. */
nnp_status nnp__options_take(const char *fn, const void *given, void *dst, size_t dst_size);

/* ---- checked arithmetic (util.c) ---- */

/* *out = a * b, or false on overflow. */
static inline bool nnp__mul_u64(uint64_t a, uint64_t b, uint64_t *out)
{
    return !__builtin_mul_overflow(a, b, out);
}
static inline bool nnp__add_u64(uint64_t a, uint64_t b, uint64_t *out)
{
    return !__builtin_add_overflow(a, b, out);
}

/* Make room for `need` elements of `elem` bytes in *arr (capacity *cap, doubled as needed);
 * false when memory runs out (*arr is then unchanged). */
bool nnp__grow(void **arr, size_t *cap, size_t need, size_t elem);

/* A 64-bit mixer (splitmix64's finalizer) and a combiner of hashes, for keys built from parts. */
static inline uint64_t nnp__mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
}
static inline uint64_t nnp__hash_combine(uint64_t h, uint64_t v)
{
    return nnp__mix64(h ^ (v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2)));
}

/* FNV-1a of a NUL-terminated string, for the name indexes. */
uint64_t nnp__hash_str(const char *s);

/* The first of n elements of `stride` bytes, sorted by a uint64_t key at their start, whose key
 * is not below `key` (n when none). */
size_t nnp__first_key_from(const void *base, size_t n, size_t stride, uint64_t key);

/* An index of strings kept elsewhere (record names, metadata keys): open addressing over slots
 * that hold 1 + a string's number, the strings found through key(ctx, number). A capture or a
 * header may hold millions of names, and a search per name would make reading it quadratic. */
typedef struct nnp_strindex {
    uint32_t *slots;
    size_t nslots; /* a power of two; 0 before the first reserve */
    const char *(*key)(const void *ctx, size_t i);
    const void *ctx;
} nnp_strindex;
/* Room for one more key when n are in (keys 0..n-1 re-placed when the slots grow); false when
 * memory runs out. At most UINT32_MAX - 1 keys. */
bool nnp__strindex_reserve(nnp_strindex *x, size_t n);
/* Room for `total` keys when n are in, so that adding the rest re-places nothing. */
bool nnp__strindex_room(nnp_strindex *x, size_t n, size_t total);
/* Keys 0..n-1 placed anew (after the strings were reordered), with room for one more. */
bool nnp__strindex_rebuild(nnp_strindex *x, size_t n);
/* The slot holding `key`, or the empty slot where it would go (after a reserve). */
size_t nnp__strindex_slot(const nnp_strindex *x, const char *key);
/* The number of `key`, or -1. */
int64_t nnp__strindex_find(const nnp_strindex *x, const char *key);
void nnp__strindex_free(nnp_strindex *x);

/* "[2, 3, 4]" into buf (cut short when it does not fit), for messages. */
void nnp__format_shape(char *buf, size_t n, uint32_t ndim, const uint64_t *shape);

/* Product of shape[0..ndim) into *nelem, or false on overflow. */
bool nnp__shape_nelem(uint32_t ndim, const uint64_t *shape, uint64_t *nelem);

/* Little-endian loads from unaligned bytes. */
uint16_t nnp__le16(const unsigned char *p);
uint32_t nnp__le32(const unsigned char *p);
uint64_t nnp__le64(const unsigned char *p);

/* Whether s[0..n) is valid UTF-8 (no overlongs, no surrogates, nothing past U+10FFFF); on failure
 * *bad is the offset of the first byte of the bad sequence. */
bool nnp__utf8_valid(const unsigned char *s, size_t n, size_t *bad);

/* ---- a growable string (util.c) ---- */

typedef struct nnp_sbuf {
    char *s;      /* NUL-terminated; NULL until the first append */
    size_t len, cap;
    bool failed;  /* an allocation failed: later appends do nothing */
} nnp_sbuf;

/* Room for n more bytes and the NUL; false (and `failed` set) when memory runs out. */
bool nnp__sbuf_room(nnp_sbuf *b, size_t n);
void nnp__sbuf_put(nnp_sbuf *b, const char *s, size_t n);
void nnp__sbuf_puts(nnp_sbuf *b, const char *s);
void nnp__sbuf_printf(nnp_sbuf *b, const char *fmt, ...) NNP_PRINTF(2, 3);
/* Append v in decimal: what a writer's every record and header entry holds several of, where a
 * printf costs as much as the rest of the line. */
void nnp__sbuf_u64(nnp_sbuf *b, uint64_t v);
/* Append s as a JSON string literal, quotes included (s must be valid UTF-8). */
void nnp__sbuf_json_string(nnp_sbuf *b, const char *s);
void nnp__sbuf_free(nnp_sbuf *b);
/* Append the whole of a regular file of at most `max` bytes to b; an unreadable file, one that
 * is not a regular file (a FIFO, a device, a directory) or a larger one is NNP_ERR_IO naming it
 * and `what` it was read as ("rules file"). */
nnp_status nnp__sbuf_read_file(nnp_sbuf *b, const char *path, uint64_t max, const char *what);

/* Caps on the files read whole: each is far above what a real one holds (a journal line per
 * record of a capture, an index line per tensor), and keeps a wrong file from taking all memory. */
#define NNP_MAX_JOURNAL_BYTES (1ull << 30)
#define NNP_MAX_INDEX_BYTES (256ull << 20)
#define NNP_MAX_RULES_BYTES (16ull << 20)

/* Open `path` for reading only if it is a regular file: the open does not wait on a FIFO (it is
 * made non-blocking, then blocking again once fstat has shown a regular file), and a FIFO, a
 * device or a directory is NNP_ERR_IO "not a regular file" naming it. *st gets its fstat. */
nnp_status nnp__open_regular(const char *path, int *fd, struct stat *st);

/* ---- file mapping (util.c) ---- */

typedef struct nnp_map {
    const unsigned char *base; /* NULL for an empty file */
    uint64_t size;
} nnp_map;

/* Map a whole regular file read-only. A directory, a FIFO, a device, a missing file or an
 * unreadable one is an NNP_ERR_IO naming the path and the reason. */
nnp_status nnp__map_file(const char *path, nnp_map *out);
void nnp__unmap(nnp_map *m);

/* ---- threads (parallel.c) ---- */

/* `requested` if positive (at most 256), else the number of online CPUs. */
int nnp__thread_count(int requested);
/* Run fn(ctx, t) for every t in [0, ntasks) on up to `threads` threads (the caller's included).
 * Tasks are independent; each writes its result by task index. */
nnp_status nnp__parallel_for(size_t ntasks, int threads, void (*fn)(void *ctx, size_t task),
                             void *ctx);
/* The first failure among such tasks (the lowest task number, so that which one is said does
 * not depend on the threads), with its message: messages are per thread, and the caller's
 * thread must say it. _note records task `task`'s status `st` with this thread's message;
 * _say returns the first one noted (NNP_OK: none) with its message set on this thread. */
typedef struct nnp__first_failure {
    pthread_mutex_t lock;
    size_t task; /* SIZE_MAX: none */
    nnp_status status;
    char message[1024];
} nnp__first_failure;
#define NNP__FIRST_FAILURE_INIT {PTHREAD_MUTEX_INITIALIZER, SIZE_MAX, NNP_OK, ""}
void nnp__first_failure_note(nnp__first_failure *f, size_t task, nnp_status st);
nnp_status nnp__first_failure_say(const nnp__first_failure *f);

#endif /* NNP_COMMON_H */
