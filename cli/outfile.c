/*
 * outfile.c - the files nnparity writes: which existing files it may replace (those it wrote
 * itself as the same kind of file, recognised by their first bytes; anything else only with
 * --force), writing one whole or not at all, and the advice for a dump whose capture did not
 * finish. docs/cli.md states the rules.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

static const char *const kind_name[] = {
    [CLI_OUT_JSON] = "a JSON report",  [CLI_OUT_MARKDOWN] = "a Markdown report",
    [CLI_OUT_HTML] = "an HTML report", [CLI_OUT_SVG] = "an SVG plot",
    [CLI_OUT_PNG] = "a PNG image",     [CLI_OUT_RULES] = "a rules file",
    [CLI_OUT_DUMP] = "a safetensors file",
};

/* The first bytes of a file (at most n); 0 when it cannot be read. */
static size_t read_head(const char *path, char *buf, size_t n)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return 0;
    size_t got = fread(buf, 1, n, f);
    fclose(f);
    return got;
}

static const char *skip_space(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
        p++;
    return p;
}

/* `p` starts with `s` (and both fit before end): the position after it, else NULL. */
static const char *after(const char *p, const char *end, const char *s)
{
    size_t n = strlen(s);
    return p && (size_t)(end - p) >= n && memcmp(p, s, n) == 0 ? p + n : NULL;
}

/* {"schema": "nnparity.<name>/<version>", ...: the first key of every JSON report. */
static bool json_report(const char *head, size_t n)
{
    const char *end = head + n, *p = skip_space(head, end);
    p = after(p, end, "{");
    p = p ? skip_space(p, end) : NULL;
    p = after(p, end, "\"schema\"");
    p = p ? skip_space(p, end) : NULL;
    p = after(p, end, ":");
    p = p ? skip_space(p, end) : NULL;
    return after(p, end, "\"nnparity.") != NULL;
}

/* A safetensors file nnparity's writer made: its metadata says the dump format. */
static bool nnparity_dump(const char *path)
{
    nnp_dump *d;
    if (nnp_dump_open(path, &d) != NNP_OK)
        return false;
    bool ours = false;
    for (size_t i = 0; i < nnp_dump_meta_count(d) && !ours; i++) {
        const char *k, *v;
        nnp_dump_meta_at(d, i, &k, &v);
        ours = strcmp(k, "nnparity.format") == 0;
    }
    nnp_dump_close(d);
    return ours;
}

static bool written_as(const char *path, cli_output_kind kind)
{
    char head[1024];
    size_t n = read_head(path, head, sizeof head);
    switch (kind) {
    case CLI_OUT_JSON:
        return json_report(head, n);
    case CLI_OUT_MARKDOWN:
        return after(head, head + n, CLI_MARK_MARKDOWN) != NULL;
    case CLI_OUT_HTML:
        return memmem(head, n, CLI_MARK_HTML, strlen(CLI_MARK_HTML)) != NULL;
    case CLI_OUT_SVG:
        return memmem(head, n, CLI_MARK_SVG, strlen(CLI_MARK_SVG)) != NULL;
    case CLI_OUT_PNG:
        return after(head, head + n, "\x89PNG\r\n\x1a\n") &&
               memmem(head, n, "tEXt" CLI_MARK_PNG_KEY "\0" CLI_MARK_PNG_VALUE,
                      4 + sizeof CLI_MARK_PNG_KEY + strlen(CLI_MARK_PNG_VALUE)) != NULL;
    case CLI_OUT_RULES:
        return after(head, head + n, CLI_MARK_RULES) != NULL;
    case CLI_OUT_DUMP:
        return nnparity_dump(path);
    }
    return false;
}

/* What an existing file is, for the message: "a safetensors file", "a JSON report", "a file". */
static void describe(const char *path, char *buf, size_t n)
{
    nnp_dump *d;
    if (nnp_dump_open(path, &d) == NNP_OK) {
        snprintf(buf, n, "a tensor file (%s)", nnp_dump_format(d));
        nnp_dump_close(d);
        return;
    }
    char head[1024];
    size_t got = read_head(path, head, sizeof head);
    if (json_report(head, got))
        snprintf(buf, n, "an nnparity JSON report");
    else
        snprintf(buf, n, "a file");
}

int cli_check_output(const char *path, cli_output_kind kind, bool force)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        if (errno != ENOENT)
            return EXIT_AGREE; /* the write says why it cannot */
        /* a report that cannot be written is said before the work, not after it */
        char *dir = strdup(path);
        if (!dir)
            return EXIT_AGREE;
        char *slash = strrchr(dir, '/');
        bool ok = true;
        if (slash && slash != dir) {
            *slash = 0;
            ok = stat(dir, &st) == 0 && S_ISDIR(st.st_mode);
        }
        if (!ok)
            cli_error("%s: cannot write: %s is not a directory", path, dir);
        free(dir);
        return ok ? EXIT_AGREE : EXIT_BAD_INPUT;
    }
    if (S_ISDIR(st.st_mode)) {
        cli_error("%s: is a directory; %s is written to a file", path, kind_name[kind]);
        return EXIT_BAD_INPUT;
    }
    /* a file is written beside it and renamed over it: a device or a pipe would be replaced */
    if (!S_ISREG(st.st_mode)) {
        cli_error("%s: not a regular file; %s is written whole to a regular file%s", path,
                  kind_name[kind],
                  kind == CLI_OUT_JSON ? " (--json prints it on stdout)" : "");
        return EXIT_BAD_INPUT;
    }
    if (force || written_as(path, kind))
        return EXIT_AGREE;
    char what[128];
    describe(path, what, sizeof what);
    cli_error("%s: exists and is %s, not %s nnparity wrote: not overwritten (--force "
              "replaces it)", path, what, kind_name[kind]);
    return EXIT_BAD_INPUT;
}

/* The file a write to `path` replaces: through a symbolic link its target (one that does not
 * exist yet too), not the link. A new string, or NULL for `path` itself. */
static char *link_target(const char *path)
{
    char *real = realpath(path, NULL);
    if (real)
        return real;
    char to[4096];
    ssize_t n = readlink(path, to, sizeof to - 1);
    if (n <= 0)
        return NULL;
    to[n] = 0;
    const char *slash = strrchr(path, '/');
    if (to[0] == '/' || !slash)
        return strdup(to);
    size_t dir = (size_t)(slash - path) + 1, m = (size_t)n + 1;
    char *joined = malloc(dir + m);
    if (joined) {
        memcpy(joined, path, dir);
        memcpy(joined + dir, to, m);
    }
    return joined;
}

/* A new, empty temporary file beside `target` ("TARGET.XXXXXX.tmp"), made with O_EXCL by
 * mkstemps: a name fixed in advance could be a link planted to make the write truncate its
 * target. Its mode is that of a file fopen would create. -1 with errno on failure. */
static int make_temp(const char *target, char **tmp)
{
    size_t n = strlen(target);
    if (!(*tmp = malloc(n + sizeof ".XXXXXX.tmp"))) {
        errno = ENOMEM;
        return -1;
    }
    memcpy(*tmp, target, n);
    memcpy(*tmp + n, ".XXXXXX.tmp", sizeof ".XXXXXX.tmp");
    int fd = mkstemps(*tmp, 4);
    if (fd < 0)
        return -1;
    mode_t mask = umask(0);
    umask(mask);
    if (fchmod(fd, 0666 & ~mask) != 0) {
        int e = errno;
        close(fd);
        unlink(*tmp);
        errno = e;
        return -1;
    }
    return fd;
}

static bool write_all_fd(int fd, const char *p, size_t len)
{
    while (len) {
        ssize_t k = write(fd, p, len);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return false;
        p += k;
        len -= (size_t)k;
    }
    return true;
}

int cli_write_file(const char *path, const char *text, size_t len)
{
    char *real = link_target(path);
    const char *target = real ? real : path;
    /* the rename replaces only a regular file or nothing: never a FIFO, a device or a
     * directory that took the name since cli_check_output looked */
    struct stat st;
    if (lstat(target, &st) == 0 && !S_ISREG(st.st_mode)) {
        cli_error("%s: not a regular file; a report is written whole to a regular file: not "
                  "replaced", path);
        free(real);
        return EXIT_BAD_INPUT;
    }
    char *tmp = NULL;
    int fd = make_temp(target, &tmp);
    bool made = fd >= 0;
    bool ok = made && write_all_fd(fd, text, len);
    int e = errno;
    if (made && close(fd) != 0 && ok) {
        ok = false;
        e = errno;
    }
    if (ok && rename(tmp, target) != 0) {
        ok = false;
        e = errno;
    }
    if (!ok) {
        cli_error("%s: cannot write: %s", path, strerror(e));
        if (made)
            unlink(tmp);
    }
    free(tmp);
    free(real);
    return ok ? EXIT_AGREE : EXIT_BAD_INPUT;
}

bool cli_same_file(const char *a, const char *b)
{
    struct stat x, y;
    return a && b && stat(a, &x) == 0 && stat(b, &y) == 0 && x.st_dev == y.st_dev &&
           x.st_ino == y.st_ino;
}

static bool exists_with(const char *path, const char *suffix)
{
    size_t n = strlen(path), m = strlen(suffix);
    char *p = malloc(n + m + 1);
    if (!p)
        return false;
    memcpy(p, path, n);
    memcpy(p + n, suffix, m + 1);
    struct stat st;
    bool yes = stat(p, &st) == 0;
    free(p);
    return yes;
}

int cli_unfinished_capture(const char *path)
{
    struct stat st;
    if (stat(path, &st) == 0 || errno != ENOENT || !exists_with(path, ".partial") ||
        !exists_with(path, ".journal"))
        return EXIT_AGREE;
    cli_error("%s: the capture into it did not finish (%s.partial and %s.journal are left): "
              "'nnparity recover %s' finishes it (ls and stats read %s.partial as it is)", path,
              path, path, path, path);
    return EXIT_BAD_INPUT;
}
