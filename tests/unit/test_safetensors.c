/*
 * test_safetensors.c - the safetensors reader: the conformance files (every valid one to its
 * values, every bad one refused with the reference reader's rule), crafted files for rules the
 * conformance set does not reach, sharded checkpoints, and nnparity's provenance metadata.
 */
#include <math.h>
#include <sys/stat.h>

#include "internal.h"
#include "testutil.h"

static nnp_dump *open_ok(const char *path)
{
    nnp_dump *d = NULL;
    nnp_status st = nnp_dump_open(path, &d);
    if (st)
        fail_msg("%s: %s", path, nnp_last_error());
    return d;
}

static const void *data_of(nnp_dump *d, const char *name, const nnp_record **rec)
{
    int64_t i = nnp_dump_find(d, name);
    if (i < 0)
        fail_msg("no tensor '%s'", name);
    *rec = nnp_dump_record(d, (size_t)i);
    const void *p = NULL;
    assert_int_equal(nnp_dump_data(d, (size_t)i, &p), NNP_OK);
    return p;
}

static double value0(nnp_dump *d, const char *name, nnp_dtype want)
{
    const nnp_record *r;
    const void *p = data_of(d, name, &r);
    assert_int_equal(r->dtype, want);
    double v;
    nnp_convert_to_f64(r->dtype, p, 1, &v);
    return v;
}

static void test_official(void **state)
{
    (void)state;
    char b[512];
    const char *names[] = {"safetensors/valid_official_one_i32.safetensors",
                           "safetensors/valid_official_zeros_i32.safetensors"};
    for (int f = 0; f < 2; f++) {
        nnp_dump *d = open_ok(conf_path(b, sizeof b, names[f]));
        assert_int_equal(nnp_dump_count(d), 1);
        const nnp_record *r;
        const int32_t *v = data_of(d, "test", &r);
        assert_int_equal(r->dtype, NNP_I32);
        assert_int_equal(r->ndim, 2);
        assert_int_equal(r->shape[0], 2);
        assert_int_equal(r->shape[1], 2);
        assert_int_equal(r->nbytes, 16);
        for (int i = 0; i < 4; i++)
            assert_int_equal(v[i], f == 0 && i == 3 ? 1 : 0);
        assert_string_equal(nnp_dump_format(d), "safetensors");
        nnp_dump_close(d);
    }
}

static void test_all_dtypes(void **state)
{
    (void)state;
    char b[512];
    nnp_dump *d = open_ok(conf_path(b, sizeof b, "safetensors/valid_all_dtypes.safetensors"));
    assert_int_equal(nnp_dump_count(d), 12);
    assert_true(value0(d, "f64", NNP_F64) == 0.5);
    assert_true(value0(d, "f32", NNP_F32) == 0.25);
    assert_true(value0(d, "i32", NNP_I32) == -7);
    assert_true(value0(d, "f16", NNP_F16) == 1.0);
    assert_true(value0(d, "bf16", NNP_BF16) == 1.0);
    assert_true(value0(d, "i16", NNP_I16) == -2);
    assert_true(value0(d, "u8", NNP_U8) == 255);
    assert_true(value0(d, "i8", NNP_I8) == -128);
    assert_true(value0(d, "bool", NNP_BOOL) == 1);
    assert_true(value0(d, "e4m3", NNP_F8_E4M3) == 1.0);
    assert_true(value0(d, "e5m2", NNP_F8_E5M2) == 1.0);
    assert_true(value0(d, "i64", NNP_I64) == -1099511627776.0);
    /* listed out of offset order in the header; presented in file (offset) order */
    uint64_t prev = 0;
    for (size_t i = 0; i < nnp_dump_count(d); i++) {
        const nnp_record *r = nnp_dump_record(d, i);
        assert_int_equal(r->seq, i);
        const void *p;
        assert_int_equal(nnp_dump_data(d, i, &p), NNP_OK);
        assert_true((uintptr_t)p >= prev);
        prev = (uintptr_t)p;
        assert_string_equal(r->module, "");
        assert_string_equal(r->role, "");
    }
    nnp_dump_close(d);
}

static void test_other_valid(void **state)
{
    (void)state;
    char b[512];
    nnp_dump *d = open_ok(conf_path(b, sizeof b, "safetensors/valid_empty.safetensors"));
    assert_int_equal(nnp_dump_count(d), 0);
    assert_int_equal(nnp_dump_find(d, "x"), -1);
    nnp_dump_close(d);

    d = open_ok(conf_path(b, sizeof b, "safetensors/valid_metadata.safetensors"));
    assert_int_equal(nnp_dump_meta_count(d), 2);
    assert_string_equal(nnp_dump_meta_get(d, "format"), "pt");
    assert_string_equal(nnp_dump_meta_get(d, "note"), "x");
    assert_null(nnp_dump_meta_get(d, "absent"));
    const nnp_record *r;
    const float *a = data_of(d, "a", &r);
    assert_true(a[0] == 1.5f && a[1] == -2.0f);
    nnp_dump_close(d);

    d = open_ok(conf_path(b, sizeof b, "safetensors/valid_leading_whitespace.safetensors"));
    assert_true(value0(d, "a", NNP_F32) == 1.0);
    nnp_dump_close(d);

    d = open_ok(conf_path(b, sizeof b, "safetensors/valid_scalar_and_zero_size.safetensors"));
    assert_true(value0(d, "s", NNP_F64) == 3.25);
    data_of(d, "s", &r);
    assert_int_equal(r->ndim, 0);
    assert_int_equal(r->nelem, 1);
    data_of(d, "z", &r);
    assert_int_equal(r->ndim, 2);
    assert_int_equal(r->nelem, 0);
    assert_int_equal(r->nbytes, 0);
    nnp_dump_close(d);
}

/* Every bad conformance file is refused as a format error naming the file and the rule. */
static void test_bad_conformance(void **state)
{
    (void)state;
    static const struct { const char *file, *rule; } cases[] = {
        {"bad_HeaderTooLarge", "(HeaderTooLarge)"},
        {"bad_HeaderTooSmall", "(HeaderTooSmall)"},
        {"bad_InvalidHeaderDeserialization_dtype", "(InvalidHeaderDeserialization)"},
        {"bad_InvalidHeaderDeserialization_json", "(InvalidHeaderDeserialization)"},
        {"bad_InvalidHeaderDeserialization_metadata_number", "(InvalidHeaderDeserialization)"},
        {"bad_InvalidHeaderLength", "(InvalidHeaderLength)"},
        /* Its declared header length (8) runs one byte past the end of the 15-byte file, and
         * the reference reader checks the length before decoding UTF-8. test_invalid_utf8
         * covers the UTF-8 rule with a file whose length is right. */
        {"bad_InvalidHeader_utf8", "(InvalidHeaderLength)"},
        {"bad_InvalidOffset_gap", "(InvalidOffset)"},
        {"bad_InvalidOffset_overlap", "(InvalidOffset)"},
        {"bad_InvalidOffset_reversed", "(InvalidOffset)"},
        {"bad_MetadataIncompleteBuffer_trailing", "(MetadataIncompleteBuffer)"},
        {"bad_MetadataIncompleteBuffer_truncated", "(MetadataIncompleteBuffer)"},
        {"bad_TensorInvalidInfo_size", "(TensorInvalidInfo)"},
        {"bad_ValidationOverflow_shape", "(ValidationOverflow)"},
        {"bad_duplicate_key", "duplicate"},
        {"bad_negative_dim", "negative"},
        {"bad_not_an_object", "not a JSON object"},
    };
    char rel[256], b[512];
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        snprintf(rel, sizeof rel, "safetensors/%s.safetensors", cases[i].file);
        expect_open_error(conf_path(b, sizeof b, rel), NNP_ERR_FORMAT, cases[i].file,
                          cases[i].rule, NULL);
    }
}

static void test_invalid_utf8(void **state)
{
    (void)state;
    char p[512];
    scratch(p, sizeof p, "utf8.safetensors");
    write_safetensors(p, "{\"\xff\":1}", 0, 0);
    expect_open_error(p, NNP_ERR_FORMAT, "utf8.safetensors", "byte 10", "(InvalidHeader)", NULL);
    /* overlong encoding of '/' and a UTF-16 surrogate are not UTF-8 either */
    write_safetensors(p, "{\"\xc0\xaf\":1}", 0, 0);
    expect_open_error(p, NNP_ERR_FORMAT, "(InvalidHeader)", NULL);
    write_safetensors(p, "{\"\xed\xa0\x80\":1}", 0, 0);
    expect_open_error(p, NNP_ERR_FORMAT, "(InvalidHeader)", NULL);
    /* valid multi-byte names are fine */
    write_safetensors(p, "{\"\xc3\xa9t\xc3\xa9\":{\"dtype\":\"U8\",\"shape\":[1],"
                         "\"data_offsets\":[0,1]}}", 1, 7);
    nnp_dump *d = open_ok(p);
    assert_int_equal(nnp_dump_find(d, "\xc3\xa9t\xc3\xa9"), 0);
    nnp_dump_close(d);
}

/* The validator skips ASCII a word at a time: a bad byte is still found at its own offset
 * wherever it falls, after a run of ASCII or right behind a multi-byte character. */
static void test_utf8_offsets(void **state)
{
    (void)state;
    unsigned char buf[80];
    for (size_t at = 0; at < 48; at++) {
        memset(buf, 'a', sizeof buf);
        buf[at] = 0xff;
        size_t bad = SIZE_MAX;
        assert_false(nnp__utf8_valid(buf, sizeof buf, &bad));
        assert_int_equal(bad, at);
        /* a valid two-byte character just before it changes nothing */
        if (at >= 2) {
            buf[at - 2] = 0xc3;
            buf[at - 1] = 0xa9;
            assert_false(nnp__utf8_valid(buf, sizeof buf, &bad));
            assert_int_equal(bad, at);
        }
        /* a truncated character at the very end */
        memset(buf, 'a', sizeof buf);
        buf[at + 31] = 0xe2;
        assert_false(nnp__utf8_valid(buf, at + 32, &bad));
        assert_int_equal(bad, at + 31);
        assert_true(nnp__utf8_valid(buf, at + 31, &bad));
    }
}

static void test_crafted_rules(void **state)
{
    (void)state;
    char p[512];
    scratch(p, sizeof p, "crafted.safetensors");
    /* trailing whitespace, fields in any order, unknown fields ignored */
    write_safetensors(p, "{\"w\":{\"shape\":[2],\"extra\":1,\"data_offsets\":[0,4],"
                         "\"dtype\":\"BF16\"}}   \n", 4, 0);
    nnp_dump *d = open_ok(p);
    assert_int_equal(nnp_dump_count(d), 1);
    nnp_dump_close(d);
    struct { const char *header; size_t data; nnp_status st; const char *want; } cases[] = {
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1.0],\"data_offsets\":[0,4]}}", 4,
         NNP_ERR_FORMAT, "not an integer"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4, NNP_ERR_FORMAT,
         "data_offsets"},
        {"{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, NNP_ERR_FORMAT, "dtype"},
        {"{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, NNP_ERR_FORMAT, "shape"},
        {"{\"a\":[1]}", 0, NNP_ERR_FORMAT, "not an object"},
        {"{\"a\":{\"dtype\":\"C64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8,
         NNP_ERR_UNSUPPORTED, "C64"},
        {"{\"__metadata__\":[1]}", 0, NNP_ERR_FORMAT, "__metadata__"},
        {"{} x", 0, NNP_ERR_FORMAT, "(InvalidHeaderDeserialization)"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 3, NNP_ERR_FORMAT,
         "(MetadataIncompleteBuffer)"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        write_safetensors(p, cases[i].header, cases[i].data, 0);
        expect_open_error(p, cases[i].st, "crafted.safetensors", cases[i].want, NULL);
    }
    /* a file whose every tensor is 0-dimensional keeps no dimension at all: its scalars open,
     * and a scalar of the wrong size is refused, with no arithmetic on the empty dims array
     * (found by fuzz_safetensors; the sanitized run of this test is the regression check) */
    write_safetensors(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}}", 4, 0);
    d = open_ok(p);
    assert_int_equal(nnp_dump_record(d, 0)->ndim, 0);
    assert_int_equal(nnp_dump_record(d, 0)->nelem, 1);
    nnp_dump_close(d);
    write_safetensors(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,8]}}", 8, 0);
    expect_open_error(p, NNP_ERR_FORMAT, "crafted.safetensors", "(TensorInvalidInfo)", NULL);
    /* a zero-size tensor may share its offset with a neighbour */
    write_safetensors(p, "{\"z\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]},"
                         "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, 0);
    d = open_ok(p);
    assert_string_equal(nnp_dump_record(d, 0)->name, "a");
    assert_string_equal(nnp_dump_record(d, 1)->name, "z");
    nnp_dump_close(d);
}

static void test_io_errors(void **state)
{
    (void)state;
    char p[512];
    expect_open_error("/nonexistent/x.safetensors", NNP_ERR_IO, "/nonexistent/x.safetensors",
                      "No such file", NULL);
    scratch(p, sizeof p, "emptydir");
    mkdir(p, 0755);
    expect_open_error(p, NNP_ERR_FORMAT, "emptydir", "no *.safetensors", NULL);
    nnp_dump *d = (nnp_dump *)1;
    assert_int_equal(nnp_dump_open("", &d), NNP_ERR_ARG);
    assert_null(d);
    nnp_dump_close(NULL);
}

static void write_shard(const char *dir, const char *name, const char *tensor, float value)
{
    char p[512], h[256];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    snprintf(h, sizeof h, "{\"%s\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
             tensor);
    size_t hl = strlen(h);
    unsigned char buf[300];
    for (int i = 0; i < 8; i++)
        buf[i] = (unsigned char)((uint64_t)hl >> (8 * i));
    memcpy(buf + 8, h, hl);
    memcpy(buf + 8 + hl, &value, 4);
    write_bytes(p, buf, 8 + hl + 4);
}

static void test_sharded(void **state)
{
    (void)state;
    char dir[512], p[600];
    scratch(dir, sizeof dir, "shards");
    mkdir(dir, 0755);
    /* natural order: 2 before 10 */
    write_shard(dir, "model-2-of-10.safetensors", "b", 2.0f);
    write_shard(dir, "model-10-of-10.safetensors", "c", 3.0f);
    write_shard(dir, "model-1-of-10.safetensors", "a", 1.0f);
    nnp_dump *d = open_ok(dir);
    assert_int_equal(nnp_dump_count(d), 3);
    assert_string_equal(nnp_dump_record(d, 0)->name, "a");
    assert_string_equal(nnp_dump_record(d, 1)->name, "b");
    assert_string_equal(nnp_dump_record(d, 2)->name, "c");
    assert_true(value0(d, "c", NNP_F32) == 3.0);
    assert_non_null(strstr(nnp_dump_record(d, 2)->file, "model-10-of-10"));
    nnp_dump_close(d);

    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    const char *idx = "{\"metadata\":{\"total_size\":12},\"weight_map\":{"
                      "\"c\":\"model-10-of-10.safetensors\",\"a\":\"model-1-of-10.safetensors\","
                      "\"b\":\"model-2-of-10.safetensors\"}}";
    write_bytes(p, idx, strlen(idx));
    d = open_ok(p);
    assert_string_equal(nnp_dump_format(d), "safetensors-sharded");
    assert_int_equal(nnp_dump_count(d), 3);
    /* shards in order of first mention */
    assert_string_equal(nnp_dump_record(d, 0)->name, "c");
    assert_true(value0(d, "a", NNP_F32) == 1.0);
    nnp_dump_close(d);

    const char *wrong = "{\"weight_map\":{\"a\":\"model-2-of-10.safetensors\","
                        "\"b\":\"model-2-of-10.safetensors\"}}";
    write_bytes(p, wrong, strlen(wrong));
    expect_open_error(p, NNP_ERR_FORMAT, "index.json", "'a'", NULL);
    const char *escape = "{\"weight_map\":{\"a\":\"../x.safetensors\"}}";
    write_bytes(p, escape, strlen(escape));
    expect_open_error(p, NNP_ERR_FORMAT, "beside the index", NULL);
    const char *missing = "{\"weight_map\":{\"a\":\"nope.safetensors\"}}";
    write_bytes(p, missing, strlen(missing));
    expect_open_error(p, NNP_ERR_IO, "nope.safetensors", NULL);
    const char *unlisted = "{\"weight_map\":{\"a\":\"model-1-of-10.safetensors\"}}";
    write_bytes(p, unlisted, strlen(unlisted));
    d = open_ok(p);
    nnp_dump_close(d);
    const char *nomap = "{\"metadata\":{}}";
    write_bytes(p, nomap, strlen(nomap));
    expect_open_error(p, NNP_ERR_FORMAT, "weight_map", NULL);

    /* the same tensor in two shards */
    write_shard(dir, "model-3-of-10.safetensors", "a", 9.0f);
    expect_open_error(dir, NNP_ERR_FORMAT, "'a'", "duplicate", NULL);
}

static void test_provenance(void **state)
{
    (void)state;
    char p[512];
    scratch(p, sizeof p, "prov.safetensors");
    /* file order x, y, z; recorded execution order z, x; y unrecorded goes last */
    write_safetensors(p, "{\"__metadata__\":{\"nnparity.format\":\"dump/1\",\"nnparity.records\":"
                         "\"[{\\\"tensor\\\":\\\"z\\\",\\\"module\\\":\\\"enc.0\\\","
                         "\\\"role\\\":\\\"out0\\\",\\\"type\\\":\\\"Linear\\\",\\\"call\\\":1},"
                         "{\\\"tensor\\\":\\\"x\\\"}]\"},"
                         "\"x\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                         "\"y\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]},"
                         "\"z\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[2,3]}}",
                      3, 1);
    nnp_dump *d = open_ok(p);
    assert_string_equal(nnp_dump_record(d, 0)->name, "z");
    assert_string_equal(nnp_dump_record(d, 0)->module, "enc.0");
    assert_string_equal(nnp_dump_record(d, 0)->role, "out0");
    assert_string_equal(nnp_dump_record(d, 0)->module_type, "Linear");
    assert_int_equal(nnp_dump_record(d, 0)->call, 1);
    assert_string_equal(nnp_dump_record(d, 1)->name, "x");
    assert_string_equal(nnp_dump_record(d, 2)->name, "y");
    assert_int_equal(nnp_dump_find(d, "y"), 2);
    nnp_dump_close(d);

    write_safetensors(p, "{\"__metadata__\":{\"nnparity.records\":\"[{\\\"tensor\\\":\\\"q\\\"}]\"},"
                         "\"x\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1, 1);
    expect_open_error(p, NNP_ERR_FORMAT, "nnparity.records", "'q'", NULL);
    write_safetensors(p, "{\"__metadata__\":{\"nnparity.records\":\"{\"},"
                         "\"x\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1, 1);
    expect_open_error(p, NNP_ERR_FORMAT, "nnparity.records", "not valid JSON", NULL);
    write_safetensors(p, "{\"__metadata__\":{\"nnparity.records\":\"[{\\\"tensor\\\":\\\"x\\\","
                         "\\\"call\\\":-1}]\"},"
                         "\"x\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1, 1);
    expect_open_error(p, NNP_ERR_FORMAT, "entry 0", "call", NULL);

    /* a record listed twice, next to itself and further on (the reader guesses that the next
     * entry names the next record, and must still see the second listing) */
    const char *twice[] = {"[{\\\"tensor\\\":\\\"x\\\"},{\\\"tensor\\\":\\\"x\\\"}]",
                           "[{\\\"tensor\\\":\\\"x\\\"},{\\\"tensor\\\":\\\"y\\\"},"
                           "{\\\"tensor\\\":\\\"x\\\"}]"};
    for (int k = 0; k < 2; k++) {
        char header[512];
        snprintf(header, sizeof header,
                 "{\"__metadata__\":{\"nnparity.records\":\"%s\"},"
                 "\"x\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                 "\"y\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}",
                 twice[k]);
        write_safetensors(p, header, 2, 1);
        expect_open_error(p, NNP_ERR_FORMAT, "lists tensor 'x' twice", NULL);
    }
}

/* Two dumps opened at once: the result and the error are those of opening them in turn, and the
 * error (made on the second file's thread) is the calling thread's to read. */
static void test_open_both(void **state)
{
    (void)state;
    char a[512], b[512], missing[512];
    scratch(a, sizeof a, "both_a.safetensors");
    scratch(b, sizeof b, "both_b.safetensors");
    scratch(missing, sizeof missing, "both_missing.safetensors");
    write_safetensors(a, "{\"x\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1, 1);
    write_safetensors(b, "{\"y\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]}}", 2, 1);
    nnp_dump *da = NULL, *db = NULL;
    assert_int_equal(nnp_dump_open_both(a, b, &da, &db), NNP_OK);
    assert_string_equal(nnp_dump_path(da), a);
    assert_string_equal(nnp_dump_record(da, 0)->name, "x");
    assert_string_equal(nnp_dump_path(db), b);
    assert_string_equal(nnp_dump_record(db, 0)->name, "y");
    nnp_dump_close(da);
    nnp_dump_close(db);

    const char *cases[][3] = {{missing, b, missing}, {a, missing, missing},
                              {missing, "/nonexistent/other.safetensors", missing}};
    for (int k = 0; k < 3; k++) {
        da = db = (nnp_dump *)1;
        assert_int_equal(nnp_dump_open_both(cases[k][0], cases[k][1], &da, &db), NNP_ERR_IO);
        assert_null(da);
        assert_null(db);
        assert_non_null(strstr(nnp_last_error(), cases[k][2]));
        assert_non_null(strstr(nnp_last_error(), "cannot open"));
    }
    /* the second file's error when only it fails, though it was made on another thread */
    write_bytes(missing, "{", 1);
    assert_int_equal(nnp_dump_open_both(a, missing, &da, &db), NNP_ERR_FORMAT);
    assert_non_null(strstr(nnp_last_error(), missing));
    assert_int_equal(nnp_dump_open_both(a, b, NULL, &db), NNP_ERR_ARG);
}

static void test_lookup_many(void **state)
{
    (void)state;
    /* enough names to grow the index several times; every one found at its position */
    char p[512], name[32];
    scratch(p, sizeof p, "many.safetensors");
    nnp_writer *w;
    assert_int_equal(nnp_writer_open(p, 0, &w), NNP_OK);
    uint8_t v = 0;
    uint64_t one = 1;
    for (int i = 0; i < 5000; i++) {
        snprintf(name, sizeof name, "t%d", i);
        nnp_record_desc desc = {.name = name, .dtype = NNP_U8, .ndim = 1, .shape = &one};
        assert_int_equal(nnp_writer_add(w, &desc, &v), NNP_OK);
    }
    assert_int_equal(nnp_writer_close(w), NNP_OK);
    nnp_dump *d = open_ok(p);
    for (int i = 0; i < 5000; i++) {
        snprintf(name, sizeof name, "t%d", i);
        assert_int_equal(nnp_dump_find(d, name), i);
    }
    assert_int_equal(nnp_dump_find(d, "t5000"), -1);
    assert_null(nnp_dump_record(d, 5000));
    nnp_dump_close(d);
}

/* nnp_mapping_of names the file and byte of an address in a live mapping, and forgets the
 * mapping once it is unmapped. */
static void test_mapping_of(void **state)
{
    (void)state;
    char path[512];
    scratch(path, sizeof path, "mapped.bin");
    unsigned char data[100];
    memset(data, 7, sizeof data);
    write_bytes(path, data, sizeof data);
    nnp_map m;
    assert_int_equal(nnp__map_file(path, &m), NNP_OK);
    const char *name = NULL;
    uint64_t off = 0;
    assert_true(nnp_mapping_of(m.base + 42, &name, &off));
    assert_string_equal(name, path);
    assert_int_equal(off, 42);
    assert_true(nnp_mapping_of(m.base, NULL, NULL));
    assert_false(nnp_mapping_of(m.base + 100, &name, &off)); /* one past the end */
    assert_false(nnp_mapping_of(data, &name, &off));
    const unsigned char *base = m.base;
    nnp__unmap(&m);
    assert_false(nnp_mapping_of(base + 42, &name, &off));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_official),       cmocka_unit_test(test_all_dtypes),
        cmocka_unit_test(test_other_valid),    cmocka_unit_test(test_bad_conformance),
        cmocka_unit_test(test_invalid_utf8),   cmocka_unit_test(test_utf8_offsets),
        cmocka_unit_test(test_crafted_rules),
        cmocka_unit_test(test_io_errors),      cmocka_unit_test(test_sharded),
        cmocka_unit_test(test_provenance),     cmocka_unit_test(test_lookup_many),
        cmocka_unit_test(test_open_both),      cmocka_unit_test(test_mapping_of),
    };
    return cmocka_run_group_tests_name("safetensors", tests, NULL, NULL);
}
