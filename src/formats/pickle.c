/*
 * pickle.c - the restricted unpickler: it turns a pickle's bytes (a PyTorch checkpoint's data.pkl)
 * into a tree of plain values, and never runs anything.
 *
 * A pickle is a program: Python's pickle imports and calls whatever it names, so loading an
 * untrusted checkpoint that way runs the author's code. This machine knows an allowlist of
 * opcodes and of globals, and builds plain values only: dicts, lists, tuples, numbers, strings,
 * storages and tensors (storage, offset, shape, strides). A global is looked up by name in a
 * table and never imported or called; anything not in the table is refused, naming it. A
 * persistent id is handed to the caller's persistent_load, which makes the storage it names.
 * Every value, container item and memo slot costs at least one opcode byte, so memory stays
 * proportional to the pickle's size; nesting is capped.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/pickle.h"

/* ---- pickle opcodes (Python's Lib/pickle.py names them) ---- */

enum {
    OP_MARK = '(', OP_STOP = '.', OP_BININT = 'J', OP_BININT1 = 'K', OP_BININT2 = 'M',
    OP_NONE = 'N', OP_BINPERSID = 'Q', OP_REDUCE = 'R', OP_BINBYTES = 'B',
    OP_SHORT_BINBYTES = 'C', OP_BINUNICODE = 'X', OP_APPEND = 'a', OP_BUILD = 'b',
    OP_GLOBAL = 'c', OP_EMPTY_DICT = '}', OP_APPENDS = 'e', OP_BINGET = 'h', OP_LONG_BINGET = 'j',
    OP_EMPTY_LIST = ']', OP_BINPUT = 'q', OP_LONG_BINPUT = 'r', OP_SETITEM = 's', OP_TUPLE = 't',
    OP_EMPTY_TUPLE = ')', OP_SETITEMS = 'u', OP_BINFLOAT = 'G',
    OP_PROTO = NNP_PICKLE_PROTO, OP_TUPLE1 = 0x85, OP_TUPLE2 = 0x86, OP_TUPLE3 = 0x87,
    OP_NEWTRUE = 0x88, OP_NEWFALSE = 0x89, OP_LONG1 = NNP_PICKLE_LONG1, OP_SHORT_BINUNICODE = 0x8c,
    OP_BINUNICODE8 = 0x8d, OP_BINBYTES8 = 0x8e, OP_STACK_GLOBAL = 0x93, OP_MEMOIZE = 0x94,
    OP_FRAME = NNP_PICKLE_FRAME
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

static const nnp_pv_global allowed_globals[] = {
    {"collections", "OrderedDict", NNP_PG_ORDERED_DICT, NNP_DTYPE_INVALID},
    {"torch._utils", "_rebuild_tensor_v2", NNP_PG_REBUILD_TENSOR, NNP_DTYPE_INVALID},
    {"torch._utils", "_rebuild_parameter", NNP_PG_REBUILD_PARAM, NNP_DTYPE_INVALID},
    {"torch._utils", "_rebuild_parameter_with_state", NNP_PG_REBUILD_PARAM, NNP_DTYPE_INVALID},
    {"torch", "FloatStorage", NNP_PG_STORAGE, NNP_F32},
    {"torch", "HalfStorage", NNP_PG_STORAGE, NNP_F16},
    {"torch", "BFloat16Storage", NNP_PG_STORAGE, NNP_BF16},
    {"torch", "DoubleStorage", NNP_PG_STORAGE, NNP_F64},
    {"torch", "LongStorage", NNP_PG_STORAGE, NNP_I64},
    {"torch", "IntStorage", NNP_PG_STORAGE, NNP_I32},
    {"torch", "ShortStorage", NNP_PG_STORAGE, NNP_I16},
    {"torch", "CharStorage", NNP_PG_STORAGE, NNP_I8},
    {"torch", "ByteStorage", NNP_PG_STORAGE, NNP_U8},
    {"torch", "BoolStorage", NNP_PG_STORAGE, NNP_BOOL},
    {"torch", "float32", NNP_PG_DTYPE, NNP_DTYPE_INVALID},
    {"torch", "float64", NNP_PG_DTYPE, NNP_DTYPE_INVALID},
    {"torch", "float16", NNP_PG_DTYPE, NNP_DTYPE_INVALID},
    {"torch", "bfloat16", NNP_PG_DTYPE, NNP_DTYPE_INVALID},
    {"torch", "int64", NNP_PG_DTYPE, NNP_DTYPE_INVALID},
    {"torch", "int32", NNP_PG_DTYPE, NNP_DTYPE_INVALID},
    {"torch", "int16", NNP_PG_DTYPE, NNP_DTYPE_INVALID},
    {"torch", "int8", NNP_PG_DTYPE, NNP_DTYPE_INVALID},
    {"torch", "uint8", NNP_PG_DTYPE, NNP_DTYPE_INVALID},
    {"torch", "bool", NNP_PG_DTYPE, NNP_DTYPE_INVALID},
};

/* Storage types torch writes whose elements nnparity has no dtype for: refused as unsupported
 * rather than as hostile. */
static const char *const unsupported_storages[] = {
    "ComplexFloatStorage", "ComplexDoubleStorage", "QInt8Storage", "QInt32Storage",
    "QUInt8Storage", "QUInt4x2Storage", "QUInt2x4Storage", "UntypedStorage",
};

/* ---- values ---- */

static const char *const kind_names[] = {"None",  "bool",   "int",    "float",
                                         "str",   "bytes",  "tuple",  "list",
                                         "dict",  "global", "storage", "tensor"};

static const char *kind_name(const nnp_pv *v)
{
    return kind_names[v->kind];
}

const char *nnp__pickle_a_kind(const nnp_pv *v)
{
    static const char *const named[] = {
        "None",    "a bool", "an int", "a float",  "a str",     "a bytes object",
        "a tuple", "a list", "a dict", "a global", "a storage", "a tensor",
    };
    _Static_assert(sizeof named / sizeof *named == sizeof kind_names / sizeof *kind_names,
                   "one article per kind");
    return named[v->kind];
}

/* ---- the arena ---- */

struct nnp_pickle_chunk {
    struct nnp_pickle_chunk *next;
    size_t used, cap;
    max_align_t data[];
};

nnp_status nnp__pickle_fail(const nnp_pickle *L, nnp_status st, const char *fmt, ...)
{
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return nnp__fail(st, "%s: %s byte %" PRIu64 ": %s", L->path, L->member, L->at, msg);
}

void *nnp__pickle_alloc(nnp_pickle *L, size_t n)
{
    size_t align = sizeof(max_align_t);
    if (n > SIZE_MAX - align) {
        nnp__nomem();
        return NULL;
    }
    size_t need = (n + align - 1) / align * align;
    struct nnp_pickle_chunk *c = L->chunks;
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

nnp_pv *nnp__pickle_value(nnp_pickle *L, unsigned char kind)
{
    nnp_pv *v = nnp__pickle_alloc(L, sizeof *v);
    if (v) {
        memset(v, 0, sizeof *v);
        v->kind = kind;
        v->pos = L->at;
    }
    return v;
}

/* Append to a list or dict; the old item array stays in the arena (at most doubling the cost). */
static nnp_status seq_push(nnp_pickle *L, nnp_pv *c, nnp_pv *item)
{
    if (c->u.seq.n == c->u.seq.cap) {
        size_t cap = c->u.seq.cap ? c->u.seq.cap * 2 : 4;
        if (cap > SIZE_MAX / sizeof(nnp_pv *))
            return nnp__nomem();
        nnp_pv **v = nnp__pickle_alloc(L, cap * sizeof *v);
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

static nnp_status push(nnp_pickle *L, nnp_pv *v)
{
    if (!v)
        return NNP_ERR_NOMEM;
    if (!nnp__grow((void **)&L->stack, &L->scap, L->sn + 1, sizeof *L->stack))
        return nnp__nomem();
    L->stack[L->sn++] = v;
    return NNP_OK;
}

/* Values above the innermost open MARK: what an opcode may pop. */
static size_t avail(const nnp_pickle *L)
{
    return L->sn - (L->mn ? L->marks[L->mn - 1] : 0);
}

static nnp_status need_stack(const nnp_pickle *L, unsigned op, size_t k)
{
    if (avail(L) < k)
        return nnp__pickle_fail(L, NNP_ERR_FORMAT, "%s needs %zu value%s on the stack above the "
                                "last MARK, but there %s %zu (stack underflow)", opcode_name(op), k,
                                k == 1 ? "" : "s", avail(L) == 1 ? "is" : "are", avail(L));
    return NNP_OK;
}

/* Pop everything above the innermost MARK and the MARK itself: *items points at them (they
 * stay valid until the next push) and *count is how many. */
static nnp_status pop_mark(nnp_pickle *L, unsigned op, nnp_pv ***items, size_t *count)
{
    if (!L->mn)
        return nnp__pickle_fail(L, NNP_ERR_FORMAT, "%s without a MARK (stack underflow)",
                                opcode_name(op));
    size_t base = L->marks[--L->mn];
    /* nothing above the MARK: no items, and no offset from a stack that may never have been
     * allocated (NULL) */
    *items = L->sn > base ? L->stack + base : NULL;
    *count = L->sn - base;
    L->sn = base;
    return NNP_OK;
}

static nnp_status make_tuple(nnp_pickle *L, nnp_pv **items, size_t count)
{
    nnp_pv *t = nnp__pickle_value(L, NNP_PV_TUPLE);
    if (!t)
        return NNP_ERR_NOMEM;
    if (count) {
        if (count > SIZE_MAX / sizeof(nnp_pv *))
            return nnp__nomem();
        t->u.seq.v = nnp__pickle_alloc(L, count * sizeof(nnp_pv *));
        if (!t->u.seq.v)
            return NNP_ERR_NOMEM;
        memcpy(t->u.seq.v, items, count * sizeof(nnp_pv *));
    }
    t->u.seq.n = t->u.seq.cap = count;
    return push(L, t);
}

void nnp__pickle_printable(char *dst, size_t cap, const char *s, size_t n)
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
static nnp_status push_global(nnp_pickle *L, const char *mod, size_t mlen, const char *name,
                              size_t nlen)
{
    for (size_t i = 0; i < sizeof allowed_globals / sizeof *allowed_globals; i++) {
        const nnp_pv_global *g = &allowed_globals[i];
        if (strlen(g->module) == mlen && memcmp(g->module, mod, mlen) == 0 &&
            strlen(g->name) == nlen && memcmp(g->name, name, nlen) == 0) {
            nnp_pv *v = nnp__pickle_value(L, NNP_PV_GLOBAL);
            if (v)
                v->u.g = g;
            return push(L, v);
        }
    }
    char m[128], nm[128];
    nnp__pickle_printable(m, sizeof m, mod, mlen);
    nnp__pickle_printable(nm, sizeof nm, name, nlen);
    if (mlen == 5 && memcmp(mod, "torch", 5) == 0)
        for (size_t i = 0; i < sizeof unsupported_storages / sizeof *unsupported_storages; i++)
            if (strlen(unsupported_storages[i]) == nlen &&
                memcmp(unsupported_storages[i], name, nlen) == 0)
                return nnp__pickle_fail(L, NNP_ERR_UNSUPPORTED, "storage type 'torch.%s' holds "
                                        "elements nnparity has no dtype for (complex, quantized or "
                                        "untyped storage)", nm);
    return nnp__pickle_fail(L, NNP_ERR_UNSUPPORTED, "global '%s.%s' is not allowed "
                            "(restricted unpickler)", m, nm);
}

/* torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad,
 * backward_hooks[, metadata]) */
static nnp_status rebuild_tensor(nnp_pickle *L, const nnp_pv *args)
{
    static const char sig[] = "_rebuild_tensor_v2(storage, storage_offset, size, stride, "
                              "requires_grad, backward_hooks[, metadata])";
    size_t na = args->u.seq.n;
    nnp_pv *const *a = args->u.seq.v;
    if (na != 6 && na != 7)
        return nnp__pickle_fail(L, NNP_ERR_FORMAT, "%s called with %zu arguments", sig, na);
    if (a[0]->kind != NNP_PV_STORAGE || a[1]->kind != NNP_PV_INT || a[1]->u.i < 0 ||
        a[2]->kind != NNP_PV_TUPLE || a[3]->kind != NNP_PV_TUPLE)
        return nnp__pickle_fail(L, NNP_ERR_FORMAT, "%s called with %s, %s, %s and %s (expected a "
                                "storage, an int >= 0 and two tuples)", sig,
                                nnp__pickle_a_kind(a[0]), nnp__pickle_a_kind(a[1]),
                                nnp__pickle_a_kind(a[2]), nnp__pickle_a_kind(a[3]));
    size_t nd = a[2]->u.seq.n;
    if (a[3]->u.seq.n != nd)
        return nnp__pickle_fail(L, NNP_ERR_FORMAT, "tensor has %zu sizes but %zu "
                                "strides (tensor shape)", nd, a[3]->u.seq.n);
    if (nd > NNP_PICKLE_MAX_DIMS)
        return nnp__pickle_fail(L, NNP_ERR_UNSUPPORTED, "tensor has %zu dimensions, more than %d",
                                nd, NNP_PICKLE_MAX_DIMS);
    if (na == 7 && a[6]->kind == NNP_PV_DICT) {
        /* metadata holds torch's lazy "neg"/"conj" bits: reading the storage as it is would
         * give wrong values */
        for (size_t i = 1; i < a[6]->u.seq.n; i += 2)
            if (a[6]->u.seq.v[i]->kind != NNP_PV_BOOL || a[6]->u.seq.v[i]->u.b)
                return nnp__pickle_fail(L, NNP_ERR_UNSUPPORTED, "tensor metadata sets a flag (a "
                                        "lazily negated or conjugated view); save it "
                                        "after .resolve_neg()");
    }
    nnp_pv_tensor *t = nnp__pickle_alloc(L, sizeof *t);
    if (!t)
        return NNP_ERR_NOMEM;
    t->st = a[0]->u.st;
    t->offset = (uint64_t)a[1]->u.i;
    t->ndim = (uint32_t)nd;
    for (size_t k = 0; k < nd; k++) {
        const nnp_pv *sz = a[2]->u.seq.v[k], *sd = a[3]->u.seq.v[k];
        if (sz->kind != NNP_PV_INT || sd->kind != NNP_PV_INT || sz->u.i < 0 || sd->u.i < 0)
            return nnp__pickle_fail(L, NNP_ERR_FORMAT, "tensor dimension %zu has size %s %" PRId64
                                    " and stride %s %" PRId64 " (sizes and strides are ints >= 0)",
                                    k, kind_name(sz), sz->kind == NNP_PV_INT ? sz->u.i : 0,
                                    kind_name(sd), sd->kind == NNP_PV_INT ? sd->u.i : 0);
        t->shape[k] = (uint64_t)sz->u.i;
        t->stride[k] = (uint64_t)sd->u.i;
    }
    nnp_pv *v = nnp__pickle_value(L, NNP_PV_TENSOR);
    if (v)
        v->u.t = t;
    return push(L, v);
}

static nnp_status reduce(nnp_pickle *L)
{
    nnp_status st = need_stack(L, OP_REDUCE, 2);
    if (st)
        return st;
    nnp_pv *args = L->stack[--L->sn], *fn = L->stack[--L->sn];
    if (fn->kind != NNP_PV_GLOBAL)
        return nnp__pickle_fail(L, NNP_ERR_FORMAT, "REDUCE calls %s, not a global "
                                "(restricted unpickler)", nnp__pickle_a_kind(fn));
    const nnp_pv_global *g = fn->u.g;
    if (args->kind != NNP_PV_TUPLE)
        return nnp__pickle_fail(L, NNP_ERR_FORMAT, "REDUCE of '%s.%s' takes a tuple of "
                                "arguments, not %s", g->module, g->name, nnp__pickle_a_kind(args));
    switch (g->kind) {
    case NNP_PG_ORDERED_DICT: {
        /* Python pickles an OrderedDict as OrderedDict() followed by SETITEMS */
        if (args->u.seq.n)
            return nnp__pickle_fail(L, NNP_ERR_UNSUPPORTED, "collections.OrderedDict called with "
                                    "%zu arguments (only OrderedDict() is read)", args->u.seq.n);
        nnp_pv *v = nnp__pickle_value(L, NNP_PV_DICT);
        if (v)
            v->ordered = true;
        return push(L, v);
    }
    case NNP_PG_REBUILD_TENSOR:
        return rebuild_tensor(L, args);
    case NNP_PG_REBUILD_PARAM: {
        /* _rebuild_parameter(data, requires_grad, backward_hooks[, state]): a Parameter is
         * its data tensor here */
        size_t na = args->u.seq.n;
        if ((na != 3 && na != 4) || args->u.seq.v[0]->kind != NNP_PV_TENSOR)
            return nnp__pickle_fail(L, NNP_ERR_FORMAT, "%s.%s called with %zu arguments%s "
                                    "(expected a tensor, requires_grad and hooks)", g->module,
                                    g->name, na,
                                    na && args->u.seq.v[0]->kind != NNP_PV_TENSOR
                                        ? ", the first not a tensor"
                                        : "");
        return push(L, args->u.seq.v[0]);
    }
    default:
        return nnp__pickle_fail(L, NNP_ERR_UNSUPPORTED, "global '%s.%s' is not callable "
                                "(restricted unpickler)", g->module, g->name);
    }
}

/* ---- the machine ---- */

/* Whether `cnt` more bytes are there after *cur; fails naming the opcode when not. */
static nnp_status need_bytes(const nnp_pickle *L, unsigned op, uint64_t cur, uint64_t cnt)
{
    if (cnt > L->n - cur)
        return nnp__pickle_fail(L, NNP_ERR_FORMAT, "%s needs %" PRIu64 " more bytes, but the "
                                "pickle ends after %" PRIu64 " (truncated)", opcode_name(op), cnt,
                                L->n - cur);
    return NNP_OK;
}

/* Memo indices: a pickle stores one value per PUT, so an index at or past the pickle's size
 * cannot come from a real writer and would only make the memo huge. */
static nnp_status memo_put(nnp_pickle *L, uint64_t idx, unsigned op)
{
    nnp_status st = need_stack(L, op, 1);
    if (st)
        return st;
    if (idx >= L->n)
        return nnp__pickle_fail(L, NNP_ERR_FORMAT, "memo index %" PRIu64 " is beyond what a pickle "
                                "of %" PRIu64 " bytes can use (memo bound)", idx, L->n);
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

static nnp_status memo_get(nnp_pickle *L, uint64_t idx)
{
    if (idx >= L->memo_cap || !L->memo[idx])
        return nnp__pickle_fail(L, NNP_ERR_FORMAT, "memo index %" PRIu64 " was never stored (memo)",
                                idx);
    return push(L, L->memo[idx]);
}

static nnp_status push_str(nnp_pickle *L, const unsigned char *s, uint64_t n, bool text)
{
    if (text) {
        size_t bad;
        if (!nnp__utf8_valid(s, (size_t)n, &bad))
            return nnp__pickle_fail(L, NNP_ERR_FORMAT, "string is not valid UTF-8 at its "
                                    "byte %zu (UTF-8)", bad);
    }
    nnp_pv *v = nnp__pickle_value(L, text ? NNP_PV_STR : NNP_PV_BYTES);
    if (v) {
        v->u.str.s = (const char *)s;
        v->u.str.n = (size_t)n;
    }
    return push(L, v);
}

/* GLOBAL's two arguments are newline-terminated lines. */
static nnp_status global_line(const nnp_pickle *L, uint64_t *cur, const char **s, size_t *len)
{
    const unsigned char *start = L->p + *cur;
    uint64_t left = L->n - *cur;
    size_t max = left < NNP_PICKLE_MAX_GLOBAL_PART + 1 ? (size_t)left
                                                       : NNP_PICKLE_MAX_GLOBAL_PART + 1;
    const unsigned char *nl = memchr(start, '\n', max);
    if (!nl)
        return nnp__pickle_fail(L, NNP_ERR_FORMAT, "GLOBAL's module or name is not a line of at "
                                "most %d bytes (GLOBAL)", NNP_PICKLE_MAX_GLOBAL_PART);
    *s = (const char *)start;
    *len = (size_t)(nl - start);
    *cur += *len + 1;
    return NNP_OK;
}

nnp_status nnp__pickle_run(nnp_pickle *L, nnp_pv **result)
{
    uint64_t cur = 0;
    nnp_status st = NNP_OK;
    while (!st) {
        L->at = cur;
        if (cur >= L->n)
            return nnp__pickle_fail(L, NNP_ERR_FORMAT, "the pickle ends without a STOP "
                                    "opcode (truncated)");
        unsigned op = L->p[cur++];
        const unsigned char *q = L->p + cur; /* the opcode's argument bytes */
        nnp_pv *v;
        if (cur == 1 && op != OP_PROTO)
            return nnp__pickle_fail(L, NNP_ERR_UNSUPPORTED, "the pickle does not start with PROTO "
                                    "(protocol 0 or 1; torch writes protocol 2 and later)");
        switch (op) {
        case OP_PROTO:
            if ((st = need_bytes(L, op, cur, 1)))
                break;
            if (L->at != 0)
                return nnp__pickle_fail(L, NNP_ERR_FORMAT, "PROTO after the first opcode");
            if (q[0] < 2 || q[0] > 5)
                return nnp__pickle_fail(L, NNP_ERR_UNSUPPORTED, "pickle protocol %u "
                                        "(2 to 5 are read)", q[0]);
            cur++;
            break;
        case OP_FRAME: /* framing only batches reads; the opcodes inside run as usual */
            if ((st = need_bytes(L, op, cur, 8)))
                break;
            if (nnp__le64(q) > L->n - cur - 8)
                return nnp__pickle_fail(L, NNP_ERR_FORMAT, "FRAME of %" PRIu64 " bytes runs past "
                                        "the end of the pickle (truncated)", nnp__le64(q));
            cur += 8;
            break;
        case OP_STOP:
            if (L->mn)
                return nnp__pickle_fail(L, NNP_ERR_FORMAT, "STOP with %zu MARKs still open", L->mn);
            if (L->sn != 1)
                return nnp__pickle_fail(L, NNP_ERR_FORMAT, "STOP with %zu values on "
                                        "the stack, not 1", L->sn);
            if (cur != L->n)
                return nnp__pickle_fail(L, NNP_ERR_FORMAT, "%" PRIu64 " bytes after "
                                        "STOP (trailing data)", L->n - cur);
            *result = L->stack[0];
            return NNP_OK;
        case OP_MARK:
            if (L->mn >= NNP_PICKLE_MAX_DEPTH)
                return nnp__pickle_fail(L, NNP_ERR_FORMAT, "more than %d MARKs open "
                                        "(nesting too deep)", NNP_PICKLE_MAX_DEPTH);
            if (!nnp__grow((void **)&L->marks, &L->mcap, L->mn + 1, sizeof *L->marks))
                return nnp__nomem();
            L->marks[L->mn++] = L->sn;
            break;
        case OP_EMPTY_DICT:
            st = push(L, nnp__pickle_value(L, NNP_PV_DICT));
            break;
        case OP_EMPTY_LIST:
            st = push(L, nnp__pickle_value(L, NNP_PV_LIST));
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
            nnp_pv **items;
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
            nnp_pv *target = L->stack[L->sn - k - 1];
            if (target->kind != (op == OP_SETITEM ? NNP_PV_DICT : NNP_PV_LIST))
                return nnp__pickle_fail(L, NNP_ERR_FORMAT, "%s on %s (restricted unpickler)",
                                        opcode_name(op), nnp__pickle_a_kind(target));
            for (size_t i = 0; i < k && !st; i++)
                st = seq_push(L, target, L->stack[L->sn - k + i]);
            L->sn -= k;
            break;
        }
        case OP_SETITEMS:
        case OP_APPENDS: {
            nnp_pv **items;
            size_t k;
            if ((st = pop_mark(L, op, &items, &k)))
                break;
            if (!avail(L))
                return nnp__pickle_fail(L, NNP_ERR_FORMAT, "%s has no container below its MARK "
                                        "(stack underflow)", opcode_name(op));
            nnp_pv *target = L->stack[L->sn - 1];
            if (target->kind != (op == OP_SETITEMS ? NNP_PV_DICT : NNP_PV_LIST))
                return nnp__pickle_fail(L, NNP_ERR_FORMAT, "%s on %s (restricted unpickler)",
                                        opcode_name(op), nnp__pickle_a_kind(target));
            if (op == OP_SETITEMS && k % 2)
                return nnp__pickle_fail(L, NNP_ERR_FORMAT, "SETITEMS with an odd number (%zu) "
                                        "of keys and values", k);
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
            if (!(v = nnp__pickle_value(L, NNP_PV_INT)))
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
                return nnp__pickle_fail(L, NNP_ERR_UNSUPPORTED, "LONG1 integer of %u bytes "
                                        "(wider than 64 bits)", k);
            uint64_t u = 0;
            for (unsigned b = 0; b < k; b++)
                u |= (uint64_t)q[1 + b] << (8 * b);
            if (k && k < 8 && (q[k] & 0x80)) /* sign-extend two's complement */
                u |= ~UINT64_C(0) << (8 * k);
            if (!(v = nnp__pickle_value(L, NNP_PV_INT)))
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
            if (!(v = nnp__pickle_value(L, NNP_PV_FLOAT)))
                return NNP_ERR_NOMEM;
            memcpy(&v->u.f, &u, sizeof u);
            cur += 8;
            st = push(L, v);
            break;
        }
        case OP_NEWTRUE:
        case OP_NEWFALSE:
            if (!(v = nnp__pickle_value(L, NNP_PV_BOOL)))
                return NNP_ERR_NOMEM;
            v->u.b = op == OP_NEWTRUE;
            st = push(L, v);
            break;
        case OP_NONE:
            st = push(L, nnp__pickle_value(L, NNP_PV_NONE));
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
            nnp_pv *mod = L->stack[L->sn - 2], *name = L->stack[L->sn - 1];
            if (mod->kind != NNP_PV_STR || name->kind != NNP_PV_STR)
                return nnp__pickle_fail(L, NNP_ERR_FORMAT, "STACK_GLOBAL takes two "
                                        "strings, not %s and %s", nnp__pickle_a_kind(mod),
                                        nnp__pickle_a_kind(name));
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
            nnp_pv *obj = L->stack[L->sn - 2];
            if (obj->kind != NNP_PV_DICT || !obj->ordered)
                return nnp__pickle_fail(L, NNP_ERR_UNSUPPORTED, "BUILD on %s (only an "
                                        "OrderedDict's attributes are allowed; restricted "
                                        "unpickler)",
                                        obj->kind == NNP_PV_DICT ? "a plain dict"
                                                                 : nnp__pickle_a_kind(obj));
            L->sn--;
            break;
        }
        case OP_BINPERSID: {
            if ((st = need_stack(L, op, 1)))
                break;
            nnp_pv *pid = L->stack[--L->sn];
            if (!(st = L->persistent_load(L->ctx, L, pid, &v)))
                st = push(L, v);
            break;
        }
        default: {
            const char *name = opcode_name(op);
            if (name)
                return nnp__pickle_fail(L, NNP_ERR_UNSUPPORTED, "opcode %s (0x%02x) is not allowed "
                                        "(restricted unpickler)", name, op);
            return nnp__pickle_fail(L, NNP_ERR_FORMAT, "unknown opcode 0x%02x "
                                    "(restricted unpickler)", op);
        }
        }
    }
    return st;
}

void nnp__pickle_free(nnp_pickle *L)
{
    while (L->chunks) {
        struct nnp_pickle_chunk *next = L->chunks->next;
        free(L->chunks);
        L->chunks = next;
    }
    free(L->stack);
    free(L->marks);
    free(L->memo);
}
