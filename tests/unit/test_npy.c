/*
 * test_npy.c - the npy and npz readers and the zip reader under them: every conformance file to
 * the values in EXPECTED.npz, unsupported dtypes refused by name, and crafted files (written at
 * test time, archives built here with zlib) for each rule the conformance set does not reach.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <zlib.h>

#include "testutil.h"

#include "nnparity.h"
#include "internal.h"
#include "common/zip.h"

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

static const void *data_at(nnp_dump *d, size_t i)
{
    const void *p = NULL;
    nnp_status st = nnp_dump_data(d, i, &p);
    if (st)
        fail_msg("%s: record %zu: %s", nnp_dump_path(d), i, nnp_last_error());
    return p;
}

static const nnp_record *rec_named(nnp_dump *d, const char *name, const void **data)
{
    int64_t i = nnp_dump_find(d, name);
    if (i < 0)
        fail_msg("%s: no record '%s'", nnp_dump_path(d), name);
    if (data)
        *data = data_at(d, (size_t)i);
    return nnp_dump_record(d, (size_t)i);
}

/* Record i of d must equal EXPECTED.npz's record `want` in dtype, shape and bytes. A 0-dim
 * scalar is kept as shape (1,) in EXPECTED.npz. */
static void compare_record(nnp_dump *d, size_t i, nnp_dump *exp, const char *want)
{
    const nnp_record *r = nnp_dump_record(d, i);
    const void *got_data = data_at(d, i), *exp_data;
    const nnp_record *e = rec_named(exp, want, &exp_data);
    if (r->dtype != e->dtype)
        fail_msg("%s: '%s' has dtype %s, expected %s", nnp_dump_path(d), r->name,
                 nnp_dtype_name(r->dtype), nnp_dtype_name(e->dtype));
    if (r->ndim == 0) {
        assert_true(e->ndim == 0 || (e->ndim == 1 && e->shape[0] == 1));
    } else {
        assert_int_equal(r->ndim, e->ndim);
        for (uint32_t k = 0; k < r->ndim; k++)
            assert_int_equal(r->shape[k], e->shape[k]);
    }
    assert_int_equal(r->nelem, e->nelem);
    assert_int_equal(r->nbytes, e->nbytes);
    if (r->nbytes && memcmp(got_data, exp_data, (size_t)r->nbytes) != 0)
        fail_msg("%s: '%s' differs from EXPECTED.npz '%s'", nnp_dump_path(d), r->name, want);
}

static nnp_dump *open_expected(void)
{
    char b[512];
    return open_ok(conf_path(b, sizeof b, "numpy/EXPECTED.npz"));
}

static void put_str(buf *b, const char *s)
{
    put(b, s, strlen(s));
}

/* An npy as numpy writes it: the header padded with spaces to a multiple of 64, ending in '\n'. */
static buf npy_bytes(int major, const char *dict, const void *data, size_t len)
{
    buf b = {0};
    size_t pre = major == 1 ? 10 : 12, hl = strlen(dict) + 1;
    size_t total = (pre + hl + 63) / 64 * 64;
    put(&b, "\x93NUMPY", 6);
    put_le(&b, (uint64_t)major, 1);
    put_le(&b, 0, 1);
    put_le(&b, total - pre, major == 1 ? 2 : 4);
    put_str(&b, dict);
    while (b.n < total - 1)
        put_str(&b, " ");
    put_str(&b, "\n");
    put(&b, data, len);
    return b;
}

static const char *write_npy(const char *name, int major, const char *dict, const void *data,
                             size_t len)
{
    static char path[8][512];
    static int slot;
    char *p = path[slot++ % 8];
    scratch(p, 512, name);
    buf b = npy_bytes(major, dict, data, len);
    write_bytes(p, b.p, b.n);
    free(b.p);
    return p;
}

/* A crafted npy must be refused with `status` and a message naming the file and `phrase`. */
static void npy_refused(int major, const char *dict, size_t len, nnp_status status,
                        const char *phrase)
{
    static unsigned char zeros[256];
    static int n;
    char name[64];
    snprintf(name, sizeof name, "bad%d.npy", n++);
    assert_true(len <= sizeof zeros);
    const char *path = write_npy(name, major, dict, zeros, len);
    expect_open_error(path, status, path, "byte ", phrase, NULL);
}

/* One member of an archive built by zip_bytes, with the ways to break it. */
typedef struct zm {
    const char *name;
    const void *data;
    size_t len;
    int method;           /* 0 stored, 8 deflated */
    uint32_t crc_xor;     /* spoils the declared CRC */
    int64_t size_delta;   /* added to the declared uncompressed size */
    uint64_t size_set;    /* the declared uncompressed size, when non-zero */
    uint16_t flags;       /* more general purpose flags */
    uint16_t method_set;  /* the declared method, when non-zero */
    bool descriptor;      /* sizes and CRC in a data descriptor after the data */
    size_t junk;          /* bytes after the deflate stream, counted as compressed data */
    int alias;            /* 1 + index of an earlier member whose local record this one shares */
} zm;

static buf deflate_raw(const void *data, size_t len)
{
    buf out = {0};
    z_stream s;
    memset(&s, 0, sizeof s);
    assert_int_equal(deflateInit2(&s, 6, Z_DEFLATED, -MAX_WBITS, 8, Z_DEFAULT_STRATEGY), Z_OK);
    uLong bound = deflateBound(&s, (uLong)len);
    out.p = malloc(bound + 1);
    assert_non_null(out.p);
    out.cap = bound + 1;
    s.next_in = (unsigned char *)(uintptr_t)data;
    s.avail_in = (uInt)len;
    s.next_out = out.p;
    s.avail_out = (uInt)bound;
    assert_int_equal(deflate(&s, Z_FINISH), Z_STREAM_END);
    out.n = bound - s.avail_out;
    deflateEnd(&s);
    return out;
}

/* A zip archive of the members; with zip64, every size and offset goes through zip64 fields. */
static buf zip_bytes(const zm *m, size_t n, bool zip64)
{
    buf b = {0}, cd = {0};
    uint64_t off[16], csz[16], usz[16];
    uint32_t crc[16];
    uint16_t meth[16], flg[16];
    assert_true(n <= 16);
    for (size_t i = 0; i < n; i++) {
        if (m[i].alias) {
            size_t j = (size_t)m[i].alias - 1;
            off[i] = off[j], csz[i] = csz[j], usz[i] = usz[j];
            crc[i] = crc[j], meth[i] = meth[j], flg[i] = flg[j];
            continue;
        }
        buf comp = {0};
        if (m[i].method == 8)
            comp = deflate_raw(m[i].data, m[i].len);
        else
            put(&comp, m[i].data, m[i].len);
        for (size_t k = 0; k < m[i].junk; k++)
            put_str(&comp, "\xaa");
        crc[i] = (uint32_t)crc32(0L, m[i].data, (uInt)m[i].len) ^ m[i].crc_xor;
        usz[i] = m[i].size_set ? m[i].size_set : (uint64_t)((int64_t)m[i].len + m[i].size_delta);
        csz[i] = comp.n;
        meth[i] = m[i].method_set ? m[i].method_set : (uint16_t)m[i].method;
        flg[i] = (uint16_t)(0x800 | (m[i].descriptor ? 8 : 0) | m[i].flags);
        off[i] = b.n;
        bool d = m[i].descriptor;
        put_le(&b, 0x04034b50, 4);
        put_le(&b, zip64 ? 45 : 20, 2);
        put_le(&b, flg[i], 2);
        put_le(&b, meth[i], 2);
        put_le(&b, 0, 2);
        put_le(&b, 0x21, 2);
        put_le(&b, d ? 0 : crc[i], 4);
        put_le(&b, d ? 0 : zip64 ? 0xffffffff : csz[i], 4);
        put_le(&b, d ? 0 : zip64 ? 0xffffffff : usz[i], 4);
        put_le(&b, strlen(m[i].name), 2);
        put_le(&b, zip64 ? 20 : 0, 2);
        put_str(&b, m[i].name);
        if (zip64) {
            put_le(&b, 1, 2);
            put_le(&b, 16, 2);
            put_le(&b, d ? 0 : usz[i], 8);
            put_le(&b, d ? 0 : csz[i], 8);
        }
        put(&b, comp.p, comp.n);
        free(comp.p);
        if (d) {
            put_le(&b, 0x08074b50, 4);
            put_le(&b, crc[i], 4);
            put_le(&b, csz[i], zip64 ? 8 : 4);
            put_le(&b, usz[i], zip64 ? 8 : 4);
        }
    }
    for (size_t i = 0; i < n; i++) {
        put_le(&cd, 0x02014b50, 4);
        put_le(&cd, 0x031e, 2);
        put_le(&cd, zip64 ? 45 : 20, 2);
        put_le(&cd, flg[i], 2);
        put_le(&cd, meth[i], 2);
        put_le(&cd, 0, 2);
        put_le(&cd, 0x21, 2);
        put_le(&cd, crc[i], 4);
        put_le(&cd, zip64 ? 0xffffffff : csz[i], 4);
        put_le(&cd, zip64 ? 0xffffffff : usz[i], 4);
        put_le(&cd, strlen(m[i].name), 2);
        put_le(&cd, zip64 ? 28 : 0, 2);
        put_le(&cd, 0, 2);
        put_le(&cd, 0, 2);
        put_le(&cd, 0, 2);
        put_le(&cd, 0, 4);
        put_le(&cd, zip64 ? 0xffffffff : off[i], 4);
        put_str(&cd, m[i].name);
        if (zip64) {
            put_le(&cd, 1, 2);
            put_le(&cd, 24, 2);
            put_le(&cd, usz[i], 8);
            put_le(&cd, csz[i], 8);
            put_le(&cd, off[i], 8);
        }
    }
    uint64_t cd_off = b.n;
    put(&b, cd.p, cd.n);
    if (zip64) {
        uint64_t rec = b.n;
        put_le(&b, 0x06064b50, 4);
        put_le(&b, 44, 8);
        put_le(&b, 45, 2);
        put_le(&b, 45, 2);
        put_le(&b, 0, 4);
        put_le(&b, 0, 4);
        put_le(&b, n, 8);
        put_le(&b, n, 8);
        put_le(&b, cd.n, 8);
        put_le(&b, cd_off, 8);
        put_le(&b, 0x07064b50, 4);
        put_le(&b, 0, 4);
        put_le(&b, rec, 8);
        put_le(&b, 1, 4);
    }
    put_le(&b, 0x06054b50, 4);
    put_le(&b, 0, 2);
    put_le(&b, 0, 2);
    put_le(&b, zip64 ? 0xffff : n, 2);
    put_le(&b, zip64 ? 0xffff : n, 2);
    put_le(&b, zip64 ? 0xffffffff : cd.n, 4);
    put_le(&b, zip64 ? 0xffffffff : cd_off, 4);
    put_le(&b, 0, 2);
    free(cd.p);
    return b;
}

static const char *write_zip(const char *name, const zm *m, size_t n, bool zip64)
{
    static char path[8][512];
    static int slot;
    char *p = path[slot++ % 8];
    scratch(p, 512, name);
    buf b = zip_bytes(m, n, zip64);
    write_bytes(p, b.p, b.n);
    free(b.p);
    return p;
}

/* The npy members used in crafted archives: f32 (2, 3) = 0..5, and u8 (4,) = 1..4 */
static buf f23(void)
{
    float v[6] = {0, 1, 2, 3, 4, 5};
    return npy_bytes(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", v,
                     sizeof v);
}

static buf u4(void)
{
    unsigned char v[4] = {1, 2, 3, 4};
    return npy_bytes(1, "{'descr': '|u1', 'fortran_order': False, 'shape': (4,), }", v, 4);
}

static void check_f23(nnp_dump *d, const char *name)
{
    const void *p;
    const nnp_record *r = rec_named(d, name, &p);
    assert_int_equal(r->dtype, NNP_F32);
    assert_int_equal(r->ndim, 2);
    assert_int_equal(r->shape[0], 2);
    assert_int_equal(r->shape[1], 3);
    for (int i = 0; i < 6; i++) {
        float f;
        memcpy(&f, (const unsigned char *)p + 4 * i, 4);
        assert_true(f == (float)i);
    }
}

static void check_u4(nnp_dump *d, const char *name)
{
    const void *p;
    const nnp_record *r = rec_named(d, name, &p);
    assert_int_equal(r->dtype, NNP_U8);
    assert_int_equal(r->ndim, 1);
    assert_int_equal(r->shape[0], 4);
    assert_memory_equal(p, "\1\2\3\4", 4);
}

/* ---- conformance files ---- */

static const char *valid_npy[] = {"f16", "f32", "f64", "i8", "i16", "i32", "i64", "u8", "u16",
                                  "u32", "u64", "bool", "scalar_f32", "empty_0x4", "fortran_f32",
                                  "bigendian_f32", "bigendian_i64"};
#define NVALID (sizeof valid_npy / sizeof *valid_npy)

static void test_expected_npz(void **state)
{
    (void)state;
    nnp_dump *exp = open_expected();
    assert_string_equal(nnp_dump_format(exp), "npz");
    assert_int_equal(nnp_dump_count(exp), NVALID);
    for (size_t i = 0; i < NVALID; i++)
        assert_true(nnp_dump_find(exp, valid_npy[i]) >= 0);
    nnp_dump_close(exp);
}

static void test_conformance_npy(void **state)
{
    (void)state;
    nnp_dump *exp = open_expected();
    for (size_t f = 0; f < NVALID; f++) {
        char rel[128], b[512];
        snprintf(rel, sizeof rel, "numpy/%s.npy", valid_npy[f]);
        const char *path = conf_path(b, sizeof b, rel);
        nnp_dump *d = open_ok(path);
        assert_string_equal(nnp_dump_format(d), "npy");
        assert_int_equal(nnp_dump_count(d), 1);
        const nnp_record *r = nnp_dump_record(d, 0);
        assert_string_equal(r->name, valid_npy[f]);
        assert_string_equal(r->file, path);
        assert_string_equal(r->module, "");
        compare_record(d, 0, exp, valid_npy[f]);
        nnp_dump_close(d);
    }
    nnp_dump_close(exp);
}

static void test_conformance_values(void **state)
{
    (void)state;
    char b[512];
    const void *p;
    nnp_dump *d = open_ok(conf_path(b, sizeof b, "numpy/scalar_f32.npy"));
    const nnp_record *r = rec_named(d, "scalar_f32", &p);
    assert_int_equal(r->ndim, 0);
    assert_int_equal(r->nelem, 1);
    assert_int_equal(r->nbytes, 4);
    float f;
    memcpy(&f, p, 4);
    assert_true(f == 3.5f);
    nnp_dump_close(d);

    d = open_ok(conf_path(b, sizeof b, "numpy/empty_0x4.npy"));
    r = rec_named(d, "empty_0x4", &p);
    assert_int_equal(r->ndim, 2);
    assert_int_equal(r->shape[0], 0);
    assert_int_equal(r->shape[1], 4);
    assert_int_equal(r->nelem, 0);
    assert_int_equal(r->nbytes, 0);
    nnp_dump_close(d);

    d = open_ok(conf_path(b, sizeof b, "numpy/bigendian_i64.npy"));
    r = rec_named(d, "bigendian_i64", &p);
    int64_t v;
    memcpy(&v, p, 8);
    assert_int_equal(v, 1);
    nnp_dump_close(d);
}

static void test_conformance_npz(void **state)
{
    (void)state;
    static const struct {
        const char *file;
        size_t count;
        const char *names[8], *expected[8];
    } cases[] = {
        {"numpy/stored.npz", 6,
         {"f32", "i64", "bool", "scalar_f32", "empty_0x4", "fortran_f32"},
         {"f32", "i64", "bool", "scalar_f32", "empty_0x4", "fortran_f32"}},
        {"numpy/deflated.npz", 4, {"f32", "f16", "u8", "bigendian_f32"},
         {"f32", "f16", "u8", "bigendian_f32"}},
        {"numpy/positional.npz", 2, {"arr_0", "arr_1"}, {"f32", "i8"}},
    };
    nnp_dump *exp = open_expected();
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        char b[512];
        const char *path = conf_path(b, sizeof b, cases[c].file);
        nnp_dump *d = open_ok(path);
        assert_string_equal(nnp_dump_format(d), "npz");
        assert_int_equal(nnp_dump_count(d), cases[c].count);
        for (size_t i = 0; i < cases[c].count; i++) {
            const nnp_record *r = nnp_dump_record(d, i);
            assert_string_equal(r->name, cases[c].names[i]); /* archive order */
            assert_string_equal(r->file, path);
            compare_record(d, i, exp, cases[c].expected[i]);
        }
        /* data asked for twice is the same, and survives nnp_dump_release */
        for (size_t i = 0; i < cases[c].count; i++) {
            const void *p1 = data_at(d, i);
            nnp_dump_release(d, i);
            assert_ptr_equal(p1, data_at(d, i));
            compare_record(d, i, exp, cases[c].expected[i]);
        }
        nnp_dump_close(d);
    }
    nnp_dump_close(exp);
}

static void test_conformance_unsupported(void **state)
{
    (void)state;
    static const struct {
        const char *file, *phrase, *phrase2;
    } cases[] = {
        {"numpy/unsupported_complex64.npy", "complex64 is not supported", "'<c8'"},
        {"numpy/unsupported_object.npy", "object array", "never unpickles"},
        {"numpy/unsupported_structured.npy", "structured", "not supported"},
        {"numpy/v2_header_structured.npy", "structured", "not supported"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        char b[512];
        const char *path = conf_path(b, sizeof b, cases[c].file);
        expect_open_error(path, NNP_ERR_UNSUPPORTED, path, "byte ", cases[c].phrase,
                          cases[c].phrase2, NULL);
    }
}

/* ---- crafted npy files ---- */

static void test_header_syntax_accepted(void **state)
{
    (void)state;
    static const struct {
        int major;
        const char *dict;
    } cases[] = {
        {1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"},
        {1, "{\"shape\": (2, 3,), \"fortran_order\": False, \"descr\": \"<f4\"}"},
        {1, "  {'fortran_order':False,'shape':(2,3),'descr':'<f4'}"},
        {1, "{\n 'descr' : '<f4' ,\n 'fortran_order' : False ,\n 'shape' : ( 2 , 3 ) ,\n}"},
        {1, "{'descr': '=f4', 'fortran_order': False, 'shape': (2L, 3L)}"},
        {2, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"},
        {3, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"},
        {1, "{'descr': 'f4', 'fortran_order': False, 'shape': (2, 3), }"},
    };
    float v[6] = {0, 1, 2, 3, 4, 5};
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        char name[32];
        snprintf(name, sizeof name, "ok%zu.npy", c);
        nnp_dump *d = open_ok(write_npy(name, cases[c].major, cases[c].dict, v, sizeof v));
        char rec[32];
        snprintf(rec, sizeof rec, "ok%zu", c);
        check_f23(d, rec);
        nnp_dump_close(d);
    }

    /* every supported descr, its dtype and byte order */
    static const struct {
        const char *descr;
        nnp_dtype dtype;
    } dts[] = {
        {"<f8", NNP_F64}, {"<f4", NNP_F32}, {"<f2", NNP_F16}, {"<i1", NNP_I8}, {"|i1", NNP_I8},
        {"<i2", NNP_I16}, {"<i4", NNP_I32}, {"<i8", NNP_I64}, {"|u1", NNP_U8}, {"<u2", NNP_U16},
        {"<u4", NNP_U32}, {"<u8", NNP_U64}, {"|b1", NNP_BOOL}, {">f8", NNP_F64},
        {">i4", NNP_I32}, {">u2", NNP_U16}, {">i1", NNP_I8}, {"=u8", NNP_U64},
    };
    for (size_t c = 0; c < sizeof dts / sizeof *dts; c++) {
        size_t es = nnp_dtype_size(dts[c].dtype);
        unsigned char data[16] = {0};
        data[dts[c].descr[0] == '>' ? es - 1 : 0] = 1; /* the value 1, or its smallest bit */
        char dict[128];
        snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (2,), }",
                 dts[c].descr);
        nnp_dump *d = open_ok(write_npy("dt.npy", 1, dict, data, 2 * es));
        const void *p;
        const nnp_record *r = rec_named(d, "dt", &p);
        assert_int_equal(r->dtype, dts[c].dtype);
        assert_int_equal(r->nbytes, 2 * es);
        unsigned char want[16] = {0};
        want[0] = 1; /* little-endian after conversion */
        assert_memory_equal(p, want, 2 * es);
        nnp_dump_close(d);
    }
}

static void test_layouts(void **state)
{
    (void)state;
    /* [[1,2,3],[4,5,6]] as big-endian int16, column-major: 1 4 2 5 3 6 */
    unsigned char be_f[12] = {0, 1, 0, 4, 0, 2, 0, 5, 0, 3, 0, 6};
    nnp_dump *d = open_ok(write_npy("bef.npy", 1,
                                    "{'descr': '>i2', 'fortran_order': True, 'shape': (2, 3), }",
                                    be_f, sizeof be_f));
    const void *p;
    rec_named(d, "bef", &p);
    int16_t want[6] = {1, 2, 3, 4, 5, 6};
    assert_memory_equal(p, want, sizeof want);
    nnp_dump_close(d);

    /* Fortran order of one dimension, or none, is C order */
    unsigned char one[4] = {9, 8, 7, 6};
    d = open_ok(write_npy("f1.npy", 1, "{'descr': '|u1', 'fortran_order': True, 'shape': (4,), }",
                          one, 4));
    rec_named(d, "f1", &p);
    assert_memory_equal(p, one, 4);
    nnp_dump_close(d);
    d = open_ok(write_npy("f0.npy", 1, "{'descr': '<u2', 'fortran_order': True, 'shape': (), }",
                          one, 2));
    const nnp_record *r = rec_named(d, "f0", &p);
    assert_int_equal(r->ndim, 0);
    assert_memory_equal(p, one, 2);
    nnp_dump_close(d);

    /* zero-size in Fortran order and big-endian */
    d = open_ok(write_npy("z.npy", 1, "{'descr': '>f8', 'fortran_order': True, 'shape': (3, 0), }",
                          NULL, 0));
    r = rec_named(d, "z", &p);
    assert_int_equal(r->nelem, 0);
    assert_int_equal(r->nbytes, 0);
    nnp_dump_close(d);

    /* a name without ".npy" is kept whole */
    d = open_ok(write_npy("plain", 1, "{'descr': '|u1', 'fortran_order': False, 'shape': (4,), }",
                          one, 4));
    rec_named(d, "plain", NULL);
    nnp_dump_close(d);
}

static void test_bad_npy_data_size(void **state)
{
    (void)state;
    const char *h = "{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }";
    npy_refused(1, h, 12, NNP_ERR_FORMAT, "truncated");
    npy_refused(1, h, 20, NNP_ERR_FORMAT, "trailing");
    npy_refused(1, h, 0, NNP_ERR_FORMAT, "truncated");
    npy_refused(2, "{'descr': '<f4', 'fortran_order': False, 'shape': (), }", 0, NNP_ERR_FORMAT,
                "truncated");
    npy_refused(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (0,), }", 1,
                NNP_ERR_FORMAT, "trailing");
    npy_refused(1, "{'descr': '<u8', 'fortran_order': False, "
                   "'shape': (4294967296, 4294967296), }", 0, NNP_ERR_FORMAT, "overflows");
}

static void test_bad_npy_preamble(void **state)
{
    (void)state;
    char b[512];
    buf n = npy_bytes(1, "{'descr': '|u1', 'fortran_order': False, 'shape': (1,), }", "x", 1);

    n.p[6] = 4; /* version 4.0 */
    write_bytes(scratch(b, sizeof b, "v4.npy"), n.p, n.n);
    expect_open_error(b, NNP_ERR_UNSUPPORTED, b, "byte 6", "version 4.0", NULL);
    n.p[6] = 1;
    n.p[7] = 1; /* version 1.1 */
    write_bytes(scratch(b, sizeof b, "v11.npy"), n.p, n.n);
    expect_open_error(b, NNP_ERR_UNSUPPORTED, b, "byte 6", "version 1.1", NULL);
    n.p[7] = 0;

    n.p[8] = 0xff; /* header length past the end */
    n.p[9] = 0x7f;
    write_bytes(scratch(b, sizeof b, "hlen.npy"), n.p, n.n);
    expect_open_error(b, NNP_ERR_FORMAT, b, "byte 8", "header length", NULL);

    write_bytes(scratch(b, sizeof b, "short7.npy"), n.p, 7);
    expect_open_error(b, NNP_ERR_FORMAT, b, "byte 7", NULL);
    write_bytes(scratch(b, sizeof b, "short9.npy"), n.p, 9);
    expect_open_error(b, NNP_ERR_FORMAT, b, "byte 9", NULL);
    free(n.p);

    /* a 2.0 header length is 4 bytes; the file ends inside it */
    write_bytes(scratch(b, sizeof b, "short2.npy"), "\x93NUMPY\x02\x00\x10\x00", 10);
    expect_open_error(b, NNP_ERR_FORMAT, b, "byte 10", NULL);
}

static void test_bad_npy_header(void **state)
{
    (void)state;
    static const struct {
        const char *dict, *phrase;
        nnp_status status;
    } cases[] = {
        {"['descr', '<f4']", "not a Python dict literal", NNP_ERR_FORMAT},
        {"", "not a Python dict literal", NNP_ERR_FORMAT},
        {"{'descr': '<f4', 'fortran_order': False}", "no 'shape' key", NNP_ERR_FORMAT},
        {"{'shape': (4,), 'fortran_order': False}", "no 'descr' key", NNP_ERR_FORMAT},
        {"{'descr': '<f4', 'shape': (4,)}", "no 'fortran_order' key", NNP_ERR_FORMAT},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (4)}", "not a tuple",
         NNP_ERR_FORMAT},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': 4}", "not a tuple", NNP_ERR_FORMAT},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': [4]}", "not a tuple",
         NNP_ERR_FORMAT},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (-4,)}", "negative", NNP_ERR_FORMAT},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (4.0,)}", "expected ','",
         NNP_ERR_FORMAT},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': ('4',)}", "non-negative integers",
         NNP_ERR_FORMAT},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (,)}", "non-negative integers",
         NNP_ERR_FORMAT},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (4,,)}", "non-negative integers",
         NNP_ERR_FORMAT},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (04,)}", "leading zero",
         NNP_ERR_FORMAT},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (4L,)}", "non-negative integers",
         NNP_ERR_FORMAT}, /* v3 only: Python 2 never wrote it */
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (18446744073709551616,)}", "64 bits",
         NNP_ERR_FORMAT},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (4,), 'extra': 1}",
         "unexpected key 'extra'", NNP_ERR_FORMAT},
        {"{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (4,)}",
         "appears twice", NNP_ERR_FORMAT},
        {"{'descr': '<f4', 'fortran_order': 0, 'shape': (4,)}", "True or False",
         NNP_ERR_FORMAT},
        {"{'descr': '<f4', 'fortran_order': Falsey, 'shape': (4,)}", "True or False",
         NNP_ERR_FORMAT},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (4,)} x", "after the header",
         NNP_ERR_FORMAT},
        {"{'descr': '<f4' 'fortran_order': False, 'shape': (4,)}", "expected ','",
         NNP_ERR_FORMAT},
        {"{'descr' '<f4', 'fortran_order': False, 'shape': (4,)}", "expected ':'",
         NNP_ERR_FORMAT},
        {"{descr: '<f4', 'fortran_order': False, 'shape': (4,)}", "quoted key", NNP_ERR_FORMAT},
        {"{'descr': '<f4, 'fortran_order': False, 'shape': (4,)}", "expected ','",
         NNP_ERR_FORMAT},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (4,)", "expected ',' or '}'",
         NNP_ERR_FORMAT},
        {"{'descr': 7, 'fortran_order': False, 'shape': (4,)}", "neither a dtype string",
         NNP_ERR_FORMAT},
        {"{'descr': '\\x3cf4', 'fortran_order': False, 'shape': (4,)}", "escape sequence",
         NNP_ERR_UNSUPPORTED},
        {"{'descr': [('a', '<f4'), ('b', [('c', '<i4')])], 'fortran_order': False, "
         "'shape': (4,)}", "structured", NNP_ERR_UNSUPPORTED},
        {"{'descr': [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]], "
         "'fortran_order': False, 'shape': (4,)}", "nested", NNP_ERR_FORMAT},
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        int major = strstr(cases[c].dict, "4L") ? 3 : 1;
        npy_refused(major, cases[c].dict, 16, cases[c].status, cases[c].phrase);
    }

    /* more than 64 dimensions */
    char dict[512] = "{'descr': '|u1', 'fortran_order': False, 'shape': (";
    for (int i = 0; i < 65; i++)
        strcat(dict, "1,");
    strcat(dict, ")}");
    npy_refused(1, dict, 1, NNP_ERR_UNSUPPORTED, "more than 64 dimensions");

    /* a 3.0 header must be UTF-8; 1.0 and 2.0 headers are latin-1 */
    npy_refused(3, "{'descr': '<f4', 'fortran_order': False, 'shape': (4,), '\xff': 1}", 16,
                NNP_ERR_FORMAT, "UTF-8");
    npy_refused(2, "{'descr': '<f4', 'fortran_order': False, 'shape': (4,), '\xff': 1}", 16,
                NNP_ERR_FORMAT, "unexpected key");
}

static void test_unsupported_dtypes(void **state)
{
    (void)state;
    static const struct {
        const char *descr, *phrase;
    } cases[] = {
        {"<c8", "complex64"},        {"<c16", "complex128"},    {"<f16", "long double"},
        {"|O", "object array"},      {"|S5", "byte strings"},   {"<U3", "unicode strings"},
        {"|V2", "void"},             {"<M8[ns]", "datetime64"}, {"<m8", "timedelta64"},
        {"<i16", "'<i16'"},          {"|b2", "'|b2'"},          {"<f3", "'<f3'"},
        {"float32", "'float32'"},    {"", "''"},                {"<", "'<'"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        char dict[128];
        snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (1,)}",
                 cases[c].descr);
        npy_refused(1, dict, 16, NNP_ERR_UNSUPPORTED, cases[c].phrase);
    }
}

/* ---- crafted npz archives ---- */

static void test_npz_built(void **state)
{
    (void)state;
    buf a = f23(), u = u4();
    for (int variant = 0; variant < 4; variant++) {
        bool zip64 = variant & 1, descr = variant & 2;
        zm m[] = {
            {.name = "a.npy", .data = a.p, .len = a.n, .method = 0, .descriptor = descr},
            {.name = "dir/", .data = "", .len = 0, .method = 0},
            {.name = "dir/b.npy", .data = a.p, .len = a.n, .method = 8, .descriptor = descr},
            {.name = "c", .data = u.p, .len = u.n, .method = 8, .descriptor = descr},
            {.name = "d.npy", .data = u.p, .len = u.n, .method = 0, .descriptor = descr},
        };
        char name[32];
        snprintf(name, sizeof name, "built%d.npz", variant);
        const char *path = write_zip(name, m, 5, zip64);
        nnp_dump *d = open_ok(path);
        assert_int_equal(nnp_dump_count(d), 4);
        assert_string_equal(nnp_dump_record(d, 0)->name, "a");
        assert_string_equal(nnp_dump_record(d, 1)->name, "dir/b");
        assert_string_equal(nnp_dump_record(d, 2)->name, "c");
        assert_string_equal(nnp_dump_record(d, 3)->name, "d");
        check_f23(d, "a");
        check_f23(d, "dir/b");
        check_u4(d, "c");
        check_u4(d, "d");
        nnp_dump_close(d);
    }

    /* deflated members in other layouts, and of no elements */
    unsigned char be_f[12] = {0, 1, 0, 4, 0, 2, 0, 5, 0, 3, 0, 6};
    buf bef = npy_bytes(1, "{'descr': '>i2', 'fortran_order': True, 'shape': (2, 3), }", be_f,
                        sizeof be_f);
    buf empty = npy_bytes(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (0, 4), }", "", 0);
    zm m2[] = {{.name = "bef.npy", .data = bef.p, .len = bef.n, .method = 8},
               {.name = "empty.npy", .data = empty.p, .len = empty.n, .method = 8}};
    nnp_dump *d = open_ok(write_zip("layouts.npz", m2, 2, false));
    const void *p;
    rec_named(d, "bef", &p);
    int16_t want[6] = {1, 2, 3, 4, 5, 6};
    assert_memory_equal(p, want, sizeof want);
    const nnp_record *r = rec_named(d, "empty", &p);
    assert_int_equal(r->nbytes, 0);
    nnp_dump_close(d);

    /* an archive with no members is an empty dump */
    d = open_ok(write_zip("none.npz", NULL, 0, false));
    assert_int_equal(nnp_dump_count(d), 0);
    nnp_dump_close(d);

    /* each of those spoiled is refused at open, being read whole there */
    zm m3[] = {{.name = "bef.npy", .data = bef.p, .len = bef.n, .method = 8, .crc_xor = 1}};
    const char *path = write_zip("bef_crc.npz", m3, 1, false);
    expect_open_error(path, NNP_ERR_FORMAT, path, "member 'bef.npy'", "CRC-32", NULL);
    zm m4[] = {{.name = "empty.npy", .data = empty.p, .len = empty.n, .method = 8, .crc_xor = 1}};
    path = write_zip("empty_crc.npz", m4, 1, false);
    expect_open_error(path, NNP_ERR_FORMAT, path, "member 'empty.npy'", "CRC-32", NULL);
    free(bef.p);
    free(empty.p);
    free(a.p);
    free(u.p);
}

static void test_npz_member_names(void **state)
{
    (void)state;
    buf u = u4();
    static const struct {
        const char *name, *phrase;
    } cases[] = {
        {"../evil.npy", "'..' component"}, {"a/../../evil.npy", "'..' component"},
        {"a\\..\\evil.npy", "'..' component"}, {"..", "'..' component"},
        {"/etc/evil.npy", "absolute path"}, {"\\evil.npy", "absolute path"},
        {"C:evil.npy", "drive letter"},     {"", "is empty"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        zm m[] = {{.name = cases[c].name, .data = u.p, .len = u.n}};
        char name[32];
        snprintf(name, sizeof name, "name%zu.npz", c);
        const char *path = write_zip(name, m, 1, false);
        expect_open_error(path, NNP_ERR_FORMAT, path, cases[c].phrase, "zip member name", NULL);
    }
    /* ".." inside a name is not a component */
    zm ok[] = {{.name = "a..b/..c.npy", .data = u.p, .len = u.n}};
    nnp_dump *d = open_ok(write_zip("dots.npz", ok, 1, false));
    check_u4(d, "a..b/..c");
    nnp_dump_close(d);

    /* a name that is not UTF-8, and the same name twice */
    zm bad[] = {{.name = "\xff.npy", .data = u.p, .len = u.n}};
    const char *path = write_zip("latin1.npz", bad, 1, false);
    expect_open_error(path, NNP_ERR_UNSUPPORTED, path, "UTF-8", NULL);
    zm dup[] = {{.name = "a.npy", .data = u.p, .len = u.n}, {.name = "a.npy", .data = u.p, .len = u.n}};
    path = write_zip("dup.npz", dup, 2, false);
    expect_open_error(path, NNP_ERR_FORMAT, path, "member 'a.npy'", "twice", NULL);
    free(u.p);
}

static void test_npz_sizes(void **state)
{
    (void)state;
    buf a = f23();
    const char *path;

    /* a stored member whose declared size is not its stored length */
    zm s1[] = {{.name = "a.npy", .data = a.p, .len = a.n, .size_delta = -4}};
    path = write_zip("stored_size.npz", s1, 1, false);
    expect_open_error(path, NNP_ERR_FORMAT, path, "member 'a.npy'", "differs from its size", NULL);

    /* a deflated member declared shorter than its npy: the npy rule finds it at open */
    zm s2[] = {{.name = "a.npy", .data = a.p, .len = a.n, .method = 8, .size_delta = -4}};
    path = write_zip("deflated_short.npz", s2, 1, false);
    expect_open_error(path, NNP_ERR_FORMAT, path, "member 'a.npy'", "truncated", NULL);
    zm s3[] = {{.name = "a.npy", .data = a.p, .len = a.n, .method = 8, .size_delta = 4}};
    path = write_zip("deflated_long.npz", s3, 1, false);
    expect_open_error(path, NNP_ERR_FORMAT, path, "member 'a.npy'", "trailing", NULL);

    /* an npy whose header agrees with the declared size, but which inflates to more or less:
     * found when the data is inflated */
    buf longer = {0};
    put(&longer, a.p, a.n);
    put(&longer, "0123", 4);
    zm s4[] = {{.name = "a.npy", .data = longer.p, .len = longer.n, .method = 8, .size_delta = -4}};
    path = write_zip("inflates_more.npz", s4, 1, false);
    nnp_dump *d = open_ok(path);
    const void *p = NULL;
    assert_int_equal(nnp_dump_data(d, 0, &p), NNP_ERR_FORMAT);
    assert_null(p);
    assert_non_null(strstr(nnp_last_error(), path));
    assert_non_null(strstr(nnp_last_error(), "inflates to more than"));
    nnp_dump_close(d);
    zm s5[] = {{.name = "a.npy", .data = a.p, .len = a.n - 4, .method = 8, .size_delta = 4}};
    path = write_zip("inflates_less.npz", s5, 1, false);
    d = open_ok(path);
    assert_int_equal(nnp_dump_data(d, 0, &p), NNP_ERR_FORMAT);
    assert_non_null(strstr(nnp_last_error(), path));
    assert_non_null(strstr(nnp_last_error(), "inflates to only"));
    nnp_dump_close(d);

    /* declared far beyond deflate's ratio: refused before inflating anything */
    zm s6[] = {{.name = "a.npy", .data = a.p, .len = a.n, .method = 8,
                .size_set = UINT64_C(3) << 30}};
    path = write_zip("bomb.npz", s6, 1, true);
    expect_open_error(path, NNP_ERR_FORMAT, path, "member 'a.npy'", "zip bomb", NULL);

    /* bytes after the end of the deflate stream */
    zm s7[] = {{.name = "a.npy", .data = a.p, .len = a.n, .method = 8, .junk = 3}};
    path = write_zip("junk.npz", s7, 1, false);
    d = open_ok(path);
    assert_int_equal(nnp_dump_data(d, 0, &p), NNP_ERR_FORMAT);
    assert_non_null(strstr(nnp_last_error(), "after the end of the deflate stream") ||
                    strstr(nnp_last_error(), "follow the end of the deflate stream"));
    nnp_dump_close(d);
    free(longer.p);
    free(a.p);
}

static void test_npz_crc(void **state)
{
    (void)state;
    buf a = f23();
    zm m[] = {{.name = "a.npy", .data = a.p, .len = a.n, .method = 8, .crc_xor = 0x80}};
    const char *path = write_zip("crc.npz", m, 1, false);
    nnp_dump *d = open_ok(path);
    const void *p = NULL;
    assert_int_equal(nnp_dump_data(d, 0, &p), NNP_ERR_FORMAT);
    assert_null(p);
    assert_non_null(strstr(nnp_last_error(), path));
    assert_non_null(strstr(nnp_last_error(), "CRC-32"));
    /* asked again, it fails again rather than handing out unchecked bytes */
    assert_int_equal(nnp_dump_data(d, 0, &p), NNP_ERR_FORMAT);
    nnp_dump_close(d);

    /* corrupt deflate data after the header: a stored block claiming more than is there */
    buf data = {0};
    put(&data, a.p, a.n);
    uint32_t x = 2463534242u;
    for (int i = 0; i < 4096; i++) { /* incompressible (xorshift), after the header */
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        put_le(&data, x, 1);
    }
    buf big = npy_bytes(1, "{'descr': '|u1', 'fortran_order': False, 'shape': (4248,), }",
                        data.p, data.n);
    buf z = zip_bytes((zm[]){{.name = "a.npy", .data = big.p, .len = big.n, .method = 8}}, 1,
                      false);
    assert_true(z.n > 4000);
    for (size_t i = 3000; i < 3100; i++)
        z.p[i] ^= 0x5a;
    char b[512];
    write_bytes(scratch(b, sizeof b, "corrupt.npz"), z.p, z.n);
    d = open_ok(b);
    assert_int_equal(nnp_dump_data(d, 0, &p), NNP_ERR_FORMAT);
    assert_non_null(strstr(nnp_last_error(), b));
    assert_non_null(strstr(nnp_last_error(), "member 'a.npy'"));
    nnp_dump_close(d);
    free(z.p);
    free(big.p);
    free(data.p);
    free(a.p);
}

/* A stored member is read in place; its CRC-32 is checked before its bytes are first used:
 * by nnp_dump_data, or, folded into the pass, by nnp_stats_compute; with checks deferred, by
 * nnp_dump_finish_checks. */
static void expect_crc_error(nnp_status st, const char *path, const char *member)
{
    assert_int_equal(st, NNP_ERR_FORMAT);
    const char *msg = nnp_last_error();
    assert_non_null(strstr(msg, path));
    assert_non_null(strstr(msg, member));
    assert_non_null(strstr(msg, "CRC-32 mismatch"));
    assert_null(strchr(msg, '\n'));
}

static void test_npz_stored_crc(void **state)
{
    (void)state;
    buf a = f23();
    zm bad[] = {{.name = "a.npy", .data = a.p, .len = a.n, .crc_xor = 0x80}};
    const char *path = write_zip("stored_crc.npz", bad, 1, false);
    nnp_dump *d = open_ok(path); /* opening reads the header only */
    const void *p = NULL;
    expect_crc_error(nnp_dump_data(d, 0, &p), path, "member 'a.npy'");
    expect_crc_error(nnp_dump_data(d, 0, &p), path, "member 'a.npy'"); /* and again */
    nnp_tensor_stats s;
    size_t i = 0;
    expect_crc_error(nnp_stats_compute(d, &i, 1, 1, &s), path, "member 'a.npy'");
    nnp_dump_close(d);

    /* deferred: handed out unchecked, then found by nnp_dump_finish_checks, which also ends
     * the deferral */
    d = open_ok(path);
    nnp_dump_defer_checks(d);
    assert_int_equal(nnp_dump_data(d, 0, &p), NNP_OK);
    expect_crc_error(nnp_dump_finish_checks(d), path, "member 'a.npy'");
    expect_crc_error(nnp_dump_data(d, 0, &p), path, "member 'a.npy'");
    nnp_dump_close(d);

    /* a member never handed out is not owed */
    d = open_ok(path);
    nnp_dump_defer_checks(d);
    assert_int_equal(nnp_dump_finish_checks(d), NNP_OK);
    nnp_dump_close(d);

    /* over a megabyte: stats folds the check into its pass, with one thread or two */
    size_t n = 300000;
    float *v = malloc(n * sizeof *v);
    assert_non_null(v);
    for (size_t k = 0; k < n; k++)
        v[k] = (float)k * 0.5f;
    buf big = npy_bytes(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (300000,), }", v,
                        n * sizeof *v);
    for (int spoil = 0; spoil < 2; spoil++)
        for (int threads = 1; threads <= 2; threads++) {
            zm m[] = {{.name = "big.npy", .data = big.p, .len = big.n,
                       .crc_xor = spoil ? 1u : 0u}};
            char name[64];
            snprintf(name, sizeof name, "big%d%d.npz", spoil, threads);
            path = write_zip(name, m, 1, false);
            d = open_ok(path);
            nnp_status st = nnp_stats_compute(d, &i, 1, threads, &s);
            if (spoil) {
                expect_crc_error(st, path, "member 'big.npy'");
                expect_crc_error(nnp_dump_data(d, 0, &p), path, "member 'big.npy'");
            } else {
                assert_int_equal(st, NNP_OK);
                assert_int_equal(s.count, n);
                nnp_dump_defer_checks(d); /* checked by the pass: nothing is owed */
                assert_int_equal(nnp_dump_data(d, 0, &p), NNP_OK);
                assert_int_equal(nnp_dump_finish_checks(d), NNP_OK);
                assert_memory_equal(p, v, n * sizeof *v);
            }
            nnp_dump_close(d);
        }
    free(big.p);
    free(v);
    free(a.p);
}

static void test_npz_structure(void **state)
{
    (void)state;
    buf a = f23(), u = u4();
    const char *path;
    char b[512];

    zm enc[] = {{.name = "a.npy", .data = a.p, .len = a.n, .flags = 1}};
    path = write_zip("encrypted.npz", enc, 1, false);
    expect_open_error(path, NNP_ERR_UNSUPPORTED, path, "member 'a.npy'", "encrypted", NULL);

    zm lzma[] = {{.name = "a.npy", .data = a.p, .len = a.n, .method_set = 14}};
    path = write_zip("lzma.npz", lzma, 1, false);
    expect_open_error(path, NNP_ERR_UNSUPPORTED, path, "member 'a.npy'", "LZMA", NULL);

    /* members sharing their bytes */
    zm alias[] = {{.name = "a.npy", .data = a.p, .len = a.n}, {.name = "a.npy", .alias = 1}};
    path = write_zip("overlap.npz", alias, 2, false);
    expect_open_error(path, NNP_ERR_FORMAT, path, "overlaps", NULL);

    /* the local header disagreeing with the central directory */
    buf z = zip_bytes((zm[]){{.name = "a.npy", .data = a.p, .len = a.n}}, 1, false);
    z.p[30] = 'b';
    write_bytes(scratch(b, sizeof b, "local_name.npz"), z.p, z.n);
    expect_open_error(b, NNP_ERR_FORMAT, b, "member 'a.npy'", "names another member", NULL);
    z.p[30] = 'a';
    z.p[8] = 8;
    write_bytes(scratch(b, sizeof b, "local_method.npz"), z.p, z.n);
    expect_open_error(b, NNP_ERR_FORMAT, b, "member 'a.npy'", "compression method 8", NULL);
    z.p[8] = 0;
    z.p[0] = 'X'; /* no longer found to be a zip by its first bytes: ask the zip reader */
    nnp_zip zip;
    assert_int_equal(nnp__zip_open("sig.zip", z.p, z.n, &zip), NNP_ERR_FORMAT);
    assert_non_null(strstr(nnp_last_error(), "sig.zip: member 'a.npy'"));
    assert_non_null(strstr(nnp_last_error(), "no local header"));
    assert_null(zip.entries);
    nnp__zip_close(&zip);
    z.p[0] = 'P';

    /* offsets out of bounds */
    size_t eocd = z.n - 22;
    unsigned char save = z.p[eocd + 16];
    z.p[eocd + 16] = 0xff; /* central directory offset */
    write_bytes(scratch(b, sizeof b, "cd_off.npz"), z.p, z.n);
    expect_open_error(b, NNP_ERR_FORMAT, b, "central directory", NULL);
    z.p[eocd + 16] = save;
    z.p[eocd + 8] = z.p[eocd + 10] = 9; /* 9 members declared */
    write_bytes(scratch(b, sizeof b, "cd_count.npz"), z.p, z.n);
    expect_open_error(b, NNP_ERR_FORMAT, b, "central directory", NULL);
    z.p[eocd + 8] = z.p[eocd + 10] = 1;
    z.p[eocd + 8] = 9;
    write_bytes(scratch(b, sizeof b, "cd_disk.npz"), z.p, z.n);
    expect_open_error(b, NNP_ERR_UNSUPPORTED, b, "multi-disk", NULL);
    z.p[eocd + 8] = 1;
    size_t central = eocd - (46 + 5);
    z.p[central + 42] = 200; /* local header offset */
    write_bytes(scratch(b, sizeof b, "local_off.npz"), z.p, z.n);
    expect_open_error(b, NNP_ERR_FORMAT, b, "member 'a.npy'", NULL);
    z.p[central + 42] = 0;
    z.p[central + 20] = 0xff; /* compressed size past the central directory */
    z.p[central + 24] = 0xff;
    write_bytes(scratch(b, sizeof b, "comp_size.npz"), z.p, z.n);
    expect_open_error(b, NNP_ERR_FORMAT, b, "member 'a.npy'", "run past", NULL);
    z.p[central + 20] = z.p[central + 24] = (unsigned char)a.n;

    /* truncated, and with bytes after the end record */
    write_bytes(scratch(b, sizeof b, "cut.npz"), z.p, z.n - 1);
    expect_open_error(b, NNP_ERR_FORMAT, b, "end of central directory", NULL);
    put_str(&z, "junk");
    write_bytes(scratch(b, sizeof b, "tail.npz"), z.p, z.n);
    expect_open_error(b, NNP_ERR_FORMAT, b, "end of central directory", NULL);
    write_bytes(scratch(b, sizeof b, "tiny.npz"), "PK\x05\x06", 4);
    expect_open_error(b, NNP_ERR_FORMAT, b, "too short", NULL);
    free(z.p);

    /* members that are not npy arrays, or bad ones */
    zm txt[] = {{.name = "readme.txt", .data = "hello, world", .len = 12}};
    path = write_zip("txt.npz", txt, 1, false);
    expect_open_error(path, NNP_ERR_FORMAT, path, "member 'readme.txt'", "byte 0", "magic", NULL);
    zm pt[] = {{.name = "archive/data.pkl", .data = "\x80\x02}q", .len = 4},
               {.name = "archive/data/0", .data = u.p, .len = 4}};
    path = write_zip("model.pt", pt, 2, false);
    /* a torch checkpoint goes to the torch reader, whose pickle machine finds this one cut */
    expect_open_error(path, NNP_ERR_FORMAT, path, "archive/data.pkl byte 3", "truncated", NULL);
    zm cut[] = {{.name = "a.npy", .data = a.p, .len = a.n - 1}};
    path = write_zip("cut_member.npz", cut, 1, false);
    expect_open_error(path, NNP_ERR_FORMAT, path, "member 'a.npy'", "truncated", NULL);
    zm cutd[] = {{.name = "a.npy", .data = a.p, .len = 40, .method = 8}};
    path = write_zip("cut_header.npz", cutd, 1, false);
    expect_open_error(path, NNP_ERR_FORMAT, path, "member 'a.npy'", "header length", NULL);
    zm tiny[] = {{.name = "a.npy", .data = a.p, .len = 3, .method = 8}};
    path = write_zip("tiny_member.npz", tiny, 1, false);
    expect_open_error(path, NNP_ERR_FORMAT, path, "member 'a.npy'", NULL);
    zm cplx[] = {{.name = "c.npy", .data = NULL, .len = 0, .method = 8}};
    buf c = npy_bytes(1, "{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }",
                      "\0\0\0\0\0\0\0\0", 8);
    cplx[0].data = c.p;
    cplx[0].len = c.n;
    path = write_zip("complex.npz", cplx, 1, false);
    expect_open_error(path, NNP_ERR_UNSUPPORTED, path, "member 'c.npy'", "complex64", NULL);
    free(c.p);

    /* two members that name the same record */
    zm twice[] = {{.name = "a.npy", .data = u.p, .len = u.n}, {.name = "a", .data = u.p, .len = u.n}};
    path = write_zip("same_record.npz", twice, 2, false);
    expect_open_error(path, NNP_ERR_FORMAT, path, "'a'", NULL);
    free(a.p);
    free(u.p);
}

/* ---- the zip reader on its own, as the torch reader will use it ---- */

static void test_zip_reader(void **state)
{
    (void)state;
    char b[512];
    nnp_map m;
    if (nnp__map_file(conf_path(b, sizeof b, "torch/state_dict.pt"), &m) != NNP_OK)
        skip();
    nnp_zip z;
    assert_int_equal(nnp__zip_open(b, m.base, m.size, &z), NNP_OK);
    assert_int_equal(z.count, 16);
    const nnp_zip_entry *pkl = nnp__zip_find(&z, "state_dict/data.pkl");
    assert_non_null(pkl);
    assert_null(nnp__zip_find(&z, "state_dict/data.pk"));
    assert_null(nnp__zip_find(&z, "zzz"));
    assert_int_equal(pkl->method, NNP_ZIP_STORED);
    unsigned char *all;
    assert_int_equal(nnp__zip_extract_alloc(&z, pkl, &all), NNP_OK);
    assert_int_equal(all[0], 0x80); /* pickle protocol 2 */
    assert_int_equal(all[pkl->size - 1], '.'); /* STOP */
    unsigned char head[2];
    assert_int_equal(nnp__zip_peek(&z, pkl, head, 2), NNP_OK);
    assert_memory_equal(head, all, 2);
    free(all);
    const nnp_zip_entry *d0 = nnp__zip_find(&z, "state_dict/data/0");
    assert_non_null(d0);
    assert_int_equal(d0->size, 128);
    assert_non_null(nnp__zip_stored_data(&z, d0));
    /* every member's CRC holds */
    for (size_t i = 0; i < z.count; i++)
        assert_int_equal(nnp__zip_extract(&z, &z.entries[i], 0, NULL, 0), NNP_OK);
    nnp__zip_close(&z);
    nnp__unmap(&m);

    /* a deflated member read in part */
    buf a = f23();
    buf zz = zip_bytes((zm[]){{.name = "x", .data = a.p, .len = a.n, .method = 8}}, 1, false);
    assert_int_equal(nnp__zip_open("mem.zip", zz.p, zz.n, &z), NNP_OK);
    assert_int_equal(z.count, 1);
    assert_null(nnp__zip_stored_data(&z, &z.entries[0]));
    unsigned char tail[8];
    assert_int_equal(nnp__zip_extract(&z, &z.entries[0], a.n - 8, tail, 8), NNP_OK);
    assert_memory_equal(tail, a.p + a.n - 8, 8);
    assert_int_equal(nnp__zip_peek(&z, &z.entries[0], tail, 8), NNP_OK);
    assert_memory_equal(tail, a.p, 8);
    nnp__zip_close(&z);
    free(zz.p);
    free(a.p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_expected_npz),
        cmocka_unit_test(test_conformance_npy),
        cmocka_unit_test(test_conformance_values),
        cmocka_unit_test(test_conformance_npz),
        cmocka_unit_test(test_conformance_unsupported),
        cmocka_unit_test(test_header_syntax_accepted),
        cmocka_unit_test(test_layouts),
        cmocka_unit_test(test_bad_npy_data_size),
        cmocka_unit_test(test_bad_npy_preamble),
        cmocka_unit_test(test_bad_npy_header),
        cmocka_unit_test(test_unsupported_dtypes),
        cmocka_unit_test(test_npz_built),
        cmocka_unit_test(test_npz_member_names),
        cmocka_unit_test(test_npz_sizes),
        cmocka_unit_test(test_npz_crc),
        cmocka_unit_test(test_npz_stored_crc),
        cmocka_unit_test(test_npz_structure),
        cmocka_unit_test(test_zip_reader),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
