/*
 * torch_pt.c - reads PyTorch checkpoints as torch.save writes them since torch 1.6 (.pt, .pth,
 * .bin): a zip holding <archive>/data.pkl, a pickle of the saved object, and one member
 * <archive>/data/<key> per tensor storage.
 *
 * data.pkl is run on the restricted unpickler (pickle.c), which builds plain values and never
 * imports or calls what the pickle names. Its persistent ids come back here: each names the
 * storage whose bytes are the member <archive>/data/<key>.
 *
 * The object is then flattened into records: nested dicts, lists and tuples give dotted names
 * ("layer.0.weight"), plain leaves (numbers, strings, None) become metadata under their names,
 * and a bare tensor takes the file's stem. A contiguous tensor points into its storage member
 * in the mapping. Any other view (transposed, strided, or a slice of a shared storage) gets a
 * loader that gathers its elements into C order on its first nnp_dump_data. A stored storage
 * member is checked against its CRC-32 when a tensor over it is first read (dump.c).
 *
 * The pre-1.6 format (a bare sequence of pickles) is recognised and refused with advice.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/pickle.h"
#include "formats/torch_pt.h"

/* A record name longer than this is refused. */
#define MAX_NAME 4096
/* Plain leaves kept as metadata: at most this many, strings at most this long. */
#define MAX_META 4096
#define MAX_META_STRING 1024

/* A storage: the bytes of one data/<key> member, read as `dtype` elements. */
struct nnp_pv_storage {
    const unsigned char *bytes;
    uint64_t numel;
    nnp_dtype dtype;
    const char *member; /* the zip's copy of the member name */
    nnp_member_check *check; /* a stored member's CRC-32, checked when first read; or NULL */
};

typedef struct tload {
    nnp_dump *d;
    const char *path;   /* the checkpoint, as named in messages and records */
    const char *member; /* data.pkl's member name */
    const nnp_zip *zip;
    const char *prefix; /* "<archive>/", where data.pkl was found */
    size_t prefix_len;
    bool big_endian;           /* the archive's byteorder member says "big" */
    nnp_pv_storage **storages; /* by zip entry index: the storage read from that member */
    nnp_pickle pk;             /* the machine data.pkl runs on */

    /* flattening */
    nnp_sbuf name;
    uint64_t visits, max_visits;
    uint64_t out_bytes, max_out_bytes; /* names and metadata made, against amplification */
    size_t nmeta;
} tload;

/* ---- storages (BINPERSID) ---- */

static bool str_is(const nnp_pv *v, const char *s)
{
    return v->kind == NNP_PV_STR && v->u.str.n == strlen(s) &&
           memcmp(v->u.str.s, s, v->u.str.n) == 0;
}

/* A persistent id is ('storage', storage type, key, location, numel); the storage's bytes are
 * the member <archive>/data/<key>. */
static nnp_status persistent_load(void *ctx, nnp_pickle *P, const nnp_pv *pid, nnp_pv **out)
{
    tload *L = ctx;
    if (pid->kind != NNP_PV_TUPLE || pid->u.seq.n != 5 || !str_is(pid->u.seq.v[0], "storage"))
        return nnp__pickle_fail(P, NNP_ERR_UNSUPPORTED, "persistent id is %s%s, not a ('storage', "
                                "type, key, location, numel) tuple (only storages are loaded)",
                                nnp__pickle_a_kind(pid),
                                pid->kind == NNP_PV_TUPLE ? " of another shape" : "");
    nnp_pv *const *f = pid->u.seq.v;
    if (f[1]->kind != NNP_PV_GLOBAL || f[1]->u.g->kind != NNP_PG_STORAGE)
        return nnp__pickle_fail(P, NNP_ERR_FORMAT, "persistent id's storage type is %s, not a "
                                "torch storage class (persistent id)", nnp__pickle_a_kind(f[1]));
    if (f[2]->kind != NNP_PV_STR || f[3]->kind != NNP_PV_STR || f[4]->kind != NNP_PV_INT ||
        f[4]->u.i < 0)
        return nnp__pickle_fail(P, NNP_ERR_FORMAT, "persistent id's key, location and numel are "
                                "%s, %s and %s%s, not str, str and a non-negative "
                                "int (persistent id)", nnp__pickle_a_kind(f[2]),
                                nnp__pickle_a_kind(f[3]), nnp__pickle_a_kind(f[4]),
                                f[4]->kind == NNP_PV_INT && f[4]->u.i < 0 ? " below 0" : "");
    nnp_dtype dtype = f[1]->u.g->dtype;
    uint64_t numel = (uint64_t)f[4]->u.i, nbytes;
    size_t klen = f[2]->u.str.n;
    char key[128];
    nnp__pickle_printable(key, sizeof key, f[2]->u.str.s, klen);
    if (memchr(f[2]->u.str.s, 0, klen) || klen > NNP_PICKLE_MAX_GLOBAL_PART)
        return nnp__pickle_fail(P, NNP_ERR_FORMAT, "storage key '%s' holds a NUL byte or is over "
                                "%d bytes (persistent id)", key, NNP_PICKLE_MAX_GLOBAL_PART);
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
        nnp__pickle_printable(shown, sizeof shown, member, len);
        st = nnp__pickle_fail(P, NNP_ERR_FORMAT, "persistent id names storage '%s', but the "
                              "archive holds no member '%s' (missing storage)", key, shown);
    }
    free(member);
    if (st)
        return st;
    size_t idx = (size_t)(e - L->zip->entries);
    nnp_pv_storage *s = L->storages[idx];
    if (s) { /* a storage shared by several tensors: each refers to it again */
        if (s->dtype != dtype || s->numel != numel)
            return nnp__pickle_fail(P, NNP_ERR_FORMAT, "storage '%s' is declared as %" PRIu64 " %s "
                                    "elements here but as %" PRIu64 " %s elements "
                                    "before (persistent id)", key, numel, nnp_dtype_name(dtype),
                                    s->numel, nnp_dtype_name(s->dtype));
    } else {
        bool fits = nnp__mul_u64(numel, nnp_dtype_size(dtype), &nbytes);
        if (!fits || nbytes != e->size)
            return nnp__pickle_fail(P, NNP_ERR_FORMAT, "storage '%s' holds %" PRIu64 " bytes, but "
                                    "its numel %" PRIu64 " of %s needs %s%" PRIu64
                                    " (storage size)", key, e->size, numel, nnp_dtype_name(dtype),
                                    fits ? "" : "more than ", fits ? nbytes : UINT64_MAX);
        const unsigned char *bytes = nnp__zip_stored_data(L->zip, e);
        nnp_member_check *check = NULL;
        if (bytes && !(check = nnp__dump_member_check(L->d, L->path, e->name, bytes, e->size,
                                                       e->crc32)))
            return NNP_ERR_NOMEM;
        if (!bytes && e->size) {
            /* torch writes storages stored; a deflated one is read into memory whole */
            unsigned char *buf;
            if ((st = nnp__zip_extract_alloc(L->zip, e, &buf)))
                return st;
            if ((st = nnp__dump_defer(L->d, free, buf)))
                return st;
            bytes = buf;
        }
        s = nnp__pickle_alloc(P, sizeof *s);
        if (!s)
            return NNP_ERR_NOMEM;
        s->bytes = bytes;
        s->numel = numel;
        s->dtype = dtype;
        s->member = e->name;
        s->check = check;
        L->storages[idx] = s;
    }
    nnp_pv *v = nnp__pickle_value(P, NNP_PV_STORAGE);
    if (!v)
        return NNP_ERR_NOMEM;
    v->u.st = s;
    *out = v;
    return NNP_OK;
}

/* ---- REDUCE: the few callables the allowlist names ---- */


/* Every element a view reaches lies in its storage: offset + sum((size-1) * stride) < numel. */
static nnp_status check_extent(const tload *L, const char *name, const nnp_pv *v, uint64_t nelem)
{
    const nnp_pv_tensor *t = v->u.t;
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

/* Elements [first, first + n) of the view in C order, the last dimension innermost.
 * check_extent bounded every position, so nothing here can leave the storage. */
static void gather_range(void *ctx, uint64_t first, uint64_t n, void *dst)
{
    const gather *g = ctx;
    unsigned char *out = dst;
    uint64_t idx[NNP_PICKLE_MAX_DIMS] = {0}, off = 0, rest = first;
    uint32_t last = g->ndim - 1;
    for (uint32_t k = g->ndim; k-- > 0;) { /* where element `first` is */
        idx[k] = rest % g->shape[k];
        rest /= g->shape[k];
        off += idx[k] * g->step[k];
    }
    while (n) {
        uint64_t take = g->shape[last] - idx[last] < n ? g->shape[last] - idx[last] : n;
        const unsigned char *src = g->base + off;
        for (uint64_t j = 0; j < take; j++, src += g->step[last], out += g->es)
            copy_elem(out, src, g->es, g->swap);
        n -= take;
        /* to the start of the next row: positions wrap modulo 2^64 on the way and come back */
        off -= idx[last] * g->step[last];
        idx[last] = 0;
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
}

static nnp_status gather_load(void *ctx, void *dst, uint64_t nbytes)
{
    const gather *g = ctx;
    gather_range(ctx, 0, nbytes / g->es, dst);
    return NNP_OK;
}

/* How many of its storage's elements a view reads, at most: the span from its first element
 * to its last, and no more than the product of the sizes it steps along (an expanded dimension,
 * stride 0, reads one element however long it is). check_extent bounded the span. */
static uint64_t view_reach(const nnp_pv_tensor *t, uint64_t nelem)
{
    if (!nelem)
        return 0;
    uint64_t span = 1, stepped = 1;
    for (uint32_t k = 0; k < t->ndim; k++) {
        span += (t->shape[k] - 1) * t->stride[k];
        if (t->stride[k])
            stepped *= t->shape[k]; /* a factor of nelem, which did not overflow */
    }
    return span < stepped ? span : stepped;
}

static nnp_status add_tensor(tload *L, const char *name, const nnp_pv *v)
{
    const nnp_pv_tensor *t = v->u.t;
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
    r->check = t->st->check;
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
        r->check_off = nelem ? t->offset * es : 0;
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
    r->load_range = gather_range;
    r->load_ctx = g;
    r->view_stored = t->st->numel * es; /* the member's size */
    r->stored = view_reach(t, nelem) * es;
    r->stored_set = true;
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
static nnp_status add_leaf(tload *L, const char *name, const nnp_pv *v)
{
    char num[64];
    const char *val = NULL;
    switch (v->kind) {
    case NNP_PV_NONE:
        val = "None";
        break;
    case NNP_PV_BOOL:
        val = v->u.b ? "True" : "False";
        break;
    case NNP_PV_INT:
        snprintf(num, sizeof num, "%" PRId64, v->u.i);
        val = num;
        break;
    case NNP_PV_FLOAT:
        float_repr(v->u.f, num, sizeof num);
        val = num;
        break;
    case NNP_PV_GLOBAL:
        if (v->u.g->kind == NNP_PG_DTYPE) {
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
    if (v->kind == NNP_PV_STR) {
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
static nnp_status name_push(tload *L, const nnp_pv *at, const char *s, size_t n)
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

static nnp_status flatten(tload *L, nnp_pv *v, int depth);

/* A container's items, in pickle order: dict keys that are strings or ints name their values,
 * list and tuple items are named by index. */
static nnp_status flatten_container(tload *L, nnp_pv *v, int depth)
{
    if (depth >= NNP_PICKLE_MAX_DEPTH)
        return nnp__fail(NNP_ERR_FORMAT, "%s: %s byte %" PRIu64 ": containers nested deeper than "
                         "%d levels (nesting bound)", L->path, L->member, v->pos,
                         NNP_PICKLE_MAX_DEPTH);
    if (v->busy)
        return nnp__fail(NNP_ERR_FORMAT, "%s: %s byte %" PRIu64 ": %s contains itself "
                         "(cycle)", L->path, L->member, v->pos, nnp__pickle_a_kind(v));
    v->busy = true;
    size_t base = L->name.len;
    bool dict = v->kind == NNP_PV_DICT;
    nnp_status st = NNP_OK;
    for (size_t i = 0; i < v->u.seq.n && !st; i += dict ? 2 : 1) {
        char num[32];
        const nnp_pv *key = dict ? v->u.seq.v[i] : NULL;
        nnp_pv *item = v->u.seq.v[dict ? i + 1 : i];
        if (!dict) {
            snprintf(num, sizeof num, "%zu", i);
            st = name_push(L, v, num, strlen(num));
        } else if (key->kind == NNP_PV_STR) {
            st = name_push(L, key, key->u.str.s, key->u.str.n);
        } else if (key->kind == NNP_PV_INT) { /* optimizer state is keyed by parameter index */
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

static nnp_status flatten(tload *L, nnp_pv *v, int depth)
{
    if (++L->visits > L->max_visits)
        return nnp__fail(NNP_ERR_FORMAT, "%s: %s: the pickle's values are reached more than %"
                         PRIu64 " times (shared containers multiply them; amplification bound)",
                         L->path, L->member, L->max_visits);
    if (v->kind == NNP_PV_DICT || v->kind == NNP_PV_LIST || v->kind == NNP_PV_TUPLE)
        return flatten_container(L, v, depth);
    const char *name = L->name.s ? L->name.s : "";
    if (v->kind == NNP_PV_TENSOR)
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
    if (n < 2 || head[0] != NNP_PICKLE_PROTO || head[1] < 2 || head[1] > 5)
        return false;
    size_t i = 2;
    if (n > i && head[i] == NNP_PICKLE_FRAME) /* protocol 4 and later frame their opcodes */
        i += 9;
    return n >= i + 12 && head[i] == NNP_PICKLE_LONG1 && head[i + 1] == 10 &&
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

/* The pickle torch reads: torch's PyTorchStreamReader takes the archive's name from the folder
 * of the zip's first member (central directory order) and reads <archive>/data.pkl; torch.load
 * refuses a zip with any member outside that folder (two archives in one zip, say), and so does
 * this reader, rather than read an archive torch would not. */
static nnp_status archive_pickle(const tload *L, const nnp_zip *z, const nnp_zip_entry **out)
{
    *out = NULL;
    const char *first = z->count ? z->entries[0].name : "";
    const char *slash = strchr(first, '/');
    if (!slash)
        return nnp__fail(NNP_ERR_FORMAT, "%s: the zip's first member '%s' is not in a folder, "
                         "so torch.load would refuse it: torch takes the archive from the first "
                         "member's folder (PyTorch checkpoint)", L->path, first);
    size_t folder = (size_t)(slash - first) + 1;
    char *name = malloc(folder + sizeof "data.pkl");
    if (!name)
        return nnp__nomem();
    for (size_t i = 1; i < z->count; i++)
        if (strncmp(z->entries[i].name, first, folder) != 0) {
            free(name);
            return nnp__fail(NNP_ERR_FORMAT, "%s: member '%s' is outside the archive '%.*s' that "
                             "the zip's first member names, so torch.load would refuse the file "
                             "(PyTorch checkpoint)", L->path, z->entries[i].name, (int)folder,
                             first);
        }
    memcpy(name, first, folder);
    memcpy(name + folder, "data.pkl", sizeof "data.pkl");
    *out = nnp__zip_find(z, name);
    nnp_status st = *out ? NNP_OK
                         : nnp__fail(NNP_ERR_FORMAT, "%s: the zip's first member '%s' names the "
                                     "archive '%.*s', which holds no data.pkl: torch reads only "
                                     "the first member's archive (PyTorch checkpoint)", L->path,
                                     first, (int)folder, first);
    free(name);
    return st;
}

static nnp_status load_archive(tload *L, const unsigned char *base, uint64_t size)
{
    nnp_zip z;
    nnp_status st = nnp__zip_open(L->path, base, size, &z);
    if (st)
        return st;
    L->zip = &z;
    const nnp_zip_entry *pkl = NULL;
    unsigned char *inflated = NULL;
    nnp_pickle *P = &L->pk;
    nnp_pv *root = NULL;
    if (!nnp__torch_pickle_entry(&z)) {
        st = nnp__fail(NNP_ERR_FORMAT, "%s: the zip holds no <archive>/data.pkl, so it is not a "
                       "PyTorch checkpoint", L->path);
        goto out;
    }
    if ((st = archive_pickle(L, &z, &pkl)))
        goto out;
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
    P->path = L->path;
    P->member = L->member;
    P->persistent_load = persistent_load;
    P->ctx = L;
    P->p = nnp__zip_stored_data(&z, pkl);
    P->n = pkl->size;
    if (!P->p) { /* torch stores data.pkl; a deflated one is inflated (and its CRC checked) */
        if ((st = nnp__zip_extract_alloc(&z, pkl, &inflated)))
            goto out;
        P->p = inflated;
    } else if ((st = nnp__zip_extract(&z, pkl, 0, NULL, 0))) { /* read whole now: check it */
        goto out;
    }
    /* Each value, item and reference costs an opcode byte; flattening a shared container
     * visits it again, so allow a few visits per byte before calling it amplification. */
    L->max_visits = 4 * P->n + 64;
    L->max_out_bytes = 16 * P->n + (UINT64_C(1) << 20);
    if ((st = nnp__pickle_run(P, &root)))
        goto out;
    /* a bare tensor (or a bare plain value) is named after the file, as npy does */
    if (root->kind != NNP_PV_DICT && root->kind != NNP_PV_LIST && root->kind != NNP_PV_TUPLE)
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
    nnp__pickle_free(&L.pk);
    free(L.storages);
    nnp__sbuf_free(&L.name);
    return st;
}

