/*
 * json_scan.h - a strict, allocation-free JSON scanner for the headers nnparity reads most: a
 * safetensors header and its provenance list can hold 100k entries, and building a document tree
 * for them (then freeing it) cost more than everything else in opening a dump. The scanner walks
 * the text in place; the reader says what it expects next. It checks the JSON grammar (RFC 8259)
 * on every value it reads or skips, so a header it accepts is valid JSON; UTF-8 validity is
 * checked by the caller on the whole text first.
 */
#ifndef NNP_JSON_SCAN_H
#define NNP_JSON_SCAN_H

#include <string.h>

#include "common/common.h"

typedef struct nnp_json {
    const char *base, *p, *end;
    const char *what; /* the first error, or NULL */
    size_t where;     /* its offset from base */
    nnp_sbuf text;    /* the last string read, unescaped and NUL-terminated */
} nnp_json;

void nnp__json_init(nnp_json *j, const char *text, size_t len);
void nnp__json_free(nnp_json *j);

/* Skip whitespace and return the next character without taking it (0 at the end). */
char nnp__json_peek(nnp_json *j);
/* Take the character c (after whitespace), or fail. */
bool nnp__json_expect(nnp_json *j, char c);
/* After an element of an object or array: true if a ',' follows (taken), false at `close` (taken);
 * anything else is an error (check j->what). */
bool nnp__json_more(nnp_json *j, char close);
/* A string into j->text (valid until the next string). */
bool nnp__json_string(nnp_json *j);
/* A non-negative integer that fits 64 bits. *negative is set for a valid negative integer (the
 * call then fails), so callers can name that rule. */
bool nnp__json_u64(nnp_json *j, uint64_t *out, bool *negative);
/* The literal null. */
bool nnp__json_null(nnp_json *j);
/* Any value, checked and skipped (nesting is limited to 128 levels). */
bool nnp__json_skip(nnp_json *j);
/* Whitespace only until the end. */
bool nnp__json_end(nnp_json *j);

/* Whether the last string read is `word`, a literal: by length, then bytes (a string never holds
 * a NUL). A header's field names are compared millions of times; strcmp calls showed up. */
static inline bool nnp__json_text_is(const nnp_json *j, const char *word)
{
    size_t n = strlen(word);
    return j->text.len == n && memcmp(j->text.s, word, n) == 0;
}

/* Record an error at the current position (keeps the first); returns false. */
bool nnp__json_fail(nnp_json *j, const char *what);

#endif
