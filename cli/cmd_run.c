/*
 * cmd_run.c - `nnparity run --ref CMD --port CMD`: runs the reference and the port with capture
 * on, runs the port again on the reference's layer inputs (injection), diffs both scenarios and
 * writes one report that tells each layer's own error from the error it inherits from upstream.
 *
 * This file runs the commands and collects what they captured; report/report_model.c turns the
 * two diffs into the report (the labels are the library's, nnp_attribute), and the other files
 * of report/ and plot/ render it.
 */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"
#include "plot/plot.h"
#include "report/report.h"

extern char **environ;

static const char run_usage[] =
    "usage: nnparity run --ref CMD --port CMD [options]\n"
    "\n"
    "Run the reference and the port with capture on (the standard scenario), run the port again\n"
    "with each layer fed the reference's inputs (the injection scenario), and report for every\n"
    "reference record the error in both. A layer that still differs on the reference's inputs\n"
    "has its own error; one that agrees there only inherits its error from upstream. The report\n"
    "names the first divergence and whose error it is, checks the execution order, sums up per\n"
    "component, and is always written to DIR/report.html (one self-contained page with a plot).\n"
    "A reproducer for the first layer with its own error goes to DIR/repro/.\n"
    "\n"
    "With --baseline, the reference also runs in the port's precision; an error within 4x the\n"
    "baseline's at the same record is labelled precision, not own (docs/run.md).\n"
    "\n"
    "Each command runs through `sh -c` with the environment that the C API and the PyTorch\n"
    "bridge read:\n"
    "  reference  NNPARITY_CAPTURE=DIR/ref.safetensors\n"
    "  port       NNPARITY_CAPTURE=DIR/port.safetensors\n"
    "  injection  NNPARITY_CAPTURE=DIR/port_injected.safetensors\n"
    "             NNPARITY_INJECT=DIR/ref.safetensors  NNPARITY_RULES=FILE (with --rules)\n"
    "  baseline   NNPARITY_CAPTURE=DIR/baseline[_injected].safetensors  NNPARITY_BASELINE=B\n"
    "Their stderr passes through and is kept whole in DIR/<capture>.stderr; their stdout goes to\n"
    "stderr, so that stdout holds only the report.\n"
    "\n"
    "  --ref CMD        the reference command (required)\n"
    "  --port CMD       the port command (required)\n"
    "  --rules FILE     map the port's names onto the reference's (docs/rules.md), for\n"
    "                   injecting and comparing\n"
    "  --baseline B     bf16, f16, autocast-bf16 or autocast-f16: the --ref command run with\n"
    "                   NNPARITY_BASELINE=B; anything else: a command that makes the baseline\n"
    "  --out DIR        where the captures and reports go (default: nnparity-run)\n"
    "  --atol X         absolute tolerance for every pair (default: by dtype, docs/diff.md)\n"
    "  --rtol X         relative tolerance for every pair (default: by dtype)\n"
    "  --metric M       the plot's y axis: rel-l2 (default) or max-abs\n"
    "  --all            list every record, not only those that are not within tolerance\n"
    "  -j, --threads N  threads for comparing (default: one per CPU)\n"
    "output (besides DIR/report.html)\n"
    "  --json           the report as JSON on stdout instead of text (schema nnparity.run/1)\n"
    "  --json-file FILE also write the JSON report to FILE\n"
    "  --markdown FILE  also write a short Markdown report\n"
    "  --plot FILE      also write the plot alone: FILE.svg, or FILE.png (rasterized)\n"
    "  --force          replace files that nnparity did not write: FILEs and DIR/report.html\n"
    "                   (by default only its own are replaced; docs/cli.md)\n"
    "  --width N        lay the text out for N columns (default: the terminal's width, 80\n"
    "                   when stdout is not a terminal)\n"
    "  -h               this help\n"
    "\n"
    "A command that fails (exits non-zero or is killed by a signal) is reported with the last 20\n"
    "lines of its stderr, and what it captured before failing is still compared: a port that\n"
    "crashes at layer 7 shows layers 0-6, and the rest as missing.\n"
    "\n"
    "Exit codes: 0 every pair within tolerance in both scenarios, the same order, and every\n"
    "command succeeded; 1 a divergence, a reordering, or a command that failed after capturing\n"
    "something (what it captured is compared, but the run as a whole did not do what the\n"
    "reference does: that is a finding, not bad input); 2 bad usage or input, or a command that\n"
    "captured nothing (there is nothing to compare); 3 internal error.\n"
    "\n"
    "examples:\n"
    "  nnparity run --ref 'python ref.py' --port './port model.bin' --out nnparity-run\n"
    "  nnparity run --ref 'python ref.py' --port 'python port.py' --rules port.rules \\\n"
    "      --markdown report.md --plot error.svg\n"
    "  nnparity run --ref 'python ref.py' --port 'python port_bf16.py' --baseline bf16\n";

/* How much of a command's stderr is kept for the report: the last TAIL_LINES lines, out of at
 * most the last TAIL_BYTES bytes. */
enum { TAIL_LINES = 20, TAIL_BYTES = 16384 };

/* mkdir -p */
static bool make_dirs(const char *path)
{
    char *p = strdup(path);
    if (!p)
        return false;
    bool ok = true;
    for (char *q = p + 1; ok; q++) {
        if (*q != '/' && *q != '\0')
            continue;
        char c = *q;
        *q = '\0';
        if (mkdir(p, 0777) != 0 && errno != EEXIST)
            ok = false;
        *q = c;
        if (!c)
            break;
    }
    free(p);
    struct stat st;
    return ok && stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static bool exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* Remove what an earlier run left at `path`, so that a stale capture is never taken for this
 * run's. */
static void remove_capture(const char *path)
{
    static const char *const ext[] = {"", ".partial", ".journal", ".tmp"};
    for (size_t i = 0; i < sizeof ext / sizeof *ext; i++) {
        char *p = malloc(strlen(path) + 16);
        if (!p)
            return;
        sprintf(p, "%s%s", path, ext[i]);
        remove(p);
        free(p);
    }
}

/* The environment for a command: ours without NNPARITY_CAPTURE/INJECT/RULES/BASELINE, plus
 * `set`: each command gets only what its part of the run asks for. */
static char **child_env(char *const *set, size_t nset)
{
    size_t n = 0;
    while (environ[n])
        n++;
    char **env = malloc((n + nset + 1) * sizeof *env);
    if (!env)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (strncmp(environ[i], "NNPARITY_CAPTURE=", 17) != 0 &&
            strncmp(environ[i], "NNPARITY_INJECT=", 16) != 0 &&
            strncmp(environ[i], "NNPARITY_RULES=", 15) != 0 &&
            strncmp(environ[i], "NNPARITY_BASELINE=", 18) != 0)
            env[k++] = environ[i];
    for (size_t i = 0; i < nset; i++)
        if (set[i])
            env[k++] = set[i];
    env[k] = NULL;
    return env;
}

static char *env_pair(const char *name, const char *value)
{
    if (!value)
        return NULL;
    char *s = malloc(strlen(name) + strlen(value) + 2);
    if (s)
        sprintf(s, "%s=%s", name, value);
    return s;
}

/* A byte ring that keeps the last TAIL_BYTES bytes of a stream. */
typedef struct {
    char buf[TAIL_BYTES];
    size_t total;
} ring;

static void ring_add(ring *r, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        r->buf[(r->total + i) % TAIL_BYTES] = p[i];
    r->total += n;
}

/* The last TAIL_LINES lines of what the ring holds, made printable: bytes that are not valid
 * UTF-8 and control characters other than tab become '?', so the tail is safe in every report. */
static char *ring_tail(const ring *r, size_t *lines)
{
    size_t n = r->total < TAIL_BYTES ? r->total : TAIL_BYTES;
    size_t start = r->total - n;
    char *s = malloc(n + 1);
    if (!s)
        return NULL;
    for (size_t i = 0; i < n; i++)
        s[i] = r->buf[(start + i) % TAIL_BYTES];
    while (n && s[n - 1] == '\n')
        n--;
    s[n] = '\0';
    /* back up over TAIL_LINES lines; a line cut by the ring is dropped when there are others */
    size_t from = n, count = 0;
    while (from > 0 && count < TAIL_LINES) {
        from--;
        if (s[from] == '\n' && ++count == TAIL_LINES) {
            from++;
            break;
        }
    }
    if (from == 0 && r->total > TAIL_BYTES) {
        char *nl = strchr(s, '\n');
        from = nl ? (size_t)(nl - s) + 1 : 0;
    }
    memmove(s, s + from, n - from + 1);
    n -= from;
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        size_t len = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3
                                     : (c & 0xf8) == 0xf0 ? 4 : 0;
        bool ok = len > 0 && i + len <= n && !(len == 2 && c < 0xc2) && !(len == 4 && c > 0xf4);
        for (size_t k = 1; ok && k < len; k++)
            ok = ((unsigned char)s[i + k] & 0xc0) == 0x80;
        if (ok && len == 3) {
            unsigned char d = (unsigned char)s[i + 1];
            ok = !(c == 0xe0 && d < 0xa0) && !(c == 0xed && d >= 0xa0);
        }
        if (ok && len == 4) {
            unsigned char d = (unsigned char)s[i + 1];
            ok = !(c == 0xf0 && d < 0x90) && !(c == 0xf4 && d >= 0x90);
        }
        if (!ok || (len == 1 && ((c < 0x20 && c != '\n' && c != '\t') || c == 0x7f))) {
            s[i++] = '?';
            continue;
        }
        i += len;
    }
    size_t count_lines = n ? 1 : 0;
    for (size_t i = 0; i < n; i++)
        count_lines += s[i] == '\n';
    *lines = count_lines;
    return s;
}

/* Run s->command through sh -c with `env`; its stderr goes to ours, to s->stderr_file and to the
 * tail kept for the report. Returns false only when the command could not be started. */
static bool run_command(run_side *s, char **env)
{
    int fds[2];
    FILE *log = fopen(s->stderr_file, "w");
    if (!log) {
        cli_error("%s: cannot write: %s", s->stderr_file, strerror(errno));
        return false;
    }
    if (pipe(fds) != 0) {
        cli_error("cannot run the %s command: %s", s->role, strerror(errno));
        fclose(log);
        return false;
    }
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        cli_error("cannot run the %s command: %s", s->role, strerror(errno));
        close(fds[0]);
        close(fds[1]);
        fclose(log);
        return false;
    }
    if (pid == 0) {
        /* stdout is the report's: the command's stdout joins our stderr instead */
        close(fds[0]);
        if (dup2(STDERR_FILENO, STDOUT_FILENO) < 0 || dup2(fds[1], STDERR_FILENO) < 0)
            _exit(127);
        close(fds[1]);
        signal(SIGPIPE, SIG_DFL);
        char *argv[] = {"sh", "-c", (char *)s->command, NULL};
        execve("/bin/sh", argv, env);
        _exit(127);
    }
    close(fds[1]);
    s->ran = true;
    ring *tail = calloc(1, sizeof *tail);
    char buf[4096];
    bool log_ok = true;
    for (;;) {
        ssize_t got = read(fds[0], buf, sizeof buf);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            break;
        fwrite(buf, 1, (size_t)got, stderr);
        if (log_ok && fwrite(buf, 1, (size_t)got, log) != (size_t)got)
            log_ok = false;
        if (tail)
            ring_add(tail, buf, (size_t)got);
    }
    fflush(stderr);
    close(fds[0]);
    if (fclose(log) != 0)
        log_ok = false;
    if (!log_ok)
        cli_error("%s: cannot write: %s", s->stderr_file, strerror(errno));
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    s->exit_status = -1;
    if (WIFEXITED(status)) {
        s->exit_status = WEXITSTATUS(status);
        s->failed = s->exit_status != 0;
        /* sh reports a command killed by signal N as status 128 + N */
        if (s->exit_status > 128 && s->exit_status < 128 + 65) {
            s->signal = s->exit_status - 128;
            snprintf(s->status, sizeof s->status, "exited with status %d (killed by signal %d, "
                     "%s)", s->exit_status, s->signal, strsignal(s->signal));
        } else {
            snprintf(s->status, sizeof s->status, "exited with status %d", s->exit_status);
        }
    } else if (WIFSIGNALED(status)) {
        s->signal = WTERMSIG(status);
        s->failed = true;
        snprintf(s->status, sizeof s->status, "was killed by signal %d (%s)", s->signal,
                 strsignal(s->signal));
    } else {
        s->failed = true;
        snprintf(s->status, sizeof s->status, "ended with wait status %d", status);
    }
    s->tail = tail ? ring_tail(tail, &s->tail_lines) : NULL;
    free(tail);
    return true;
}

/* Open what the command captured: the finished file, else the partial file a killed writer left
 * (finished here with nnp_recover, or read as it is when that fails). A missing or empty capture
 * leaves s->dump NULL. */
static int open_capture(run_side *s)
{
    nnp_status st;
    if (!exists(s->capture)) {
        char *partial = malloc(strlen(s->capture) + 9);
        if (!partial)
            return run_nomem();
        sprintf(partial, "%s.partial", s->capture);
        if (!exists(partial)) {
            free(partial);
            return EXIT_AGREE;
        }
        size_t n = 0;
        if (nnp_recover(s->capture, &n) == NNP_OK) {
            s->recovered = true;
        } else {
            st = nnp_dump_open(partial, &s->dump);
            free(partial);
            if (st) /* a partial capture with no complete record: nothing captured */
                return EXIT_AGREE;
            goto opened;
        }
        free(partial);
    }
    st = nnp_dump_open(s->capture, &s->dump);
    if (st)
        return cli_fail(st);
opened:
    if (nnp_dump_count(s->dump) == 0) {
        nnp_dump_close(s->dump);
        s->dump = NULL;
    }
    return EXIT_AGREE;
}

/* The one-line reason and stderr tail of a command that captured nothing. */
static void say_nothing_captured(const run_side *s, int side)
{
    char who[64];
    snprintf(who, sizeof who, side == SIDE_INJ ? "the port command under injection"
                              : side == SIDE_BASE_INJ ? "the baseline command under injection"
                                                       : "the %s command", s->role);
    if (s->failed)
        cli_error("%s failed before capturing anything: it %s", who, s->status);
    else
        cli_error("%s captured nothing: it %s without recording into $NNPARITY_CAPTURE (a "
                  "PyTorch script records there inside `with nnparity.auto(model):`, which "
                  "nnparity.capture(model, path) does not do; a C or C++ program opens its "
                  "capture with the library's environment session, docs/run.md)", who,
                  s->status);
    if (s->tail && *s->tail) {
        fprintf(stderr, "  its stderr ended with:\n");
        for (const char *p = s->tail; *p;) {
            size_t len = strcspn(p, "\n");
            fprintf(stderr, "  | %.*s\n", (int)len, p);
            p += len + (p[len] == '\n');
        }
    }
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcasecmp(s + a - b, suffix) == 0;
}

/* Write the page (or any text made by `render`) whole, through a memory stream. */
static int write_rendered(const char *path, void (*render)(FILE *, const run_report *),
                          const run_report *r)
{
    char *text = NULL;
    size_t len = 0;
    FILE *o = open_memstream(&text, &len);
    if (!o) {
        cli_error("out of memory");
        return EXIT_INTERNAL;
    }
    render(o, r);
    if (fclose(o) != 0 || !text) {
        free(text);
        cli_error("out of memory");
        return EXIT_INTERNAL;
    }
    int rc = cli_write_file(path, text, len);
    free(text);
    return rc;
}

static void render_svg(FILE *o, const run_report *r)
{
    plot_svg(o, r, true);
}

typedef struct {
    const char *ref_cmd, *port_cmd, *rules, *out, *plot, *json, *markdown;
    const char *baseline; /* --baseline: a precision (bf16, ...) or a command; NULL: none */
    double atol, rtol;
    bool all, max_abs, to_stdout, force;
    int threads;
} run_args;

static int parse_args(int argc, char **argv, run_args *a)
{
    static const struct option opts[] = {
        {"ref", required_argument, NULL, 'f'},    {"port", required_argument, NULL, 'p'},
        {"rules", required_argument, NULL, 'r'},  {"out", required_argument, NULL, 'o'},
        {"atol", required_argument, NULL, 'a'},   {"rtol", required_argument, NULL, 'R'},
        {"metric", required_argument, NULL, 'm'}, {"plot", required_argument, NULL, 'P'},
        {"json", no_argument, NULL, 'J'},         {"json-file", required_argument, NULL, 'F'},
        {"markdown", required_argument, NULL, 'M'}, {"all", no_argument, NULL, 'A'},
        {"threads", required_argument, NULL, 'j'}, {"force", no_argument, NULL, 'y'},
        {"width", required_argument, NULL, 'W'},  {"baseline", required_argument, NULL, 'b'},
        {0, 0, 0, 0}};
    *a = (run_args){.out = "nnparity-run", .atol = -1, .rtol = -1};
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":j:", opts, NULL)) != -1) {
        switch (c) {
        case 'f': a->ref_cmd = optarg; break;
        case 'p': a->port_cmd = optarg; break;
        case 'r': a->rules = optarg; break;
        case 'b': a->baseline = optarg; break;
        case 'o': a->out = optarg; break;
        case 'P': a->plot = optarg; break;
        case 'J': a->to_stdout = true; break;
        case 'F': a->json = optarg; break;
        case 'M': a->markdown = optarg; break;
        case 'A': a->all = true; break;
        case 'y': a->force = true; break;
        case 'W':
            if (!cli_set_width(optarg))
                return cli_width_error(&cli_run, optarg);
            break;
        case 'a':
        case 'R':
            if (!cli_parse_tolerance(optarg, c == 'a' ? &a->atol : &a->rtol))
                return cli_usage_error(&cli_run, "--%s takes a non-negative number, not '%s'",
                                       c == 'a' ? "atol" : "rtol", optarg);
            break;
        case 'm':
            if (strcmp(optarg, "rel-l2") != 0 && strcmp(optarg, "max-abs") != 0)
                return cli_usage_error(&cli_run, "--metric is rel-l2 or max-abs, not '%s'",
                                       optarg);
            a->max_abs = strcmp(optarg, "max-abs") == 0;
            break;
        case 'j': {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (*end || v < 1 || v > 256)
                return cli_usage_error(&cli_run, "-j takes a thread count from 1 to 256, not '%s'",
                                       optarg);
            a->threads = (int)v;
            break;
        }
        default:
            return cli_option_error(&cli_run, opts, c, argc, argv);
        }
    }
    if (optind < argc && a->to_stdout)
        return cli_usage_error(&cli_run, "unexpected argument '%s': --json takes no FILE (it "
                               "prints JSON on stdout; --json-file FILE writes a file)",
                               argv[optind]);
    if (optind < argc)
        return cli_usage_error(&cli_run, "unexpected argument '%s' (quote each command whole)",
                               argv[optind]);
    if (a->json && strcmp(a->json, "-") == 0)
        return cli_usage_error(&cli_run, "--json-file writes a file; --json prints the JSON "
                               "report on stdout");
    if (!a->ref_cmd || !*a->ref_cmd || !a->port_cmd || !*a->port_cmd)
        return cli_usage_error(&cli_run, "--ref CMD and --port CMD are needed");
    if (!*a->out)
        return cli_usage_error(&cli_run, "--out needs a directory");
    if (a->baseline && !*a->baseline)
        return cli_usage_error(&cli_run, "--baseline needs a precision (bf16, f16, autocast-bf16, "
                               "autocast-f16) or a command");
    if (a->plot && !ends_with(a->plot, ".svg") && !ends_with(a->plot, ".png"))
        return cli_usage_error(&cli_run, "--plot writes FILE.svg or FILE.png, not '%s'", a->plot);
    if ((a->atol < 0) != (a->rtol < 0)) {
        /* one given: the other from the dtype would mix two rules; take it as zero */
        if (a->atol < 0) a->atol = 0;
        if (a->rtol < 0) a->rtol = 0;
    }
    return EXIT_AGREE;
}

/* The report files given by name: each may replace only nnparity's own file of its kind (or any
 * with --force), never the rules. */
static int check_named_outputs(const run_args *a)
{
    const char *paths[] = {a->json, a->markdown, a->plot};
    const cli_output_kind kinds[] = {CLI_OUT_JSON, CLI_OUT_MARKDOWN,
                                     a->plot && ends_with(a->plot, ".png") ? CLI_OUT_PNG
                                                                           : CLI_OUT_SVG};
    for (int k = 0; k < 3; k++) {
        if (!paths[k])
            continue;
        if (a->rules && cli_same_file(paths[k], a->rules)) {
            cli_error("%s: is the rules file; write the report elsewhere", paths[k]);
            return EXIT_BAD_INPUT;
        }
        int rc = cli_check_output(paths[k], kinds[k], a->force);
        if (rc)
            return rc;
    }
    return EXIT_AGREE;
}

/* DIR/report.html, replaced only when nnparity wrote it (or with --force). The captures beside
 * it are the commands' to write, at $NNPARITY_CAPTURE, and are replaced on every run. */
static int check_dir_outputs(const run_args *a)
{
    char *p = cli_join_path(a->out, "report.html");
    if (!p)
        return run_nomem();
    int rc = cli_check_output(p, CLI_OUT_HTML, a->force);
    free(p);
    return rc;
}

/* Run one side: clear its old capture, run the command, open what it captured. */
static int run_side_of(run_side *s, char *const *set, size_t nset)
{
    remove_capture(s->capture);
    char **env = child_env(set, nset);
    if (!env)
        return run_nomem();
    bool started = run_command(s, env);
    free(env);
    if (!started)
        return EXIT_BAD_INPUT;
    return open_capture(s);
}

/* What the standard scenario's alignment found, as rules: written to DIR/aligned.rules (shown
 * in the report, reusable with --rules) and loaded for the injection run and its diff. Nothing
 * is written when every pair was made by name. */
static int write_aligned_rules(run_report *r, const char *abs_dir, char **abs_rules)
{
    if (!nnp_diff_aligned_count(r->std))
        return EXIT_AGREE;
    char *text = NULL;
    nnp_status st = nnp_diff_aligned_rules(r->std, r->side[SIDE_REF].dump, &text);
    if (st)
        return cli_fail(st);
    r->aligned_rules_path = cli_join_path(r->out_dir, "aligned.rules");
    *abs_rules = cli_join_path(abs_dir, "aligned.rules");
    int rc = r->aligned_rules_path && *abs_rules ? EXIT_AGREE : run_nomem();
    if (!rc)
        rc = cli_write_file(r->aligned_rules_path, text, strlen(text));
    nnp_free(text);
    if (!rc && (st = nnp_rules_load(r->aligned_rules_path, &r->aligned_rules)))
        rc = cli_fail(st);
    return rc;
}

/* The precisions --baseline names itself: the --ref command run with NNPARITY_BASELINE set. */
static bool baseline_is_precision(const char *b)
{
    static const char *const specs[] = {"bf16", "f16", "autocast-bf16", "autocast-f16"};
    for (size_t i = 0; i < sizeof specs / sizeof *specs; i++)
        if (strcmp(b, specs[i]) == 0)
            return true;
    return false;
}

/* What the baseline computes in, for the report: the precision --baseline named, else the
 * narrowest floating dtype among the baseline's records. */
static void baseline_precision(run_report *r, const char *spec)
{
    if (baseline_is_precision(spec)) {
        const char *dash = strrchr(spec, '-');
        snprintf(r->baseline_precision, sizeof r->baseline_precision, "%s",
                 dash ? dash + 1 : spec);
        return;
    }
    const nnp_dump *d = r->side[SIDE_BASE].dump;
    size_t best = 0;
    for (size_t i = 0; i < nnp_dump_count(d); i++) {
        nnp_dtype t = nnp_dump_record(d, i)->dtype;
        if (nnp_dtype_class_of(t) == NNP_CLASS_FLOAT && (!best || nnp_dtype_size(t) < best)) {
            best = nnp_dtype_size(t);
            /* as the precisions are spoken of: bf16, f16 */
            char *p = r->baseline_precision;
            snprintf(p, sizeof r->baseline_precision, "%s", nnp_dtype_name(t));
            for (; *p; p++)
                *p = (char)tolower((unsigned char)*p);
        }
    }
    if (!best)
        snprintf(r->baseline_precision, sizeof r->baseline_precision, "the baseline's precision");
}

/* The standard scenario's diff and, without --rules, the rules its alignment found: what the
 * port's inputs are injected through. */
static int diff_standard(run_report *r, const run_args *a, const char *abs_dir,
                         nnp_diff_options *o, char **abs_rules)
{
    nnp_status st = nnp_diff_dumps(r->side[SIDE_REF].dump, r->side[SIDE_PORT].dump, o, &r->std);
    if (st)
        return cli_fail(st);
    int rc = a->rules ? EXIT_AGREE : write_aligned_rules(r, abs_dir, abs_rules);
    if (!rc && r->aligned_rules)
        o->rules = r->aligned_rules;
    return rc;
}

/* Everything after the arguments are known; `abs_dir` is DIR made absolute for the commands,
 * which may change directory. */
static int run_all(run_report *r, const run_args *a, const char *abs_dir, nnp_rules *rules)
{
    static const char *const names[NSIDES] = {"ref", "port", "port_injected", "baseline",
                                              "baseline_injected"};
    static const char *const roles[NSIDES] = {"reference", "port", "injected", "baseline",
                                              "baseline injected"};
    bool spec = a->baseline && baseline_is_precision(a->baseline);
    const char *base_cmd = spec ? a->ref_cmd : a->baseline;
    const char *cmds[NSIDES] = {a->ref_cmd, a->port_cmd, a->port_cmd, base_cmd, base_cmd};
    char *abs_capture[NSIDES] = {NULL};
    int rc = EXIT_AGREE;
    for (int i = 0; i < NSIDES && cmds[i]; i++) {
        run_side *s = &r->side[i];
        char file[64];
        s->role = roles[i];
        s->command = cmds[i];
        s->exit_status = -1;
        snprintf(file, sizeof file, "%s.safetensors", names[i]);
        s->capture = cli_join_path(a->out, file);
        abs_capture[i] = cli_join_path(abs_dir, file);
        snprintf(file, sizeof file, "%s.stderr", names[i]);
        s->stderr_file = cli_join_path(a->out, file);
        if (!s->capture || !abs_capture[i] || !s->stderr_file)
            rc = run_nomem();
    }
    char *abs_rules = NULL, *abs_ref = NULL;
    if (!rc && a->rules && !(abs_rules = realpath(a->rules, NULL))) {
        cli_error("%s: %s", a->rules, strerror(errno));
        rc = EXIT_BAD_INPUT;
    }

    char *set[3] = {NULL};
    nnp_diff_options o;
    nnp_diff_options_init(&o);
    o.rules = rules;
    o.atol = a->atol;
    o.rtol = a->rtol;
    o.threads = a->threads;
    /* the baseline (the reference's own code, paired by name, measured, not explained) runs
     * before the standard scenario is paired: its noise says how near two values must be */
    nnp_diff_options ob;
    nnp_diff_options_init(&ob);
    ob.atol = a->atol;
    ob.rtol = a->rtol;
    ob.threads = a->threads;
    ob.no_explain = true;
    static const int order[NSIDES] = {SIDE_REF, SIDE_PORT, SIDE_BASE, SIDE_BASE_INJ, SIDE_INJ};
    nnp_status st = NNP_OK;
    for (int at = 0; at < NSIDES && !rc; at++) {
        int i = order[at];
        run_side *s = &r->side[i];
        if (!cmds[i])
            continue;
        bool injected = i == SIDE_INJ || i == SIDE_BASE_INJ;
        if (injected && !abs_ref) {
            /* inject from what the reference captured, partial or not */
            const char *ref_path = nnp_dump_path(r->side[SIDE_REF].dump);
            const char *base = strrchr(ref_path, '/');
            if (!(abs_ref = cli_join_path(abs_dir, base ? base + 1 : ref_path))) {
                rc = run_nomem();
                break;
            }
        }
        if (i == SIDE_INJ) {
            /* the standard scenario first: without --rules, its alignment is what the port's
             * inputs are injected through */
            if (r->side[SIDE_BASE].dump &&
                (st = nnp_diff_dumps(r->side[SIDE_REF].dump, r->side[SIDE_BASE].dump, &ob,
                                     &r->base_std))) {
                rc = cli_fail(st);
                break;
            }
            o.noise = r->base_std;
            if ((rc = diff_standard(r, a, abs_dir, &o, &abs_rules)))
                break;
        }
        set[0] = env_pair("NNPARITY_CAPTURE", abs_capture[i]);
        set[1] = injected ? env_pair("NNPARITY_INJECT", abs_ref) : NULL;
        /* the baseline is the reference's own code: it needs no rules to inject */
        set[2] = i == SIDE_INJ ? env_pair("NNPARITY_RULES", abs_rules)
                 : i >= SIDE_BASE && spec ? env_pair("NNPARITY_BASELINE", a->baseline)
                                          : NULL;
        if (!set[0] || (injected && !set[1]) || (i == SIDE_INJ && abs_rules && !set[2]) ||
            (i >= SIDE_BASE && spec && !set[2]))
            rc = run_nomem();
        if (!rc)
            rc = run_side_of(s, set, 3);
        for (int k = 0; k < 3; k++)
            free(set[k]);
        if (!rc && !s->dump && injected)
            say_nothing_captured(s, i); /* reported, and compared without it */
        if (!rc && !s->dump && !injected) {
            /* nothing to compare without the reference, the port's standard capture or the
             * baseline asked for */
            say_nothing_captured(s, i);
            rc = EXIT_BAD_INPUT;
        }
    }
    for (int i = 0; i < NSIDES; i++)
        free(abs_capture[i]);
    free(abs_rules);
    free(abs_ref);
    if (rc)
        return rc;

    /* the injected capture is paired as the standard one was: the same port records (by
     * name) with the same reference records */
    o.like = r->std;
    o.like_port = r->side[SIDE_PORT].dump;
    if (r->side[SIDE_INJ].dump)
        st = nnp_diff_dumps(r->side[SIDE_REF].dump, r->side[SIDE_INJ].dump, &o, &r->inj);
    if (!st && r->side[SIDE_BASE_INJ].dump)
        st = nnp_diff_dumps(r->side[SIDE_REF].dump, r->side[SIDE_BASE_INJ].dump, &ob,
                            &r->base_inj);
    if (st)
        return cli_fail(st);
    if (r->base_std)
        baseline_precision(r, a->baseline);
    r->rules = rules;
    return run_report_build(r);
}

static int run_run(int argc, char **argv)
{
    run_args a;
    int rc = parse_args(argc, argv, &a);
    if (rc)
        return rc;
    nnp_rules *rules = NULL;
    /* a bad rules file is bad input: said before any command runs */
    if (a.rules) {
        nnp_status st = nnp_rules_load(a.rules, &rules);
        if (st)
            return cli_fail(st);
    }
    if (!make_dirs(a.out)) {
        cli_error("%s: cannot create the directory: %s", a.out, strerror(errno));
        nnp_rules_free(rules);
        return EXIT_BAD_INPUT;
    }
    /* after DIR is made: the reports may go into it */
    if ((rc = check_named_outputs(&a)) || (rc = check_dir_outputs(&a))) {
        nnp_rules_free(rules);
        return rc;
    }
    char *abs_dir = realpath(a.out, NULL);
    if (!abs_dir) {
        cli_error("%s: %s", a.out, strerror(errno));
        nnp_rules_free(rules);
        return EXIT_BAD_INPUT;
    }
    run_report r = {.out_dir = a.out, .rules_path = a.rules, .atol = a.atol, .rtol = a.rtol,
                    .plot_max_abs = a.max_abs, .first_divergence = -1, .first_own = -1,
                    .other_own = -1, .order_violation = -1};
    r.html_path = cli_join_path(a.out, "report.html");
    if (!r.html_path) {
        rc = run_nomem();
        goto out;
    }
    /* what an earlier run left must not pass for this run's results */
    remove(r.html_path);
    char *stale = cli_join_path(a.out, "aligned.rules");
    if (stale)
        remove(stale);
    free(stale);
    run_repro_clear(a.out);
    /* an earlier run's baseline must not be taken for this run's */
    if (!a.baseline)
        for (size_t k = 0; k < 2; k++) {
            char *old = cli_join_path(a.out, k ? "baseline_injected.safetensors"
                                               : "baseline.safetensors");
            if (old)
                remove_capture(old);
            free(old);
        }
    rc = run_all(&r, &a, abs_dir, rules);
    if (rc)
        goto out;
    rc = run_write_repro(&r);
    if (!rc)
        rc = write_rendered(r.html_path, run_report_html, &r);
    if (!rc && !a.to_stdout)
        run_report_text(stdout, &r, a.all, cli_width());
    if (!rc && a.to_stdout)
        rc = run_report_json(&r, NULL);
    if (!rc && a.json)
        rc = run_report_json(&r, a.json);
    if (!rc && a.markdown)
        rc = write_rendered(a.markdown, run_report_markdown, &r);
    if (!rc && a.plot)
        rc = ends_with(a.plot, ".png") ? plot_png(&r, a.plot)
                                       : write_rendered(a.plot, render_svg, &r);
    if (!rc)
        rc = r.exit_code;
out:
    run_report_free(&r);
    free(abs_dir);
    nnp_rules_free(rules);
    return rc;
}

const cli_command cli_run = {"run",
                             "run the reference and the port, tell own error from inherited",
                             run_usage, run_run};
