/*
 * util.c - small shared pieces: the per-thread error message, little-endian loads, UTF-8
 * validation, shape arithmetic and read-only file mapping.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/common.h"

/* Long enough for a path, a tensor name and a rule; longer messages are cut, never overflowed. */
static _Thread_local char nnp_errbuf[1024];

const char *nnp_last_error(void)
{
    return nnp_errbuf;
}

nnp_status nnp__fail(nnp_status status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(nnp_errbuf, sizeof nnp_errbuf, fmt, ap);
    va_end(ap);
    /* A message is one line: names taken from files may hold newlines. */
    for (char *p = nnp_errbuf; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    return status;
}

nnp_status nnp__nomem(void)
{
    static const char msg[] = "out of memory";
    memcpy(nnp_errbuf, msg, sizeof msg);
    return NNP_ERR_NOMEM;
}

const char *nnp_status_name(nnp_status status)
{
    switch (status) {
    case NNP_OK: return "ok";
    case NNP_ERR_IO: return "I/O error";
    case NNP_ERR_FORMAT: return "format error";
    case NNP_ERR_UNSUPPORTED: return "unsupported";
    case NNP_ERR_ARG: return "bad argument";
    case NNP_ERR_NOT_FOUND: return "not found";
    case NNP_ERR_NOMEM: return "out of memory";
    case NNP_ERR_INTERNAL: return "internal error";
    }
    return "unknown status";
}

const char *nnp_version(void)
{
    return NNP_VERSION_STRING;
}

nnp_status nnp__options_take(const char *fn, const void *given, void *dst, size_t dst_size)
{
    if (given) {
        size_t size;
        memcpy(&size, given, sizeof size);
        if (size < sizeof size)
            return nnp__fail(NNP_ERR_ARG, "%s: the options' size is %zu: initialize them with "
                             "their _init function first", fn, size);
        memcpy(dst, given, size < dst_size ? size : dst_size);
    }
    memcpy(dst, &dst_size, sizeof dst_size);
    return NNP_OK;
}

int nnp_version_number(void)
{
    return NNP_VERSION_NUMBER;
}

void nnp_free(void *p)
{
    free(p);
}

bool nnp__grow(void **arr, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return true;
    /* from room for one: many arrays (a port record's mappings, say) never hold more */
    size_t ncap = *cap ? *cap : 1;
    while (ncap < need) {
        if (ncap > SIZE_MAX / 2 / elem)
            return false;
        ncap *= 2;
    }
    void *p = realloc(*arr, ncap * elem);
    if (!p)
        return false;
    *arr = p;
    *cap = ncap;
    return true;
}

size_t nnp__first_key_from(const void *base, size_t n, size_t stride, uint64_t key)
{
    size_t a = 0, b = n;
    while (a < b) {
        size_t m = a + (b - a) / 2;
        uint64_t k;
        memcpy(&k, (const unsigned char *)base + m * stride, sizeof k);
        if (k < key)
            a = m + 1;
        else
            b = m;
    }
    return a;
}

uint64_t nnp__hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

size_t nnp__strindex_slot(const nnp_strindex *x, const char *key)
{
    size_t mask = x->nslots - 1, i = (size_t)nnp__hash_str(key) & mask;
    while (x->slots[i] && strcmp(x->key(x->ctx, x->slots[i] - 1), key) != 0)
        i = (i + 1) & mask;
    return i;
}

int64_t nnp__strindex_find(const nnp_strindex *x, const char *key)
{
    if (!x->nslots)
        return -1;
    uint32_t s = x->slots[nnp__strindex_slot(x, key)];
    return s ? (int64_t)s - 1 : -1;
}

/* Slots for `room` keys (and one more), keys 0..n-1 placed in them. */
static bool strindex_resize(nnp_strindex *x, size_t n, size_t room)
{
    if (room >= UINT32_MAX - 1)
        return false;
    size_t cap = x->nslots ? x->nslots : 16;
    while ((room + 1) * 2 > cap)
        cap *= 2;
    uint32_t *slots = calloc(cap, sizeof *slots);
    if (!slots)
        return false;
    free(x->slots);
    x->slots = slots;
    x->nslots = cap;
    /* An index never holds a key twice, so each key takes the first free slot of its probe
     * sequence without a comparison: no other key's string is read. */
    size_t mask = cap - 1;
    for (size_t i = 0; i < n; i++) {
        size_t j = (size_t)nnp__hash_str(x->key(x->ctx, i)) & mask;
        while (slots[j])
            j = (j + 1) & mask;
        slots[j] = (uint32_t)(i + 1);
    }
    return true;
}

bool nnp__strindex_room(nnp_strindex *x, size_t n, size_t total)
{
    return (total + 1) * 2 <= x->nslots || strindex_resize(x, n, total);
}

bool nnp__strindex_reserve(nnp_strindex *x, size_t n)
{
    return nnp__strindex_room(x, n, n);
}

bool nnp__strindex_rebuild(nnp_strindex *x, size_t n)
{
    return strindex_resize(x, n, n);
}

void nnp__strindex_free(nnp_strindex *x)
{
    free(x->slots);
    x->slots = NULL;
    x->nslots = 0;
}

bool nnp__shape_nelem(uint32_t ndim, const uint64_t *shape, uint64_t *nelem)
{
    uint64_t n = 1;
    for (uint32_t i = 0; i < ndim; i++)
        if (!nnp__mul_u64(n, shape[i], &n))
            return false;
    *nelem = n;
    return true;
}

uint16_t nnp__le16(const unsigned char *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

uint32_t nnp__le32(const unsigned char *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

uint64_t nnp__le64(const unsigned char *p)
{
    return (uint64_t)nnp__le32(p) | ((uint64_t)nnp__le32(p + 4) << 32);
}

bool nnp__utf8_valid(const unsigned char *s, size_t n, size_t *bad)
{
    size_t i = 0;
    while (i < n) {
        /* headers are nearly all ASCII: skip 16 bytes at a time while no high bit is set (a
         * 32 MB header of 10^5 records took a tenth of its opening time byte by byte) */
        while (n - i >= 16) {
            uint64_t a, b;
            memcpy(&a, s + i, 8);
            memcpy(&b, s + i + 8, 8);
            if ((a | b) & 0x8080808080808080ull)
                break;
            i += 16;
        }
        if (i >= n)
            break;
        unsigned c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t len;
        unsigned lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
        if (c >= 0xC2 && c <= 0xDF) {
            len = 2;
        } else if (c >= 0xE0 && c <= 0xEF) {
            len = 3;
            if (c == 0xE0) lo = 0xA0;      /* no overlong forms */
            if (c == 0xED) hi = 0x9F;      /* no UTF-16 surrogates */
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4;
            if (c == 0xF0) lo = 0x90;      /* no overlong forms */
            if (c == 0xF4) hi = 0x8F;      /* nothing past U+10FFFF */
        } else {
            *bad = i;
            return false;
        }
        if (n - i < len || s[i + 1] < lo || s[i + 1] > hi) {
            *bad = i;
            return false;
        }
        for (size_t k = 2; k < len; k++)
            if ((s[i + k] & 0xC0) != 0x80) {
                *bad = i;
                return false;
            }
        i += len;
    }
    return true;
}

bool nnp__sbuf_room(nnp_sbuf *b, size_t n)
{
    if (b->failed)
        return false;
    if (b->cap - b->len > n)
        return true;
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len <= n) {
        if (cap > SIZE_MAX / 2) {
            b->failed = true;
            return false;
        }
        cap *= 2;
    }
    char *p = realloc(b->s, cap);
    if (!p) {
        b->failed = true;
        return false;
    }
    b->s = p;
    b->cap = cap;
    return true;
}

void nnp__sbuf_put(nnp_sbuf *b, const char *s, size_t n)
{
    if (!nnp__sbuf_room(b, n))
        return;
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = 0;
}

void nnp__sbuf_puts(nnp_sbuf *b, const char *s)
{
    nnp__sbuf_put(b, s, strlen(s));
}

void nnp__sbuf_printf(nnp_sbuf *b, const char *fmt, ...)
{
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->failed = true;
        return;
    }
    if ((size_t)n < sizeof small) {
        nnp__sbuf_put(b, small, (size_t)n);
        return;
    }
    char *big = malloc((size_t)n + 1);
    if (!big) {
        b->failed = true;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    nnp__sbuf_put(b, big, (size_t)n);
    free(big);
}

void nnp__sbuf_u64(nnp_sbuf *b, uint64_t v)
{
    char digits[20], *p = digits + sizeof digits;
    do
        *--p = (char)('0' + v % 10);
    while (v /= 10);
    nnp__sbuf_put(b, p, (size_t)(digits + sizeof digits - p));
}

/* Measured, then escaped into room reserved once: a string full of quotes, as a JSON document
 * kept in a JSON string is, then costs no call a quote. */
void nnp__sbuf_json_string(nnp_sbuf *b, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    size_t n = 0, out = 2;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++, n++)
        out += *p >= 0x20 && *p != '"' && *p != '\\' ? 1 : *p >= 0x20 ? 2 : 6;
    if (!nnp__sbuf_room(b, out))
        return;
    char *o = b->s + b->len;
    *o++ = '"';
    for (const unsigned char *p = (const unsigned char *)s, *end = p + n; p < end; p++) {
        unsigned char c = *p;
        if (c >= 0x20 && c != '"' && c != '\\') {
            *o++ = (char)c;
        } else if (c == '"' || c == '\\') {
            *o++ = '\\';
            *o++ = (char)c;
        } else {
            memcpy(o, "\\u00", 4);
            o[4] = hex[c >> 4];
            o[5] = hex[c & 15];
            o += 6;
        }
    }
    *o++ = '"';
    *o = 0;
    b->len = (size_t)(o - b->s);
}

void nnp__sbuf_free(nnp_sbuf *b)
{
    free(b->s);
    memset(b, 0, sizeof *b);
}

static const char *file_kind(mode_t m)
{
    return S_ISDIR(m) ? "a directory" : S_ISFIFO(m) ? "a FIFO" : S_ISCHR(m) ? "a character device"
         : S_ISBLK(m) ? "a block device" : S_ISSOCK(m) ? "a socket" : "not a plain file";
}

nnp_status nnp__open_regular(const char *path, int *fd, struct stat *st)
{
    /* O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer for ever */
    *fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (*fd < 0)
        return nnp__fail(NNP_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    const char *why = NULL;
    int e = 0;
    if (fstat(*fd, st) != 0)
        e = errno;
    else if (!S_ISREG(st->st_mode))
        why = file_kind(st->st_mode);
    else if (fcntl(*fd, F_SETFL, fcntl(*fd, F_GETFL) & ~O_NONBLOCK) != 0)
        e = errno;
    if (!e && !why)
        return NNP_OK;
    close(*fd);
    *fd = -1;
    if (why)
        return nnp__fail(NNP_ERR_IO, "%s: not a regular file (%s)", path, why);
    return nnp__fail(NNP_ERR_IO, "%s: cannot stat: %s", path, strerror(e));
}

nnp_status nnp__sbuf_read_file(nnp_sbuf *b, const char *path, uint64_t max, const char *what)
{
    int fd;
    struct stat st;
    nnp_status s = nnp__open_regular(path, &fd, &st);
    if (s)
        return s;
    if ((uint64_t)st.st_size > max) {
        close(fd);
        return nnp__fail(NNP_ERR_IO, "%s: %lld bytes, more than a %s may hold (%llu)", path,
                         (long long)st.st_size, what, (unsigned long long)max);
    }
    /* The size can change while it is read (a journal being appended to): the cap holds on the
     * bytes read, not on the size fstat saw. */
    char chunk[65536];
    uint64_t total = 0;
    int err = 0;
    for (;;) {
        ssize_t k = read(fd, chunk, sizeof chunk);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0) {
            err = errno;
            break;
        }
        if (k == 0)
            break;
        total += (uint64_t)k;
        if (total > max) {
            close(fd);
            return nnp__fail(NNP_ERR_IO, "%s: more than a %s may hold (%llu bytes)", path, what,
                             (unsigned long long)max);
        }
        nnp__sbuf_put(b, chunk, (size_t)k);
    }
    close(fd);
    if (err)
        return nnp__fail(NNP_ERR_IO, "%s: cannot read: %s", path, strerror(err));
    if (b->failed)
        return nnp__nomem();
    nnp__sbuf_put(b, "", 0); /* a NUL-terminated string even for an empty file */
    return b->failed ? nnp__nomem() : NNP_OK;
}

/* The registry of live mappings, read by nnp_mapping_of from a signal handler: a fixed array
 * changed and read with lock-free atomics only (no lock, no allocation on the reading side).
 * A slot is FREE, BUSY (being filled or emptied by the thread that claimed it) or LIVE; its
 * fields are read only while it is LIVE. When every slot is taken a mapping is not registered
 * and lookups of its addresses fail. */
#define NNP_MAP_SLOTS 256
enum { MAP_SLOT_FREE, MAP_SLOT_BUSY, MAP_SLOT_LIVE };

static struct {
    _Atomic int state;
    _Atomic uintptr_t base;
    _Atomic uint64_t size;
    _Atomic(const char *) path; /* the registry's own copy */
} map_slots[NNP_MAP_SLOTS];

_Static_assert(ATOMIC_INT_LOCK_FREE == 2 && ATOMIC_POINTER_LOCK_FREE == 2,
               "the mapping registry needs lock-free atomics to be read in a signal handler");

static void map_register(const void *base, uint64_t size, const char *path)
{
    char *copy = strdup(path);
    if (!copy)
        return;
    for (size_t i = 0; i < NNP_MAP_SLOTS; i++) {
        int expect = MAP_SLOT_FREE;
        if (!atomic_compare_exchange_strong(&map_slots[i].state, &expect, MAP_SLOT_BUSY))
            continue;
        atomic_store_explicit(&map_slots[i].base, (uintptr_t)base, memory_order_relaxed);
        atomic_store_explicit(&map_slots[i].size, size, memory_order_relaxed);
        atomic_store_explicit(&map_slots[i].path, copy, memory_order_relaxed);
        atomic_store_explicit(&map_slots[i].state, MAP_SLOT_LIVE, memory_order_release);
        return;
    }
    free(copy); /* full: this mapping is not named */
}

static void map_unregister(const void *base)
{
    for (size_t i = 0; i < NNP_MAP_SLOTS; i++) {
        if (atomic_load_explicit(&map_slots[i].state, memory_order_acquire) != MAP_SLOT_LIVE ||
            atomic_load_explicit(&map_slots[i].base, memory_order_relaxed) != (uintptr_t)base)
            continue;
        int expect = MAP_SLOT_LIVE;
        if (!atomic_compare_exchange_strong(&map_slots[i].state, &expect, MAP_SLOT_BUSY))
            continue;
        const char *path = atomic_exchange(&map_slots[i].path, NULL);
        atomic_store_explicit(&map_slots[i].state, MAP_SLOT_FREE, memory_order_release);
        free((void *)path);
        return;
    }
}

bool nnp_mapping_of(const void *addr, const char **path, uint64_t *offset)
{
    uintptr_t a = (uintptr_t)addr;
    for (size_t i = 0; i < NNP_MAP_SLOTS; i++) {
        if (atomic_load_explicit(&map_slots[i].state, memory_order_acquire) != MAP_SLOT_LIVE)
            continue;
        uintptr_t base = atomic_load_explicit(&map_slots[i].base, memory_order_relaxed);
        uint64_t size = atomic_load_explicit(&map_slots[i].size, memory_order_relaxed);
        const char *p = atomic_load_explicit(&map_slots[i].path, memory_order_relaxed);
        if (a < base || (uint64_t)(a - base) >= size || !p)
            continue;
        if (path)
            *path = p;
        if (offset)
            *offset = (uint64_t)(a - base);
        return true;
    }
    return false;
}

nnp_status nnp__map_file(const char *path, nnp_map *out)
{
    out->base = NULL;
    out->size = 0;
    int fd;
    struct stat st;
    nnp_status s = nnp__open_regular(path, &fd, &st);
    if (s)
        return s;
    if (st.st_size > 0) {
        void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            int e = errno;
            close(fd);
            return nnp__fail(NNP_ERR_IO, "%s: cannot map %lld bytes: %s", path,
                             (long long)st.st_size, strerror(e));
        }
        out->base = p;
        out->size = (uint64_t)st.st_size;
        map_register(p, out->size, path);
    }
    /* The mapping keeps the file's pages; the descriptor is no longer needed. */
    close(fd);
    return NNP_OK;
}

void nnp__unmap(nnp_map *m)
{
    if (m->base) {
        map_unregister(m->base);
        munmap((void *)m->base, (size_t)m->size);
    }
    m->base = NULL;
    m->size = 0;
}

void nnp__format_shape(char *buf, size_t n, uint32_t ndim, const uint64_t *shape)
{
    size_t used = (size_t)snprintf(buf, n, "[");
    for (uint32_t k = 0; k < ndim && used < n; k++)
        used += (size_t)snprintf(buf + used, n - used, k ? ", %llu" : "%llu",
                                 (unsigned long long)shape[k]);
    if (used < n)
        snprintf(buf + used, n - used, "]");
}
