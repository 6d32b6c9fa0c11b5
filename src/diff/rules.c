/*
 * rules.c - the rule language that maps one side's tensor names onto the other's and says how to
 * bring their layouts together. One parser serves injection, diff and the weights check. A rules
 * file is line-based and meant to be written and shared by people (docs/rules.md):
 *
 *     # torchvision ViT names on the left of a port's GGUF-style names
 *     rename    ^blk\.([0-9]+)\.attn_q/   encoder.layers.\1.self_attention.q/
 *     ignore    /grad_
 *     transpose \.weight$  1,0
 *     concat    \.attn_(q|k|v)/  -1  q k v
 *     tolerance ^head/  1e-3 1e-2
 *
 * Every rule matches a POSIX extended regex (common/regex.h: leftmost-longest, bounded) against
 * the name as the rules before it left it, in file order. Renames rewrite the first match (\0 to \9 insert the match and its groups), an
 * alias keeps the name and adds a renamed copy (a tied weight that stands for two);
 * `ignore` drops the name (`ref ignore` drops reference names, as they are); adapters (transpose/permute, reshape, slice, select, cast, rotary, and
 * with `ref` before them the same on the reference's tensor) are collected in order; `concat`
 * marks the name as one part of a fused record, `split` forks it into parts; `tolerance` sets the
 * pair's tolerances; `gather` says how the copies of a name that several ranks of a distributed
 * capture hold are joined (the first gather rule that matches decides; pairing.c joins them).
 * Blank lines and text after '#' are comments. Errors name the file, line and column.
 */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/regex.h"
#include "diff/diff.h"

typedef enum {
    RULE_RENAME,
    RULE_ALIAS,
    RULE_IGNORE,
    RULE_TOLERANCE,
    RULE_ADAPT,
    RULE_CONCAT,
    RULE_SPLIT,
    RULE_COMPONENT,
    RULE_GATHER
} rule_kind;

#define MAX_LABELS 16

typedef struct {
    rule_kind kind;
    nnp_regex *re;
    char *pattern;              /* as written, for messages */
    char *replacement;          /* rename */
    nnp_op op;                  /* adapters */
    double atol, rtol;          /* tolerance */
    int64_t axis;               /* concat, split */
    char *labels[MAX_LABELS];   /* concat, split */
    int64_t sizes[MAX_LABELS];  /* split: each part's length along the axis; -1: equal parts */
    size_t nlabels;
    int gather;                 /* gather: NNP_GATHER_* */
    nnp_component_kind component; /* component: the component it gives */
    size_t lineno;              /* where the rule was written, for messages */
} rule;

struct nnp_rules {
    rule *rules;
    size_t n, cap;
    char *origin; /* the file the rules came from, for messages */
};

/* The most records one name may become. Each split makes one record per label of every record
 * the rules before it made, and each alias doubles them, so a few lines could otherwise make a
 * name into millions (nine splits of eight labels: 134 million); real rules make at most a few
 * dozen. */
#define MAX_MAPPINGS 1024

/* The most rules one file holds, and the most bytes it may have: a file past them is refused
 * before anything is compiled. Rules written by people run to dozens, those --emit-rules writes
 * to one per aligned pair, a few thousand for the largest models. */
#define MAX_RULES 100000

static void rule_free(rule *ru)
{
    nnp__regex_free(ru->re);
    free(ru->pattern);
    free(ru->replacement);
    for (size_t i = 0; i < ru->nlabels; i++)
        free(ru->labels[i]);
}

void nnp_rules_free(nnp_rules *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n; i++)
        rule_free(&r->rules[i]);
    free(r->rules);
    free(r->origin);
    free(r);
}

/* The next whitespace-separated word of the line at *p, or NULL at the end (or a comment). */
static const char *next_word(const char **p, size_t *len)
{
    const char *s = *p;
    while (*s == ' ' || *s == '\t')
        s++;
    if (!*s || *s == '#' || *s == '\n' || *s == '\r')
        return NULL;
    const char *e = s;
    while (*e && *e != ' ' && *e != '\t' && *e != '\n' && *e != '\r')
        e++;
    *len = (size_t)(e - s);
    *p = e;
    return s;
}

/* The verbs: how many words each takes after the regex (min, max; max -1: any). */
static const struct verb {
    const char *word;
    rule_kind kind;
    nnp_op_kind op;
    int min_args, max_args;
    const char *args; /* for the message when they are wrong */
} verbs[] = {
    {"rename", RULE_RENAME, 0, 1, 1, "a regex and a replacement"},
    {"alias", RULE_ALIAS, 0, 1, 1, "a regex and a replacement"},
    {"ignore", RULE_IGNORE, 0, 0, 0, "a regex"},
    {"tolerance", RULE_TOLERANCE, 0, 2, 2, "a regex, an atol and an rtol"},
    {"transpose", RULE_ADAPT, NNP_OP_TRANSPOSE, 0, 1, "a regex and optionally axes like 1,0"},
    {"permute", RULE_ADAPT, NNP_OP_TRANSPOSE, 0, 1, "a regex and optionally axes like 0,2,1"},
    {"reshape", RULE_ADAPT, NNP_OP_RESHAPE, 0, 1, "a regex and optionally a shape like 4,-1"},
    {"slice", RULE_ADAPT, NNP_OP_SLICE, 2, 2, "a regex, an axis and START:END"},
    {"select", RULE_ADAPT, NNP_OP_SELECT, 2, 2, "a regex, an axis and an index"},
    {"cast", RULE_ADAPT, NNP_OP_CAST, 1, 1, "a regex and a dtype (F64, F32, F16 or BF16)"},
    {"rotary", RULE_ADAPT, NNP_OP_ROTARY, 1, 1, "a regex and the number of heads"},
    {"concat", RULE_CONCAT, 0, 3, MAX_LABELS + 1, "a regex, an axis and two or more labels"},
    {"split", RULE_SPLIT, 0, 3, MAX_LABELS + 1, "a regex, an axis and two or more labels"},
    /* the message lists the components' names from their table (component.c) */
    {"component", RULE_COMPONENT, 0, 1, 1, "a regex and a component"},
    {"gather", RULE_GATHER, 0, 1, 2, "a regex and how: concat AXIS, sum or rank0"},
};

typedef struct {
    const char *origin;
    size_t lineno;
    const char *line;
} where;

static nnp_status bad(const where *w, const char *at, const char *fmt, const char *what,
                      size_t what_len)
{
    char msg[512];
    snprintf(msg, sizeof msg, fmt, (int)what_len, what);
    return nnp__fail(NNP_ERR_FORMAT, "%s: line %zu, column %zu: %s", w->origin, w->lineno,
                     (size_t)(at - w->line) + 1, msg);
}

/* A whole word as an integer; false when it is not one. */
static bool word_int(const char *s, size_t n, int64_t *out)
{
    char buf[32];
    if (n == 0 || n >= sizeof buf)
        return false;
    memcpy(buf, s, n);
    buf[n] = 0;
    char *end;
    errno = 0;
    long long v = strtoll(buf, &end, 10);
    if (errno || *end || !(isdigit((unsigned char)buf[0]) || buf[0] == '-'))
        return false;
    *out = v;
    return true;
}

static bool word_double(const char *s, size_t n, double *out)
{
    char buf[64];
    if (n == 0 || n >= sizeof buf)
        return false;
    memcpy(buf, s, n);
    buf[n] = 0;
    char *end;
    errno = 0;
    *out = strtod(buf, &end);
    return !errno && !*end && isfinite(*out) && *out >= 0;
}

/* "1,0,2" into dims; false when a part is not an integer or there are too many. */
static bool word_dims(const char *s, size_t n, int64_t *dims, uint32_t *count)
{
    *count = 0;
    for (size_t i = 0; i <= n;) {
        size_t j = i;
        while (j < n && s[j] != ',')
            j++;
        if (*count == NNP_ADAPT_MAX_DIMS || !word_int(s + i, j - i, &dims[*count]))
            return false;
        (*count)++;
        i = j + 1;
    }
    return true;
}

/* Parse the words after the regex into the rule. */
static nnp_status parse_args(rule *ru, const where *w, const char *const *a, const size_t *alen,
                             size_t nargs)
{
    nnp_op *op = &ru->op;
    switch (ru->kind) {
    case RULE_RENAME:
    case RULE_ALIAS:
        if (!(ru->replacement = strndup(a[0], alen[0])))
            return nnp__nomem();
        for (const char *q = ru->replacement; *q; q++)
            if (*q == '\\' && q[1] >= '0' && q[1] <= '9' &&
                (unsigned)(q[1] - '0') > nnp__regex_groups(ru->re))
                return bad(w, a[0] + (q - ru->replacement), "%.*s refers to a group the regex "
                           "does not have", q, 2);
        return NNP_OK;
    case RULE_IGNORE:
        return NNP_OK;
    case RULE_GATHER: {
        static const struct { const char *word; int mode; size_t nargs; } modes[] = {
            {"concat", NNP_GATHER_CONCAT, 2}, {"sum", NNP_GATHER_SUM, 1},
            {"rank0", NNP_GATHER_RANK0, 1}};
        for (size_t i = 0; i < sizeof modes / sizeof *modes; i++) {
            if (strlen(modes[i].word) != alen[0] || memcmp(modes[i].word, a[0], alen[0]) != 0)
                continue;
            if (nargs < modes[i].nargs)
                return bad(w, a[0] + alen[0], "%.*s'gather REGEX concat' needs the axis to join "
                           "along", "", 0);
            if (nargs > modes[i].nargs)
                return bad(w, a[1], "unexpected '%.*s' after the rule", a[1], alen[1]);
            if (nargs == 2 && !word_int(a[1], alen[1], &ru->axis))
                return bad(w, a[1], "'%.*s' is not an axis (an integer)", a[1], alen[1]);
            ru->gather = modes[i].mode;
            return NNP_OK;
        }
        return bad(w, a[0], "'%.*s' is not a way to gather (concat AXIS, sum or rank0)", a[0],
                   alen[0]);
    }
    case RULE_COMPONENT: {
        ru->component = nnp__component_parse(a[0], alen[0]);
        if (ru->component != NNP_COMPONENT_COUNT)
            return NNP_OK;
        char names[128], fmt[192];
        nnp__component_list(names, sizeof names);
        snprintf(fmt, sizeof fmt, "'%%.*s' is not a component (%s)", names);
        return bad(w, a[0], fmt, a[0], alen[0]);
    }
    case RULE_TOLERANCE:
        for (size_t i = 0; i < 2; i++)
            if (!word_double(a[i], alen[i], i ? &ru->rtol : &ru->atol))
                return bad(w, a[i], "'%.*s' is not a tolerance (a number >= 0)", a[i], alen[i]);
        return NNP_OK;
    case RULE_CONCAT:
    case RULE_SPLIT:
        if (nnp__regex_groups(ru->re) < 1)
            return bad(w, a[-1], "%.*sthe regex needs a group, \\1, that holds each part's "
                       "label", "", 0);
        if (!word_int(a[0], alen[0], &ru->axis))
            return bad(w, a[0], "'%.*s' is not an axis (an integer)", a[0], alen[0]);
        for (size_t i = 1; i < nargs; i++) {
            const char *colon = ru->kind == RULE_SPLIT ? memchr(a[i], ':', alen[i]) : NULL;
            size_t llen = colon ? (size_t)(colon - a[i]) : alen[i];
            int64_t size = -1;
            if (colon && (!word_int(colon + 1, alen[i] - llen - 1, &size) || size < 0))
                return bad(w, colon + 1, "'%.*s' is not a part size", colon + 1,
                           alen[i] - llen - 1);
            if ((size >= 0) != (ru->sizes[0] >= 0) && i > 1)
                return bad(w, a[i], "'%.*s': give every part a size, or none", a[i], alen[i]);
            if (!llen)
                return bad(w, a[i], "'%.*s': a part needs a label", a[i], alen[i]);
            if (!(ru->labels[ru->nlabels] = strndup(a[i], llen)))
                return nnp__nomem();
            ru->sizes[ru->nlabels++] = size;
        }
        return NNP_OK;
    case RULE_ADAPT:
        break;
    }
    switch (op->kind) {
    case NNP_OP_TRANSPOSE:
    case NNP_OP_RESHAPE:
        if (nargs && !word_dims(a[0], alen[0], op->dims, &op->n))
            return bad(w, a[0], "'%.*s' is not a list of axes like 1,0", a[0], alen[0]);
        for (uint32_t k = 0; op->kind == NNP_OP_RESHAPE && k < op->n; k++) {
            uint32_t inferred = 0;
            for (uint32_t j = 0; j < op->n; j++)
                inferred += op->dims[j] == -1;
            if (op->dims[k] < -1 || inferred > 1)
                return bad(w, a[0], "'%.*s': sizes are >= 0, with at most one -1", a[0], alen[0]);
        }
        return NNP_OK;
    case NNP_OP_SLICE:
    case NNP_OP_SELECT: {
        if (!word_int(a[0], alen[0], &op->axis))
            return bad(w, a[0], "'%.*s' is not an axis (an integer)", a[0], alen[0]);
        if (op->kind == NNP_OP_SELECT) {
            if (!word_int(a[1], alen[1], &op->start))
                return bad(w, a[1], "'%.*s' is not an index (an integer)", a[1], alen[1]);
            return NNP_OK;
        }
        const char *colon = memchr(a[1], ':', alen[1]);
        size_t left = colon ? (size_t)(colon - a[1]) : 0, right = colon ? alen[1] - left - 1 : 0;
        op->start = 0;
        op->end = INT64_MAX;
        if (!colon || (left && !word_int(a[1], left, &op->start)) ||
            (right && !word_int(colon + 1, right, &op->end)))
            return bad(w, a[1], "'%.*s' is not a range START:END", a[1], alen[1]);
        return NNP_OK;
    }
    case NNP_OP_CAST: {
        char name[16] = {0};
        for (size_t i = 0; i < alen[0] && i + 1 < sizeof name; i++)
            name[i] = (char)toupper((unsigned char)a[0][i]);
        op->dtype = nnp_dtype_from_name(name);
        if (alen[0] >= sizeof name || (op->dtype != NNP_F64 && op->dtype != NNP_F32 &&
                                        op->dtype != NNP_F16 && op->dtype != NNP_BF16))
            return bad(w, a[0], "'%.*s': cast takes F64, F32, F16 or BF16", a[0], alen[0]);
        return NNP_OK;
    }
    case NNP_OP_ROTARY:
        if (!word_int(a[0], alen[0], &op->start) || op->start < 1)
            return bad(w, a[0], "'%.*s' is not a number of heads", a[0], alen[0]);
        return NNP_OK;
    case NNP_OP_PART:
        break;
    }
    return NNP_OK;
}

/* Where a repetition operator follows another one ("a++", "a*{2}"), or where counted
 * repetitions ask for too much, or -1. POSIX leaves stacked operators undefined, and glibc's
 * regcomp takes memory exponential in them ("a" and twenty '+' is 700 MB) and proportional to
 * the product of nested counts, so a rules file from elsewhere could exhaust the machine: counts
 * are kept to at most 64, in at most two {} per regex. Names never need more. */
static long stacked_repetition(const char *re, size_t n)
{
    bool after_rep = false;
    int counted = 0;
    for (size_t i = 0; i < n; i++) {
        char c = re[i];
        if (c == '\\' && i + 1 < n) {
            i++;
            after_rep = false;
        } else if (c == '[') {
            /* a bracket expression: ']' right after '[' or '[^' is a member */
            size_t j = i + 1;
            if (j < n && re[j] == '^')
                j++;
            if (j < n && re[j] == ']')
                j++;
            while (j < n && re[j] != ']')
                j++;
            i = j;
            after_rep = false;
        } else if (c == '*' || c == '+' || c == '?' || c == '{') {
            if (after_rep)
                return (long)i;
            if (c == '{') {
                size_t at = i;
                long value = 0;
                while (i + 1 < n && re[i] != '}') {
                    i++;
                    if (re[i] >= '0' && re[i] <= '9') {
                        value = value * 10 + (re[i] - '0');
                        if (value > 64)
                            return (long)at;
                    } else {
                        value = 0;
                    }
                }
                if (++counted > 2)
                    return (long)at;
            }
            after_rep = true;
        } else {
            after_rep = false;
        }
    }
    return -1;
}

static nnp_status parse_line(nnp_rules *r, const where *w)
{
    const char *p = w->line, *word, *args[MAX_LABELS + 2];
    size_t len, alen[MAX_LABELS + 2];
    if (!(word = next_word(&p, &len)))
        return NNP_OK;
    bool on_ref = len == 3 && memcmp(word, "ref", 3) == 0;
    const char *ref_word = word;
    if (on_ref && !(word = next_word(&p, &len)))
        return bad(w, ref_word, "%.*s'ref' needs an adapter after it", "", 0);
    const struct verb *v = NULL;
    for (size_t i = 0; i < sizeof verbs / sizeof *verbs; i++)
        if (strlen(verbs[i].word) == len && memcmp(verbs[i].word, word, len) == 0)
            v = &verbs[i];
    if (!v)
        return bad(w, word, "unknown rule '%.*s' (expected rename, alias, ignore, tolerance, "
                   "component, transpose, permute, reshape, slice, select, cast, rotary, concat, "
                   "split or gather)", word, len);
    if (on_ref && v->kind != RULE_ADAPT && v->kind != RULE_IGNORE)
        return bad(w, ref_word, "%.*s'ref' goes only before ignore or an adapter (transpose, "
                   "permute, reshape, slice, select, cast, rotary)", "", 0);
    size_t nargs = 0;
    const char *at;
    size_t atlen;
    while ((at = next_word(&p, &atlen))) {
        if (nargs == (size_t)v->max_args + 1)
            return bad(w, at, "unexpected '%.*s' after the rule", at, atlen);
        args[nargs] = at;
        alen[nargs++] = atlen;
    }
    if (nargs < (size_t)v->min_args + 1) {
        char msg[256], names[128] = "";
        if (v->kind == RULE_COMPONENT)
            nnp__component_list(names, sizeof names);
        snprintf(msg, sizeof msg, "'%%.*s' needs %s%s%s%s", v->args, *names ? " (" : "", names,
                 *names ? ")" : "");
        return bad(w, p, msg, word, len);
    }
    if (r->n == MAX_RULES)
        return nnp__fail(NNP_ERR_FORMAT, "%s: line %zu: more than %d rules, the most a rules file "
                         "may hold", w->origin, w->lineno, MAX_RULES);
    if (!nnp__grow((void **)&r->rules, &r->cap, r->n + 1, sizeof *r->rules))
        return nnp__nomem();
    long stacked = stacked_repetition(args[0], alen[0]);
    if (stacked >= 0)
        return bad(w, args[0] + stacked, "bad regex '%.*s': one repetition operator right after "
                   "another (write a+, not a++), or counts past {64} or in more than two {}",
                   args[0], alen[0]);
    if (alen[0] > NNP_REGEX_MAX_LENGTH)
        return bad(w, args[0], "%.*sthe regex is longer than 4096 characters", "", 0);
    rule *ru = &r->rules[r->n];
    memset(ru, 0, sizeof *ru);
    ru->kind = v->kind;
    ru->op.kind = v->op;
    ru->op.on_ref = on_ref;
    ru->lineno = w->lineno;
    char msg[256];
    size_t err_at;
    nnp_status st = nnp__regex_compile(args[0], alen[0], &ru->re, msg, sizeof msg, &err_at);
    if (st == NNP_ERR_FORMAT) {
        char fmt[320];
        snprintf(fmt, sizeof fmt, "bad regex '%%.*s': %s", msg);
        /* a long regex is cut in the message, so that the reason stays on its line */
        return bad(w, args[0], fmt, args[0], alen[0] > 120 ? 120 : alen[0]);
    }
    if (st)
        return st;
    if (!(ru->pattern = strndup(args[0], alen[0]))) {
        rule_free(ru);
        return nnp__nomem();
    }
    st = parse_args(ru, w, args + 1, alen + 1, nargs - 1);
    if (!st && (ru->kind == RULE_CONCAT || ru->kind == RULE_SPLIT) && ru->nlabels < 2)
        st = bad(w, args[0], "'%.*s' needs two or more labels", word, len);
    if (st) {
        rule_free(ru);
        return st;
    }
    r->n++;
    return NNP_OK;
}

nnp_status nnp_rules_parse(const char *text, const char *origin, nnp_rules **out)
{
    *out = NULL;
    if (!text)
        return nnp__fail(NNP_ERR_ARG, "nnp_rules_parse: no text");
    if (!origin)
        origin = "rules";
    nnp_rules *r = calloc(1, sizeof *r);
    if (!r || !(r->origin = strdup(origin))) {
        free(r);
        return nnp__nomem();
    }
    nnp_status st = NNP_OK;
    size_t lineno = 0;
    for (const char *p = text; !st && *p;) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        char *line = strndup(p, n);
        if (!line) {
            st = nnp__nomem();
            break;
        }
        where w = {origin, ++lineno, line};
        st = parse_line(r, &w);
        free(line);
        p += n + (nl ? 1 : 0);
    }
    if (st) {
        nnp_rules_free(r);
        return st;
    }
    *out = r;
    return NNP_OK;
}

nnp_status nnp_rules_load(const char *path, nnp_rules **out)
{
    *out = NULL;
    nnp_sbuf b = {0};
    nnp_status st = nnp__sbuf_read_file(&b, path, NNP_MAX_RULES_BYTES, "rules file");
    size_t bad_at;
    if (!st && (strlen(b.s ? b.s : "") != b.len ||
                !nnp__utf8_valid((unsigned char *)b.s, b.len, &bad_at)))
        st = nnp__fail(NNP_ERR_FORMAT, "%s: not a text file (NUL bytes or invalid UTF-8)", path);
    if (!st)
        st = nnp_rules_parse(b.s ? b.s : "", path, out);
    nnp__sbuf_free(&b);
    return st;
}

/* Match a rule's regex against a name: 1, 0, or an error naming the rule, its regex, the name
 * and the limit it reached (NNP_ERR_FORMAT: the CLI's exit code 2). */
static nnp_status rule_match(const nnp_rules *r, const rule *ru, const char *name,
                             nnp_regmatch *m, size_t nm, bool *hit)
{
    char err[256];
    int rc = nnp__regex_match(ru->re, name, m, nm, err, sizeof err);
    *hit = rc == 1;
    if (rc >= 0)
        return NNP_OK;
    /* long regexes and names are cut, so that the limit stays on the one line */
    return nnp__fail(NNP_ERR_FORMAT, "%s: line %zu: regex '%.120s%s' on '%.120s%s': %s",
                     r->origin, ru->lineno, ru->pattern, strlen(ru->pattern) > 120 ? "..." : "",
                     name, strlen(name) > 120 ? "..." : "", err);
}

/* Apply one rename to `name` at its match m (\0 and groups m[1..9]); NULL on out-of-memory. */
static char *apply_rename(const rule *ru, const char *name, const nnp_regmatch *m)
{
    nnp_sbuf b = {0};
    nnp__sbuf_put(&b, name, (size_t)m[0].so);
    for (const char *q = ru->replacement; *q; q++) {
        if (*q == '\\' && q[1] >= '0' && q[1] <= '9') {
            const nnp_regmatch *g = &m[q[1] - '0'];
            if (g->so >= 0)
                nnp__sbuf_put(&b, name + g->so, (size_t)(g->eo - g->so));
            q++;
        } else {
            nnp__sbuf_put(&b, q, 1);
        }
    }
    nnp__sbuf_puts(&b, name + m[0].eo);
    if (b.failed) {
        nnp__sbuf_free(&b);
        return NULL;
    }
    return b.s ? b.s : strdup("");
}

void nnp__mappings_free(nnp_mapping *m, size_t n)
{
    for (size_t i = 0; m && i < n; i++) {
        free(m[i].name);
        free(m[i].ops);
    }
    free(m);
}

static nnp_status add_op(nnp_mapping *m, const nnp_op *op)
{
    nnp_op *ops = realloc(m->ops, (m->nops + 1) * sizeof *ops);
    if (!ops)
        return nnp__nomem();
    m->ops = ops;
    m->ops[m->nops++] = *op;
    return NNP_OK;
}

/* A list of mappings that grows; rules turn one list into the next. */
typedef struct {
    nnp_mapping *m;
    size_t n, cap;
} mapping_list;

static nnp_status push(mapping_list *l, nnp_mapping *m)
{
    if (!nnp__grow((void **)&l->m, &l->cap, l->n + 1, sizeof *l->m))
        return nnp__nomem();
    l->m[l->n++] = *m;
    return NNP_OK;
}

static void mapping_clear(nnp_mapping *m)
{
    free(m->name);
    free(m->ops);
    m->name = NULL;
    m->ops = NULL;
}

/* The parts of a mapping a split rule makes: the text of group 1 becomes each label in turn, and
 * each part takes its share of the tensor along the rule's axis. */
static nnp_status split_into(const rule *ru, const nnp_mapping *m, const nnp_regmatch *g,
                             mapping_list *next)
{
    int64_t offset = 0;
    for (size_t k = 0; k < ru->nlabels; k++) {
        nnp_sbuf name = {0};
        nnp__sbuf_put(&name, m->name, (size_t)g->so);
        nnp__sbuf_puts(&name, ru->labels[k]);
        nnp__sbuf_puts(&name, m->name + g->eo);
        nnp_mapping part = *m;
        part.name = name.s;
        part.ops = m->nops ? malloc((m->nops + 1) * sizeof *m->ops) : malloc(sizeof *m->ops);
        if (name.failed || !part.ops) {
            nnp__sbuf_free(&name);
            free(part.ops);
            return nnp__nomem();
        }
        if (m->nops)
            memcpy(part.ops, m->ops, m->nops * sizeof *m->ops);
        nnp_op *op = &part.ops[part.nops++];
        if (ru->sizes[0] >= 0) {
            *op = (nnp_op){.kind = NNP_OP_SLICE, .axis = ru->axis, .start = offset,
                           .end = offset + ru->sizes[k]};
            offset += ru->sizes[k];
        } else {
            *op = (nnp_op){.kind = NNP_OP_PART, .axis = ru->axis, .start = (int64_t)k,
                           .end = (int64_t)ru->nlabels};
        }
        nnp_status st = push(next, &part);
        if (st) {
            mapping_clear(&part);
            return st;
        }
    }
    return NNP_OK;
}

/* Apply one rule to one mapping, moving what it becomes into `next` (nothing when ignored). The
 * mapping is taken over, whatever happens. */
static nnp_status apply_rule(const nnp_rules *r, const rule *ru, nnp_mapping *m,
                             mapping_list *next)
{
    nnp_regmatch g[10];
    bool hit = false;
    nnp_status st = NNP_OK;
    /* `ref ignore` is about the reference's names (nnp__rules_check_ref); only renames and
     * aliases need more than group 1, only they, concat and split where the match is */
    if (!(ru->kind == RULE_IGNORE && ru->op.on_ref) && ru->kind != RULE_COMPONENT) {
        size_t ng = ru->kind == RULE_RENAME || ru->kind == RULE_ALIAS ? 10
                    : ru->kind == RULE_CONCAT || ru->kind == RULE_SPLIT ? 2 : 0;
        st = rule_match(r, ru, m->name, ng ? g : NULL, ng, &hit);
    }
    if (st) {
        mapping_clear(m);
        return st;
    }
    if (hit && ru->kind == RULE_RENAME) {
        char *renamed = apply_rename(ru, m->name, g);
        if (!renamed)
            st = nnp__nomem();
        free(m->name);
        m->name = renamed;
    } else if (hit && ru->kind == RULE_ALIAS) {
        /* the record also stands for a second name (tied weights): it goes on as it is, and a
         * renamed copy after it */
        nnp_mapping copy = *m;
        copy.name = apply_rename(ru, m->name, g);
        copy.ops = m->nops ? malloc(m->nops * sizeof *m->ops) : NULL;
        if (copy.ops)
            memcpy(copy.ops, m->ops, m->nops * sizeof *m->ops);
        if (!copy.name || (m->nops && !copy.ops)) {
            mapping_clear(&copy);
            mapping_clear(m);
            return nnp__nomem();
        }
        if ((st = push(next, m))) {
            mapping_clear(&copy);
            mapping_clear(m);
            return st;
        }
        if ((st = push(next, &copy)))
            mapping_clear(&copy);
        return st;
    } else if (hit && ru->kind == RULE_IGNORE) {
        mapping_clear(m);
        return NNP_OK;
    } else if (hit && ru->kind == RULE_GATHER) {
        if (!m->gather) {
            m->gather = ru->gather;
            m->gather_axis = ru->axis;
        }
    } else if (hit && ru->kind == RULE_TOLERANCE) {
        m->has_tolerance = true;
        m->atol = ru->atol;
        m->rtol = ru->rtol;
    } else if (hit && ru->kind == RULE_ADAPT) {
        st = add_op(m, &ru->op);
    } else if (hit && ru->kind == RULE_CONCAT && g[1].so >= 0) {
        size_t glen = (size_t)(g[1].eo - g[1].so);
        for (size_t k = 0; k < ru->nlabels; k++)
            if (strlen(ru->labels[k]) == glen &&
                memcmp(ru->labels[k], m->name + g[1].so, glen) == 0) {
                m->part = (uint32_t)k;
                m->nparts = (uint32_t)ru->nlabels;
                m->join_axis = ru->axis;
            }
    } else if (hit && ru->kind == RULE_SPLIT && g[1].so >= 0) {
        st = split_into(ru, m, &g[1], next);
        mapping_clear(m);
        return st;
    }
    if (!st)
        st = push(next, m);
    if (st)
        mapping_clear(m);
    return st;
}

nnp_status nnp__rules_apply(const nnp_rules *r, const char *name, nnp_mapping **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    mapping_list cur = {0};
    nnp_mapping first = {.name = strdup(name)};
    nnp_status st = first.name ? push(&cur, &first) : nnp__nomem();
    if (st)
        free(first.name);
    for (size_t i = 0; !st && r && i < r->n && cur.n; i++) {
        mapping_list next = {0};
        size_t k = 0;
        for (; k < cur.n && !st; k++)
            st = apply_rule(r, &r->rules[i], &cur.m[k], &next);
        if (!st && next.n > MAX_MAPPINGS)
            st = nnp__fail(NNP_ERR_FORMAT, "%s: line %zu: the rules make '%s' into %zu records, "
                           "more than %d (each split multiplies the records the rules before it "
                           "made, each alias doubles them)", r->origin, r->rules[i].lineno, name,
                           next.n, MAX_MAPPINGS);
        /* what the failed rule did not take over is still cur's to free */
        for (; k < cur.n; k++)
            mapping_clear(&cur.m[k]);
        free(cur.m);
        cur = next;
    }
    if (st) {
        nnp__mappings_free(cur.m, cur.n);
        return st;
    }
    *out = cur.m;
    *n = cur.n;
    return NNP_OK;
}

nnp_status nnp_rules_map(const nnp_rules *r, const char *name, char **out, bool *ignored)
{
    *out = NULL;
    *ignored = false;
    nnp_mapping *m;
    size_t n;
    nnp_status st = nnp__rules_apply(r, name, &m, &n);
    if (st)
        return st;
    if (n == 0) {
        *ignored = true;
        *out = strdup(name);
    } else {
        *out = m[0].name;
        m[0].name = NULL;
    }
    nnp__mappings_free(m, n);
    return *out ? NNP_OK : nnp__nomem();
}

nnp_status nnp__rules_check_ref(const nnp_rules *r, const char *name, bool *ignored)
{
    *ignored = false;
    nnp_status st = NNP_OK;
    for (size_t i = 0; !st && r && i < r->n; i++) {
        const rule *ru = &r->rules[i];
        bool hit = false;
        if ((ru->kind == RULE_IGNORE && ru->op.on_ref) || ru->kind == RULE_COMPONENT)
            st = rule_match(r, ru, name, NULL, 0, &hit);
        if (hit && ru->kind == RULE_IGNORE)
            *ignored = true;
    }
    return st;
}

nnp_component_kind nnp__rules_component(const nnp_rules *r, const char *name)
{
    /* the last matching rule wins, as later renames win over earlier ones */
    for (size_t i = r ? r->n : 0; i-- > 0;)
        if (r->rules[i].kind == RULE_COMPONENT) {
            /* a regex that reached a limit here stopped the diff at its pairing already
             * (nnp__rules_check_ref), on the same name; elsewhere it matches nothing */
            char err[256];
            if (nnp__regex_match(r->rules[i].re, name, NULL, 0, err, sizeof err) == 1)
                return r->rules[i].component;
        }
    return NNP_COMPONENT_COUNT;
}

