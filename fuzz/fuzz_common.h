/*
 * fuzz_common.h - what the libFuzzer targets share: handing the input bytes to nnp_dump_open as a
 * file, then using the opened dump the way the CLI and a caller of the API would, so that every
 * reader path, every conversion and the statistics run on hostile input.
 *
 * Invariants the public header promises are checked with fuzz_check(): a broken promise is a bug
 * even when no sanitizer notices, and trapping makes libFuzzer save the input.
 */
#ifndef NNP_FUZZ_COMMON_H
#define NNP_FUZZ_COMMON_H

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "nnparity.h"

#define fuzz_check(cond)                                                                          \
    do {                                                                                          \
        if (!(cond)) {                                                                            \
            fprintf(stderr, "%s:%d: broken invariant: %s\n", __FILE__, __LINE__, #cond);          \
            __builtin_trap();                                                                     \
        }                                                                                         \
    } while (0)

/* Keeps reads of the tensor bytes from being optimised away. */
static volatile uint64_t fuzz_sink;

static void fuzz_die(const char *what)
{
    perror(what);
    abort();
}

static void fuzz_write_all(int fd, const uint8_t *p, size_t n)
{
    if (ftruncate(fd, 0) != 0)
        fuzz_die("ftruncate");
    for (off_t off = 0; n;) {
        ssize_t k = pwrite(fd, p, n, off);
        if (k <= 0)
            fuzz_die("pwrite");
        p += k;
        n -= (size_t)k;
        off += k;
    }
}

/* The input as a file at a stable path. A memfd: nothing touches the disk or survives a crash,
 * and /proc/self/fd/N is a regular file the library maps like any other. */
static const char *fuzz_memfd_path(const uint8_t *data, size_t size)
{
    static int fd = -1;
    static char path[64];
    if (fd < 0) {
        fd = memfd_create("nnp-fuzz-input", MFD_CLOEXEC);
        if (fd < 0)
            fuzz_die("memfd_create");
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    }
    fuzz_write_all(fd, data, size);
    return path;
}

/* Bytes of a one-tensor safetensors file (tensor `name`, F32, shape [1]) into buf. */
static size_t fuzz_tiny_safetensors(const char *name, unsigned char *buf, size_t cap)
{
    char hdr[128];
    int n = snprintf(hdr, sizeof hdr,
                     "{\"%s\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", name);
    while (n % 8)
        hdr[n++] = ' ';
    if (8 + (size_t)n + 4 > cap)
        abort();
    for (int i = 0; i < 8; i++)
        buf[i] = (unsigned char)((uint64_t)n >> (8 * i));
    memcpy(buf + 8, hdr, (size_t)n);
    memcpy(buf + 8 + n, "\x00\x00\x80\x3f", 4); /* 1.0f */
    return 8 + (size_t)n + 4;
}

/* A sharded checkpoint's index names its shards relative to its own directory. Given a memfd
 * path that directory is /proc/self/fd, and shard names such as "1" would open the fuzzer's own
 * descriptors. So index-like inputs are written into a private directory holding two real
 * shards instead, which also lets the index reader get past its lookups. */
static char fuzz_dir[256];

static void fuzz_remove_dir(void)
{
    static const char *const names[] = {"model.safetensors.index.json",
                                        "model-00001-of-00002.safetensors",
                                        "model-00002-of-00002.safetensors"};
    char p[512];
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        snprintf(p, sizeof p, "%s/%s", fuzz_dir, names[i]);
        unlink(p);
    }
    rmdir(fuzz_dir);
}

static void fuzz_put_file(const char *name, const uint8_t *data, size_t size)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", fuzz_dir, name);
    int fd = open(p, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        fuzz_die(p);
    fuzz_write_all(fd, data, size);
    close(fd);
}

static const char *fuzz_index_path(const uint8_t *data, size_t size)
{
    if (!fuzz_dir[0]) {
        /* tmpfs when there is one: these files are rewritten on every run */
        const char *tmp = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR");
        snprintf(fuzz_dir, sizeof fuzz_dir, "%s/nnp-fuzz-XXXXXX", tmp && *tmp ? tmp : "/tmp");
        if (!mkdtemp(fuzz_dir))
            fuzz_die("mkdtemp");
        atexit(fuzz_remove_dir);
        unsigned char shard[256];
        size_t n = fuzz_tiny_safetensors("a", shard, sizeof shard);
        fuzz_put_file("model-00001-of-00002.safetensors", shard, n);
        n = fuzz_tiny_safetensors("b", shard, sizeof shard);
        fuzz_put_file("model-00002-of-00002.safetensors", shard, n);
    }
    fuzz_put_file("model.safetensors.index.json", data, size);
    static char path[300];
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", fuzz_dir);
    return path;
}

/* Whether nnp_dump_open will read these bytes as a sharded index (JSON, not safetensors). */
static int fuzz_looks_like_index(const uint8_t *data, size_t size)
{
    size_t i = 0;
    while (i < size && i < 8 && strchr(" \t\r\n", data[i]) && data[i])
        i++;
    return i < size && data[i] == '{';
}

static void fuzz_touch_string(const char *s)
{
    fuzz_check(s != NULL);
    fuzz_sink += strlen(s);
}

/* Use everything an opened dump offers and check what the header promises about it. */
static void fuzz_use_dump(nnp_dump *d)
{
    fuzz_touch_string(nnp_dump_path(d));
    fuzz_touch_string(nnp_dump_format(d));
    size_t n = nnp_dump_count(d);
    fuzz_check(nnp_dump_record(d, n) == NULL);

    for (size_t m = 0; m < nnp_dump_meta_count(d); m++) {
        const char *k, *v;
        nnp_dump_meta_at(d, m, &k, &v);
        fuzz_touch_string(k);
        fuzz_touch_string(v);
        fuzz_check(nnp_dump_meta_get(d, k) != NULL);
    }

    for (size_t i = 0; i < n; i++) {
        const nnp_record *r = nnp_dump_record(d, i);
        fuzz_check(r != NULL);
        fuzz_touch_string(r->name);
        fuzz_touch_string(r->module);
        fuzz_touch_string(r->role);
        fuzz_touch_string(r->module_type);
        fuzz_touch_string(r->file);
        fuzz_touch_string(nnp_dtype_name(r->dtype));
        fuzz_check(r->seq == i);
        fuzz_check(nnp_dump_find(d, r->name) == (int64_t)i);
        fuzz_check(r->dtype > NNP_DTYPE_INVALID && r->dtype < NNP_DTYPE_COUNT);
        fuzz_check(r->ndim == 0 || r->shape != NULL);
        uint64_t nelem = 1;
        for (uint32_t k = 0; k < r->ndim; k++)
            fuzz_check(!__builtin_mul_overflow(nelem, r->shape[k], &nelem));
        fuzz_check(nelem == r->nelem);
        fuzz_check(r->nbytes == r->nelem * nnp_dtype_size(r->dtype));

        const void *data = NULL;
        if (nnp_dump_data(d, i, &data) == NNP_OK) {
            fuzz_check(r->nbytes == 0 || data != NULL);
            /* Every byte: an overrun of a converted copy shows up under ASan, one past the
             * end of a mapping as a fault. */
            const unsigned char *p = data;
            uint64_t sum = 0;
            for (uint64_t b = 0; b < r->nbytes; b++)
                sum += p[b];
            fuzz_sink += sum;
            /* The pointer must stay the same on a second request. */
            const void *again = NULL;
            fuzz_check(nnp_dump_data(d, i, &again) == NNP_OK && again == data);
        } else {
            fuzz_touch_string(nnp_last_error());
        }
    }

    size_t *idx = malloc((n ? n : 1) * sizeof *idx);
    nnp_tensor_stats *s = calloc(n ? n : 1, sizeof *s);
    if (!idx || !s)
        fuzz_die("malloc");
    for (size_t i = 0; i < n; i++)
        idx[i] = i;
    if (nnp_stats_compute(d, idx, n, 1, s) == NNP_OK) {
        for (size_t i = 0; i < n; i++) {
            const nnp_record *r = nnp_dump_record(d, i);
            fuzz_check(s[i].count == r->nelem);
            fuzz_check(s[i].finite + s[i].nan + s[i].pos_inf + s[i].neg_inf == s[i].count);
            fuzz_check(s[i].zeros <= s[i].finite);
            if (s[i].finite)
                fuzz_check(s[i].min <= s[i].max && s[i].abs_max >= 0 && !(s[i].std < 0));
        }
    } else {
        fuzz_touch_string(nnp_last_error());
    }
    free(idx);
    free(s);

    for (size_t i = 0; i < n; i++)
        nnp_dump_release(d, i);
}

/* Open the file at `path`, use the dump if it opens, close it. */
static void fuzz_open_path(const char *path)
{
    nnp_dump *d = (nnp_dump *)1;
    nnp_status st = nnp_dump_open(path, &d);
    if (st != NNP_OK) {
        fuzz_check(d == NULL);
        fuzz_check(*nnp_last_error() != 0);
        fuzz_touch_string(nnp_status_name(st));
        return;
    }
    fuzz_check(d != NULL);
    fuzz_use_dump(d);
    nnp_dump_close(d);
}

/* Run one input: sharded-index-like bytes from the private directory, anything else from a memfd. */
static void fuzz_run_bytes(const uint8_t *data, size_t size)
{
    fuzz_open_path(fuzz_looks_like_index(data, size) ? fuzz_index_path(data, size)
                                                      : fuzz_memfd_path(data, size));
}

/* The input with `magic` in front unless it already starts with it (or with `alt`), so the
 * fuzzer's time goes into the parser behind that magic rather than into other formats. */
static void fuzz_run_with_magic(const uint8_t *data, size_t size, const char *magic, size_t mlen,
                                const char *alt)
{
    if ((size >= mlen && memcmp(data, magic, mlen) == 0) ||
        (alt && size >= mlen && memcmp(data, alt, mlen) == 0)) {
        fuzz_run_bytes(data, size);
        return;
    }
    uint8_t *buf = malloc(mlen + size);
    if (!buf)
        fuzz_die("malloc");
    memcpy(buf, magic, mlen);
    if (size)
        memcpy(buf + mlen, data, size);
    fuzz_run_bytes(buf, mlen + size);
    free(buf);
}

#endif /* NNP_FUZZ_COMMON_H */
