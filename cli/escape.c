/*
 * escape.c - how strings that come from dumps and command lines (record names, module types,
 * paths, metadata, rule text, commands) reach each output syntax: text with control and
 * non-printable characters as visible escapes, so that a name can neither run a terminal's
 * escape sequences nor fake a line of a table; Markdown with code spans that stay closed and
 * table cells that keep their columns. HTML has html_escape (report/report_html.c); JSON is
 * escaped by jansson.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* The code point of the valid UTF-8 sequence at s (its length in *len), or -1 when the bytes
 * there are not one (a stray byte, an overlong form, a surrogate, beyond U+10FFFF). */
static long utf8_at(const unsigned char *s, size_t *len)
{
    unsigned c = s[0];
    size_t n = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3 : (c & 0xf8) == 0xf0 ? 4 : 0;
    if (!n)
        return -1;
    long v = n == 1 ? (long)c : n == 2 ? (long)(c & 0x1f) : n == 3 ? (long)(c & 0x0f) : (long)(c & 0x07);
    for (size_t k = 1; k < n; k++) {
        if ((s[k] & 0xc0) != 0x80)
            return -1;
        v = v << 6 | (long)(s[k] & 0x3f);
    }
    static const long least[] = {0, 0, 0x80, 0x800, 0x10000};
    if (v < least[n] || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
        return -1;
    *len = n;
    return v;
}

/* Characters a terminal does not print as themselves: C0 and C1 controls, DEL, and the
 * invisible ones that move or reorder text (line and paragraph separators, the bidirectional
 * marks, embeddings, overrides and isolates). */
static bool unprintable(long c)
{
    return c < 0x20 || (c >= 0x7f && c <= 0x9f) || c == 0x061c || c == 0x200e || c == 0x200f ||
           (c >= 0x2028 && c <= 0x202e) || (c >= 0x2066 && c <= 0x2069);
}

/* Whether `s` prints as itself. */
static bool printable(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        if (*p >= 0x20 && *p < 0x7f) {
            p++;
            continue;
        }
        size_t n;
        long c = utf8_at(p, &n);
        if (c < 0 || unprintable(c))
            return false;
        p += n;
    }
    return true;
}

const char *cli_text(const char *s)
{
    /* A few escaped strings live at once, so that one printf may show several names. */
    enum { SLOTS = 8 };
    static char *slot[SLOTS];
    static unsigned next;
    if (!s || printable(s))
        return s;
    size_t len = strlen(s);
    char *out = malloc(len * 6 + 1); /* at most "\uXXXX" for one byte */
    if (!out)
        return "(a name nnparity could not print: out of memory)";
    char *w = out;
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        size_t n = 1;
        long c = utf8_at(p, &n);
        if (c < 0) {
            w += sprintf(w, "\\x%02x", *p);
            n = 1;
        } else if (!unprintable(c)) {
            memcpy(w, p, n);
            w += n;
        } else if (c == '\n') {
            w += sprintf(w, "\\n");
        } else if (c == '\r') {
            w += sprintf(w, "\\r");
        } else if (c == '\t') {
            w += sprintf(w, "\\t");
        } else if (c < 0x80) {
            w += sprintf(w, "\\x%02lx", c);
        } else {
            w += sprintf(w, "\\u%04lx", c);
        }
        p += n;
    }
    *w = 0;
    free(slot[next]);
    slot[next] = out;
    next = (next + 1) % SLOTS;
    return out;
}

int cli_text_width(const char *s)
{
    return (int)strlen(cli_text(s));
}

void md_code(FILE *o, const char *s, bool cell)
{
    const char *t = cli_text(s);
    size_t run = 0, longest = 0, len = strlen(t);
    for (const char *p = t; *p; p++) {
        run = *p == '`' ? run + 1 : 0;
        longest = run > longest ? run : longest;
    }
    /* A fence longer than any run of backticks inside; a space pads content that begins or
     * ends with a backtick or a space, since Markdown strips one space on each side. */
    bool pad = !len || t[0] == '`' || t[len - 1] == '`' || t[0] == ' ' || t[len - 1] == ' ';
    for (size_t k = 0; k <= longest; k++)
        fputc('`', o);
    if (pad)
        fputc(' ', o);
    for (const char *p = t; *p; p++) {
        /* a table splits its row on every unescaped '|', code spans included */
        if (cell && *p == '|')
            fputc('\\', o);
        fputc(*p, o);
    }
    if (pad && len)
        fputc(' ', o);
    for (size_t k = 0; k <= longest; k++)
        fputc('`', o);
}

void md_text(FILE *o, const char *s, bool cell)
{
    /* The characters that open code, links, HTML and entities are escaped with a backslash;
     * emphasis (* _) is left alone, so that ordinary names like "_proj" print as they are. */
    for (const char *p = cli_text(s); *p; p++) {
        if (strchr("\\`[]<>&|", *p) && (cell || *p != '|'))
            fputc('\\', o);
        fputc(*p, o);
    }
}
