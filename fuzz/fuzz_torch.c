/*
 * fuzz_torch.c - libFuzzer target for the PyTorch checkpoint reader: the restricted pickle
 * machine, persistent ids, tensor geometry against storage bounds, the strided-view loader and
 * flattening into names.
 *
 * An input that starts with "PK" is a whole checkpoint and is read as it is. Any other input is
 * taken as the pickle itself: it becomes archive/data.pkl of a checkpoint built here, beside
 * storages archive/data/0 to archive/data/15 of 64 bytes each (a 16-float storage, a 32-half
 * storage...). Mutations then land in the pickle instead of in the zip framing, whose reader
 * fuzz_npz covers.
 */
#include <zlib.h>

#include "fuzz_common.h"

#define FUZZ_STORAGES 16
#define FUZZ_STORAGE_BYTES 64

typedef struct zbuf {
    uint8_t *p;
    size_t n, cap;
} zbuf;

static void zput(zbuf *b, const void *d, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 256;
        b->p = realloc(b->p, b->cap);
        if (!b->p)
            fuzz_die("realloc");
    }
    if (n)
        memcpy(b->p + b->n, d, n);
    b->n += n;
}

static void zle(zbuf *b, uint64_t v, int bytes)
{
    uint8_t t[8];
    for (int i = 0; i < bytes; i++)
        t[i] = (uint8_t)(v >> (8 * i));
    zput(b, t, (size_t)bytes);
}

/* One stored member: its local header and data into `b`, its central record into `cd`. */
static void zmember(zbuf *b, zbuf *cd, const char *name, const uint8_t *data, size_t len)
{
    uint32_t crc = (uint32_t)crc32(0L, data, (uInt)len);
    size_t nl = strlen(name);
    uint64_t off = b->n;
    zle(b, 0x04034b50, 4);
    zle(b, 20, 2);
    zle(b, 0, 2);
    zle(b, 0, 2);
    zle(b, 0, 4);
    zle(b, crc, 4);
    zle(b, len, 4);
    zle(b, len, 4);
    zle(b, nl, 2);
    zle(b, 0, 2);
    zput(b, name, nl);
    zput(b, data, len);
    zle(cd, 0x02014b50, 4);
    zle(cd, 20, 2);
    zle(cd, 20, 2);
    zle(cd, 0, 2);
    zle(cd, 0, 2);
    zle(cd, 0, 4);
    zle(cd, crc, 4);
    zle(cd, len, 4);
    zle(cd, len, 4);
    zle(cd, nl, 2);
    zle(cd, 0, 6); /* extra, comment lengths and disk number (2 each) */
    zle(cd, 0, 6); /* internal (2) and external (4) attributes */
    zle(cd, off, 4);
    zput(cd, name, nl);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size >= 2 && data[0] == 'P' && data[1] == 'K') {
        fuzz_run_bytes(data, size);
        return 0;
    }
    if (size > (UINT32_C(1) << 24)) /* zip32 sizes; inputs are far smaller */
        return 0;
    /* storages whose bytes cover finite values, zeros, NaNs and infinities of every width */
    static uint8_t storage[FUZZ_STORAGES][FUZZ_STORAGE_BYTES];
    static int ready;
    if (!ready) {
        for (int s = 0; s < FUZZ_STORAGES; s++)
            for (int i = 0; i < FUZZ_STORAGE_BYTES; i++)
                storage[s][i] = (uint8_t)(s % 4 == 3 ? 0xff : (s * 37 + i * 11) & 0xff);
        ready = 1;
    }
    zbuf b = {0}, cd = {0};
    zmember(&b, &cd, "archive/data.pkl", data, size);
    for (int s = 0; s < FUZZ_STORAGES; s++) {
        char name[32];
        snprintf(name, sizeof name, "archive/data/%d", s);
        zmember(&b, &cd, name, storage[s], FUZZ_STORAGE_BYTES);
    }
    zmember(&b, &cd, "archive/version", (const uint8_t *)"3\n", 2);
    uint64_t cd_off = b.n;
    zput(&b, cd.p, cd.n);
    zle(&b, 0x06054b50, 4);
    zle(&b, 0, 4);
    zle(&b, FUZZ_STORAGES + 2, 2);
    zle(&b, FUZZ_STORAGES + 2, 2);
    zle(&b, cd.n, 4);
    zle(&b, cd_off, 4);
    zle(&b, 0, 2);
    fuzz_run_bytes(b.p, b.n);
    free(b.p);
    free(cd.p);
    return 0;
}
