/*
 * dump.c - the dump model: an ordered list of records over any supported file format.
 *
 * Format readers (src/formats/) add records through the builder functions of dump.h; once
 * every file is read, the records are put in execution order and indexed by name. Tensor data
 * stays in the files' mappings; only data stored in another layout is converted, on demand.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/crc32.h"
#include "common/zip.h"
#include "dump/dump.h"

typedef struct arena_block {
    struct arena_block *next;
    size_t used, cap;
    max_align_t data[];
} arena_block;

/* Where a stored member's check stands. OWED: a record was handed out unchecked while checks
 * were deferred (nnp_dump_defer_checks); nnp_dump_finish_checks checks those. */
enum { CHECK_UNREAD, CHECK_OWED, CHECK_GOOD, CHECK_BAD };

struct nnp_member_check {
    const char *file, *member;
    const unsigned char *data;
    uint64_t size;
    uint32_t crc;        /* declared */
    atomic_uint got;     /* computed, once checked */
    atomic_int state;    /* CHECK_*: records are read from several threads */
    nnp_member_check *next;
};

typedef struct deferred {
    void (*fn)(void *);
    void *p;
} deferred;

struct nnp_dump {
    char *path;
    const char *format;

    nnp_rec *recs;
    size_t nrecs, caprecs;

    nnp_strindex names; /* the records by name */

    nnp_map *maps;
    char **map_paths;
    size_t nmaps, capmaps;

    const char **meta_keys, **meta_values;
    size_t nmeta, capmeta;
    nnp_strindex meta; /* the metadata by key: a file may hold millions of keys */

    deferred *defers;
    size_t ndefers, capdefers;

    nnp_sketch_store *sketch_stores; /* the files' stored fingerprints */
    size_t nsketch_stores, capsketch_stores;

    arena_block *arena;
    uint64_t file_index; /* the file being read, counted from 0 */
    uint64_t header_room; /* header length of the first safetensors file read */
    /* While a rank capture's files are read (formats/ranks.c): the rank of the file being read
     * (-1: not a rank capture), its world size, and "@rank<R>", which its names take so that
     * the ranks' equal names stay apart */
    int32_t rank;
    uint32_t world;
    char rank_suffix[24];
    size_t annotate_next; /* the record after the last one annotated: provenance lists records
                           * in the order their file does, so it is usually the next one */
    pthread_mutex_t lock; /* guards on-demand conversion in nnp_dump_data */
    uint64_t view_bytes;  /* bytes the gathered views (view_stored) hold so far, under lock */
    nnp_member_check *checks; /* every stored member's check, for nnp_dump_finish_checks */
    atomic_bool defer_checks;
};

/* ---- growth and the arena ---- */

void *nnp__dump_alloc(nnp_dump *d, size_t n)
{
    size_t align = sizeof(max_align_t);
    size_t need = (n + align - 1) / align * align;
    if (need < n) {
        nnp__nomem();
        return NULL;
    }
    arena_block *b = d->arena;
    if (!b || b->cap - b->used < need) {
        size_t cap = need > 65536 ? need : 65536;
        b = malloc(sizeof *b + cap);
        if (!b) {
            nnp__nomem();
            return NULL;
        }
        b->next = d->arena;
        b->used = 0;
        b->cap = cap;
        d->arena = b;
    }
    void *p = (char *)b->data + b->used;
    b->used += need;
    memset(p, 0, n);
    return p;
}

char *nnp__dump_strndup(nnp_dump *d, const char *s, size_t n)
{
    char *p = nnp__dump_alloc(d, n + 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = 0;
    }
    return p;
}

char *nnp__dump_strdup(nnp_dump *d, const char *s)
{
    return nnp__dump_strndup(d, s, strlen(s));
}

nnp_status nnp__dump_defer(nnp_dump *d, void (*fn)(void *), void *p)
{
    if (!nnp__grow((void **)&d->defers, &d->capdefers, d->ndefers + 1, sizeof *d->defers)) {
        fn(p);
        return nnp__nomem();
    }
    d->defers[d->ndefers++] = (deferred){fn, p};
    return NNP_OK;
}

nnp_status nnp__dump_add_sketch_store(nnp_dump *d, const char *file, char *value, size_t first,
                                      size_t count)
{
    if (d->nsketch_stores >= UINT32_MAX - 1 || first > d->nrecs || count > d->nrecs - first ||
        !nnp__grow((void **)&d->sketch_stores, &d->capsketch_stores, d->nsketch_stores + 1,
                   sizeof *d->sketch_stores)) {
        free(value);
        return d->nsketch_stores >= UINT32_MAX - 1 || first > d->nrecs ||
                       count > d->nrecs - first
                   ? nnp__fail(NNP_ERR_INTERNAL, "%s: stored sketches of records not read", file)
                   : nnp__nomem();
    }
    const char *fcopy = nnp__dump_strdup(d, file);
    if (!fcopy) {
        free(value);
        return nnp__nomem();
    }
    d->sketch_stores[d->nsketch_stores++] =
        (nnp_sketch_store){fcopy, value, strlen(value), count, NULL};
    for (size_t k = 0; k < count; k++) {
        d->recs[first + k].sketch_store = (uint32_t)d->nsketch_stores;
        d->recs[first + k].sketch_at = k;
    }
    return NNP_OK;
}

nnp_sketch_store *nnp__dump_sketch_store(nnp_dump *d, uint32_t id)
{
    return id < d->nsketch_stores ? &d->sketch_stores[id] : NULL;
}

/* ---- the name index ---- */

static const char *name_at(const void *d, size_t i)
{
    return ((const nnp_dump *)d)->recs[i].pub.name;
}

static const char *meta_key_at(const void *d, size_t i)
{
    return ((const nnp_dump *)d)->meta_keys[i];
}

int64_t nnp_dump_find(const nnp_dump *d, const char *name)
{
    return d && name ? nnp__strindex_find(&d->names, name) : -1;
}

/* ---- the builder ---- */

nnp_status nnp__dump_map(nnp_dump *d, const char *path, nnp_map *out)
{
    if (!nnp__grow((void **)&d->maps, &d->capmaps, d->nmaps + 1, sizeof *d->maps))
        return nnp__nomem();
    char **paths = realloc(d->map_paths, d->capmaps * sizeof *paths);
    if (!paths)
        return nnp__nomem();
    d->map_paths = paths;
    nnp_map m;
    nnp_status st = nnp__map_file(path, &m);
    if (st)
        return st;
    char *copy = strdup(path);
    if (!copy) {
        nnp__unmap(&m);
        return nnp__nomem();
    }
    d->maps[d->nmaps] = m;
    d->map_paths[d->nmaps] = copy;
    *out = d->maps[d->nmaps++];
    return NNP_OK;
}

void nnp__dump_set_format(nnp_dump *d, const char *format)
{
    d->format = format;
}

uint64_t nnp__dump_header_room(const nnp_dump *d)
{
    return d->header_room;
}

void nnp__dump_set_header_room(nnp_dump *d, uint64_t room)
{
    if (!d->header_room)
        d->header_room = room;
}

uint64_t nnp__dump_next_file(nnp_dump *d)
{
    return ++d->file_index;
}

void nnp__dump_set_rank(nnp_dump *d, int32_t rank, uint32_t world)
{
    d->rank = rank;
    d->world = world;
    if (rank >= 0)
        snprintf(d->rank_suffix, sizeof d->rank_suffix, "@rank%d", (int)rank);
    else
        d->rank_suffix[0] = 0;
}

nnp_rec *nnp__dump_recs(nnp_dump *d, size_t *n)
{
    *n = d->nrecs;
    return d->recs;
}

/* `name` as the dump stores it: with the rank's suffix while a rank capture is read. *tmp gets
 * what must be freed (NULL when nothing); NULL when memory runs out. */
static const char *stored_name(const nnp_dump *d, const char *name, char **tmp)
{
    *tmp = NULL;
    if (!d->rank_suffix[0])
        return name;
    size_t a = strlen(name), b = strlen(d->rank_suffix);
    if (!(*tmp = malloc(a + b + 1)))
        return NULL;
    memcpy(*tmp, name, a);
    memcpy(*tmp + a, d->rank_suffix, b + 1);
    return *tmp;
}

static nnp_status dump_add(nnp_dump *d, const char *file, const char *name, nnp_dtype dtype,
                           uint32_t ndim, const uint64_t *shape, nnp_rec **out);

nnp_status nnp__dump_reserve(nnp_dump *d, size_t more)
{
    size_t n = d->nrecs + more;
    if (more >= UINT32_MAX - 1 || n >= UINT32_MAX - 1)
        return NNP_OK; /* dump_add refuses the record that crosses the limit */
    if (!nnp__grow((void **)&d->recs, &d->caprecs, n, sizeof *d->recs) ||
        !nnp__strindex_room(&d->names, d->nrecs, n))
        return nnp__nomem();
    return NNP_OK;
}

nnp_status nnp__dump_add(nnp_dump *d, const char *file, const char *name, nnp_dtype dtype,
                         uint32_t ndim, const uint64_t *shape, nnp_rec **out)
{
    char *tmp;
    const char *stored = stored_name(d, name, &tmp);
    if (!stored)
        return nnp__nomem();
    nnp_status st = dump_add(d, file, stored, dtype, ndim, shape, out);
    free(tmp);
    if (!st) {
        (*out)->pub.rank = d->rank;
        (*out)->pub.world_size = d->rank >= 0 ? d->world : 0;
    }
    return st;
}

static nnp_status dump_add(nnp_dump *d, const char *file, const char *name, nnp_dtype dtype,
                           uint32_t ndim, const uint64_t *shape, nnp_rec **out)
{
    uint64_t nelem, nbytes;
    if (!nnp__shape_nelem(ndim, shape, &nelem) ||
        !nnp__mul_u64(nelem, nnp_dtype_size(dtype), &nbytes))
        return nnp__fail(NNP_ERR_FORMAT,
                         "%s: tensor '%s': shape's element count overflows 64 bits "
                         "(ValidationOverflow)", file, name);
    if (d->nrecs >= UINT32_MAX - 1)
        return nnp__fail(NNP_ERR_UNSUPPORTED, "%s: more than %u tensors", file, UINT32_MAX - 2);
    if (!nnp__strindex_reserve(&d->names, d->nrecs))
        return nnp__nomem();
    size_t slot = nnp__strindex_slot(&d->names, name);
    if (d->names.slots[slot]) {
        const char *other = d->recs[d->names.slots[slot] - 1].pub.file;
        if (strcmp(other, file) == 0)
            return nnp__fail(NNP_ERR_FORMAT, "%s: tensor '%s' appears twice (duplicate key)", file,
                             name);
        return nnp__fail(NNP_ERR_FORMAT, "%s: tensor '%s' is also in %s (duplicate tensor name)",
                         file, name, other);
    }
    if (!nnp__grow((void **)&d->recs, &d->caprecs, d->nrecs + 1, sizeof *d->recs))
        return nnp__nomem();
    nnp_rec *r = &d->recs[d->nrecs];
    memset(r, 0, sizeof *r);
    r->pub.name = nnp__dump_strdup(d, name);
    /* Files are few: share one copy of each file name among its records. */
    const char *fcopy = NULL;
    if (d->nrecs && strcmp(d->recs[d->nrecs - 1].pub.file, file) == 0)
        fcopy = d->recs[d->nrecs - 1].pub.file;
    else
        fcopy = nnp__dump_strdup(d, file);
    uint64_t *shp = nnp__dump_alloc(d, (ndim ? ndim : 1) * sizeof *shp);
    if (!r->pub.name || !fcopy || !shp)
        return nnp__nomem();
    if (ndim)
        memcpy(shp, shape, ndim * sizeof *shp);
    r->pub.file = fcopy;
    r->pub.module = r->pub.role = r->pub.module_type = "";
    r->pub.dtype = dtype;
    r->pub.ndim = ndim;
    r->pub.shape = shp;
    r->pub.nelem = nelem;
    r->pub.nbytes = nbytes;
    r->file_index = d->file_index;
    r->file_order = d->nrecs;
    d->names.slots[slot] = (uint32_t)(d->nrecs + 1);
    d->nrecs++;
    *out = r;
    return NNP_OK;
}

nnp_status nnp__dump_add_same(nnp_dump *d, const char *file, const char *name, const char *source,
                              nnp_rec **out)
{
    char *tmp;
    const char *stored = stored_name(d, source, &tmp);
    if (!stored)
        return nnp__nomem();
    int64_t s = nnp_dump_find(d, stored);
    free(tmp);
    /* the source is listed before (annotated), as a writer lists records in execution order */
    if (s < 0 || strcmp(d->recs[s].pub.file, file) != 0 || !d->recs[s].has_meta_seq)
        return nnp__fail(NNP_ERR_FORMAT, "%s: tensor '%s' is the same as '%s', which the file "
                         "does not hold before it", file, name, source);
    if (strcmp(name, "__metadata__") == 0)
        return nnp__fail(NNP_ERR_FORMAT, "%s: '__metadata__' cannot name a tensor", file);
    /* the source's shape and file name are arena strings that live as long as the dump */
    nnp_rec src = d->recs[s];
    nnp_status st = nnp__dump_add(d, file, name, src.pub.dtype, src.pub.ndim, src.pub.shape, out);
    if (st)
        return st;
    nnp_rec *r = *out;
    r->raw = src.raw;
    r->layout = src.layout;
    r->load = src.load;
    r->load_range = src.load_range;
    r->load_ctx = src.load_ctx;
    r->view_stored = src.view_stored;
    r->check = src.check;
    r->check_off = src.check_off;
    r->stored = 0; /* its bytes are the source's */
    r->stored_set = true;
    r->sketch_store = src.sketch_store;
    r->sketch_at = src.sketch_at;
    r->same_as = src.same_as ? src.same_as : src.pub.name;
    return NNP_OK;
}

/* The index of metadata key `key`, or -1. */
static int64_t meta_find(const nnp_dump *d, const char *key)
{
    return nnp__strindex_find(&d->meta, key);
}

nnp_status nnp__dump_add_meta(nnp_dump *d, const char *key, const char *value)
{
    if (meta_find(d, key) >= 0)
        return NNP_OK;
    if (d->nmeta >= UINT32_MAX - 1)
        return nnp__fail(NNP_ERR_UNSUPPORTED, "more than %u metadata keys", UINT32_MAX - 2);
    if (!nnp__strindex_reserve(&d->meta, d->nmeta))
        return nnp__nomem();
    size_t cap = d->capmeta;
    if (!nnp__grow((void **)&d->meta_keys, &cap, d->nmeta + 1, sizeof *d->meta_keys))
        return nnp__nomem();
    cap = d->capmeta;
    if (!nnp__grow((void **)&d->meta_values, &cap, d->nmeta + 1, sizeof *d->meta_values))
        return nnp__nomem();
    d->capmeta = cap;
    const char *k = nnp__dump_strdup(d, key), *v = nnp__dump_strdup(d, value);
    if (!k || !v)
        return nnp__nomem();
    d->meta_keys[d->nmeta] = k;
    d->meta_values[d->nmeta] = v;
    d->meta.slots[nnp__strindex_slot(&d->meta, k)] = (uint32_t)(d->nmeta + 1);
    d->nmeta++;
    return NNP_OK;
}

nnp_status nnp__dump_set_meta(nnp_dump *d, const char *key, const char *value)
{
    int64_t i = meta_find(d, key);
    if (i >= 0) {
        const char *v = nnp__dump_strdup(d, value);
        if (!v)
            return nnp__nomem();
        d->meta_values[i] = v;
        return NNP_OK;
    }
    return nnp__dump_add_meta(d, key, value);
}

nnp_status nnp__dump_annotate(nnp_dump *d, const char *file, const char *name, const char *module,
                              const char *role, const char *module_type, uint64_t call,
                              uint64_t seq)
{
    char *tmp;
    const char *stored = stored_name(d, name, &tmp);
    if (!stored)
        return nnp__nomem();
    size_t next = d->annotate_next;
    int64_t i = next < d->nrecs && strcmp(d->recs[next].pub.name, stored) == 0
                    ? (int64_t)next
                    : nnp_dump_find(d, stored);
    free(tmp);
    if (i >= 0)
        d->annotate_next = (size_t)i + 1;
    if (i < 0 || strcmp(d->recs[i].pub.file, file) != 0)
        return nnp__fail(NNP_ERR_FORMAT,
                         "%s: metadata '%s' names tensor '%s', which the file does not hold",
                         file, NNP_META_RECORDS_KEY, name);
    nnp_rec *r = &d->recs[i];
    if (r->has_meta_seq)
        return nnp__fail(NNP_ERR_FORMAT, "%s: metadata '%s' lists tensor '%s' twice", file,
                         NNP_META_RECORDS_KEY, name);
    r->pub.module = nnp__dump_strdup(d, module ? module : "");
    r->pub.role = nnp__dump_strdup(d, role ? role : "");
    r->pub.module_type = nnp__dump_strdup(d, module_type ? module_type : "");
    if (!r->pub.module || !r->pub.role || !r->pub.module_type)
        return nnp__nomem();
    r->pub.call = call;
    r->meta_seq = seq;
    r->has_meta_seq = true;
    return NNP_OK;
}

/* ---- execution order ---- */

/* With nnparity metadata on every record the global sequence decides; otherwise files keep their
 * opening order, and within a file the recorded order leads and unrecorded tensors follow. */
static int rec_order(const void *pa, const void *pb)
{
    const nnp_rec *a = pa, *b = pb;
    for (int k = 0; k < 3; k++)
        if (a->sort_key[k] != b->sort_key[k])
            return a->sort_key[k] < b->sort_key[k] ? -1 : 1;
    return 0;
}

static nnp_status finalize(nnp_dump *d)
{
    bool all = d->nrecs > 0;
    for (size_t i = 0; i < d->nrecs; i++)
        all = all && d->recs[i].has_meta_seq;
    for (size_t i = 0; i < d->nrecs; i++) {
        nnp_rec *r = &d->recs[i];
        uint64_t seq = r->has_meta_seq ? r->meta_seq : UINT64_MAX;
        r->sort_key[0] = all ? seq : r->file_index;
        r->sort_key[1] = all ? r->file_index : seq;
        r->sort_key[2] = r->file_order;
    }
    if (d->nrecs)
        qsort(d->recs, d->nrecs, sizeof *d->recs, rec_order);
    for (size_t i = 0; i < d->nrecs; i++)
        d->recs[i].pub.seq = i;
    return nnp__strindex_rebuild(&d->names, d->nrecs) ? NNP_OK : nnp__nomem();
}

/* ---- a new dump, and its end ---- */

nnp_status nnp__dump_new(const char *path, nnp_dump **out)
{
    *out = NULL;
    if (!path || !*path)
        return nnp__fail(NNP_ERR_ARG, "nnp_dump_open: empty path");
    nnp_dump *d = calloc(1, sizeof *d);
    if (!d)
        return nnp__nomem();
    if (pthread_mutex_init(&d->lock, NULL) != 0) {
        free(d);
        return nnp__fail(NNP_ERR_INTERNAL, "nnp_dump_open: cannot create a mutex");
    }
    d->rank = -1;
    d->names = (nnp_strindex){.key = name_at, .ctx = d};
    d->meta = (nnp_strindex){.key = meta_key_at, .ctx = d};
    d->path = strdup(path);
    if (!d->path) {
        nnp_dump_close(d);
        return nnp__nomem();
    }
    *out = d;
    return NNP_OK;
}

nnp_status nnp__dump_finish(nnp_dump *d, nnp_status st, nnp_dump **out)
{
    if (!st)
        st = finalize(d);
    if (st) {
        nnp_dump_close(d);
        return st;
    }
    *out = d;
    return NNP_OK;
}

void nnp_dump_close(nnp_dump *d)
{
    if (!d)
        return;
    for (size_t i = 0; i < d->nrecs; i++)
        free(d->recs[i].owned);
    for (size_t i = d->ndefers; i-- > 0;)
        d->defers[i].fn(d->defers[i].p);
    for (size_t i = 0; i < d->nmaps; i++) {
        nnp__unmap(&d->maps[i]);
        free(d->map_paths[i]);
    }
    while (d->arena) {
        arena_block *next = d->arena->next;
        free(d->arena);
        d->arena = next;
    }
    pthread_mutex_destroy(&d->lock);
    free(d->recs);
    nnp__strindex_free(&d->names);
    free(d->maps);
    free(d->map_paths);
    free(d->meta_keys);
    free(d->meta_values);
    nnp__strindex_free(&d->meta);
    free(d->defers);
    for (size_t i = 0; i < d->nsketch_stores; i++) {
        free(d->sketch_stores[i].value);
        free(d->sketch_stores[i].decoded);
    }
    free(d->sketch_stores);
    free(d->path);
    free(d);
}

/* ---- access ---- */

const char *nnp_dump_path(const nnp_dump *d)
{
    return d ? d->path : "";
}

const char *nnp_dump_format(const nnp_dump *d)
{
    return d->format ? d->format : "unknown";
}

size_t nnp_dump_count(const nnp_dump *d)
{
    return d ? d->nrecs : 0;
}

const nnp_record *nnp_dump_record(const nnp_dump *d, size_t i)
{
    return d && i < d->nrecs ? &d->recs[i].pub : NULL;
}

size_t nnp_dump_meta_count(const nnp_dump *d)
{
    return d ? d->nmeta : 0;
}

void nnp_dump_meta_at(const nnp_dump *d, size_t i, const char **key, const char **value)
{
    bool ok = d && i < d->nmeta;
    if (key)
        *key = ok ? d->meta_keys[i] : NULL;
    if (value)
        *value = ok ? d->meta_values[i] : NULL;
}

const char *nnp_dump_meta_get(const nnp_dump *d, const char *key)
{
    int64_t i = d && key ? meta_find(d, key) : -1;
    return i >= 0 ? d->meta_values[i] : NULL;
}

/* Copy `raw` (stored with `layout`) to dst in little-endian C order. */
static void convert_layout(const nnp_rec *r, const unsigned char *raw, unsigned char *dst)
{
    size_t es = nnp_dtype_size(r->pub.dtype);
    uint64_t n = r->pub.nelem;
    uint32_t nd = r->pub.ndim;
    bool swap = r->layout & NNP_LAYOUT_BYTESWAP;
    bool fortran = (r->layout & NNP_LAYOUT_FORTRAN) && nd > 1;
    uint64_t idx[64] = {0}, cstride[64];
    if (fortran) {
        uint64_t s = 1;
        for (uint32_t k = nd; k-- > 0;) {
            cstride[k] = s;
            s *= r->pub.shape[k];
        }
    }
    uint64_t out = 0;
    for (uint64_t i = 0; i < n; i++) {
        const unsigned char *src = raw + i * es;
        unsigned char *d = dst + (fortran ? out : i) * es;
        for (size_t b = 0; b < es; b++)
            d[b] = src[swap ? es - 1 - b : b];
        if (fortran) { /* the source walks the first index fastest */
            for (uint32_t k = 0; k < nd; k++) {
                out += cstride[k];
                if (++idx[k] < r->pub.shape[k])
                    break;
                out -= cstride[k] * idx[k];
                idx[k] = 0;
            }
        }
    }
}

/* The cap on what a dump's gathered views may hold together: a view's logical size is not bound
 * by the file (an expanded one-element storage reads as 2^32 elements), so its copy is bounded
 * by the size of the files instead. */
static uint64_t view_cap(const nnp_dump *d)
{
    uint64_t files = 0, cap;
    for (size_t m = 0; m < d->nmaps; m++)
        if (!nnp__add_u64(files, d->maps[m].size, &files))
            return UINT64_MAX;
    if (!nnp__mul_u64(files, NNP_VIEW_CAP_FACTOR, &cap))
        return UINT64_MAX;
    return cap > NNP_VIEW_CAP_MIN ? cap : NNP_VIEW_CAP_MIN;
}

/* ---- stored zip members: their CRC-32 ---- */

/* Members this large are checked in steps whose pages are released behind the check, so that
 * checking one keeps its resident size bounded, as the passes over a record do. */
#define CHECK_STEP (UINT64_C(16) << 20)
#define CHECK_RELEASE_FROM (UINT64_C(64) << 20)
/* A pass folds a member's check in when the record is at least FOLD_MIN bytes and the member
 * holds at most FOLD_MARGIN bytes besides it (an npy header): those few are read apart. */
#define FOLD_MIN (UINT64_C(1) << 20)
#define FOLD_MARGIN (UINT64_C(1) << 20)

nnp_member_check *nnp__dump_member_check(nnp_dump *d, const char *file, const char *member,
                                         const unsigned char *data, uint64_t size, uint32_t crc)
{
    nnp_member_check *c = nnp__dump_alloc(d, sizeof *c);
    char *f = nnp__dump_strdup(d, file), *m = nnp__dump_strdup(d, member);
    if (!c || !f || !m)
        return NULL;
    c->file = f;
    c->member = m;
    c->data = data;
    c->size = size;
    c->crc = crc;
    atomic_init(&c->got, 0);
    atomic_init(&c->state, CHECK_UNREAD);
    c->next = d->checks;
    d->checks = c;
    return c;
}

static nnp_status settle(nnp_member_check *c, uint32_t got)
{
    atomic_store(&c->got, got);
    nnp_status st = nnp__zip_check_crc(c->file, c->member, got, c->crc);
    atomic_store(&c->state, st ? CHECK_BAD : CHECK_GOOD);
    return st;
}

/* Whole pages of [p, p+len) that lie in one of the dump's mappings go back to the page cache. */
static void release_bytes(const nnp_dump *d, const unsigned char *p, uint64_t len)
{
    for (size_t m = 0; m < d->nmaps; m++) {
        const unsigned char *b = d->maps[m].base;
        if (p < b || p + len > b + d->maps[m].size)
            continue;
        uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
        uintptr_t a = ((uintptr_t)p + page - 1) & ~(page - 1), e = ((uintptr_t)p + len) & ~(page - 1);
        if (e > a)
            madvise((void *)a, e - a, MADV_DONTNEED);
        return;
    }
}

/* Check a member now, in one pass over its bytes. */
static nnp_status check_member(const nnp_dump *d, nnp_member_check *c)
{
    int state = atomic_load(&c->state);
    if (state == CHECK_GOOD)
        return NNP_OK;
    if (state == CHECK_BAD)
        return nnp__zip_check_crc(c->file, c->member, atomic_load(&c->got), c->crc);
    uint32_t crc = 0;
    for (uint64_t done = 0; done < c->size;) {
        uint64_t step = c->size - done < CHECK_STEP ? c->size - done : CHECK_STEP;
        crc = nnp__crc32(crc, c->data + done, (size_t)step);
        if (c->size >= CHECK_RELEASE_FROM)
            release_bytes(d, c->data + done, step);
        done += step;
    }
    return settle(c, crc);
}

/* Check record r's member before its bytes are handed out in place, or, while checks are
 * deferred, note that it is owed. */
static nnp_status check_or_owe(nnp_dump *d, nnp_member_check *c)
{
    int state = atomic_load(&c->state);
    if (state == CHECK_GOOD)
        return NNP_OK;
    if (state != CHECK_BAD && atomic_load(&d->defer_checks)) {
        int unread = CHECK_UNREAD;
        atomic_compare_exchange_strong(&c->state, &unread, CHECK_OWED);
        return NNP_OK;
    }
    return check_member(d, c);
}

void nnp_dump_defer_checks(nnp_dump *d)
{
    if (d)
        atomic_store(&d->defer_checks, true);
}

nnp_status nnp_dump_finish_checks(nnp_dump *d)
{
    if (!d)
        return NNP_OK;
    atomic_store(&d->defer_checks, false);
    nnp_member_check *bad = NULL;
    for (nnp_member_check *c = d->checks; c; c = c->next) {
        int state = atomic_load(&c->state);
        if ((state == CHECK_OWED || state == CHECK_BAD) && check_member(d, c) && !bad)
            bad = c;
    }
    /* its message again: a later member's failure may have replaced it */
    return bad ? check_member(d, bad) : NNP_OK;
}

nnp_status nnp__dump_pass_begin(nnp_dump *d, size_t i, bool *fold)
{
    if (fold)
        *fold = false;
    if (!d || i >= d->nrecs)
        return nnp__fail(NNP_ERR_ARG, "nnp_dump_data: no record %zu", i);
    const nnp_rec *r = &d->recs[i];
    nnp_member_check *c = r->check;
    /* a converted or gathered copy was made after its member was checked */
    if (!c || r->load || r->layout)
        return NNP_OK;
    int state = atomic_load(&c->state);
    if (state == CHECK_GOOD)
        return NNP_OK;
    if (fold && state != CHECK_BAD && r->pub.nbytes >= FOLD_MIN &&
        c->size - r->pub.nbytes <= FOLD_MARGIN) {
        *fold = true;
        return NNP_OK;
    }
    return check_member(d, c);
}

nnp_status nnp__dump_pass_end(nnp_dump *d, size_t i, uint32_t crc)
{
    if (!d || i >= d->nrecs || !d->recs[i].check)
        return nnp__fail(NNP_ERR_INTERNAL, "nnp__dump_pass_end: record %zu has no check", i);
    const nnp_rec *r = &d->recs[i];
    nnp_member_check *c = r->check;
    if (atomic_load(&c->state) == CHECK_GOOD)
        return NNP_OK; /* another pass over the same member was first */
    /* the bytes before and after the record (pass_begin bounded them by FOLD_MARGIN) */
    uint64_t before = r->check_off, end = r->check_off + r->pub.nbytes;
    uint32_t whole = nnp__crc32(0, c->data, (size_t)before);
    whole = nnp__crc32_combine(whole, crc, r->pub.nbytes);
    whole = nnp__crc32(whole, c->data + end, (size_t)(c->size - end));
    return settle(c, whole);
}

/* Under the lock: count a view's presented size against the dump's cap, or refuse it. The
 * cap bounds the work of reading views as well as their copies, so a view read a range at a
 * time counts too. */
static nnp_status take_view_budget(nnp_dump *d, const nnp_rec *r)
{
    if (!r->view_stored)
        return NNP_OK;
    uint64_t cap = view_cap(d);
    if (r->pub.nbytes > cap || d->view_bytes > cap - r->pub.nbytes)
        return nnp__fail(NNP_ERR_FORMAT, "%s: tensor '%s' is a view of %" PRIu64 " stored bytes "
                         "that reads as %" PRIu64 " bytes; with the %" PRIu64 " bytes of the "
                         "views read before it, that passes the cap of %" PRIu64 " bytes on "
                         "what a file's views may expand to (%u times the file's size, at "
                         "least %llu MiB)", r->pub.file, r->pub.name, r->view_stored,
                         r->pub.nbytes, d->view_bytes, cap, NNP_VIEW_CAP_FACTOR,
                         NNP_VIEW_CAP_MIN >> 20);
    d->view_bytes += r->pub.nbytes;
    return NNP_OK;
}

nnp_status nnp__dump_begin_ranged(nnp_dump *d, size_t i, bool *ranged)
{
    *ranged = false;
    if (!d || i >= d->nrecs)
        return nnp__fail(NNP_ERR_ARG, "nnp_dump_data: no record %zu", i);
    nnp_rec *r = &d->recs[i];
    if (!r->load_range || !r->pub.nbytes)
        return NNP_OK;
    pthread_mutex_lock(&d->lock);
    nnp_status st = NNP_OK;
    if (!r->owned) {
        if (!(st = r->check ? check_member(d, r->check) : NNP_OK) &&
            !(st = take_view_budget(d, r)))
            *ranged = true;
    }
    pthread_mutex_unlock(&d->lock);
    return st;
}

void nnp__dump_read_range(nnp_dump *d, size_t i, uint64_t first, uint64_t n, void *dst)
{
    const nnp_rec *r = &d->recs[i];
    r->load_range(r->load_ctx, first, n, dst);
}

static nnp_status data_of(nnp_dump *d, size_t i, const void **data, bool check_raw)
{
    if (!d || i >= d->nrecs || !data)
        return nnp__fail(NNP_ERR_ARG, "nnp_dump_data: no record %zu", i);
    nnp_rec *r = &d->recs[i];
    nnp_status st = NNP_OK;
    if (!r->load && !r->layout) {
        if (check_raw && r->check && (st = check_or_owe(d, r->check)))
            return st;
        *data = r->raw;
        return NNP_OK;
    }
    pthread_mutex_lock(&d->lock);
    /* what the conversion reads is checked first, deferred or not: the copy is what stays */
    if (!r->owned && r->check)
        st = check_member(d, r->check);
    if (!st && !r->owned && r->pub.nbytes) {
        if (r->pub.ndim > 64 && (r->layout & NNP_LAYOUT_FORTRAN)) {
            st = nnp__fail(NNP_ERR_UNSUPPORTED, "%s: tensor '%s': Fortran order with %u dimensions",
                           r->pub.file, r->pub.name, r->pub.ndim);
        } else if ((st = take_view_budget(d, r))) {
            /* refused before anything is allocated */
        } else if (r->pub.nbytes > SIZE_MAX || !(r->owned = malloc((size_t)r->pub.nbytes))) {
            st = nnp__nomem();
        } else if (r->load) {
            st = r->load(r->load_ctx, r->owned, r->pub.nbytes);
            if (st) {
                free(r->owned);
                r->owned = NULL;
            }
        } else {
            convert_layout(r, r->raw, r->owned);
        }
    }
    *data = st ? NULL : r->owned;
    pthread_mutex_unlock(&d->lock);
    return st;
}

uint64_t nnp_record_stored_bytes(const nnp_dump *d, size_t i)
{
    if (!d || i >= d->nrecs)
        return 0;
    return d->recs[i].stored_set ? d->recs[i].stored : d->recs[i].pub.nbytes;
}

const char *nnp_record_same_as(const nnp_dump *d, size_t i)
{
    return d && i < d->nrecs ? d->recs[i].same_as : NULL;
}

nnp_status nnp_dump_data(nnp_dump *d, size_t i, const void **data)
{
    return data_of(d, i, data, true);
}

nnp_status nnp__dump_data_for_pass(nnp_dump *d, size_t i, const void **data)
{
    return data_of(d, i, data, false);
}

/* The whole pages inside [off, off+len) of record i's mapped bytes, or false when the record is
 * not read straight from a mapping. */
static bool record_pages(nnp_dump *d, size_t i, uint64_t off, uint64_t len, uintptr_t *a,
                         uintptr_t *e, bool inner)
{
    if (!d || i >= d->nrecs || !d->recs[i].raw || d->recs[i].layout || d->recs[i].load ||
        off > d->recs[i].pub.nbytes || len > d->recs[i].pub.nbytes - off)
        return false;
    /* Only file-backed pages come back from the page cache; advice on heap memory (a reader's
     * own buffer) would zero it. */
    bool mapped = false;
    for (size_t m = 0; m < d->nmaps && !mapped; m++)
        mapped = d->recs[i].raw >= d->maps[m].base &&
                 d->recs[i].raw + d->recs[i].pub.nbytes <= d->maps[m].base + d->maps[m].size;
    if (!mapped)
        return false;
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t start = (uintptr_t)d->recs[i].raw + off, end = start + len;
    /* Releasing keeps pages shared with a neighbour; prefetching takes them. */
    *a = inner ? (start + page - 1) & ~(page - 1) : start & ~(page - 1);
    *e = inner ? end & ~(page - 1) : (end + page - 1) & ~(page - 1);
    return *e > *a;
}

void nnp__dump_release_range(nnp_dump *d, size_t i, uint64_t off, uint64_t len)
{
    uintptr_t a, e;
    if (record_pages(d, i, off, len, &a, &e, true))
        madvise((void *)a, e - a, MADV_DONTNEED);
}

void nnp__dump_prefetch_range(nnp_dump *d, size_t i, uint64_t off, uint64_t len)
{
    uintptr_t a, e;
    if (!record_pages(d, i, off, len, &a, &e, false))
        return;
#ifdef MADV_POPULATE_READ
    /* Map the pages in one call instead of one fault per few pages; older kernels say EINVAL. */
    if (madvise((void *)a, e - a, MADV_POPULATE_READ) == 0)
        return;
#endif
    madvise((void *)a, e - a, MADV_WILLNEED);
}

void nnp_dump_release(nnp_dump *d, size_t i)
{
    if (d && i < d->nrecs)
        nnp__dump_release_range(d, i, 0, d->recs[i].pub.nbytes);
}
