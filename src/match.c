/*
 * match.c - automatic alignment of two captures whose record names differ even after the user's
 * rules, and the rules file that says the same thing in the rule language (docs/rules.md).
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

#include "internal.h"

#define NONE32 UINT32_MAX
#define MAX_NUMS 6   /* numbers of a module path kept for similarity (all are hashed) */
#define MAX_WORDS 4  /* the last words of a module path kept for similarity */
#define MAX_DEPTH 8  /* anchor passes nested in gaps before the dynamic program takes over */
#define DP_FULL_CELLS (1u << 16) /* gaps this small get the whole table, larger ones a band */
#define DP_BAND 48   /* half-width of the band */

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
}

static uint64_t combine(uint64_t h, uint64_t v)
{
    return mix64(h ^ (v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2)));
}

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
            hn = combine(hn, v32);
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
    f->knums = combine(hn, f->call);
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
    case LV_NUMS: return combine(f->knums, f->sig);
    case LV_FIRST: return combine(combine(combine(0x6a09e667u, f->sig), f->call), f->first);
    case LV_CALL: return combine(combine(0xbb67ae85u, f->sig), f->call);
    default: return combine(0x3c6ef372u, f->sig);
    }
}

static slot *tab_get(actx *c, size_t cap, uint64_t key)
{
    size_t m = cap - 1, i = (size_t)mix64(key) & m;
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
                        int64_t d = prev[j - 1] + 1024 + (int64_t)(512 * s);
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
    uint64_t h = combine(use_role ? nnp__hash_str(it->role ? it->role : "") : 0,
                         (uint64_t)nnp_dtype_class_of(it->dtype));
    h = combine(h, it->ndim);
    for (uint32_t d = 0; d < it->ndim; d++)
        h = combine(h, it->shape[d]);
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
        f->kname = combine(nnp__hash_str(name), f->sig);
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

/* ---------------------------------------------------------------------------------------------
 * Rules that say what an alignment found
 *
 * Each pair (port name, reference name) is cut where its names stop differing: the longest
 * common suffix that starts at a separator ('/', '.', '#') is left out of the rule, so that one
 * rename serves every role and call of a module ("^blk\.([0-9]+)\.attn_q/" ...). Pairs whose
 * cut names have the same skeleton (digit runs blurred) form a group; in a group, a digit run
 * that varies on the port side and equals a run of the reference side in every member becomes a
 * ([0-9]+) group and its \N reference, runs that never vary stay literal. Equal templates give
 * one rename. The rules are then run on every given port name by a matcher that behaves as the
 * regexes do (tmatch), over and over until every name comes out right: a rule that catches
 * names it should not is cut later (a shorter common suffix), down to the whole name anchored
 * at both ends, unless it serves many more names than it catches: then those names get literal
 * renames placed before the general ones. A name whose result a later rule would rewrite again
 * goes through a marked name ("~<reference name>") that only its own last rule turns back.
 * Names are kept unchanged by giving them as their own reference name.
 * ------------------------------------------------------------------------------------------- */

#define MAX_RUNS 16  /* digit runs of a name considered for groups; later ones stay literal */
#define MAX_ROUNDS 40
#define HOLE '\x01'  /* a ([0-9]+) group in a port template */
#define GREF '\x02'  /* followed by '1'..'9': a group reference in a reference template */

enum { RS_GEN, RS_LIT, RS_MARK, RS_SAME, RS_DUP };
/* rule kinds, in file order */
enum { RK_MARK_IN, RK_LIT, RK_GEN, RK_MARK_OUT };

typedef struct {
    const char *p, *r;
    uint32_t lp, lr, cs; /* lengths, and the length of the common suffix */
    uint16_t level;      /* RS_GEN: the level-th separator of the common suffix ends the rule's
                          * pattern; past the last one the pattern is the whole name, anchored */
    uint8_t state;
    bool failed;         /* this round: mapped wrongly, first by rule `offender` (or NONE32) */
    uint32_t offender;
    bool anchored;       /* this round's cut (pair_cut) */
    uint32_t cp, cr;
    uint32_t rule;       /* the rule that should rewrite it (RS_MARK: the first of its two) */
} rpair;

typedef struct {
    size_t tp, tr;     /* offsets of the templates in the arena (NUL-terminated) */
    uint32_t tpl, trl;
    uint32_t first;    /* the first pair it serves: orders the rules */
    uint32_t members;  /* pairs it serves */
    uint32_t victims;  /* names it mapped wrongly this round */
    uint32_t order;    /* position in the file */
    uint32_t next;     /* next rule in the same index bucket */
    uint64_t key;
    uint8_t kind;
    bool anchored, offends;
} rrule;

typedef struct {
    uint64_t key;
    uint32_t idx;
} keyed;

typedef struct {
    rpair *pr;
    size_t n;
    rrule *rules;
    size_t nrules, rules_cap;
    nnp_sbuf arena;
    uint32_t *dedup;    /* rule ids by text hash */
    size_t dedup_cap;
    uint32_t *ix;       /* rule ids by pattern skeleton: bucket heads */
    size_t ix_cap;
    uint32_t *ordered;  /* rule ids in file order */
    keyed *okeys;       /* for sorting them */
    keyed *groups;
    uint32_t *runs;     /* a group's digit runs, 4 * MAX_RUNS a member: MAX_RUNS (start, length)
                         * pairs in the port name, then as many in the reference name */
    size_t runs_cap;
    nnp_sbuf tp, tr, cur, nxt;
    char marker;
} rctx;

/* Where a rule's pattern may end, leaving the rest of the name as it is. */
static bool is_sep(char c)
{
    return c == '/' || c == '.' || c == '#';
}

/* The pattern's end for a pair at its level: *cp bytes of the port name and *cr of the
 * reference name are the rule's, the rest is common. */
static void pair_cut(const rpair *q, size_t *cp, size_t *cr, bool *anchored)
{
    size_t k = 0;
    for (size_t i = q->lp - q->cs; i < q->lp; i++)
        if (is_sep(q->p[i]) && k++ == q->level) {
            *cp = i + 1;
            *cr = i + 1 + q->lr - q->lp;
            *anchored = false;
            return;
        }
    *cp = q->lp;
    *cr = q->lr;
    *anchored = true;
}

static uint64_t fnv_step(uint64_t h, unsigned char c)
{
    return (h ^ c) * 1099511628211ull;
}

/* Hash of s[0..n) with every digit run and every HOLE blurred into one byte. */
static uint64_t skeleton_hash(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    bool in_run = false;
    for (size_t i = 0; i < n; i++) {
        bool d = is_digit(s[i]) || s[i] == HOLE;
        if (!d)
            h = fnv_step(h, (unsigned char)s[i]);
        else if (!in_run)
            h = fnv_step(h, HOLE);
        in_run = d;
    }
    return h;
}

static uint64_t index_key(uint64_t skeleton, bool anchored)
{
    return combine(skeleton, anchored ? 2 : 1);
}

/* Digit runs of s[0..n): up to MAX_RUNS (start, length) pairs into runs; returns how many. */
static size_t digit_runs(const char *s, size_t n, uint32_t *runs)
{
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        if (!is_digit(s[i])) {
            i++;
            continue;
        }
        size_t j = i;
        while (j < n && is_digit(s[j]))
            j++;
        if (k < MAX_RUNS) {
            runs[2 * k] = (uint32_t)i;
            runs[2 * k + 1] = (uint32_t)(j - i);
        }
        k++;
        i = j;
    }
    return k;
}

static bool same_run(const char *a, const uint32_t *ra, const char *b, const uint32_t *rb)
{
    return ra[1] == rb[1] && memcmp(a + ra[0], b + rb[0], ra[1]) == 0;
}

static int keyed_cmp(const void *a, const void *b)
{
    const keyed *x = a, *y = b;
    if (x->key != y->key)
        return x->key < y->key ? -1 : 1;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

static const char *arena_at(const rctx *x, size_t off)
{
    return x->arena.s + off;
}

/* The rule with these templates, made if new; NONE32 when memory runs out. */
static uint32_t rule_get(rctx *x, uint8_t kind, bool anchored, const char *tp, size_t tpl,
                         const char *tr, size_t trl, uint32_t first)
{
    uint64_t key = combine(combine(combine(nnp__hash_str(tp), nnp__hash_str(tr)), anchored),
                           kind);
    size_t m = x->dedup_cap - 1, i = (size_t)key & m;
    for (; x->dedup[i] != NONE32; i = (i + 1) & m) {
        rrule *ru = &x->rules[x->dedup[i]];
        if (ru->key == key && ru->kind == kind && ru->anchored == anchored && ru->tpl == tpl &&
            ru->trl == trl && memcmp(arena_at(x, ru->tp), tp, tpl) == 0 &&
            memcmp(arena_at(x, ru->tr), tr, trl) == 0) {
            if (first < ru->first)
                ru->first = first;
            ru->members++;
            return x->dedup[i];
        }
    }
    if (!nnp__grow((void **)&x->rules, &x->rules_cap, x->nrules + 1, sizeof *x->rules))
        return NONE32;
    rrule *ru = &x->rules[x->nrules];
    memset(ru, 0, sizeof *ru);
    ru->tp = x->arena.len;
    nnp__sbuf_put(&x->arena, tp, tpl);
    nnp__sbuf_put(&x->arena, "", 1);
    ru->tr = x->arena.len;
    nnp__sbuf_put(&x->arena, tr, trl);
    nnp__sbuf_put(&x->arena, "", 1);
    if (x->arena.failed)
        return NONE32;
    ru->tpl = (uint32_t)tpl;
    ru->trl = (uint32_t)trl;
    ru->first = first;
    ru->members = 1;
    ru->key = key;
    ru->kind = kind;
    ru->anchored = anchored;
    x->dedup[i] = (uint32_t)x->nrules;
    return (uint32_t)x->nrules++;
}

/* Build the templates of the members of one group (same skeleton, same anchoring) and their
 * rules. */
static nnp_status build_group(rctx *x, const keyed *g, size_t ng)
{
    size_t need = ng * 4 * MAX_RUNS;
    if (!nnp__grow((void **)&x->runs, &x->runs_cap, need, sizeof *x->runs))
        return nnp__nomem();
    size_t np0 = 0, nr0 = 0;
    bool uniform = true;
    for (size_t k = 0; k < ng; k++) {
        const rpair *q = &x->pr[g[k].idx];
        size_t cp = q->cp, cr = q->cr;
        uint32_t *ru = x->runs + k * 4 * MAX_RUNS;
        size_t a = digit_runs(q->p, cp, ru), b = digit_runs(q->r, cr, ru + 2 * MAX_RUNS);
        if (k == 0) {
            np0 = a;
            nr0 = b;
        } else if (a != np0 || b != nr0) {
            uniform = false; /* a skeleton hash collision: no groups, the rules stay literal */
        }
    }
    size_t np = np0 < MAX_RUNS ? np0 : MAX_RUNS, nr = nr0 < MAX_RUNS ? nr0 : MAX_RUNS;
    int hole_of_port[MAX_RUNS], hole_of_ref[MAX_RUNS];
    bool const_p[MAX_RUNS], const_r[MAX_RUNS];
    for (size_t a = 0; a < MAX_RUNS; a++) {
        hole_of_port[a] = hole_of_ref[a] = 0;
        const_p[a] = const_r[a] = true;
    }
    const rpair *q0 = &x->pr[g[0].idx];
    for (size_t k = 1; uniform && k < ng; k++) {
        const rpair *q = &x->pr[g[k].idx];
        const uint32_t *ru = x->runs + k * 4 * MAX_RUNS, *r0 = x->runs;
        for (size_t a = 0; a < np; a++)
            if (const_p[a] && !same_run(q->p, ru + 2 * a, q0->p, r0 + 2 * a))
                const_p[a] = false;
        for (size_t b = 0; b < nr; b++)
            if (const_r[b] && !same_run(q->r, ru + 2 * (MAX_RUNS + b), q0->r,
                                        r0 + 2 * (MAX_RUNS + b)))
                const_r[b] = false;
    }
    int holes = 0;
    for (size_t a = 0; uniform && a < np && holes < 9; a++) {
        if (const_p[a])
            continue;
        for (size_t b = 0; b < nr; b++) {
            if (const_r[b] || hole_of_ref[b])
                continue;
            bool all = true;
            for (size_t k = 0; all && k < ng; k++) {
                const rpair *q = &x->pr[g[k].idx];
                const uint32_t *ru = x->runs + k * 4 * MAX_RUNS;
                all = same_run(q->p, ru + 2 * a, q->r, ru + 2 * (MAX_RUNS + b));
            }
            if (all) {
                hole_of_port[a] = hole_of_ref[b] = ++holes;
                break;
            }
        }
    }
    /* when every digit run that varies is a group, all members share one rule */
    bool shared = uniform && np0 <= MAX_RUNS && nr0 <= MAX_RUNS;
    for (size_t a = 0; a < np; a++)
        shared &= const_p[a] || hole_of_port[a];
    for (size_t b = 0; b < nr; b++)
        shared &= const_r[b] || hole_of_ref[b];
    for (size_t k = 0; k < (shared ? 1 : ng); k++) {
        const rpair *q = &x->pr[g[k].idx];
        const uint32_t *ru = x->runs + k * 4 * MAX_RUNS;
        size_t cp = q->cp, cr = q->cr;
        bool anch = q->anchored;
        x->tp.len = x->tr.len = 0;
        if (!holes) {
            nnp__sbuf_put(&x->tp, q->p, cp);
            nnp__sbuf_put(&x->tr, q->r, cr);
        }
        /* literal text up to each digit run that is a group, then the group */
        size_t i = 0;
        for (size_t a = 0; holes && a < np; a++)
            if (hole_of_port[a]) {
                nnp__sbuf_put(&x->tp, q->p + i, ru[2 * a] - i);
                nnp__sbuf_put(&x->tp, (char[]){HOLE}, 1);
                i = ru[2 * a] + ru[2 * a + 1];
            }
        if (holes)
            nnp__sbuf_put(&x->tp, q->p + i, cp - i);
        const uint32_t *rr = ru + 2 * MAX_RUNS;
        i = 0;
        for (size_t b = 0; holes && b < nr; b++)
            if (hole_of_ref[b]) {
                char ref[2] = {GREF, (char)('0' + hole_of_ref[b])};
                nnp__sbuf_put(&x->tr, q->r + i, rr[2 * b] - i);
                nnp__sbuf_put(&x->tr, ref, 2);
                i = rr[2 * b] + rr[2 * b + 1];
            }
        if (holes)
            nnp__sbuf_put(&x->tr, q->r + i, cr - i);
        nnp__sbuf_put(&x->tp, "", 0);
        nnp__sbuf_put(&x->tr, "", 0);
        if (x->tp.failed || x->tr.failed)
            return nnp__nomem();
        uint32_t id = rule_get(x, RK_GEN, anch, x->tp.s, x->tp.len, x->tr.s, x->tr.len,
                               g[k].idx);
        if (id == NONE32)
            return nnp__nomem();
        x->pr[g[k].idx].rule = id;
    }
    if (shared) {
        for (size_t k = 1; k < ng; k++)
            x->pr[g[k].idx].rule = x->pr[g[0].idx].rule;
        x->rules[x->pr[g[0].idx].rule].members += (uint32_t)(ng - 1);
    }
    return NNP_OK;
}

/* Build this round's rules from the pairs' states, in file order, and index them. */
static nnp_status build_rules(rctx *x)
{
    x->nrules = 0;
    x->arena.len = 0;
    if (x->arena.s)
        x->arena.s[0] = 0;
    memset(x->dedup, 0xff, x->dedup_cap * sizeof *x->dedup);
    size_t ng = 0;
    for (size_t i = 0; i < x->n; i++) {
        rpair *q = &x->pr[i];
        if (q->state != RS_GEN)
            continue;
        size_t cp, cr;
        bool anch;
        pair_cut(q, &cp, &cr, &anch);
        q->cp = (uint32_t)cp;
        q->cr = (uint32_t)cr;
        q->anchored = anch;
        x->groups[ng].key = index_key(combine(skeleton_hash(q->p, cp), skeleton_hash(q->r, cr)),
                                      anch);
        x->groups[ng++].idx = (uint32_t)i;
    }
    qsort(x->groups, ng, sizeof *x->groups, keyed_cmp);
    for (size_t s = 0; s < ng;) {
        size_t e = s + 1;
        while (e < ng && x->groups[e].key == x->groups[s].key)
            e++;
        nnp_status st = build_group(x, x->groups + s, e - s);
        if (st)
            return st;
        s = e;
    }
    char m[1] = {x->marker};
    for (size_t i = 0; i < x->n; i++) {
        rpair *q = &x->pr[i];
        uint32_t id = 0;
        if (q->state == RS_LIT) {
            id = rule_get(x, RK_LIT, true, q->p, q->lp, q->r, q->lr, (uint32_t)i);
            q->rule = id;
        } else if (q->state == RS_MARK) {
            x->cur.len = 0;
            nnp__sbuf_put(&x->cur, m, 1);
            nnp__sbuf_put(&x->cur, q->r, q->lr);
            if (x->cur.failed)
                return nnp__nomem();
            id = q->rule = rule_get(x, RK_MARK_IN, true, q->p, q->lp, x->cur.s, q->lr + 1,
                                    (uint32_t)i);
            if (id != NONE32)
                id = rule_get(x, RK_MARK_OUT, true, x->cur.s, q->lr + 1, q->r, q->lr,
                              (uint32_t)i);
        }
        if (id == NONE32)
            return nnp__nomem();
    }
    /* file order: marked names in, single names, general rules, marked names out; within a
     * kind, by the first name each serves (execution order) */
    for (size_t k = 0; k < x->nrules; k++) {
        x->okeys[k].key = ((uint64_t)x->rules[k].kind << 32) | x->rules[k].first;
        x->okeys[k].idx = (uint32_t)k;
    }
    qsort(x->okeys, x->nrules, sizeof *x->okeys, keyed_cmp);
    for (size_t k = 0; k < x->nrules; k++)
        x->ordered[k] = x->okeys[k].idx;
    memset(x->ix, 0xff, x->ix_cap * sizeof *x->ix);
    for (size_t k = 0; k < x->nrules; k++) {
        rrule *ru = &x->rules[x->ordered[k]];
        ru->order = (uint32_t)k;
        ru->offends = false;
        uint64_t key = index_key(skeleton_hash(arena_at(x, ru->tp), ru->tpl), ru->anchored);
        size_t b = (size_t)mix64(key) & (x->ix_cap - 1);
        ru->next = x->ix[b];
        x->ix[b] = x->ordered[k];
    }
    return NNP_OK;
}

/* Whether a port template matches the start of s (all of it when anchored), as its regex does:
 * a HOLE takes a whole digit run, since a literal never follows it with a digit. The match's
 * end and the groups go to *end and cap. */
static bool tmatch(const char *t, size_t tl, bool anchored, const char *s, size_t sl,
                   size_t cap[10][2], size_t *end)
{
    size_t j = 0;
    int k = 0;
    for (size_t i = 0; i < tl; i++) {
        if (t[i] == HOLE) {
            if (j >= sl || !is_digit(s[j]))
                return false;
            size_t st = j;
            while (j < sl && is_digit(s[j]))
                j++;
            k++;
            cap[k][0] = st;
            cap[k][1] = j - st;
        } else {
            if (j >= sl || s[j] != t[i])
                return false;
            j++;
        }
    }
    if (anchored && j != sl)
        return false;
    *end = j;
    return true;
}

/* The first rule at or after file position `pos` that matches s; NONE32 if none. */
static uint32_t first_match(const rctx *x, const char *s, size_t sl, uint32_t pos)
{
    uint32_t best = NONE32, best_order = NONE32;
    uint64_t h = 1469598103934665603ull;
    bool in_run = false;
    size_t cap[10][2], end;
    for (size_t j = 0; j <= sl; j++) {
        bool at_end = j == sl;
        if (!at_end) {
            bool d = is_digit(s[j]);
            if (!d)
                h = fnv_step(h, (unsigned char)s[j]);
            else if (!in_run)
                h = fnv_step(h, HOLE);
            in_run = d;
            if (!is_sep(s[j]))
                continue;
        }
        uint64_t key = index_key(h, at_end);
        for (uint32_t id = x->ix[(size_t)mix64(key) & (x->ix_cap - 1)]; id != NONE32;
             id = x->rules[id].next) {
            const rrule *ru = &x->rules[id];
            if (ru->order < pos || ru->order >= best_order || ru->anchored != at_end)
                continue;
            if (tmatch(arena_at(x, ru->tp), ru->tpl, ru->anchored, s, sl, cap, &end)) {
                best = id;
                best_order = ru->order;
            }
        }
    }
    return best;
}

/* Rewrite x->cur by rule `id` into x->nxt, then swap them. */
static nnp_status apply_rule(rctx *x, uint32_t id)
{
    const rrule *ru = &x->rules[id];
    size_t cap[10][2], end = 0;
    tmatch(arena_at(x, ru->tp), ru->tpl, ru->anchored, x->cur.s, x->cur.len, cap, &end);
    x->nxt.len = 0;
    const char *t = arena_at(x, ru->tr);
    size_t lit = 0; /* where the literal text not yet copied starts */
    for (size_t i = 0; i < ru->trl; i++)
        if (t[i] == GREF) {
            nnp__sbuf_put(&x->nxt, t + lit, i - lit);
            int k = t[++i] - '0';
            nnp__sbuf_put(&x->nxt, x->cur.s + cap[k][0], cap[k][1]);
            lit = i + 1;
        }
    nnp__sbuf_put(&x->nxt, t + lit, ru->trl - lit);
    nnp__sbuf_put(&x->nxt, x->cur.s + end, x->cur.len - end);
    if (x->nxt.failed)
        return nnp__nomem();
    nnp_sbuf t2 = x->cur;
    x->cur = x->nxt;
    x->nxt = t2;
    return NNP_OK;
}

/* Run pair i's port name through the rules: *ok when it comes out as its reference name;
 * *offender is the first rule applied that is not one of its own (NONE32: none). */
static nnp_status simulate(rctx *x, size_t i, bool *ok, uint32_t *offender)
{
    const rpair *q = &x->pr[i];
    x->cur.len = 0;
    nnp__sbuf_put(&x->cur, q->p, q->lp); /* an sbuf stays NUL-terminated */
    if (x->cur.failed)
        return nnp__nomem();
    *offender = NONE32;
    uint32_t pos = 0, own = q->state == RS_SAME ? NONE32 : q->rule;
    for (size_t step = 0; step <= x->nrules; step++) {
        uint32_t id = first_match(x, x->cur.s, x->cur.len, pos);
        if (id == NONE32)
            break;
        bool mine = id == own || (q->state == RS_MARK && x->rules[id].kind == RK_MARK_OUT);
        if (!mine && *offender == NONE32)
            *offender = id;
        nnp_status st = apply_rule(x, id);
        if (st)
            return st;
        pos = x->rules[id].order + 1;
    }
    *ok = x->cur.len == q->lr && memcmp(x->cur.s, q->r, q->lr) == 0;
    return NNP_OK;
}

/* One round: build the rules, run every name through them, and make the rules that mapped a
 * name wrongly narrower. *failures counts the names mapped wrongly. */
static nnp_status rules_round(rctx *x, size_t *failures, bool last)
{
    nnp_status st = build_rules(x);
    if (st)
        return st;
    *failures = 0;
    for (size_t i = 0; i < x->n; i++) {
        rpair *q = &x->pr[i];
        q->failed = false;
        if (q->state == RS_DUP)
            continue;
        uint32_t off = NONE32;
        bool ok = false;
        if ((st = simulate(x, i, &ok, &off)))
            return st;
        if (ok)
            continue;
        if (q->state == RS_MARK)
            return nnp__fail(NNP_ERR_INTERNAL, "nnp__align_rules: '%s' is not mapped to '%s'",
                             q->p, q->r);
        ++*failures;
        q->failed = true;
        q->offender = off;
        if (off != NONE32)
            x->rules[off].victims++;
    }
    for (size_t i = 0; i < x->n; i++) {
        rpair *q = &x->pr[i];
        if (!q->failed)
            continue;
        /* a general rule that catches names it should not is narrowed, unless it serves more
         * names than the name's own rule and catches few: then the name is taken out of its
         * way (a few pairs aligned wrongly must not break the rule of thousands) */
        rrule *ru = q->offender == NONE32 ? NULL : &x->rules[q->offender];
        uint32_t own = q->state == RS_GEN ? x->rules[q->rule].members : 1;
        if (!last && ru && ru->kind == RK_GEN && !ru->anchored &&
            (ru->members <= own || ru->victims * 8 >= ru->members) &&
            (q->state == RS_GEN || q->state == RS_SAME))
            ru->offends = true;
        else if (q->state == RS_GEN && !last)
            q->state = RS_LIT;
        else if (x->marker)
            q->state = RS_MARK;
        else
            return nnp__fail(NNP_ERR_UNSUPPORTED, "nnp__align_rules: '%s' needs a marked name "
                             "in passing, but the names start with every character that could "
                             "mark one", q->p);
    }
    for (size_t i = 0; i < x->n; i++) {
        rpair *q = &x->pr[i];
        if (q->state == RS_GEN && x->rules[q->rule].offends)
            q->level++;
    }
    return NNP_OK;
}

/* A name the rule language can carry: no spaces or control bytes; a reference name must also
 * make a replacement word (not empty, not starting a comment, no backslash before a digit). */
static nnp_status check_names(const char *p, const char *r)
{
    for (const char *s = p; *s; s++)
        if ((unsigned char)*s <= ' ' || *s == 0x7f)
            return nnp__fail(NNP_ERR_UNSUPPORTED, "nnp__align_rules: port name '%s' holds a "
                             "space or control character, which rules cannot match", p);
    for (const char *s = r; *s; s++)
        if ((unsigned char)*s <= ' ' || *s == 0x7f || (*s == '\\' && is_digit(s[1])))
            return nnp__fail(NNP_ERR_UNSUPPORTED, "nnp__align_rules: reference name '%s' "
                             "holds a space, a control character or a backslash before a digit, "
                             "which a rename cannot write", r);
    if (strcmp(p, r) != 0 && (!*r || *r == '#'))
        return nnp__fail(NNP_ERR_UNSUPPORTED, "nnp__align_rules: reference name '%s' cannot be "
                         "a rename's replacement (empty or starting with '#')", r);
    return NNP_OK;
}

/* Mark duplicate port names; the same port name with two reference names is an error. */
static nnp_status find_duplicates(rctx *x)
{
    size_t cap = 16;
    while (cap < 2 * x->n)
        cap *= 2;
    uint32_t *tab = malloc(cap * sizeof *tab);
    if (!tab)
        return nnp__nomem();
    memset(tab, 0xff, cap * sizeof *tab);
    nnp_status st = NNP_OK;
    for (size_t i = 0; i < x->n && !st; i++) {
        rpair *q = &x->pr[i];
        size_t b = (size_t)nnp__hash_str(q->p) & (cap - 1);
        for (;; b = (b + 1) & (cap - 1)) {
            if (tab[b] == NONE32) {
                tab[b] = (uint32_t)i;
                break;
            }
            const rpair *o = &x->pr[tab[b]];
            if (strcmp(o->p, q->p) != 0)
                continue;
            if (strcmp(o->r, q->r) != 0)
                st = nnp__fail(NNP_ERR_ARG, "nnp__align_rules: port name '%s' is given two "
                               "reference names, '%s' and '%s'", q->p, o->r, q->r);
            q->state = RS_DUP;
            break;
        }
    }
    free(tab);
    return st;
}

/* A character no port or reference name starts with, for marked names (0: none). */
static void pick_marker(rctx *x)
{
    static const char cands[] = "~!@%=:;,&+-_";
    bool used[256] = {false};
    for (size_t i = 0; i < x->n; i++) {
        used[(unsigned char)x->pr[i].p[0]] = true;
        used[(unsigned char)x->pr[i].r[0]] = true;
    }
    x->marker = 0;
    for (const char *c = cands; *c && !x->marker; c++)
        if (!used[(unsigned char)*c])
            x->marker = *c;
}

static void put_regex(nnp_sbuf *b, const char *t, size_t tl, bool anchored)
{
    nnp__sbuf_put(b, "^", 1);
    for (size_t i = 0; i < tl; i++) {
        if (t[i] == HOLE)
            nnp__sbuf_puts(b, "([0-9]+)");
        else if (strchr(".[]()*+?{}|^$\\", t[i]))
            nnp__sbuf_printf(b, "\\%c", t[i]);
        else
            nnp__sbuf_put(b, t + i, 1);
    }
    if (anchored)
        nnp__sbuf_put(b, "$", 1);
}

static void put_replacement(nnp_sbuf *b, const char *t, size_t tl)
{
    for (size_t i = 0; i < tl; i++) {
        if (t[i] == GREF) {
            nnp__sbuf_printf(b, "\\%c", t[i + 1]);
            i++;
        } else {
            nnp__sbuf_put(b, t + i, 1);
        }
    }
}

static nnp_status render(rctx *x, nnp_sbuf *out)
{
    size_t nren = 0, nlit = 0, width = 0;
    nnp_sbuf re = {0};
    for (size_t k = 0; k < x->nrules; k++) {
        const rrule *ru = &x->rules[x->ordered[k]];
        re.len = 0;
        put_regex(&re, arena_at(x, ru->tp), ru->tpl, ru->anchored);
        if (re.len > width)
            width = re.len;
        nren++;
        nlit += ru->kind != RK_GEN;
    }
    if (width > 40)
        width = 40;
    nnp__sbuf_puts(out, "# Proposed by nnparity's automatic alignment (execution order, shapes, "
                   "names): review it before use.\n");
    nnp__sbuf_printf(out, "# %zu names mapped by %zu renames", x->n, nren);
    if (nlit)
        nnp__sbuf_printf(out, " (%zu for single names)", nlit);
    nnp__sbuf_puts(out, ".\n");
    for (size_t k = 0; k < x->nrules; k++) {
        const rrule *ru = &x->rules[x->ordered[k]];
        /* say what each part is for when there is more than the general rules */
        if (ru->kind != (k ? x->rules[x->ordered[k - 1]].kind : RK_GEN)) {
            if (ru->kind == RK_MARK_IN)
                nnp__sbuf_printf(out, "# names the rules below would map wrongly, carried "
                                 "through them marked with '%c'\n", x->marker);
            else if (ru->kind == RK_LIT)
                nnp__sbuf_puts(out, "# single names that a general rule below would map "
                               "wrongly\n");
            else if (ru->kind == RK_GEN)
                nnp__sbuf_puts(out, "# general rules\n");
            else
                nnp__sbuf_puts(out, "# the marked names, unmarked\n");
        }
        re.len = 0;
        put_regex(&re, arena_at(x, ru->tp), ru->tpl, ru->anchored);
        if (re.failed)
            break;
        nnp__sbuf_printf(out, "rename  %-*s  ", (int)width, re.s);
        put_replacement(out, arena_at(x, ru->tr), ru->trl);
        nnp__sbuf_put(out, "\n", 1);
    }
    bool failed = re.failed;
    nnp__sbuf_free(&re);
    return failed || out->failed ? nnp__nomem() : NNP_OK;
}

static void rctx_free(rctx *x)
{
    free(x->pr);
    free(x->rules);
    nnp__sbuf_free(&x->arena);
    free(x->dedup);
    free(x->ix);
    free(x->ordered);
    free(x->okeys);
    free(x->groups);
    free(x->runs);
    nnp__sbuf_free(&x->tp);
    nnp__sbuf_free(&x->tr);
    nnp__sbuf_free(&x->cur);
    nnp__sbuf_free(&x->nxt);
}

static size_t common_suffix(const char *a, size_t la, const char *b, size_t lb)
{
    size_t k = 0;
    while (k < la && k < lb && a[la - 1 - k] == b[lb - 1 - k])
        k++;
    return k;
}

/* Declared in internal.h. The text is appended to `out`. A name given as its own reference
 * name is kept as it is: giving every port name that was not aligned that way keeps the rules off
 * them. A duplicate pair counts once; one port name with two reference names is NNP_ERR_ARG;
 * names with spaces or control characters, and reference names that cannot be a replacement
 * (empty, starting with '#', a backslash before a digit), are NNP_ERR_UNSUPPORTED. */
nnp_status nnp__align_rules(const char *const *port_names, const char *const *ref_names, size_t n,
                            nnp_sbuf *out)
{
    if (!out || (n && (!port_names || !ref_names)))
        return nnp__fail(NNP_ERR_ARG, "nnp__align_rules: names or output missing");
    if (n >= NONE32 / 2)
        return nnp__fail(NNP_ERR_ARG, "nnp__align_rules: too many names");
    rctx x = {.n = n, .marker = '~'};
    nnp_status st = NNP_OK;
    for (size_t i = 0; i < n && !st; i++) {
        if (!port_names[i] || !ref_names[i])
            st = nnp__fail(NNP_ERR_ARG, "nnp__align_rules: name %zu is missing", i);
        else
            st = check_names(port_names[i], ref_names[i]);
    }
    if (st)
        return st;
    /* a pair makes at most two rules (a marked name) */
    x.dedup_cap = x.ix_cap = 16;
    while (x.dedup_cap < 4 * n + 4)
        x.dedup_cap *= 2;
    x.ix_cap = x.dedup_cap;
    x.pr = calloc(n ? n : 1, sizeof *x.pr);
    x.dedup = malloc(x.dedup_cap * sizeof *x.dedup);
    x.ix = malloc(x.ix_cap * sizeof *x.ix);
    x.ordered = malloc((2 * n + 1) * sizeof *x.ordered);
    x.okeys = malloc((2 * n + 1) * sizeof *x.okeys);
    x.groups = malloc((n ? n : 1) * sizeof *x.groups);
    if (!x.pr || !x.dedup || !x.ix || !x.ordered || !x.okeys || !x.groups) {
        rctx_free(&x);
        return nnp__nomem();
    }
    for (size_t i = 0; i < n; i++) {
        rpair *q = &x.pr[i];
        q->p = port_names[i];
        q->r = ref_names[i];
        size_t lp = strlen(q->p), lr = strlen(q->r);
        if (lp >= NONE32 || lr >= NONE32) {
            rctx_free(&x);
            return nnp__fail(NNP_ERR_ARG, "nnp__align_rules: name %zu is too long", i);
        }
        q->lp = (uint32_t)lp;
        q->lr = (uint32_t)lr;
        q->cs = (uint32_t)common_suffix(q->p, lp, q->r, lr);
        q->state = lp == lr && q->cs == lp ? RS_SAME : RS_GEN;
    }
    st = find_duplicates(&x);
    pick_marker(&x);
    size_t failures = 1;
    /* every round narrows a rule or moves a name to a literal or marked rename; the last
     * rounds mark every name still mapped wrongly, which always works */
    for (int round = 0; !st && failures && round < MAX_ROUNDS + 16; round++)
        st = rules_round(&x, &failures, round >= MAX_ROUNDS);
    if (!st && failures)
        st = nnp__fail(NNP_ERR_INTERNAL, "nnp__align_rules: rules that map every name were not "
                       "found");
    if (!st)
        st = render(&x, out);
    rctx_free(&x);
    return st;
}
