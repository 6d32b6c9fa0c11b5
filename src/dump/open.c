/*
 * open.c - opening a dump: the format is found from the file's first bytes, never its name,
 * by trying the probes of the formats table (formats/registry.c) in order; two dumps can be
 * opened at once, the second on a thread of its own.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dump/dump.h"

static nnp_status open_by_content(nnp_dump *d, const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return nnp__fail(NNP_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    bool is_dir = S_ISDIR(st.st_mode);
    unsigned char head[NNP_PROBE_BYTES] = {0};
    size_t got = 0;
    if (!is_dir) {
        /* only a regular file: a FIFO would block the open, a device never end */
        int fd;
        nnp_status s = nnp__open_regular(path, &fd, &st);
        if (s)
            return s;
        ssize_t k;
        while (got < sizeof head && (k = read(fd, head + got, sizeof head - got)) != 0) {
            if (k < 0 && errno == EINTR)
                continue;
            if (k < 0)
                break;
            got += (size_t)k;
        }
        close(fd);
    }
    for (const nnp_format_entry *e = nnp__formats; e->probe; e++)
        if (e->probe(path, head, got, is_dir)) {
            if (e->format)
                nnp__dump_set_format(d, e->format);
            return e->load(d, path);
        }
    return nnp__fail(NNP_ERR_INTERNAL, "%s: no reader took the file", path);
}

nnp_status nnp_dump_open(const char *path, nnp_dump **out)
{
    if (!out)
        return nnp__fail(NNP_ERR_ARG, "nnp_dump_open: no place for the result");
    *out = NULL;
    nnp_dump *d;
    nnp_status st = nnp__dump_new(path, &d);
    return st ? st : nnp__dump_finish(d, open_by_content(d, path), out);
}

typedef struct {
    const char *path;
    nnp_dump *dump;
    nnp_status st;
    char error[1024]; /* the opening thread's message: nnp_last_error is per thread */
} open_job;

static void *open_job_run(void *arg)
{
    open_job *j = arg;
    j->st = nnp_dump_open(j->path, &j->dump);
    if (j->st)
        snprintf(j->error, sizeof j->error, "%s", nnp_last_error());
    return NULL;
}

nnp_status nnp_dump_open_both(const char *first, const char *second, nnp_dump **a, nnp_dump **b)
{
    if (!a || !b)
        return nnp__fail(NNP_ERR_ARG, "nnp_dump_open_both: no place for the results");
    *a = *b = NULL;
    open_job one = {first, NULL, NNP_OK, ""}, two = {second, NULL, NNP_OK, ""};
    pthread_t t;
    /* without a thread (none can start), the same work one after the other */
    bool threaded = pthread_create(&t, NULL, open_job_run, &two) == 0;
    open_job_run(&one);
    if (threaded)
        pthread_join(t, NULL);
    else
        open_job_run(&two);
    const open_job *failed = one.st ? &one : two.st ? &two : NULL;
    if (failed) {
        nnp_dump_close(one.dump);
        nnp_dump_close(two.dump);
        return nnp__fail(failed->st, "%s", failed->error);
    }
    *a = one.dump;
    *b = two.dump;
    return NNP_OK;
}
