/*
 * cli.h - what the nnparity subcommands share: exit codes, error printing, opening dumps, and
 * the formatting of sizes, shapes and numbers.
 */
#ifndef NNP_CLI_H
#define NNP_CLI_H

#include <getopt.h>
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
/* usage.c: a usage error on stderr, "nnparity CMD: <reason>" and "see 'nnparity CMD --help'";
 * returns EXIT_BAD_INPUT. */
int cli_usage_error(const cli_command *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* The usage error for getopt_long's '?' or ':' (optstring starts with ':'): an unknown option
 * with the closest real one ("did you mean '--atol'?"), an ambiguous abbreviation, a long name
 * after one dash, a missing value, a value for an option that takes none. */
int cli_option_error(const cli_command *cmd, const struct option *opts, int c, int argc,
                     char **argv);
/* The candidate closest to `word` by edit distance, when near enough to be a slip of the
 * keyboard; NULL otherwise. */
const char *cli_closest(const char *word, const char *const *candidates, size_t n);

/* The width of text output: --width N (cli_set_width; false when N is not a column count from
 * CLI_WIDTH_MIN to CLI_WIDTH_MAX, and cli_width_error says so), else the terminal's when stdout is
 * one, else 80. */
enum { CLI_WIDTH_MIN = 40, CLI_WIDTH_MAX = 1000 };
bool cli_set_width(const char *arg);
int cli_width_error(const cli_command *cmd, const char *arg);
int cli_width(void);
/* `text` after `first` (the first line's prefix) on lines of at most `width` columns, the lines
 * after the first indented by `indent` spaces; words longer than a line are not broken. Both
 * are printed through cli_text. */
void cli_wrap(FILE *o, const char *first, int indent, int width, const char *text);
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

/* outfile.c: the files nnparity writes. Each kind is recognised by its first bytes (docs/cli.md):
 * a JSON report by its first key, "schema": "nnparity.*"; Markdown by its first line; HTML, SVG,
 * PNG and rules files by the marks below; a safetensors file by nnparity's format key in its
 * metadata. */
typedef enum {
    CLI_OUT_JSON, CLI_OUT_MARKDOWN, CLI_OUT_HTML, CLI_OUT_SVG, CLI_OUT_PNG, CLI_OUT_RULES,
    CLI_OUT_DUMP
} cli_output_kind;
#define CLI_MARK_MARKDOWN "### nnparity "
#define CLI_MARK_HTML "<meta name=\"generator\" content=\"nnparity\">"
#define CLI_MARK_SVG "<!-- written by nnparity -->"
#define CLI_MARK_RULES "# written by nnparity"
#define CLI_MARK_PNG_KEY "Software" /* a tEXt chunk */
#define CLI_MARK_PNG_VALUE "nnparity"
/* Whether `path` may be written as a file of this kind: it does not exist (and its directory
 * does), or it is one nnparity wrote as that kind, or `force` is set; never a directory, a device
 * or a pipe. Called before the work, so that nothing is lost to a refusal. An error is printed;
 * returns EXIT_AGREE or EXIT_BAD_INPUT. */
int cli_check_output(const char *path, cli_output_kind kind, bool force);
/* Write `text` to `path` whole: into "<path>.tmp", then renamed, so that a failed write (a full
 * disk) never leaves half a report. An error is printed; returns EXIT_AGREE or EXIT_BAD_INPUT. */
int cli_write_file(const char *path, const char *text, size_t len);
/* The dump at `path` that an nnp_writer is building (NULL: none): if a mapped input shrinks
 * under the command (SIGBUS), its .partial and .journal are removed before the exit. Call it
 * once nnp_writer_open succeeded, and with NULL after nnp_writer_close or _abort. */
void cli_sigbus_output(const char *path);
/* Whether two paths name one file. */
bool cli_same_file(const char *a, const char *b);
/* A dump path that does not exist but whose PATH.partial and PATH.journal do: a capture that did
 * not finish. Says so, with how to finish it, and returns EXIT_BAD_INPUT; else EXIT_AGREE. */
int cli_unfinished_capture(const char *path);

/* "dir/name", a new string (NULL when memory runs out). */
char *cli_join_path(const char *dir, const char *name);

/* escape.c: strings from dumps and command lines (names, module types, paths, metadata, rule
 * text, commands) in each output syntax (docs/cli.md, "How names are printed").
 * cli_text: `s` itself when it prints as itself (printable ASCII, valid UTF-8 that is not a
 * control or bidirectional character), else a copy with those characters as visible escapes
 * (\n, \r, \t, \x1b, \u0085; a byte that is not UTF-8 as \xNN), valid until the 8th call
 * after. cli_text_width: its length in bytes, for laying out columns.
 * md_code: `s` as one Markdown code span, closed whatever backticks it holds; `cell` escapes
 * '|' for a table cell. md_text: `s` as Markdown text, its syntax characters escaped. */
const char *cli_text(const char *s);
int cli_text_width(const char *s);
void md_code(FILE *o, const char *s, bool cell);
void md_text(FILE *o, const char *s, bool cell);

/* Whether `name` matches a glob pattern; a pattern without * ? [ matches as a substring. */
bool cli_name_matches(const char *pattern, const char *name);

/* 8-bit RGB images as PNG, w x h pixels of 3 bytes, row-major: written whole or not at all
 * (plot_png.c), and read from any PNG colour type and depth, alpha dropped (png_read.c; *rgb is
 * a new buffer to free()). An error is printed; they return EXIT_AGREE or an exit code. */
int cli_png_write_rgb(const char *path, int w, int h, const unsigned char *rgb);
int cli_png_read_rgb(const char *path, unsigned char **rgb, int *w, int *h);

#endif
