/*
 * cli.h - what the nnparity subcommands share: exit codes, error printing, opening dumps, and
 * the formatting of sizes, shapes and numbers.
 */
#ifndef NNP_CLI_H
#define NNP_CLI_H

#include <stdbool.h>
#include <stdio.h>

#include "nnparity.h"

/* Exit codes, like diff(1). */
enum {
    EXIT_AGREE = 0,    /* within tolerance / nothing found */
    EXIT_FOUND = 1,    /* a divergence (or, for stats --check-finite, a NaN or Inf) found */
    EXIT_BAD_INPUT = 2,/* bad usage or bad input */
    EXIT_INTERNAL = 3  /* a bug or the machine (out of memory) */
};

typedef struct cli_command {
    const char *name;
    const char *summary;
    const char *usage; /* the full help text */
    int (*run)(int argc, char **argv);
} cli_command;

extern const cli_command cli_ls, cli_stats, cli_diff, cli_recover, cli_run, cli_weights;
extern const cli_command cli_convert;
extern const cli_command cli_relevance;

/* One line on stderr: "nnparity: <message>". */
void cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Print `cmd`'s usage to stderr, after a one-line reason, and return EXIT_BAD_INPUT. */
int cli_usage_error(const cli_command *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* The exit code for a library failure, after printing its message. */
int cli_fail(nnp_status st);

/* Scan argv for -h/--help (before "--"): print the usage to stdout and return true. */
bool cli_wants_help(const cli_command *cmd, int argc, char **argv);

/* Formatting into caller buffers. */
void cli_format_dims(char *buf, size_t n, uint32_t ndim, const uint64_t *shape); /* "[2, 3]" */
void cli_format_shape(char *buf, size_t n, const nnp_record *r);
void cli_format_bytes(char *buf, size_t n, unsigned long long bytes);
void cli_format_number(char *buf, size_t n, double v);

/* A tolerance option's value: a finite number >= 0. */
bool cli_parse_tolerance(const char *s, double *out);

/* "record" or "records" for a count. */
static inline const char *cli_plural(unsigned long long n, const char *one, const char *many)
{
    return n == 1 ? one : many;
}

/* Write `text` to `path` whole: into "<path>.tmp", then renamed, so that a failed write (a full
 * disk) never leaves half a report. An error is printed; returns EXIT_AGREE or EXIT_BAD_INPUT. */
int cli_write_file(const char *path, const char *text, size_t len);

/* "dir/name", a new string (NULL when memory runs out). */
char *cli_join_path(const char *dir, const char *name);

/* Whether `name` matches a glob pattern; a pattern without * ? [ matches as a substring. */
bool cli_name_matches(const char *pattern, const char *name);

/* 8-bit RGB images as PNG, w x h pixels of 3 bytes, row-major: written whole or not at all
 * (plot_png.c), and read from any PNG colour type and depth, alpha dropped (png_read.c; *rgb is
 * a new buffer to free()). An error is printed; they return EXIT_AGREE or an exit code. */
int cli_png_write_rgb(const char *path, int w, int h, const unsigned char *rgb);
int cli_png_read_rgb(const char *path, unsigned char **rgb, int *w, int *h);

#endif
