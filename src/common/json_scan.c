/*
 * json_scan.c - the strict in-place JSON scanner (see json_scan.h).
 */
#include <stdlib.h>
#include <string.h>

#include "common/json_scan.h"

void nnp__json_init(nnp_json *j, const char *text, size_t len)
{
    memset(j, 0, sizeof *j);
    j->base = j->p = text;
    j->end = text + len;
}

void nnp__json_free(nnp_json *j)
{
    nnp__sbuf_free(&j->text);
}

bool nnp__json_fail(nnp_json *j, const char *what)
{
    if (!j->what) {
        j->what = what;
        j->where = (size_t)(j->p - j->base);
    }
    return false;
}

static void skip_ws(nnp_json *j)
{
    /* a header kept room for growth as spaces: megabytes of them after the last value */
    while (j->end - j->p >= 8 && memcmp(j->p, "        ", 8) == 0)
        j->p += 8;
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
        j->p++;
}

char nnp__json_peek(nnp_json *j)
{
    skip_ws(j);
    return j->p < j->end ? *j->p : 0;
}

bool nnp__json_expect(nnp_json *j, char c)
{
    if (nnp__json_peek(j) != c) {
        static const char *const msgs[] = {"expected '{'", "expected '}'", "expected '['",
                                           "expected ']'", "expected ':'", "expected ','"};
        const char *chars = "{}[]:,";
        const char *at = c ? strchr(chars, c) : NULL;
        return nnp__json_fail(j, at ? msgs[at - chars] : "unexpected character");
    }
    j->p++;
    return true;
}

bool nnp__json_more(nnp_json *j, char close)
{
    char c = nnp__json_peek(j);
    if (c == ',' || c == close) {
        j->p++;
        return c == ',';
    }
    return nnp__json_fail(j, close == '}' ? "expected ',' or '}'" : "expected ',' or ']'");
}

static int hex(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static bool read_u16hex(nnp_json *j, unsigned *out)
{
    if (j->end - j->p < 4)
        return nnp__json_fail(j, "truncated \\u escape");
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hex(j->p[i]);
        if (h < 0)
            return nnp__json_fail(j, "bad \\u escape");
        v = v << 4 | (unsigned)h;
    }
    j->p += 4;
    *out = v;
    return true;
}

/* cp as UTF-8 at out; returns the byte count (1 to 4). */
static size_t utf8_of(unsigned cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | cp >> 12);
        out[1] = (char)(0x80 | (cp >> 6 & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | cp >> 18);
    out[1] = (char)(0x80 | (cp >> 12 & 0x3F));
    out[2] = (char)(0x80 | (cp >> 6 & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* A byte a string holds as it is: not '"', '\\' or a control character. */
static bool verbatim(unsigned char c)
{
    return c >= 0x20 && c != '"' && c != '\\';
}

/* The escape after a backslash: its character, or 0 for \u and for a bad escape. */
static char unescape(char e)
{
    switch (e) {
    case '"': return '"';
    case '\\': return '\\';
    case '/': return '/';
    case 'b': return '\b';
    case 'f': return '\f';
    case 'n': return '\n';
    case 'r': return '\r';
    case 't': return '\t';
    default: return 0;
    }
}

/* Whether none of the 8 bytes at p is '"', '\\' or a control character: the word tests for "some
 * byte is zero" and "some byte is below n", exact as a whole, on the bytes and on the bytes
 * xor each of the two characters. */
static bool verbatim8(const char *p)
{
    const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
    uint64_t v, q, b;
    memcpy(&v, p, 8);
    q = v ^ (ones * '"');
    b = v ^ (ones * '\\');
    return !((((v - ones * 0x20) & ~v) | ((q - ones) & ~q) | ((b - ones) & ~b)) & highs);
}

/* A \uXXXX escape (and the low half of a surrogate pair) at j->p, past the "\u", as UTF-8 at
 * out; returns its length, 0 on an error. */
static size_t read_u_escape(nnp_json *j, char *out)
{
    unsigned cp, lo;
    if (!read_u16hex(j, &cp))
        return 0;
    if (cp >= 0xDC00 && cp <= 0xDFFF)
        return nnp__json_fail(j, "lone low surrogate in a \\u escape");
    if (cp >= 0xD800 && cp <= 0xDBFF) {
        if (j->end - j->p < 2 || j->p[0] != '\\' || j->p[1] != 'u')
            return nnp__json_fail(j, "lone high surrogate in a \\u escape");
        j->p += 2;
        if (!read_u16hex(j, &lo))
            return 0;
        if (lo < 0xDC00 || lo > 0xDFFF)
            return nnp__json_fail(j, "bad surrogate pair in a \\u escape");
        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
    }
    if (cp == 0)
        return nnp__json_fail(j, "NUL character in a string");
    return utf8_of(cp, out);
}

/* Runs of verbatim bytes are copied whole and escapes written in place, with one check for room
 * per run: a provenance list is a 12 MB string of short runs between escaped quotes, and a call
 * per piece cost more than the scan. */
bool nnp__json_string(nnp_json *j)
{
    if (nnp__json_peek(j) != '"')
        return nnp__json_fail(j, "expected a string");
    nnp_sbuf *t = &j->text;
    const char *p = j->p + 1, *end = j->end;
    t->len = 0;
    for (;;) {
        const char *run = p;
        /* 8 bytes at a time first: a stored sketches value is a 25 MB run without escapes */
        while (end - p >= 8 && verbatim8(p))
            p += 8;
        while (p < end && verbatim((unsigned char)*p))
            p++;
        size_t n = (size_t)(p - run);
        /* the run, one escape's bytes (at most 4) and the NUL */
        if (!nnp__sbuf_room(t, n + 4)) {
            j->p = p;
            return nnp__json_fail(j, "out of memory");
        }
        memcpy(t->s + t->len, run, n);
        t->len += n;
        j->p = p;
        if (p >= end)
            return nnp__json_fail(j, "unterminated string");
        if (*p == '"')
            break;
        if (*p != '\\')
            return nnp__json_fail(j, "control character in a string");
        if (end - p < 2)
            return nnp__json_fail(j, "unterminated string");
        char e = p[1];
        p += 2;
        char c = unescape(e);
        if (c) {
            t->s[t->len++] = c;
            continue;
        }
        j->p = p;
        if (e != 'u')
            return nnp__json_fail(j, "bad escape in a string");
        size_t k = read_u_escape(j, t->s + t->len);
        if (!k)
            return false;
        t->len += k;
        p = j->p;
    }
    t->s[t->len] = 0;
    j->p = p + 1;
    return true;
}

/* The extent of a JSON number at p, or false if there is none. */
static bool scan_number(nnp_json *j, bool *integer)
{
    const char *p = j->p;
    *integer = true;
    if (p < j->end && *p == '-')
        p++;
    if (p >= j->end || *p < '0' || *p > '9')
        return nnp__json_fail(j, "expected a number");
    if (*p == '0')
        p++;
    else
        while (p < j->end && *p >= '0' && *p <= '9')
            p++;
    if (p < j->end && *p == '.') {
        *integer = false;
        p++;
        if (p >= j->end || *p < '0' || *p > '9')
            return nnp__json_fail(j, "bad number");
        while (p < j->end && *p >= '0' && *p <= '9')
            p++;
    }
    if (p < j->end && (*p == 'e' || *p == 'E')) {
        *integer = false;
        p++;
        if (p < j->end && (*p == '+' || *p == '-'))
            p++;
        if (p >= j->end || *p < '0' || *p > '9')
            return nnp__json_fail(j, "bad number");
        while (p < j->end && *p >= '0' && *p <= '9')
            p++;
    }
    j->p = p;
    return true;
}

bool nnp__json_u64(nnp_json *j, uint64_t *out, bool *negative)
{
    *negative = false;
    skip_ws(j);
    const char *start = j->p;
    bool integer;
    if (!scan_number(j, &integer))
        return false;
    if (!integer) {
        j->p = start;
        return nnp__json_fail(j, "expected an integer");
    }
    if (*start == '-') {
        /* -0 too: the reference reader reads it as a float, not as an unsigned integer */
        *negative = true;
        j->p = start;
        return nnp__json_fail(j, "negative integer");
    }
    uint64_t v = 0;
    for (const char *q = start; q < j->p; q++)
        if (!nnp__mul_u64(v, 10, &v) || !nnp__add_u64(v, (uint64_t)(*q - '0'), &v)) {
            j->p = start;
            return nnp__json_fail(j, "integer does not fit 64 bits");
        }
    *out = v;
    return true;
}

static bool literal(nnp_json *j, const char *word)
{
    size_t n = strlen(word);
    if ((size_t)(j->end - j->p) < n || memcmp(j->p, word, n) != 0)
        return nnp__json_fail(j, "expected a value");
    j->p += n;
    return true;
}

bool nnp__json_null(nnp_json *j)
{
    return nnp__json_peek(j) == 'n' ? literal(j, "null") : nnp__json_fail(j, "expected null");
}

static bool skip_depth(nnp_json *j, int depth)
{
    if (depth > 128)
        return nnp__json_fail(j, "nested more than 128 levels deep");
    char c = nnp__json_peek(j);
    bool integer;
    switch (c) {
    case '"':
        return nnp__json_string(j);
    case '{':
        j->p++;
        if (nnp__json_peek(j) == '}') {
            j->p++;
            return true;
        }
        do {
            if (!nnp__json_string(j) || !nnp__json_expect(j, ':') || !skip_depth(j, depth + 1))
                return false;
        } while (nnp__json_more(j, '}'));
        return !j->what;
    case '[':
        j->p++;
        if (nnp__json_peek(j) == ']') {
            j->p++;
            return true;
        }
        do {
            if (!skip_depth(j, depth + 1))
                return false;
        } while (nnp__json_more(j, ']'));
        return !j->what;
    case 't':
        return literal(j, "true");
    case 'f':
        return literal(j, "false");
    case 'n':
        return literal(j, "null");
    default:
        return scan_number(j, &integer);
    }
}

bool nnp__json_skip(nnp_json *j)
{
    return skip_depth(j, 0);
}

bool nnp__json_end(nnp_json *j)
{
    return nnp__json_peek(j) == 0 && j->p == j->end ? true
                                                    : nnp__json_fail(j, "trailing characters");
}
