/*
 * regex.h - the one regex engine of nnparity: the patterns of rules files, of `relevance
 * --attn/--grad` and of any other option that takes one. Patterns are POSIX extended regexes
 * (PCRE2 underneath, which reads them the same way) matched leftmost-longest, as POSIX does,
 * against names as bytes. Matching is bounded: a pattern that would backtrack without end stops
 * at a limit of steps, depth and memory and says so, never overflowing the stack or hanging.
 * Back-references inside a pattern (\1) and PCRE's callouts are refused when compiling.
 */
#ifndef NNP_COMMON_REGEX_H
#define NNP_COMMON_REGEX_H

#include <stddef.h>

#include "common/common.h"

typedef struct nnp_regex nnp_regex;

/* Where a group matched, as byte offsets into the subject; so = eo = -1: it took no part. */
typedef struct {
    ptrdiff_t so, eo;
} nnp_regmatch;

/* The limits each match runs under (docs/rules.md, "Limits"). */
#define NNP_REGEX_MATCH_LIMIT 1000000u /* backtracking steps of one match */
#define NNP_REGEX_DEPTH_LIMIT 10000u   /* nested backtracking points */
#define NNP_REGEX_HEAP_LIMIT 16384u    /* KiB of backtracking memory */
#define NNP_REGEX_MAX_LENGTH 4096u     /* characters of a pattern */

/* Compile `len` bytes of `pattern`. On failure *out is NULL, `err` (errsize bytes) says why in a
 * few words, *erroffset is the byte of the pattern the failure is at, and the status is
 * NNP_ERR_FORMAT (NNP_ERR_NOMEM when memory ran out). Callers add where the pattern came from. */
nnp_status nnp__regex_compile(const char *pattern, size_t len, nnp_regex **out, char *err,
                              size_t errsize, size_t *erroffset);
void nnp__regex_free(nnp_regex *re);
/* The number of groups, \1.. of a replacement. */
unsigned nnp__regex_groups(const nnp_regex *re);

/* Match `re` against the NUL-terminated `subject`: 1 matched, 0 did not, -1 failed (a limit was
 * reached, or memory ran out) with `err` saying which in a few words. With `m` (nm entries),
 * m[0] is the whole match, the leftmost and of those the longest, and m[1..] its groups (those
 * past the pattern's groups are -1); matching is cheaper without it. Safe from several threads
 * on the same compiled regex. */
int nnp__regex_match(const nnp_regex *re, const char *subject, nnp_regmatch *m, size_t nm,
                     char *err, size_t errsize);

#endif
