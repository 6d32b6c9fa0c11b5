/*
 * cmd_recover.c - `nnparity recover`: finish a dump whose writer was killed or ran out of disk.
 */
#include <string.h>

#include "cli.h"

static const char recover_usage[] =
    "usage: nnparity recover FILE\n"
    "\n"
    "Finish a capture that did not end normally. A capture is written to FILE.partial, with\n"
    "FILE.journal listing each record once its data is on disk; when the process is killed or\n"
    "the disk fills, both stay behind. recover keeps every complete record, writes the real\n"
    "header, renames FILE.partial to FILE and removes the journal. FILE may name the .partial.\n"
    "(nnparity ls and stats also read FILE.partial as it is.)\n"
    "\n"
    "  -h   this help\n"
    "\n"
    "examples:\n"
    "  nnparity recover port.safetensors\n"
    "  nnparity recover port.safetensors.partial\n";

static int run_recover(int argc, char **argv)
{
    static const struct option opts[] = {{0, 0, 0, 0}};
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) != -1)
        return cli_option_error(&cli_recover, opts, c, argc, argv);
    argc -= optind - 1;
    argv += optind - 1;
    if (argc != 2)
        return cli_usage_error(&cli_recover, argc < 2 ? "no FILE given" : "one FILE at a time");
    size_t n;
    nnp_status st = nnp_recover(argv[1], &n);
    if (st)
        return cli_fail(st);
    printf("recovered %zu %s\n", n, cli_plural(n, "record", "records"));
    return EXIT_AGREE;
}

const cli_command cli_recover = {"recover", "finish a capture left by a killed or failed run",
                                 recover_usage, run_recover};
