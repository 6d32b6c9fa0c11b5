/*
 * regex.c - bounded regex matching over PCRE2 (regex.h). POSIX matches leftmost-longest; PCRE2's
 * backtracking matcher takes the first alternative that matches, so a match goes in up to three
 * steps: the backtracking matcher finds where the leftmost match starts (the same place for
 * both); the DFA matcher, run there, finds how far the longest match reaches; when that is past
 * where the first one ended, the backtracking matcher runs again, anchored at the start, with a
 * callout at the end of the pattern that turns away every way of matching that does not end
 * there, which gives the groups of the longest match. No JIT: every match runs in the
 * interpreter, whose backtracking lives on the heap, under the limits of regex.h.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/regex.h"

struct nnp_regex {
    pcre2_code *code; /* "(?:PATTERN)(?C1)": the callout is a no-op unless a match sets one */
    unsigned groups;
};

/* The match context every match runs under: the limits, nothing else; made once. */
static pcre2_match_context *limits;
static pthread_once_t limits_once = PTHREAD_ONCE_INIT;

static void make_limits(void)
{
    pcre2_match_context *c = pcre2_match_context_create(NULL);
    if (!c)
        return;
    pcre2_set_match_limit(c, NNP_REGEX_MATCH_LIMIT);
    pcre2_set_depth_limit(c, NNP_REGEX_DEPTH_LIMIT);
    pcre2_set_heap_limit(c, NNP_REGEX_HEAP_LIMIT);
    limits = c;
}

/* Bytes, not UTF-8 (names are matched as bytes, as POSIX regexes did in the C locale); '.'
 * matches any byte and '$' only the very end, as in POSIX. */
#define COMPILE_OPTIONS (PCRE2_DOTALL | PCRE2_DOLLAR_ENDONLY | PCRE2_NEVER_UTF | PCRE2_NEVER_UCP)

static int count_callout(pcre2_callout_enumerate_block *b, void *data)
{
    (void)b;
    (*(unsigned *)data)++;
    return 0;
}

/* A failed pcre2_compile: out of memory, or PCRE2's own words for what is wrong in err. */
static nnp_status compile_failed(int code, char *err, size_t errsize)
{
    if (code == PCRE2_ERROR_HEAPLIMIT || code == PCRE2_ERROR_NOMEMORY)
        return nnp__nomem();
    PCRE2_UCHAR msg[200];
    pcre2_get_error_message(code, msg, sizeof msg);
    snprintf(err, errsize, "%s", (const char *)msg);
    return NNP_ERR_FORMAT;
}

nnp_status nnp__regex_compile(const char *pattern, size_t len, nnp_regex **out, char *err,
                              size_t errsize, size_t *erroffset)
{
    *out = NULL;
    *erroffset = 0;
    if (len > NNP_REGEX_MAX_LENGTH) {
        snprintf(err, errsize, "the regex is longer than %u characters", NNP_REGEX_MAX_LENGTH);
        return NNP_ERR_FORMAT;
    }
    int code;
    PCRE2_SIZE at;
    /* the pattern as it is written, for its errors and what it holds */
    pcre2_code *plain = pcre2_compile((PCRE2_SPTR)pattern, len, COMPILE_OPTIONS, &code, &at,
                                      NULL);
    if (!plain) {
        *erroffset = at < len ? (size_t)at : len;
        return compile_failed(code, err, errsize);
    }
    uint32_t backrefs = 0, groups = 0;
    unsigned callouts = 0;
    pcre2_pattern_info(plain, PCRE2_INFO_BACKREFMAX, &backrefs);
    pcre2_pattern_info(plain, PCRE2_INFO_CAPTURECOUNT, &groups);
    pcre2_callout_enumerate(plain, count_callout, &callouts);
    pcre2_code_free(plain);
    if (backrefs) {
        snprintf(err, errsize, "back-references (\\%u in the regex) are not supported",
                 (unsigned)backrefs);
        return NNP_ERR_FORMAT;
    }
    if (callouts) {
        snprintf(err, errsize, "callouts ((?C) in the regex) are not supported");
        return NNP_ERR_FORMAT;
    }
    char *wrapped = malloc(len + 16);
    nnp_regex *re = calloc(1, sizeof *re);
    if (!wrapped || !re) {
        free(wrapped);
        free(re);
        return nnp__nomem();
    }
    memcpy(wrapped, "(?:", 3);
    memcpy(wrapped + 3, pattern, len);
    memcpy(wrapped + 3 + len, ")(?C1)", 6);
    /* no auto-possessification: the callout at the end must be able to send the matcher back
     * into any repeat */
    re->code = pcre2_compile((PCRE2_SPTR)wrapped, len + 9, COMPILE_OPTIONS | PCRE2_NO_AUTO_POSSESS,
                             &code, &at, NULL);
    free(wrapped);
    if (!re->code) {
        free(re);
        return compile_failed(code, err, errsize);
    }
    re->groups = groups;
    *out = re;
    return NNP_OK;
}

void nnp__regex_free(nnp_regex *re)
{
    if (!re)
        return;
    pcre2_code_free(re->code);
    free(re);
}

unsigned nnp__regex_groups(const nnp_regex *re)
{
    return re->groups;
}

/* -1 with what went wrong in err. */
static int failed(int rc, char *err, size_t errsize)
{
    switch (rc) {
    case PCRE2_ERROR_MATCHLIMIT:
        snprintf(err, errsize, "the match limit of %u steps was reached", NNP_REGEX_MATCH_LIMIT);
        break;
    case PCRE2_ERROR_DEPTHLIMIT:
        snprintf(err, errsize, "the depth limit of %u nested backtracking points was reached",
                 NNP_REGEX_DEPTH_LIMIT);
        break;
    case PCRE2_ERROR_HEAPLIMIT:
        snprintf(err, errsize, "the heap limit of %u KiB was reached", NNP_REGEX_HEAP_LIMIT);
        break;
    case PCRE2_ERROR_NOMEMORY:
        snprintf(err, errsize, "out of memory");
        break;
    case PCRE2_ERROR_DFA_WSSIZE:
        snprintf(err, errsize, "the regex needs too many states at once to find its longest match");
        break;
    default: {
        PCRE2_UCHAR msg[200];
        pcre2_get_error_message(rc, msg, sizeof msg);
        snprintf(err, errsize, "%s", (const char *)msg);
    }
    }
    return -1;
}

/* Whether a DFA error is one of the limits (else: an item the DFA matcher does not support,
 * which only PCRE-only syntax has; the first match then stands). */
static bool dfa_limit(int rc)
{
    return rc == PCRE2_ERROR_MATCHLIMIT || rc == PCRE2_ERROR_DEPTHLIMIT ||
           rc == PCRE2_ERROR_HEAPLIMIT || rc == PCRE2_ERROR_NOMEMORY ||
           rc == PCRE2_ERROR_DFA_WSSIZE || rc == PCRE2_ERROR_DFA_RECURSE;
}

/* The callout at the pattern's end: only a match that ends at *data goes through. */
static int ends_there(pcre2_callout_block *b, void *data)
{
    return b->current_position == *(PCRE2_SIZE *)data ? 0 : 1;
}

/* Where the longest match that starts at `so` ends, into *end; 0, or -1 as failed(). */
static int longest_end(const nnp_regex *re, const char *s, size_t len, PCRE2_SIZE so,
                       PCRE2_SIZE *end, char *err, size_t errsize)
{
    pcre2_match_data *md = pcre2_match_data_create(1, NULL);
    if (!md)
        return failed(PCRE2_ERROR_NOMEMORY, err, errsize);
    int small[1000];
    int rc = pcre2_dfa_match(re->code, (PCRE2_SPTR)s, len, so, PCRE2_ANCHORED, md, limits, small,
                             sizeof small / sizeof *small);
    if (rc == PCRE2_ERROR_DFA_WSSIZE) {
        enum { BIG = 1 << 18 };
        int *big = malloc(BIG * sizeof *big);
        rc = big ? pcre2_dfa_match(re->code, (PCRE2_SPTR)s, len, so, PCRE2_ANCHORED, md, limits,
                                   big, BIG)
                 : PCRE2_ERROR_NOMEMORY;
        free(big);
    }
    if (rc >= 0)
        *end = pcre2_get_ovector_pointer(md)[1];
    pcre2_match_data_free(md);
    if (rc < 0 && dfa_limit(rc))
        return failed(rc, err, errsize);
    return 0;
}

int nnp__regex_match(const nnp_regex *re, const char *subject, nnp_regmatch *m, size_t nm,
                     char *err, size_t errsize)
{
    pthread_once(&limits_once, make_limits);
    if (!limits)
        return failed(PCRE2_ERROR_NOMEMORY, err, errsize);
    size_t len = strlen(subject);
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re->code, NULL);
    if (!md)
        return failed(PCRE2_ERROR_NOMEMORY, err, errsize);
    int rc = pcre2_match(re->code, (PCRE2_SPTR)subject, len, 0, 0, md, limits);
    if (rc == PCRE2_ERROR_NOMATCH || rc < 0 || !m || nm == 0) {
        pcre2_match_data_free(md);
        return rc == PCRE2_ERROR_NOMATCH ? 0 : rc < 0 ? failed(rc, err, errsize) : 1;
    }
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
    PCRE2_SIZE so = ov[0], end = ov[1];
    if (longest_end(re, subject, len, so, &end, err, errsize) < 0) {
        pcre2_match_data_free(md);
        return -1;
    }
    pcre2_match_data *longest = NULL;
    if (end > ov[1]) {
        /* the first match is not the longest: again, accepting only a match that ends there */
        pcre2_match_context *c = pcre2_match_context_copy(limits);
        longest = pcre2_match_data_create_from_pattern(re->code, NULL);
        if (!c || !longest) {
            pcre2_match_context_free(c);
            pcre2_match_data_free(longest);
            pcre2_match_data_free(md);
            return failed(PCRE2_ERROR_NOMEMORY, err, errsize);
        }
        pcre2_set_callout(c, ends_there, &end);
        rc = pcre2_match(re->code, (PCRE2_SPTR)subject, len, so, PCRE2_ANCHORED, longest, c);
        pcre2_match_context_free(c);
        if (rc < 0 && rc != PCRE2_ERROR_NOMATCH) {
            pcre2_match_data_free(longest);
            pcre2_match_data_free(md);
            return failed(rc, err, errsize);
        }
        if (rc > 0)
            ov = pcre2_get_ovector_pointer(longest);
    }
    uint32_t pairs = pcre2_get_ovector_count(ov == pcre2_get_ovector_pointer(md) ? md : longest);
    for (size_t i = 0; i < nm; i++) {
        bool set = i < pairs && i <= re->groups && ov[2 * i] != PCRE2_UNSET;
        m[i].so = set ? (ptrdiff_t)ov[2 * i] : -1;
        m[i].eo = set ? (ptrdiff_t)ov[2 * i + 1] : -1;
    }
    pcre2_match_data_free(longest);
    pcre2_match_data_free(md);
    return 1;
}
