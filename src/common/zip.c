/*
 * zip.c - reads zip archives held in memory (see zip.h): the central directory, checked against
 * the archive's bounds and each member's local header, and members' data, stored or deflated
 * (zlib), with its size and CRC-32 checked (common/crc32.c).
 *
 * The central directory is the only index trusted: local headers are checked against it, and
 * sizes are never taken from local headers or data descriptors (which streaming writers such as
 * torch's leave empty in the local header).
 */
#define ZLIB_CONST
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "common/crc32.h"
#include "common/zip.h"

#define SIG_LOCAL 0x04034b50u
#define SIG_CENTRAL 0x02014b50u
#define SIG_EOCD 0x06054b50u
#define SIG_EOCD64 0x06064b50u
#define SIG_LOCATOR64 0x07064b50u

#define EOCD_SIZE 22
#define EOCD64_SIZE 56
#define LOCATOR64_SIZE 20
#define CENTRAL_SIZE 46
#define LOCAL_SIZE 30
#define MAX_COMMENT 65535

#define FLAG_ENCRYPTED 0x0001u
#define FLAG_STRONG_ENCRYPTION 0x0040u
#define FLAG_MASKED_DIRECTORY 0x2000u
#define METHOD_AES 99

/* Deflate cannot expand data by more than about 1032:1; the slack lets tiny members through. */
#define MAX_RATIO 1032u
#define RATIO_SLACK (UINT64_C(1) << 20)

/* zlib counts in uInt; feed it at most this much at a time. */
#define ZCHUNK (UINT32_C(1) << 30)

static nnp_status at_fail(nnp_status st, const char *path, uint64_t off, const char *fmt, ...)
    NNP_PRINTF(4, 5);
static nnp_status member_fail(nnp_status st, const char *path, const char *member,
                              const char *fmt, ...) NNP_PRINTF(4, 5);

static nnp_status at_fail(nnp_status st, const char *path, uint64_t off, const char *fmt, ...)
{
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return nnp__fail(st, "%s: byte %" PRIu64 ": %s", path, off, msg);
}

static nnp_status member_fail(nnp_status st, const char *path, const char *member,
                              const char *fmt, ...)
{
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return nnp__fail(st, "%s: member '%s': %s", path, member, msg);
}

/* ---- the central directory ---- */

typedef struct directory {
    uint64_t offset, size, count;
    uint64_t limit; /* where the records after the central directory start */
} directory;

static nnp_status find_directory(const nnp_zip *z, directory *dir)
{
    const unsigned char *b = z->base;
    if (z->size < EOCD_SIZE)
        return at_fail(NNP_ERR_FORMAT, z->path, 0, "%" PRIu64 " bytes is too short for a zip "
                       "archive's end of central directory record (zip)", z->size);
    uint64_t last = z->size - EOCD_SIZE;
    uint64_t low = last > MAX_COMMENT ? last - MAX_COMMENT : 0;
    uint64_t eocd = UINT64_MAX;
    /* The record is followed by exactly its comment: that tells it from a stray signature. */
    for (uint64_t off = last + 1; off-- > low;)
        if (nnp__le32(b + off) == SIG_EOCD && off + EOCD_SIZE + nnp__le16(b + off + 20) == z->size) {
            eocd = off;
            break;
        }
    if (eocd == UINT64_MAX)
        return at_fail(NNP_ERR_FORMAT, z->path, low, "no end of central directory record in the "
                       "last %" PRIu64 " bytes: not a zip archive, or a truncated one (zip)",
                       z->size - low);
    const unsigned char *e = b + eocd;
    uint64_t disk = nnp__le16(e + 4), dir_disk = nnp__le16(e + 6);
    uint64_t here = nnp__le16(e + 8);
    dir->count = nnp__le16(e + 10);
    dir->size = nnp__le32(e + 12);
    dir->offset = nnp__le32(e + 16);
    dir->limit = eocd;
    if (eocd >= LOCATOR64_SIZE && nnp__le32(e - LOCATOR64_SIZE) == SIG_LOCATOR64) {
        uint64_t loc = eocd - LOCATOR64_SIZE;
        const unsigned char *l = b + loc;
        uint64_t rec = nnp__le64(l + 8);
        if (nnp__le32(l + 4) != 0 || nnp__le32(l + 16) > 1)
            return at_fail(NNP_ERR_UNSUPPORTED, z->path, loc,
                           "split (multi-disk) zip archives are not supported");
        if (rec > loc || loc - rec < EOCD64_SIZE || nnp__le32(b + rec) != SIG_EOCD64)
            return at_fail(NNP_ERR_FORMAT, z->path, loc, "the zip64 locator points to byte %"
                           PRIu64 ", where no zip64 end of central directory record is (zip64)",
                           rec);
        const unsigned char *r = b + rec;
        uint64_t rest = nnp__le64(r + 4);
        if (rest < EOCD64_SIZE - 12 || rest > loc - rec - 12)
            return at_fail(NNP_ERR_FORMAT, z->path, rec + 4, "zip64 end of central directory "
                           "record size %" PRIu64 " does not fit before its locator (zip64)", rest);
        disk = nnp__le32(r + 16);
        dir_disk = nnp__le32(r + 20);
        here = nnp__le64(r + 24);
        dir->count = nnp__le64(r + 32);
        dir->size = nnp__le64(r + 40);
        dir->offset = nnp__le64(r + 48);
        dir->limit = rec;
    }
    if (disk != 0 || dir_disk != 0 || here != dir->count)
        return at_fail(NNP_ERR_UNSUPPORTED, z->path, eocd,
                       "split (multi-disk) zip archives are not supported");
    uint64_t end;
    if (!nnp__add_u64(dir->offset, dir->size, &end) || end > dir->limit)
        return at_fail(NNP_ERR_FORMAT, z->path, dir->limit, "the central directory (%" PRIu64
                       " bytes from byte %" PRIu64 ") does not end before its end record "
                       "(zip central directory)", dir->size, dir->offset);
    if (dir->count > dir->size / CENTRAL_SIZE)
        return at_fail(NNP_ERR_FORMAT, z->path, dir->offset, "%" PRIu64 " members cannot fit in "
                       "a central directory of %" PRIu64 " bytes (zip central directory)",
                       dir->count, dir->size);
    return NNP_OK;
}

/* Why a member name cannot be extracted safely anywhere, or NULL. */
static const char *unsafe_name(const unsigned char *s, size_t n)
{
    if (n == 0)
        return "is empty";
    if (memchr(s, 0, n))
        return "holds a NUL byte";
    if (s[0] == '/' || s[0] == '\\')
        return "is an absolute path";
    if (n >= 2 && s[1] == ':' && ((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z')))
        return "starts with a drive letter";
    size_t start = 0;
    for (size_t i = 0; i <= n; i++)
        if (i == n || s[i] == '/' || s[i] == '\\') {
            if (i - start == 2 && s[start] == '.' && s[start + 1] == '.')
                return "has a '..' component";
            start = i + 1;
        }
    return NULL;
}

/* Replace the sizes and offset saturated at 0xFFFFFFFF by their zip64 extra field values. */
static nnp_status read_zip64_extra(const nnp_zip *z, uint64_t off, const unsigned char *x,
                                   size_t n, const char *name, uint64_t *size, uint64_t *comp,
                                   uint64_t *local, uint64_t *disk)
{
    size_t p = 0;
    while (n - p >= 4) {
        size_t id = nnp__le16(x + p), len = nnp__le16(x + p + 2);
        if (len > n - p - 4)
            return at_fail(NNP_ERR_FORMAT, z->path, off + p, "member '%s': extra field runs past "
                           "its central directory entry (zip central directory)", name);
        if (id == 0x0001) {
            const unsigned char *q = x + p + 4;
            size_t left = len;
            uint64_t *vals[3] = {size, comp, local};
            for (int k = 0; k < 3; k++) {
                if (*vals[k] != UINT32_MAX)
                    continue;
                if (left < 8)
                    return at_fail(NNP_ERR_FORMAT, z->path, off + p, "member '%s': zip64 extra "
                                   "field is too short for its sizes and offset (zip64)", name);
                *vals[k] = nnp__le64(q);
                q += 8;
                left -= 8;
            }
            if (*disk == UINT16_MAX && left >= 4)
                *disk = nnp__le32(q);
        }
        p += 4 + len;
    }
    return NNP_OK;
}

static const char *method_name(unsigned m)
{
    switch (m) {
    case 1: return "shrink";
    case 6: return "implode";
    case 9: return "deflate64";
    case 12: return "bzip2";
    case 14: return "LZMA";
    case 93: return "zstd";
    case 95: return "xz";
    case 98: return "PPMd";
    }
    return "unknown";
}

/* Check that the local header agrees with the central one and find where the data starts. */
static nnp_status check_local(const nnp_zip *z, uint64_t dir_offset, nnp_zip_entry *e,
                              size_t name_len)
{
    uint64_t lh = e->header_offset;
    if (lh > dir_offset || dir_offset - lh < LOCAL_SIZE)
        return member_fail(NNP_ERR_FORMAT, z->path, e->name, "local header offset %" PRIu64
                           " is not before the central directory at byte %" PRIu64
                           " (zip local header)", lh, dir_offset);
    const unsigned char *l = z->base + lh;
    if (nnp__le32(l) != SIG_LOCAL)
        return member_fail(NNP_ERR_FORMAT, z->path, e->name, "byte %" PRIu64 ": no local header "
                           "there (zip local header)", lh);
    unsigned flags = nnp__le16(l + 6), method = nnp__le16(l + 8);
    uint64_t data = lh + LOCAL_SIZE + nnp__le16(l + 26) + nnp__le16(l + 28), end;
    if (method != e->method)
        return member_fail(NNP_ERR_FORMAT, z->path, e->name, "byte %" PRIu64 ": local header says "
                           "compression method %u, the central directory %u (zip local header)",
                           lh + 8, method, e->method);
    if (flags & (FLAG_ENCRYPTED | FLAG_STRONG_ENCRYPTION))
        return member_fail(NNP_ERR_UNSUPPORTED, z->path, e->name,
                           "is encrypted; encrypted members are not read");
    if (data > dir_offset)
        return member_fail(NNP_ERR_FORMAT, z->path, e->name, "byte %" PRIu64 ": local header runs "
                           "into the central directory (zip local header)", lh);
    if (nnp__le16(l + 26) != name_len || memcmp(l + LOCAL_SIZE, e->name, name_len) != 0)
        return member_fail(NNP_ERR_FORMAT, z->path, e->name, "byte %" PRIu64 ": local header "
                           "names another member (zip local header)", lh + LOCAL_SIZE);
    if (!nnp__add_u64(data, e->comp_size, &end) || end > dir_offset)
        return member_fail(NNP_ERR_FORMAT, z->path, e->name, "its %" PRIu64 " bytes of data from "
                           "byte %" PRIu64 " run past the central directory at byte %" PRIu64
                           " (zip)", e->comp_size, data, dir_offset);
    e->data_offset = data;
    return NNP_OK;
}

static nnp_status check_sizes(const nnp_zip *z, const nnp_zip_entry *e)
{
    if (e->method == NNP_ZIP_STORED && e->comp_size != e->size)
        return member_fail(NNP_ERR_FORMAT, z->path, e->name, "stored, yet its compressed size %"
                           PRIu64 " differs from its size %" PRIu64 " (zip)", e->comp_size,
                           e->size);
    uint64_t most;
    if (e->method == NNP_ZIP_DEFLATED && nnp__mul_u64(e->comp_size, MAX_RATIO, &most) &&
        nnp__add_u64(most, RATIO_SLACK, &most) && e->size > most)
        return member_fail(NNP_ERR_FORMAT, z->path, e->name, "declares %" PRIu64 " bytes inflated "
                           "from %" PRIu64 " deflated, more than deflate can produce (at most "
                           "%u:1); refusing a zip bomb (zip)", e->size, e->comp_size, MAX_RATIO);
    return NNP_OK;
}

static int by_offset(const void *pa, const void *pb)
{
    const nnp_zip_entry *a = *(const nnp_zip_entry *const *)pa;
    const nnp_zip_entry *b = *(const nnp_zip_entry *const *)pb;
    return a->header_offset < b->header_offset ? -1 : a->header_offset > b->header_offset;
}

static int by_name(const void *pa, const void *pb)
{
    const nnp_zip_entry *a = *(const nnp_zip_entry *const *)pa;
    const nnp_zip_entry *b = *(const nnp_zip_entry *const *)pb;
    return strcmp(a->name, b->name);
}

static int name_key(const void *key, const void *pb)
{
    return strcmp(key, (*(const nnp_zip_entry *const *)pb)->name);
}

/* Members sharing bytes would let a small archive inflate to far more than its size. */
static nnp_status check_layout(nnp_zip *z)
{
    size_t n = z->count;
    const nnp_zip_entry **order = malloc((n ? n : 1) * sizeof *order);
    if (!order)
        return nnp__nomem();
    for (size_t i = 0; i < n; i++)
        order[i] = &z->entries[i];
    qsort(order, n, sizeof *order, by_offset);
    for (size_t i = 1; i < n; i++)
        if (order[i - 1]->data_offset + order[i - 1]->comp_size > order[i]->header_offset) {
            nnp_status st = member_fail(NNP_ERR_FORMAT, z->path, order[i]->name,
                                        "byte %" PRIu64 ": overlaps member '%s' (zip)",
                                        order[i]->header_offset, order[i - 1]->name);
            free(order);
            return st;
        }
    for (size_t i = 0; i < n; i++)
        order[i] = &z->entries[i];
    qsort(order, n, sizeof *order, by_name);
    for (size_t i = 1; i < n; i++)
        if (strcmp(order[i - 1]->name, order[i]->name) == 0) {
            nnp_status st = member_fail(NNP_ERR_FORMAT, z->path, order[i]->name,
                                        "appears twice in the central directory (zip)");
            free(order);
            return st;
        }
    z->by_name = order;
    return NNP_OK;
}

static nnp_status read_directory(nnp_zip *z)
{
    directory dir = {0, 0, 0, 0};
    nnp_status st = find_directory(z, &dir);
    if (st)
        return st;
    /* count <= size / 46 and size <= the archive's size, so these cannot overflow */
    size_t count = (size_t)dir.count;
    z->entries = calloc(count ? count : 1, sizeof *z->entries);
    z->names = malloc((size_t)dir.size + 1);
    if (!z->entries || !z->names)
        return nnp__nomem();
    char *names = z->names;
    uint64_t off = dir.offset, end = dir.offset + dir.size;
    for (size_t i = 0; i < count; i++) {
        if (end - off < CENTRAL_SIZE)
            return at_fail(NNP_ERR_FORMAT, z->path, off, "the central directory ends inside "
                           "entry %zu of %zu (zip central directory)", i + 1, count);
        const unsigned char *c = z->base + off;
        if (nnp__le32(c) != SIG_CENTRAL)
            return at_fail(NNP_ERR_FORMAT, z->path, off, "entry %zu of the central directory "
                           "does not start with PK\\1\\2 (zip central directory)", i + 1);
        size_t name_len = nnp__le16(c + 28), extra_len = nnp__le16(c + 30);
        uint64_t var = (uint64_t)name_len + extra_len + nnp__le16(c + 32);
        if (end - off - CENTRAL_SIZE < var)
            return at_fail(NNP_ERR_FORMAT, z->path, off, "entry %zu runs past the end of the "
                           "central directory (zip central directory)", i + 1);
        const unsigned char *name = c + CENTRAL_SIZE;
        size_t bad;
        const char *why = unsafe_name(name, name_len);
        if (!why && !nnp__utf8_valid(name, name_len, &bad))
            return at_fail(NNP_ERR_UNSUPPORTED, z->path, off + CENTRAL_SIZE + bad,
                           "member name is not UTF-8 (zip member name)");
        memcpy(names, name, name_len);
        names[name_len] = 0;
        nnp_zip_entry *e = &z->entries[i];
        e->name = names;
        names += name_len + 1;
        if (why)
            return member_fail(NNP_ERR_FORMAT, z->path, e->name, "byte %" PRIu64 ": the name %s; "
                               "members must be relative paths inside the archive "
                               "(zip member name)", off + CENTRAL_SIZE, why);
        e->flags = nnp__le16(c + 8);
        e->method = nnp__le16(c + 10);
        e->crc32 = nnp__le32(c + 16);
        e->comp_size = nnp__le32(c + 20);
        e->size = nnp__le32(c + 24);
        e->header_offset = nnp__le32(c + 42);
        uint64_t disk = nnp__le16(c + 34);
        if ((st = read_zip64_extra(z, off + CENTRAL_SIZE + name_len, name + name_len, extra_len,
                                   e->name, &e->size, &e->comp_size, &e->header_offset, &disk)))
            return st;
        if ((e->flags & (FLAG_ENCRYPTED | FLAG_STRONG_ENCRYPTION | FLAG_MASKED_DIRECTORY)) ||
            e->method == METHOD_AES)
            return member_fail(NNP_ERR_UNSUPPORTED, z->path, e->name,
                               "is encrypted; encrypted members are not read");
        if (e->method != NNP_ZIP_STORED && e->method != NNP_ZIP_DEFLATED)
            return member_fail(NNP_ERR_UNSUPPORTED, z->path, e->name, "compression method %u (%s) "
                               "is not supported; only stored and deflated members are read",
                               e->method, method_name(e->method));
        if (disk != 0)
            return member_fail(NNP_ERR_UNSUPPORTED, z->path, e->name,
                               "is on another disk; split zip archives are not supported");
        if ((st = check_sizes(z, e)) || (st = check_local(z, dir.offset, e, name_len)))
            return st;
        z->count = i + 1;
        off += CENTRAL_SIZE + var;
    }
    if (off != end)
        return at_fail(NNP_ERR_FORMAT, z->path, off, "%" PRIu64 " bytes of the central directory "
                       "follow its %zu declared entries (zip central directory)", end - off, count);
    return check_layout(z);
}

nnp_status nnp__zip_open(const char *path, const unsigned char *base, uint64_t size, nnp_zip *z)
{
    memset(z, 0, sizeof *z);
    z->path = path;
    z->base = base;
    z->size = size;
    nnp_status st = read_directory(z);
    if (st)
        nnp__zip_close(z);
    return st;
}

void nnp__zip_close(nnp_zip *z)
{
    free(z->entries);
    free(z->names);
    free(z->by_name);
    z->entries = NULL;
    z->names = NULL;
    z->by_name = NULL;
    z->count = 0;
}

const nnp_zip_entry *nnp__zip_find(const nnp_zip *z, const char *name)
{
    if (!z->count)
        return NULL;
    const nnp_zip_entry *const *hit = bsearch(name, z->by_name, z->count, sizeof *z->by_name,
                                              name_key);
    return hit ? *hit : NULL;
}

const unsigned char *nnp__zip_stored_data(const nnp_zip *z, const nnp_zip_entry *e)
{
    return e->method == NNP_ZIP_STORED ? z->base + e->data_offset : NULL;
}

/* ---- member data ---- */

nnp_status nnp__zip_check_crc(const char *path, const char *member, uint32_t crc, uint32_t want)
{
    if (crc != want)
        return member_fail(NNP_ERR_FORMAT, path, member, "CRC-32 mismatch: its data has 0x%08"
                           PRIx32 ", the central directory says 0x%08" PRIx32 " (zip CRC-32)",
                           crc, want);
    return NNP_OK;
}

static nnp_status check_crc(const nnp_zip *z, const nnp_zip_entry *e, uint32_t crc)
{
    return nnp__zip_check_crc(z->path, e->name, crc, e->crc32);
}

static nnp_status stored_read(const nnp_zip *z, const nnp_zip_entry *e, uint64_t skip,
                              unsigned char *dst, uint64_t n, bool whole)
{
    const unsigned char *src = z->base + e->data_offset;
    if (n)
        memcpy(dst, src + skip, (size_t)n);
    if (!whole)
        return NNP_OK;
    if (e->size > SIZE_MAX)
        return nnp__nomem();
    return check_crc(z, e, nnp__crc32(0, src, (size_t)e->size));
}

/* Inflate a member, keeping bytes [skip, skip + n) in dst. With `whole` it runs to the end of the
 * stream and checks size and CRC; otherwise it stops after skip + n bytes. Output outside the
 * kept window goes through a small scratch buffer, so memory stays bounded by n. */
static nnp_status inflate_member(const nnp_zip *z, const nnp_zip_entry *e, uint64_t skip,
                                 unsigned char *dst, uint64_t n, bool whole)
{
    unsigned char scratch[16384];
    z_stream s;
    memset(&s, 0, sizeof s);
    int zr = inflateInit2(&s, -MAX_WBITS);
    if (zr == Z_MEM_ERROR)
        return nnp__nomem();
    if (zr != Z_OK)
        return nnp__fail(NNP_ERR_INTERNAL, "%s: member '%s': zlib's inflateInit2 failed (%d)",
                         z->path, e->name, zr);
    const unsigned char *in = z->base + e->data_offset;
    uint64_t in_left = e->comp_size, pos = 0, stop = skip + n;
    uint32_t crc = 0;
    nnp_status st = NNP_OK;
    while (whole || pos < stop) {
        unsigned char *out;
        uint64_t room;
        if (pos < skip) {
            out = scratch;
            room = skip - pos < sizeof scratch ? skip - pos : sizeof scratch;
        } else if (pos < stop) {
            out = dst + (pos - skip);
            room = stop - pos < ZCHUNK ? stop - pos : ZCHUNK;
        } else {
            out = scratch;
            room = sizeof scratch;
        }
        if (s.avail_in == 0 && in_left) {
            uint64_t step = in_left < ZCHUNK ? in_left : ZCHUNK;
            s.next_in = in;
            s.avail_in = (uInt)step;
            in += step;
            in_left -= step;
        }
        s.next_out = out;
        s.avail_out = (uInt)room;
        zr = inflate(&s, Z_NO_FLUSH);
        uint64_t got = room - s.avail_out;
        if (whole)
            crc = nnp__crc32(crc, out, (size_t)got);
        pos += got;
        if (whole && pos > e->size) {
            st = member_fail(NNP_ERR_FORMAT, z->path, e->name, "inflates to more than the %"
                             PRIu64 " bytes the central directory declares (zip)", e->size);
            break;
        }
        if (zr == Z_STREAM_END)
            break;
        if (zr == Z_OK || (zr == Z_BUF_ERROR && (s.avail_in || in_left)))
            continue;
        if (zr == Z_BUF_ERROR)
            st = member_fail(NNP_ERR_FORMAT, z->path, e->name, "its %" PRIu64 " bytes of deflated "
                             "data end before the deflate stream does (zip)", e->comp_size);
        else if (zr == Z_DATA_ERROR)
            st = member_fail(NNP_ERR_FORMAT, z->path, e->name, "deflated data is corrupt near its "
                             "byte %" PRIu64 ": %s (zip)", e->comp_size - in_left - s.avail_in,
                             s.msg ? s.msg : "invalid data");
        else if (zr == Z_NEED_DICT)
            st = member_fail(NNP_ERR_FORMAT, z->path, e->name,
                             "deflated data asks for a preset dictionary (zip)");
        else if (zr == Z_MEM_ERROR)
            st = nnp__nomem();
        else
            st = nnp__fail(NNP_ERR_INTERNAL, "%s: member '%s': zlib's inflate failed (%d)",
                           z->path, e->name, zr);
        break;
    }
    uint64_t unused = in_left + s.avail_in;
    inflateEnd(&s);
    if (st)
        return st;
    if (pos < stop)
        return member_fail(NNP_ERR_FORMAT, z->path, e->name, "inflates to only %" PRIu64
                           " bytes, but the central directory declares %" PRIu64 " (zip)",
                           pos, e->size);
    if (!whole)
        return NNP_OK;
    if (pos != e->size)
        return member_fail(NNP_ERR_FORMAT, z->path, e->name, "inflates to %" PRIu64 " bytes, but "
                           "the central directory declares %" PRIu64 " (zip)", pos, e->size);
    if (unused)
        return member_fail(NNP_ERR_FORMAT, z->path, e->name, "%" PRIu64 " bytes of its deflated "
                           "data follow the end of the deflate stream (zip)", unused);
    return check_crc(z, e, crc);
}

nnp_status nnp__zip_peek(const nnp_zip *z, const nnp_zip_entry *e, void *dst, uint64_t n)
{
    if (n > e->size)
        return nnp__fail(NNP_ERR_INTERNAL, "%s: member '%s': asked for %" PRIu64 " of its %"
                         PRIu64 " bytes", z->path, e->name, n, e->size);
    if (n == 0)
        return NNP_OK;
    if (e->method == NNP_ZIP_STORED)
        return stored_read(z, e, 0, dst, n, false);
    return inflate_member(z, e, 0, dst, n, false);
}

nnp_status nnp__zip_extract(const nnp_zip *z, const nnp_zip_entry *e, uint64_t skip, void *dst,
                            uint64_t n)
{
    uint64_t end;
    if (!nnp__add_u64(skip, n, &end) || end > e->size)
        return nnp__fail(NNP_ERR_INTERNAL, "%s: member '%s': asked for bytes %" PRIu64 "+%" PRIu64
                         " of its %" PRIu64, z->path, e->name, skip, n, e->size);
    if (e->method == NNP_ZIP_STORED)
        return stored_read(z, e, skip, dst, n, true);
    return inflate_member(z, e, skip, dst, n, true);
}

nnp_status nnp__zip_extract_alloc(const nnp_zip *z, const nnp_zip_entry *e, unsigned char **out)
{
    *out = NULL;
    if (e->size >= SIZE_MAX)
        return nnp__nomem();
    unsigned char *buf = malloc(e->size ? (size_t)e->size : 1);
    if (!buf)
        return nnp__nomem();
    nnp_status st = nnp__zip_extract(z, e, 0, buf, e->size);
    if (st) {
        free(buf);
        return st;
    }
    *out = buf;
    return NNP_OK;
}
