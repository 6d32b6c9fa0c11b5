/*
 * test_gguf.c - the GGUF reader: every tensor of the conformance file (written by gguf-py) to
 * the values gguf-py's dequantizers give (types.expected.npz), its metadata of every value type,
 * files built here for what the conformance file does not reach (version 2, other alignments,
 * zero-size and 0-d tensors, long arrays), and one crafted file per rule a GGUF must keep.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "testutil.h"

#include "nnparity.h"

/* ---- helpers ---- */

static nnp_dump *open_ok(const char *path)
{
    nnp_dump *d = NULL;
    nnp_status st = nnp_dump_open(path, &d);
    if (st)
        fail_msg("%s: %s", path, nnp_last_error());
    assert_non_null(d);
    return d;
}

static const void *data_of(nnp_dump *d, const char *name, const nnp_record **rec)
{
    int64_t i = nnp_dump_find(d, name);
    if (i < 0)
        fail_msg("%s: no record '%s'", nnp_dump_path(d), name);
    const void *p = NULL;
    if (nnp_dump_data(d, (size_t)i, &p))
        fail_msg("%s: '%s': %s", nnp_dump_path(d), name, nnp_last_error());
    if (rec)
        *rec = nnp_dump_record(d, (size_t)i);
    return p;
}

static void expect_meta(const nnp_dump *d, const char *key, const char *want)
{
    const char *got = nnp_dump_meta_get(d, key);
    if (!got)
        fail_msg("no metadata '%s'", key);
    if (strcmp(got, want) != 0)
        fail_msg("metadata '%s' is '%s', expected '%s'", key, got, want);
}

static void put_zeros(buf *b, size_t n)
{
    while (n--)
        put(b, "", 1);
}

/* A GGUF string: u64 length, bytes. */
static void put_gstr(buf *b, const char *s, size_t n)
{
    put_le(b, n, 8);
    put(b, s, n);
}

static void put_key(buf *b, const char *key, uint32_t type)
{
    put_gstr(b, key, strlen(key));
    put_le(b, type, 4);
}

enum { U8, I8, U16, I16, U32, I32, F32V, BOOL, STR, ARR, U64, I64, F64V };

static void kv_u32(buf *b, const char *key, uint32_t v)
{
    put_key(b, key, U32);
    put_le(b, v, 4);
}

static void kv_str(buf *b, const char *key, const char *s)
{
    put_key(b, key, STR);
    put_gstr(b, s, strlen(s));
}

static void header(buf *b, uint32_t version, uint64_t ntensors, uint64_t nkv)
{
    put(b, "GGUF", 4);
    put_le(b, version, 4);
    put_le(b, ntensors, 8);
    put_le(b, nkv, 8);
}

/* A tensor info; dims in ggml order (fastest first). */
static void tensor(buf *b, const char *name, uint32_t ndim, const uint64_t *dims, uint32_t type,
                   uint64_t offset)
{
    put_gstr(b, name, strlen(name));
    put_le(b, ndim, 4);
    for (uint32_t k = 0; k < ndim; k++)
        put_le(b, dims[k], 8);
    put_le(b, type, 4);
    put_le(b, offset, 8);
}

static void pad(buf *b, size_t align)
{
    static const unsigned char zero[256];
    if (b->n % align)
        put(b, zero, align - b->n % align);
}

static const char *save(const char *name, buf *b)
{
    static char path[16][512];
    static int slot;
    char *p = path[slot++ % 16];
    scratch(p, 512, name);
    write_bytes(p, b->p, b->n);
    free(b->p);
    memset(b, 0, sizeof *b);
    return p;
}

/* The file must be refused with `status`, naming the file and `phrase`. */
static void refused(const char *name, buf *b, nnp_status status, const char *phrase)
{
    const char *path = save(name, b);
    expect_open_error(path, status, path, phrase, (const char *)NULL);
}

/* ---- the conformance file ---- */

static void test_conformance_tensors(void **state)
{
    (void)state;
    char b1[512], b2[512];
    nnp_dump *d = open_ok(conf_path(b1, sizeof b1, "gguf/types.gguf"));
    nnp_dump *e = open_ok(conf_path(b2, sizeof b2, "gguf/types.expected.npz"));
    assert_string_equal(nnp_dump_format(d), "gguf");
    assert_int_equal(nnp_dump_count(d), 13);
    assert_int_equal(nnp_dump_count(e), 13);
    static const char *const names[] = {"t.f32", "t.f16", "t.bf16", "t.q8_0", "t.q4_0",
                                        "t.q4_1", "t.q5_0", "t.q5_1", "t.q2_k", "t.q3_k",
                                        "t.q4_k", "t.q5_k", "t.q6_k"};
    for (size_t i = 0; i < 13; i++) {
        /* file order is kept */
        assert_string_equal(nnp_dump_record(d, i)->name, names[i]);
        const nnp_record *r, *x;
        const void *got = data_of(d, names[i], &r);
        const void *want = data_of(e, names[i], &x);
        assert_int_equal(x->dtype, NNP_F32);
        nnp_dtype dt = i == 1 ? NNP_F16 : i == 2 ? NNP_BF16 : NNP_F32;
        assert_int_equal(r->dtype, dt);
        assert_int_equal(r->ndim, x->ndim);
        for (uint32_t k = 0; k < r->ndim; k++)
            assert_int_equal(r->shape[k], x->shape[k]);
        assert_int_equal(r->nelem, x->nelem);
        float *f = malloc(r->nelem * sizeof *f);
        assert_non_null(f);
        nnp_convert_to_f32(r->dtype, got, r->nelem, f);
        if (memcmp(f, want, r->nelem * sizeof *f) != 0) {
            for (uint64_t k = 0; k < r->nelem; k++)
                if (memcmp(&f[k], (const float *)want + k, sizeof *f) != 0)
                    fail_msg("%s: element %llu is %.9g, expected %.9g", names[i],
                             (unsigned long long)k, (double)f[k],
                             (double)((const float *)want)[k]);
        }
        free(f);
        /* a dequantized copy is made once */
        const void *again = data_of(d, names[i], NULL);
        assert_ptr_equal(got, again);
        char key[64];
        snprintf(key, sizeof key, "gguf.tensor_type.%s", names[i]);
        size_t rec = (size_t)nnp_dump_find(d, names[i]);
        if (i < 3) {
            assert_null(nnp_dump_meta_get(d, key));
            assert_false(nnp_record_quantization(d, rec, NULL, NULL));
        } else {
            char want_type[8];
            snprintf(want_type, sizeof want_type, "%s", names[i] + 2);
            for (char *c = want_type; *c; c++)
                *c = (char)(*c >= 'a' && *c <= 'z' ? *c - 'a' + 'A' : *c);
            expect_meta(d, key, want_type);
            /* every quantized type read has the error bound `nnparity weights` judges by */
            const char *type = NULL;
            double bound = 0;
            assert_true(nnp_record_quantization(d, rec, &type, &bound));
            assert_string_equal(type, want_type);
            assert_true(bound > 0 && bound < 1);
        }
    }
    const char *type;
    double bound;
    assert_true(nnp_record_quantization(d, (size_t)nnp_dump_find(d, "t.q8_0"), &type, &bound));
    assert_true(bound == 0.02);
    assert_true(nnp_record_quantization(d, (size_t)nnp_dump_find(d, "t.q2_k"), &type, &bound));
    assert_true(bound == 0.60);
    assert_false(nnp_record_quantization(d, nnp_dump_count(d), &type, &bound));
    assert_string_equal(NNP_GGUF_TENSOR_TYPE_PREFIX "t.q8_0", "gguf.tensor_type.t.q8_0");
    /* the quantized rows in shape order: t.q8_0 is ggml [64, 4], so (4, 64) */
    const nnp_record *r;
    data_of(d, "t.q8_0", &r);
    assert_int_equal(r->ndim, 2);
    assert_int_equal(r->shape[0], 4);
    assert_int_equal(r->shape[1], 64);
    assert_int_equal(r->nbytes, 4 * 64 * 4);
    nnp_dump_close(e);
    nnp_dump_close(d);
}

static void test_conformance_metadata(void **state)
{
    (void)state;
    char b1[512];
    nnp_dump *d = open_ok(conf_path(b1, sizeof b1, "gguf/types.gguf"));
    expect_meta(d, "general.architecture", "nnparity-test");
    expect_meta(d, "test.u8", "200");
    expect_meta(d, "test.i8", "-100");
    expect_meta(d, "test.u16", "60000");
    expect_meta(d, "test.i16", "-30000");
    expect_meta(d, "test.u32", "4000000000");
    expect_meta(d, "test.i32", "-2000000000");
    expect_meta(d, "test.f32", "1.5");
    expect_meta(d, "test.u64", "9223372036854775813");
    expect_meta(d, "test.i64", "-4611686018427387904");
    expect_meta(d, "test.f64", "3.1415926535897931");
    expect_meta(d, "test.bool", "true");
    expect_meta(d, "test.str", "h\xc3\xa9llo w\xc3\xb6rld");
    expect_meta(d, "test.arr_i32", "[1, -2, 3]");
    expect_meta(d, "test.arr_str", "[\"a\", \"bc\", \"\"]");
    /* the file's pairs come first, in file order */
    const char *k;
    nnp_dump_meta_at(d, 0, &k, NULL);
    assert_string_equal(k, "general.architecture");
    assert_int_equal(nnp_dump_meta_count(d), 15 + 10);
    nnp_dump_close(d);
}

/* ---- files built here ---- */

/* Version 2, alignment 64, one tensor of every plain type, a Q8_0 block, a 0-d tensor and a
 * zero-size one, and metadata values the conformance file does not hold. */
static void test_built_valid(void **state)
{
    (void)state;
    buf b = {0};
    header(&b, 2, 10, 8);
    kv_u32(&b, "general.alignment", 64);
    put_key(&b, "long", ARR);
    put_le(&b, U16, 4);
    put_le(&b, 20, 8);
    for (int i = 0; i < 20; i++)
        put_le(&b, (uint64_t)i, 2);
    put_key(&b, "nul", STR);
    put_gstr(&b, "a\0b\"", 4);
    put_key(&b, "no", BOOL);
    put_le(&b, 0, 1);
    put_key(&b, "f", F32V);
    put_le(&b, 0x3dcccccd, 4); /* 0.1f */
    put_key(&b, "bools", ARR);
    put_le(&b, BOOL, 4);
    put_le(&b, 18, 8);
    for (int i = 0; i < 18; i++)
        put_le(&b, (uint64_t)(i % 2), 1);
    put_key(&b, "esc", ARR);
    put_le(&b, STR, 4);
    put_le(&b, 1, 8);
    put_gstr(&b, "q\"\\\n", 4);
    kv_str(&b, "empty", "");

    uint64_t d3[] = {3}, d2x2[] = {2, 2}, d32x2[] = {32, 2}, d0x5[] = {0, 5};
    tensor(&b, "f32", 1, d3, 0, 0);      /* 12 bytes */
    tensor(&b, "f64", 1, d3, 28, 64);    /* 24 */
    tensor(&b, "i8", 1, d3, 24, 128);    /* 3 */
    tensor(&b, "i16", 1, d3, 25, 192);   /* 6 */
    tensor(&b, "i32", 2, d2x2, 26, 256); /* 16, shape (2, 2) */
    tensor(&b, "i64", 1, d3, 27, 320);   /* 24 */
    tensor(&b, "bf16", 1, d3, 30, 384);  /* 6 */
    tensor(&b, "q8", 2, d32x2, 8, 448);  /* 2 blocks, 68 bytes, shape (2, 32) */
    tensor(&b, "scalar", 0, NULL, 1, 576); /* one F16 */
    tensor(&b, "none", 2, d0x5, 0, 640);   /* zero-size, at the very end */
    pad(&b, 64);
    size_t base = b.n;
    unsigned char data[640] = {0};
    float f32[3] = {1.5f, -2.0f, 0.25f};
    memcpy(data, f32, 12);
    double f64[3] = {0.5, -1e300, 3.0};
    memcpy(data + 64, f64, 24);
    data[128] = 0x80; data[129] = 0x7f; data[130] = 0x01;
    unsigned char i16[6] = {0x00, 0x80, 0xff, 0x7f, 0x02, 0x00};
    memcpy(data + 192, i16, 6);
    int32_t i32[4] = {-1, 2, -3, 4};
    memcpy(data + 256, i32, 16);
    int64_t i64[3] = {INT64_MIN, -1, INT64_MAX};
    memcpy(data + 320, i64, 24);
    unsigned char bf16[6] = {0x80, 0x3f, 0xc0, 0x7f, 0x00, 0x80}; /* 1.0, NaN, -0 */
    memcpy(data + 384, bf16, 6);
    for (int blk = 0; blk < 2; blk++) {
        unsigned char *q = data + 448 + 34 * blk;
        q[0] = 0x00;
        q[1] = blk ? 0xC0 : 0x38; /* d = 0.5, then -2.0 */
        for (int j = 0; j < 32; j++)
            q[2 + j] = (unsigned char)(j - 3);
    }
    data[576] = 0x00;
    data[577] = 0x3c; /* F16 1.0 */
    put(&b, data, sizeof data);
    assert_int_equal(b.n, base + 640);
    const char *path = save("built.gguf", &b);

    nnp_dump *d = open_ok(path);
    assert_int_equal(nnp_dump_count(d), 10);
    expect_meta(d, "general.alignment", "64");
    expect_meta(d, "long",
                "[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, ... (20 items)]");
    expect_meta(d, "nul", "\"a\\u0000b\\\"\"");
    expect_meta(d, "no", "false");
    expect_meta(d, "f", "0.100000001");
    expect_meta(d, "bools", "[false, true, false, true, false, true, false, true, false, true, "
                            "false, true, false, true, false, true, ... (18 items)]");
    expect_meta(d, "esc", "[\"q\\\"\\\\\\u000a\"]");
    expect_meta(d, "empty", "");

    const nnp_record *r;
    const unsigned char *p = data_of(d, "f32", &r);
    assert_int_equal(r->dtype, NNP_F32);
    assert_memory_equal(p, f32, 12);
    p = data_of(d, "f64", &r);
    assert_int_equal(r->dtype, NNP_F64);
    assert_memory_equal(p, f64, 24);
    p = data_of(d, "i8", &r);
    assert_int_equal(r->dtype, NNP_I8);
    assert_int_equal(p[0], 0x80);
    p = data_of(d, "i16", &r);
    assert_int_equal(r->dtype, NNP_I16);
    assert_memory_equal(p, i16, 6);
    p = data_of(d, "i32", &r);
    assert_int_equal(r->dtype, NNP_I32);
    assert_int_equal(r->ndim, 2);
    assert_memory_equal(p, i32, 16);
    p = data_of(d, "i64", &r);
    assert_int_equal(r->dtype, NNP_I64);
    assert_memory_equal(p, i64, 24);
    p = data_of(d, "bf16", &r);
    assert_int_equal(r->dtype, NNP_BF16);
    assert_memory_equal(p, bf16, 6);
    const float *q = data_of(d, "q8", &r);
    assert_int_equal(r->dtype, NNP_F32);
    assert_int_equal(r->shape[0], 2);
    assert_int_equal(r->shape[1], 32);
    for (int j = 0; j < 32; j++) {
        assert_true(q[j] == (float)(j - 3) * 0.5f);
        assert_true(q[32 + j] == (float)(j - 3) * -2.0f);
    }
    expect_meta(d, "gguf.tensor_type.q8", "Q8_0");
    p = data_of(d, "scalar", &r);
    assert_int_equal(r->ndim, 0);
    assert_int_equal(r->nelem, 1);
    assert_true(nnp_f16_to_f32((uint16_t)(p[0] | p[1] << 8)) == 1.0f);
    data_of(d, "none", &r);
    assert_int_equal(r->nelem, 0);
    assert_int_equal(r->shape[0], 5);
    assert_int_equal(r->shape[1], 0);

    /* statistics run over dequantized and in-place records alike */
    size_t idx[10];
    nnp_tensor_stats s[10];
    for (size_t i = 0; i < 10; i++)
        idx[i] = i;
    assert_int_equal(nnp_stats_compute(d, idx, 10, 1, s), NNP_OK);
    assert_true(s[7].max == 14.0 && s[7].min == -56.0);
    nnp_dump_close(d);
}

/* No tensors: no padding is needed after the metadata. Tensors only: no metadata. */
static void test_built_edges(void **state)
{
    (void)state;
    buf b = {0};
    header(&b, 3, 0, 1);
    kv_str(&b, "general.name", "x");
    nnp_dump *d = open_ok(save("empty.gguf", &b));
    assert_int_equal(nnp_dump_count(d), 0);
    expect_meta(d, "general.name", "x");
    nnp_dump_close(d);

    header(&b, 3, 2, 0);
    uint64_t d256[] = {256};
    tensor(&b, "k", 1, d256, 14, 0); /* Q6_K: 210 bytes */
    tensor(&b, "z", 1, d256, 0, 224); /* F32 after the padded Q6_K */
    pad(&b, 32);
    unsigned char zero[224 + 1024] = {0};
    put(&b, zero, sizeof zero);
    d = open_ok(save("tensors_only.gguf", &b));
    assert_int_equal(nnp_dump_meta_count(d), 1);
    const nnp_record *r;
    const float *f = data_of(d, "k", &r);
    assert_int_equal(r->nelem, 256);
    assert_true(f[0] == 0.0f && f[255] == 0.0f);
    nnp_dump_close(d);

    /* the least alignment, 1: tensors back to back */
    header(&b, 3, 2, 1);
    kv_u32(&b, "general.alignment", 1);
    uint64_t d1[] = {1};
    tensor(&b, "a", 1, d1, 24, 0);
    tensor(&b, "b", 1, d1, 0, 1);
    put(&b, "\x05\x00\x00\x80\x3f", 5);
    d = open_ok(save("align1.gguf", &b));
    const float *one = data_of(d, "b", NULL);
    float v;
    memcpy(&v, one, sizeof v); /* may sit at an odd address */
    assert_true(v == 1.0f);
    nnp_dump_close(d);
}

/* ---- refusals ---- */

static void test_refused_header(void **state)
{
    (void)state;
    buf b = {0};
    put(&b, "GGUF\x03\x00\x00\x00", 8);
    refused("short.gguf", &b, NNP_ERR_FORMAT, "gguf truncated");

    put(&b, "GGUF", 4);
    refused("magic_only.gguf", &b, NNP_ERR_FORMAT, "gguf truncated");

    /* not GGUF at all: another reader refuses it, still naming the file */
    put(&b, "GGUG\x03\x00\x00\x00", 8);
    put_zeros(&b, 16);
    const char *path = save("bad_magic.gguf", &b);
    expect_open_error(path, NNP_ERR_FORMAT, path, (const char *)NULL);

    header(&b, 1, 0, 0);
    refused("v1.gguf", &b, NNP_ERR_UNSUPPORTED, "GGUF version 1 is not read");
    header(&b, 4, 0, 0);
    refused("v4.gguf", &b, NNP_ERR_UNSUPPORTED, "GGUF version 4 is not read");
    header(&b, 0x03000000u, 0, 0);
    refused("big_endian.gguf", &b, NNP_ERR_UNSUPPORTED, "big-endian");

    header(&b, 3, 0, 1ull << 40);
    refused("kv_count.gguf", &b, NNP_ERR_FORMAT, "gguf counts");
    header(&b, 3, UINT64_MAX, 0);
    put_zeros(&b, 64);
    refused("tensor_count.gguf", &b, NNP_ERR_FORMAT, "gguf counts");
}

static void test_refused_metadata(void **state)
{
    (void)state;
    buf b = {0};
    /* a key's length runs past the end */
    header(&b, 3, 0, 1);
    put_le(&b, 1000, 8);
    put(&b, "general.name", 12);
    put_le(&b, 0, 8);
    refused("key_len.gguf", &b, NNP_ERR_FORMAT, "gguf string length");

    /* a string value's length runs past the end */
    header(&b, 3, 0, 1);
    put_key(&b, "s", STR);
    put_le(&b, 1ull << 62, 8);
    put(&b, "abcdefgh", 8);
    refused("str_len.gguf", &b, NNP_ERR_FORMAT, "gguf string length");

    /* an array count that no file could hold, and one too big for what is left */
    header(&b, 3, 0, 1);
    put_key(&b, "a", ARR);
    put_le(&b, U8, 4);
    put_le(&b, UINT64_MAX, 8);
    put_le(&b, 0, 8);
    refused("arr_huge.gguf", &b, NNP_ERR_FORMAT, "gguf array length");
    header(&b, 3, 0, 1);
    put_key(&b, "a", ARR);
    put_le(&b, STR, 4);
    put_le(&b, 3, 8);
    put_gstr(&b, "x", 1);
    put_gstr(&b, "y", 1);
    refused("arr_short.gguf", &b, NNP_ERR_FORMAT, "gguf array length");

    header(&b, 3, 0, 2);
    kv_str(&b, "general.name", "a");
    kv_str(&b, "general.name", "b");
    refused("dup_key.gguf", &b, NNP_ERR_FORMAT, "key 'general.name' appears twice");

    header(&b, 3, 0, 1);
    kv_str(&b, "", "a");
    refused("empty_key.gguf", &b, NNP_ERR_FORMAT, "is empty");

    header(&b, 3, 0, 1);
    put_gstr(&b, "a\0b", 3);
    put_le(&b, U8, 4);
    put_le(&b, 0, 1);
    refused("nul_key.gguf", &b, NNP_ERR_FORMAT, "NUL byte");

    header(&b, 3, 0, 1);
    kv_str(&b, "s", "caf\xc3");
    refused("utf8.gguf", &b, NNP_ERR_FORMAT, "not valid UTF-8");

    header(&b, 3, 0, 1);
    put_key(&b, "t", 13);
    put_le(&b, 0, 8);
    refused("vtype.gguf", &b, NNP_ERR_FORMAT, "no GGUF value type");

    header(&b, 3, 0, 1);
    put_key(&b, "b", BOOL);
    put_le(&b, 2, 1);
    refused("bool.gguf", &b, NNP_ERR_FORMAT, "gguf bool");

    header(&b, 3, 0, 1);
    put_key(&b, "nested", ARR);
    put_le(&b, ARR, 4);
    put_le(&b, 1, 8);
    put_le(&b, U8, 4);
    put_le(&b, 0, 8);
    refused("nested.gguf", &b, NNP_ERR_UNSUPPORTED, "array of arrays");

    header(&b, 3, 0, 1);
    put_key(&b, "i", I32);
    put_le(&b, 7, 2);
    refused("short_value.gguf", &b, NNP_ERR_FORMAT, "gguf truncated");

    header(&b, 3, 0, 1);
    kv_str(&b, "gguf.tensor_type.w", "Q4_K");
    refused("reserved.gguf", &b, NNP_ERR_UNSUPPORTED, "namespace");

    header(&b, 3, 0, 1);
    kv_u32(&b, "general.alignment", 48);
    refused("align48.gguf", &b, NNP_ERR_FORMAT, "not a power of two");
    header(&b, 3, 0, 1);
    kv_u32(&b, "general.alignment", 0);
    refused("align0.gguf", &b, NNP_ERR_FORMAT, "not a power of two");
    header(&b, 3, 0, 1);
    put_key(&b, "general.alignment", U64);
    put_le(&b, 32, 8);
    refused("align_u64.gguf", &b, NNP_ERR_FORMAT, "must be a u32");

    /* a string value past the cap, though the file holds it */
    header(&b, 3, 0, 1);
    put_key(&b, "big", STR);
    size_t big = (16u << 20) + 1;
    put_le(&b, big, 8);
    char *fill = malloc(big);
    assert_non_null(fill);
    memset(fill, 'x', big);
    put(&b, fill, big);
    free(fill);
    refused("big_string.gguf", &b, NNP_ERR_UNSUPPORTED, "gguf string cap");
}

/* One tensor info (ggml dims, type, offset) followed by `data_len` data bytes. */
static void one_tensor(buf *b, uint32_t ndim, const uint64_t *dims, uint32_t type,
                       uint64_t offset, size_t data_len)
{
    header(b, 3, 1, 0);
    tensor(b, "w", ndim, dims, type, offset);
    pad(b, 32);
    unsigned char *zero = calloc(1, data_len + 1);
    assert_non_null(zero);
    put(b, zero, data_len);
    free(zero);
}

static void test_refused_tensors(void **state)
{
    (void)state;
    buf b = {0};
    uint64_t d4[] = {4}, d32[] = {32};

    header(&b, 3, 2, 0);
    tensor(&b, "w", 1, d4, 0, 0);
    tensor(&b, "w", 1, d4, 0, 32);
    pad(&b, 32);
    put_zeros(&b, 48);
    refused("dup_tensor.gguf", &b, NNP_ERR_FORMAT, "duplicate tensor name");

    one_tensor(&b, 1, d4, 0, 4, 64);
    refused("unaligned.gguf", &b, NNP_ERR_FORMAT, "not a multiple of the alignment");

    one_tensor(&b, 1, d4, 0, 0, 15);
    refused("past_end.gguf", &b, NNP_ERR_FORMAT, "past the end of the file");
    one_tensor(&b, 1, d4, 0, UINT64_MAX - 31, 16);
    refused("offset_wraps.gguf", &b, NNP_ERR_FORMAT, "past the end of the file");

    uint64_t over[] = {1ull << 32, 1ull << 32};
    one_tensor(&b, 2, over, 0, 0, 16);
    refused("dims_overflow.gguf", &b, NNP_ERR_FORMAT, "overflows 64 bits");
    uint64_t bytes_over[] = {1ull << 31, 1ull << 31}; /* 2^62 elements, 2^64 bytes of F32 */
    one_tensor(&b, 2, bytes_over, 0, 0, 16);
    refused("bytes_overflow.gguf", &b, NNP_ERR_FORMAT, "overflows 64 bits");
    uint64_t negative[] = {UINT64_MAX};
    one_tensor(&b, 1, negative, 0, 0, 16);
    refused("negative_dim.gguf", &b, NNP_ERR_FORMAT, "int64");

    uint64_t nine[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
    one_tensor(&b, 9, nine, 0, 0, 16);
    refused("nine_dims.gguf", &b, NNP_ERR_UNSUPPORTED, "9 dimensions");

    one_tensor(&b, 1, d32, 12, 0, 144); /* Q4_K needs rows of 256 */
    refused("partial_block.gguf", &b, NNP_ERR_FORMAT, "block size 256");
    one_tensor(&b, 0, NULL, 8, 0, 64);
    refused("scalar_block.gguf", &b, NNP_ERR_FORMAT, "block size 32");

    one_tensor(&b, 1, d32, 99, 0, 64);
    refused("unknown_type.gguf", &b, NNP_ERR_UNSUPPORTED, "ggml type 99");
    one_tensor(&b, 1, d32, 4, 0, 64);
    refused("q4_2.gguf", &b, NNP_ERR_UNSUPPORTED, "Q4_2 (4), which ggml no longer reads");
    one_tensor(&b, 1, d32, 9, 0, 64);
    refused("q8_1.gguf", &b, NNP_ERR_UNSUPPORTED, "Q8_1 (9)");
    one_tensor(&b, 1, d32, 16, 0, 256);
    refused("iq2.gguf", &b, NNP_ERR_UNSUPPORTED, "IQ2_XXS");
    one_tensor(&b, 1, d32, 34, 0, 256);
    refused("tq1.gguf", &b, NNP_ERR_UNSUPPORTED, "TQ1_0");
    one_tensor(&b, 1, d32, 31, 0, 64);
    refused("q4_0_4_4.gguf", &b, NNP_ERR_UNSUPPORTED, "Q4_0_4_4");

    header(&b, 3, 2, 0);
    uint64_t d16[] = {16};
    tensor(&b, "a", 1, d16, 0, 0);  /* bytes 0..64 of the data */
    tensor(&b, "b", 1, d4, 0, 32);  /* bytes 32..48 */
    pad(&b, 32);
    unsigned char zero[64] = {0};
    put(&b, zero, sizeof zero);
    refused("overlap.gguf", &b, NNP_ERR_FORMAT, "tensors 'a' and 'b' overlap");

    header(&b, 3, 1, 0);
    put_gstr(&b, "w\xff", 2);
    put(&b, zero, 20);
    refused("name_utf8.gguf", &b, NNP_ERR_FORMAT, "not valid UTF-8");

    /* two dimensions announced, the file ends inside the second */
    header(&b, 3, 1, 0);
    put_gstr(&b, "w", 1);
    put_le(&b, 2, 4);
    put_le(&b, 4, 8);
    put_le(&b, 0, 4);
    refused("info_cut.gguf", &b, NNP_ERR_FORMAT, "gguf truncated");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conformance_tensors),
        cmocka_unit_test(test_conformance_metadata),
        cmocka_unit_test(test_built_valid),
        cmocka_unit_test(test_built_edges),
        cmocka_unit_test(test_refused_header),
        cmocka_unit_test(test_refused_metadata),
        cmocka_unit_test(test_refused_tensors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
