/*
 * test_writer.c - the streaming safetensors writer: round trips of data and provenance, the
 * header layout the reference reader expects, header growth past its reserved room, and
 * failures (duplicates, reserved keys, unwritable paths, a file-size limit) that leave nothing
 * behind at the destination; the JSON text (escapes, numbers) headers and journals are made of.
 */
#include <errno.h>
#include <stdbool.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "internal.h"
#include "testutil.h"

static bool exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0;
}

static void partial_of(char *buf, size_t n, const char *path)
{
    snprintf(buf, n, "%s.partial", path);
}

static void test_round_trip(void **state)
{
    (void)state;
    char p[512], part[600];
    scratch(p, sizeof p, "rt.safetensors");
    partial_of(part, sizeof part, p);
    nnp_writer *w;
    assert_int_equal(nnp_writer_open(p, 4, &w), NNP_OK);
    assert_int_equal(nnp_writer_set_meta(w, "model", "vit_b_16"), NNP_OK);
    assert_int_equal(nnp_writer_set_meta(w, "model", "vit_tiny"), NNP_OK); /* replaces */
    assert_int_equal(nnp_writer_set_meta(w, "nnparity.records", "x"), NNP_ERR_ARG);
    float x[6] = {1, 2, 3, 4, 5, 6};
    uint16_t h[3] = {0x3c00, 0x4000, 0xbc00};
    double s = 3.25;
    uint64_t sh23[2] = {2, 3}, sh3[1] = {3}, sh0[2] = {4, 0};
    nnp_record_desc a = {.module = "enc.0.mlp", .role = "in0", .module_type = "MLP",
                         .dtype = NNP_F32, .ndim = 2, .shape = sh23};
    nnp_record_desc b = {.module = "enc.0.mlp", .role = "in0", .module_type = "MLP", .call = 1,
                         .dtype = NNP_F16, .ndim = 1, .shape = sh3};
    nnp_record_desc c = {.name = "scalar", .dtype = NNP_F64};
    nnp_record_desc z = {.name = "empty \"quoted\"\n", .dtype = NNP_F32, .ndim = 2, .shape = sh0};
    assert_int_equal(nnp_writer_add(w, &a, x), NNP_OK);
    assert_false(exists(p)); /* nothing at the destination until close */
    assert_true(exists(part));
    assert_int_equal(nnp_writer_add(w, &b, h), NNP_OK);
    assert_int_equal(nnp_writer_add(w, &c, &s), NNP_OK);
    assert_int_equal(nnp_writer_add(w, &z, NULL), NNP_OK);
    assert_int_equal(nnp_writer_add(w, &a, x), NNP_ERR_ARG); /* same default name again */
    assert_non_null(strstr(nnp_last_error(), "enc.0.mlp/in0"));
    assert_int_equal(nnp_writer_close(w), NNP_OK);
    assert_true(exists(p));
    assert_false(exists(part));

    nnp_dump *d;
    assert_int_equal(nnp_dump_open(p, &d), NNP_OK);
    assert_int_equal(nnp_dump_count(d), 4);
    const nnp_record *r = nnp_dump_record(d, 0);
    assert_string_equal(r->name, "enc.0.mlp/in0");
    assert_string_equal(r->module, "enc.0.mlp");
    assert_string_equal(r->role, "in0");
    assert_string_equal(r->module_type, "MLP");
    assert_int_equal(r->call, 0);
    r = nnp_dump_record(d, 1);
    assert_string_equal(r->name, "enc.0.mlp/in0#1");
    assert_int_equal(r->call, 1);
    assert_string_equal(nnp_dump_record(d, 2)->name, "scalar");
    assert_string_equal(nnp_dump_record(d, 3)->name, "empty \"quoted\"\n");
    const void *pd;
    assert_int_equal(nnp_dump_data(d, 0, &pd), NNP_OK);
    assert_memory_equal(pd, x, sizeof x);
    assert_int_equal(nnp_dump_data(d, 1, &pd), NNP_OK);
    assert_memory_equal(pd, h, sizeof h);
    assert_int_equal(((uintptr_t)pd) % 2, 0);
    assert_int_equal(nnp_dump_data(d, 2, &pd), NNP_OK);
    assert_memory_equal(pd, &s, sizeof s);
    assert_string_equal(nnp_dump_meta_get(d, "model"), "vit_tiny");
    assert_string_equal(nnp_dump_meta_get(d, "nnparity.format"), "dump/1");
    nnp_dump_close(d);
}

/* The text the header and the journal are made of: JSON string escapes for every kind of
 * character, a JSON document inside a JSON string, and decimal numbers at their extremes. */
static void test_json_text(void **state)
{
    (void)state;
    nnp_sbuf b = {0};
    nnp__sbuf_json_string(&b, "a\"b\\c\n\x01\x1f \x7f\xc3\xa9");
    assert_string_equal(b.s, "\"a\\\"b\\\\c\\u000a\\u0001\\u001f \x7f\xc3\xa9\"");
    nnp__sbuf_free(&b);
    nnp__sbuf_json_string(&b, "");
    nnp__sbuf_puts(&b, ",");
    nnp__sbuf_json_string(&b, "{\"tensor\":\"x\\\"y\"}");
    assert_string_equal(b.s, "\"\",\"{\\\"tensor\\\":\\\"x\\\\\\\"y\\\"}\"");
    nnp__sbuf_free(&b);
    nnp__sbuf_u64(&b, 0);
    nnp__sbuf_puts(&b, " ");
    nnp__sbuf_u64(&b, 10);
    nnp__sbuf_puts(&b, " ");
    nnp__sbuf_u64(&b, UINT64_MAX);
    assert_string_equal(b.s, "0 10 18446744073709551615");
    assert_false(b.failed);
    nnp__sbuf_free(&b);
}

/* The header fills exactly its room with trailing spaces, and data starts 8-aligned. */
static void test_header_layout(void **state)
{
    (void)state;
    char p[512];
    scratch(p, sizeof p, "layout.safetensors");
    nnp_writer *w;
    assert_int_equal(nnp_writer_open(p, 0, &w), NNP_OK);
    uint8_t v[3] = {1, 2, 3};
    uint64_t n3 = 3;
    nnp_record_desc desc = {.name = "v", .dtype = NNP_U8, .ndim = 1, .shape = &n3};
    assert_int_equal(nnp_writer_add(w, &desc, v), NNP_OK);
    assert_int_equal(nnp_writer_close(w), NNP_OK);
    FILE *f = fopen(p, "rb");
    assert_non_null(f);
    unsigned char len[8];
    assert_int_equal(fread(len, 1, 8, f), 8);
    uint64_t n = 0;
    for (int i = 0; i < 8; i++)
        n |= (uint64_t)len[i] << (8 * i);
    assert_int_equal((8 + n) % 8, 0);
    char *hdr = malloc(n + 1);
    assert_int_equal(fread(hdr, 1, n, f), n);
    hdr[n] = 0;
    unsigned char data[4];
    assert_int_equal(fread(data, 1, 4, f), 3); /* exactly the data after the header */
    assert_memory_equal(data, v, 3);
    fclose(f);
    assert_int_equal(hdr[0], '{');
    char *end = strrchr(hdr, '}');
    assert_non_null(end);
    for (char *q = end + 1; *q; q++)
        assert_int_equal(*q, ' ');
    assert_non_null(strstr(hdr, "\"v\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[0,3]}"));
    free(hdr);
}

/* Far more records than the room was sized for: the header is rebuilt in front of the data. */
static void test_header_outgrows_room(void **state)
{
    (void)state;
    char p[512], name[64];
    scratch(p, sizeof p, "grow.safetensors");
    nnp_writer *w;
    assert_int_equal(nnp_writer_open(p, 1, &w), NNP_OK);
    for (uint32_t i = 0; i < 3000; i++) {
        snprintf(name, sizeof name, "layer.%u.a.rather.long.module.path/out0", i);
        uint64_t two = 2;
        uint32_t val[2] = {i, ~i};
        nnp_record_desc desc = {.name = name, .module = "m", .role = "out0",
                                .dtype = NNP_U32, .ndim = 1, .shape = &two};
        assert_int_equal(nnp_writer_add(w, &desc, val), NNP_OK);
    }
    assert_int_equal(nnp_writer_close(w), NNP_OK);
    nnp_dump *d;
    assert_int_equal(nnp_dump_open(p, &d), NNP_OK);
    assert_int_equal(nnp_dump_count(d), 3000);
    for (uint32_t i = 0; i < 3000; i += 499) {
        const void *pd;
        assert_int_equal(nnp_dump_data(d, i, &pd), NNP_OK);
        const uint32_t *u = pd;
        assert_int_equal(u[0], i);
        assert_int_equal(u[1], ~i);
    }
    nnp_dump_close(d);
    char part2[600];
    snprintf(part2, sizeof part2, "%s.partial2", p);
    assert_false(exists(part2));
}

static void test_bad_arguments(void **state)
{
    (void)state;
    char p[512], part[600];
    scratch(p, sizeof p, "bad.safetensors");
    partial_of(part, sizeof part, p);
    nnp_writer *w;
    assert_int_equal(nnp_writer_open(p, 0, &w), NNP_OK);
    uint64_t one = 1;
    float v = 1;
    nnp_record_desc meta = {.name = "__metadata__", .dtype = NNP_F32, .ndim = 1, .shape = &one};
    assert_int_equal(nnp_writer_add(w, &meta, &v), NNP_ERR_ARG);
    nnp_record_desc bad_dtype = {.name = "x", .dtype = (nnp_dtype)77, .ndim = 1, .shape = &one};
    assert_int_equal(nnp_writer_add(w, &bad_dtype, &v), NNP_ERR_ARG);
    nnp_record_desc no_data = {.name = "x", .dtype = NNP_F32, .ndim = 1, .shape = &one};
    assert_int_equal(nnp_writer_add(w, &no_data, NULL), NNP_ERR_ARG);
    nnp_record_desc bad_utf8 = {.name = "\xff", .dtype = NNP_F32, .ndim = 1, .shape = &one};
    assert_int_equal(nnp_writer_add(w, &bad_utf8, &v), NNP_ERR_ARG);
    uint64_t huge[2] = {UINT64_MAX / 2, 4};
    nnp_record_desc overflow = {.name = "x", .dtype = NNP_F32, .ndim = 2, .shape = huge};
    assert_int_equal(nnp_writer_add(w, &overflow, &v), NNP_ERR_ARG);
    nnp_writer_abort(w);
    assert_false(exists(p));
    assert_false(exists(part));

    assert_int_equal(nnp_writer_open("/nonexistent-dir/x.safetensors", 0, &w), NNP_ERR_IO);
    assert_null(w);
    assert_non_null(strstr(nnp_last_error(), "/nonexistent-dir/x.safetensors.partial"));
    nnp_writer_abort(NULL);
}

/* A write that the file system refuses (here RLIMIT_FSIZE, as a full disk would) is an error
 * from the call, not a signal, and close leaves nothing at the destination. */
static void test_write_failure(void **state)
{
    (void)state;
    char p[512], part[600];
    scratch(p, sizeof p, "limited.safetensors");
    partial_of(part, sizeof part, p);
    struct rlimit old, lim;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
    lim = old;
    lim.rlim_cur = 1 << 20;
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    nnp_writer *w;
    assert_int_equal(nnp_writer_open(p, 0, &w), NNP_OK);
    static float big[1 << 19]; /* 2 MiB */
    uint64_t n = 1 << 19;
    nnp_record_desc desc = {.name = "big", .dtype = NNP_F32, .ndim = 1, .shape = &n};
    nnp_status st = nnp_writer_add(w, &desc, big);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, prev);
    assert_int_equal(st, NNP_ERR_IO);
    assert_non_null(strstr(nnp_last_error(), "limited.safetensors.partial"));
    assert_non_null(strstr(nnp_last_error(), strerror(EFBIG)));
    /* the writer stops at its first failure, even for writes that would now fit */
    float one_value = 1;
    uint64_t one = 1;
    nnp_record_desc small = {.name = "small", .dtype = NNP_F32, .ndim = 1, .shape = &one};
    assert_int_equal(nnp_writer_add(w, &small, &one_value), NNP_ERR_IO);
    assert_non_null(strstr(nnp_last_error(), "earlier failure"));
    assert_int_equal(nnp_writer_set_meta(w, "k", "v"), NNP_ERR_IO);
    /* closing reports it, leaves nothing at the destination and keeps the partial file */
    assert_int_equal(nnp_writer_close(w), NNP_ERR_IO);
    assert_non_null(strstr(nnp_last_error(), "stay in"));
    assert_false(exists(p));
    assert_true(exists(part));
    size_t kept;
    assert_int_equal(nnp_recover(p, &kept), NNP_OK);
    assert_int_equal(kept, 0);
    assert_false(exists(part));
}

/* The file-size limit is read when the writer opens, not at every write: one raised since is
 * still honoured (the writer reads it again before stopping at the old one). */
static void test_raised_limit(void **state)
{
    (void)state;
    char p[512];
    scratch(p, sizeof p, "raised.safetensors");
    struct rlimit old, lim;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    if (old.rlim_max != RLIM_INFINITY && old.rlim_max < (4u << 20))
        skip(); /* nothing to raise it to */
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
    lim = old;
    lim.rlim_cur = 1 << 20;
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    nnp_writer *w;
    nnp_status opened = nnp_writer_open(p, 0, &w);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, prev);
    assert_int_equal(opened, NNP_OK);
    static float big[1 << 19]; /* 2 MiB: past the limit the writer opened under */
    uint64_t n = 1 << 19;
    nnp_record_desc desc = {.name = "big", .dtype = NNP_F32, .ndim = 1, .shape = &n};
    assert_int_equal(nnp_writer_add(w, &desc, big), NNP_OK);
    assert_int_equal(nnp_writer_close(w), NNP_OK);
    nnp_dump *d;
    assert_int_equal(nnp_dump_open(p, &d), NNP_OK);
    assert_int_equal(nnp_dump_count(d), 1);
    nnp_dump_close(d);
}

/* More records announced than a header may hold: the room stops at safetensors' limit. */
static void test_room_is_capped(void **state)
{
    (void)state;
    char p[512];
    scratch(p, sizeof p, "capped.safetensors");
    nnp_writer *w;
    assert_int_equal(nnp_writer_open(p, 400000, &w), NNP_OK);
    uint8_t v = 1;
    uint64_t one = 1;
    nnp_record_desc d = {.name = "v", .dtype = NNP_U8, .ndim = 1, .shape = &one};
    assert_int_equal(nnp_writer_add(w, &d, &v), NNP_OK);
    assert_int_equal(nnp_writer_close(w), NNP_OK);
    nnp_dump *dump;
    assert_int_equal(nnp_dump_open(p, &dump), NNP_OK);
    assert_int_equal(nnp_dump_count(dump), 1);
    nnp_dump_close(dump);
    unlink(p);
    assert_int_equal(nnp_writer_open(p, SIZE_MAX, &w), NNP_OK); /* no overflow either */
    nnp_writer_abort(w);
}

/* A dump of scalars only (a loss, a step count) has no dimension at all. */
static void test_scalars_only(void **state)
{
    (void)state;
    char p[512];
    scratch(p, sizeof p, "scalars.safetensors");
    nnp_writer *w;
    assert_int_equal(nnp_writer_open(p, 0, &w), NNP_OK);
    double loss = 0.5;
    int64_t step = 7;
    nnp_record_desc a = {.name = "loss", .dtype = NNP_F64};
    nnp_record_desc b = {.name = "step", .dtype = NNP_I64};
    assert_int_equal(nnp_writer_add(w, &a, &loss), NNP_OK);
    assert_int_equal(nnp_writer_add(w, &b, &step), NNP_OK);
    assert_int_equal(nnp_writer_close(w), NNP_OK);
    nnp_dump *d;
    assert_int_equal(nnp_dump_open(p, &d), NNP_OK);
    size_t idx[2] = {0, 1};
    nnp_tensor_stats s[2];
    assert_int_equal(nnp_stats_compute(d, idx, 2, 1, s), NNP_OK);
    assert_true(s[0].mean == 0.5 && s[1].max == 7);
    assert_int_equal(nnp_dump_record(d, 1)->ndim, 0);
    nnp_dump_close(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),           cmocka_unit_test(test_header_layout),
        cmocka_unit_test(test_header_outgrows_room), cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_write_failure),
        cmocka_unit_test(test_raised_limit),
        cmocka_unit_test(test_room_is_capped),
        cmocka_unit_test(test_scalars_only),
        cmocka_unit_test(test_json_text),
    };
    return cmocka_run_group_tests_name("writer", tests, NULL, NULL);
}
