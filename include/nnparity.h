/*
 * nnparity.h - the public C API of libnnparity.
 *
 * nnparity tells people who port neural networks where and why their port stops matching the
 * reference. This header is the whole library surface: element types (dtypes), dumps (what one
 * run recorded, read from safetensors, sharded safetensors, npy, npz, PyTorch checkpoints or GGUF), a
 * streaming safetensors writer, and per-tensor statistics.
 *
 * Conventions
 * -----------
 * - Every function that can fail returns an nnp_status (NNP_OK == 0). On failure the library keeps
 *   a one-line message for the calling thread, readable with nnp_last_error(). The message names
 *   the file, the byte offset or tensor, and the rule that failed, e.g.
 *       model.safetensors: byte 8: header is not valid UTF-8 (InvalidHeader)
 * - The library never exits or aborts, and prints nothing (but for one line when a capture session
 *   configured by the environment cannot start). It is safe to call from many threads on different
 *   objects; one object (a dump, a writer) is not to be used from two threads at once unless a
 *   function says so.
 * - Options structs start with their own size: fill them with their init function
 *   (nnp_diff_options_init, ...) and then set what you need, so that a program compiled
 *   against this header keeps working with a later library of the same major version that
 *   added options. A size of 0 (options never initialized) is NNP_ERR_ARG.
 * - Results are opaque objects read through accessors, or structs the library allocates and
 *   hands out by pointer (nnp_record, nnp_diff_pair): later minor versions may append fields to
 *   those, so never copy them by value into storage of your own or step between them by
 *   pointer arithmetic. What the library hands over otherwise is released with nnp_free.
 * - Tensor data is always presented little-endian and C-contiguous (row-major). Files that store
 *   otherwise (big-endian or Fortran-ordered npy) are converted when their data is first asked for.
 *
 * Dumps
 * -----
 * A dump is an ordered list of records. A record is a tensor plus where it came from: the module
 * path, the role (in0, out0, grad_out0, a tap name, a weight), the call index (the n-th call of that
 * module) and the module type. Records are listed in execution order ("seq"). Files that nnparity
 * wrote carry these facts in their safetensors __metadata__ (see docs/dump-format.md); any other
 * file presents its tensors in file order with an empty module, role and type.
 */
#ifndef NNPARITY_H
#define NNPARITY_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Marks a function whose argument a is a printf format and whose arguments from b on (0: a
 * va_list) are its values, so that gcc and clang check them (-Wformat) as they check printf. */
#ifndef NNP_PRINTF
#if defined(__GNUC__)
#define NNP_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define NNP_PRINTF(a, b)
#endif
#endif

/* The version of this header. The library's soname carries the major number
 * (libnnparity.so.0): a release that removes or changes anything a caller compiled against
 * raises it; one that only adds (functions, enum values, fields appended to structs that the
 * library allocates or that carry their own size) raises the minor number. CHANGELOG.md says
 * what each version changed. */
#define NNP_VERSION_MAJOR 0
#define NNP_VERSION_MINOR 7
#define NNP_VERSION_PATCH 2
#define NNP_VERSION_STRING "0.7.2"
/* MAJOR * 10000 + MINOR * 100 + PATCH, for `#if NNP_VERSION_NUMBER >= 200` */
#define NNP_VERSION_NUMBER (NNP_VERSION_MAJOR * 10000 + NNP_VERSION_MINOR * 100 + NNP_VERSION_PATCH)

/* ---------------------------------------------------------------------------------------------
 * Status and errors
 * ------------------------------------------------------------------------------------------- */

typedef enum nnp_status {
    NNP_OK = 0,
    NNP_ERR_IO,          /* a file could not be opened, read, written or mapped */
    NNP_ERR_FORMAT,      /* a file breaks a rule of its format */
    NNP_ERR_UNSUPPORTED, /* a valid file uses something nnparity does not read (a dtype, a layout) */
    NNP_ERR_ARG,         /* a caller passed a bad argument */
    NNP_ERR_NOT_FOUND,   /* a name looked up is not there */
    NNP_ERR_NOMEM,       /* memory ran out */
    NNP_ERR_INTERNAL     /* a bug in nnparity */
} nnp_status;

/* The message of the last failure on this thread ("" if none). Valid until the next failing call
 * on the same thread. */
const char *nnp_last_error(void);

/* A short constant name for a status ("format error", ...). */
const char *nnp_status_name(nnp_status status);

/* The library's version string, e.g. "0.2.0", and number (NNP_VERSION_NUMBER as the library
 * was built): a program linked at run time against another build than the header it was
 * compiled with can compare nnp_version_number() / 10000 with NNP_VERSION_MAJOR. */
const char *nnp_version(void);
int nnp_version_number(void);

/* Release memory the library allocated and handed over: strings and arrays that a function
 * documents as "release with nnp_free" (objects have functions of their own: nnp_dump_close,
 * nnp_rules_free, nnp_diff_free, ...). NULL is allowed. Callers in other languages, or built
 * with another C runtime, cannot call this library's free() themselves. */
void nnp_free(void *p);

/* Which file holds the address `addr`: true if it lies in a file the library has mapped and not
 * yet unmapped (a dump's data), with *path (the path as the file was opened; owned by the
 * library, valid while the file stays mapped) and *offset (the byte in the file); false
 * otherwise, or when more files were mapped at once than the library keeps track of (256).
 * Either pointer may be NULL.
 * It exists for a SIGBUS handler: a file that another process truncates while it is mapped
 * raises SIGBUS on the next read past its new end, and the handler, given si_addr, can name the
 * file. It is async-signal-safe: it takes no lock, allocates nothing and reads a fixed table
 * with lock-free atomics. The library installs no handler itself; signals are the caller's. */
bool nnp_mapping_of(const void *addr, const char **path, uint64_t *offset);

/* The layout of a public struct, for bindings that declare the structs themselves (the
 * Python bridge): the offset of `field` in the struct named `type` ("nnp_record",
 * "nnp_tap_desc", "nnp_capture_options", ...; the C names), or with field NULL its size.
 * false when the struct or the field is unknown. */
bool nnp_struct_layout(const char *type, const char *field, size_t *out);

/* ---------------------------------------------------------------------------------------------
 * dtypes, by their safetensors names
 * ------------------------------------------------------------------------------------------- */

typedef enum nnp_dtype {
    NNP_DTYPE_INVALID = 0,
    NNP_F64,
    NNP_F32,
    NNP_F16,
    NNP_BF16,
    NNP_F8_E4M3, /* 4 exponent bits, bias 7, no infinities; 0x7f and 0xff are NaN (OCP "fn") */
    NNP_F8_E5M2, /* 5 exponent bits, bias 15, IEEE-like with infinities and NaNs */
    NNP_I8,
    NNP_I16,
    NNP_I32,
    NNP_I64,
    NNP_U8,
    NNP_U16,
    NNP_U32,
    NNP_U64,
    NNP_BOOL,
    NNP_DTYPE_COUNT
} nnp_dtype;

typedef enum nnp_dtype_class {
    NNP_CLASS_FLOAT = 1, /* F64 F32 F16 BF16 F8_* */
    NNP_CLASS_INT,       /* I* U* */
    NNP_CLASS_BOOL
} nnp_dtype_class;

/* "F32", "BF16", ... or "INVALID". */
const char *nnp_dtype_name(nnp_dtype dtype);
/* The dtype with this safetensors name, or NNP_DTYPE_INVALID. */
nnp_dtype nnp_dtype_from_name(const char *name);
/* Bytes per element (1, 2, 4 or 8); 0 for NNP_DTYPE_INVALID. */
size_t nnp_dtype_size(nnp_dtype dtype);
nnp_dtype_class nnp_dtype_class_of(nnp_dtype dtype);

/* Exact conversions of single values. Every f16, bf16 and f8 value is exactly representable as a
 * float and as a double, so these are exact. NaNs come out quiet (a signalling NaN could trap in
 * the caller's next operation). */
float nnp_f16_to_f32(uint16_t bits);
float nnp_bf16_to_f32(uint16_t bits);
float nnp_f8_e4m3_to_f32(uint8_t bits);
float nnp_f8_e5m2_to_f32(uint8_t bits);

/* Convert n little-endian elements of `dtype` at `src` to double / float. Integers wider than the
 * destination's mantissa round to nearest (as a C cast does); every float dtype narrower than the
 * destination converts exactly. BOOL reads any non-zero byte as 1. */
void nnp_convert_to_f64(nnp_dtype dtype, const void *src, size_t n, double *dst);
void nnp_convert_to_f32(nnp_dtype dtype, const void *src, size_t n, float *dst);

/* ---------------------------------------------------------------------------------------------
 * Dumps: reading
 * ------------------------------------------------------------------------------------------- */

typedef struct nnp_dump nnp_dump;

typedef struct nnp_record {
    const char *name;        /* tensor name as stored in the file */
    const char *module;      /* module path, "" when the file does not say */
    const char *role;        /* "in0", "out0", "grad_out0", a tap name, "weight"...; "" if unknown */
    const char *module_type; /* e.g. "Linear", "" if unknown */
    uint64_t call;           /* n-th call of (module, role), from 0 */
    uint64_t seq;            /* position in execution order, from 0; equals the record index */
    nnp_dtype dtype;
    uint32_t ndim;           /* 0 for a scalar */
    const uint64_t *shape;   /* ndim dimensions, row-major */
    uint64_t nelem;          /* product of shape (1 for a scalar, 0 for a zero-size tensor) */
    uint64_t nbytes;         /* nelem * dtype size */
    const char *file;        /* the file the data lives in (a shard, an npz member's archive) */
    int32_t rank;            /* in a capture of several ranks (docs/scale.md): the rank that
                              * recorded it; -1 otherwise */
    uint32_t world_size;     /* ... and how many ranks the capture has; 0 otherwise */
} nnp_record;

/* Open a dump. `path` may be a .safetensors file, a sharded checkpoint's *.index.json, a directory
 * of *.safetensors shards (or of a capture's rank-R-of-N.safetensors files, one per rank: read as
 * one dump, see docs/scale.md), an .npy file, an .npz archive or a PyTorch checkpoint (torch.save's
 * zip format: .pt, .pth, .bin; its pickle is read by a restricted unpickler that runs nothing)
 * or a GGUF file (quantized tensors read as F32, dequantized on first access); the format is found
 * from the file's first bytes, not its name. The whole header is validated
 * before this returns; tensor data is mapped, not read. Every file read must be a regular file
 * (a FIFO or a device, or a link to one, is NNP_ERR_IO "not a regular file", without waiting on
 * it); a shard index is read whole up to 256 MiB, a partial dump's journal up to 1 GiB. On
 * failure *out is NULL. */
nnp_status nnp_dump_open(const char *path, nnp_dump **out);

/* Open two dumps at once, the second on a thread of its own (the reference and the port of a
 * diff: opening a long capture is mostly parsing its header, and the two are independent). The
 * result is that of nnp_dump_open(first) then nnp_dump_open(second): when both fail, the first
 * file's error is the one reported. On failure *a and *b are both NULL. */
nnp_status nnp_dump_open_both(const char *first, const char *second, nnp_dump **a, nnp_dump **b);

/* Release a dump and everything it mapped or allocated. NULL is allowed. */
void nnp_dump_close(nnp_dump *dump);

/* The path given to nnp_dump_open. */
const char *nnp_dump_path(const nnp_dump *dump);

/* "safetensors", "safetensors-sharded", "safetensors-ranks" (a capture of several ranks),
 * "safetensors-partial", "npy", "npz", "torch" or "gguf". */
const char *nnp_dump_format(const nnp_dump *dump);

/* Number of records, and record i in execution order (i < count). */
size_t nnp_dump_count(const nnp_dump *dump);
const nnp_record *nnp_dump_record(const nnp_dump *dump, size_t i);

/* Index of the record with this tensor name, or -1. O(1) on average. */
int64_t nnp_dump_find(const nnp_dump *dump, const char *name);

/* The record's elements, little-endian and C-contiguous (nbytes long; NULL allowed when nbytes is
 * 0). Usually a pointer into the mapped file; data stored big-endian, Fortran-ordered or compressed
 * is converted once, on first request. The pointer lives as long as the dump. Safe to call from
 * several threads at once. A PyTorch view (transposed, strided, expanded) is gathered into a copy;
 * the copies of one dump may hold together 16 times the size of its files, at least 64 MiB: the
 * view that would pass that cap is refused (NNP_ERR_FORMAT, naming the file, the tensor, its
 * size, its storage's size and the cap) before anything is allocated for it. A record stored in
 * a zip archive (an npz member, a PyTorch storage) is checked against the member's CRC-32 the
 * first time a record of that member is handed out: a mismatch is NNP_ERR_FORMAT, "CRC-32
 * mismatch", naming the file and the member, for this and every later call. */
nnp_status nnp_dump_data(nnp_dump *dump, size_t i, const void **data);

/* The bytes record i's data takes in its file: nbytes for data stored as it is presented, fewer
 * for a PyTorch view that repeats elements (an expanded tensor, stride 0, stores one element
 * however many it presents), a deflated npz member (its compressed size) and a quantized GGUF
 * tensor (its blocks). For a view of a PyTorch storage: the elements of the storage it reads,
 * at most (the span from its first to its last, and no more than the product of the sizes it
 * steps along). 0 for no such record. */
uint64_t nnp_record_stored_bytes(const nnp_dump *dump, size_t i);

/* The name of the record whose stored tensor record i is, when the file stores that tensor once
 * for both (a capture given the same tensor again: nnp_tap_record_same; its stored bytes are
 * then 0); NULL otherwise and for no such record. */
const char *nnp_record_same_as(const nnp_dump *dump, size_t i);

/* Checking an archive member's CRC-32 reads all its bytes once more before they are used.
 * nnp_diff_dumps and nnp_stats_compute read every byte of what they compare anyway, and can
 * check a member as they read it instead. After nnp_dump_defer_checks, nnp_dump_data hands out
 * records read in place without checking them first; the library's comparing and stats passes
 * check what they read, and nnp_dump_finish_checks checks every member handed out and not
 * checked since, then returns to checking in nnp_dump_data. Trust no result computed while
 * checks were deferred until nnp_dump_finish_checks returned NNP_OK (on a mismatch: the error
 * of nnp_dump_data above, for the first such member). */
void nnp_dump_defer_checks(nnp_dump *dump);
nnp_status nnp_dump_finish_checks(nnp_dump *dump);

/* Metadata: the file's string-to-string pairs (safetensors __metadata__; for shards, those of the
 * first shard), nnparity's own keys included. */
size_t nnp_dump_meta_count(const nnp_dump *dump);
void nnp_dump_meta_at(const nnp_dump *dump, size_t i, const char **key, const char **value);
/* The value for `key`, or NULL. */
const char *nnp_dump_meta_get(const nnp_dump *dump, const char *key);
/* What injection did in a capture made under it (its "nnparity.injection" metadata): the
 * inputs overwritten with the reference's, those that were not, and why (the first reason;
 * NULL when all were injected). false when the capture does not say (not made under injection,
 * or by an older nnparity); a malformed value is NNP_ERR_FORMAT through nnp_last_error. */
bool nnp_dump_injection(const nnp_dump *dump, uint64_t *injected, uint64_t *not_injected,
                        char **first_reason);

/* The metadata key prefix under which the GGUF reader records each quantized tensor's stored
 * type: "gguf.tensor_type.<record name>" = "Q4_K". A GGUF file that uses such keys itself is
 * refused; a dump converted from GGUF keeps them for the records it keeps. */
#define NNP_GGUF_TENSOR_TYPE_PREFIX "gguf.tensor_type."

/* Whether record `rec` was stored quantized (its dump's metadata names a ggml quantized type for
 * it, as NNP_GGUF_TENSOR_TYPE_PREFIX says), and if so its type (*type: ggml's spelling, "Q4_K",
 * a constant string) and the largest rel-L2 = ||dequantized - source|| / ||source|| that a
 * correct quantization of a source tensor of that type leaves (*rel_l2_bound; docs/weights.md
 * says how the bounds were chosen). Every quantized type nnparity reads has a bound; a type
 * without one is reported as not quantized. `type` and `rel_l2_bound` may be NULL. */
bool nnp_record_quantization(const nnp_dump *dump, size_t rec, const char **type,
                             double *rel_l2_bound);

/* Tell the kernel that this record's pages will not be read again soon (they stay in the page
 * cache); keeps the resident size of a pass over a huge dump bounded. Only records read in place
 * from a mapping are released; converted copies (npz deflated members, big-endian or Fortran
 * npy, strided torch views) stay in memory until the dump is closed. */
void nnp_dump_release(nnp_dump *dump, size_t i);

/* ---------------------------------------------------------------------------------------------
 * Dumps: writing (streaming safetensors)
 * ------------------------------------------------------------------------------------------- */

typedef struct nnp_writer nnp_writer;

/* What the writer records about one tensor besides its data. Strings may be NULL (read as "").
 * When `name` is NULL or "", the tensor is named "<module>/<role>" with "#<call>" appended for
 * calls after the first. */
typedef struct nnp_record_desc {
    const char *name;
    const char *module;
    const char *role;
    const char *module_type;
    uint64_t call;
    nnp_dtype dtype;
    uint32_t ndim;
    const uint64_t *shape;
} nnp_record_desc;

/* Start writing a safetensors file at `path`. Tensors are streamed to disk as they are added and
 * never held in memory. Nothing is visible at `path` until nnp_writer_close succeeds: the file is
 * built beside it as "<path>.partial" and renamed into place. `expected_records` (0 if unknown)
 * sizes the space kept for the header so that closing needs no copy. "<path>.partial" and
 * "<path>.journal" are created exclusively, never through a symbolic link; one an earlier run
 * left is reused only if it is a regular file with no other name (else NNP_ERR_IO, and it is
 * left as it is). A `path` that is a FIFO, a device or a directory (or a link to one) is
 * NNP_ERR_IO, not replaced. One writer per path: the writer holds a lock on "<path>.partial"
 * until it closes (or its process ends), and a second writer to the same path, in this process
 * or another, fails here with NNP_ERR_IO naming the other process's id where it is known. */
nnp_status nnp_writer_open(const char *path, size_t expected_records, nnp_writer **out);

/* Add a string-to-string pair to __metadata__. Keys starting with "nnparity." are reserved. */
nnp_status nnp_writer_set_meta(nnp_writer *w, const char *key, const char *value);

/* Append one tensor: desc->shape describes `data`, which holds the elements little-endian and
 * C-contiguous. Its position among the calls is its execution order. Tensor names must be unique. */
nnp_status nnp_writer_add(nnp_writer *w, const nnp_record_desc *desc, const void *data);

/* Write the header and rename the file into place. The writer is freed whatever happens. On
 * failure (or after a failed nnp_writer_add: a writer stops at its first failed write) nothing is
 * left at `path`, and "<path>.partial" with its journal keep every record written before, for
 * nnp_recover. */
nnp_status nnp_writer_close(nnp_writer *w);

/* Give up: remove the partial file and free the writer. NULL is allowed. */
void nnp_writer_abort(nnp_writer *w);

/* Finish a dump that a killed or failed writer left behind: `path` is the dump's final path (or
 * its "<path>.partial"). Every record whose data and journal line were complete is kept; the
 * file is given its real header and renamed to <path>, and the journal removed. *records gets
 * the number of records kept (may be NULL). A capture whose writer is still alive (its lock on
 * "<path>.partial" is held) is refused with NNP_ERR_IO naming that process, and left as it is. */
nnp_status nnp_recover(const char *path, size_t *records);

/* ---------------------------------------------------------------------------------------------
 * Comparing two tensors (one pass over both buffers)
 *
 * d = port - ref, every value converted exactly to double. Moments are over the elements where
 * both sides are finite; NaN and Inf are counted per side. Degenerate cases are defined, never
 * left to 0/0:
 *   rel_l2 = ||d|| / ||ref||, nmse = ||d||^2 / ||ref||^2: 0 when both norms are 0, +inf when
 *            only the reference's is;
 *   snr_db = 10 log10(||ref||^2 / ||d||^2): +inf for identical tensors;
 *   cosine = <port, ref> / (||port|| ||ref||): 1 when both are all zeros, 0 when only one is;
 *   pcc    = Pearson correlation: when either side is constant it is 1 only if the two tensors
 *            are identical and 0 otherwise, so a constant tensor never scores as a match (a
 *            constant offset on a varying tensor keeps pcc = 1, as the definition says: max_abs
 *            and allclose are what catch it).
 * With no element at all every error metric is 0 and cosine = pcc = 1; with no finite pair the
 * moment metrics are NaN.
 * ------------------------------------------------------------------------------------------- */

typedef struct nnp_compare_options {
    size_t size;       /* sizeof(nnp_compare_options): set by nnp_compare_options_init */
    double atol, rtol; /* an element agrees when |port - ref| <= atol + rtol * |ref| */
    int threads;       /* <= 0: one per CPU */
} nnp_compare_options;

/* size set, atol = rtol = 0 (exact), threads 0. */
void nnp_compare_options_init(nnp_compare_options *opts);

typedef struct nnp_metrics {
    uint64_t count;           /* elements compared */
    uint64_t finite;          /* elements finite on both sides: the moments are over these */
    uint64_t nan_ref, nan_port, inf_ref, inf_port;
    uint64_t allclose_fail;   /* elements that disagree; a NaN on either side disagrees, the same
                               * infinity on both sides agrees */
    double allclose_fail_pct; /* 100 * allclose_fail / count */
    double mse, rmse, mean_abs;
    double max_abs;           /* the largest |port - ref| over finite pairs ... */
    uint64_t max_index;       /* ... at this flat (row-major) index ... */
    double ref_at_max, port_at_max; /* ... where the two sides hold these values */
    double rel_l2, nmse, snr_db, cosine, pcc;
    uint64_t nan_new, inf_new; /* elements where the port holds a NaN / an infinity and the
                                * reference a finite value: what the port introduced */
    double reserved[6];       /* zero: room for metrics a later minor version adds */
} nnp_metrics;

/* Compare n elements of `port` (dtype port_dtype) against `ref`, in one pass over both,
 * threaded over chunks; the result does not depend on the number of threads. Any dtype may meet
 * any other (a BF16 port against an F32 reference compares exactly after conversion). */
nnp_status nnp_compare(nnp_dtype ref_dtype, const void *ref, nnp_dtype port_dtype,
                       const void *port, uint64_t n, const nnp_compare_options *opts,
                       nnp_metrics *out);

/* ---------------------------------------------------------------------------------------------
 * Rules: mapping the port's tensor names onto the reference's, and their layouts (docs/rules.md)
 *
 *     rename    REGEX REPLACEMENT   rewrite the first match; \0..\9 insert the match and groups
 *     ignore    REGEX               drop matching names
 *     tolerance REGEX ATOL RTOL     the tolerances of matching pairs
 *     component REGEX NAME          the component of matching reference records
 *     transpose REGEX [AXES]        adapters, applied to the port's tensor before comparing
 *     reshape   REGEX [SHAPE]       (with `ref` before them, to the reference's): transpose or
 *     slice     REGEX AXIS A:B      permute, reshape, slice, select one index, cast to a float
 *     select    REGEX AXIS INDEX    dtype, undo llama.cpp's rotary row permutation
 *     cast      REGEX DTYPE
 *     rotary    REGEX HEADS
 *     concat    REGEX AXIS LABELS   port records that differ in group 1 join in LABELS order
 *     split     REGEX AXIS LABELS   one port record splits into parts named by LABELS
 *     # comments
 * ------------------------------------------------------------------------------------------- */

typedef struct nnp_rules nnp_rules;

/* Parse rules from a file / from text (`origin` names it in errors: "FILE: line L, column C").
 * The file must be a regular file of at most 16 MiB; more than 100000 rules is NNP_ERR_FORMAT,
 * as is a regex with a back-reference (docs/rules.md, "Limits"). */
nnp_status nnp_rules_load(const char *path, nnp_rules **out);
nnp_status nnp_rules_parse(const char *text, const char *origin, nnp_rules **out);
void nnp_rules_free(nnp_rules *rules);

/* Map `name` through the rules in order: *out is a new string (release with
 * nnp_free), *ignored is set when
 * an ignore rule matched. NULL rules map every name to itself. Only the name is mapped: adapters
 * are for comparing (nnp_diff_dumps), and a split name maps to its first part. A regex that
 * reaches a match limit on the name is NNP_ERR_FORMAT naming the rule and the limit. */
nnp_status nnp_rules_map(const nnp_rules *rules, const char *name, char **out, bool *ignored);

/* ---------------------------------------------------------------------------------------------
 * Diffing two dumps: pair the records, compare each pair, localize the first divergence
 * ------------------------------------------------------------------------------------------- */

typedef enum nnp_verdict {
    NNP_PASS = 0,       /* every element within tolerance */
    NNP_WARN,           /* at most 0.1% of the elements outside tolerance, and no new NaN/Inf */
    NNP_FAIL,           /* more than that, or a NaN/Inf the reference does not have */
    NNP_SHAPE_MISMATCH, /* not compared: the shapes differ */
    NNP_DTYPE_MISMATCH  /* not compared: float against integer or bool */
} nnp_verdict;

/* "pass", "warn", "fail", "shape", "dtype". */
const char *nnp_verdict_name(nnp_verdict v);

/* The default tolerances for a pair, from its lower-precision side (docs/diff.md says why):
 * F64 1e-12 + 1e-9|ref|, F32 1e-5 + 1e-4|ref|, F16 1e-3 + 1e-2|ref|, BF16 1e-2 + 4e-2|ref|,
 * F8_E4M3 1e-2 + 0.125|ref|, F8_E5M2 1e-2 + 0.25|ref|, integers and bool exact. */
void nnp_default_tolerance(nnp_dtype a, nnp_dtype b, double *atol, double *rtol);

typedef struct nnp_diff nnp_diff;

typedef struct nnp_diff_options {
    size_t size;            /* sizeof(nnp_diff_options): set by nnp_diff_options_init */
    const nnp_rules *rules; /* maps the port's record names onto the reference's; NULL: none */
    double atol, rtol;      /* < 0: by dtype (nnp_default_tolerance); a rule's tolerance wins */
    int threads;            /* <= 0: one per CPU */
    bool no_align;          /* do not pair what names leave unmatched by automatic alignment */
    /* Called after each pair is compared with the bytes compared so far and in all (one call at
     * a time, from any of the diff's threads); NULL: none. */
    void (*progress)(void *ctx, uint64_t done_bytes, uint64_t total_bytes);
    void *progress_ctx;
    /* Pair as `like` did, a diff of the same reference against `like_port`: each of its pairs
     * is made again with the port record of the same name, through the same adapters (a second
     * run of one port, e.g. under injection, names its records alike). The rules then serve
     * nothing but tolerances; what is left is paired by value only. NULL: pair as usual. */
    const nnp_diff *like;
    const nnp_dump *like_port;
    /* Leave out where each failing pair's error lies and what explains it (nnp_diff_profile,
     * nnp_diff_hint_at): the diff then reads each pair once and no more. */
    bool no_explain;
    /* The reference's own noise in the port's precision: a diff of the same reference dump
     * against the reference run in that precision (`nnparity run --baseline`). Pairing by value
     * then takes two records as one value within twice the rel-L2 the baseline shows at that
     * reference record (at least 5%), rather than by the dtypes alone. NULL: none. */
    const nnp_diff *noise;
} nnp_diff_options;

/* size set, no rules, atol = rtol = -1 (by dtype), threads 0, alignment on, no progress. */
void nnp_diff_options_init(nnp_diff_options *opts);

/* How the port records of a pair were made one tensor. */
typedef enum nnp_join_kind {
    NNP_JOIN_NONE = 0,      /* one port record */
    NNP_JOIN_CONCAT,        /* the parts a concat rule names, joined along join_axis */
    NNP_JOIN_GATHER_CONCAT, /* the copies the ranks of a rank capture hold, joined along
                             * join_axis (gather concat) */
    NNP_JOIN_GATHER_SUM     /* the ranks' copies, summed (gather sum) */
} nnp_join_kind;

/* What a pair was made on (docs/diff.md, "Pairing by evidence"). */
typedef enum nnp_evidence {
    NNP_EVIDENCE_NAME = 0,           /* the names, after the rules */
    NNP_EVIDENCE_VALUE_EXACT,        /* the same bytes, dtype and shape */
    NNP_EVIDENCE_VALUE,              /* values within 5% rel-L2 (more beside bf16, docs/diff.md)
                                      * over the same elements, as the
                                      * records' sketches estimate (a reshape is the same) */
    NNP_EVIDENCE_VALUE_LAST_ROW,     /* the port's values are the last row of the reference's
                                      * axis before the last (a decode step with a cache) */
    NNP_EVIDENCE_STRUCTURE,          /* no value agrees: order, shape, dtype, role kind, names */
    NNP_EVIDENCE_STRUCTURE_LAST_ROW, /* ... with the port's one row against the reference's last */
    NNP_EVIDENCE_VALUE_PART,         /* one side's values are part k of n of the other side's
                                      * along the last axis (a fused q, k, v projection against
                                      * separate ones); the pair's adapters say which part */
    NNP_EVIDENCE_STRUCTURE_PART,     /* the place of such a part in a fused value whose other
                                      * parts agree, without its values agreeing */
    NNP_EVIDENCE_DATAFLOW,           /* what the port module's counterpart reads or makes, where
                                      * the value it equals is read or made elsewhere */
    NNP_EVIDENCE_VALUE_TRANSPOSED,   /* the port's values are the reference's with its axes in
                                      * another order ([B, H, T, D] as [B, T, H, D], NCHW as
                                      * NHWC, [d, t] as [t, d]); the pair's adapters transpose
                                      * the reference's tensor */
    NNP_EVIDENCE_STRUCTURE_TRANSPOSED /* no value agrees: order, names and a shape that is the
                                       * other's with its axes permuted, one way only */
} nnp_evidence;
/* "name", "value-exact", "value", "value-last-row", "structure", "structure-last-row",
 * "value-part", "structure-part", "dataflow", "value-transposed", "structure-transposed". */
const char *nnp_evidence_name(nnp_evidence evidence);

typedef struct nnp_diff_pair {
    size_t ref, port;       /* record indices in the two dumps (port: the first part of a join) */
    nnp_verdict verdict;
    double atol, rtol;      /* the tolerances used */
    nnp_metrics metrics;    /* all zero for shape and dtype mismatches */
    bool aligned;           /* paired by automatic alignment rather than by name */
    uint32_t nparts;        /* port records joined into this pair by a concat rule (1: none) */
    const size_t *parts;    /* their indices, in joining order (parts[0] == port) */
    const char *adapters;   /* the adapters applied, as a rules file writes them
                             * ("transpose 1,0; ref select 1 -1"); NULL: compared as recorded */
    const char *problem;    /* why the pair could not be compared (an adapter that does not fit
                             * the tensor: verdict NNP_SHAPE_MISMATCH); NULL otherwise */
    nnp_dtype ref_dtype, port_dtype;         /* as compared: after casts */
    uint32_t ref_ndim, port_ndim;            /* as compared: after the adapters */
    const uint64_t *ref_shape, *port_shape;
    nnp_join_kind join;                      /* how the parts were joined (NONE: nparts 1) */
    int64_t join_axis;                       /* the axis they were joined along, as the rule
                                              * writes it (negative: from the end); 0 unless
                                              * join is a concat */
    uint32_t nadapters;                      /* adapters (transpose, ref select, ...) applied
                                              * besides the join; 0: the parts were joined as
                                              * recorded, so part k is rows of the joined tensor */
    nnp_evidence evidence;                   /* what the pair was made on */
    double confidence;                       /* how sure the pairing is, in [0, 1]: 1 for names
                                              * and equal bytes, 0.9-1 for values, at most 0.5
                                              * for structure alone */
} nnp_diff_pair;

/* A port record that the rules renamed onto a name another port record had already taken
 * (two renames that meet): it was left to alignment, or unmatched. */
typedef struct nnp_collision {
    size_t port;       /* the port record left over */
    size_t taken_by;   /* the port record that was paired under that name */
    const char *name;  /* the name both were renamed to */
} nnp_collision;

/* Who makes the first divergence, read on the port's side from what was measured. */
typedef enum nnp_culprit_kind {
    NNP_CULPRIT_NONE = 0,
    NNP_CULPRIT_MODULE, /* a module of the port computes a wrong value from values that agree */
    NNP_CULPRIT_CODE    /* code of a module that no module boundary of its own covers (a residual
                         * add, a position embedding, pooling in a parent's forward) */
} nnp_culprit_kind;

typedef struct nnp_culprit {
    nnp_culprit_kind kind;
    const char *port_module; /* MODULE: the module; CODE: the module whose own code errs, ""
                              * for the model's top level */
    const char *ref_module;  /* the module of the reference record that first diverges */
    int64_t after;           /* CODE: the port record that last agrees before the error; -1 */
    int64_t before;          /* CODE: the first port record the error shows in (or an input that
                              * no recorded module made and the reference has no partner for); -1 */
} nnp_culprit;

/* The result of a diff (declared above): read it through the accessors below. */

/* The pairs, in the reference's execution order: pair i < nnp_diff_pair_count. The pointer
 * lives as long as the diff. */
size_t nnp_diff_pair_count(const nnp_diff *diff);
const nnp_diff_pair *nnp_diff_pair_at(const nnp_diff *diff, size_t i);
/* Reference records with no port record, and port records with no reference record (and not
 * ignored by the rules), in execution order: the i-th one's record index (SIZE_MAX past the
 * count). */
size_t nnp_diff_unmatched_ref_count(const nnp_diff *diff);
size_t nnp_diff_unmatched_ref_at(const nnp_diff *diff, size_t i);
size_t nnp_diff_unmatched_port_count(const nnp_diff *diff);
size_t nnp_diff_unmatched_port_at(const nnp_diff *diff, size_t i);
/* Index into the pairs of the first FAIL or mismatch; -1: none. */
int64_t nnp_diff_first_divergence(const nnp_diff *diff);
/* Who makes the first divergence (docs/diff.md, "Culprit"); NULL when nothing diverges. Lives as
 * long as the diff and the port dump. */
const nnp_culprit *nnp_diff_culprit(const nnp_diff *diff);
/* Index into the pairs of the first pair that runs earlier on the port side than the pair
 * before it; -1: the same order. */
int64_t nnp_diff_order_violation(const nnp_diff *diff);
/* Index into the pairs of where NaN/Inf start: the first pair, in the port's execution order,
 * whose port side holds a NaN or Inf the reference's does not while the inputs recorded for
 * that module call (roles in0, in1, ...) are finite; -1: none. */
int64_t nnp_diff_nonfinite_origin(const nnp_diff *diff);
/* Pairs made by automatic alignment. */
size_t nnp_diff_aligned_count(const nnp_diff *diff);
/* Names of the port that several ranks of a rank capture hold and that no gather rule covers:
 * each was compared as its lowest rank's copy (docs/scale.md). */
size_t nnp_diff_rank0_default(const nnp_diff *diff);
/* Renames that met, in the port's order: collision i < nnp_diff_collision_count (NULL past
 * it), living as long as the diff. */
size_t nnp_diff_collision_count(const nnp_diff *diff);
const nnp_collision *nnp_diff_collision_at(const nnp_diff *diff, size_t i);

/* The parts of a model a record can belong to, in the order reports list them. */
typedef enum nnp_component_kind {
    NNP_COMPONENT_EMBEDDING = 0,
    NNP_COMPONENT_ATTENTION,
    NNP_COMPONENT_MLP,
    NNP_COMPONENT_NORMALIZATION,
    NNP_COMPONENT_HEAD,
    NNP_COMPONENT_OTHER,
    NNP_COMPONENT_COUNT
} nnp_component_kind;

/* "embedding", "attention", "mlp", "normalization", "head", "other"; "?" outside the enum.
 * These are also the names `component` rules take. */
const char *nnp_component_name(nnp_component_kind kind);
/* The component a record belongs to: the last `component REGEX NAME` rule matching its name (the
 * reference's record name; NULL rules: none), else from its module type and then its name
 * (docs/diff.md lists the patterns). */
nnp_component_kind nnp_component_kind_of(const nnp_rules *rules, const char *name,
                                         const char *module_type);
/* The same as names: nnp_component_name(nnp_component_kind_of(rules, name, module_type)), with
 * no rules for nnp_component. */
const char *nnp_component(const char *name, const char *module_type);
const char *nnp_component_of(const nnp_rules *rules, const char *name, const char *module_type);

/* Pair `port`'s records with `ref`'s by name (after the rules; repeated calls pair by call index
 * through their "#<call>" names), then what is left by automatic alignment (execution order,
 * role, shape, dtype class and name similarity); adapt the pairs the rules say, compare every
 * pair and check the execution order. */
nnp_status nnp_diff_dumps(nnp_dump *ref, nnp_dump *port, const nnp_diff_options *opts,
                          nnp_diff **out);
void nnp_diff_free(nnp_diff *diff);

/* ---------------------------------------------------------------------------------------------
 * Where a failing pair's error lies, and what explains it (docs/diff.md, "Where and hints")
 *
 * For every pair with verdict NNP_FAIL the diff reads the pair once more, all of it when it
 * holds at most 65536 elements, else a seeded sample of that many (runs of 512 elements
 * spread over the tensor), and keeps:
 * - a profile per axis: each index's share of the squared error and its count of elements
 *   outside tolerance, with one line saying where the error concentrates ("all 784 failing
 *   elements lie in axis 1 index 7 (channel 7)", "the error grows along axis 1 (token) from
 *   index 12 on"). Axes are named from the reference record's module type where it says their
 *   layout (NCHW for convolutions and 2-d norms, batch x token x feature for Linear and
 *   norms on 3-d input, batch x head x query x key for attention maps), else "axis k".
 * - hints: simple explanations tested against the pair (at most 8192 elements of where the
 *   error lies), each kept only when it fits: a scale, a sign flip, a constant or a bias along
 *   an axis, two axes swapped, indices or blocks of indices permuted along an axis, a shift
 *   along an axis, the rounding of a narrower float type, clipping, zeros, new NaN/Inf, the
 *   values of another reference record. A pair whose shapes are a permutation of each other
 *   (verdict NNP_SHAPE_MISMATCH) is tested for permuted axes only.
 * ------------------------------------------------------------------------------------------- */

typedef struct nnp_axis_profile {
    const char *name;       /* "channel", "token", "head", ... or "axis 2" */
    uint64_t size;          /* indices along the axis */
    const double *sq_share; /* per index: its share of the squared error of the finite elements
                             * read (they sum to 1; all 0 when that error is 0) */
    const uint64_t *fail;   /* per index: elements read that are outside tolerance */
} nnp_axis_profile;

typedef struct nnp_profile {
    uint32_t ndim;
    const nnp_axis_profile *axes; /* ndim of them, in the order of the reference's shape */
    uint64_t elements;            /* elements read: all of the pair's, or a sample */
    bool sampled;                 /* elements < the pair's count */
    uint64_t fail;                /* of the elements read, those outside tolerance */
    const char *where;            /* one line: where the error concentrates */
} nnp_profile;

typedef enum nnp_hint_kind {
    NNP_HINT_SCALE = 0,    /* port = value x reference */
    NNP_HINT_SIGN,         /* port = -reference */
    NNP_HINT_OFFSET,       /* port = reference + b: a constant (axis -1) or one b per index of
                            * `axis` (a missing or extra bias); value: the mean |b| */
    NNP_HINT_AXES_SWAPPED, /* the port holds the reference with `axis` and `axis2` swapped (or,
                            * for permuted shapes, with its axes permuted: see the text) */
    NNP_HINT_PERMUTED,     /* indices along `axis` are permuted, in blocks of `value` indices */
    NNP_HINT_SHIFT,        /* port index i along `axis` holds reference index i - value */
    NNP_HINT_PRECISION,    /* within a few ulps of a narrower float type's rounding of the
                            * reference; value: the error's root mean square in those ulps */
    NNP_HINT_CLIP,         /* the port is the reference clipped at `value` (see the text) */
    NNP_HINT_ZEROS,        /* zeros where the reference is not: a part left out */
    NNP_HINT_NONFINITE,    /* NaN or Inf where the reference is finite; value: how many */
    NNP_HINT_OTHER_RECORD  /* the port holds another reference record's values (records
                            * swapped, or wired to the wrong input); value: its record index */
} nnp_hint_kind;

typedef struct nnp_hint {
    nnp_hint_kind kind;
    double fit;          /* in [0, 1]: the share of the squared error it explains, or of the
                          * failing elements it accounts for (zeros, clipping, precision, NaN) */
    int32_t axis, axis2; /* the axes it acts along; -1: none */
    double value;        /* as the kind says */
    const char *text;    /* one line for a person, e.g. "port = 1.5 x reference in axis 1
                          * index 7 (channel 7)" */
} nnp_hint;

/* "scale", "sign", "offset", "axes-swapped", "permuted", "shift", "precision", "clip", "zeros",
 * "nonfinite", "other-record"; "?" outside the enum. */
const char *nnp_hint_kind_name(nnp_hint_kind kind);
/* The profile of pair i; NULL when it has none (it does not fail, or options.no_explain; a
 * distributed diff explains on process 0, as one process does). Lives as long as the diff. */
const nnp_profile *nnp_diff_profile(const nnp_diff *diff, size_t pair);
/* The hints that fit pair i, best first: hint k < nnp_diff_hint_count (NULL past it). */
size_t nnp_diff_hint_count(const nnp_diff *diff, size_t pair);
const nnp_hint *nnp_diff_hint_at(const nnp_diff *diff, size_t pair, size_t i);

/* ---------------------------------------------------------------------------------------------
 * Attribution: the layer's own error, or one it inherits (docs/run.md)
 *
 * Two diffs against one reference: the standard one (the port run as it is) and the injected one
 * (the port run again with each layer fed the reference's inputs, nnp_tap_inject). A record that
 * still fails on the reference's inputs has an error of its own; one that fails only in the
 * standard run inherits its error from upstream. Every reference record gets one label:
 *   own        the injected pair fails (whatever the standard one does)
 *   missing    otherwise, the standard diff did not pair it
 *   ok         otherwise, the standard pair passes or warns
 *   inherited  otherwise (the standard pair fails), the injected one passes or warns
 *   unknown    otherwise: it fails, and the injected diff did not pair it
 * A pair "fails" with verdict fail, shape or dtype. A layer is one module call: the records of
 * one module path and call index, or a record alone when its dump has no module path.
 *
 * With a baseline (nnp_attribute_baseline) a record may also be labelled
 *   precision  it would be own, inherited or unknown, but the port differs there no more than
 *              the reference does when it computes in the port's precision
 * ------------------------------------------------------------------------------------------- */

typedef enum nnp_label {
    NNP_LABEL_OK = 0,
    NNP_LABEL_OWN,
    NNP_LABEL_INHERITED,
    NNP_LABEL_UNKNOWN,
    NNP_LABEL_MISSING,
    NNP_LABEL_COUNT,     /* the labels nnp_attribute gives: the size of summary.labels */
    NNP_LABEL_PRECISION  /* only nnp_attribute_baseline gives it; counted in summary.precision */
} nnp_label;

/* "ok", "own", "inherited", "unknown", "missing", "precision"; "?" for other values. */
const char *nnp_label_name(nnp_label label);

typedef struct nnp_attribution nnp_attribution;

typedef struct nnp_attribution_row {
    size_t ref;          /* the reference record; row i is record i */
    nnp_label label;
    int64_t std_pair;    /* index into the standard diff's pairs; -1: not paired there */
    int64_t inj_pair;    /* index into the injected diff's pairs; -1: not paired there (or no
                          * injected diff) */
    double ratio;        /* injected rel-L2 / standard rel-L2: about 1 where the error is all
                          * the layer's own, near 0 where it is all inherited; +inf when only
                          * the standard rel-L2 is 0; NaN when both are, or when either pair is
                          * missing or was not compared (a shape or dtype mismatch) */
    /* the baseline's pairs of this record (nnp_attribute_baseline), indices into
     * its standard and injected diffs; -1: not paired there, or no baseline */
    int64_t base_std_pair, base_inj_pair;
    /* the floor of the injected scenario: the largest rel-L2 and max-abs of the injected
     * baseline over the span the port's module computes; NaN: none */
    double inj_floor_rel_l2, inj_floor_max_abs;
} nnp_attribution_row;

typedef struct nnp_attribution_summary {
    size_t labels[NNP_LABEL_COUNT]; /* how many records have each label */
    int64_t first_divergence; /* the record of the standard diff's first divergence; -1: none */
    int64_t first_own;        /* the first record labelled own; -1: none */
    int64_t other_own;        /* the first record labelled own outside the first divergence's
                               * layer (with no divergence: first_own); -1: none */
    size_t own_layers;        /* layers with a record labelled own */
    size_t inherited_after;   /* layers that only inherit the first divergence's error: those,
                               * but the first divergence's, with no record labelled own and a
                               * record labelled inherited after the first divergence and before
                               * the first own record of another layer (0 with no divergence) */
    size_t precision;         /* records labelled precision (only with a baseline) */
} nnp_attribution_summary;

/* Label every record of `ref` from the standard diff `std` and the injected diff `inj` (NULL:
 * no injection run; then no record is own or inherited), both made with `ref` as the reference.
 * A pair that names a record `ref` does not hold is NNP_ERR_ARG. On failure *out is NULL. */
nnp_status nnp_attribute(const nnp_dump *ref, const nnp_diff *std, const nnp_diff *inj,
                         nnp_attribution **out);
/* The same with a noise floor: `base_std` and `base_inj` diff the reference (`ref`) against
 * the baseline, the reference run again in the port's precision (the PyTorch bridge's
 * NNPARITY_BASELINE=bf16), as it is and with every module fed the reference's inputs
 * (base_inj NULL: base_std stands for both scenarios, a looser floor). `port` and `injected`
 * are the port's captures that `std` and `inj` were made from (`injected` NULL with `inj`).
 *
 * A record that nnp_attribute labels own, inherited or unknown is labelled precision instead
 * when each of its failing pairs was compared, introduces no NaN or infinity beyond the
 * baseline's, and has a rel-L2 and a max-abs each at most NNP_PRECISION_FACTOR times the
 * floor's: in the standard scenario the baseline's error at that record, under injection the
 * largest baseline error over the reference records that the port's module there computes
 * from its injected inputs (a port module may span several of the reference's: a convolution
 * with its BatchNorm folded in). The port then differs no more than the reference computed in
 * that precision does. The summary's first_divergence is the first record whose standard pair
 * fails and which is not labelled precision, and nnp_attribution_culprit says who makes it. */
#define NNP_PRECISION_FACTOR 4.0
nnp_status nnp_attribute_baseline(const nnp_dump *ref, const nnp_dump *port,
                                  const nnp_dump *injected, const nnp_diff *std,
                                  const nnp_diff *inj, const nnp_diff *base_std,
                                  const nnp_diff *base_inj, nnp_attribution **out);
/* With a baseline: who makes the first divergence beyond the noise, as nnp_diff_culprit says
 * for the standard diff's own first divergence, the pairs of records labelled precision
 * counting as agreeing. NULL without a baseline, or when nothing diverges beyond the noise.
 * Lives as long as the attribution and the port dump. */
const nnp_culprit *nnp_attribution_culprit(const nnp_attribution *a);
/* Rows, one per reference record in execution order (NULL for i >= count), and the summary;
 * pointers into the attribution, valid until it is freed. */
size_t nnp_attribution_count(const nnp_attribution *a);
const nnp_attribution_row *nnp_attribution_row_at(const nnp_attribution *a, size_t i);
const nnp_attribution_summary *nnp_attribution_summary_of(const nnp_attribution *a);
/* NULL is allowed. */
void nnp_attribution_free(nnp_attribution *a);

/* ---------------------------------------------------------------------------------------------
 * Distributed diff: the processes of one job (MPI ranks, say) share the comparing
 *
 * Every process opens both dumps (headers only: data is mapped, and each process reads only
 * the chunks it compares) and pairs them the same way; the pairs, and the chunks of large
 * pairs, are split among the processes by bytes, in contiguous ranges; process 0 merges the
 * chunks' partial results in the order a single process merges them, so its diff equals
 * nnp_diff_dumps's bit for bit (docs/scale.md). The transport is the caller's: `nnparity diff
 * --mpi` fills it from an MPI plugin, and the library itself never links MPI. Processes must
 * run the same architecture (partial results travel as raw bytes).
 * ------------------------------------------------------------------------------------------- */

typedef struct nnp_comm {
    int rank, size; /* this process, of `size` (size 1: a plain diff) */
    void *ctx;      /* the transport's own */
    /* Every process calls it with n bytes at `send`; at process 0, *all gets a new buffer
     * (malloc'ed: the library free()s it) of every process's bytes, rank after rank, and
     * lens[r] (size entries) their lengths; elsewhere *all is NULL. Returns 0, or non-zero
     * when the transport failed. */
    int (*gather)(void *ctx, const void *send, uint64_t n, void **all, uint64_t *lens);
    /* Every process calls it: process 0's n bytes at buf go to buf on every process. */
    int (*bcast)(void *ctx, void *buf, uint64_t n);
} nnp_comm;

/* Every process passes its own status (its message, nnp_last_error(), with it); every process
 * gets the first failure in rank order, with that process's message ("rank R: " before it when
 * it is another process's), or NNP_OK when all succeeded. A transport failure is
 * NNP_ERR_INTERNAL. */
nnp_status nnp_comm_agree(const nnp_comm *comm, nnp_status status);

/* nnp_diff_dumps shared among comm->size processes: every process calls it with the same
 * dumps and options; process 0 gets the diff in *out, the others NULL. Every process returns
 * the same status (nnp_comm_agree). opts->progress is not called. */
nnp_status nnp_diff_dumps_comm(nnp_dump *ref, nnp_dump *port, const nnp_diff_options *opts,
                               const nnp_comm *comm, nnp_diff **out);

/* The pairs automatic alignment made, as rules (rename lines, generalized where that is safe)
 * that map the port's names, as the given rules left them, onto the reference's; *text is a new
 * string (release with nnp_free), "" when nothing was aligned. Appended to the rules the diff
 * ran with, they pair the same records by name. */
nnp_status nnp_diff_aligned_rules(const nnp_diff *diff, const nnp_dump *ref, char **text);

/* ---------------------------------------------------------------------------------------------
 * Capture and injection
 *
 * One capture session per process records every tapped tensor into a dump, in the order the taps
 * happen, and/or feeds a reference dump's tensors into the engine's layer inputs (injection), so
 * that each layer can be compared on the reference's inputs. A session is opened explicitly or,
 * with no code change, from the environment on the first tap:
 *     NNPARITY_CAPTURE=port.safetensors   record every tap
 *     NNPARITY_INJECT=ref.safetensors     feed the reference's inputs to nnp_tap_input
 *     NNPARITY_RULES=port.rules           map this engine's names onto the reference's
 * (an environment-opened session is finished when the process exits normally). An explicit
 * nnp_capture_open before the first tap takes the environment's place; once a tap has opened the
 * environment's session, an explicit open fails as any second open does. If the environment's
 * session cannot start, the library says why in one line on stderr (there is no caller to tell):
 * the only place it prints. With no session
 * the tap functions return NNP_OK at once: a few nanoseconds. Taps may come from many threads at
 * once; they are serialized, so the recorded order is one consistent global order.
 * docs/c-api.md shows how a C or C++ engine taps; nnparity.hpp wraps this API for C++ (sessions,
 * dumps, rules and diffs as scoped objects, failures as exceptions).
 *
 * Records are named "<name>/<role>", with "#<call>" for calls after the first, where <name> is
 * the module path or tap name and the call index counts the taps of each (name, role) from 0.
 * A killed process leaves "<path>.partial" and "<path>.journal": nnparity reads the partial dump
 * as it is, and nnp_recover (`nnparity recover`) turns it into a normal file. Dumps are safe
 * against the process dying, not against the machine losing power: nothing is fsync'ed.
 * ------------------------------------------------------------------------------------------- */

typedef struct nnp_capture_options {
    size_t size;              /* sizeof(nnp_capture_options): set by nnp_capture_options_init */
    const char *inject_path;  /* reference dump to inject from; NULL: no injection */
    const char *rules_path;   /* rules mapping this engine's record names to the reference's */
    size_t expected_records;  /* sizes the header room (0: unknown) */
    /* This process's rank among world_size processes of one distributed run. world_size 0:
     * from the environment the launchers set (RANK/WORLD_SIZE, OMPI_COMM_WORLD_RANK/_SIZE,
     * PMI_RANK/PMI_SIZE, SLURM_PROCID/SLURM_STEP_NUM_TASKS - an srun step's, not an sbatch
     * script's - in that order; none: one process). When there are several ranks, or the
     * capture path is a directory or ends with '/', the path names a directory (made if
     * missing) and this rank records into
     * "<path>/rank-RRRRR-of-NNNNN.safetensors"; opening the directory reads every rank's file
     * as one dump (docs/scale.md). */
    int rank, world_size;
} nnp_capture_options;

/* size set, no injection, no rules, ranks from the environment. */
void nnp_capture_options_init(nnp_capture_options *opts);

/* Open the process's session: record into `path` (NULL: inject only) and inject as `opts` says
 * (NULL: record only). Fails if a session is already open. The injection file and rules are
 * read and checked here, before any layer runs. */
nnp_status nnp_capture_open(const char *path, const nnp_capture_options *opts);

/* Finish the session: the dump is written and renamed into place. NNP_OK when none is open. */
nnp_status nnp_capture_close(void);

/* Whether a session is open (opening one from the environment if it says so): 1 recording,
 * 2 injecting, 3 both, 0 neither. */
int nnp_capture_active(void);

/* One tapped tensor. */
typedef struct nnp_tap_desc {
    const char *name;        /* module path or tap name */
    const char *role;        /* "in0", "out0", "grad_out0", "attn_probs", ... */
    const char *module_type; /* e.g. "Linear"; may be NULL */
    nnp_dtype dtype;
    uint32_t ndim;
    const uint64_t *shape;
} nnp_tap_desc;

/* Record `data` (little-endian, C-contiguous; may be NULL when the shape holds no element). */
nnp_status nnp_tap_record(const nnp_tap_desc *desc, const void *data);

/* nnp_tap_record, and *number (when not NULL) gets the record's number in this capture, for
 * nnp_tap_record_same; UINT64_MAX when nothing was recorded (no session, or one that only
 * injects). */
nnp_status nnp_tap_record_numbered(const nnp_tap_desc *desc, const void *data, uint64_t *number);

/* Record a tensor that is the tensor of record `number` (from nnp_tap_record_numbered) of this
 * capture: the same buffer, unchanged since (a layer's output that is the next layer's input).
 * It becomes a record of its own, whose data is that record's; its bytes are not written or
 * fingerprinted again, and the dump stores the tensor once (docs/dump-format.md, "same_as").
 * The caller vouches that the values are unchanged: nothing is read to check it. desc's dtype
 * and shape must be that record's (NNP_ERR_ARG otherwise, and for a number not yet recorded).
 * The PyTorch bridge does this for a tensor object given again at the same version. */
nnp_status nnp_tap_record_same(const nnp_tap_desc *desc, uint64_t number);

/* A layer input: when injecting, first overwrite `data` in place with the reference record of the
 * same name, role and call (after the rules), converted to desc->dtype (any dtype converts to
 * F64, F32, F16 or BF16, rounding to nearest even; integer and bool destinations need the same
 * dtype); then record it. A shape that differs from the reference's is NNP_ERR_ARG naming both
 * shapes, and `data` is left as it was; a record the reference does not hold is NNP_ERR_NOT_FOUND
 * (data untouched, still recorded). */
nnp_status nnp_tap_inject(const nnp_tap_desc *desc, void *data);

/* Shorthands for nnp_tap_record / nnp_tap_inject without a module type. */
nnp_status nnp_tap(const char *name, const char *role, nnp_dtype dtype, uint32_t ndim,
                   const uint64_t *shape, const void *data);
nnp_status nnp_tap_input(const char *name, const char *role, nnp_dtype dtype, uint32_t ndim,
                         const uint64_t *shape, void *data);
/* A layer's parameter (or buffer), recorded as `<name>/param:<param>` the first time the
 * session sees it and not again, however often the layer runs: what the layer computes with, for
 * a diff that names a wrong weight and a reproducer that holds it (the PyTorch bridge records
 * the same with params=True). Never injected. */
nnp_status nnp_tap_param(const char *name, const char *param, nnp_dtype dtype, uint32_t ndim,
                         const uint64_t *shape, const void *data);

/* The longest tap name, in bytes without the terminating NUL, that the name-formatting taps
 * below build. */
#define NNP_TAP_NAME_MAX 1024

/* The taps above with the name formatted from `name_fmt` and its arguments as printf does,
 * which spares a port its own buffer in every layer:
 *     nnp_tapf("out0", NNP_F32, 2, shape, q, "blk.%d.attn_q", layer);
 * The format and its arguments come last (gcc and clang check them as they check printf's).
 * With no session they return NNP_OK before formatting anything, as cheap as nnp_tap. A name
 * longer than NNP_TAP_NAME_MAX bytes is NNP_ERR_ARG, whose message names the limit and the
 * name's start: a name is never cut short, since two long names cut alike would be one record.
 * The desc forms (nnp_tap_recordf, nnp_tap_injectf) take the role, module type, dtype and
 * shape from `desc` and do not read desc->name. The va_list forms serve callers that are
 * variadic themselves (a port's own tap macro, the C++ wrappers of nnparity.hpp); they leave
 * `args` as vsnprintf does (va_end is the caller's). */
nnp_status nnp_tapf(const char *role, nnp_dtype dtype, uint32_t ndim, const uint64_t *shape,
                    const void *data, const char *name_fmt, ...) NNP_PRINTF(6, 7);
nnp_status nnp_tap_inputf(const char *role, nnp_dtype dtype, uint32_t ndim,
                          const uint64_t *shape, void *data, const char *name_fmt, ...)
    NNP_PRINTF(6, 7);
nnp_status nnp_tap_recordf(const nnp_tap_desc *desc, const void *data, const char *name_fmt,
                           ...) NNP_PRINTF(3, 4);
nnp_status nnp_tap_injectf(const nnp_tap_desc *desc, void *data, const char *name_fmt, ...)
    NNP_PRINTF(3, 4);
nnp_status nnp_vtap_recordf(const nnp_tap_desc *desc, const void *data, const char *name_fmt,
                            va_list args) NNP_PRINTF(3, 0);
nnp_status nnp_vtap_injectf(const nnp_tap_desc *desc, void *data, const char *name_fmt,
                            va_list args) NNP_PRINTF(3, 0);

/* Add a string-to-string pair to the session's dump (its safetensors __metadata__, read back
 * with nnp_dump_meta_get): the engine's name and version, the model file, the prompt, a seed.
 * Setting a key again replaces its value. Keys starting with "nnparity." are nnparity's own
 * and refused (NNP_ERR_ARG), as are NULL and text that is not UTF-8, whether or not a session
 * is open, so that such a mistake shows on the first run and not only on a captured one. With
 * no session, or one that only injects, a valid pair is NNP_OK and goes nowhere; a session
 * opened later does not see it. A pair set before a process is killed survives in the partial
 * dump's journal, and nnp_recover keeps it. */
nnp_status nnp_capture_set_meta(const char *key, const char *value);

/* Convert n elements between dtypes: any dtype to F64, F32, F16 or BF16 (round to nearest even;
 * values beyond the range become infinities), or between identical dtypes. Integers beyond 2^53
 * are rounded to double first, as torch does, so they may round twice on the way to F16/BF16. */
nnp_status nnp_convert(nnp_dtype from, const void *src, size_t n, nnp_dtype to, void *dst);

/* ---------------------------------------------------------------------------------------------
 * Statistics
 * ------------------------------------------------------------------------------------------- */

typedef struct nnp_tensor_stats {
    uint64_t count;        /* elements */
    uint64_t finite;       /* elements that are neither NaN nor infinite */
    uint64_t nan;
    uint64_t pos_inf, neg_inf;
    uint64_t zeros;
    /* Over the finite elements only; NaN when there are none. std is the population standard
     * deviation (divisor n), as numpy's default. */
    double min, max, mean, std, abs_max;
} nnp_tensor_stats;

/* Statistics of records idx[0..n) of `dump` into out[0..n), in one streaming pass, threaded over
 * records and over chunks of large records. `threads` <= 0 means one per online CPU. The result
 * does not depend on the number of threads. */
nnp_status nnp_stats_compute(nnp_dump *dump, const size_t *idx, size_t n, int threads,
                             nnp_tensor_stats *out);

/* ---------------------------------------------------------------------------------------------
 * Fingerprints: a hash of each record's bytes and a small random projection of its values, from
 * which the rel-L2 and cosine between two records are estimated without reading them again
 * (docs/sketch.md). A capture stores them in its dump; for other records they are computed.
 * ------------------------------------------------------------------------------------------- */

#define NNP_SKETCH_WIDTH 32

/* The projection of a stream of values and its norm and sum (NaN and infinite values count as
 * 0); `count` is the stream's length: only streams of one length compare. */
typedef struct nnp_sketch_part {
    float proj[NNP_SKETCH_WIDTH];
    double norm, sum;
    uint64_t count;
} nnp_sketch_part;

typedef struct nnp_sketch {
    uint64_t hash;      /* of the dtype, the shape and the bytes: equal hashes, one value */
    uint64_t nonfinite; /* NaN and infinite elements */
    nnp_sketch_part all; /* every element in C order */
    bool has_last;       /* 2 or more axes and 2 or more rows on the one before the last: */
    nnp_sketch_part last; /* the last row along that axis, for every leading index */
} nnp_sketch;

/* The fingerprints of records idx[0..n) of `dump` into out[0..n): those its file stores
 * (decoded on first use, then kept with the dump), the others computed from the data on up to
 * `threads` threads (<= 0: one per online CPU). A stored value that does not fit its records is
 * NNP_ERR_FORMAT naming the file and the metadata key. */
nnp_status nnp_dump_sketches(nnp_dump *dump, const size_t *idx, size_t n, int threads,
                             nnp_sketch *out);

/* ---------------------------------------------------------------------------------------------
 * Relevance: which input tokens an output relied on, from recorded attention maps
 * (docs/relevance.md)
 *
 * Each layer gives attention probabilities of shape [heads, N, N] (post-softmax, rows are
 * queries) and, for the gradient methods, their gradients of the same shape. Every method builds
 * one N x N matrix per layer and chains them from the first layer used to the last:
 *   rollout         F = heads fused by mean, max or min; A' = rownorm(0.5 F + 0.5 I);
 *                   J = A'_L ... A'_s (Abnar & Zuidema 2020)
 *   grad_rollout    the same with F = max(0, mean over heads of grad * attn)
 *   chefer          Abar = mean over heads of max(0, grad * attn); R = (I + Abar_L) ... (I +
 *                   Abar_s), i.e. R <- R + Abar R layer by layer from R = I (Chefer et al. 2021)
 *   chefer_rollout  rollout with F = Abar
 * Values are converted exactly to double and accumulated in double. Only the rows asked for are
 * computed: the chain is multiplied from the left, so one row costs O(layers * N^2), not N^3.
 * ------------------------------------------------------------------------------------------- */

typedef enum nnp_relevance_method {
    NNP_REL_ROLLOUT = 0,
    NNP_REL_GRAD_ROLLOUT,
    NNP_REL_CHEFER,
    NNP_REL_CHEFER_ROLLOUT
} nnp_relevance_method;

typedef enum nnp_head_fusion {
    NNP_FUSION_MEAN = 0,
    NNP_FUSION_MAX,
    NNP_FUSION_MIN
} nnp_head_fusion;

/* One layer: `heads` maps of n x n elements of `dtype` (a float dtype), C order, rows are
 * queries; `grad` (NULL: none) holds their gradients in the same layout. */
typedef struct nnp_attn_layer {
    const char *name;       /* the attention record, for messages */
    nnp_dtype dtype;
    const void *attn;
    const char *grad_name;  /* the gradient record (NULL: none) */
    nnp_dtype grad_dtype;
    const void *grad;
    uint64_t heads, n;
    size_t attn_rec, grad_rec; /* record indices in the dump (SIZE_MAX: not from a dump) */
} nnp_attn_layer;

/* The layers of `dump`: the records whose name matches `attn_pattern` (a POSIX extended regex,
 * searched anywhere in the name as `nnparity ls` prints it), in execution order. Each must be a
 * float tensor of shape [heads, N, N], [1, heads, N, N] or [N, N], all of the same shape, and
 * none may be a gradient record (role grad_*). With `grads`, each layer also gets its gradient:
 * with `grad_pattern` NULL, the record "<module>/grad_<role>" of the same call (what a tap with
 * gradients records); otherwise the records matching `grad_pattern`, one per layer, paired by
 * name when every layer finds exactly one so (what is left of both names once each pattern's
 * match and the separators beside it are taken out; then the same module, call and role
 * grad_<role>), else in reverse execution order (backward visits the last layer first).
 * *layers is a new array of *count layers (release with nnp_free) that points into the dump.
 * No match, a count or shape mismatch, a non-float dtype or a bad regex is NNP_ERR_ARG or
 * NNP_ERR_NOT_FOUND with a message naming the record. *paired_by_name (may be NULL) tells how
 * the gradients were paired. */
nnp_status nnp_attn_layers_find(nnp_dump *dump, const char *attn_pattern,
                                const char *grad_pattern, bool grads, nnp_attn_layer **layers,
                                size_t *count, bool *paired_by_name);

typedef struct nnp_relevance_options {
    size_t size;            /* sizeof(nnp_relevance_options): set by nnp_relevance_options_init */
    nnp_relevance_method method;
    nnp_head_fusion fusion; /* rollout only: the others fuse by their own rule */
    double discard;         /* rollout methods: zero the floor(discard * N * N) smallest entries
                             * of F (ties: lower flat index first), but never F[0][0]; 0 <= d < 1 */
    size_t start_layer;     /* the first layer used (0-based); the ones before it are skipped */
    int threads;            /* <= 0: one per CPU */
} nnp_relevance_options;

/* size set, rollout fused by mean, nothing discarded, from layer 0, threads 0. */
void nnp_relevance_options_init(nnp_relevance_options *opts);

/* Rows rows[0..nrows) of the chained matrix (J or R above, nothing zeroed) into
 * out[nrows * n]. Every layer must have the same n; the gradient methods need every layer's
 * grad. A NaN or Inf in a map is NNP_ERR_ARG naming the record and [head, row, column]. */
nnp_status nnp_relevance_rows(const nnp_attn_layer *layers, size_t nlayers,
                              const nnp_relevance_options *opts, const uint64_t *rows,
                              size_t nrows, double *out);

/* The relevance vector of query row `query`: r = row `query` of the chained matrix, with
 * r[query] = 0 for chefer (its identity start says nothing about the input). r holds n. */
nnp_status nnp_relevance(const nnp_attn_layer *layers, size_t nlayers,
                         const nnp_relevance_options *opts, uint64_t query, double *r);

/* The 4 ViT patches (row-major indices into an h x w grid, h and w even) that pixel-shuffle
 * token `token` of one tile was made from, as an InternVL-style projector with downsample 0.5
 * does it: version 2 takes token t to i = t / (w/2), j = t % (w/2); version 1 (no final permute)
 * to i = t % (h/2), j = t / (h/2); the patches are (2i+m, 2j+k) for m, k in {0, 1}, in that
 * order. */
nnp_status nnp_pixel_shuffle_patches(int version, uint64_t h, uint64_t w, uint64_t token,
                                     uint64_t patches[4]);

/* Spread ntokens token values (a whole number of tiles of (h/2)(w/2) tokens each) over their
 * patches: grid[tiles * h * w], each patch the value of its token (split: a quarter of it). */
nnp_status nnp_backmap(int version, bool split, const double *tokens, uint64_t ntokens,
                       uint64_t h, uint64_t w, double *grid);

typedef enum nnp_norm {
    NNP_NORM_MIN_MAX = 0, /* (x - min) / (max - min); all zeros when max == min */
    NNP_NORM_MAX,         /* x / max; all zeros when max <= 0 */
    NNP_NORM_NONE
} nnp_norm;

/* Normalize n finite values in place, after clipping them from above at their
 * `clip_percentile`-th percentile (linear interpolation between sorted values, as numpy's
 * default; 0: no clipping, else 0 < p <= 100). */
nnp_status nnp_relevance_normalize(double *x, size_t n, nnp_norm norm, double clip_percentile);

/* Bilinear resize of an sh x sw map to dh x dw with half-pixel centres (source coordinate
 * (d + 0.5) * s / d' - 0.5, clamped to the map), as torch's interpolate with
 * align_corners=False. */
nnp_status nnp_resize_bilinear(const double *src, uint64_t sh, uint64_t sw, double *dst,
                               uint64_t dh, uint64_t dw);

#ifdef __cplusplus
}
#endif

#endif /* NNPARITY_H */
