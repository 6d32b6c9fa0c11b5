/*
 * test_torch.c - the PyTorch checkpoint reader: every tensor of the conformance state_dict.pt
 * against EXPECTED_state_dict.npz (views, a transposed tensor, a 0-dim scalar and a zero-size
 * tensor included), the nested, linear, bare-tensor and legacy files, the hostile ones refused
 * with nothing run, and checkpoints built here (pickles written opcode by opcode, zipped with
 * zlib) for each rule of the restricted unpickler and of the tensor geometry checks.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <sys/stat.h>
#include <zlib.h>

#include "testutil.h"

#include "nnparity.h"
#include "internal.h"

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

static size_t index_of(nnp_dump *d, const char *name)
{
    int64_t i = nnp_dump_find(d, name);
    if (i < 0)
        fail_msg("%s: no record '%s'", nnp_dump_path(d), name);
    return (size_t)i;
}

/* A record's values as doubles (malloc'd; at least one slot). */
static double *values_f64(nnp_dump *d, size_t i)
{
    const nnp_record *r = nnp_dump_record(d, i);
    double *v = malloc((size_t)(r->nelem ? r->nelem : 1) * sizeof *v);
    assert_non_null(v);
    nnp_convert_to_f64(r->dtype, data_at(d, i), (size_t)r->nelem, v);
    return v;
}

/* Element i of float32 / int16 data that may sit at any byte offset in a mapping (a zip
 * member is not aligned). */
static float f32_at(const void *p, size_t i)
{
    float v;
    memcpy(&v, (const unsigned char *)p + i * sizeof v, sizeof v);
    return v;
}

static uint16_t u16_at(const void *p, size_t i)
{
    uint16_t v;
    memcpy(&v, (const unsigned char *)p + i * sizeof v, sizeof v);
    return v;
}

static void assert_shape(const nnp_record *r, uint32_t ndim, const uint64_t *shape)
{
    if (r->ndim != ndim)
        fail_msg("'%s' has %u dimensions, expected %u", r->name, r->ndim, ndim);
    for (uint32_t k = 0; k < ndim; k++)
        if (r->shape[k] != shape[k])
            fail_msg("'%s' dimension %u is %llu, expected %llu", r->name, k,
                     (unsigned long long)r->shape[k], (unsigned long long)shape[k]);
}

static void put_byte(buf *b, unsigned c)
{
    unsigned char x = (unsigned char)c;
    put(b, &x, 1);
}

/* ---- zips ---- */

typedef struct member {
    const char *name;
    const void *data;
    size_t len;
    bool deflate;
} member;

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

/* A zip as torch writes it (local headers, then the central directory), written to `path`. */
static void write_zip(const char *path, const member *m, size_t n)
{
    buf b = {0}, cd = {0};
    for (size_t i = 0; i < n; i++) {
        buf comp = {0};
        if (m[i].deflate)
            comp = deflate_raw(m[i].data, m[i].len);
        else
            put(&comp, m[i].data, m[i].len);
        uint32_t crc = (uint32_t)crc32(0L, m[i].data, (uInt)m[i].len);
        uint64_t off = b.n;
        size_t nl = strlen(m[i].name);
        put_le(&b, 0x04034b50, 4);
        put_le(&b, 20, 2);
        put_le(&b, 0, 2);
        put_le(&b, m[i].deflate ? 8 : 0, 2);
        put_le(&b, 0, 4); /* time, date */
        put_le(&b, crc, 4);
        put_le(&b, comp.n, 4);
        put_le(&b, m[i].len, 4);
        put_le(&b, nl, 2);
        put_le(&b, 0, 2);
        put(&b, m[i].name, nl);
        put(&b, comp.p, comp.n);
        put_le(&cd, 0x02014b50, 4);
        put_le(&cd, 20, 2);
        put_le(&cd, 20, 2);
        put_le(&cd, 0, 2);
        put_le(&cd, m[i].deflate ? 8 : 0, 2);
        put_le(&cd, 0, 4);
        put_le(&cd, crc, 4);
        put_le(&cd, comp.n, 4);
        put_le(&cd, m[i].len, 4);
        put_le(&cd, nl, 2);
        put_le(&cd, 0, 2);
        put_le(&cd, 0, 2);
        put_le(&cd, 0, 2);
        put_le(&cd, 0, 2);
        put_le(&cd, 0, 4);
        put_le(&cd, off, 4);
        put(&cd, m[i].name, nl);
        free(comp.p);
    }
    uint64_t cd_off = b.n;
    put(&b, cd.p, cd.n);
    put_le(&b, 0x06054b50, 4);
    put_le(&b, 0, 4);
    put_le(&b, n, 2);
    put_le(&b, n, 2);
    put_le(&b, cd.n, 4);
    put_le(&b, cd_off, 4);
    put_le(&b, 0, 2);
    write_bytes(path, b.p, b.n);
    free(b.p);
    free(cd.p);
}

/* ---- pickles, opcode by opcode ---- */

static void p_str(buf *b, const char *s)
{
    put_byte(b, 'X');
    put_le(b, strlen(s), 4);
    put(b, s, strlen(s));
}

static void p_int(buf *b, int64_t v)
{
    if (v >= 0 && v < 256) {
        put_byte(b, 'K');
        put_byte(b, (unsigned)v);
    } else {
        put_byte(b, 0x8a);
        put_byte(b, 8);
        put_le(b, (uint64_t)v, 8);
    }
}

static void p_global(buf *b, const char *mod, const char *name)
{
    put_byte(b, 'c');
    put(b, mod, strlen(mod));
    put_byte(b, '\n');
    put(b, name, strlen(name));
    put_byte(b, '\n');
}

static void p_tuple(buf *b, const int64_t *v, int n)
{
    put_byte(b, '(');
    for (int i = 0; i < n; i++)
        p_int(b, v[i]);
    put_byte(b, 't');
}

/* _rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict()) */
static void p_tensor(buf *b, const char *storage_type, const char *key, int64_t numel,
                     int64_t offset, int nd, const int64_t *size, const int64_t *stride)
{
    p_global(b, "torch._utils", "_rebuild_tensor_v2");
    put_byte(b, '(');
    put_byte(b, '(');
    p_str(b, "storage");
    p_global(b, "torch", storage_type);
    p_str(b, key);
    p_str(b, "cpu");
    p_int(b, numel);
    put_byte(b, 't');
    put_byte(b, 'Q');
    p_int(b, offset);
    p_tuple(b, size, nd);
    p_tuple(b, stride, nd);
    put_byte(b, 0x89);
    p_global(b, "collections", "OrderedDict");
    put_byte(b, ')');
    put_byte(b, 'R');
    put_byte(b, 't');
    put_byte(b, 'R');
}

static buf p_begin(void)
{
    buf b = {0};
    put_byte(&b, 0x80);
    put_byte(&b, 2);
    return b;
}

static void p_end(buf *b)
{
    put_byte(b, '.');
}

/* A checkpoint "<name>" in the scratch directory: archive/data.pkl holds the pickle, and
 * archive/data/0 the 24 floats 0..23 (archive/data/1: the 16 int16 0x0102 * i). */
static float storage0[24];
static int16_t storage1[16];

static const char *write_ckpt_with(const char *name, const buf *pickle, const member *extra,
                                   size_t nextra, bool deflate)
{
    static char paths[8][512];
    static int slot;
    char *path = paths[slot++ % 8];
    scratch(path, 512, name);
    for (int i = 0; i < 24; i++)
        storage0[i] = (float)i;
    for (int i = 0; i < 16; i++)
        storage1[i] = (int16_t)(0x0102 * i);
    member m[8] = {
        {"archive/data.pkl", pickle->p, pickle->n, deflate},
        {"archive/data/0", storage0, sizeof storage0, deflate},
        {"archive/data/1", storage1, sizeof storage1, false},
    };
    size_t n = 3;
    for (size_t i = 0; i < nextra && n < 8; i++)
        m[n++] = extra[i];
    write_zip(path, m, n);
    return path;
}

static const char *write_ckpt(const char *name, buf *pickle)
{
    const char *path = write_ckpt_with(name, pickle, NULL, 0, false);
    free(pickle->p);
    pickle->p = NULL;
    return path;
}

/* ---- the conformance files ---- */

static void test_state_dict(void **state)
{
    (void)state;
    char a[512], b[512];
    nnp_dump *d = open_ok(conf_path(a, sizeof a, "torch/state_dict.pt"));
    nnp_dump *e = open_ok(conf_path(b, sizeof b, "torch/EXPECTED_state_dict.npz"));
    assert_string_equal(nnp_dump_format(d), "torch");
    assert_int_equal(nnp_dump_count(d), nnp_dump_count(e));
    /* pickle order is the state dict's order */
    static const char *const order[] = {"layer.weight", "layer.bias", "half", "bf16", "f64",
                                        "i64", "i32", "i16", "i8", "u8", "bool", "scalar",
                                        "empty", "view_a", "view_b", "transposed", "base"};
    assert_int_equal(nnp_dump_count(d), sizeof order / sizeof *order);
    for (size_t i = 0; i < nnp_dump_count(d); i++)
        assert_string_equal(nnp_dump_record(d, i)->name, order[i]);

    for (size_t j = 0; j < nnp_dump_count(e); j++) {
        const nnp_record *x = nnp_dump_record(e, j);
        size_t i = index_of(d, x->name);
        const nnp_record *r = nnp_dump_record(d, i);
        if (nnp_dtype_class_of(r->dtype) != nnp_dtype_class_of(x->dtype))
            fail_msg("'%s' is %s, EXPECTED is %s", r->name, nnp_dtype_name(r->dtype),
                     nnp_dtype_name(x->dtype));
        assert_shape(r, x->ndim, x->shape);
        assert_int_equal(r->nelem, x->nelem);
        assert_string_equal(r->file, a);
        double *got = values_f64(d, i), *want = values_f64(e, j);
        for (uint64_t k = 0; k < r->nelem; k++)
            if (!(got[k] == want[k] || (isnan(got[k]) && isnan(want[k]))))
                fail_msg("'%s' element %llu is %.17g, EXPECTED %.17g", r->name,
                         (unsigned long long)k, got[k], want[k]);
        if (r->dtype == x->dtype && r->nbytes)
            assert_memory_equal(data_at(d, i), data_at(e, j), (size_t)r->nbytes);
        free(got);
        free(want);
    }
    /* dtypes come from the storage types */
    static const struct {
        const char *name;
        nnp_dtype dtype;
    } dt[] = {{"layer.weight", NNP_F32}, {"half", NNP_F16}, {"bf16", NNP_BF16},
              {"f64", NNP_F64},          {"i64", NNP_I64},  {"i32", NNP_I32},
              {"i16", NNP_I16},          {"i8", NNP_I8},    {"u8", NNP_U8},
              {"bool", NNP_BOOL}};
    for (size_t k = 0; k < sizeof dt / sizeof *dt; k++)
        assert_int_equal(nnp_dump_record(d, index_of(d, dt[k].name))->dtype, dt[k].dtype);
    /* the 0-dim scalar and the zero-size tensor */
    const nnp_record *s = nnp_dump_record(d, index_of(d, "scalar"));
    assert_int_equal(s->ndim, 0);
    assert_int_equal(s->nelem, 1);
    const nnp_record *z = nnp_dump_record(d, index_of(d, "empty"));
    assert_int_equal(z->nelem, 0);
    assert_int_equal(z->nbytes, 0);
    /* a gathered copy is made once: the pointer stays */
    size_t t = index_of(d, "transposed");
    assert_ptr_equal(data_at(d, t), data_at(d, t));
    /* the transposed tensor is its base read in the other order */
    const void *tr = data_at(d, t), *base = data_at(d, index_of(d, "base"));
    for (size_t i = 0; i < 6; i++)
        for (size_t j = 0; j < 4; j++)
            assert_true(f32_at(tr, i * 4 + j) == f32_at(base, j * 6 + i));
    nnp_dump_close(d);
    nnp_dump_close(e);
}

static void test_nested(void **state)
{
    (void)state;
    char a[512];
    nnp_dump *d = open_ok(conf_path(a, sizeof a, "torch/nested.pt"));
    assert_int_equal(nnp_dump_count(d), 2);
    assert_string_equal(nnp_dump_record(d, 0)->name, "model.blocks.0.w");
    assert_string_equal(nnp_dump_record(d, 1)->name, "model.blocks.1.w");
    assert_shape(nnp_dump_record(d, 0), 2, (const uint64_t[]){8, 4});
    assert_int_equal(nnp_dump_record(d, 0)->dtype, NNP_F32);
    assert_shape(nnp_dump_record(d, 1), 2, (const uint64_t[]){3, 3});
    assert_int_equal(nnp_dump_record(d, 1)->dtype, NNP_F16);
    /* plain leaves become metadata under their dotted names */
    assert_string_equal(nnp_dump_meta_get(d, "step"), "12");
    assert_string_equal(nnp_dump_meta_get(d, "name"), "ckpt");
    assert_string_equal(nnp_dump_meta_get(d, "lr"), "0.001");
    assert_string_equal(nnp_dump_meta_get(d, "flags.0"), "True");
    assert_string_equal(nnp_dump_meta_get(d, "flags.1"), "None");
    assert_int_equal(nnp_dump_meta_count(d), 5);
    nnp_dump_close(d);
}

static void test_linear_and_bare(void **state)
{
    (void)state;
    char a[512];
    nnp_dump *d = open_ok(conf_path(a, sizeof a, "torch/linear_state_dict.pt"));
    assert_int_equal(nnp_dump_count(d), 2);
    assert_string_equal(nnp_dump_record(d, 0)->name, "weight");
    assert_shape(nnp_dump_record(d, 0), 2, (const uint64_t[]){2, 3});
    assert_string_equal(nnp_dump_record(d, 1)->name, "bias");
    assert_shape(nnp_dump_record(d, 1), 1, (const uint64_t[]){2});
    /* the state dict's _metadata attribute (set by BUILD) is dropped */
    assert_int_equal(nnp_dump_meta_count(d), 0);
    double *w = values_f64(d, 0);
    for (int i = 0; i < 6; i++)
        assert_true(isfinite(w[i]));
    free(w);
    nnp_dump_close(d);

    d = open_ok(conf_path(a, sizeof a, "torch/bare_tensor.pt"));
    assert_int_equal(nnp_dump_count(d), 1);
    assert_string_equal(nnp_dump_record(d, 0)->name, "bare_tensor");
    assert_shape(nnp_dump_record(d, 0), 2, (const uint64_t[]){8, 4});
    nnp_dump_close(d);
}

static void test_legacy(void **state)
{
    (void)state;
    char a[512];
    conf_path(a, sizeof a, "torch/legacy_format.pt");
    expect_open_error(a, NNP_ERR_UNSUPPORTED, a, "legacy serialization format", "torch >= 1.6",
                      "torch.save", NULL);
    /* found by content, whatever the name: the same bytes as "model.safetensors" */
    char b[512];
    FILE *f = fopen(a, "rb");
    assert_non_null(f);
    unsigned char bytes[4096];
    size_t n = fread(bytes, 1, sizeof bytes, f);
    fclose(f);
    write_bytes(scratch(b, sizeof b, "model.safetensors"), bytes, n);
    expect_open_error(b, NNP_ERR_UNSUPPORTED, b, "legacy serialization format", NULL);
}

#define PWNED "/tmp/nnparity_pwned"

static void test_hostile_conformance(void **state)
{
    (void)state;
    char a[512];
    /* hostile_os_system.pt calls posix.system("echo PWNED > /tmp/nnparity_pwned") */
    if (unlink(PWNED) != 0 && errno != ENOENT)
        fail_msg("cannot remove a stale %s: %s", PWNED, strerror(errno));
    conf_path(a, sizeof a, "torch/hostile_os_system.pt");
    expect_open_error(a, NNP_ERR_UNSUPPORTED, a, "archive/data.pkl byte 13",
                      "global 'posix.system' is not allowed", "restricted unpickler", NULL);
    struct stat st;
    assert_int_equal(stat(PWNED, &st), -1);
    assert_int_equal(errno, ENOENT);

    /* hostile_builtins_eval.pt evaluates "print(1)+1": nothing may reach stdout */
    char out[512];
    scratch(out, sizeof out, "stdout.txt");
    fflush(stdout);
    int saved = dup(1), fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(saved >= 0 && fd >= 0);
    assert_int_equal(dup2(fd, 1), 1);
    close(fd);
    conf_path(a, sizeof a, "torch/hostile_builtins_eval.pt");
    nnp_dump *d = (nnp_dump *)1;
    nnp_status s = nnp_dump_open(a, &d);
    fflush(stdout);
    assert_int_equal(dup2(saved, 1), 1);
    close(saved);
    assert_int_equal(s, NNP_ERR_UNSUPPORTED);
    assert_null(d);
    assert_non_null(strstr(nnp_last_error(), "global 'builtins.eval' is not allowed"));
    assert_non_null(strstr(nnp_last_error(), "byte 2"));
    assert_int_equal(stat(out, &st), 0);
    assert_int_equal(st.st_size, 0);

    conf_path(a, sizeof a, "torch/hostile_unknown_opcode.pt");
    expect_open_error(a, NNP_ERR_FORMAT, a, "archive/data.pkl byte 5", "unknown opcode 0xff",
                      NULL);
}

/* ---- built checkpoints ---- */

/* A dict {name: tensor} holding one tensor over storage 0 (24 floats). */
static const char *one_tensor(const char *file, int64_t offset, int nd, const int64_t *size,
                              const int64_t *stride)
{
    buf b = p_begin();
    put_byte(&b, '}');
    p_str(&b, "t");
    p_tensor(&b, "FloatStorage", "0", 24, offset, nd, size, stride);
    put_byte(&b, 's');
    p_end(&b);
    return write_ckpt(file, &b);
}

static void test_views(void **state)
{
    (void)state;
    /* every element of a strided 3-d view with an offset, gathered into C order */
    const char *path = one_tensor("strided.pt", 1, 3, (const int64_t[]){2, 3, 2},
                                  (const int64_t[]){1, 6, 3});
    nnp_dump *d = open_ok(path);
    const void *v = data_at(d, 0);
    for (int i = 0, k = 0; i < 2; i++)
        for (int j = 0; j < 3; j++)
            for (int l = 0; l < 2; l++, k++)
                assert_true(f32_at(v, (size_t)k) == (float)(1 + i * 1 + j * 6 + l * 3));
    nnp_dump_close(d);

    /* a contiguous view at an offset points into the storage; size-1 dims take any stride */
    path = one_tensor("offset.pt", 20, 2, (const int64_t[]){1, 4}, (const int64_t[]){999, 1});
    d = open_ok(path);
    v = data_at(d, 0);
    for (int k = 0; k < 4; k++)
        assert_true(f32_at(v, (size_t)k) == (float)(20 + k));
    nnp_dump_close(d);

    /* stride 0 (an expanded view) repeats the element */
    path = one_tensor("expand.pt", 5, 2, (const int64_t[]){3, 2}, (const int64_t[]){0, 1});
    d = open_ok(path);
    v = data_at(d, 0);
    for (int k = 0; k < 6; k++)
        assert_true(f32_at(v, (size_t)k) == (float)(5 + k % 2));
    nnp_dump_close(d);

    /* a zero-size view reads nothing, wherever it points */
    path = one_tensor("empty_far.pt", 1000, 2, (const int64_t[]){0, 3}, (const int64_t[]){3, 1});
    d = open_ok(path);
    assert_int_equal(nnp_dump_record(d, 0)->nbytes, 0);
    nnp_dump_close(d);

    /* the last element a view reaches is the storage's last: accepted */
    path = one_tensor("last.pt", 3, 2, (const int64_t[]){3, 3}, (const int64_t[]){7, 3});
    d = open_ok(path);
    assert_true(f32_at(data_at(d, 0), 8) == 23.0f);
    nnp_dump_close(d);
}

/* A view read a range at a time (what stats and comparing do instead of copying it whole):
 * every range is the same elements as the whole copy, whatever row it starts in. */
static void test_view_ranges(void **state)
{
    (void)state;
    const char *path = one_tensor("ranges.pt", 1, 3, (const int64_t[]){2, 3, 2},
                                  (const int64_t[]){1, 6, 3});
    nnp_dump *d = open_ok(path), *e = open_ok(path);
    bool ranged = false;
    assert_int_equal(nnp__dump_begin_ranged(d, 0, &ranged), NNP_OK);
    assert_true(ranged);
    float want[12], got[12];
    memcpy(want, data_at(e, 0), sizeof want);
    for (uint64_t first = 0; first < 12; first++)
        for (uint64_t n = 1; first + n <= 12; n++) {
            memset(got, 0xff, sizeof got);
            nnp__dump_read_range(d, 0, first, n, got);
            assert_memory_equal(got, want + first, n * sizeof *got);
        }
    /* compared by ranges against the copy of the same view: identical */
    nnp_metrics m;
    assert_int_equal(nnp__compare_records(d, 0, e, 0, NULL, &m), NNP_OK);
    assert_int_equal(m.count, 12);
    assert_true(m.max_abs == 0 && m.rel_l2 == 0);
    /* once copied, a view is read from its copy */
    assert_non_null(data_at(d, 0));
    assert_int_equal(nnp__dump_begin_ranged(d, 0, &ranged), NNP_OK);
    assert_false(ranged);
    nnp_dump_close(d);
    nnp_dump_close(e);

    /* a contiguous tensor is read in place, never by ranges */
    path = one_tensor("in_place.pt", 0, 1, (const int64_t[]){24}, (const int64_t[]){1});
    d = open_ok(path);
    assert_int_equal(nnp__dump_begin_ranged(d, 0, &ranged), NNP_OK);
    assert_false(ranged);
    nnp_dump_close(d);
}

static void test_geometry_refused(void **state)
{
    (void)state;
    static const struct {
        const char *file;
        int64_t offset;
        int nd;
        int64_t size[3], stride[3];
        const char *phrase;
    } cases[] = {
        {"offset_past.pt", 21, 1, {4}, {1}, "reach index 24"},
        {"offset_huge.pt", INT64_MAX, 1, {2}, {1}, "9223372036854775808"},
        {"stride_past.pt", 0, 2, {2, 2}, {23, 1}, "reach index 24"},
        {"stride_overflow.pt", 0, 2, {4, 2}, {INT64_MAX, 1}, "beyond"},
        {"size_past.pt", 0, 1, {25}, {1}, "reach index 24"},
        {"shape_overflow.pt", 0, 3, {1LL << 40, 1LL << 40, 2}, {0, 0, 0}, "overflows 64 bits"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        const char *path = one_tensor(cases[c].file, cases[c].offset, cases[c].nd,
                                      cases[c].size, cases[c].stride);
        expect_open_error(path, NNP_ERR_FORMAT, path, "tensor 't'", "archive/data.pkl byte",
                          cases[c].phrase, NULL);
    }
    /* negative offsets, sizes and strides (LONG1 of 8 bytes) */
    const char *path =
        one_tensor("neg_offset.pt", -1, 1, (const int64_t[]){1}, (const int64_t[]){1});
    expect_open_error(path, NNP_ERR_FORMAT, path, "_rebuild_tensor_v2", NULL);
    path = one_tensor("neg_stride.pt", 8, 1, (const int64_t[]){2}, (const int64_t[]){-1});
    expect_open_error(path, NNP_ERR_FORMAT, path, "stride", ">= 0", NULL);
    path = one_tensor("neg_size.pt", 0, 1, (const int64_t[]){-2}, (const int64_t[]){1});
    expect_open_error(path, NNP_ERR_FORMAT, path, "size", ">= 0", NULL);
    /* sizes and strides of different lengths */
    buf b = p_begin();
    p_global(&b, "torch._utils", "_rebuild_tensor_v2");
    put_byte(&b, '(');
    put_byte(&b, '(');
    p_str(&b, "storage");
    p_global(&b, "torch", "FloatStorage");
    p_str(&b, "0");
    p_str(&b, "cpu");
    p_int(&b, 24);
    put_byte(&b, 't');
    put_byte(&b, 'Q');
    p_int(&b, 0);
    p_tuple(&b, (const int64_t[]){2, 2}, 2);
    p_tuple(&b, (const int64_t[]){1}, 1);
    put_byte(&b, 0x89);
    put_byte(&b, '}');
    put_byte(&b, 't');
    put_byte(&b, 'R');
    p_end(&b);
    path = write_ckpt("strides_len.pt", &b);
    expect_open_error(path, NNP_ERR_FORMAT, path, "2 sizes but 1 strides", NULL);
}

static void test_storages(void **state)
{
    (void)state;
    /* a persistent id naming a member that is not there */
    buf b = p_begin();
    p_tensor(&b, "FloatStorage", "7", 24, 0, 1, (const int64_t[]){4}, (const int64_t[]){1});
    p_end(&b);
    const char *path = write_ckpt("missing.pt", &b);
    expect_open_error(path, NNP_ERR_FORMAT, path, "archive/data.pkl byte",
                      "no member 'archive/data/7'", "missing storage", NULL);
    /* a key that tries to leave the data directory finds nothing either */
    b = p_begin();
    p_tensor(&b, "FloatStorage", "../data.pkl", 24, 0, 1, (const int64_t[]){4},
             (const int64_t[]){1});
    p_end(&b);
    path = write_ckpt("escape.pt", &b);
    expect_open_error(path, NNP_ERR_FORMAT, path, "missing storage", NULL);
    /* numel that does not match the member's size */
    b = p_begin();
    p_tensor(&b, "FloatStorage", "0", 25, 0, 1, (const int64_t[]){4}, (const int64_t[]){1});
    p_end(&b);
    path = write_ckpt("numel.pt", &b);
    expect_open_error(path, NNP_ERR_FORMAT, path, "storage '0' holds 96 bytes",
                      "numel 25 of F32 needs 100", NULL);
    b = p_begin();
    p_tensor(&b, "DoubleStorage", "0", INT64_MAX, 0, 1, (const int64_t[]){4},
             (const int64_t[]){1});
    p_end(&b);
    path = write_ckpt("numel_overflow.pt", &b);
    expect_open_error(path, NNP_ERR_FORMAT, path, "needs more than", NULL);
    /* one storage declared with two element types */
    b = p_begin();
    put_byte(&b, ']');
    put_byte(&b, '(');
    p_tensor(&b, "FloatStorage", "0", 24, 0, 1, (const int64_t[]){4}, (const int64_t[]){1});
    p_tensor(&b, "IntStorage", "0", 24, 0, 1, (const int64_t[]){4}, (const int64_t[]){1});
    put_byte(&b, 'e');
    p_end(&b);
    path = write_ckpt("two_types.pt", &b);
    expect_open_error(path, NNP_ERR_FORMAT, path, "declared as 24 I32 elements here but as 24 F32",
                      NULL);
    /* complex storages are a dtype nnparity lacks, not an attack */
    b = p_begin();
    p_tensor(&b, "ComplexFloatStorage", "0", 12, 0, 1, (const int64_t[]){4},
             (const int64_t[]){1});
    p_end(&b);
    path = write_ckpt("complex.pt", &b);
    expect_open_error(path, NNP_ERR_UNSUPPORTED, path, "torch.ComplexFloatStorage", NULL);
    /* a persistent id that is not a storage */
    b = p_begin();
    p_str(&b, "module");
    put_byte(&b, 0x85);
    put_byte(&b, 'Q');
    p_end(&b);
    path = write_ckpt("pid.pt", &b);
    expect_open_error(path, NNP_ERR_UNSUPPORTED, path, "persistent id", NULL);
}

/* Deflated members, big-endian storages, shared storages, parameters, int keys, dtype leaves. */
static void test_variants(void **state)
{
    (void)state;
    buf b = p_begin();
    put_byte(&b, '}');
    put_byte(&b, '(');
    p_str(&b, "a");
    p_tensor(&b, "FloatStorage", "0", 24, 0, 2, (const int64_t[]){4, 6}, (const int64_t[]){6, 1});
    p_str(&b, "aT"); /* the same storage again, transposed */
    p_tensor(&b, "FloatStorage", "0", 24, 0, 2, (const int64_t[]){6, 4}, (const int64_t[]){1, 6});
    put_byte(&b, 'u');
    p_end(&b);
    const char *path = write_ckpt_with("deflated.pt", &b, NULL, 0, true);
    free(b.p);
    nnp_dump *d = open_ok(path);
    const void *a = data_at(d, 0), *at = data_at(d, 1);
    for (size_t i = 0; i < 24; i++)
        assert_true(f32_at(a, i) == (float)i);
    for (size_t i = 0; i < 6; i++)
        for (size_t j = 0; j < 4; j++)
            assert_true(f32_at(at, i * 4 + j) == (float)(j * 6 + i));
    nnp_dump_close(d);

    /* byteorder "big": elements are swapped, in place or gathered */
    b = p_begin();
    put_byte(&b, '}');
    put_byte(&b, '(');
    p_str(&b, "c");
    p_tensor(&b, "ShortStorage", "1", 16, 0, 1, (const int64_t[]){4}, (const int64_t[]){1});
    p_str(&b, "s");
    p_tensor(&b, "ShortStorage", "1", 16, 1, 1, (const int64_t[]){3}, (const int64_t[]){5});
    put_byte(&b, 'u');
    p_end(&b);
    member bo = {"archive/byteorder", "big", 3, false};
    path = write_ckpt_with("big.pt", &b, &bo, 1, false);
    d = open_ok(path);
    const void *c = data_at(d, 0), *s = data_at(d, 1);
    for (size_t i = 0; i < 4; i++) {
        uint16_t u = (uint16_t)(0x0102 * i);
        assert_int_equal(u16_at(c, i), (uint16_t)((u >> 8) | (u << 8)));
    }
    for (size_t i = 0; i < 3; i++) {
        uint16_t u = (uint16_t)(0x0102 * (1 + 5 * i));
        assert_int_equal(u16_at(s, i), (uint16_t)((u >> 8) | (u << 8)));
    }
    nnp_dump_close(d);
    member bad = {"archive/byteorder", "middle", 6, false};
    path = write_ckpt_with("middle.pt", &b, &bad, 1, false);
    free(b.p);
    expect_open_error(path, NNP_ERR_FORMAT, path, "archive/byteorder", "byte order", NULL);

    /* a Parameter is its tensor; int keys (optimizer state) name by number; a dtype is a leaf;
     * protocol 4 framing, MEMOIZE and STACK_GLOBAL */
    b = (buf){0};
    put_byte(&b, 0x80);
    put_byte(&b, 4);
    put_byte(&b, 0x95);
    put_le(&b, 0, 8); /* patched below */
    put_byte(&b, '}');
    put_byte(&b, 0x94);
    put_byte(&b, '(');
    p_int(&b, 3);
    p_global(&b, "torch._utils", "_rebuild_parameter");
    put_byte(&b, 0x94);
    p_tensor(&b, "FloatStorage", "0", 24, 2, 1, (const int64_t[]){2}, (const int64_t[]){1});
    put_byte(&b, 0x88);
    put_byte(&b, '}');
    put_byte(&b, 0x87);
    put_byte(&b, 'R');
    p_str(&b, "dtype");
    p_str(&b, "torch");
    p_str(&b, "bfloat16");
    put_byte(&b, 0x93);
    p_str(&b, "big");
    p_int(&b, -5);
    p_str(&b, "again");
    put_byte(&b, 'h');
    put_byte(&b, 1); /* the memoized _rebuild_parameter global: not a plain leaf, skipped */
    put_byte(&b, 'u');
    p_end(&b);
    for (int i = 0; i < 8; i++)
        b.p[3 + i] = (unsigned char)((uint64_t)(b.n - 11) >> (8 * i));
    path = write_ckpt("param.pt", &b);
    d = open_ok(path);
    assert_int_equal(nnp_dump_count(d), 1);
    assert_string_equal(nnp_dump_record(d, 0)->name, "3");
    assert_true(f32_at(data_at(d, 0), 1) == 3.0f);
    assert_string_equal(nnp_dump_meta_get(d, "dtype"), "torch.bfloat16");
    assert_string_equal(nnp_dump_meta_get(d, "big"), "-5");
    assert_null(nnp_dump_meta_get(d, "again"));
    nnp_dump_close(d);

    /* a bare scalar is metadata under the file's stem; no records */
    b = p_begin();
    put_byte(&b, 'G');
    put_le(&b, 0, 8); /* 0.0, big-endian */
    p_end(&b);
    path = write_ckpt("loss.pt", &b);
    d = open_ok(path);
    assert_int_equal(nnp_dump_count(d), 0);
    assert_string_equal(nnp_dump_meta_get(d, "loss"), "0.0");
    nnp_dump_close(d);

    /* two keys giving the same name */
    b = p_begin();
    put_byte(&b, '}');
    put_byte(&b, '(');
    p_str(&b, "a.b");
    p_tensor(&b, "FloatStorage", "0", 24, 0, 1, (const int64_t[]){1}, (const int64_t[]){1});
    p_str(&b, "a");
    put_byte(&b, '}');
    p_str(&b, "b");
    p_tensor(&b, "FloatStorage", "0", 24, 0, 1, (const int64_t[]){1}, (const int64_t[]){1});
    put_byte(&b, 's');
    put_byte(&b, 'u');
    p_end(&b);
    path = write_ckpt("dup.pt", &b);
    expect_open_error(path, NNP_ERR_FORMAT, path, "tensor 'a.b' appears twice", NULL);
}

/* The machine itself: opcodes and globals outside the allowlist, malformed and hostile
 * pickles, each refused with the opcode's byte offset. */
static void test_pickle_refused(void **state)
{
    (void)state;
#define B(s) s, sizeof(s) - 1 /* a byte string literal and its length */
    static const struct {
        const char *file;
        const char *bytes; /* after PROTO 2 */
        size_t len;
        nnp_status status;
        const char *phrase;
    } cases[] = {
        {"inst.pt", B("(iposix\nsystem\n."), NNP_ERR_UNSUPPORTED, "byte 3: opcode INST (0x69)"},
        {"obj.pt", B("(o."), NNP_ERR_UNSUPPORTED, "opcode OBJ"},
        {"newobj.pt", B("N)\x81."), NNP_ERR_UNSUPPORTED, "opcode NEWOBJ"},
        {"ext1.pt", B("\x82\x01."), NNP_ERR_UNSUPPORTED, "opcode EXT1"},
        {"persid.pt", B("P0\n."), NNP_ERR_UNSUPPORTED, "opcode PERSID"},
        {"dup_op.pt", B("N2."), NNP_ERR_UNSUPPORTED, "opcode DUP"},
        {"set.pt", B("\x8f."), NNP_ERR_UNSUPPORTED, "opcode EMPTY_SET"},
        {"stack_global.pt", B("X\x02\x00\x00\x00osX\x06\x00\x00\x00system\x93."),
         NNP_ERR_UNSUPPORTED, "global 'os.system' is not allowed"},
        {"subprocess.pt", B("csubprocess\nPopen\n."), NNP_ERR_UNSUPPORTED,
         "global 'subprocess.Popen' is not allowed"},
        {"torch_load.pt", B("ctorch\nload\n."), NNP_ERR_UNSUPPORTED,
         "global 'torch.load' is not allowed"},
        {"call_storage.pt", B("ctorch\nFloatStorage\n)R."), NNP_ERR_UNSUPPORTED,
         "'torch.FloatStorage' is not callable"},
        {"call_int.pt", B("K\x01)R."), NNP_ERR_FORMAT, "REDUCE calls an int"},
        {"odict_args.pt", B("ccollections\nOrderedDict\n]\x85R."), NNP_ERR_UNSUPPORTED,
         "OrderedDict called with 1"},
        {"build_dict.pt", B("}}b."), NNP_ERR_UNSUPPORTED, "BUILD on a plain dict"},
        {"build_list.pt", B("]}b."), NNP_ERR_UNSUPPORTED, "BUILD on a list"},
        {"append_dict.pt", B("}Na."), NNP_ERR_FORMAT, "APPEND on a dict"},
        {"setitem_tuple.pt", B(")NNs."), NNP_ERR_FORMAT, "SETITEM on a tuple"},
        {"setitems_odd.pt", B("}(Nu."), NNP_ERR_FORMAT, "odd number"},
        {"underflow.pt", B("\x86."), NNP_ERR_FORMAT, "stack underflow"},
        {"mark_underflow.pt", B("N(\x85."), NNP_ERR_FORMAT, "stack underflow"},
        {"no_mark.pt", B("t."), NNP_ERR_FORMAT, "TUPLE without a MARK"},
        {"memo_huge.pt", B("Nr\xf0\xff\xff\xff."), NNP_ERR_FORMAT, "memo index 4294967280"},
        {"memo_unset.pt", B("h\x05."), NNP_ERR_FORMAT, "memo index 5 was never stored"},
        {"memo_empty.pt", B("(q\x00."), NNP_ERR_FORMAT, "stack underflow"},
        {"truncated.pt", B("X\xff\x00\x00\x00" "ab"), NNP_ERR_FORMAT, "truncated"},
        {"no_stop.pt", B("N"), NNP_ERR_FORMAT, "without a STOP"},
        {"trailing.pt", B("N.N"), NNP_ERR_FORMAT, "after STOP"},
        {"two_values.pt", B("NN."), NNP_ERR_FORMAT, "2 values"},
        {"open_mark.pt", B("N(."), NNP_ERR_FORMAT, "MARKs still open"},
        {"proto_again.pt", B("\x80\x02N."), NNP_ERR_FORMAT, "PROTO after"},
        {"long1_wide.pt", B("\x8a\x09\x01\x02\x03\x04\x05\x06\x07\x08\x09."),
         NNP_ERR_UNSUPPORTED, "wider than 64 bits"},
        {"bad_utf8.pt", B("X\x02\x00\x00\x00\xc3\x28."), NNP_ERR_FORMAT, "UTF-8"},
        {"frame_long.pt", B("\x95\xff\x00\x00\x00\x00\x00\x00\x00N."), NNP_ERR_FORMAT,
         "FRAME of 255 bytes"},
        {"global_no_newline.pt", B("ctorch"), NNP_ERR_FORMAT, "GLOBAL"},
        {"cycle.pt", B("]q\x00h\x00" "a."), NNP_ERR_FORMAT, "contains itself"},
    };
#undef B
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        buf b = p_begin();
        put(&b, cases[c].bytes, cases[c].len);
        const char *path = write_ckpt(cases[c].file, &b);
        expect_open_error(path, cases[c].status, path, "archive/data.pkl byte ", cases[c].phrase,
                          NULL);
    }

    /* a MARK before anything was pushed: the empty tuple, popped from a stack that was never
     * allocated, holds no tensor. (The old code took a zero offset from that NULL stack, which
     * only clang's UBSan reports: the fuzz build, which starts from this input as a seed.) */
    buf b = p_begin();
    put(&b, "(t.", 3);
    nnp_dump *d = open_ok(write_ckpt("mark_first.pt", &b));
    assert_int_equal(nnp_dump_count(d), 0);
    nnp_dump_close(d);

    /* protocol 0/1 and 6 */
    b = (buf){0};
    put(&b, "N.", 2);
    const char *path = write_ckpt("proto0.pt", &b);
    expect_open_error(path, NNP_ERR_UNSUPPORTED, path, "byte 0", "PROTO", NULL);
    b = (buf){0};
    put(&b, "\x80\x06N.", 4);
    path = write_ckpt("proto6.pt", &b);
    expect_open_error(path, NNP_ERR_UNSUPPORTED, path, "pickle protocol 6", NULL);

    /* deep nesting: in MARKs, and in containers built without marks */
    b = p_begin();
    for (int i = 0; i < 1000; i++)
        put_byte(&b, '(');
    path = write_ckpt("marks.pt", &b);
    expect_open_error(path, NNP_ERR_FORMAT, path, "MARKs open", "nesting too deep", NULL);
    b = p_begin();
    for (int i = 0; i < 1000; i++)
        put_byte(&b, ']');
    for (int i = 0; i < 999; i++)
        put_byte(&b, 'a');
    p_end(&b);
    path = write_ckpt("lists.pt", &b);
    expect_open_error(path, NNP_ERR_FORMAT, path, "nested deeper than", NULL);
    b = p_begin();
    put_byte(&b, 'N');
    for (int i = 0; i < 1000; i++)
        put_byte(&b, 0x85);
    p_end(&b);
    path = write_ckpt("tuples.pt", &b);
    expect_open_error(path, NNP_ERR_FORMAT, path, "nested deeper than", NULL);

    /* shared references that would multiply: x = (x, x) forty times is 2^40 leaves */
    b = p_begin();
    p_tensor(&b, "FloatStorage", "0", 24, 0, 1, (const int64_t[]){1}, (const int64_t[]){1});
    for (int i = 0; i < 40; i++) {
        put_byte(&b, 'q');
        put_byte(&b, (unsigned)i);
        put_byte(&b, 'h');
        put_byte(&b, (unsigned)i);
        put_byte(&b, 0x86);
    }
    p_end(&b);
    path = write_ckpt("amplify.pt", &b);
    expect_open_error(path, NNP_ERR_FORMAT, path, "amplification bound", NULL);

    /* a tensor whose metadata sets torch's lazy negation bit */
    b = p_begin();
    p_global(&b, "torch._utils", "_rebuild_tensor_v2");
    put_byte(&b, '(');
    put_byte(&b, '(');
    p_str(&b, "storage");
    p_global(&b, "torch", "FloatStorage");
    p_str(&b, "0");
    p_str(&b, "cpu");
    p_int(&b, 24);
    put_byte(&b, 't');
    put_byte(&b, 'Q');
    p_int(&b, 0);
    p_tuple(&b, (const int64_t[]){2}, 1);
    p_tuple(&b, (const int64_t[]){1}, 1);
    put_byte(&b, 0x89);
    put_byte(&b, '}');
    put_byte(&b, '}');
    p_str(&b, "neg");
    put_byte(&b, 0x88);
    put_byte(&b, 's');
    put_byte(&b, 't');
    put_byte(&b, 'R');
    p_end(&b);
    path = write_ckpt("neg_bit.pt", &b);
    expect_open_error(path, NNP_ERR_UNSUPPORTED, path, "resolve_neg", NULL);
}

/* A zip without data.pkl stays an npz; one with it anywhere in its directory is torch's. */
static void test_routing(void **state)
{
    (void)state;
    char p[512];
    buf b = p_begin();
    put_byte(&b, ']');
    p_end(&b);
    member m[] = {{"x/version", "3\n", 2, false}, {"x/data.pkl", b.p, b.n, false}};
    write_zip(scratch(p, sizeof p, "model.npz"), m, 2);
    free(b.p);
    nnp_dump *d = open_ok(p);
    assert_string_equal(nnp_dump_format(d), "torch");
    assert_int_equal(nnp_dump_count(d), 0);
    nnp_dump_close(d);
    member n[] = {{"readme.txt", "hi", 2, false}};
    write_zip(scratch(p, sizeof p, "other.pt"), n, 1);
    expect_open_error(p, NNP_ERR_FORMAT, p, "member 'readme.txt'", NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_state_dict),
        cmocka_unit_test(test_nested),
        cmocka_unit_test(test_linear_and_bare),
        cmocka_unit_test(test_legacy),
        cmocka_unit_test(test_hostile_conformance),
        cmocka_unit_test(test_views),
        cmocka_unit_test(test_view_ranges),
        cmocka_unit_test(test_geometry_refused),
        cmocka_unit_test(test_storages),
        cmocka_unit_test(test_variants),
        cmocka_unit_test(test_pickle_refused),
        cmocka_unit_test(test_routing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
