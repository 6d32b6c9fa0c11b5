/*
 * report.h - the report of `nnparity run` as plain data (the three command runs, the standard and
 * injection diffs, one row per reference record with its own/inherited label from
 * nnp_attribute), and the renderers that turn it into text, JSON, Markdown, an HTML page and a
 * reproducer (the plot is plot/plot.h's).
 */
#ifndef NNP_CLI_REPORT_H
#define NNP_CLI_REPORT_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "nnparity.h"

/* Histogram of |port - ref| over one pair, in log-spaced bins: exactly 0, below 1e-10, one bin
 * per decade from 1e-10 to 1e2, 1e2 and above, and elements that are not finite on either side. */
enum { HIST_LO_EXP = -10, HIST_DECADES = 12, HIST_BINS = HIST_DECADES + 4 };
typedef struct run_hist {
    uint64_t bin[HIST_BINS];
    bool done; /* computed (the pair was compared) */
} run_hist;
/* The bin's range as text, e.g. "1e-05 .. 1e-04", "0", "not finite". */
void run_hist_label(int bin, char *buf, size_t n);

/* The commands: the reference, the port, the port under injection, and with --baseline the
 * reference in the port's precision, as it is and under injection. A side whose command is NULL
 * did not take part. */
enum { SIDE_REF, SIDE_PORT, SIDE_INJ, SIDE_BASE, SIDE_BASE_INJ, NSIDES };

typedef struct run_side {
    const char *role;     /* "reference", "port", "injected", "baseline", "baseline injected" */
    const char *command;  /* run through sh -c */
    char *capture;        /* DIR/<name>.safetensors */
    char *stderr_file;    /* DIR/<name>.stderr: the command's whole stderr */
    bool ran;             /* the command was started */
    bool failed;          /* it exited non-zero or was killed */
    int exit_status;      /* when it exited; -1 otherwise */
    int signal;           /* the signal that killed it; 0 if none */
    char status[160];     /* "exited with status 0", "was killed by signal 6 (Aborted)" */
    char *tail;           /* the last lines of its stderr ("" when it wrote none) */
    size_t tail_lines;
    bool recovered;       /* the capture was a partial file, finished here */
    nnp_dump *dump;       /* what it captured; NULL: nothing */
} run_side;

typedef struct run_row {
    size_t ref;                     /* record index in the reference dump */
    const nnp_record *rec;
    nnp_component_kind component;   /* nnp_component_kind_of(), with the rules */
    const nnp_diff_pair *std, *inj; /* the pairs in both scenarios; NULL: not captured there */
    const nnp_diff_pair *base_std, *base_inj; /* the baseline's, in both; NULL: none */
    double inj_floor_rel, inj_floor_abs;      /* the injected scenario's floor; NaN: none */
    nnp_label label;                /* nnp_attribute's, as is its ratio */
    double ratio;                   /* injected rel-L2 / standard rel-L2; NaN when undefined */
    run_hist std_hist, inj_hist;
    bool input;                     /* a layer input (role in0, in1, ...): left out of the plot */
} run_row;

/* Per-component counts and worst errors, over the rows. */
typedef struct run_component {
    nnp_component_kind kind;
    const char *name;         /* nnp_component_name(kind) */
    size_t rows, compared, own, inherited, std_fail, inj_fail;
    double std_rel_max, inj_rel_max, std_abs_max, inj_abs_max;
} run_component;

typedef struct run_report {
    run_side side[NSIDES];
    const char *out_dir;
    const char *rules_path;        /* NULL: none */
    const nnp_rules *rules;        /* the rules loaded from it: pairing and `component` lines */
    char *aligned_rules_path;      /* without --rules: DIR/aligned.rules, what the alignment of
                                    * the standard scenario found and injection went through;
                                    * NULL when nothing was aligned */
    nnp_rules *aligned_rules;
    bool injection_known;          /* the injected capture says what injection did: */
    uint64_t injected, not_injected; /* inputs overwritten with the reference's, and not */
    char *not_injected_why;        /* the first reason one was not; NULL */
    double atol, rtol;             /* < 0: by dtype */
    bool plot_max_abs;             /* the plot's metric: max-abs instead of rel-L2 */
    nnp_diff *std, *inj;           /* NULL when that scenario has nothing to compare */
    nnp_diff *base_std, *base_inj; /* the reference against the baseline; NULL: none */
    char baseline_precision[32];   /* what the baseline computes in ("bf16"); "" without one */
    size_t precision;              /* rows labelled precision: within the baseline's noise */
    size_t beyond_noise;           /* rows labelled own, inherited or unknown */
    nnp_attribution *attribution;  /* the labels, kept for run_culprit */
    run_row *rows;                 /* one per reference record, in execution order */
    size_t nrows;
    int64_t first_divergence;      /* row of the standard scenario's first divergence; -1 */
    int64_t first_own;             /* first row labelled own; -1 */
    int64_t other_own;             /* first row labelled own outside the first divergence's
                                    * layer; -1 */
    int64_t order_violation;       /* row where the port's order breaks; -1 */
    size_t inherited_after;        /* layers after the first divergence that only inherit */
    size_t own_layers;             /* layers with an own error */
    size_t missing;                /* rows labelled missing */
    run_component components[NNP_COMPONENT_COUNT];
    char *verdict;                 /* plain language, a few sentences */
    bool agree;
    int exit_code;
    char *html_path;
    char *repro_file, *repro_readme; /* NULL: no reproducer */
    char *repro_layer;
} run_report;

/* report_model.c: rows, labels (nnp_attribute), histograms, components and the verdict, from the
 * sides' dumps and the two diffs. Returns an exit code (EXIT_AGREE on success). */
int run_report_build(run_report *r);
void run_report_free(run_report *r);
/* Say "out of memory" and return EXIT_INTERNAL. */
int run_nomem(void);
/* The run's result in a few words, lower case: "the port agrees with the reference (within
 * bf16 compute noise)" or "the port does not match the reference". */
void run_headline(const run_report *r, char *buf, size_t n);
/* The layer a row belongs to, for people: "block.norm", "block.norm (call 1)", or the record's
 * name when its file has no module path. */
void run_row_layer(const run_row *row, char *buf, size_t n);
/* Who makes the first divergence: the standard diff's culprit, or with a baseline the one
 * beyond its noise (nnp_attribution_culprit); NULL when nothing diverges. */
const nnp_culprit *run_culprit(const run_report *r);
/* A row that needs nobody's attention: within tolerance, or within the baseline's noise.
 * Reports fold these and list the others. */
static inline bool run_row_quiet(const run_row *row)
{
    return row->label == NNP_LABEL_OK || row->label == NNP_LABEL_PRECISION;
}
/* Whether a side took part in the run (the baseline's only with --baseline). */
static inline bool run_side_used(const run_side *s)
{
    return s->command != NULL;
}
/* A number with 3 significant digits; "-" for NaN, "inf" for infinity. */
void run_num(char *buf, size_t n, double v);

/* report_repro.c: the reproducer for the first layer with its own error, in DIR/repro/
 * (layer.safetensors and README.md); run_repro_clear removes an earlier run's. */
void run_repro_clear(const char *out_dir);
int run_write_repro(run_report *r);

/* report_text.c, report_json.c, report_markdown.c, report_html.c */
/* The text report for a line of `width` columns. */
void run_report_text(FILE *o, const run_report *r, bool all, int width);
int run_report_json(const run_report *r, const char *path); /* NULL: stdout */
void run_report_markdown(FILE *o, const run_report *r);
void run_report_html(FILE *o, const run_report *r);
/* Write `s` with &, <, >, " and ' escaped for HTML text and attributes, and control characters
 * other than line breaks and tabs as visible escapes (\x1b). */
void html_escape(FILE *o, const char *s);

#endif
