/*
 * torch_pt.c - reads PyTorch checkpoints as torch.save writes them since torch 1.6 (.pt, .pth,
 * .bin): a zip holding <archive>/data.pkl, a pickle of the saved object, and one member
 * <archive>/data/<key> per tensor storage.
 *
 * A pickle is a program: Python's pickle imports and calls whatever it names, so loading an
 * untrusted checkpoint that way runs the author's code. This reader runs data.pkl on a machine
 * of its own instead. It knows an allowlist of opcodes and of globals, and builds plain values
 * only: dicts, lists, tuples, numbers, strings, storages and tensors (storage, offset, shape,
 * strides). A global is looked up by name in a table and never imported or called; anything
 * not in the table is refused, naming it. Every value, container item and memo slot costs at
 * least one opcode byte, so memory stays proportional to the pickle's size; nesting is capped.
 *
 * The object is then flattened into records: nested dicts, lists and tuples give dotted names
 * ("layer.0.weight"), plain leaves (numbers, strings, None) become metadata under their names,
 * and a bare tensor takes the file's stem. A contiguous tensor points into its storage member
 * in the mapping. Any other view (transposed, strided, or a slice of a shared storage) gets a
 * loader that gathers its elements into C order on its first nnp_dump_data.
 *
 * The pre-1.6 format (a bare sequence of pickles) is recognised and refused with advice.
 */
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/torch_pt.h"

/* Containers nested deeper than this (and marks open at once) are refused: real checkpoints
 * nest a few levels, and flattening recurses once per level. */
#define MAX_DEPTH 100
/* torch's own limit on a tensor's dimensions. */
#define MAX_DIMS 64
/* A record name longer than this is refused. */
#define MAX_NAME 4096
/* Plain leaves kept as metadata: at most this many, strings at most this long. */
#define MAX_META 4096
#define MAX_META_STRING 1024
/* Longest module or name of a GLOBAL opcode. */
#define MAX_GLOBAL_PART 256

/* ---- pickle opcodes (Python's Lib/pickle.py names them) ---- */

enum {
    OP_MARK = '(', OP_STOP = '.', OP_BININT = 'J', OP_BININT1 = 'K', OP_BININT2 = 'M',
    OP_NONE = 'N', OP_BINPERSID = 'Q', OP_REDUCE = 'R', OP_BINBYTES = 'B',
    OP_SHORT_BINBYTES = 'C', OP_BINUNICODE = 'X', OP_APPEND = 'a', OP_BUILD = 'b',
    OP_GLOBAL = 'c', OP_EMPTY_DICT = '}', OP_APPENDS = 'e', OP_BINGET = 'h', OP_LONG_BINGET = 'j',
    OP_EMPTY_LIST = ']', OP_BINPUT = 'q', OP_LONG_BINPUT = 'r', OP_SETITEM = 's', OP_TUPLE = 't',
    OP_EMPTY_TUPLE = ')', OP_SETITEMS = 'u', OP_BINFLOAT = 'G',
    OP_PROTO = 0x80, OP_TUPLE1 = 0x85, OP_TUPLE2 = 0x86, OP_TUPLE3 = 0x87, OP_NEWTRUE = 0x88,
    OP_NEWFALSE = 0x89, OP_LONG1 = 0x8a, OP_SHORT_BINUNICODE = 0x8c, OP_BINUNICODE8 = 0x8d,
    OP_BINBYTES8 = 0x8e, OP_STACK_GLOBAL = 0x93, OP_MEMOIZE = 0x94, OP_FRAME = 0x95
};

/* Names of every opcode of protocols 0-5, for messages (allowed or not). */
static const char *opcode_name(unsigned op)
{
    switch (op) {
    case '(': return "MARK";
    case '.': return "STOP";
    case '0': return "POP";
    case '1': return "POP_MARK";
    case '2': return "DUP";
    case 'F': return "FLOAT";
    case 'I': return "INT";
    case 'J': return "BININT";
    case 'K': return "BININT1";
    case 'L': return "LONG";
    case 'M': return "BININT2";
    case 'N': return "NONE";
    case 'P': return "PERSID";
    case 'Q': return "BINPERSID";
    case 'R': return "REDUCE";
    case 'S': return "STRING";
    case 'T': return "BINSTRING";
    case 'U': return "SHORT_BINSTRING";
    case 'V': return "UNICODE";
    case 'X': return "BINUNICODE";
    case 'a': return "APPEND";
    case 'b': return "BUILD";
    case 'c': return "GLOBAL";
    case 'd': return "DICT";
    case '}': return "EMPTY_DICT";
    case 'e': return "APPENDS";
    case 'g': return "GET";
    case 'h': return "BINGET";
    case 'i': return "INST";
    case 'j': return "LONG_BINGET";
    case 'l': return "LIST";
    case ']': return "EMPTY_LIST";
    case 'o': return "OBJ";
    case 'p': return "PUT";
    case 'q': return "BINPUT";
    case 'r': return "LONG_BINPUT";
    case 's': return "SETITEM";
    case 't': return "TUPLE";
    case ')': return "EMPTY_TUPLE";
    case 'u': return "SETITEMS";
    case 'G': return "BINFLOAT";
    case 'B': return "BINBYTES";
    case 'C': return "SHORT_BINBYTES";
    case 0x80: return "PROTO";
    case 0x81: return "NEWOBJ";
    case 0x82: return "EXT1";
    case 0x83: return "EXT2";
    case 0x84: return "EXT4";
    case 0x85: return "TUPLE1";
    case 0x86: return "TUPLE2";
    case 0x87: return "TUPLE3";
    case 0x88: return "NEWTRUE";
    case 0x89: return "NEWFALSE";
    case 0x8a: return "LONG1";
    case 0x8b: return "LONG4";
    case 0x8c: return "SHORT_BINUNICODE";
    case 0x8d: return "BINUNICODE8";
    case 0x8e: return "BINBYTES8";
    case 0x8f: return "EMPTY_SET";
    case 0x90: return "ADDITEMS";
    case 0x91: return "FROZENSET";
    case 0x92: return "NEWOBJ_EX";
    case 0x93: return "STACK_GLOBAL";
    case 0x94: return "MEMOIZE";
    case 0x95: return "FRAME";
    case 0x96: return "BYTEARRAY8";
    case 0x97: return "NEXT_BUFFER";
    case 0x98: return "READONLY_BUFFER";
    }
    return NULL;
}

/* ---- the globals a checkpoint may name ---- */

enum {
    G_ORDERED_DICT,  /* collections.OrderedDict: called with () it makes an empty dict */
    G_REBUILD_TENSOR, /* torch._utils._rebuild_tensor_v2 */
    G_REBUILD_PARAM,  /* torch._utils._rebuild_parameter(_with_state): the tensor it wraps */
    G_STORAGE,        /* torch.<X>Storage: names a storage's element type in a persistent id */
    G_DTYPE           /* torch.float32 ...: a value, kept as metadata */
};

typedef struct gdef {
    const char *module, *name;
    int kind;
    nnp_dtype dtype; /* G_STORAGE */
} gdef;

static const gdef allowed_globals[] = {
    {"collections", "OrderedDict", G_ORDERED_DICT, NNP_DTYPE_INVALID},
    {"torch._utils", "_rebuild_tensor_v2", G_REBUILD_TENSOR, NNP_DTYPE_INVALID},
    {"torch._utils", "_rebuild_parameter", G_REBUILD_PARAM, NNP_DTYPE_INVALID},
    {"torch._utils", "_rebuild_parameter_with_state", G_REBUILD_PARAM, NNP_DTYPE_INVALID},
    {"torch", "FloatStorage", G_STORAGE, NNP_F32},
    {"torch", "HalfStorage", G_STORAGE, NNP_F16},
    {"torch", "BFloat16Storage", G_STORAGE, NNP_BF16},
    {"torch", "DoubleStorage", G_STORAGE, NNP_F64},
    {"torch", "LongStorage", G_STORAGE, NNP_I64},
    {"torch", "IntStorage", G_STORAGE, NNP_I32},
    {"torch", "ShortStorage", G_STORAGE, NNP_I16},
    {"torch", "CharStorage", G_STORAGE, NNP_I8},
    {"torch", "ByteStorage", G_STORAGE, NNP_U8},
    {"torch", "BoolStorage", G_STORAGE, NNP_BOOL},
    {"torch", "float32", G_DTYPE, NNP_DTYPE_INVALID},
    {"torch", "float64", G_DTYPE, NNP_DTYPE_INVALID},
    {"torch", "float16", G_DTYPE, NNP_DTYPE_INVALID},
    {"torch", "bfloat16", G_DTYPE, NNP_DTYPE_INVALID},
    {"torch", "int64", G_DTYPE, NNP_DTYPE_INVALID},
    {"torch", "int32", G_DTYPE, NNP_DTYPE_INVALID},
    {"torch", "int16", G_DTYPE, NNP_DTYPE_INVALID},
    {"torch", "int8", G_DTYPE, NNP_DTYPE_INVALID},
    {"torch", "uint8", G_DTYPE, NNP_DTYPE_INVALID},
    {"torch", "bool", G_DTYPE, NNP_DTYPE_INVALID},
};

/* Storage types torch writes whose elements nnparity has no dtype for: refused as unsupported
 * rather than as hostile. */
static const char *const unsupported_storages[] = {
    "ComplexFloatStorage", "ComplexDoubleStorage", "QInt8Storage", "QInt32Storage",
    "QUInt8Storage", "QUInt4x2Storage", "QUInt2x4Storage", "UntypedStorage",
};

/* ---- values ---- */

enum {
    V_NONE, V_BOOL, V_INT, V_FLOAT, V_STR, V_BYTES, V_TUPLE, V_LIST, V_DICT, V_GLOBAL,
    V_STORAGE, V_TENSOR
};

static const char *const kind_names[] = {"None",  "bool",   "int",    "float",
                                         "str",   "bytes",  "tuple",  "list",
                                         "dict",  "global", "storage", "tensor"};

/* A storage: the bytes of one data/<key> member, read as `dtype` elements. */
typedef struct tstorage {
    const unsigned char *bytes;
    uint64_t numel;
    nnp_dtype dtype;
    const char *member; /* the zip's copy of the member name */
} tstorage;

/* A tensor as _rebuild_tensor_v2 describes it; checked against its storage when added. */
typedef struct ttensor {
    const tstorage *st;
    uint64_t offset;
    uint32_t ndim;
    uint64_t shape[MAX_DIMS];
    uint64_t stride[MAX_DIMS];
} ttensor;

typedef struct pv pv;
struct pv {
    unsigned char kind;
    bool ordered; /* a dict made by collections.OrderedDict (BUILD may then set its attributes) */
    bool busy;    /* on the path being flattened: reaching it again is a cycle */
    uint64_t pos; /* offset in data.pkl of the opcode that made it, for messages */
    union {
        bool b;
        int64_t i;
        double f;
        struct {
            const char *s; /* into the pickle's bytes, not NUL-terminated */
            size_t n;
        } str;
        struct {
            pv **v; /* items; a dict holds key, value, key, value... */
            size_t n, cap;
        } seq;
        const gdef *g;
        const tstorage *st;
        const ttensor *t;
    } u;
};

/* ---- the loader ---- */

typedef struct chunk {
    struct chunk *next;
    size_t used, cap;
    max_align_t data[];
} chunk;

typedef struct tload {
    nnp_dump *d;
    const char *path;   /* the checkpoint, as named in messages and records */
    const char *member; /* data.pkl's member name */
    const nnp_zip *zip;
    const char *prefix; /* "<archive>/", where data.pkl was found */
    size_t prefix_len;
    bool big_endian;      /* the archive's byteorder member says "big" */
    tstorage **storages;  /* by zip entry index: the storage read from that member */

    /* the machine */
    const unsigned char *p; /* data.pkl's bytes */
    uint64_t n;
    uint64_t at; /* offset of the opcode being run */
    pv **stack;
    size_t sn, scap;
    size_t *marks; /* stack heights at each open MARK */
    size_t mn, mcap;
    pv **memo;
    size_t memo_cap, memo_count; /* slots, and slots holding a value */
    chunk *chunks;

    /* flattening */
    nnp_sbuf name;
    uint64_t visits, max_visits;
    uint64_t out_bytes, max_out_bytes; /* names and metadata made, against amplification */
    size_t nmeta;
} tload;

static nnp_status pk_fail(const tload *L, nnp_status st, const char *fmt, ...) NNP_PRINTF(3, 4);

/* "<file>: <member> byte <at>: <what>" for the opcode being run. */
static nnp_status pk_fail(const tload *L, nnp_status st, const char *fmt, ...)
{
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return nnp__fail(st, "%s: %s byte %" PRIu64 ": %s", L->path, L->member, L->at, msg);
}

static void *pk_alloc(tload *L, size_t n)
{
    size_t align = sizeof(max_align_t);
    if (n > SIZE_MAX - align) {
        nnp__nomem();
        return NULL;
    }
    size_t need = (n + align - 1) / align * align;
    chunk *c = L->chunks;
    if (!c || c->cap - c->used < need) {
        size_t cap = need > 65536 ? need : 65536;
        c = malloc(sizeof *c + cap);
        if (!c) {
            nnp__nomem();
            return NULL;
        }
        c->next = L->chunks;
        c->used = 0;
        c->cap = cap;
        L->chunks = c;
    }
    void *p = (char *)c->data + c->used;
    c->used += need;
    return p;
}

static pv *mk(tload *L, unsigned char kind)
{
    pv *v = pk_alloc(L, sizeof *v);
    if (v) {
        memset(v, 0, sizeof *v);
        v->kind = kind;
        v->pos = L->at;
    }
    return v;
}

/* Append to a list or dict; the old item array stays in the arena (at most doubling the cost). */
static nnp_status seq_push(tload *L, pv *c, pv *item)
{
    if (c->u.seq.n == c->u.seq.cap) {
        size_t cap = c->u.seq.cap ? c->u.seq.cap * 2 : 4;
        if (cap > SIZE_MAX / sizeof(pv *))
            return nnp__nomem();
        pv **v = pk_alloc(L, cap * sizeof *v);
        if (!v)
            return NNP_ERR_NOMEM;
        if (c->u.seq.n)
            memcpy(v, c->u.seq.v, c->u.seq.n * sizeof *v);
        c->u.seq.v = v;
        c->u.seq.cap = cap;
    }
    c->u.seq.v[c->u.seq.n++] = item;
    return NNP_OK;
}

static nnp_status push(tload *L, pv *v)
{
    if (!v)
        return NNP_ERR_NOMEM;
    if (!nnp__grow((void **)&L->stack, &L->scap, L->sn + 1, sizeof *L->stack))
        return nnp__nomem();
    L->stack[L->sn++] = v;
    return NNP_OK;
}

/* Values above the innermost open MARK: what an opcode may pop. */
static size_t avail(const tload *L)
{
    return L->sn - (L->mn ? L->marks[L->mn - 1] : 0);
}

static nnp_status need_stack(const tload *L, unsigned op, size_t k)
{
    if (avail(L) < k)
        return pk_fail(L, NNP_ERR_FORMAT, "%s needs %zu value%s on the stack above the last MARK, "
                       "but there %s %zu (stack underflow)", opcode_name(op), k, k == 1 ? "" : "s",
                       avail(L) == 1 ? "is" : "are", avail(L));
    return NNP_OK;
}

/* Pop everything above the innermost MARK and the MARK itself: *items points at them (they
 * stay valid until the next push) and *count is how many. */
static nnp_status pop_mark(tload *L, unsigned op, pv ***items, size_t *count)
{
    if (!L->mn)
        return pk_fail(L, NNP_ERR_FORMAT, "%s without a MARK (stack underflow)", opcode_name(op));
    size_t base = L->marks[--L->mn];
    /* nothing above the MARK: no items, and no offset from a stack that may never have been
     * allocated (NULL) */
    *items = L->sn > base ? L->stack + base : NULL;
    *count = L->sn - base;
    L->sn = base;
    return NNP_OK;
}

static nnp_status make_tuple(tload *L, pv **items, size_t count)
{
    pv *t = mk(L, V_TUPLE);
    if (!t)
        return NNP_ERR_NOMEM;
    if (count) {
        if (count > SIZE_MAX / sizeof(pv *))
            return nnp__nomem();
        t->u.seq.v = pk_alloc(L, count * sizeof(pv *));
        if (!t->u.seq.v)
            return NNP_ERR_NOMEM;
        memcpy(t->u.seq.v, items, count * sizeof(pv *));
    }
    t->u.seq.n = t->u.seq.cap = count;
    return push(L, t);
}

/* A name from the file made safe for a one-line message: printable ASCII, cut at 100 bytes. */
static void printable(char *dst, size_t cap, const char *s, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n && k + 4 < cap; i++) {
        if (k >= 100) {
            memcpy(dst + k, "...", 3);
            k += 3;
            break;
        }
        unsigned char c = (unsigned char)s[i];
        dst[k++] = c >= 0x20 && c < 0x7f ? (char)c : '?';
    }
    dst[k] = 0;
}

/* GLOBAL and STACK_GLOBAL: look the name up, never import it. */
static nnp_status push_global(tload *L, const char *mod, size_t mlen, const char *name,
                              size_t nlen)
{
    for (size_t i = 0; i < sizeof allowed_globals / sizeof *allowed_globals; i++) {
        const gdef *g = &allowed_globals[i];
        if (strlen(g->module) == mlen && memcmp(g->module, mod, mlen) == 0 &&
            strlen(g->name) == nlen && memcmp(g->name, name, nlen) == 0) {
            pv *v = mk(L, V_GLOBAL);
            if (v)
                v->u.g = g;
            return push(L, v);
        }
    }
    char m[128], nm[128];
    printable(m, sizeof m, mod, mlen);
    printable(nm, sizeof nm, name, nlen);
    if (mlen == 5 && memcmp(mod, "torch", 5) == 0)
        for (size_t i = 0; i < sizeof unsupported_storages / sizeof *unsupported_storages; i++)
            if (strlen(unsupported_storages[i]) == nlen &&
                memcmp(unsupported_storages[i], name, nlen) == 0)
                return pk_fail(L, NNP_ERR_UNSUPPORTED, "storage type 'torch.%s' holds elements "
                               "nnparity has no dtype for (complex, quantized or untyped "
                               "storage)", nm);
    return pk_fail(L, NNP_ERR_UNSUPPORTED, "global '%s.%s' is not allowed (restricted unpickler)",
                   m, nm);
}

/* ---- storages (BINPERSID) ---- */

static const char *kind_name(const pv *v)
{
    return kind_names[v->kind];
}

/* The kind with its article, for messages: "an int", "a str", "None". */
static const char *a_kind(const pv *v)
{
    static const char *const named[] = {
        "None",    "a bool", "an int", "a float",  "a str",     "a bytes object",
        "a tuple", "a list", "a dict", "a global", "a storage", "a tensor",
    };
    _Static_assert(sizeof named / sizeof *named == sizeof kind_names / sizeof *kind_names,
                   "one article per kind");
    return named[v->kind];
}

static bool str_is(const pv *v, const char *s)
{
    return v->kind == V_STR && v->u.str.n == strlen(s) && memcmp(v->u.str.s, s, v->u.str.n) == 0;
}

/* A persistent id is ('storage', storage type, key, location, numel); the storage's bytes are
 * the member <archive>/data/<key>. */
static nnp_status persistent_load(tload *L, const pv *pid)
{
    if (pid->kind != V_TUPLE || pid->u.seq.n != 5 || !str_is(pid->u.seq.v[0], "storage"))
        return pk_fail(L, NNP_ERR_UNSUPPORTED, "persistent id is %s%s, not a ('storage', type, "
                       "key, location, numel) tuple (only storages are loaded)", a_kind(pid),
                       pid->kind == V_TUPLE ? " of another shape" : "");
    pv *const *f = pid->u.seq.v;
    if (f[1]->kind != V_GLOBAL || f[1]->u.g->kind != G_STORAGE)
        return pk_fail(L, NNP_ERR_FORMAT, "persistent id's storage type is %s, not a torch "
                       "storage class (persistent id)", a_kind(f[1]));
    if (f[2]->kind != V_STR || f[3]->kind != V_STR || f[4]->kind != V_INT || f[4]->u.i < 0)
        return pk_fail(L, NNP_ERR_FORMAT, "persistent id's key, location and numel are %s, %s "
                       "and %s%s, not str, str and a non-negative int (persistent id)",
                       a_kind(f[2]), a_kind(f[3]), a_kind(f[4]),
                       f[4]->kind == V_INT && f[4]->u.i < 0 ? " below 0" : "");
    nnp_dtype dtype = f[1]->u.g->dtype;
    uint64_t numel = (uint64_t)f[4]->u.i, nbytes;
    size_t klen = f[2]->u.str.n;
    char key[128];
    printable(key, sizeof key, f[2]->u.str.s, klen);
    if (memchr(f[2]->u.str.s, 0, klen) || klen > MAX_GLOBAL_PART)
        return pk_fail(L, NNP_ERR_FORMAT, "storage key '%s' holds a NUL byte or is over %d bytes "
                       "(persistent id)", key, MAX_GLOBAL_PART);
    /* <prefix>data/<key> */
    size_t len = L->prefix_len + 5 + klen;
    char *member = malloc(len + 1);
    if (!member)
        return nnp__nomem();
    memcpy(member, L->prefix, L->prefix_len);
    memcpy(member + L->prefix_len, "data/", 5);
    memcpy(member + L->prefix_len + 5, f[2]->u.str.s, klen);
    member[len] = 0;
    const nnp_zip_entry *e = nnp__zip_find(L->zip, member);
    nnp_status st = NNP_OK;
    if (!e) {
        char shown[128];
        printable(shown, sizeof shown, member, len);
        st = pk_fail(L, NNP_ERR_FORMAT, "persistent id names storage '%s', but the archive holds "
                     "no member '%s' (missing storage)", key, shown);
    }
    free(member);
    if (st)
        return st;
    size_t idx = (size_t)(e - L->zip->entries);
    tstorage *s = L->storages[idx];
    if (s) { /* a storage shared by several tensors: each refers to it again */
        if (s->dtype != dtype || s->numel != numel)
            return pk_fail(L, NNP_ERR_FORMAT, "storage '%s' is declared as %" PRIu64 " %s "
                           "elements here but as %" PRIu64 " %s elements before (persistent id)",
                           key, numel, nnp_dtype_name(dtype), s->numel, nnp_dtype_name(s->dtype));
    } else {
        bool fits = nnp__mul_u64(numel, nnp_dtype_size(dtype), &nbytes);
        if (!fits || nbytes != e->size)
            return pk_fail(L, NNP_ERR_FORMAT, "storage '%s' holds %" PRIu64 " bytes, but its "
                           "numel %" PRIu64 " of %s needs %s%" PRIu64 " (storage size)", key,
                           e->size, numel, nnp_dtype_name(dtype), fits ? "" : "more than ",
                           fits ? nbytes : UINT64_MAX);
        const unsigned char *bytes = nnp__zip_stored_data(L->zip, e);
        if (!bytes && e->size) {
            /* torch writes storages stored; a deflated one is read into memory whole */
            unsigned char *buf;
            if ((st = nnp__zip_extract_alloc(L->zip, e, &buf)))
                return st;
            if ((st = nnp__dump_defer(L->d, free, buf)))
                return st;
            bytes = buf;
        }
        s = pk_alloc(L, sizeof *s);
        if (!s)
            return NNP_ERR_NOMEM;
        s->bytes = bytes;
        s->numel = numel;
        s->dtype = dtype;
        s->member = e->name;
        L->storages[idx] = s;
    }
    pv *v = mk(L, V_STORAGE);
    if (v)
        v->u.st = s;
    return push(L, v);
}

/* ---- REDUCE: the few callables the allowlist names ---- */

/* torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad,
 * backward_hooks[, metadata]) */
static nnp_status rebuild_tensor(tload *L, const pv *args)
{
    static const char sig[] = "_rebuild_tensor_v2(storage, storage_offset, size, stride, "
                              "requires_grad, backward_hooks[, metadata])";
    size_t na = args->u.seq.n;
    pv *const *a = args->u.seq.v;
    if (na != 6 && na != 7)
        return pk_fail(L, NNP_ERR_FORMAT, "%s called with %zu arguments", sig, na);
    if (a[0]->kind != V_STORAGE || a[1]->kind != V_INT || a[1]->u.i < 0 ||
        a[2]->kind != V_TUPLE || a[3]->kind != V_TUPLE)
        return pk_fail(L, NNP_ERR_FORMAT, "%s called with %s, %s, %s and %s (expected a "
                       "storage, an int >= 0 and two tuples)", sig, a_kind(a[0]),
                       a_kind(a[1]), a_kind(a[2]), a_kind(a[3]));
    size_t nd = a[2]->u.seq.n;
    if (a[3]->u.seq.n != nd)
        return pk_fail(L, NNP_ERR_FORMAT, "tensor has %zu sizes but %zu strides (tensor shape)", nd,
                       a[3]->u.seq.n);
    if (nd > MAX_DIMS)
        return pk_fail(L, NNP_ERR_UNSUPPORTED, "tensor has %zu dimensions, more than %d", nd,
                       MAX_DIMS);
    if (na == 7 && a[6]->kind == V_DICT) {
        /* metadata holds torch's lazy "neg"/"conj" bits: reading the storage as it is would
         * give wrong values */
        for (size_t i = 1; i < a[6]->u.seq.n; i += 2)
            if (a[6]->u.seq.v[i]->kind != V_BOOL || a[6]->u.seq.v[i]->u.b)
                return pk_fail(L, NNP_ERR_UNSUPPORTED, "tensor metadata sets a flag (a lazily "
                               "negated or conjugated view); save it after .resolve_neg()");
    }
    ttensor *t = pk_alloc(L, sizeof *t);
    if (!t)
        return NNP_ERR_NOMEM;
    t->st = a[0]->u.st;
    t->offset = (uint64_t)a[1]->u.i;
    t->ndim = (uint32_t)nd;
    for (size_t k = 0; k < nd; k++) {
        const pv *sz = a[2]->u.seq.v[k], *sd = a[3]->u.seq.v[k];
        if (sz->kind != V_INT || sd->kind != V_INT || sz->u.i < 0 || sd->u.i < 0)
            return pk_fail(L, NNP_ERR_FORMAT, "tensor dimension %zu has size %s %" PRId64
                           " and stride %s %" PRId64 " (sizes and strides are ints >= 0)", k,
                           kind_name(sz), sz->kind == V_INT ? sz->u.i : 0, kind_name(sd),
                           sd->kind == V_INT ? sd->u.i : 0);
        t->shape[k] = (uint64_t)sz->u.i;
        t->stride[k] = (uint64_t)sd->u.i;
    }
    pv *v = mk(L, V_TENSOR);
    if (v)
        v->u.t = t;
    return push(L, v);
}

static nnp_status reduce(tload *L)
{
    nnp_status st = need_stack(L, OP_REDUCE, 2);
    if (st)
        return st;
    pv *args = L->stack[--L->sn], *fn = L->stack[--L->sn];
    if (fn->kind != V_GLOBAL)
        return pk_fail(L, NNP_ERR_FORMAT, "REDUCE calls %s, not a global (restricted unpickler)",
                       a_kind(fn));
    const gdef *g = fn->u.g;
    if (args->kind != V_TUPLE)
        return pk_fail(L, NNP_ERR_FORMAT, "REDUCE of '%s.%s' takes a tuple of arguments, not %s",
                       g->module, g->name, a_kind(args));
    switch (g->kind) {
    case G_ORDERED_DICT: {
        /* Python pickles an OrderedDict as OrderedDict() followed by SETITEMS */
        if (args->u.seq.n)
            return pk_fail(L, NNP_ERR_UNSUPPORTED, "collections.OrderedDict called with %zu "
                           "arguments (only OrderedDict() is read)", args->u.seq.n);
        pv *v = mk(L, V_DICT);
        if (v)
            v->ordered = true;
        return push(L, v);
    }
    case G_REBUILD_TENSOR:
        return rebuild_tensor(L, args);
    case G_REBUILD_PARAM: {
        /* _rebuild_parameter(data, requires_grad, backward_hooks[, state]): a Parameter is
         * its data tensor here */
        size_t na = args->u.seq.n;
        if ((na != 3 && na != 4) || args->u.seq.v[0]->kind != V_TENSOR)
            return pk_fail(L, NNP_ERR_FORMAT, "%s.%s called with %zu arguments%s (expected a "
                           "tensor, requires_grad and hooks)", g->module, g->name, na,
                           na && args->u.seq.v[0]->kind != V_TENSOR ? ", the first not a tensor"
                                                                    : "");
        return push(L, args->u.seq.v[0]);
    }
    default:
        return pk_fail(L, NNP_ERR_UNSUPPORTED, "global '%s.%s' is not callable (restricted "
                       "unpickler)", g->module, g->name);
    }
}

/* ---- the machine ---- */

/* Whether `cnt` more bytes are there after *cur; fails naming the opcode when not. */
static nnp_status need_bytes(const tload *L, unsigned op, uint64_t cur, uint64_t cnt)
{
    if (cnt > L->n - cur)
        return pk_fail(L, NNP_ERR_FORMAT, "%s needs %" PRIu64 " more bytes, but the pickle ends "
                       "after %" PRIu64 " (truncated)", opcode_name(op), cnt, L->n - cur);
    return NNP_OK;
}

/* Memo indices: a pickle stores one value per PUT, so an index at or past the pickle's size
 * cannot come from a real writer and would only make the memo huge. */
static nnp_status memo_put(tload *L, uint64_t idx, unsigned op)
{
    nnp_status st = need_stack(L, op, 1);
    if (st)
        return st;
    if (idx >= L->n)
        return pk_fail(L, NNP_ERR_FORMAT, "memo index %" PRIu64 " is beyond what a pickle of %"
                       PRIu64 " bytes can use (memo bound)", idx, L->n);
    if (idx >= L->memo_cap) {
        size_t old = L->memo_cap;
        if (!nnp__grow((void **)&L->memo, &L->memo_cap, (size_t)idx + 1, sizeof *L->memo))
            return nnp__nomem();
        memset(L->memo + old, 0, (L->memo_cap - old) * sizeof *L->memo);
    }
    if (!L->memo[idx])
        L->memo_count++;
    L->memo[idx] = L->stack[L->sn - 1];
    return NNP_OK;
}

static nnp_status memo_get(tload *L, uint64_t idx)
{
    if (idx >= L->memo_cap || !L->memo[idx])
        return pk_fail(L, NNP_ERR_FORMAT, "memo index %" PRIu64 " was never stored (memo)", idx);
    return push(L, L->memo[idx]);
}

static nnp_status push_str(tload *L, const unsigned char *s, uint64_t n, bool text)
{
    if (text) {
        size_t bad;
        if (!nnp__utf8_valid(s, (size_t)n, &bad))
            return pk_fail(L, NNP_ERR_FORMAT, "string is not valid UTF-8 at its byte %zu (UTF-8)",
                           bad);
    }
    pv *v = mk(L, text ? V_STR : V_BYTES);
    if (v) {
        v->u.str.s = (const char *)s;
        v->u.str.n = (size_t)n;
    }
    return push(L, v);
}

/* GLOBAL's two arguments are newline-terminated lines. */
static nnp_status global_line(const tload *L, uint64_t *cur, const char **s, size_t *len)
{
    const unsigned char *start = L->p + *cur;
    uint64_t left = L->n - *cur;
    size_t max = left < MAX_GLOBAL_PART + 1 ? (size_t)left : MAX_GLOBAL_PART + 1;
    const unsigned char *nl = memchr(start, '\n', max);
    if (!nl)
        return pk_fail(L, NNP_ERR_FORMAT, "GLOBAL's module or name is not a line of at most %d "
                       "bytes (GLOBAL)", MAX_GLOBAL_PART);
    *s = (const char *)start;
    *len = (size_t)(nl - start);
    *cur += *len + 1;
    return NNP_OK;
}

static nnp_status run_pickle(tload *L, pv **result)
{
    uint64_t cur = 0;
    nnp_status st = NNP_OK;
    while (!st) {
        L->at = cur;
        if (cur >= L->n)
            return pk_fail(L, NNP_ERR_FORMAT, "the pickle ends without a STOP opcode (truncated)");
        unsigned op = L->p[cur++];
        const unsigned char *q = L->p + cur; /* the opcode's argument bytes */
        pv *v;
        if (cur == 1 && op != OP_PROTO)
            return pk_fail(L, NNP_ERR_UNSUPPORTED, "the pickle does not start with PROTO "
                           "(protocol 0 or 1; torch writes protocol 2 and later)");
        switch (op) {
        case OP_PROTO:
            if ((st = need_bytes(L, op, cur, 1)))
                break;
            if (L->at != 0)
                return pk_fail(L, NNP_ERR_FORMAT, "PROTO after the first opcode");
            if (q[0] < 2 || q[0] > 5)
                return pk_fail(L, NNP_ERR_UNSUPPORTED, "pickle protocol %u (2 to 5 are read)",
                               q[0]);
            cur++;
            break;
        case OP_FRAME: /* framing only batches reads; the opcodes inside run as usual */
            if ((st = need_bytes(L, op, cur, 8)))
                break;
            if (nnp__le64(q) > L->n - cur - 8)
                return pk_fail(L, NNP_ERR_FORMAT, "FRAME of %" PRIu64 " bytes runs past the end "
                               "of the pickle (truncated)", nnp__le64(q));
            cur += 8;
            break;
        case OP_STOP:
            if (L->mn)
                return pk_fail(L, NNP_ERR_FORMAT, "STOP with %zu MARKs still open", L->mn);
            if (L->sn != 1)
                return pk_fail(L, NNP_ERR_FORMAT, "STOP with %zu values on the stack, not 1",
                               L->sn);
            if (cur != L->n)
                return pk_fail(L, NNP_ERR_FORMAT, "%" PRIu64 " bytes after STOP (trailing data)",
                               L->n - cur);
            *result = L->stack[0];
            return NNP_OK;
        case OP_MARK:
            if (L->mn >= MAX_DEPTH)
                return pk_fail(L, NNP_ERR_FORMAT, "more than %d MARKs open (nesting too deep)",
                               MAX_DEPTH);
            if (!nnp__grow((void **)&L->marks, &L->mcap, L->mn + 1, sizeof *L->marks))
                return nnp__nomem();
            L->marks[L->mn++] = L->sn;
            break;
        case OP_EMPTY_DICT:
            st = push(L, mk(L, V_DICT));
            break;
        case OP_EMPTY_LIST:
            st = push(L, mk(L, V_LIST));
            break;
        case OP_EMPTY_TUPLE:
            st = make_tuple(L, NULL, 0);
            break;
        case OP_TUPLE1:
        case OP_TUPLE2:
        case OP_TUPLE3: {
            size_t k = op - OP_TUPLE1 + 1;
            if ((st = need_stack(L, op, k)))
                break;
            L->sn -= k;
            st = make_tuple(L, L->stack + L->sn, k);
            break;
        }
        case OP_TUPLE: {
            pv **items;
            size_t k;
            if (!(st = pop_mark(L, op, &items, &k)))
                st = make_tuple(L, items, k);
            break;
        }
        case OP_SETITEM:
        case OP_APPEND: {
            size_t k = op == OP_SETITEM ? 2 : 1;
            if ((st = need_stack(L, op, k + 1)))
                break;
            pv *target = L->stack[L->sn - k - 1];
            if (target->kind != (op == OP_SETITEM ? V_DICT : V_LIST))
                return pk_fail(L, NNP_ERR_FORMAT, "%s on %s (restricted unpickler)",
                               opcode_name(op), a_kind(target));
            for (size_t i = 0; i < k && !st; i++)
                st = seq_push(L, target, L->stack[L->sn - k + i]);
            L->sn -= k;
            break;
        }
        case OP_SETITEMS:
        case OP_APPENDS: {
            pv **items;
            size_t k;
            if ((st = pop_mark(L, op, &items, &k)))
                break;
            if (!avail(L))
                return pk_fail(L, NNP_ERR_FORMAT, "%s has no container below its MARK (stack "
                               "underflow)", opcode_name(op));
            pv *target = L->stack[L->sn - 1];
            if (target->kind != (op == OP_SETITEMS ? V_DICT : V_LIST))
                return pk_fail(L, NNP_ERR_FORMAT, "%s on %s (restricted unpickler)",
                               opcode_name(op), a_kind(target));
            if (op == OP_SETITEMS && k % 2)
                return pk_fail(L, NNP_ERR_FORMAT, "SETITEMS with an odd number (%zu) of keys and "
                               "values", k);
            for (size_t i = 0; i < k && !st; i++)
                st = seq_push(L, target, items[i]);
            break;
        }
        case OP_BININT:
        case OP_BININT1:
        case OP_BININT2: {
            uint64_t k = op == OP_BININT ? 4 : op == OP_BININT1 ? 1 : 2;
            if ((st = need_bytes(L, op, cur, k)))
                break;
            if (!(v = mk(L, V_INT)))
                return NNP_ERR_NOMEM;
            v->u.i = op == OP_BININT ? (int64_t)(int32_t)nnp__le32(q)
                     : op == OP_BININT1 ? q[0] : nnp__le16(q);
            cur += k;
            st = push(L, v);
            break;
        }
        case OP_LONG1: {
            if ((st = need_bytes(L, op, cur, 1)) || (st = need_bytes(L, op, cur + 1, q[0])))
                break;
            unsigned k = q[0];
            if (k > 8)
                return pk_fail(L, NNP_ERR_UNSUPPORTED, "LONG1 integer of %u bytes (wider than 64 "
                               "bits)", k);
            uint64_t u = 0;
            for (unsigned b = 0; b < k; b++)
                u |= (uint64_t)q[1 + b] << (8 * b);
            if (k && k < 8 && (q[k] & 0x80)) /* sign-extend two's complement */
                u |= ~UINT64_C(0) << (8 * k);
            if (!(v = mk(L, V_INT)))
                return NNP_ERR_NOMEM;
            memcpy(&v->u.i, &u, sizeof u);
            cur += 1 + k;
            st = push(L, v);
            break;
        }
        case OP_BINFLOAT: {
            if ((st = need_bytes(L, op, cur, 8)))
                break;
            uint64_t u = 0;
            for (int b = 0; b < 8; b++) /* big-endian */
                u = u << 8 | q[b];
            if (!(v = mk(L, V_FLOAT)))
                return NNP_ERR_NOMEM;
            memcpy(&v->u.f, &u, sizeof u);
            cur += 8;
            st = push(L, v);
            break;
        }
        case OP_NEWTRUE:
        case OP_NEWFALSE:
            if (!(v = mk(L, V_BOOL)))
                return NNP_ERR_NOMEM;
            v->u.b = op == OP_NEWTRUE;
            st = push(L, v);
            break;
        case OP_NONE:
            st = push(L, mk(L, V_NONE));
            break;
        case OP_SHORT_BINUNICODE:
        case OP_BINUNICODE:
        case OP_BINUNICODE8:
        case OP_SHORT_BINBYTES:
        case OP_BINBYTES:
        case OP_BINBYTES8: {
            uint64_t w = op == OP_SHORT_BINUNICODE || op == OP_SHORT_BINBYTES ? 1
                         : op == OP_BINUNICODE || op == OP_BINBYTES           ? 4
                                                                              : 8;
            if ((st = need_bytes(L, op, cur, w)))
                break;
            uint64_t len = w == 1 ? q[0] : w == 4 ? nnp__le32(q) : nnp__le64(q);
            if ((st = need_bytes(L, op, cur + w, len)))
                break;
            bool text = op == OP_SHORT_BINUNICODE || op == OP_BINUNICODE || op == OP_BINUNICODE8;
            st = push_str(L, q + w, len, text);
            cur += w + len;
            break;
        }
        case OP_BINPUT:
        case OP_LONG_BINPUT: {
            uint64_t k = op == OP_BINPUT ? 1 : 4;
            if ((st = need_bytes(L, op, cur, k)))
                break;
            st = memo_put(L, k == 1 ? q[0] : nnp__le32(q), op);
            cur += k;
            break;
        }
        case OP_MEMOIZE: /* stores at the index that is the memo's size, as Python does */
            st = memo_put(L, L->memo_count, op);
            break;
        case OP_BINGET:
        case OP_LONG_BINGET: {
            uint64_t k = op == OP_BINGET ? 1 : 4;
            if ((st = need_bytes(L, op, cur, k)))
                break;
            st = memo_get(L, k == 1 ? q[0] : nnp__le32(q));
            cur += k;
            break;
        }
        case OP_GLOBAL: {
            const char *mod, *name;
            size_t ml, nl;
            if ((st = global_line(L, &cur, &mod, &ml)) || (st = global_line(L, &cur, &name, &nl)))
                break;
            st = push_global(L, mod, ml, name, nl);
            break;
        }
        case OP_STACK_GLOBAL: {
            if ((st = need_stack(L, op, 2)))
                break;
            pv *mod = L->stack[L->sn - 2], *name = L->stack[L->sn - 1];
            if (mod->kind != V_STR || name->kind != V_STR)
                return pk_fail(L, NNP_ERR_FORMAT, "STACK_GLOBAL takes two strings, not %s and "
                               "%s", a_kind(mod), a_kind(name));
            L->sn -= 2;
            st = push_global(L, mod->u.str.s, mod->u.str.n, name->u.str.s, name->u.str.n);
            break;
        }
        case OP_REDUCE:
            st = reduce(L);
            break;
        case OP_BUILD: {
            /* torch sets a state dict's _metadata attribute (module versions) this way; the
             * attributes are dropped, never applied */
            if ((st = need_stack(L, op, 2)))
                break;
            pv *obj = L->stack[L->sn - 2];
            if (obj->kind != V_DICT || !obj->ordered)
                return pk_fail(L, NNP_ERR_UNSUPPORTED, "BUILD on %s (only an OrderedDict's "
                               "attributes are allowed; restricted unpickler)",
                               obj->kind == V_DICT ? "a plain dict" : a_kind(obj));
            L->sn--;
            break;
        }
        case OP_BINPERSID: {
            if ((st = need_stack(L, op, 1)))
                break;
            pv *pid = L->stack[--L->sn];
            st = persistent_load(L, pid);
            break;
        }
        default: {
            const char *name = opcode_name(op);
            if (name)
                return pk_fail(L, NNP_ERR_UNSUPPORTED, "opcode %s (0x%02x) is not allowed "
                               "(restricted unpickler)", name, op);
            return pk_fail(L, NNP_ERR_FORMAT, "unknown opcode 0x%02x (restricted unpickler)", op);
        }
        }
    }
    return st;
}

/* ---- records ---- */

/* Every element a view reaches lies in its storage: offset + sum((size-1) * stride) < numel. */
static nnp_status check_extent(const tload *L, const char *name, const pv *v, uint64_t nelem)
{
    const ttensor *t = v->u.t;
    if (!nelem)
        return NNP_OK; /* an empty view reads nothing, wherever it points */
    uint64_t last = t->offset;
    bool ok = true;
    for (uint32_t k = 0; k < t->ndim && ok; k++) {
        uint64_t span;
        ok = nnp__mul_u64(t->shape[k] - 1, t->stride[k], &span) && nnp__add_u64(last, span, &last);
    }
    if (!ok || last >= t->st->numel)
        return nnp__fail(NNP_ERR_FORMAT, "%s: tensor '%s' (%s byte %" PRIu64 "): its elements "
                         "reach index %s%" PRIu64 " of storage '%s', which holds %" PRIu64
                         " elements (storage offset, sizes and strides out of bounds)", L->path,
                         name, L->member, v->pos, ok ? "" : "beyond ", ok ? last : UINT64_MAX,
                         t->st->member, t->st->numel);
    return NNP_OK;
}

/* What a strided view's loader needs: its storage, and the view's geometry in bytes. */
typedef struct gather {
    const unsigned char *base; /* the element at the view's offset */
    size_t es;
    uint32_t ndim;
    bool swap;
    const uint64_t *shape;
    uint64_t *step; /* stride in bytes per dimension */
} gather;

static void copy_elem(unsigned char *dst, const unsigned char *src, size_t es, bool swap)
{
    for (size_t b = 0; b < es; b++)
        dst[b] = src[swap ? es - 1 - b : b];
}

/* Walk the view in C order, the last dimension innermost. check_extent bounded every position,
 * so nothing here can leave the storage. */
static nnp_status gather_load(void *ctx, void *dst, uint64_t nbytes)
{
    const gather *g = ctx;
    unsigned char *out = dst;
    uint64_t idx[MAX_DIMS] = {0};
    uint32_t last = g->ndim - 1;
    uint64_t inner = g->shape[last], rows = nbytes / g->es / inner, off = 0;
    for (uint64_t r = 0; r < rows; r++) {
        const unsigned char *src = g->base + off;
        for (uint64_t j = 0; j < inner; j++, src += g->step[last], out += g->es)
            copy_elem(out, src, g->es, g->swap);
        for (uint32_t k = last; k-- > 0;) {
            if (idx[k] + 1 < g->shape[k]) {
                idx[k]++;
                off += g->step[k];
                break;
            }
            off -= g->step[k] * idx[k];
            idx[k] = 0;
        }
    }
    return NNP_OK;
}

static nnp_status add_tensor(tload *L, const char *name, const pv *v)
{
    const ttensor *t = v->u.t;
    nnp_dtype dtype = t->st->dtype;
    size_t es = nnp_dtype_size(dtype);
    uint64_t nelem;
    if (!nnp__shape_nelem(t->ndim, t->shape, &nelem))
        return nnp__fail(NNP_ERR_FORMAT, "%s: tensor '%s' (%s byte %" PRIu64 "): shape's element "
                         "count overflows 64 bits (tensor shape)", L->path, name, L->member,
                         v->pos);
    nnp_status st = check_extent(L, name, v, nelem);
    nnp_rec *r;
    if (st || (st = nnp__dump_add(L->d, L->path, name, dtype, t->ndim, t->shape, &r)))
        return st;
    /* C order: each dimension's stride is the product of the later sizes (any stride will do
     * for a dimension of size 1, which is never stepped along) */
    bool contiguous = true;
    uint64_t want = 1;
    for (uint32_t k = t->ndim; k-- > 0;) {
        if (t->shape[k] != 1 && t->stride[k] != want)
            contiguous = false;
        want *= t->shape[k]; /* bounded by nelem, which did not overflow */
    }
    if (!nelem || contiguous) {
        /* offset * es < numel * es, the member's size */
        r->raw = nelem ? t->st->bytes + t->offset * es : t->st->bytes;
        r->layout = L->big_endian && es > 1 ? NNP_LAYOUT_BYTESWAP : 0;
        return NNP_OK;
    }
    gather *g = nnp__dump_alloc(L->d, sizeof *g);
    uint64_t *step = nnp__dump_alloc(L->d, t->ndim * sizeof *step);
    if (!g || !step)
        return NNP_ERR_NOMEM;
    for (uint32_t k = 0; k < t->ndim; k++)
        step[k] = t->stride[k] * es; /* stride <= numel for a dimension stepped along */
    g->base = t->st->bytes + t->offset * es;
    g->es = es;
    g->ndim = t->ndim;
    g->swap = L->big_endian && es > 1;
    g->shape = r->pub.shape;
    g->step = step;
    r->load = gather_load;
    r->load_ctx = g;
    return NNP_OK;
}

/* Python's repr of a float: the shortest digits that read back the same. */
static void float_repr(double x, char *buf, size_t cap)
{
    if (isnan(x)) {
        snprintf(buf, cap, "nan");
        return;
    }
    if (isinf(x)) {
        snprintf(buf, cap, x > 0 ? "inf" : "-inf");
        return;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, cap, "%.*g", prec, x);
        if (strtod(buf, NULL) == x)
            break;
    }
    if (!strpbrk(buf, ".e"))
        strncat(buf, ".0", cap - strlen(buf) - 1);
}

static nnp_status budget(tload *L, uint64_t bytes)
{
    if (!nnp__add_u64(L->out_bytes, bytes, &L->out_bytes) || L->out_bytes > L->max_out_bytes)
        return nnp__fail(NNP_ERR_FORMAT, "%s: %s: the names and values built from the pickle "
                         "pass %" PRIu64 " bytes (shared containers multiply them; amplification "
                         "bound)", L->path, L->member, L->max_out_bytes);
    return NNP_OK;
}

/* A plain leaf becomes metadata "<name>" = its Python repr; others are skipped. */
static nnp_status add_leaf(tload *L, const char *name, const pv *v)
{
    char num[64];
    const char *val = NULL;
    switch (v->kind) {
    case V_NONE:
        val = "None";
        break;
    case V_BOOL:
        val = v->u.b ? "True" : "False";
        break;
    case V_INT:
        snprintf(num, sizeof num, "%" PRId64, v->u.i);
        val = num;
        break;
    case V_FLOAT:
        float_repr(v->u.f, num, sizeof num);
        val = num;
        break;
    case V_GLOBAL:
        if (v->u.g->kind == G_DTYPE) {
            snprintf(num, sizeof num, "torch.%s", v->u.g->name);
            val = num;
        }
        break;
    default:
        break;
    }
    /* nnparity's own keys are not for a checkpoint to set */
    if (L->nmeta >= MAX_META || strncmp(name, "nnparity.", 9) == 0)
        return NNP_OK;
    nnp_status st;
    if (v->kind == V_STR) {
        if (v->u.str.n > MAX_META_STRING || memchr(v->u.str.s, 0, v->u.str.n))
            return NNP_OK;
        if ((st = budget(L, v->u.str.n)))
            return st;
        char *s = malloc(v->u.str.n + 1);
        if (!s)
            return nnp__nomem();
        memcpy(s, v->u.str.s, v->u.str.n);
        s[v->u.str.n] = 0;
        st = nnp__dump_add_meta(L->d, name, s);
        free(s);
    } else if (val) {
        if ((st = budget(L, strlen(val))))
            return st;
        st = nnp__dump_add_meta(L->d, name, val);
    } else {
        return NNP_OK;
    }
    L->nmeta++;
    return st;
}

/* Append ".<component>" (no dot at the start) to the name being built. */
static nnp_status name_push(tload *L, const pv *at, const char *s, size_t n)
{
    if (memchr(s, 0, n))
        return nnp__fail(NNP_ERR_FORMAT, "%s: %s byte %" PRIu64 ": dict key holds a NUL byte "
                         "(tensor name)", L->path, L->member, at->pos);
    if (L->name.len + 1 + n > MAX_NAME)
        return nnp__fail(NNP_ERR_UNSUPPORTED, "%s: %s byte %" PRIu64 ": a tensor name built from "
                         "the nested keys is longer than %d bytes", L->path, L->member, at->pos,
                         MAX_NAME);
    nnp_status st = budget(L, L->name.len + 1 + n);
    if (st)
        return st;
    if (L->name.len)
        nnp__sbuf_put(&L->name, ".", 1);
    nnp__sbuf_put(&L->name, s, n);
    if (!L->name.s)
        nnp__sbuf_put(&L->name, "", 0);
    return L->name.failed || !L->name.s ? nnp__nomem() : NNP_OK;
}

static void name_pop(tload *L, size_t len)
{
    if (L->name.s) {
        L->name.len = len;
        L->name.s[len] = 0;
    }
}

static nnp_status flatten(tload *L, pv *v, int depth);

/* A container's items, in pickle order: dict keys that are strings or ints name their values,
 * list and tuple items are named by index. */
static nnp_status flatten_container(tload *L, pv *v, int depth)
{
    if (depth >= MAX_DEPTH)
        return nnp__fail(NNP_ERR_FORMAT, "%s: %s byte %" PRIu64 ": containers nested deeper than "
                         "%d levels (nesting bound)", L->path, L->member, v->pos, MAX_DEPTH);
    if (v->busy)
        return nnp__fail(NNP_ERR_FORMAT, "%s: %s byte %" PRIu64 ": %s contains itself "
                         "(cycle)", L->path, L->member, v->pos, a_kind(v));
    v->busy = true;
    size_t base = L->name.len;
    bool dict = v->kind == V_DICT;
    nnp_status st = NNP_OK;
    for (size_t i = 0; i < v->u.seq.n && !st; i += dict ? 2 : 1) {
        char num[32];
        const pv *key = dict ? v->u.seq.v[i] : NULL;
        pv *item = v->u.seq.v[dict ? i + 1 : i];
        if (!dict) {
            snprintf(num, sizeof num, "%zu", i);
            st = name_push(L, v, num, strlen(num));
        } else if (key->kind == V_STR) {
            st = name_push(L, key, key->u.str.s, key->u.str.n);
        } else if (key->kind == V_INT) { /* optimizer state is keyed by parameter index */
            snprintf(num, sizeof num, "%" PRId64, key->u.i);
            st = name_push(L, key, num, strlen(num));
        } else {
            continue; /* a key that names nothing simply */
        }
        if (!st)
            st = flatten(L, item, depth + 1);
        name_pop(L, base);
    }
    v->busy = false;
    return st;
}

static nnp_status flatten(tload *L, pv *v, int depth)
{
    if (++L->visits > L->max_visits)
        return nnp__fail(NNP_ERR_FORMAT, "%s: %s: the pickle's values are reached more than %"
                         PRIu64 " times (shared containers multiply them; amplification bound)",
                         L->path, L->member, L->max_visits);
    if (v->kind == V_DICT || v->kind == V_LIST || v->kind == V_TUPLE)
        return flatten_container(L, v, depth);
    const char *name = L->name.s ? L->name.s : "";
    if (v->kind == V_TENSOR)
        return add_tensor(L, name, v);
    return add_leaf(L, name, v);
}

/* The file's name without directories and its last extension: a bare tensor's record name. */
static nnp_status stem_name(tload *L)
{
    const char *base = strrchr(L->path, '/');
    base = base ? base + 1 : L->path;
    size_t len = strlen(base);
    const char *dot = strrchr(base, '.');
    if (dot && dot > base)
        len = (size_t)(dot - base);
    nnp__sbuf_put(&L->name, base, len);
    if (!L->name.s)
        nnp__sbuf_put(&L->name, "", 0);
    return L->name.failed || !L->name.s ? nnp__nomem() : NNP_OK;
}

/* ---- the archive ---- */

const nnp_zip_entry *nnp__torch_pickle_entry(const nnp_zip *z)
{
    for (size_t i = 0; i < z->count; i++) {
        const char *n = z->entries[i].name;
        size_t len = strlen(n);
        if (strcmp(n, "data.pkl") == 0 || (len > 9 && strcmp(n + len - 9, "/data.pkl") == 0))
            return &z->entries[i];
    }
    return NULL;
}

/* torch.save before 1.6 (or with _use_new_zipfile_serialization=False) writes pickles back to
 * back, the first holding the magic number 0x1950a86a20f9469cfc6c as a 10-byte LONG1. */
static const unsigned char legacy_magic[10] = {0x6c, 0xfc, 0x9c, 0x46, 0xf9,
                                               0x20, 0x6a, 0xa8, 0x50, 0x19};

bool nnp__torch_is_legacy(const unsigned char *head, size_t n)
{
    if (n < 2 || head[0] != OP_PROTO || head[1] < 2 || head[1] > 5)
        return false;
    size_t i = 2;
    if (n > i && head[i] == OP_FRAME) /* protocol 4 and later frame their opcodes */
        i += 9;
    return n >= i + 12 && head[i] == OP_LONG1 && head[i + 1] == 10 &&
           memcmp(head + i + 2, legacy_magic, sizeof legacy_magic) == 0;
}

/* The archive's optional byteorder member ("little" or "big"; torch >= 2.1 writes it). */
static nnp_status read_byteorder(tload *L)
{
    char *name = malloc(L->prefix_len + 10);
    if (!name)
        return nnp__nomem();
    memcpy(name, L->prefix, L->prefix_len);
    memcpy(name + L->prefix_len, "byteorder", 10);
    const nnp_zip_entry *e = nnp__zip_find(L->zip, name);
    free(name);
    if (!e)
        return NNP_OK;
    char text[8] = {0};
    if (e->size < sizeof text) {
        nnp_status st = nnp__zip_extract(L->zip, e, 0, text, e->size);
        if (st)
            return st;
    }
    if (strcmp(text, "little") == 0)
        return NNP_OK;
    if (strcmp(text, "big") == 0) {
        L->big_endian = true;
        return NNP_OK;
    }
    return nnp__fail(NNP_ERR_FORMAT, "%s: member '%s': byte order is neither \"little\" nor "
                     "\"big\" (byteorder)", L->path, e->name);
}

static nnp_status load_archive(tload *L, const unsigned char *base, uint64_t size)
{
    nnp_zip z;
    nnp_status st = nnp__zip_open(L->path, base, size, &z);
    if (st)
        return st;
    L->zip = &z;
    const nnp_zip_entry *pkl = nnp__torch_pickle_entry(&z);
    unsigned char *inflated = NULL;
    pv *root = NULL;
    if (!pkl) {
        st = nnp__fail(NNP_ERR_FORMAT, "%s: the zip holds no <archive>/data.pkl, so it is not a "
                       "PyTorch checkpoint", L->path);
        goto out;
    }
    L->member = pkl->name;
    L->prefix = pkl->name;
    L->prefix_len = strlen(pkl->name) - strlen("data.pkl");
    if ((st = read_byteorder(L)))
        goto out;
    L->storages = calloc(z.count ? z.count : 1, sizeof *L->storages);
    if (!L->storages) {
        st = nnp__nomem();
        goto out;
    }
    L->p = nnp__zip_stored_data(&z, pkl);
    L->n = pkl->size;
    if (!L->p) { /* torch stores data.pkl; a deflated one is inflated (and its CRC checked) */
        if ((st = nnp__zip_extract_alloc(&z, pkl, &inflated)))
            goto out;
        L->p = inflated;
    }
    /* Each value, item and reference costs an opcode byte; flattening a shared container
     * visits it again, so allow a few visits per byte before calling it amplification. */
    L->max_visits = 4 * L->n + 64;
    L->max_out_bytes = 16 * L->n + (UINT64_C(1) << 20);
    if ((st = run_pickle(L, &root)))
        goto out;
    /* a bare tensor (or a bare plain value) is named after the file, as npy does */
    if (root->kind != V_DICT && root->kind != V_LIST && root->kind != V_TUPLE)
        st = stem_name(L);
    if (!st)
        st = flatten(L, root, 0);
out:
    free(inflated);
    nnp__zip_close(&z);
    return st;
}

nnp_status nnp__torch_load(nnp_dump *d, const char *path)
{
    nnp_map m;
    nnp_status st = nnp__dump_map(d, path, &m);
    return st ? st : nnp__torch_load_map(d, path, &m);
}

nnp_status nnp__torch_load_map(nnp_dump *d, const char *path, const nnp_map *map)
{
    nnp_map m = *map;
    nnp_status st;
    nnp__dump_set_format(d, "torch");
    if (nnp__torch_is_legacy(m.base, m.base ? (size_t)(m.size < 64 ? m.size : 64) : 0))
        return nnp__fail(NNP_ERR_UNSUPPORTED, "%s: byte 0: this is PyTorch's legacy "
                         "serialization format (torch < 1.6, or "
                         "_use_new_zipfile_serialization=False), which is not read; re-save it "
                         "with torch >= 1.6: torch.save(torch.load(f), f2)", path);
    tload L;
    memset(&L, 0, sizeof L);
    L.d = d;
    L.path = nnp__dump_strdup(d, path);
    if (!L.path)
        return NNP_ERR_NOMEM;
    L.member = "data.pkl";
    st = load_archive(&L, m.base, m.size);
    while (L.chunks) {
        chunk *next = L.chunks->next;
        free(L.chunks);
        L.chunks = next;
    }
    free(L.storages);
    free(L.stack);
    free(L.marks);
    free(L.memo);
    nnp__sbuf_free(&L.name);
    return st;
}
