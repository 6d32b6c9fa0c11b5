/*
 * nnparity_mpi.c - the MPI transport of `nnparity diff --mpi`, built apart with mpicc into
 * libnnparity_mpi.so (only where mpicc is found). The nnparity command loads it with dlopen
 * when --mpi asks for it, so the command and the library never depend on MPI; this file fills
 * an nnp_comm (include/nnparity.h) with MPI_COMM_WORLD's rank, size, gather and broadcast.
 *
 * MPI's counts are ints: one process's results must stay below 2 GiB (they are a few hundred
 * bytes per chunk of 4 MiB compared, so that is a dump of many TiB per process).
 */
#include <limits.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

#include "nnparity.h"

static int mpi_gather(void *ctx, const void *send, uint64_t n, void **all, uint64_t *lens)
{
    (void)ctx;
    int rank, size;
    *all = NULL;
    if (MPI_Comm_rank(MPI_COMM_WORLD, &rank) || MPI_Comm_size(MPI_COMM_WORLD, &size))
        return 1;
    unsigned long long mine = n;
    unsigned long long *counts = rank == 0 ? calloc((size_t)size, sizeof *counts) : NULL;
    int *icounts = rank == 0 ? calloc((size_t)size, sizeof *icounts) : NULL;
    int *displs = rank == 0 ? calloc((size_t)size, sizeof *displs) : NULL;
    /* every process takes part in both steps, even one that failed: the others would wait */
    int bad = rank == 0 && (!counts || !icounts || !displs);
    int rc = MPI_Gather(&mine, 1, MPI_UNSIGNED_LONG_LONG, counts, 1, MPI_UNSIGNED_LONG_LONG, 0,
                        MPI_COMM_WORLD);
    unsigned long long total = 0;
    for (int r = 0; rank == 0 && !bad && r < size; r++) {
        if (counts[r] > INT_MAX || total + counts[r] > INT_MAX)
            bad = 1;
        displs[r] = (int)total;
        icounts[r] = (int)counts[r];
        lens[r] = counts[r];
        total += counts[r];
    }
    unsigned char *buf = rank == 0 && !bad ? malloc(total ? total : 1) : NULL;
    bad = bad || (rank == 0 && !buf);
    /* a root that cannot receive still gathers nothing with everyone, then says it failed */
    int dummy = 0;
    if (rank == 0 && bad) {
        for (int r = 0; icounts && displs && r < size; r++)
            icounts[r] = displs[r] = 0;
    }
    rc |= MPI_Gatherv(send, n <= INT_MAX && !(rank == 0 && bad) ? (int)n : 0, MPI_BYTE,
                      buf ? (void *)buf : (void *)&dummy, icounts ? icounts : &dummy,
                      displs ? displs : &dummy, MPI_BYTE, 0, MPI_COMM_WORLD);
    free(counts);
    free(icounts);
    free(displs);
    if (rc || bad || n > INT_MAX) {
        free(buf);
        return 1;
    }
    *all = buf;
    return 0;
}

static int mpi_bcast(void *ctx, void *buf, uint64_t n)
{
    (void)ctx;
    if (n > INT_MAX)
        return 1;
    return MPI_Bcast(buf, (int)n, MPI_BYTE, 0, MPI_COMM_WORLD) != MPI_SUCCESS;
}

/* Start MPI and fill *out; 0, or non-zero with the reason in err. */
int nnp_mpi_open(nnp_comm *out, char *err, size_t errlen)
{
    int inited = 0;
    MPI_Initialized(&inited);
    if (!inited && MPI_Init(NULL, NULL) != MPI_SUCCESS) {
        snprintf(err, errlen, "MPI_Init failed");
        return 1;
    }
    /* failures come back as codes, for the caller to agree on, instead of ending the job */
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    if (MPI_Comm_rank(MPI_COMM_WORLD, &out->rank) || MPI_Comm_size(MPI_COMM_WORLD, &out->size)) {
        snprintf(err, errlen, "MPI_COMM_WORLD has no rank or size");
        return 1;
    }
    out->ctx = NULL;
    out->gather = mpi_gather;
    out->bcast = mpi_bcast;
    return 0;
}

void nnp_mpi_close(void)
{
    int done = 0;
    MPI_Finalized(&done);
    if (!done)
        MPI_Finalize();
}
