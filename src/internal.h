/*
 * internal.h - what the library's own files share and the public header does not show:
 * error reporting, checked arithmetic, file mapping, and the builder interface through which each
 * format reader (src/formats/) adds records to a dump.
 */
#ifndef NNP_INTERNAL_H
#define NNP_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "nnparity.h"

#if defined(__GNUC__)
#define NNP_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define NNP_PRINTF(a, b)
#endif

/* ---- errors (util.c) ---- */

/* Keep a message for nnp_last_error() and return `status`, so readers can write
 * `return nnp__fail(NNP_ERR_FORMAT, "%s: byte %llu: ... (Rule)", path, off);` */
nnp_status nnp__fail(nnp_status status, const char *fmt, ...) NNP_PRINTF(2, 3);
/* The out-of-memory failure, with a fixed message that needs no allocation. */
nnp_status nnp__nomem(void);

/* ---- checked arithmetic (util.c) ---- */

/* *out = a * b, or false on overflow. */
static inline bool nnp__mul_u64(uint64_t a, uint64_t b, uint64_t *out)
{
    return !__builtin_mul_overflow(a, b, out);
}
static inline bool nnp__add_u64(uint64_t a, uint64_t b, uint64_t *out)
{
    return !__builtin_add_overflow(a, b, out);
}

/* Make room for `need` elements of `elem` bytes in *arr (capacity *cap, doubled as needed);
 * false when memory runs out (*arr is then unchanged). */
bool nnp__grow(void **arr, size_t *cap, size_t need, size_t elem);

/* FNV-1a of a NUL-terminated string, for the name indexes. */
uint64_t nnp__hash_str(const char *s);

/* An index of strings kept elsewhere (record names, metadata keys): open addressing over slots
 * that hold 1 + a string's number, the strings found through key(ctx, number). A capture or a
 * header may hold millions of names, and a search per name would make reading it quadratic. */
typedef struct nnp_strindex {
    uint32_t *slots;
    size_t nslots; /* a power of two; 0 before the first reserve */
    const char *(*key)(const void *ctx, size_t i);
    const void *ctx;
} nnp_strindex;
/* Room for one more key when n are in (keys 0..n-1 re-placed when the slots grow); false when
 * memory runs out. At most UINT32_MAX - 1 keys. */
bool nnp__strindex_reserve(nnp_strindex *x, size_t n);
/* Room for `total` keys when n are in, so that adding the rest re-places nothing. */
bool nnp__strindex_room(nnp_strindex *x, size_t n, size_t total);
/* Keys 0..n-1 placed anew (after the strings were reordered), with room for one more. */
bool nnp__strindex_rebuild(nnp_strindex *x, size_t n);
/* The slot holding `key`, or the empty slot where it would go (after a reserve). */
size_t nnp__strindex_slot(const nnp_strindex *x, const char *key);
/* The number of `key`, or -1. */
int64_t nnp__strindex_find(const nnp_strindex *x, const char *key);
void nnp__strindex_free(nnp_strindex *x);

/* "[2, 3, 4]" into buf (cut short when it does not fit), for messages. */
void nnp__format_shape(char *buf, size_t n, uint32_t ndim, const uint64_t *shape);

/* Product of shape[0..ndim) into *nelem, or false on overflow. */
bool nnp__shape_nelem(uint32_t ndim, const uint64_t *shape, uint64_t *nelem);

/* Little-endian loads from unaligned bytes. */
uint16_t nnp__le16(const unsigned char *p);
uint32_t nnp__le32(const unsigned char *p);
uint64_t nnp__le64(const unsigned char *p);

/* Whether s[0..n) is valid UTF-8 (no overlongs, no surrogates, nothing past U+10FFFF); on failure
 * *bad is the offset of the first byte of the bad sequence. */
bool nnp__utf8_valid(const unsigned char *s, size_t n, size_t *bad);

/* ---- a growable string (util.c) ---- */

typedef struct nnp_sbuf {
    char *s;      /* NUL-terminated; NULL until the first append */
    size_t len, cap;
    bool failed;  /* an allocation failed: later appends do nothing */
} nnp_sbuf;

/* Room for n more bytes and the NUL; false (and `failed` set) when memory runs out. */
bool nnp__sbuf_room(nnp_sbuf *b, size_t n);
void nnp__sbuf_put(nnp_sbuf *b, const char *s, size_t n);
void nnp__sbuf_puts(nnp_sbuf *b, const char *s);
void nnp__sbuf_printf(nnp_sbuf *b, const char *fmt, ...) NNP_PRINTF(2, 3);
/* Append s as a JSON string literal, quotes included (s must be valid UTF-8). */
void nnp__sbuf_json_string(nnp_sbuf *b, const char *s);
void nnp__sbuf_free(nnp_sbuf *b);
/* Append the whole of a file to b; an unreadable file is NNP_ERR_IO naming it. */
nnp_status nnp__sbuf_read_file(nnp_sbuf *b, const char *path);

/* ---- file mapping (util.c) ---- */

typedef struct nnp_map {
    const unsigned char *base; /* NULL for an empty file */
    uint64_t size;
} nnp_map;

/* Map a whole regular file read-only. A directory, a missing file or an unreadable one is an
 * NNP_ERR_IO naming the path and the system's reason. */
nnp_status nnp__map_file(const char *path, nnp_map *out);
void nnp__unmap(nnp_map *m);

/* ---- threads (parallel.c) ---- */

/* `requested` if positive (at most 256), else the number of online CPUs. */
int nnp__thread_count(int requested);
/* Run fn(ctx, t) for every t in [0, ntasks) on up to `threads` threads (the caller's included).
 * Tasks are independent; each writes its result by task index. */
nnp_status nnp__parallel_for(size_t ntasks, int threads, void (*fn)(void *ctx, size_t task),
                             void *ctx);

/* ---- statistics kernels (kernels_f32.c) ---- */

/* Moments of a block of finite values: the mean and sum of squared deviations are of x - shift. */
typedef struct nnp_block_moments {
    uint64_t n, zeros;
    double min, max, abs_max, mean, m2;
} nnp_block_moments;

/* The moments of n float32 values (4-byte aligned), or false when one is NaN or infinite (the
 * caller then takes the slow path for the block). Uses the best kernel the CPU runs. */
bool nnp__f32_block_moments(const float *x, size_t n, double shift, nnp_block_moments *m);
/* The portable kernel, for comparing against the vector ones in tests. */
bool nnp__f32_block_moments_portable(const float *x, size_t n, double shift,
                                     nnp_block_moments *m);

/* ---- rules: what a name maps to (rules.c) and the adapters that bring layouts together
 * (adapt.c) ---- */

#define NNP_ADAPT_MAX_DIMS 16

typedef enum nnp_op_kind {
    NNP_OP_TRANSPOSE, /* permute the axes as dims[0..n) says (n 0: reverse them) */
    NNP_OP_RESHAPE,   /* to dims[0..n), one of them may be -1 (n 0: the other side's shape) */
    NNP_OP_SLICE,     /* [start, end) along axis; negative from the end, end INT64_MAX: to it */
    NNP_OP_PART,      /* part `start` of `end` equal parts along axis */
    NNP_OP_SELECT,    /* index `start` along axis, dropping the axis */
    NNP_OP_CAST,      /* round to dtype */
    NNP_OP_ROTARY     /* undo llama.cpp's q/k row permutation for `start` heads */
} nnp_op_kind;

typedef struct nnp_op {
    nnp_op_kind kind;
    bool on_ref;      /* applies to the reference's tensor of the pair, not the port's */
    uint32_t n;
    int64_t dims[NNP_ADAPT_MAX_DIMS];
    int64_t axis, start, end;
    nnp_dtype dtype;
} nnp_op;

/* Where one port record goes: the reference name, the adapters in rule order, a tolerance given
 * by a rule, and, when it is one part of a record the reference holds fused, which part. */
/* How a `gather` rule joins the copies of a name that several ranks of a rank capture hold
 * (docs/scale.md). */
enum { NNP_GATHER_NONE = 0, NNP_GATHER_CONCAT, NNP_GATHER_SUM, NNP_GATHER_RANK0 };

typedef struct nnp_mapping {
    char *name;
    nnp_op *ops;
    size_t nops;
    bool has_tolerance;
    double atol, rtol;
    uint32_t part, nparts; /* nparts 0: not a part */
    int64_t join_axis;
    bool join_sum;         /* the parts are summed, not joined along join_axis */
    int gather;            /* NNP_GATHER_*: the first gather rule that matched the name */
    int64_t gather_axis;
} nnp_mapping;

/* Map a name through every rule: *n mappings (0: ignored; more than one: a split). */
nnp_status nnp__rules_apply(const nnp_rules *rules, const char *name, nnp_mapping **out,
                            size_t *n);
void nnp__mappings_free(nnp_mapping *m, size_t n);
/* Whether a `ref ignore` rule drops this reference record name (matched as it is). */
bool nnp__rules_ref_ignored(const nnp_rules *rules, const char *name);
/* How an adapter reads in a rules file ("transpose 1,0", "ref select 1 -1", "part 2/3 of axis 0"). */
void nnp__op_describe(nnp_sbuf *b, const nnp_op *op);

/* A tensor in C order: its bytes are `data` (NULL: only the shape is known), a copy owned here
 * when `owned` is set. */
typedef struct nnp_tensor {
    nnp_dtype dtype;
    uint32_t ndim;
    uint64_t shape[NNP_ADAPT_MAX_DIMS];
    uint64_t nelem;
    const void *data;
    void *owned;
} nnp_tensor;

/* Apply the ops of one side (on_ref) in order. `other` is the other side's tensor (its shape is
 * what `reshape` without dims takes). An adapter that does not fit is NNP_ERR_ARG saying why;
 * t->data is then NULL. With t->data NULL only the shape is worked out. */
nnp_status nnp__adapt(nnp_tensor *t, const nnp_op *ops, size_t nops, bool on_ref,
                      const nnp_tensor *other);
/* Join n parts along axis into a new tensor (shape only when the parts have no data). */
nnp_status nnp__concat(const nnp_tensor *parts, size_t n, int64_t axis, nnp_tensor *out);
void nnp__tensor_free(nnp_tensor *t);

/* ---- pairing (pairing.c) and automatic alignment (match.c) ---- */

/* Pair the records of a diff (d->pairs, unmatched lists, d->owned): by the names the rules give,
 * joining parts, then by alignment; shapes after the adapters, verdicts for what cannot be
 * compared, tolerances. */
nnp_status nnp__pair_records(nnp_dump *ref, nnp_dump *port, const nnp_diff_options *opts,
                             nnp_diff *d);
/* Both sides of pair i with their data, as the adapters leave them (for adapted pairs); free with
 * nnp__tensor_free. */
nnp_status nnp__pair_tensors(const nnp_diff *d, size_t i, nnp_dump *ref, nnp_dump *port,
                             nnp_tensor *rt, nnp_tensor *pt);
void nnp__pairing_free(void *owned);

typedef struct nnp__align_item {
    const char *name;       /* record name, e.g. "blk.3.attn_q/out0" */
    const char *role;       /* "out0", "in0", "weight", ... ("" if unknown) */
    uint32_t ndim;
    const uint64_t *shape;
    nnp_dtype dtype;
} nnp__align_item;

/* Items are given in execution order. On return port_to_ref[j] is the index into ref of the
 * record port[j] is aligned with, or -1. The result is one-to-one and monotonic (if port j<k
 * are both aligned, their ref indices increase). score[j] (may be NULL) in [0,1] says how sure. */
nnp_status nnp__align(const nnp__align_item *ref, size_t nref, const nnp__align_item *port,
                      size_t nport, int64_t *port_to_ref, double *score);
/* Rules text that renames each port_names[i] to ref_names[i], generalized where that is safe;
 * it round-trips through nnp_rules_parse and nnp_rules_map. */
nnp_status nnp__align_rules(const char *const *port_names, const char *const *ref_names, size_t n,
                            nnp_sbuf *out);

/* ---- comparison kernels (kernels_cmp.c) and the comparing pass (metrics.c) ---- */

/* Pairs per block of the comparison kernels: 2 x 8 KiB of F32, still in L1 when a block must be
 * summed a second time (kernels_cmp.c). */
#define NNP_CMP_BLOCK 2048u

/* What a block of finite pairs contributes to nnp_compare's metrics. */
typedef struct nnp_cmp_sums {
    uint64_t n, fail;                  /* pairs; pairs outside atol + rtol |ref| */
    double sd2, sad, srr, spp, spr;    /* sums of d^2, |d|, r^2, p^2, p*r (d = p - r) */
    double max_abs;                    /* the largest |d| (the caller finds where) */
    double mean_r, mean_p, m2_r, m2_p, c_rp; /* Pearson moments about the block's own means */
} nnp_cmp_sums;

/* Whether the kernels read this dtype in place: F32, BF16 and F16, each exactly a float. */
bool nnp__cmp_fast_dtype(nnp_dtype t);
/* The sums of n (1..NNP_CMP_BLOCK) pairs stored as rt at ref and pt at port (any alignment, both
 * fast dtypes), or false when an element is NaN or infinite: the caller then takes its exact
 * slow path for the block. Uses the best kernel the CPU runs. */
bool nnp__cmp_block(nnp_dtype rt, const void *ref, nnp_dtype pt, const void *port, size_t n,
                    double atol, double rtol, nnp_cmp_sums *out);
/* The portable kernel, for comparing against the vector ones in tests. */
bool nnp__cmp_block_portable(nnp_dtype rt, const void *ref, nnp_dtype pt, const void *port,
                             size_t n, double atol, double rtol, nnp_cmp_sums *out);
/* The kernels nnp__cmp_block chooses among, worst to best: it runs the best this CPU has. Tests
 * run each one the CPU has through nnp__cmp_block_with (false also for a kernel it lacks). */
typedef enum { NNP_CMP_PORTABLE, NNP_CMP_AVX2, NNP_CMP_AVX512, NNP_CMP_KERNELS } nnp_cmp_kernel;
bool nnp__cmp_kernel_available(nnp_cmp_kernel k);
bool nnp__cmp_block_with(nnp_cmp_kernel k, nnp_dtype rt, const void *ref, nnp_dtype pt,
                         const void *port, size_t n, double atol, double rtol, nnp_cmp_sums *out);

/* One side of a comparison: n elements of `dtype` at `data`. When `dump` is set, `data` is what
 * nnp_dump_data gave for its record `rec`: the pass then releases each chunk's mapped pages
 * once compared, so that comparing a tensor of any size keeps only the chunks in flight
 * resident (the page cache keeps the file). NULL: memory the caller owns, left alone. */
typedef struct nnp_cmp_side {
    nnp_dtype dtype;
    const void *data;
    nnp_dump *dump;
    size_t rec;
} nnp_cmp_side;

/* nnp_compare over two sides that may live in dumps (above). */
nnp_status nnp__compare_sides(const nnp_cmp_side *ref, const nnp_cmp_side *port, uint64_t n,
                              const nnp_compare_options *opts, nnp_metrics *out);

/* Compare record `ref_rec` of `ref` with record `port_rec` of `port` (the same number of
 * elements, any dtypes, as nnp_compare), releasing each chunk's mapped pages behind the scan
 * and both records' remaining pages at the end. What `nnparity diff` calls per pair: its
 * resident size stays a few chunks whatever the dump's size. */
nnp_status nnp__compare_records(nnp_dump *ref, size_t ref_rec, nnp_dump *port, size_t port_rec,
                                const nnp_compare_options *opts, nnp_metrics *out);

/* The comparing pass cut at its chunks, for processes that share a tensor's chunks
 * (distrib.c): chunk `chunk` of n elements (nnp__cmp_chunk_elems() each, the last one shorter)
 * into `partial` (nnp__cmp_partial_size() bytes of plain data), releasing its pages as
 * nnp__compare_sides does; nnp__compare_merge then merges the partials of every chunk, in
 * chunk order, into the same metrics as nnp__compare_sides gives, bit for bit. */
size_t nnp__cmp_partial_size(void);
uint64_t nnp__cmp_chunk_elems(void);
void nnp__compare_chunk(const nnp_cmp_side *ref, const nnp_cmp_side *port, uint64_t n,
                        double atol, double rtol, uint64_t chunk, void *partial);
void nnp__compare_merge(const void *partials, size_t nchunks, nnp_metrics *out);

/* ---- the stages of a diff (diff.c), shared with the distributed diff (distrib.c) ---- */

/* pass, warn or fail from a compared pair's metrics */
void nnp__diff_verdict(nnp_diff_pair *p);
/* Once every pair is compared: the first divergence, the order check, where NaN/Inf start. */
nnp_status nnp__diff_conclude(nnp_diff *d, nnp_dump *port);

/* ---- dump builder (dump.c) ---- */

/* How a record's stored bytes differ from little-endian C order. */
enum {
    NNP_LAYOUT_BYTESWAP = 1u << 0, /* elements are big-endian */
    NNP_LAYOUT_FORTRAN = 1u << 1   /* column-major order */
};

/* Produces a record's little-endian C-ordered bytes into dst (rec->pub.nbytes long); used for data
 * that is not in the mapped file as-is (compressed archive members). `ctx` is the loader's own. */
typedef nnp_status (*nnp_loader_fn)(void *ctx, void *dst, uint64_t nbytes);

typedef struct nnp_rec {
    nnp_record pub;
    const unsigned char *raw; /* stored bytes in a mapping (NULL when `load` provides them) */
    unsigned layout;          /* NNP_LAYOUT_* flags describing `raw` */
    nnp_loader_fn load;
    void *load_ctx;
    void *owned;              /* converted copy, made on the first nnp_dump_data() */
    uint64_t file_index;      /* which file of the dump it came from, in opening order */
    uint64_t file_order;      /* order within that file (data offset order for safetensors) */
    uint64_t meta_seq;        /* execution order given by nnparity metadata */
    bool has_meta_seq;
    uint64_t sort_key[3];     /* set when the dump is complete */
} nnp_rec;

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

/* Record `name`'s provenance from nnparity metadata (module, role, type copied; position `seq` in
 * execution order). Unknown names are a format error naming `file`. */
nnp_status nnp__dump_annotate(nnp_dump *d, const char *file, const char *name, const char *module,
                              const char *role, const char *module_type, uint64_t call,
                              uint64_t seq);

/* Drop this process's mapping of bytes [off, off+len) of record i (whole pages only; the page
 * cache keeps them), and ask the kernel to map [off, off+len) ahead of use. */
void nnp__dump_release_range(nnp_dump *d, size_t i, uint64_t off, uint64_t len);
void nnp__dump_prefetch_range(nnp_dump *d, size_t i, uint64_t off, uint64_t len);

/* ---- format readers (src/formats/) ---- */

/* Each reads one file (or a set of shards) into the dump under construction. */
nnp_status nnp__safetensors_load(nnp_dump *d, const char *path);
nnp_status nnp__sharded_load_index(nnp_dump *d, const char *index_path);
nnp_status nnp__sharded_load_dir(nnp_dump *d, const char *dir_path);
/* A directory whose *.safetensors files (names[0..n), in natural order) are a capture's
 * rank-R-of-N files (formats/ranks.c): every rank must be there; read as one dump. *handled is
 * false, and nothing is read, when no name is a rank file's. */
nnp_status nnp__ranks_load_dir(nnp_dump *d, const char *dir_path, char *const *names, size_t n,
                               bool *handled);
/* Parse "rank-R-of-N.safetensors" (any number of digits); false when `name` is not one. */
bool nnp__rank_file_name(const char *name, uint32_t *rank, uint32_t *world);
nnp_status nnp__npy_load(nnp_dump *d, const char *path);
nnp_status nnp__npz_load(nnp_dump *d, const char *path);
/* A PyTorch checkpoint (formats/torch_pt.c): a torch.save zip, read through a restricted
 * unpickler; the legacy pre-1.6 format is refused with advice. */
nnp_status nnp__torch_load(nnp_dump *d, const char *path);
/* The same over `path` already mapped into the dump (npz.c hands over zips that hold
 * <archive>/data.pkl, so a zip is mapped and read once). */
nnp_status nnp__torch_load_map(nnp_dump *d, const char *path, const nnp_map *m);
/* Whether a file's first n bytes start torch's legacy (pre-1.6) serialization: a pickle whose
 * first value is torch's magic number. */
bool nnp__torch_is_legacy(const unsigned char *head, size_t n);
nnp_status nnp__gguf_load(nnp_dump *d, const char *path);

/* nnparity's own facts in a safetensors __metadata__ (docs/dump-format.md) */
#define NNP_META_FORMAT_KEY "nnparity.format"
#define NNP_META_FORMAT_VALUE "dump/1"
#define NNP_META_RECORDS_KEY "nnparity.records"
/* In a partial dump's placeholder header: the journal file (beside it) that lists its records. */
#define NNP_META_PARTIAL_KEY "nnparity.partial"

/* Stop writing but keep "<path>.partial" and its journal for nnp_recover: a capture that lost
 * records must not pass for a finished dump. Returns the partial file's path (valid until the
 * next call on this thread). */
const char *nnp__writer_abandon(nnp_writer *w);

/* A record's name by nnparity's convention: "<module>/<role>", with "#<call>" for calls after the
 * first (formats/provenance.c). NULL strings read as "". Appended to b. */
void nnp__record_name(nnp_sbuf *b, const char *module, const char *role, uint64_t call);

/* Read a partial dump through its journal (formats/journal.c): `m` maps `path`; the journal is
 * the file `journal_name` beside it. `hlen` is the header length the file declares, which must be
 * the room the journal names; 0 takes the room from the journal alone (recovery, when the header
 * itself may be torn). */
nnp_status nnp__journal_load(nnp_dump *d, const char *path, const nnp_map *m, uint64_t hlen,
                             const char *journal_name);
/* Open `partial` through the journal `journal_name` beside it, whatever its header holds. */
nnp_status nnp__dump_open_journal(const char *partial, const char *journal_name, nnp_dump **out);

#endif /* NNP_INTERNAL_H */
