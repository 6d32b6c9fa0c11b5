/*
 * rules.c - the rule language that maps one side's tensor names onto the other's. One parser
 * serves injection, diff and the weights check. A rules file is line-based and meant to be
 * written and shared by people:
 *
 *     # torchvision ViT names on the left of a port's GGUF-style names
 *     rename  ^blk\.([0-9]+)\.attn_q/   encoder.layers.\1.self_attention.q/
 *     ignore  /grad_
 *
 * `rename REGEX REPLACEMENT` rewrites the first match of a POSIX extended regex; \0 to \9 in the
 * replacement insert the match and its groups. Renames apply in file order, each to the result
 * of the ones before. `ignore REGEX` drops the names it matches. Blank lines and text after '#'
 * are comments. Errors name the file, line and column.
 */
#include <regex.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

typedef enum { RULE_RENAME, RULE_IGNORE } rule_kind;

typedef struct {
    rule_kind kind;
    regex_t re;
    char *replacement; /* rename only */
} rule;

struct nnp_rules {
    rule *rules;
    size_t n, cap;
};

void nnp_rules_free(nnp_rules *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n; i++) {
        regfree(&r->rules[i].re);
        free(r->rules[i].replacement);
    }
    free(r->rules);
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

static nnp_status parse_line(nnp_rules *r, const char *origin, size_t lineno, const char *line)
{
    const char *p = line, *w, *args[2];
    size_t len, alen[2], col[2];
    if (!(w = next_word(&p, &len)))
        return NNP_OK;
    size_t wcol = (size_t)(w - line) + 1;
    rule_kind kind;
    size_t nargs;
    if (len == 6 && memcmp(w, "rename", 6) == 0) {
        kind = RULE_RENAME;
        nargs = 2;
    } else if (len == 6 && memcmp(w, "ignore", 6) == 0) {
        kind = RULE_IGNORE;
        nargs = 1;
    } else {
        return nnp__fail(NNP_ERR_FORMAT, "%s: line %zu, column %zu: unknown rule '%.*s' "
                         "(expected rename or ignore)", origin, lineno, wcol, (int)len, w);
    }
    for (size_t i = 0; i < nargs; i++) {
        if (!(args[i] = next_word(&p, &alen[i])))
            return nnp__fail(NNP_ERR_FORMAT, "%s: line %zu, column %zu: '%.*s' needs %s", origin,
                             lineno, (size_t)(p - line) + 1, (int)len, w,
                             kind == RULE_RENAME ? "a regex and a replacement" : "a regex");
        col[i] = (size_t)(args[i] - line) + 1;
    }
    size_t extra_len;
    const char *extra = next_word(&p, &extra_len);
    if (extra)
        return nnp__fail(NNP_ERR_FORMAT, "%s: line %zu, column %zu: unexpected '%.*s' after the "
                         "rule", origin, lineno, (size_t)(extra - line) + 1, (int)extra_len,
                         extra);
    if (!nnp__grow((void **)&r->rules, &r->cap, r->n + 1, sizeof *r->rules))
        return nnp__nomem();
    rule *ru = &r->rules[r->n];
    memset(ru, 0, sizeof *ru);
    ru->kind = kind;
    char *pattern = strndup(args[0], alen[0]);
    if (!pattern)
        return nnp__nomem();
    int rc = regcomp(&ru->re, pattern, REG_EXTENDED);
    free(pattern);
    if (rc != 0) {
        char msg[256];
        regerror(rc, &ru->re, msg, sizeof msg);
        return nnp__fail(NNP_ERR_FORMAT, "%s: line %zu, column %zu: bad regex '%.*s': %s", origin,
                         lineno, col[0], (int)alen[0], args[0], msg);
    }
    if (kind == RULE_RENAME) {
        ru->replacement = strndup(args[1], alen[1]);
        if (!ru->replacement) {
            regfree(&ru->re);
            return nnp__nomem();
        }
        for (const char *q = ru->replacement; *q; q++)
            if (*q == '\\' && q[1] >= '0' && q[1] <= '9' && (size_t)(q[1] - '0') > ru->re.re_nsub) {
                nnp_status st = nnp__fail(NNP_ERR_FORMAT, "%s: line %zu, column %zu: \\%c refers "
                                          "to a group the regex does not have", origin, lineno,
                                          col[1] + (size_t)(q - ru->replacement), q[1]);
                regfree(&ru->re);
                free(ru->replacement);
                return st;
            }
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
    if (!r)
        return nnp__nomem();
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
        st = parse_line(r, origin, ++lineno, line);
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
    nnp_status st = nnp__sbuf_read_file(&b, path);
    size_t bad;
    if (!st && (strlen(b.s) != b.len || !nnp__utf8_valid((unsigned char *)b.s, b.len, &bad)))
        st = nnp__fail(NNP_ERR_FORMAT, "%s: not a text file (NUL bytes or invalid UTF-8)", path);
    if (!st)
        st = nnp_rules_parse(b.s, path, out);
    nnp__sbuf_free(&b);
    return st;
}

/* Apply one rename to `name` (first match only); NULL on out-of-memory. */
static char *apply_rename(const rule *ru, const char *name)
{
    regmatch_t m[10];
    if (regexec(&ru->re, name, 10, m, 0) != 0)
        return strdup(name);
    nnp_sbuf b = {0};
    nnp__sbuf_put(&b, name, (size_t)m[0].rm_so);
    for (const char *q = ru->replacement; *q; q++) {
        if (*q == '\\' && q[1] >= '0' && q[1] <= '9') {
            const regmatch_t *g = &m[q[1] - '0'];
            if (g->rm_so >= 0)
                nnp__sbuf_put(&b, name + g->rm_so, (size_t)(g->rm_eo - g->rm_so));
            q++;
        } else {
            nnp__sbuf_put(&b, q, 1);
        }
    }
    nnp__sbuf_puts(&b, name + m[0].rm_eo);
    if (b.failed) {
        nnp__sbuf_free(&b);
        return NULL;
    }
    return b.s ? b.s : strdup("");
}

nnp_status nnp_rules_map(const nnp_rules *r, const char *name, char **out, bool *ignored)
{
    *out = NULL;
    *ignored = false;
    char *cur = strdup(name);
    for (size_t i = 0; cur && r && i < r->n; i++) {
        const rule *ru = &r->rules[i];
        if (ru->kind == RULE_IGNORE) {
            if (regexec(&ru->re, cur, 0, NULL, 0) == 0) {
                *ignored = true;
                break;
            }
        } else {
            char *next = apply_rename(ru, cur);
            free(cur);
            cur = next;
        }
    }
    if (!cur)
        return nnp__nomem();
    *out = cur;
    return NNP_OK;
}
