/*
 * zip.h - a read-only zip archive reader over bytes already in memory (a mapping), shared by the
 * archive-based formats: npz (members are .npy files) and torch's zip checkpoints (data.pkl and
 * data/N members).
 *
 * nnp__zip_open reads the central directory and checks every member up front: offsets and sizes
 * inside the archive, the local header agreeing with the central one, members not overlapping,
 * names unique, relative and free of ".." components, only stored or deflated data, nothing
 * encrypted, and declared sizes that deflate could produce. Member data is neither read nor
 * checked by nnp__zip_open; nnp__zip_extract reads a member whole and checks its size and CRC-32.
 */
#ifndef NNP_FORMATS_ZIP_H
#define NNP_FORMATS_ZIP_H

#include "common/common.h"

enum { NNP_ZIP_STORED = 0, NNP_ZIP_DEFLATED = 8 };

typedef struct nnp_zip_entry {
    const char *name;       /* NUL-terminated, valid UTF-8 */
    uint16_t flags;         /* general purpose bit flags of the central directory */
    uint16_t method;        /* NNP_ZIP_STORED or NNP_ZIP_DEFLATED */
    uint32_t crc32;         /* of the uncompressed bytes, from the central directory */
    uint64_t comp_size;     /* bytes of (compressed) data in the archive */
    uint64_t size;          /* uncompressed size */
    uint64_t header_offset; /* of the local header */
    uint64_t data_offset;   /* of the first byte of data; data_offset + comp_size <= archive size */
} nnp_zip_entry;

typedef struct nnp_zip {
    const char *path;            /* names the archive in messages; not copied */
    const unsigned char *base;   /* the archive's bytes; not owned */
    uint64_t size;
    nnp_zip_entry *entries;      /* in central directory order */
    size_t count;
    const nnp_zip_entry **by_name; /* the entries sorted by name, for nnp__zip_find */
    char *names;                 /* storage for the entries' names */
} nnp_zip;

/* Read the central directory of the archive base[0..size). On failure *z is empty (closing it
 * is allowed) and the message names `path` and the byte offset or member. */
nnp_status nnp__zip_open(const char *path, const unsigned char *base, uint64_t size, nnp_zip *z);

/* Free what nnp__zip_open allocated (not the bytes). */
void nnp__zip_close(nnp_zip *z);

/* The member with this exact name, or NULL. O(log n). */
const nnp_zip_entry *nnp__zip_find(const nnp_zip *z, const char *name);

/* A stored member's bytes in place (comp_size == size of them); NULL for a deflated one. */
const unsigned char *nnp__zip_stored_data(const nnp_zip *z, const nnp_zip_entry *e);

/* The first n bytes of a member (n <= e->size), inflating no more than needed. The CRC cannot be
 * checked on part of a member; read it whole with nnp__zip_extract for that. */
nnp_status nnp__zip_peek(const nnp_zip *z, const nnp_zip_entry *e, void *dst, uint64_t n);

/* Read a member whole, check that it has exactly e->size bytes and their CRC-32, and copy bytes
 * [skip, skip + n) of it to dst (skip + n <= e->size; n may be 0 to only check). Only z->path and
 * z->base are used, so a loader may keep a copy of *z without its entries, and of *e. */
nnp_status nnp__zip_extract(const nnp_zip *z, const nnp_zip_entry *e, uint64_t skip, void *dst,
                            uint64_t n);

/* A whole member in memory from malloc (free it), checked as by nnp__zip_extract. At least one
 * byte is allocated, so an empty member gives a valid pointer. */
nnp_status nnp__zip_extract_alloc(const nnp_zip *z, const nnp_zip_entry *e, unsigned char **out);

/* NNP_OK when `crc`, computed over member `member` of the archive `path`, is the CRC-32 `want`
 * its central directory declares; otherwise the one-line "CRC-32 mismatch" error naming both.
 * For readers that check a stored member's bytes themselves, as they are first read. */
nnp_status nnp__zip_check_crc(const char *path, const char *member, uint32_t crc, uint32_t want);

#endif /* NNP_FORMATS_ZIP_H */
