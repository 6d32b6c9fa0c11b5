/*
 * align_rules.c - the rules file that says what an alignment found, in the rule language
 * (docs/rules.md).
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
 */
#include <stdlib.h>
#include <string.h>

#include "diff/diff.h"

#define NONE32 UINT32_MAX

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

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
    return nnp__hash_combine(skeleton, anchored ? 2 : 1);
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
    uint64_t key = nnp__hash_combine(nnp__hash_combine(nnp__hash_combine(nnp__hash_str(tp), nnp__hash_str(tr)), anchored),
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
        x->groups[ng].key = index_key(nnp__hash_combine(skeleton_hash(q->p, cp), skeleton_hash(q->r, cr)),
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
        size_t b = (size_t)nnp__mix64(key) & (x->ix_cap - 1);
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
        for (uint32_t id = x->ix[(size_t)nnp__mix64(key) & (x->ix_cap - 1)]; id != NONE32;
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
