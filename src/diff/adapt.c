/*
 * adapt.c - the adapters a rules file attaches to a record (transpose, reshape, slice, part,
 * select, cast, the rotary row permutation) and the join of a fused tensor's parts, so that two
 * tensors laid out differently can be compared element for element.
 *
 * A record's bytes are looked at through a strided view: transposing, slicing and selecting only
 * change the view, so a slice of a fused weight costs nothing. Bytes are copied only where a
 * layout cannot be expressed as a view (a reshape of a transposed tensor, a cast, the rotary
 * permutation, a join) and at the end when the view is not plain C order. Without data (shape-only
 * mode) the same code works out the shape a pair will be compared at, before anything is read.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "diff/diff.h"

typedef struct {
    nnp_dtype dtype;
    uint32_t ndim;
    uint64_t shape[NNP_ADAPT_MAX_DIMS];
    int64_t stride[NNP_ADAPT_MAX_DIMS]; /* in elements */
    uint64_t offset;                    /* in elements, from base */
    const unsigned char *base;          /* NULL: shape only */
    void *owned;                        /* base, when a copy made here */
} view;

void nnp__tensor_free(nnp_tensor *t)
{
    if (!t)
        return;
    free(t->owned);
    t->owned = NULL;
    t->data = NULL;
}

static void contiguous_strides(view *v)
{
    int64_t s = 1;
    for (uint32_t k = v->ndim; k-- > 0;) {
        v->stride[k] = s;
        s *= (int64_t)v->shape[k];
    }
}

static bool is_contiguous(const view *v)
{
    int64_t s = 1;
    for (uint32_t k = v->ndim; k-- > 0;) {
        if (v->shape[k] != 1 && v->stride[k] != s)
            return false;
        s *= (int64_t)v->shape[k];
    }
    return true;
}

static uint64_t view_nelem(const view *v)
{
    uint64_t n = 1;
    for (uint32_t k = 0; k < v->ndim; k++)
        n *= v->shape[k];
    return n;
}

/* Gather the view's elements into a new C-ordered buffer, so it can be reshaped or cast. */
static nnp_status materialize(view *v)
{
    if (!v->base)
        return NNP_OK; /* shape only */
    size_t es = nnp_dtype_size(v->dtype);
    uint64_t n = view_nelem(v);
    unsigned char *dst = malloc(n ? n * es : 1);
    if (!dst)
        return nnp__nomem();
    if (n && is_contiguous(v)) {
        memcpy(dst, v->base + v->offset * es, n * es);
    } else if (n) {
        /* walk the index like an odometer; the innermost axis is the inner loop */
        uint64_t idx[NNP_ADAPT_MAX_DIMS] = {0};
        uint32_t last = v->ndim ? v->ndim - 1 : 0;
        uint64_t inner = v->ndim ? v->shape[last] : 1;
        int64_t istride = v->ndim ? v->stride[last] : 1;
        unsigned char *out = dst;
        for (uint64_t done = 0; done < n; done += inner) {
            int64_t at = (int64_t)v->offset;
            for (uint32_t k = 0; k + 1 < v->ndim; k++)
                at += (int64_t)idx[k] * v->stride[k];
            if (istride == 1) {
                memcpy(out, v->base + (uint64_t)at * es, inner * es);
                out += inner * es;
            } else {
                for (uint64_t i = 0; i < inner; i++, out += es)
                    memcpy(out, v->base + (uint64_t)(at + (int64_t)i * istride) * es, es);
            }
            for (uint32_t k = last; k-- > 0;) {
                if (++idx[k] < v->shape[k])
                    break;
                idx[k] = 0;
            }
        }
    }
    free(v->owned);
    v->owned = dst;
    v->base = dst;
    v->offset = 0;
    contiguous_strides(v);
    return NNP_OK;
}

/* An adapter that does not fit the tensor it meets: the pair cannot be compared. */
static nnp_status unfit(const view *v, const nnp_op *op, const char *why)
{
    nnp_sbuf d = {0};
    nnp__op_describe(&d, op);
    char shape[256];
    nnp__format_shape(shape, sizeof shape, v->ndim, v->shape);
    nnp_status st = nnp__fail(NNP_ERR_ARG, "'%s' does not fit a tensor of shape %s: %s",
                              d.s ? d.s : "?", shape, why);
    nnp__sbuf_free(&d);
    return st;
}

/* A possibly negative axis, counted from the end, into [0, ndim). */
static bool axis_of(int64_t axis, uint32_t ndim, uint32_t *out)
{
    if (axis < 0)
        axis += (int64_t)ndim;
    if (axis < 0 || axis >= (int64_t)ndim)
        return false;
    *out = (uint32_t)axis;
    return true;
}

static nnp_status op_transpose(view *v, const nnp_op *op)
{
    uint32_t perm[NNP_ADAPT_MAX_DIMS];
    if (op->n == 0) {
        for (uint32_t k = 0; k < v->ndim; k++)
            perm[k] = v->ndim - 1 - k;
    } else {
        if (op->n != v->ndim)
            return unfit(v, op, "the permutation names a different number of axes");
        bool seen[NNP_ADAPT_MAX_DIMS] = {false};
        for (uint32_t k = 0; k < op->n; k++) {
            uint32_t a;
            if (!axis_of(op->dims[k], v->ndim, &a) || seen[a])
                return unfit(v, op, "not a permutation of the tensor's axes");
            seen[a] = true;
            perm[k] = a;
        }
    }
    view w = *v;
    for (uint32_t k = 0; k < v->ndim; k++) {
        w.shape[k] = v->shape[perm[k]];
        w.stride[k] = v->stride[perm[k]];
    }
    *v = w;
    return NNP_OK;
}

static nnp_status reshape_to(view *v, const nnp_op *op, const uint64_t *dims, uint32_t n)
{
    if (n > NNP_ADAPT_MAX_DIMS)
        return unfit(v, op, "too many axes");
    uint64_t total = view_nelem(v);
    if (!is_contiguous(v)) {
        nnp_status st = materialize(v);
        if (st)
            return st;
    }
    uint64_t check = 1;
    for (uint32_t k = 0; k < n; k++)
        if (!nnp__mul_u64(check, dims[k], &check))
            return unfit(v, op, "the new shape overflows");
    if (check != total)
        return unfit(v, op, "the element counts differ");
    v->ndim = n;
    memcpy(v->shape, dims, n * sizeof *dims);
    /* keep the base offset: a contiguous view reshapes in place */
    contiguous_strides(v);
    return NNP_OK;
}

static nnp_status op_reshape(view *v, const nnp_op *op, const nnp_tensor *other)
{
    uint64_t dims[NNP_ADAPT_MAX_DIMS];
    if (op->n == 0) {
        if (!other)
            return unfit(v, op, "there is no other side to take the shape from");
        return reshape_to(v, op, other->shape, other->ndim);
    }
    uint64_t known = 1, total = view_nelem(v);
    int64_t infer = -1;
    for (uint32_t k = 0; k < op->n; k++) {
        if (op->dims[k] == -1) {
            infer = k;
            continue;
        }
        dims[k] = (uint64_t)op->dims[k];
        if (!nnp__mul_u64(known, dims[k], &known))
            return unfit(v, op, "the new shape overflows");
    }
    if (infer >= 0) {
        if (known == 0 || total % known)
            return unfit(v, op, "the element count is not a multiple of the given axes");
        dims[infer] = total / known;
    }
    return reshape_to(v, op, dims, op->n);
}

/* [start, end) of an axis from Python-style bounds (negative from the end, clamped). */
static bool bounds(int64_t start, int64_t end, uint64_t len, uint64_t *s, uint64_t *e)
{
    int64_t n = (int64_t)len;
    if (start < 0)
        start += n;
    if (end == INT64_MAX)
        end = n;
    else if (end < 0)
        end += n;
    if (start < 0 || end > n || start > end)
        return false;
    *s = (uint64_t)start;
    *e = (uint64_t)end;
    return true;
}

static nnp_status op_slice(view *v, const nnp_op *op)
{
    uint32_t a;
    uint64_t s, e;
    if (!axis_of(op->axis, v->ndim, &a))
        return unfit(v, op, "no such axis");
    if (op->kind == NNP_OP_PART) {
        uint64_t parts = (uint64_t)op->end;
        if (v->shape[a] % parts)
            return unfit(v, op, "the axis does not divide into equal parts");
        s = v->shape[a] / parts * (uint64_t)op->start;
        e = s + v->shape[a] / parts;
    } else if (!bounds(op->start, op->end, v->shape[a], &s, &e)) {
        return unfit(v, op, "the range is outside the axis");
    }
    v->offset += s * (uint64_t)v->stride[a];
    v->shape[a] = e - s;
    return NNP_OK;
}

static nnp_status op_select(view *v, const nnp_op *op)
{
    uint32_t a;
    if (!axis_of(op->axis, v->ndim, &a))
        return unfit(v, op, "no such axis");
    int64_t i = op->start < 0 ? op->start + (int64_t)v->shape[a] : op->start;
    if (i < 0 || i >= (int64_t)v->shape[a])
        return unfit(v, op, "the index is outside the axis");
    v->offset += (uint64_t)i * (uint64_t)v->stride[a];
    for (uint32_t k = a; k + 1 < v->ndim; k++) {
        v->shape[k] = v->shape[k + 1];
        v->stride[k] = v->stride[k + 1];
    }
    v->ndim--;
    return NNP_OK;
}

static nnp_status op_cast(view *v, const nnp_op *op)
{
    if (!v->base) {
        v->dtype = op->dtype;
        return NNP_OK;
    }
    nnp_status st = is_contiguous(v) ? NNP_OK : materialize(v);
    if (st)
        return st;
    uint64_t n = view_nelem(v);
    void *dst = malloc(n ? n * nnp_dtype_size(op->dtype) : 1);
    if (!dst)
        return nnp__nomem();
    st = nnp_convert(v->dtype, v->base + v->offset * nnp_dtype_size(v->dtype), (size_t)n,
                     op->dtype, dst);
    if (st) {
        free(dst);
        return unfit(v, op, nnp_last_error());
    }
    free(v->owned);
    v->owned = dst;
    v->base = dst;
    v->offset = 0;
    v->dtype = op->dtype;
    return NNP_OK;
}

/* llama.cpp's converter stores q/k rows per head as [half of the rotary pairs' first elements,
 * then the second ones] interleaved: rows (h, j, i) of a (heads, rows/heads/2, 2) split hold what
 * the Hugging Face layout keeps at (h, i, j). Undo it: view as (heads, half, 2, rest), swap the
 * middle axes, back to the original shape. */
static nnp_status op_rotary(view *v, const nnp_op *op)
{
    if (v->ndim < 1 || v->ndim > NNP_ADAPT_MAX_DIMS - 3)
        return unfit(v, op, "needs at least one axis");
    uint64_t heads = (uint64_t)op->start, rows = v->shape[0];
    if (!heads || rows % (2 * heads))
        return unfit(v, op, "the rows do not split into heads of pairs");
    uint64_t orig[NNP_ADAPT_MAX_DIMS], rest = 1;
    uint32_t ndim = v->ndim;
    memcpy(orig, v->shape, sizeof orig);
    for (uint32_t k = 1; k < ndim; k++)
        rest *= v->shape[k];
    uint64_t split[4] = {heads, rows / heads / 2, 2, rest};
    nnp_op perm = {.kind = NNP_OP_TRANSPOSE, .n = 4, .dims = {0, 2, 1, 3}};
    nnp_status st = reshape_to(v, op, split, 4);
    if (!st)
        st = op_transpose(v, &perm);
    if (!st)
        st = reshape_to(v, op, orig, ndim);
    return st;
}

nnp_status nnp__adapt(nnp_tensor *t, const nnp_op *ops, size_t nops, bool on_ref,
                      const nnp_tensor *other)
{
    view v = {.dtype = t->dtype, .ndim = t->ndim, .base = t->data, .owned = t->owned};
    memcpy(v.shape, t->shape, sizeof v.shape);
    contiguous_strides(&v);
    t->owned = NULL;
    nnp_status st = NNP_OK;
    for (size_t i = 0; i < nops && !st; i++) {
        const nnp_op *op = &ops[i];
        if (op->on_ref != on_ref)
            continue;
        switch (op->kind) {
        case NNP_OP_TRANSPOSE: st = op_transpose(&v, op); break;
        case NNP_OP_RESHAPE: st = op_reshape(&v, op, other); break;
        case NNP_OP_SLICE:
        case NNP_OP_PART: st = op_slice(&v, op); break;
        case NNP_OP_SELECT: st = op_select(&v, op); break;
        case NNP_OP_CAST: st = op_cast(&v, op); break;
        case NNP_OP_ROTARY: st = op_rotary(&v, op); break;
        }
    }
    if (!st && !is_contiguous(&v))
        st = materialize(&v);
    if (st) {
        free(v.owned);
        t->data = NULL;
        return st;
    }
    t->dtype = v.dtype;
    t->ndim = v.ndim;
    memcpy(t->shape, v.shape, sizeof t->shape);
    t->nelem = view_nelem(&v);
    t->owned = v.owned;
    t->data = v.base ? v.base + v.offset * nnp_dtype_size(v.dtype) : NULL;
    return NNP_OK;
}

nnp_status nnp__concat(const nnp_tensor *parts, size_t n, int64_t axis, nnp_tensor *out)
{
    memset(out, 0, sizeof *out);
    if (!n)
        return nnp__fail(NNP_ERR_ARG, "nothing to join");
    const nnp_tensor *p0 = &parts[0];
    uint32_t a;
    if (!axis_of(axis, p0->ndim, &a))
        return nnp__fail(NNP_ERR_ARG, "the parts have no axis %lld to join along",
                         (long long)axis);
    uint64_t along = 0;
    for (size_t i = 0; i < n; i++) {
        const nnp_tensor *p = &parts[i];
        bool same = p->ndim == p0->ndim && p->dtype == p0->dtype;
        for (uint32_t k = 0; same && k < p->ndim; k++)
            same = k == a || p->shape[k] == p0->shape[k];
        if (!same) {
            char s0[256], s1[256];
            nnp__format_shape(s0, sizeof s0, p0->ndim, p0->shape);
            nnp__format_shape(s1, sizeof s1, p->ndim, p->shape);
            return nnp__fail(NNP_ERR_ARG, "parts %s %s and %s %s do not join along axis %u",
                             nnp_dtype_name(p0->dtype), s0, nnp_dtype_name(p->dtype), s1, a);
        }
        along += p->shape[a];
    }
    *out = *p0;
    out->owned = NULL;
    out->shape[a] = along;
    out->nelem = 1;
    for (uint32_t k = 0; k < out->ndim; k++)
        out->nelem *= out->shape[k];
    if (!p0->data) {
        out->data = NULL;
        return NNP_OK;
    }
    size_t es = nnp_dtype_size(p0->dtype);
    uint64_t outer = 1, inner = es;
    for (uint32_t k = 0; k < a; k++)
        outer *= p0->shape[k];
    for (uint32_t k = a + 1; k < p0->ndim; k++)
        inner *= p0->shape[k];
    unsigned char *dst = malloc(out->nelem ? out->nelem * es : 1), *w = dst;
    if (!dst)
        return nnp__nomem();
    /* each outer index takes one slab from every part in turn */
    for (uint64_t o = 0; o < outer; o++)
        for (size_t i = 0; i < n; i++) {
            uint64_t slab = parts[i].shape[a] * inner;
            memcpy(w, (const unsigned char *)parts[i].data + o * slab, slab);
            w += slab;
        }
    out->owned = dst;
    out->data = dst;
    return NNP_OK;
}

void nnp__op_describe(nnp_sbuf *b, const nnp_op *op)
{
    if (op->on_ref)
        nnp__sbuf_puts(b, "ref ");
    switch (op->kind) {
    case NNP_OP_TRANSPOSE:
    case NNP_OP_RESHAPE:
        nnp__sbuf_puts(b, op->kind == NNP_OP_TRANSPOSE ? "transpose" : "reshape");
        for (uint32_t k = 0; k < op->n; k++)
            nnp__sbuf_printf(b, "%c%lld", k ? ',' : ' ', (long long)op->dims[k]);
        break;
    case NNP_OP_SLICE:
        nnp__sbuf_printf(b, "slice %lld %lld:", (long long)op->axis, (long long)op->start);
        if (op->end != INT64_MAX)
            nnp__sbuf_printf(b, "%lld", (long long)op->end);
        break;
    case NNP_OP_PART:
        nnp__sbuf_printf(b, "part %lld/%lld of axis %lld", (long long)op->start + 1,
                         (long long)op->end, (long long)op->axis);
        break;
    case NNP_OP_SELECT:
        nnp__sbuf_printf(b, "select %lld %lld", (long long)op->axis, (long long)op->start);
        break;
    case NNP_OP_CAST:
        nnp__sbuf_printf(b, "cast %s", nnp_dtype_name(op->dtype));
        break;
    case NNP_OP_ROTARY:
        nnp__sbuf_printf(b, "rotary %lld", (long long)op->start);
        break;
    }
}

int nnp__sequence_axis(uint32_t ndim, nnp_dtype dtype)
{
    if (ndim == 2 && nnp_dtype_class_of(dtype) == NNP_CLASS_INT)
        return 1;
    return ndim >= 2 ? (int)ndim - 2 : -1;
}

bool nnp__is_one_row_of(uint32_t qdim, const uint64_t *q, nnp_dtype qdtype, uint32_t rdim,
                        const uint64_t *r, nnp_dtype rdtype)
{
    int a = nnp__sequence_axis(qdim, qdtype);
    if (a < 0 || qdim != rdim || nnp_dtype_class_of(qdtype) != nnp_dtype_class_of(rdtype) ||
        q[a] != 1 || r[a] < 2)
        return false;
    for (uint32_t d = 0; d < qdim; d++)
        if (d != (uint32_t)a && q[d] != r[d])
            return false;
    return true;
}
