/*
 * npz.c - reads numpy .npz archives (np.savez, np.savez_compressed): a zip whose members are .npy
 * files, one record per member, named as numpy names them (the member name without ".npy").
 *
 * Stored members are parsed in place in the mapping, and checked against their CRC-32 when a
 * record is first read (dump.c, nnp__dump_member_check). A deflated member's npy header is inflated
 * at open, so that its dtype and shape are known; its data is inflated, with size and CRC-32
 * checked, when first asked for (nnp_dump_data), straight into the record's buffer.
 */
#include <stdlib.h>
#include <string.h>

#include "formats/npy.h"
#include "formats/torch_pt.h"
#include "common/zip.h"

/* What a deflated member's loader needs after the zip's directory is gone. */
typedef struct npz_member {
    nnp_zip zip; /* path and bytes only */
    nnp_zip_entry entry;
    uint64_t skip; /* the npy preamble and header */
} npz_member;

static nnp_status load_deflated(void *ctx, void *dst, uint64_t nbytes)
{
    const npz_member *m = ctx;
    return nnp__zip_extract(&m->zip, &m->entry, m->skip, dst, nbytes);
}

static bool ends_with(const char *s, size_t n, const char *suffix)
{
    size_t m = strlen(suffix);
    return n >= m && memcmp(s + n - m, suffix, m) == 0;
}

/* Inflate just the preamble and header of a deflated member and parse them. */
static nnp_status deflated_header(const nnp_zip *z, const nnp_zip_entry *e, nnp_npy_info *info)
{
    unsigned char pre[NNP_NPY_PREAMBLE_MAX];
    uint64_t n = e->size < sizeof pre ? e->size : sizeof pre, end;
    nnp_status st = nnp__zip_peek(z, e, pre, n);
    if (!st)
        st = nnp__npy_preamble(z->path, e->name, pre, e->size, &end);
    if (st)
        return st;
    /* end <= e->size, which the zip reader bounded by the compressed size */
    if (end > SIZE_MAX)
        return nnp__nomem();
    unsigned char *head = malloc((size_t)end);
    if (!head)
        return nnp__nomem();
    st = nnp__zip_peek(z, e, head, end);
    if (!st)
        st = nnp__npy_parse(z->path, e->name, head, end, e->size, info);
    free(head);
    return st;
}

static nnp_status add_member(nnp_dump *d, const nnp_zip *z, const nnp_zip_entry *e,
                             const char *path_copy)
{
    size_t len = strlen(e->name);
    const char *name = e->name;
    if (ends_with(name, len, ".npy") && len > 4)
        len -= 4;
    char *rec_name = nnp__dump_strndup(d, name, len);
    if (!rec_name)
        return NNP_ERR_NOMEM;

    nnp_npy_info info;
    const unsigned char *stored = nnp__zip_stored_data(z, e);
    nnp_status st = stored ? nnp__npy_parse(z->path, e->name, stored, e->size, e->size, &info)
                           : deflated_header(z, e, &info);
    if (st)
        return st;
    nnp_rec *r;
    if ((st = nnp__dump_add(d, z->path, rec_name, info.dtype, info.ndim, info.shape, &r)))
        return st;
    if (stored) {
        r->raw = stored + info.data_offset;
        r->layout = info.layout;
        r->check_off = info.data_offset;
        r->check = nnp__dump_member_check(d, z->path, e->name, stored, e->size, e->crc32);
        return r->check ? NNP_OK : NNP_ERR_NOMEM;
    }
    r->stored = e->comp_size;
    r->stored_set = true;
    if (info.nbytes == 0) /* no data to ask for later: check the member now */
        return nnp__zip_extract(z, e, 0, NULL, 0);
    if (info.layout) {
        /* dump.c converts byte order and Fortran order from `raw`, so inflate now; such members
         * are rare. (Heap memory is safe as `raw` only with a layout: nnp_dump_release leaves
         * those alone.) */
        unsigned char *all;
        if ((st = nnp__zip_extract_alloc(z, e, &all)))
            return st;
        if ((st = nnp__dump_defer(d, free, all)))
            return st;
        r->raw = all + info.data_offset;
        r->layout = info.layout;
        return NNP_OK;
    }
    npz_member *m = nnp__dump_alloc(d, sizeof *m);
    char *member_name = nnp__dump_strdup(d, e->name);
    if (!m || !member_name)
        return NNP_ERR_NOMEM;
    m->zip.path = path_copy;
    m->zip.base = z->base;
    m->zip.size = z->size;
    m->entry = *e;
    m->entry.name = member_name;
    m->skip = info.data_offset;
    r->load = load_deflated;
    r->load_ctx = m;
    return NNP_OK;
}

/* A Keras 3 archive (.keras): its config beside the weights in a file of their own. */
static bool keras_archive(const nnp_zip *z)
{
    bool config = false, weights = false;
    for (size_t i = 0; i < z->count; i++) {
        const char *n = z->entries[i].name;
        config = config || strcmp(n, "config.json") == 0;
        weights = weights || strcmp(n, "model.weights.h5") == 0 ||
                  strcmp(n, "model.weights.npz") == 0;
    }
    return config && weights;
}

nnp_status nnp__npz_load(nnp_dump *d, const char *path)
{
    nnp_map map;
    nnp_status st = nnp__dump_map(d, path, &map);
    if (st)
        return st;
    char *path_copy = nnp__dump_strdup(d, path);
    if (!path_copy)
        return NNP_ERR_NOMEM;
    nnp_zip z;
    if ((st = nnp__zip_open(path_copy, map.base, map.size, &z)))
        return st;
    /* A torch checkpoint is a zip too: its members tell it apart, and the file, already mapped,
     * goes to torch_pt.c. */
    if (keras_archive(&z)) {
        nnp__zip_close(&z);
        return nnp__keras_refuse(d, path);
    }
    if (nnp__torch_pickle_entry(&z)) {
        nnp__zip_close(&z);
        return nnp__torch_load_map(d, path, &map);
    }
    nnp__dump_set_format(d, "npz");
    for (size_t i = 0; i < z.count && !st; i++) {
        const nnp_zip_entry *e = &z.entries[i];
        size_t len = strlen(e->name);
        if (len && e->name[len - 1] == '/' && e->size == 0)
            continue; /* a directory entry, as `zip -r` writes */
        st = add_member(d, &z, e, path_copy);
    }
    nnp__zip_close(&z);
    return st;
}
