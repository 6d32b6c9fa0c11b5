/*
 * registry.c - the formats nnp_dump_open knows, in probing order: a new reader is added here,
 * with a probe on its file's first bytes, and nowhere else.
 */
#include <string.h>

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

/* Everything else is read as safetensors, whose reader says what is wrong with it. */
static bool is_anything(const char *path, const unsigned char *head, size_t n, bool is_dir)
{
    (void)path, (void)head, (void)n, (void)is_dir;
    return true;
}

const nnp_format_entry nnp__formats[] = {
    {"safetensors-sharded", is_directory, nnp__sharded_load_dir},
    {"npy", is_npy, nnp__npy_load},
    {NULL, is_zip, nnp__npz_load},
    {NULL, is_torch_legacy, nnp__torch_load},
    {"gguf", is_gguf, nnp__gguf_load},
    {"safetensors-sharded", is_index_json, nnp__sharded_load_index},
    {"safetensors", is_anything, nnp__safetensors_load},
    {NULL, NULL, NULL},
};
