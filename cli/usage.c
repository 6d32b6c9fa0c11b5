/*
 * usage.c - what every command says when its command line is wrong (one line, then where the
 * help is), the closest real name for a mistyped command or option, and the width of text
 * output (the terminal's, 80 when stdout is not one, or --width).
 */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "cli.h"

int cli_usage_error(const cli_command *cmd, const char *fmt, ...)
{
    /* the reason quotes the command line: escaped like every name (cli_text) */
    va_list ap;
    char *msg = NULL;
    va_start(ap, fmt);
    int n = vasprintf(&msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "nnparity %s: %s", cmd->name, n < 0 ? "(out of memory)" : cli_text(msg));
    free(msg);
    fprintf(stderr, "\nsee 'nnparity %s --help'\n", cmd->name);
    return EXIT_BAD_INPUT;
}

/* Optimal string alignment distance: insertions, deletions, substitutions and swaps of two
 * neighbours each cost 1. Names are short; longer ones are not worth a suggestion. */
static size_t edit_distance(const char *a, const char *b)
{
    enum { MAX = 64 };
    size_t n = strlen(a), m = strlen(b);
    if (n >= MAX || m >= MAX)
        return SIZE_MAX;
    size_t d[MAX + 1][MAX + 1];
    for (size_t i = 0; i <= n; i++)
        d[i][0] = i;
    for (size_t j = 0; j <= m; j++)
        d[0][j] = j;
    for (size_t i = 1; i <= n; i++)
        for (size_t j = 1; j <= m; j++) {
            size_t cost = a[i - 1] != b[j - 1];
            size_t best = d[i - 1][j - 1] + cost;
            if (d[i - 1][j] + 1 < best)
                best = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < best)
                best = d[i][j - 1] + 1;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
                d[i - 2][j - 2] + 1 < best)
                best = d[i - 2][j - 2] + 1;
            d[i][j] = best;
        }
    return d[n][m];
}

const char *cli_closest(const char *word, const char *const *candidates, size_t n)
{
    const char *best = NULL;
    size_t best_d = SIZE_MAX;
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(candidates[i]);
        /* one slip in a short name, two in a longer one, three in a long one */
        size_t allowed = len <= 4 ? 1 : len <= 8 ? 2 : 3;
        size_t d = edit_distance(word, candidates[i]);
        if (d <= allowed && d < strlen(word) && d < best_d) {
            best = candidates[i];
            best_d = d;
        }
    }
    return best;
}

/* The long option `name` (up to '=' or the end) names exactly, or NULL. */
static const struct option *long_option(const struct option *opts, const char *name, size_t len)
{
    for (const struct option *o = opts; o->name; o++)
        if (strlen(o->name) == len && strncmp(o->name, name, len) == 0)
            return o;
    return NULL;
}

/* "--json" when it names a long option of opts that has `val`, for an error getopt_long
 * reported with optopt = val. */
static bool names_option_with(const struct option *opts, const char *tok, int val)
{
    if (strncmp(tok, "--", 2) != 0)
        return false;
    size_t len = strcspn(tok + 2, "=");
    for (const struct option *o = opts; o->name; o++)
        if (o->val == val && strncmp(o->name, tok + 2, len) == 0)
            return true;
    return false;
}

static int unknown_long(const cli_command *cmd, const struct option *opts, const char *tok,
                        const char *dashes)
{
    const char *name = tok + strlen(dashes);
    size_t len = strcspn(name, "=");
    char typed[128];
    snprintf(typed, sizeof typed, "%.*s", (int)(len < 100 ? len : 100), name);
    const struct option *exact = long_option(opts, name, len);
    if (exact && *dashes == '-' && dashes[1] == '-' && name[len] == '=' &&
        exact->has_arg == no_argument)
        return cli_usage_error(cmd, "option '--%s' takes no value%s", typed,
                               strcmp(typed, "json") == 0
                                   ? " (it prints JSON on stdout; --json-file FILE writes a file)"
                                   : "");
    if (exact) /* one dash before a long name */
        return cli_usage_error(cmd, "unknown option '%s%s'; did you mean '--%s'?", dashes, typed,
                               typed);
    /* an abbreviation that fits several options */
    size_t fits = 0;
    char list[512] = "";
    for (const struct option *o = opts; o->name; o++)
        if (len && strncmp(o->name, name, len) == 0) {
            size_t at = strlen(list);
            snprintf(list + at, sizeof list - at, "%s--%s", fits ? ", " : "", o->name);
            fits++;
        }
    if (fits > 1 && dashes[1] == '-')
        return cli_usage_error(cmd, "option '--%s' is ambiguous: %s", typed, list);
    const char *names[64];
    size_t n = 0;
    for (const struct option *o = opts; o->name && n < 64; o++)
        names[n++] = o->name;
    const char *near = cli_closest(typed, names, n);
    if (near)
        return cli_usage_error(cmd, "unknown option '%s%s'; did you mean '--%s'?", dashes, typed,
                               near);
    /* the file options go by the kind of file they write */
    bool output = strcmp(typed, "output") == 0 || strcmp(typed, "out") == 0 ||
                  strcmp(typed, "o") == 0;
    if (output && long_option(opts, "json-file", 9))
        return cli_usage_error(cmd, "unknown option '%s%s' (reports are written with "
                               "--json-file FILE and --markdown FILE)", dashes, typed);
    return cli_usage_error(cmd, "unknown option '%s%s'", dashes, typed);
}

int cli_option_error(const cli_command *cmd, const struct option *opts, int c, int argc,
                     char **argv)
{
    const char *prev = optind > 0 && optind <= argc ? argv[optind - 1] : "";
    const char *here = optind < argc ? argv[optind] : "";
    /* getopt_long leaves optopt 0 for an unknown long option, and the option's value when one
     * it knows lacks or refuses a value; a short option's error leaves its letter */
    bool is_long = strncmp(prev, "--", 2) == 0 && prev[2] &&
                   (optopt == 0 || names_option_with(opts, prev, optopt));
    if (is_long) {
        if (c == ':')
            return cli_usage_error(cmd, "option '%.*s' needs a value", (int)strcspn(prev, "="),
                                   prev);
        return unknown_long(cmd, opts, prev, "--");
    }
    /* a long name after one dash reads as a bundle of letters: "-json" */
    const char *tokens[2] = {prev, here};
    for (int k = 0; k < 2; k++) {
        const char *t = tokens[k];
        if (t[0] == '-' && t[1] != '-' && strcspn(t + 1, "=") >= 2 &&
            long_option(opts, t + 1, strcspn(t + 1, "=")))
            return unknown_long(cmd, opts, t, "-");
    }
    if (c == ':')
        return cli_usage_error(cmd, "option '-%c' needs a value", optopt);
    if (optopt == 'o')
        return unknown_long(cmd, opts, "-o", "-");
    return cli_usage_error(cmd, "unknown option '-%c'", optopt);
}

/* ---- the width of text output ---- */

static int width_given;

bool cli_set_width(const char *arg)
{
    char *end;
    long v = strtol(arg, &end, 10);
    if (!*arg || *end || v < CLI_WIDTH_MIN || v > CLI_WIDTH_MAX)
        return false;
    width_given = (int)v;
    return true;
}

int cli_width(void)
{
    if (width_given)
        return width_given;
    struct winsize ws;
    if (isatty(STDOUT_FILENO) && ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
        return ws.ws_col < CLI_WIDTH_MIN ? CLI_WIDTH_MIN
               : ws.ws_col > CLI_WIDTH_MAX ? CLI_WIDTH_MAX
                                           : ws.ws_col;
    return 80;
}

int cli_width_error(const cli_command *cmd, const char *arg)
{
    return cli_usage_error(cmd, "--width takes a column count from %d to %d, not '%s'",
                           CLI_WIDTH_MIN, CLI_WIDTH_MAX, arg);
}
