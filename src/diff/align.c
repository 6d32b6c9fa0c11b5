/*
 * align.c - automatic alignment of two captures whose record names differ even after the user's
 * rules (align_rules.c writes what it found as rules).
 *
 * Alignment works on execution order. A record's signature is its role, dtype class and shape;
 * records with different signatures are never aligned. Within a range of both sequences,
 * records whose key is unique on both sides become anchor candidates, from the strongest key to
 * the weakest: the whole name; the numbers in the module path with the call index; the first
 * number (the layer) with the call index; the call index; the signature alone; and last, the
 * n-th of a (signature, call, layer) group that has as many members on both sides. The heaviest
 * chain of candidates that runs in the same order on both sides is kept (a weighted longest
 * increasing subsequence), and the gaps between anchors are aligned the same way. What no key
 * separates is aligned by a dynamic program that maximizes the number of aligned records, name
 * similarity breaking ties; it is banded along the gap's diagonal, so time and memory grow
 * linearly with the captures, never with their product.
 */
#include <stdlib.h>
#include <string.h>

#include "diff/diff.h"

#define NONE32 UINT32_MAX
#define MAX_NUMS 6   /* numbers of a module path kept for similarity (all are hashed) */
#define MAX_WORDS 4  /* the last words of a module path kept for similarity */
#define MAX_DEPTH 8  /* anchor passes nested in gaps before the dynamic program takes over */
#define DP_FULL_CELLS (1u << 16) /* gaps this small get the whole table, larger ones a band */
#define DP_BAND 48   /* half-width of the band */

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool is_alnum(char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (unsigned char)c >= 0x80;
}

static char lower(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

/* ---------------------------------------------------------------------------------------------
 * Record features
 * ------------------------------------------------------------------------------------------- */

/* A word of a module path, lowercase: its first 8 bytes, its last 4 and its length, enough to
 * tell "attn" from "attention" (an abbreviation) or "norm" from "layernorm" (a suffix). */
typedef struct {
    uint64_t head;
    uint32_t tail;
    uint32_t len;
} word;

typedef struct {
    uint64_t kname, knums; /* hashes of the name, and of the numbers and call, with the signature */
    uint32_t sig;          /* dense signature id */
    uint32_t call;         /* from "#<call>"; 0 without */
    uint32_t first;        /* first number of the module path, NONE32 without */
    uint8_t nnum, nword;
    uint32_t num[MAX_NUMS];
    word w[MAX_WORDS];
} feat;

/* Split a record name "<module>/<role>#<call>" into its call index and the tokens of its module
 * path (the role is part of the signature). Names not built that way are one module path. */
static void parse_name(const char *s, feat *f)
{
    size_t n = strlen(s), end = n;
    f->call = 0;
    size_t h = n;
    while (h > 0 && is_digit(s[h - 1]))
        h--;
    if (h > 0 && h < n && s[h - 1] == '#') {
        uint64_t v = 0;
        for (size_t i = h; i < n; i++)
            v = v > 100000000u ? v : v * 10 + (uint64_t)(s[i] - '0');
        f->call = (uint32_t)(v > NONE32 - 1 ? NONE32 - 1 : v);
        end = h - 1;
    }
    for (size_t i = end; i > 0; i--)
        if (s[i - 1] == '/') {
            end = i - 1;
            break;
        }
    uint64_t hn = 0x51ed2701u;
    word all[64];
    size_t nall = 0;
    f->nnum = 0;
    f->first = NONE32;
    for (size_t i = 0; i < end;) {
        if (!is_alnum(s[i])) {
            i++;
            continue;
        }
        size_t j = i;
        if (is_digit(s[i])) {
            uint64_t v = 0;
            for (; j < end && is_digit(s[j]); j++)
                v = v > 100000000u ? v : v * 10 + (uint64_t)(s[j] - '0');
            uint32_t v32 = (uint32_t)(v > NONE32 - 1 ? NONE32 - 1 : v);
            hn = nnp__hash_combine(hn, v32);
            if (f->first == NONE32)
                f->first = v32;
            if (f->nnum < MAX_NUMS)
                f->num[f->nnum++] = v32;
        } else {
            word w = {0, 0, 0};
            for (; j < end && is_alnum(s[j]) && !is_digit(s[j]); j++) {
                unsigned char c = (unsigned char)lower(s[j]);
                if (w.len < 8)
                    w.head |= (uint64_t)c << (8 * w.len);
                w.tail = (w.tail << 8) | c;
                w.len++;
            }
            all[nall++ % 64] = w;
        }
        i = j;
    }
    size_t keep = nall < MAX_WORDS ? nall : MAX_WORDS;
    for (size_t k = 0; k < keep; k++)
        f->w[k] = all[(nall - keep + k) % 64];
    f->nword = (uint8_t)keep;
    f->knums = nnp__hash_combine(hn, f->call);
}

/* Whether two words are equal, or the shorter is a prefix, an abbreviation ("attn" of
 * "attention", "ln" of "layernorm") or a suffix of the longer. */
static bool word_like(const word *a, const word *b)
{
    if (a->len > b->len) {
        const word *t = a;
        a = b;
        b = t;
    }
    if (a->len == b->len)
        return a->head == b->head && a->tail == b->tail;
    if (a->len <= 8 && (a->head & 0xff) == (b->head & 0xff)) {
        uint64_t mask = a->len == 8 ? ~0ull : ((1ull << (8 * a->len)) - 1);
        if ((b->head & mask) == a->head)
            return true; /* a prefix */
        /* an abbreviation: the shorter word's letters, in order, in the longer's first 8 */
        uint32_t k = 0, bl = b->len < 8 ? b->len : 8;
        for (uint32_t i = 0; i < bl && k < a->len; i++)
            if (((b->head >> (8 * i)) & 0xff) == ((a->head >> (8 * k)) & 0xff))
                k++;
        if (k == a->len && a->len >= 2)
            return true;
    }
    if (a->len >= 3 && a->len <= 4) { /* a suffix: "norm" of "layernorm" */
        uint32_t mask = a->len == 4 ? ~0u : ((1u << (8 * a->len)) - 1);
        return (b->tail & mask) == (a->tail & mask);
    }
    return false;
}

/* How alike two record names are, in [0, 1]: the call index, the numbers of the module paths
 * (layer indices weigh most) and their words. */
static double name_sim(const feat *a, const feat *b, const char *na, const char *nb)
{
    if (a->kname == b->kname && strcmp(na, nb) == 0)
        return 1.0;
    double s = a->call == b->call ? 1.0 : 0.0, wsum = 1.0;
    if (a->nnum || b->nnum) {
        unsigned used = 0, common = 0;
        for (unsigned i = 0; i < a->nnum; i++)
            for (unsigned j = 0; j < b->nnum; j++)
                if (!(used & (1u << j)) && a->num[i] == b->num[j]) {
                    used |= 1u << j;
                    common++;
                    break;
                }
        /* the first number is usually the layer: agreeing on it counts double */
        double first = a->first == b->first ? 1.0 : 0.0;
        s += 2.0 * common / (a->nnum + b->nnum) + first;
        wsum += 2.0;
    }
    if (a->nword || b->nword) {
        unsigned used = 0, common = 0;
        for (unsigned i = 0; i < a->nword; i++)
            for (unsigned j = 0; j < b->nword; j++)
                if (!(used & (1u << j)) && word_like(&a->w[i], &b->w[j])) {
                    used |= 1u << j;
                    common++;
                    break;
                }
        s += 2.0 * common / (a->nword + b->nword);
        wsum += 1.0;
    }
    return s / wsum;
}

/* ---------------------------------------------------------------------------------------------
 * Alignment
 * ------------------------------------------------------------------------------------------- */

/* How an aligned pair was found, strongest first; LV_DP is the dynamic program. */
enum { LV_NAME, LV_NUMS, LV_FIRST, LV_CALL, LV_SIG, LV_RANK, LV_DP, LV_COUNT };
static const int64_t level_weight[LV_COUNT] = {10, 8, 6, 5, 4, 2, 0};
static const double level_sureness[LV_COUNT] = {1.0, 0.95, 0.9, 0.9, 0.85, 0.75, 0.5};

typedef struct {
    uint64_t key;
    uint32_t nr, np; /* members on each side */
    uint32_t ir, ip; /* the last member on each side (rank level: base and running count) */
} slot;

typedef struct {
    const nnp__align_item *ref, *port;
    size_t nref, nport;
    feat *fr, *fp;
    int64_t *out;
    uint8_t *how;
    slot *tab;           /* counting table, capacity tab_cap (a power of two) */
    size_t tab_cap;
    uint32_t *cand_ref;  /* per port item of a range: its candidate, NONE32 */
    uint8_t *cand_lev;
    uint32_t *slot_r, *slot_p;    /* each item's slot in the table */
    uint32_t *grp_ref, *grp_port; /* rank level: members by group */
    uint32_t *ck_port, *ck_prev; /* the candidates in port order and their chain links */
    int64_t *ck_dp;
    int64_t *fw_best;    /* Fenwick tree of best chain weights over reference offsets */
    uint32_t *fw_arg;
    int64_t *row_a, *row_b; /* dynamic program rows */
    uint8_t *tb;         /* dynamic program moves */
    size_t tb_cap;
    size_t *tb_off;
    size_t tb_off_cap;
} actx;

static uint64_t level_key(const feat *f, int lv)
{
    switch (lv) {
    case LV_NAME: return f->kname;
    case LV_NUMS: return nnp__hash_combine(f->knums, f->sig);
    case LV_FIRST: return nnp__hash_combine(nnp__hash_combine(nnp__hash_combine(0x6a09e667u, f->sig), f->call), f->first);
    case LV_CALL: return nnp__hash_combine(nnp__hash_combine(0xbb67ae85u, f->sig), f->call);
    default: return nnp__hash_combine(0x3c6ef372u, f->sig);
    }
}

static slot *tab_get(actx *c, size_t cap, uint64_t key)
{
    size_t m = cap - 1, i = (size_t)nnp__mix64(key) & m;
    while (c->tab[i].nr + c->tab[i].np && c->tab[i].key != key)
        i = (i + 1) & m;
    c->tab[i].key = key;
    return &c->tab[i];
}

/* Best chain weight over Fenwick positions [1, pos]. */
static void fw_query(const actx *c, size_t pos, int64_t *best, uint32_t *arg)
{
    *best = 0;
    *arg = NONE32;
    for (; pos > 0; pos &= pos - 1)
        if (c->fw_best[pos] > *best) {
            *best = c->fw_best[pos];
            *arg = c->fw_arg[pos];
        }
}

static void fw_update(actx *c, size_t pos, size_t n, int64_t v, uint32_t arg)
{
    for (; pos <= n; pos += pos & (~pos + 1))
        if (v > c->fw_best[pos]) {
            c->fw_best[pos] = v;
            c->fw_arg[pos] = arg;
        }
}

static double item_sim(const actx *c, uint32_t r, uint32_t j)
{
    return name_sim(&c->fr[r], &c->fp[j], c->ref[r].name ? c->ref[r].name : "",
                    c->port[j].name ? c->port[j].name : "");
}

/* How alike two records' values are, from their sketches: the cosine where it is positive (a
 * wrongly computed value still leans towards the right one; an unrelated one does not), 0
 * without sketches. */
static double value_sim(const actx *c, uint32_t r, uint32_t j)
{
    const nnp_sketch_part *a = c->ref[r].values, *b = c->port[j].values;
    double cosine;
    if (!a || !b || !nnp__sketch_distance(b, a, NULL, &cosine))
        return 0;
    return cosine > 0 ? cosine : 0;
}

/* Whether the m-th members of a group (refs, ports, n each) pair better by name than either
 * does with its neighbour's partner: a record missing on one side and an extra one on the
 * other shift the pairing by one, and the names show it. */
static bool rank_pair_holds(const actx *c, const uint32_t *refs, const uint32_t *ports,
                            uint32_t m, uint32_t n)
{
    double s = item_sim(c, refs[m], ports[m]);
    if (m > 0 && (item_sim(c, refs[m - 1], ports[m]) > s || item_sim(c, refs[m], ports[m - 1]) > s))
        return false;
    if (m + 1 < n &&
        (item_sim(c, refs[m + 1], ports[m]) > s || item_sim(c, refs[m], ports[m + 1]) > s))
        return false;
    return true;
}

/* Candidates from the n-th members of the (signature, call, layer) groups that both sides hold
 * as often; the table holds those groups' counts, slot_r and slot_p where each item is. */
static void rank_candidates(actx *c, size_t cap, size_t r0, size_t r1, size_t p0, size_t p1)
{
    uint32_t base = 0;
    for (size_t k = 0; k < cap; k++) {
        slot *s = &c->tab[k];
        if (s->nr && s->nr == s->np) {
            s->ir = base;
            s->ip = 0;
            base += s->nr;
        }
    }
    for (size_t i = r0; i < r1; i++) {
        slot *s = &c->tab[c->slot_r[i - r0]];
        if (s->nr == s->np)
            c->grp_ref[s->ir + s->ip++] = (uint32_t)i;
    }
    for (size_t k = 0; k < cap; k++)
        c->tab[k].ip = 0;
    for (size_t j = p0; j < p1; j++) {
        slot *s = &c->tab[c->slot_p[j - p0]];
        if (s->nr == s->np)
            c->grp_port[s->ir + s->ip++] = (uint32_t)j;
    }
    for (size_t k = 0; k < cap; k++) {
        const slot *s = &c->tab[k];
        if (!s->nr || s->nr != s->np || s->nr == 1) /* a group of one is a unique key */
            continue;
        const uint32_t *refs = c->grp_ref + s->ir, *ports = c->grp_port + s->ir;
        for (uint32_t m = 0; m < s->nr; m++) {
            uint32_t r = refs[m], j = ports[m];
            if (c->cand_ref[j - p0] == NONE32 && c->fr[r].sig == c->fp[j].sig &&
                rank_pair_holds(c, refs, ports, m, s->nr)) {
                c->cand_ref[j - p0] = r;
                c->cand_lev[j - p0] = LV_RANK;
            }
        }
    }
}

/* Find anchors in ref [r0, r1) x port [p0, p1) (all unaligned) and align them; *count says
 * how many. */
static void find_anchors(actx *c, size_t r0, size_t r1, size_t p0, size_t p1, size_t *count)
{
    size_t R = r1 - r0, P = p1 - p0, cap = 16;
    while (cap < 2 * (R + P))
        cap *= 2;
    for (size_t j = 0; j < P; j++)
        c->cand_ref[j] = NONE32;
    for (int lv = LV_NAME; lv <= LV_SIG; lv++) {
        memset(c->tab, 0, cap * sizeof *c->tab);
        for (size_t i = r0; i < r1; i++) {
            slot *s = tab_get(c, cap, level_key(&c->fr[i], lv));
            s->nr++;
            s->ir = (uint32_t)i;
            c->slot_r[i - r0] = (uint32_t)(s - c->tab);
        }
        for (size_t j = p0; j < p1; j++) {
            slot *s = tab_get(c, cap, level_key(&c->fp[j], lv));
            s->np++;
            s->ip = (uint32_t)j;
            c->slot_p[j - p0] = (uint32_t)(s - c->tab);
        }
        for (size_t j = p0; j < p1; j++) {
            const slot *s = &c->tab[c->slot_p[j - p0]];
            if (c->cand_ref[j - p0] == NONE32 && s->nr == 1 && s->np == 1 &&
                c->fr[s->ir].sig == c->fp[j].sig) {
                c->cand_ref[j - p0] = s->ir;
                c->cand_lev[j - p0] = (uint8_t)lv;
            }
        }
        if (lv == LV_FIRST)
            rank_candidates(c, cap, r0, r1, p0, p1);
    }

    /* the heaviest chain increasing on both sides */
    for (size_t k = 0; k <= R; k++) {
        c->fw_best[k] = 0;
        c->fw_arg[k] = NONE32;
    }
    size_t nk = 0;
    int64_t best = 0;
    uint32_t best_k = NONE32;
    for (size_t j = p0; j < p1; j++) {
        uint32_t r = c->cand_ref[j - p0];
        if (r == NONE32)
            continue;
        int64_t b;
        uint32_t arg;
        fw_query(c, r - r0, &b, &arg);
        c->ck_port[nk] = (uint32_t)j;
        c->ck_prev[nk] = arg;
        c->ck_dp[nk] = b + level_weight[c->cand_lev[j - p0]];
        fw_update(c, r - r0 + 1, R, c->ck_dp[nk], (uint32_t)nk);
        if (c->ck_dp[nk] > best) {
            best = c->ck_dp[nk];
            best_k = (uint32_t)nk;
        }
        nk++;
    }
    size_t n = 0;
    for (uint32_t k = best_k; k != NONE32; k = c->ck_prev[k]) {
        uint32_t j = c->ck_port[k];
        c->out[j] = c->cand_ref[j - p0];
        c->how[j] = c->cand_lev[j - p0];
        n++;
    }
    *count = n;
}

/* Align ref [r0, r1) x port [p0, p1) by a dynamic program that maximizes the number of aligned
 * records of equal signature, name similarity breaking ties; banded along the diagonal when the
 * table would be large. */
static nnp_status dp_range(actx *c, size_t r0, size_t r1, size_t p0, size_t p1)
{
    size_t R = r1 - r0, P = p1 - p0;
    bool full = (uint64_t)(R + 1) * (P + 1) <= DP_FULL_CELLS;
    /* row i (references consumed) spans columns [lo(i), hi(i)] */
#define LO(i) (full ? 0 : ((uint64_t)(i) * P / R > DP_BAND ? (uint64_t)(i) * P / R - DP_BAND : 0))
#define HI(i) (full ? P : ((((uint64_t)(i) + 1) * P + R - 1) / R + DP_BAND < P ? \
                           (((uint64_t)(i) + 1) * P + R - 1) / R + DP_BAND : P))
    if (!nnp__grow((void **)&c->tb_off, &c->tb_off_cap, R + 2, sizeof *c->tb_off))
        return nnp__nomem();
    size_t cells = 0;
    for (size_t i = 0; i <= R; i++) {
        c->tb_off[i] = cells;
        cells += (size_t)(HI(i) - LO(i) + 1);
    }
    if (!nnp__grow((void **)&c->tb, &c->tb_cap, cells, 1))
        return nnp__nomem();
    const int64_t NEG = INT64_MIN / 4;
    int64_t *prev = c->row_a, *cur = c->row_b;
    size_t plo = 0, phi = 0;
    for (size_t i = 0; i <= R; i++) {
        size_t lo = (size_t)LO(i), hi = (size_t)HI(i);
        uint8_t *tb = c->tb + c->tb_off[i];
        const feat *fr = i ? &c->fr[r0 + i - 1] : NULL;
        for (size_t j = lo; j <= hi; j++) {
            int64_t v = NEG;
            uint8_t mv = 0;
            if (i == 0 && j == 0) {
                v = 0;
            } else {
                /* on equal scores skip rather than align, so that among equals the earliest
                 * records are aligned (the trace runs backwards) */
                if (i > 0 && j >= plo && j <= phi && prev[j] > v) {
                    v = prev[j];
                    mv = 1;
                }
                if (j > lo && cur[j - 1] > v) {
                    v = cur[j - 1];
                    mv = 2;
                }
                if (i > 0 && j > 0 && j - 1 >= plo && j - 1 <= phi && prev[j - 1] > NEG) {
                    const feat *fp = &c->fp[p0 + j - 1];
                    if (fr->sig == fp->sig) {
                        double s = item_sim(c, (uint32_t)(r0 + i - 1), (uint32_t)(p0 + j - 1));
                        double v = value_sim(c, (uint32_t)(r0 + i - 1), (uint32_t)(p0 + j - 1));
                        int64_t d = prev[j - 1] + 1024 + (int64_t)(512 * s) +
                                    (int64_t)(1024 * v);
                        if (d > v) {
                            v = d;
                            mv = 3;
                        }
                    }
                }
            }
            cur[j] = v;
            tb[j - lo] = mv;
        }
        int64_t *t = prev;
        prev = cur;
        cur = t;
        plo = lo;
        phi = hi;
    }
    /* trace back from (R, P) */
    size_t i = R, j = P;
    while (i > 0 || j > 0) {
        uint8_t mv = c->tb[c->tb_off[i] + j - (size_t)LO(i)];
        if (mv == 3) {
            c->out[p0 + j - 1] = (int64_t)(r0 + i - 1);
            c->how[p0 + j - 1] = LV_DP;
            i--;
            j--;
        } else if (mv == 1) {
            i--;
        } else if (mv == 2) {
            j--;
        } else {
            return nnp__fail(NNP_ERR_INTERNAL, "nnp__align: broken dynamic program trace");
        }
    }
#undef LO
#undef HI
    return NNP_OK;
}

static nnp_status align_range(actx *c, size_t r0, size_t r1, size_t p0, size_t p1, int depth)
{
    if (r0 >= r1 || p0 >= p1)
        return NNP_OK;
    size_t n = 0;
    if (depth < MAX_DEPTH)
        find_anchors(c, r0, r1, p0, p1, &n);
    if (n == 0)
        return dp_range(c, r0, r1, p0, p1);
    size_t gr = r0, gp = p0; /* where the current gap starts */
    for (size_t j = p0; j < p1; j++) {
        if (c->out[j] < 0)
            continue;
        size_t r = (size_t)c->out[j];
        nnp_status st = align_range(c, gr, r, gp, j, depth + 1);
        if (st)
            return st;
        gr = r + 1;
        gp = j + 1;
    }
    return align_range(c, gr, r1, gp, p1, depth + 1);
}

/* ---- signatures ---- */

static uint64_t sig_hash(const nnp__align_item *it, bool use_role)
{
    uint64_t h = nnp__hash_combine(use_role ? nnp__hash_str(it->role ? it->role : "") : 0,
                         (uint64_t)nnp_dtype_class_of(it->dtype));
    h = nnp__hash_combine(h, it->ndim);
    for (uint32_t d = 0; d < it->ndim; d++)
        h = nnp__hash_combine(h, it->shape[d]);
    return h;
}

static bool sig_equal(const nnp__align_item *a, const nnp__align_item *b, bool use_role)
{
    if (nnp_dtype_class_of(a->dtype) != nnp_dtype_class_of(b->dtype) || a->ndim != b->ndim)
        return false;
    if (a->ndim && memcmp(a->shape, b->shape, a->ndim * sizeof *a->shape) != 0)
        return false;
    return !use_role || strcmp(a->role ? a->role : "", b->role ? b->role : "") == 0;
}

/* Give every item of both sides a dense signature id. */
static nnp_status intern_signatures(actx *c, bool use_role)
{
    size_t n = c->nref + c->nport, cap = 16;
    while (cap < 2 * n)
        cap *= 2;
    uint32_t *tab = malloc(cap * sizeof *tab);
    uint32_t *ids = malloc(cap * sizeof *ids);
    if (!tab || !ids) {
        free(tab);
        free(ids);
        return nnp__nomem();
    }
    memset(tab, 0xff, cap * sizeof *tab);
    uint32_t next = 0;
    for (size_t k = 0; k < n; k++) {
        const nnp__align_item *it = k < c->nref ? &c->ref[k] : &c->port[k - c->nref];
        size_t i = (size_t)sig_hash(it, use_role) & (cap - 1);
        for (;; i = (i + 1) & (cap - 1)) {
            if (tab[i] == NONE32) {
                tab[i] = (uint32_t)k;
                ids[i] = next++;
                break;
            }
            const nnp__align_item *o = tab[i] < c->nref ? &c->ref[tab[i]]
                                                         : &c->port[tab[i] - c->nref];
            if (sig_equal(it, o, use_role))
                break;
        }
        feat *f = k < c->nref ? &c->fr[k] : &c->fp[k - c->nref];
        f->sig = ids[i];
    }
    free(tab);
    free(ids);
    return NNP_OK;
}

static void actx_free(actx *c)
{
    free(c->fr);
    free(c->fp);
    free(c->how);
    free(c->tab);
    free(c->cand_ref);
    free(c->cand_lev);
    free(c->grp_ref);
    free(c->slot_r);
    free(c->slot_p);
    free(c->grp_port);
    free(c->ck_port);
    free(c->ck_prev);
    free(c->ck_dp);
    free(c->fw_best);
    free(c->fw_arg);
    free(c->row_a);
    free(c->row_b);
    free(c->tb);
    free(c->tb_off);
}

static bool any_role(const nnp__align_item *it, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (it[i].role && *it[i].role)
            return true;
    return false;
}

static nnp_status check_items(const nnp__align_item *it, size_t n, const char *side)
{
    for (size_t i = 0; i < n; i++)
        if (it[i].ndim && !it[i].shape)
            return nnp__fail(NNP_ERR_ARG, "nnp__align: %s record %zu has %u dimensions and no "
                             "shape", side, i, it[i].ndim);
    return NNP_OK;
}

/* Declared in internal.h. Roles take part in signatures only when both sides record some;
 * score[j] is how the pair was found (a unique name, a unique key, the n-th of equal groups, the
 * dynamic program: 1.0 down to 0.5) times 0.6 + 0.4 x the names' similarity; 0 when unaligned. */
nnp_status nnp__align(const nnp__align_item *ref, size_t nref, const nnp__align_item *port,
                      size_t nport, int64_t *port_to_ref, double *score)
{
    if ((nref && !ref) || (nport && (!port || !port_to_ref)))
        return nnp__fail(NNP_ERR_ARG, "nnp__align: records or result missing");
    if (nref >= NONE32 || nport >= NONE32)
        return nnp__fail(NNP_ERR_ARG, "nnp__align: more than 2^32 - 2 records on one side");
    for (size_t j = 0; j < nport; j++) {
        port_to_ref[j] = -1;
        if (score)
            score[j] = 0;
    }
    nnp_status st = check_items(ref, nref, "reference");
    if (!st)
        st = check_items(port, nport, "port");
    if (st || nref == 0 || nport == 0)
        return st;

    actx c = {.ref = ref, .port = port, .nref = nref, .nport = nport, .out = port_to_ref};
    c.tab_cap = 16;
    while (c.tab_cap < 2 * (nref + nport))
        c.tab_cap *= 2;
    c.fr = malloc(nref * sizeof *c.fr);
    c.fp = malloc(nport * sizeof *c.fp);
    c.how = malloc(nport);
    c.tab = malloc(c.tab_cap * sizeof *c.tab);
    c.cand_ref = malloc(nport * sizeof *c.cand_ref);
    c.cand_lev = malloc(nport);
    c.grp_ref = malloc(nref * sizeof *c.grp_ref);
    c.slot_r = malloc(nref * sizeof *c.slot_r);
    c.slot_p = malloc(nport * sizeof *c.slot_p);
    c.grp_port = malloc(nport * sizeof *c.grp_port);
    c.ck_port = malloc(nport * sizeof *c.ck_port);
    c.ck_prev = malloc(nport * sizeof *c.ck_prev);
    c.ck_dp = malloc(nport * sizeof *c.ck_dp);
    c.fw_best = malloc((nref + 1) * sizeof *c.fw_best);
    c.fw_arg = malloc((nref + 1) * sizeof *c.fw_arg);
    c.row_a = malloc((nport + 1) * sizeof *c.row_a);
    c.row_b = malloc((nport + 1) * sizeof *c.row_b);
    if (!c.fr || !c.fp || !c.how || !c.tab || !c.cand_ref || !c.cand_lev || !c.grp_ref ||
        !c.grp_port || !c.slot_r || !c.slot_p || !c.ck_port || !c.ck_prev || !c.ck_dp ||
        !c.fw_best || !c.fw_arg || !c.row_a || !c.row_b) {
        actx_free(&c);
        return nnp__nomem();
    }
    /* roles take part in signatures only when both sides record them */
    bool use_role = any_role(ref, nref) && any_role(port, nport);
    st = intern_signatures(&c, use_role);
    if (st) {
        actx_free(&c);
        return st;
    }
    for (size_t k = 0; k < nref + nport; k++) {
        const nnp__align_item *it = k < nref ? &ref[k] : &port[k - nref];
        feat *f = k < nref ? &c.fr[k] : &c.fp[k - nref];
        const char *name = it->name ? it->name : "";
        parse_name(name, f);
        f->kname = nnp__hash_combine(nnp__hash_str(name), f->sig);
    }
    st = align_range(&c, 0, nref, 0, nport, 0);
    if (!st && score)
        for (size_t j = 0; j < nport; j++) {
            if (port_to_ref[j] < 0)
                continue;
            size_t i = (size_t)port_to_ref[j];
            double s = name_sim(&c.fr[i], &c.fp[j], ref[i].name ? ref[i].name : "",
                                port[j].name ? port[j].name : "");
            score[j] = level_sureness[c.how[j]] * (0.6 + 0.4 * s);
        }
    if (st)
        for (size_t j = 0; j < nport; j++)
            port_to_ref[j] = -1;
    actx_free(&c);
    return st;
}
