/*
 * main.c - the nnparity command: finds the subcommand and hands it the arguments.
 */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

static const cli_command *const commands[] = {&cli_ls,  &cli_stats,   &cli_diff,
                                              &cli_run, &cli_weights, &cli_convert, &cli_recover,
                                              &cli_relevance};
#define NCOMMANDS (sizeof commands / sizeof *commands)

static void print_help(FILE *out)
{
    fputs("usage: nnparity <command> [options] [args]\n"
          "\n"
          "nnparity finds where and why a ported neural network stops matching its reference.\n"
          "\n"
          "commands:\n", out);
    for (size_t i = 0; i < NCOMMANDS; i++)
        fprintf(out, "  %-10s %s\n", commands[i]->name, commands[i]->summary);
    fputs("  help       show a command's options: nnparity help <command>\n"
          "\n"
          "options:\n"
          "  -h, --help       this help\n"
          "  -V, --version    print the version\n"
          "\n"
          "Conventions (docs/cli.md): --json prints JSON on stdout; files are written by\n"
          "named options (--json-file FILE, --markdown FILE, ...) and replace only files\n"
          "nnparity wrote unless --force is given; --width N sets the width of the text\n"
          "(default: the terminal's); records are numbered by seq, from 0, as `nnparity ls`\n"
          "lists them; `nnparity <command> -h` shows a command's options and examples.\n"
          "\n"
          "Files: safetensors (single, sharded *.index.json or a directory of shards), npy, npz,\n"
          "PyTorch checkpoints (read without running their pickle) and GGUF (dequantized).\n"
          "Exit codes: 0 nothing wrong, 1 a problem found, 2 bad usage or input, 3 internal error.\n",
          out);
}

static const cli_command *find_command(const char *name)
{
    for (size_t i = 0; i < NCOMMANDS; i++)
        if (strcmp(commands[i]->name, name) == 0)
            return commands[i];
    return NULL;
}

/* "unknown command 'dif'; did you mean 'diff'?" (for `nnparity help NAME`: "no command"), and
 * where the help is. */
static int unknown_command(const char *name, bool after_help)
{
    const char *names[NCOMMANDS + 1];
    for (size_t i = 0; i < NCOMMANDS; i++)
        names[i] = commands[i]->name;
    names[NCOMMANDS] = "help";
    const char *near = cli_closest(name, names, NCOMMANDS + !after_help);
    cli_error("%s '%s'%s%s%s", after_help ? "no command" : "unknown command", name,
              near ? "; did you mean '" : "", near ? near : "", near ? "'?" : "");
    fputs("see 'nnparity --help'\n", stderr);
    return EXIT_BAD_INPUT;
}

/* A file truncated by another process while it is mapped raises SIGBUS on the next read past
 * its new end. The handler names the file (nnp_mapping_of is async-signal-safe) and leaves
 * with exit 2, using only write(2), unlink(2) and _exit(2): an output file not yet renamed into
 * place stays a temporary file beside it (docs/cli.md), and a dump being written loses its
 * .partial and .journal (cli_sigbus_output). */
static size_t sig_put(char *buf, size_t at, size_t cap, const char *s)
{
    for (; *s && at < cap; s++)
        buf[at++] = (unsigned char)*s < 0x20 || *s == 0x7f ? '?' : *s; /* stays one line */
    return at;
}

/* The dump a command is writing when the signal comes: its temporaries go with it, so that
 * "nothing was written" holds (the writer made both, exclusively, before this was armed). */
static char sigbus_partial[4200], sigbus_journal[4200];
static volatile sig_atomic_t sigbus_armed;

void cli_sigbus_output(const char *path)
{
    sigbus_armed = 0;
    if (!path)
        return;
    int a = snprintf(sigbus_partial, sizeof sigbus_partial, "%s.partial", path);
    int b = snprintf(sigbus_journal, sizeof sigbus_journal, "%s.journal", path);
    if (a > 0 && (size_t)a < sizeof sigbus_partial && b > 0 && (size_t)b < sizeof sigbus_journal)
        sigbus_armed = 1;
}

static void on_sigbus(int sig, siginfo_t *info, void *uctx)
{
    (void)sig;
    (void)uctx;
    if (sigbus_armed) {
        unlink(sigbus_partial);
        unlink(sigbus_journal);
    }
    char buf[4352];
    size_t cap = sizeof buf - 1, n = 0;
    const char *path = NULL;
    uint64_t off = 0;
    if (info && nnp_mapping_of(info->si_addr, &path, &off)) {
        char num[24];
        size_t k = sizeof num;
        num[--k] = '\0';
        do
            num[--k] = (char)('0' + off % 10);
        while ((off /= 10) && k);
        n = sig_put(buf, n, cap, "nnparity: ");
        n = sig_put(buf, n, cap - 200 > n ? cap - 200 : n, path); /* room for the rest */
        n = sig_put(buf, n, cap, ": the file shrank while it was being read (SIGBUS at byte ");
        n = sig_put(buf, n, cap, num + k);
        n = sig_put(buf, n, cap, "); nothing was written");
    } else {
        n = sig_put(buf, n, cap, "nnparity: a file shrank while it was being read (SIGBUS); "
                                 "nothing was written");
    }
    buf[n++] = '\n';
    for (size_t done = 0; done < n;) {
        ssize_t w = write(STDERR_FILENO, buf + done, n - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        done += (size_t)w;
    }
    _exit(EXIT_BAD_INPUT);
}

static void install_sigbus_handler(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, NULL);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fputs("usage: nnparity <command> [options] [args]\nsee 'nnparity --help'\n", stderr);
        return EXIT_BAD_INPUT;
    }
    const char *name = argv[1];
    if (strcmp(name, "-h") == 0 || strcmp(name, "--help") == 0) {
        print_help(stdout);
        return EXIT_AGREE;
    }
    if (strcmp(name, "-V") == 0 || strcmp(name, "--version") == 0) {
        printf("nnparity %s\n", nnp_version());
        return EXIT_AGREE;
    }
    if (name[0] == '-') {
        const char *const top[] = {"--help", "--version"};
        const char *near = cli_closest(name, top, 2);
        if (near)
            cli_error("unknown option '%s'; did you mean '%s'?", name, near);
        else
            cli_error("unknown option '%s' (options go after the command: nnparity <command> "
                      "[options])", name);
        fputs("see 'nnparity --help'\n", stderr);
        return EXIT_BAD_INPUT;
    }
    if (strcmp(name, "help") == 0) {
        if (argc < 3) {
            print_help(stdout);
            return EXIT_AGREE;
        }
        const cli_command *cmd = find_command(argv[2]);
        if (!cmd)
            return unknown_command(argv[2], true);
        fputs(cmd->usage, stdout);
        return EXIT_AGREE;
    }
    const cli_command *cmd = find_command(name);
    if (!cmd)
        return unknown_command(name, false);
    if (cli_wants_help(cmd, argc - 1, argv + 1))
        return EXIT_AGREE;
    install_sigbus_handler();
    int rc = cmd->run(argc - 1, argv + 1);
    /* A full disk or a closed pipe on stdout must not pass for success. */
    if (fflush(stdout) != 0 || ferror(stdout)) {
        cli_error("cannot write the output: %s", strerror(errno));
        return EXIT_BAD_INPUT;
    }
    return rc;
}
