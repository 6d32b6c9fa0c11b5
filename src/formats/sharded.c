/*
 * sharded.c - a checkpoint split over several safetensors files, read as one dump: either through
 * a Hugging Face style "*.safetensors.index.json" (its "weight_map" names each tensor's shard) or
 * as a directory of *.safetensors files taken in natural name order (model-00002-of-00010 before
 * model-00010-of-00010).
 */
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "formats/formats.h"

static char *join_path(const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name);
    char *p = malloc(a + b + 2);
    if (!p)
        return NULL;
    memcpy(p, dir, a);
    p[a] = '/';
    memcpy(p + a + 1, name, b + 1);
    return p;
}

/* The directory part of `path` ("." when there is none). */
static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return strdup(".");
    if (slash == path)
        return strdup("/");
    return strndup(path, (size_t)(slash - path));
}

/* A shard named in an index must sit beside it: no directories, no way out of the folder. */
static bool plain_file_name(const char *s)
{
    return *s && !strchr(s, '/') && strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

static nnp_status load_shard(nnp_dump *d, const char *dir, const char *name)
{
    char *p = join_path(dir, name);
    if (!p)
        return nnp__nomem();
    nnp__dump_next_file(d);
    nnp_status st = nnp__safetensors_load(d, p);
    free(p);
    return st;
}

/* Every weight_map entry must name a tensor that its shard holds. */
static nnp_status check_weight_map(nnp_dump *d, const char *index_path, const char *dir,
                                   json_t *map)
{
    const char *tensor;
    json_t *v;
    json_object_foreach(map, tensor, v) {
        int64_t i = nnp_dump_find(d, tensor);
        if (i < 0)
            return nnp__fail(NNP_ERR_FORMAT, "%s: weight_map: tensor '%s' is not in shard '%s'",
                             index_path, tensor, json_string_value(v));
        char *expect = join_path(dir, json_string_value(v));
        if (!expect)
            return nnp__nomem();
        bool same = strcmp(nnp_dump_record(d, (size_t)i)->file, expect) == 0;
        free(expect);
        if (!same)
            return nnp__fail(NNP_ERR_FORMAT, "%s: weight_map: tensor '%s' is in %s, not in "
                             "shard '%s'", index_path, tensor, nnp_dump_record(d, (size_t)i)->file,
                             json_string_value(v));
    }
    if (nnp_dump_count(d) != json_object_size(map)) {
        /* A shard holds a tensor the index does not list: a loader would silently skip it. */
        for (size_t i = 0; i < nnp_dump_count(d); i++)
            if (!json_object_get(map, nnp_dump_record(d, i)->name))
                return nnp__fail(NNP_ERR_FORMAT, "%s: weight_map does not list tensor '%s' of %s",
                                 index_path, nnp_dump_record(d, i)->name,
                                 nnp_dump_record(d, i)->file);
    }
    return NNP_OK;
}

nnp_status nnp__sharded_load_index(nnp_dump *d, const char *index_path)
{
    nnp_sbuf text = {0};
    nnp_status rd = nnp__sbuf_read_file(&text, index_path, NNP_MAX_INDEX_BYTES, "shard index");
    if (rd) {
        nnp__sbuf_free(&text);
        return rd;
    }
    json_error_t jerr;
    json_t *root = json_loadb(text.s, text.len, JSON_REJECT_DUPLICATES, &jerr);
    nnp__sbuf_free(&text);
    if (!root)
        return nnp__fail(NNP_ERR_FORMAT, "%s: byte %d: not a valid JSON index: %s", index_path,
                         jerr.position, jerr.text);
    nnp_status st = NNP_OK;
    char *dir = NULL;
    const char **shards = NULL;
    json_t *seen = NULL;
    json_t *map = json_object_get(root, "weight_map");
    if (!json_is_object(root) || !json_is_object(map)) {
        st = nnp__fail(NNP_ERR_FORMAT, "%s: index has no \"weight_map\" object", index_path);
        goto out;
    }
    if (!(dir = dir_of(index_path)) ||
        !(shards = calloc(json_object_size(map) + 1, sizeof *shards))) {
        st = nnp__nomem();
        goto out;
    }
    /* Shards in order of first mention, each once. The names seen go into a hash (a JSON
     * object): an index naming a shard per tensor would make a search of the list quadratic. */
    size_t nshards = 0;
    const char *tensor;
    json_t *v;
    if (!(seen = json_object())) {
        st = nnp__nomem();
        goto out;
    }
    json_object_foreach(map, tensor, v) {
        if (!json_is_string(v) || !plain_file_name(json_string_value(v))) {
            st = nnp__fail(NNP_ERR_FORMAT, "%s: weight_map: tensor '%s' must name a file beside "
                           "the index", index_path, tensor);
            goto out;
        }
        if (json_object_get(seen, json_string_value(v)))
            continue;
        if (json_object_set_new(seen, json_string_value(v), json_true()) != 0) {
            st = nnp__nomem();
            goto out;
        }
        shards[nshards++] = json_string_value(v);
    }
    for (size_t k = 0; k < nshards; k++)
        if ((st = load_shard(d, dir, shards[k])))
            goto out;
    st = check_weight_map(d, index_path, dir, map);
out:
    json_decref(seen);
    free(shards);
    free(dir);
    json_decref(root);
    return st;
}

static int natural_order(const void *a, const void *b)
{
    return strverscmp(*(char *const *)a, *(char *const *)b);
}

nnp_status nnp__sharded_load_dir(nnp_dump *d, const char *dir_path)
{
    DIR *dir = opendir(dir_path);
    if (!dir)
        return nnp__fail(NNP_ERR_IO, "%s: cannot open directory: %s", dir_path, strerror(errno));
    char **names = NULL;
    size_t n = 0, cap = 0;
    nnp_status st = NNP_OK;
    struct dirent *e;
    while ((e = readdir(dir))) {
        size_t len = strlen(e->d_name);
        if (len <= 12 || strcmp(e->d_name + len - 12, ".safetensors") != 0)
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            char **p = realloc(names, cap * sizeof *p);
            if (!p) {
                st = nnp__nomem();
                goto out;
            }
            names = p;
        }
        if (!(names[n] = strdup(e->d_name))) {
            st = nnp__nomem();
            goto out;
        }
        n++;
    }
    if (n == 0) {
        st = nnp__fail(NNP_ERR_FORMAT, "%s: directory holds no *.safetensors files", dir_path);
        goto out;
    }
    qsort(names, n, sizeof *names, natural_order);
    bool ranks = false;
    st = nnp__ranks_load_dir(d, dir_path, names, n, &ranks);
    for (size_t i = 0; i < n && !st && !ranks; i++)
        st = load_shard(d, dir_path, names[i]);
out:
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    closedir(dir);
    return st;
}
