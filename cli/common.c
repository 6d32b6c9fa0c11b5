/*
 * common.c - helpers shared by the subcommands: error lines, help, formatting.
 */
#include <errno.h>
#include <fnmatch.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

void cli_error(const char *fmt, ...)
{
    /* Messages quote names, paths and rule text: escaped, they stay one line and run no
     * terminal escape sequence. */
    va_list ap;
    char *msg = NULL;
    va_start(ap, fmt);
    int n = vasprintf(&msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "nnparity: %s\n", n < 0 ? "(out of memory formatting an error)" : cli_text(msg));
    free(msg);
}

int cli_fail(nnp_status st)
{
    cli_error("%s", nnp_last_error());
    return st == NNP_ERR_NOMEM || st == NNP_ERR_INTERNAL ? EXIT_INTERNAL : EXIT_BAD_INPUT;
}

bool cli_wants_help(const cli_command *cmd, int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0)
            break;
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            fputs(cmd->usage, stdout);
            return true;
        }
    }
    return false;
}

void cli_format_dims(char *buf, size_t n, uint32_t ndim, const uint64_t *shape)
{
    size_t used = (size_t)snprintf(buf, n, "[");
    for (uint32_t k = 0; k < ndim && used < n; k++)
        used += (size_t)snprintf(buf + used, n - used, k ? ", %llu" : "%llu",
                                 (unsigned long long)shape[k]);
    if (used < n)
        snprintf(buf + used, n - used, "]");
}

void cli_format_shape(char *buf, size_t n, const nnp_record *r)
{
    cli_format_dims(buf, n, r->ndim, r->shape);
}

bool cli_parse_tolerance(const char *s, double *out)
{
    char *end;
    double v = strtod(s, &end);
    if (!*s || *end || !(v >= 0) || isinf(v))
        return false;
    *out = v;
    return true;
}

void cli_format_bytes(char *buf, size_t n, unsigned long long bytes)
{
    static const char *const units[] = {"KiB", "MiB", "GiB", "TiB", "PiB"};
    if (bytes < 1024) {
        snprintf(buf, n, "%llu B", bytes);
        return;
    }
    double v = (double)bytes / 1024;
    int u = 0;
    while (v >= 1024 && u < 4) {
        v /= 1024;
        u++;
    }
    snprintf(buf, n, v < 10 ? "%.2f %s" : v < 100 ? "%.1f %s" : "%.0f %s", v, units[u]);
}

void cli_format_number(char *buf, size_t n, double v)
{
    if (isnan(v))
        snprintf(buf, n, "-");
    else
        snprintf(buf, n, "%.5g", v);
}

char *cli_join_path(const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name);
    char *s = malloc(a + b + 2);
    if (!s)
        return NULL;
    memcpy(s, dir, a);
    s[a] = '/';
    memcpy(s + a + 1, name, b + 1);
    return s;
}

bool cli_name_matches(const char *pattern, const char *name)
{
    if (!pattern)
        return true;
    if (strpbrk(pattern, "*?["))
        return fnmatch(pattern, name, 0) == 0;
    return strstr(name, pattern) != NULL;
}

void cli_wrap(FILE *o, const char *first, int indent, int width, const char *text)
{
    /* the text quotes names, commands and paths: escaped (cli_text) before it is laid out */
    text = cli_text(text);
    int col = fprintf(o, "%s", cli_text(first));
    bool line_start = true;
    while (*text) {
        while (*text == ' ')
            text++;
        size_t w = strcspn(text, " ");
        if (!w)
            break;
        if (!line_start && col + 1 + (int)w > width) {
            col = fprintf(o, "\n%*s", indent, "") - 1;
            line_start = true;
        }
        col += fprintf(o, "%s%.*s", line_start ? "" : " ", (int)w, text);
        line_start = false;
        text += w;
    }
    fputc('\n', o);
}
