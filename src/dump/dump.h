/*
 * dump.h - the record store: the builder interface through which each format reader adds
 * records to a dump, nnparity's metadata conventions, and the table of formats that opening a
 * file consults.
 */
#ifndef NNP_DUMP_H
#define NNP_DUMP_H

#include "common/common.h"

/* ---- dump builder (dump.c) ---- */

/* How a record's stored bytes differ from little-endian C order. */
enum {
    NNP_LAYOUT_BYTESWAP = 1u << 0, /* elements are big-endian */
    NNP_LAYOUT_FORTRAN = 1u << 1   /* column-major order */
};

/* Produces a record's little-endian C-ordered bytes into dst (rec->pub.nbytes long); used for data
 * that is not in the mapped file as-is (compressed archive members). `ctx` is the loader's own. */
typedef nnp_status (*nnp_loader_fn)(void *ctx, void *dst, uint64_t nbytes);
/* Produces elements [first, first + n) of those (n * dtype size bytes into dst), for a loader
 * that can start anywhere: a pass then needs only the piece it is at, not a copy of the whole
 * record (a view's copy may be far larger than its file). */
typedef void (*nnp_range_fn)(void *ctx, uint64_t first, uint64_t n, void *dst);

typedef struct nnp_rec {
    nnp_record pub;
    const unsigned char *raw; /* stored bytes in a mapping (NULL when `load` provides them) */
    unsigned layout;          /* NNP_LAYOUT_* flags describing `raw` */
    nnp_loader_fn load;
    nnp_range_fn load_range;  /* the same elements a range at a time, where `load` can */
    void *load_ctx;
    void *owned;              /* converted copy, made on the first nnp_dump_data() */
    uint64_t view_stored;     /* a view gathered by `load` (torch): the bytes of the storage it
                               * reads; nonzero puts its conversion under the dump's view cap */
    struct nnp_member_check *check; /* the stored zip member `raw` (or what `load` reads) lies
                                     * in, whose CRC-32 is checked before first use; or NULL */
    uint64_t check_off;       /* where `raw` starts in that member */
    uint64_t stored;          /* bytes its data takes in the file, where a reader set
                               * stored_set: a view that repeats elements, compressed or
                               * quantized data; otherwise nbytes */
    bool stored_set;
    uint64_t file_index;      /* which file of the dump it came from, in opening order */
    uint64_t file_order;      /* order within that file (data offset order for safetensors) */
    uint64_t meta_seq;        /* execution order given by nnparity metadata */
    bool has_meta_seq;
    uint64_t sort_key[3];     /* set when the dump is complete */
    uint32_t sketch_store;    /* 1 + which stored sketches hold its fingerprint; 0: none */
    uint64_t sketch_at;       /* ... and which entry of them */
    const char *same_as;      /* a record stored once under an earlier record's name (a capture
                               * given one tensor twice): that record's name; NULL otherwise */
} nnp_rec;

/* What the gathered views of one dump may hold in total: NNP_VIEW_CAP_FACTOR times the size of
 * the files it mapped, and at least NNP_VIEW_CAP_MIN bytes (nnp_dump_data enforces it). */
#define NNP_VIEW_CAP_FACTOR 16u
#define NNP_VIEW_CAP_MIN (64ull << 20)

/* ---- stored zip members (dump.c) ----
 * A record read in place from a stored zip member (npz, a PyTorch storage) is checked against
 * the member's CRC-32 before its bytes are first used: by nnp_dump_data, or, for a pass that
 * reads a record whole (comparing, stats), folded into that pass (nnp__dump_pass_begin). A
 * member is checked once, whichever of its records is read first. */

typedef struct nnp_member_check nnp_member_check;

/* A check of member `member` of `file` (both copied): its bytes data[0..size) in a mapping of
 * the dump, and the CRC-32 `crc` its central directory declares. NULL on out-of-memory (with
 * the error set). Records then point at it (check, check_off). */
nnp_member_check *nnp__dump_member_check(nnp_dump *d, const char *file, const char *member,
                                         const unsigned char *data, uint64_t size, uint32_t crc);

/* nnp_dump_data for a pass that reads every byte of record i itself: a record read in place is
 * handed out without its member's check, which nnp__dump_pass_begin then settles. */
nnp_status nnp__dump_data_for_pass(nnp_dump *d, size_t i, const void **data);

/* Before a pass reads record i whole (fold NULL: before anything reads part of it, which checks
 * the member now if it needs it). *fold is set when the pass is to compute the CRC-32 of
 * the record's nbytes (in pieces, combined in order: nnp__crc32, nnp__crc32_combine) and give
 * it to nnp__dump_pass_end, which checks the member with it: the member is mostly this
 * record's bytes, which the pass reads anyway. Otherwise there is nothing to fold: the record
 * has no member to check, or its member was checked before or here (a mismatch is returned). */
nnp_status nnp__dump_pass_begin(nnp_dump *d, size_t i, bool *fold);
nnp_status nnp__dump_pass_end(nnp_dump *d, size_t i, uint32_t crc);

/* Before a pass reads record i a range at a time with nnp__dump_read_range instead of through
 * nnp_dump_data: *ranged is set when the record is made by a loader that can do that (a
 * gathered view) and has no copy yet; its member is checked here first. Otherwise the pass
 * takes nnp_dump_data's bytes as usual. */
nnp_status nnp__dump_begin_ranged(nnp_dump *d, size_t i, bool *ranged);
/* Elements [first, first + n) of such a record into dst; nothing of it is kept. */
void nnp__dump_read_range(nnp_dump *d, size_t i, uint64_t first, uint64_t n, void *dst);

/* Map `path` and keep the mapping until the dump closes (it is owned by the dump). */
nnp_status nnp__dump_map(nnp_dump *d, const char *path, nnp_map *out);

/* Copy a string / allocate zeroed bytes that live until the dump closes; NULL on out-of-memory
 * (with the error set). */
char *nnp__dump_strdup(nnp_dump *d, const char *s);
char *nnp__dump_strndup(nnp_dump *d, const char *s, size_t n);
void *nnp__dump_alloc(nnp_dump *d, size_t n);

/* Run fn(p) when the dump closes (loader contexts, inflated buffers). On failure fn(p) runs now. */
nnp_status nnp__dump_defer(nnp_dump *d, void (*fn)(void *), void *p);

/* Add a record named `name` stored in `file` (copied). nelem/nbytes are computed with overflow
 * checks: an overflow is a format error naming the file and tensor. A name that is already in the
 * dump is a format error naming both files. The caller then sets raw/layout or load/load_ctx;
 * *out stays valid until the next nnp__dump_add. */
nnp_status nnp__dump_add(nnp_dump *d, const char *file, const char *name, nnp_dtype dtype,
                         uint32_t ndim, const uint64_t *shape, nnp_rec **out);
/* Room for `more` records beyond those in (and in the name index), when a reader knows how many
 * it will add: a header of 100k entries then grows nothing 17 times over. */
nnp_status nnp__dump_reserve(nnp_dump *d, size_t more);

/* Add a metadata pair (both copied). A key already present keeps its first value (shards: the
 * first shard's); nnp__dump_set_meta replaces it instead (a journal's later value wins). */
nnp_status nnp__dump_add_meta(nnp_dump *d, const char *key, const char *value);
nnp_status nnp__dump_set_meta(nnp_dump *d, const char *key, const char *value);

/* The format name nnp_dump_format reports (a constant string). */
void nnp__dump_set_format(nnp_dump *d, const char *format);
/* Header length of the dump's first safetensors file (0 for other formats): a partial dump's room. */
uint64_t nnp__dump_header_room(const nnp_dump *d);
void nnp__dump_set_header_room(nnp_dump *d, uint64_t room);

/* The index of the file being loaded: readers that open several files call this before each. */
uint64_t nnp__dump_next_file(nnp_dump *d);

/* While a rank capture is read: the records added from now on were recorded by `rank` of
 * `world` (rank -1: not a rank capture). Their names get "@rank<R>" appended, here and in
 * nnp__dump_annotate, so that equal names of different ranks stay apart until
 * formats/ranks.c settles them. */
void nnp__dump_set_rank(nnp_dump *d, int32_t rank, uint32_t world);
/* The records added so far, in adding order (valid until the next nnp__dump_add). A reader may
 * rename them (arena strings) and set their meta_seq: the dump is indexed and ordered after. */
nnp_rec *nnp__dump_recs(nnp_dump *d, size_t *n);

/* Add record `name` of `file` as the same tensor as record `source` of that file, added before
 * ("same_as" in nnparity metadata): its data, dtype, shape and fingerprint are the source's, and
 * it takes no bytes of its own. A source the file does not hold is a format error naming both. */
nnp_status nnp__dump_add_same(nnp_dump *d, const char *file, const char *name, const char *source,
                              nnp_rec **out);
/* Record `name`'s provenance from nnparity metadata (module, role, type copied; position `seq` in
 * execution order). Unknown names are a format error naming `file`. */
nnp_status nnp__dump_annotate(nnp_dump *d, const char *file, const char *name, const char *module,
                              const char *role, const char *module_type, uint64_t call,
                              uint64_t seq);

/* Drop this process's mapping of bytes [off, off+len) of record i (whole pages only; the page
 * cache keeps them), and ask the kernel to map [off, off+len) ahead of use. */
void nnp__dump_release_range(nnp_dump *d, size_t i, uint64_t off, uint64_t len);
void nnp__dump_prefetch_range(nnp_dump *d, size_t i, uint64_t off, uint64_t len);

/* nnparity's own facts in a safetensors __metadata__ (docs/dump-format.md) */
#define NNP_META_FORMAT_KEY "nnparity.format"
#define NNP_META_FORMAT_VALUE "dump/1"
/* ... and of a dump that stores some tensor once for several records ("same_as" entries), which
 * a reader of dump/1 alone would refuse */
#define NNP_META_FORMAT_VALUE_SAME "dump/2"
#define NNP_META_RECORDS_KEY "nnparity.records"
/* In a capture made under injection: what injection did, {"injected": N, "not_injected": M,
 * "reasons": [...]} (capture/capture.c). */
#define NNP_META_INJECTION_KEY "nnparity.injection"
/* In a partial dump's placeholder header: the journal file (beside it) that lists its records. */
#define NNP_META_PARTIAL_KEY "nnparity.partial"

/* A record's name by nnparity's convention: "<module>/<role>", with "#<call>" for calls after the
 * first (dump/provenance.c). NULL strings read as "". Appended to b. */
void nnp__record_name(nnp_sbuf *b, const char *module, const char *role, uint64_t call);
/* ---- fingerprints (sketch.c, sketch_codec.c, docs/sketch.md) ---- */

/* The sketches of records idx[0..n) (each < the record count) of d into out[0..n): the stored
 * ones decoded on first use and kept, the others computed from the data, a task per record on up
 * to `threads` threads (<= 0: one per CPU). A stored value that does not fit is a format error
 * naming the file and the key. */
nnp_status nnp__dump_sketches(nnp_dump *d, const size_t *idx, size_t n, int threads,
                              nnp_sketch *out);

/* The metadata key under which a capture stores its records' sketches, and an entry's size. */
#define NNP_META_SKETCHES_KEY "nnparity.sketches"
#define NNP_SKETCH_ENTRY_BYTES 192
/* The stored value is this version, then the entries' text one after the other, in data offset
 * order: each entry's base64, without padding. */
#define NNP_SKETCH_VALUE_PREFIX "sketch/1:"
#define NNP_SKETCH_ENTRY_CHARS (NNP_SKETCH_ENTRY_BYTES / 3 * 4)

/* One file's stored sketches: its NNP_META_SKETCHES_KEY value (owned by the dump) for its
 * `count` records in data offset order, decoded into `decoded` on first use. */
typedef struct nnp_sketch_store {
    const char *file;
    char *value;
    size_t len, count;
    nnp_sketch *decoded;
} nnp_sketch_store;

/* Take `value` (malloc'ed; freed when the dump closes, or now on failure) as the stored sketches
 * of the `count` records that `file` added from record `first` on (adding order). */
nnp_status nnp__dump_add_sketch_store(nnp_dump *d, const char *file, char *value, size_t first,
                                      size_t count);
/* Stored sketches number `id` (a record's sketch_store - 1). */
nnp_sketch_store *nnp__dump_sketch_store(nnp_dump *d, uint32_t id);

/* The entry of sketch s (NNP_SKETCH_ENTRY_BYTES bytes). */
void nnp__sketch_pack(const nnp_sketch *s, unsigned char *entry);
/* An entry's text (NNP_SKETCH_ENTRY_CHARS characters, no terminator): a writer encodes each
 * record's as it sketches it, and writes them as they are when it closes. */
void nnp__sketch_entry_text(const unsigned char *entry, char *text);
/* Whether `value` (len bytes) is a value this reader knows with entries for n records: a format
 * error naming `file` and the key otherwise. */
nnp_status nnp__sketch_value_check(const char *file, const char *value, size_t len, size_t n);
/* Entry i of a checked value, itself checked (finite norms, an alphabet of base64). */
nnp_status nnp__sketch_unpack(const char *file, const char *value, size_t i, nnp_sketch *out);

/* ---- opening (open.c) ---- */

/* One format nnp_dump_open knows. `probe` looks at the file's first bytes (head[0..n), n up to
 * NNP_PROBE_BYTES; is_dir for a directory, with n 0) and says whether `load` reads it; the
 * table is tried in order and the first yes wins. `format` is what nnp_dump_format reports
 * (NULL: the reader sets it, as the zip reader does once it knows npz from torch). */
#define NNP_PROBE_BYTES 32
typedef struct nnp_format_entry {
    const char *format;
    bool (*probe)(const char *path, const unsigned char *head, size_t n, bool is_dir);
    nnp_status (*load)(nnp_dump *d, const char *path);
} nnp_format_entry;

/* The formats, in probing order, ending with an entry whose probe is NULL: defined by the
 * formats layer (formats/registry.c), the one place a new reader is listed. */
extern const nnp_format_entry nnp__formats[];

/* A new, empty dump for `path`, and its end: order and index the records read, or close it on
 * failure (st non-zero). For readers that open a dump their own way (a partial capture). */
nnp_status nnp__dump_new(const char *path, nnp_dump **out);
nnp_status nnp__dump_finish(nnp_dump *d, nnp_status st, nnp_dump **out);

#endif /* NNP_DUMP_H */
