/*
 * registry.c - the formats nnp_dump_open knows, in probing order: a new reader is added here,
 * with a probe on its file's first bytes, and nowhere else. So are the formats it refuses by
 * name (ONNX, HDF5, SavedModel, bare pickles, text; formats/foreign.c says what to do instead).
 */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "formats/formats.h"

static bool is_directory(const char *path, const unsigned char *head, size_t n, bool is_dir)
{
    (void)path, (void)head, (void)n;
    return is_dir;
}

static bool is_npy(const char *path, const unsigned char *head, size_t n, bool is_dir)
{
    (void)path, (void)is_dir;
    return n >= 6 && memcmp(head, "\x93NUMPY", 6) == 0;
}

/* npz archives and torch checkpoints are both zips; the reader tells them apart by their members
 * and names the format itself. */
static bool is_zip(const char *path, const unsigned char *head, size_t n, bool is_dir)
{
    (void)path, (void)is_dir;
    return n >= 4 && (memcmp(head, "PK\x03\x04", 4) == 0 || memcmp(head, "PK\x05\x06", 4) == 0);
}

/* torch's pre-1.6 format: refused by the torch reader, with advice. */
static bool is_torch_legacy(const char *path, const unsigned char *head, size_t n, bool is_dir)
{
    (void)path, (void)is_dir;
    return nnp__torch_is_legacy(head, n);
}

static bool is_gguf(const char *path, const unsigned char *head, size_t n, bool is_dir)
{
    (void)path, (void)is_dir;
    return n >= 4 && memcmp(head, "GGUF", 4) == 0;
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* A safetensors header length is below 2^27, so its bytes 4..7 are zero: a file whose first 8
 * bytes hold no NUL and that starts with '{' is JSON (a sharded checkpoint's index). */
static bool is_index_json(const char *path, const unsigned char *head, size_t n, bool is_dir)
{
    (void)is_dir;
    size_t first = 0, n8 = n < 8 ? n : 8;
    while (first < n8 && strchr(" \t\r\n", head[first]))
        first++;
    bool json_like = first < n8 && head[first] == '{' && memchr(head, 0, n8) == NULL;
    return json_like || ends_with(path, ".index.json");
}

/* ---- formats refused by name ---- */

/* A protobuf varint at p: its value and length, 0 when it does not end before `end`. */
static size_t varint(const unsigned char *p, const unsigned char *end, uint64_t *v)
{
    *v = 0;
    for (size_t i = 0; i < 10 && p + i < end; i++) {
        *v |= (uint64_t)(p[i] & 0x7f) << (7 * i);
        if (!(p[i] & 0x80))
            return i + 1;
    }
    return 0;
}

/* A safetensors file's first 8 bytes are its header length, below 2^32 in any file it can
 * read: bytes 4..7 are zero. No probe below takes such a file from it. */
static bool safetensors_length(const unsigned char *head, size_t n)
{
    return n >= 8 && !head[4] && !head[5] && !head[6] && !head[7];
}

static bool printable(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] < 0x20 || p[i] > 0x7e)
            return false;
    return true;
}

/* The first field of a message that may follow a ModelProto field: GraphProto (node, name,
 * initializer, doc_string, input, output, value_info, ...), OperatorSetIdProto (domain, version),
 * StringStringEntryProto (key, value). */
static bool submessage_tag(unsigned char t)
{
    return t == 0x0a || t == 0x10 || t == 0x12 || t == 0x2a || t == 0x52 || t == 0x5a ||
           t == 0x62 || t == 0x6a || t == 0x72 || t == 0x7a;
}

/* An ONNX ModelProto, as protobuf serializes it in field order: ir_version (field 1, a varint,
 * tag 0x08), then producer_name, producer_version, domain (strings), model_version (a varint),
 * doc_string, graph, opset_import or metadata_props. */
static bool is_onnx(const char *path, const unsigned char *head, size_t n, bool is_dir)
{
    (void)path, (void)is_dir;
    const unsigned char *end = head + n;
    uint64_t v, len;
    if (n < 8 || head[0] != 0x08 || safetensors_length(head, n))
        return false;
    size_t i = 1, k = varint(head + i, end, &v);
    if (!k || v < 1 || v > 100) /* IR versions are small numbers: 3 in 2017, 10 in 2024 */
        return false;
    i += k;
    unsigned char tag = head[i++];
    if (tag == 0x28) /* model_version */
        return varint(head + i, end, &v) > 0;
    if (!(k = varint(head + i, end, &len)) || len == 0)
        return false;
    i += k;
    size_t shown = i + len < n ? (size_t)len : n - i;
    switch (tag) {
    case 0x12: case 0x1a: case 0x22: case 0x32: /* strings: what fits here is text */
        return shown > 0 && printable(head + i, shown);
    case 0x3a: case 0x42: case 0x72: /* graph, opset_import, metadata_props */
        return len >= 2 && i < n && submessage_tag(head[i]);
    default:
        return false;
    }
}

/* saved_model.pb: a SavedModel proto, saved_model_schema_version 1 (08 01) then the first
 * MetaGraphDef (12, its length, then its meta_info_def 0a). */
static bool is_saved_model_pb(const unsigned char *head, size_t n)
{
    uint64_t len;
    size_t k = n >= 4 ? varint(head + 3, head + n, &len) : 0;
    return k && head[0] == 0x08 && head[1] == 0x01 && head[2] == 0x12 && len >= 2 &&
           3 + k < n && head[3 + k] == 0x0a;
}

/* A SavedModel's directory (it holds saved_model.pb), or the .pb itself. */
static bool is_saved_model(const char *path, const unsigned char *head, size_t n, bool is_dir)
{
    if (!is_dir)
        return is_saved_model_pb(head, n);
    char pb[4096];
    struct stat st;
    return (size_t)snprintf(pb, sizeof pb, "%s/saved_model.pb", path) < sizeof pb &&
           stat(pb, &st) == 0;
}

static bool is_hdf5(const char *path, const unsigned char *head, size_t n, bool is_dir)
{
    (void)path, (void)is_dir;
    return n >= 8 && memcmp(head, "\x89HDF\r\n\x1a\n", 8) == 0;
}

/* A pickle (PROTO 2 to 5) that is not torch's legacy format, which is taken before this. A
 * safetensors file whose header length is 0x280 to 0x5ff plus a multiple of 0x10000 starts with
 * the same two bytes: its length's bytes 4..7 are zero and its header opens with '{'. */
static bool is_bare_pickle(const char *path, const unsigned char *head, size_t n, bool is_dir)
{
    (void)path, (void)is_dir;
    if (n >= 9 && !head[4] && !head[5] && !head[6] && !head[7] && head[8] == '{')
        return false;
    return n >= 2 && head[0] == 0x80 && head[1] >= 2 && head[1] <= 5;
}

/* An nnparity JSON report: {"schema": "nnparity.... Taken before the sharded index (JSON too). */
static bool is_json_report(const char *path, const unsigned char *head, size_t n, bool is_dir)
{
    (void)path, (void)is_dir;
    static const char *const parts[] = {"{", "\"schema\"", ":", "\"nnparity."};
    size_t i = 0;
    for (size_t p = 0; p < 4; p++) {
        while (i < n && strchr(" \t\r\n", head[i]) && head[i])
            i++;
        size_t m = strlen(parts[p]);
        if (n - i < m || memcmp(head + i, parts[p], m) != 0)
            return false;
        i += m;
    }
    return true;
}

/* Text: the first bytes are printable ASCII, tabs, line ends and whole UTF-8 characters (one cut
 * by the end of what was read excepted). Its bytes 4..7 are not zero: never a safetensors file
 * this could read. */
static bool is_text(const char *path, const unsigned char *head, size_t n, bool is_dir)
{
    (void)path, (void)is_dir;
    if (n == 0)
        return false;
    for (size_t i = 0; i < n;) {
        unsigned char c = head[i];
        if (c < 0x80) {
            if ((c < 0x20 && c != '\t' && c != '\n' && c != '\r' && c != '\f') || c == 0x7f)
                return false;
            i++;
            continue;
        }
        size_t len = (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3 : (c & 0xf8) == 0xf0 ? 4 : 0;
        if (!len || c == 0xc0 || c == 0xc1 || c > 0xf4)
            return false;
        for (size_t k = 1; k < len; k++)
            if (i + k < n && (head[i + k] & 0xc0) != 0x80)
                return false;
        i += len;
    }
    return true;
}

/* Everything else is read as safetensors, whose reader says what is wrong with it. */
static bool is_anything(const char *path, const unsigned char *head, size_t n, bool is_dir)
{
    (void)path, (void)head, (void)n, (void)is_dir;
    return true;
}

const nnp_format_entry nnp__formats[] = {
    {NULL, is_saved_model, nnp__savedmodel_refuse},
    {"safetensors-sharded", is_directory, nnp__sharded_load_dir},
    {"npy", is_npy, nnp__npy_load},
    {NULL, is_zip, nnp__npz_load},
    {NULL, is_torch_legacy, nnp__torch_load},
    {NULL, is_bare_pickle, nnp__pickle_refuse},
    {"gguf", is_gguf, nnp__gguf_load},
    {NULL, is_hdf5, nnp__hdf5_refuse},
    {NULL, is_onnx, nnp__onnx_refuse},
    {NULL, is_json_report, nnp__text_refuse},
    {"safetensors-sharded", is_index_json, nnp__sharded_load_index},
    {NULL, is_text, nnp__text_refuse},
    {"safetensors", is_anything, nnp__safetensors_load},
    {NULL, NULL, NULL},
};
