/*
 * testutil.h - helpers shared by the cmocka unit tests: where the conformance files are, a
 * scratch directory per test program, and writing raw bytes to a file.
 */
#ifndef NNP_TESTUTIL_H
#define NNP_TESTUTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nnparity.h"

/* A path under tests/conformance (or $NNP_CONFORMANCE), in a static buffer per call site: the
 * tests run from the repository root. */
static inline const char *conf_path(char *buf, size_t n, const char *rel)
{
    const char *root = getenv("NNP_CONFORMANCE");
    snprintf(buf, n, "%s/%s", root && *root ? root : "tests/conformance", rel);
    return buf;
}

static char test_dir[256];
static pid_t test_dir_owner;

static inline int rm_entry(const char *p, const struct stat *s, int flag, struct FTW *f)
{
    (void)s;
    (void)flag;
    (void)f;
    return remove(p);
}

/* A fresh scratch directory, removed when the program ends (not when a forked child exits). */
static inline void scratch_cleanup(void)
{
    if (test_dir[0] && getpid() == test_dir_owner)
        nftw(test_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static inline const char *scratch(char *buf, size_t n, const char *name)
{
    if (!test_dir[0]) {
        snprintf(test_dir, sizeof test_dir, "/tmp/nnp-test-XXXXXX");
        if (!mkdtemp(test_dir))
            fail_msg("cannot create a scratch directory");
        test_dir_owner = getpid();
        atexit(scratch_cleanup);
    }
    snprintf(buf, n, "%s/%s", test_dir, name);
    return buf;
}

static inline void write_bytes(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

/* A growing byte buffer for building test files. */
typedef struct buf {
    unsigned char *p;
    size_t n, cap;
} buf;

static inline void put(buf *b, const void *d, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        assert_non_null(b->p);
    }
    if (n)
        memcpy(b->p + b->n, d, n);
    b->n += n;
}

/* `bytes` (at most 8) little-endian bytes of v. */
static inline void put_le(buf *b, uint64_t v, int bytes)
{
    unsigned char t[8];
    assert_true(bytes <= 8);
    for (int i = 0; i < bytes; i++)
        t[i] = (unsigned char)(v >> (8 * i));
    put(b, t, (size_t)bytes);
}

/* A safetensors file from a header string and `data_len` data bytes (filled with `fill`). */
static inline void write_safetensors(const char *path, const char *header, size_t data_len,
                                     unsigned char fill)
{
    size_t hl = strlen(header);
    unsigned char *buf = malloc(8 + hl + data_len);
    assert_non_null(buf);
    for (int i = 0; i < 8; i++)
        buf[i] = (unsigned char)((uint64_t)hl >> (8 * i));
    memcpy(buf + 8, header, hl);
    memset(buf + 8 + hl, fill, data_len);
    write_bytes(path, buf, 8 + hl + data_len);
    free(buf);
}

/* Open must fail with `status`, and the message must contain each of the NULL-ended substrings. */
static inline void expect_open_error(const char *path, nnp_status status, ...)
{
    nnp_dump *d = (nnp_dump *)1;
    nnp_status st = nnp_dump_open(path, &d);
    if (st != status)
        fail_msg("%s: expected status %d, got %d (%s)", path, status, st, nnp_last_error());
    assert_null(d);
    va_list ap;
    va_start(ap, status);
    for (const char *s; (s = va_arg(ap, const char *));)
        if (!strstr(nnp_last_error(), s))
            fail_msg("message '%s' lacks '%s'", nnp_last_error(), s);
    va_end(ap);
    assert_null(strchr(nnp_last_error(), '\n'));
}

#endif
