/*
 * ranks.c - a capture made by the processes of one distributed run (tensor or pipeline
 * parallel), read as one dump. Each rank wrote "rank-RRRRR-of-NNNNN.safetensors" into one
 * directory (capture.c); this reader finds those files, refuses a set with a rank missing, and
 * settles the two things that the ranks' files do not say by themselves (docs/scale.md):
 *
 *   names  a name that one rank alone holds (a pipeline stage's layers) keeps its name; a name
 *          that several ranks hold (tensor-parallel shards, replicated layers) reads as
 *          "<name>@rank<R>" on each, and the diff's `gather` rules join those copies;
 *   order  each rank's own order is kept, and the ranks' records are merged by call index: the
 *          next record is, among each rank's next one, the one with the lowest call index, the
 *          lowest rank on ties. Pipeline stage k's records of a micro-batch so come after stage
 *          k-1's and before the next micro-batch's, as in the single-process run.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "formats/formats.h"

/* Digits at *p into *v (at most 9 of them); false when there are none or too many. */
static bool digits(const char **p, uint32_t *v)
{
    const char *s = *p;
    uint32_t x = 0;
    size_t n = 0;
    while (s[n] >= '0' && s[n] <= '9') {
        if (n == 9)
            return false;
        x = x * 10 + (uint32_t)(s[n] - '0');
        n++;
    }
    *p = s + n;
    *v = x;
    return n > 0;
}

bool nnp__rank_file_name(const char *name, uint32_t *rank, uint32_t *world)
{
    const char *p = name;
    if (strncmp(p, "rank-", 5) != 0)
        return false;
    p += 5;
    if (!digits(&p, rank) || strncmp(p, "-of-", 4) != 0)
        return false;
    p += 4;
    return digits(&p, world) && strcmp(p, ".safetensors") == 0;
}

static char *join(const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name);
    char *p = malloc(a + b + 2);
    if (p) {
        memcpy(p, dir, a);
        p[a] = '/';
        memcpy(p + a + 1, name, b + 1);
    }
    return p;
}

/* The refusal for a set that lacks `rank`: it names the file, and a partial capture of it that
 * a killed rank left behind. */
static nnp_status missing_rank(const char *dir, uint32_t rank, uint32_t world)
{
    char name[64], partial[80];
    snprintf(name, sizeof name, "rank-%05u-of-%05u.safetensors", rank, world);
    snprintf(partial, sizeof partial, "%s.partial", name);
    char *p = join(dir, partial);
    struct stat st;
    bool left = p && stat(p, &st) == 0;
    free(p);
    return nnp__fail(NNP_ERR_FORMAT, "%s: a capture of %u ranks, but rank %u's file %s is "
                     "missing%s", dir, world, rank, name,
                     left ? " (a partial one is there: `nnparity recover` finishes it)" : "");
}

typedef struct {
    const char *name; /* the stored name, "@rank<R>" included */
    size_t len;       /* without it */
    int32_t rank;
    size_t rec;
} base_name;

static int by_base(const void *pa, const void *pb)
{
    const base_name *a = pa, *b = pb;
    size_t n = a->len < b->len ? a->len : b->len;
    int c = memcmp(a->name, b->name, n);
    if (c)
        return c;
    if (a->len != b->len)
        return a->len < b->len ? -1 : 1;
    return a->rank < b->rank ? -1 : a->rank > b->rank;
}

/* The length of a stored name without the "@rank<R>" that reading appended. */
static int suffixless(const char *stored, int32_t rank)
{
    char suffix[24];
    int k = snprintf(suffix, sizeof suffix, "@rank%d", (int)rank);
    return (int)(strlen(stored) - (size_t)k);
}

typedef struct {
    const char *name; /* a record's name before settling (the string, by address) */
    size_t rec;
} old_name;

static int by_address(const void *pa, const void *pb)
{
    uintptr_t a = (uintptr_t)((const old_name *)pa)->name;
    uintptr_t b = (uintptr_t)((const old_name *)pb)->name;
    return a < b ? -1 : a > b;
}

/* A record stored as another's tensor (same_as) names that record by the string of its name
 * (dump.c); once settling renamed it, point same_as at the new name. old[i] is record i's name
 * before settling; it is sorted here. */
static void rename_same_as(nnp_rec *recs, size_t n, old_name *old)
{
    qsort(old, n, sizeof *old, by_address);
    for (size_t i = 0; i < n; i++) {
        if (!recs[i].same_as)
            continue;
        old_name key = {recs[i].same_as, 0};
        const old_name *src = bsearch(&key, old, n, sizeof *old, by_address);
        if (src)
            recs[i].same_as = recs[src->rec].pub.name;
    }
}

/* A name that one rank alone holds loses its "@rank<R>". */
static nnp_status settle_names(nnp_dump *d)
{
    size_t n;
    nnp_rec *recs = nnp__dump_recs(d, &n);
    base_name *b = malloc((n ? n : 1) * sizeof *b);
    old_name *old = malloc((n ? n : 1) * sizeof *old);
    if (!b || !old) {
        free(b);
        free(old);
        return nnp__nomem();
    }
    for (size_t i = 0; i < n; i++)
        old[i] = (old_name){recs[i].pub.name, i};
    for (size_t i = 0; i < n; i++) {
        char suffix[24];
        int k = snprintf(suffix, sizeof suffix, "@rank%d", (int)recs[i].pub.rank);
        size_t len = strlen(recs[i].pub.name);
        b[i] = (base_name){recs[i].pub.name, len - (size_t)k, recs[i].pub.rank, i};
    }
    qsort(b, n, sizeof *b, by_base);
    for (size_t i = 0; i < n;) {
        size_t j = i + 1;
        while (j < n && b[j].len == b[i].len && memcmp(b[j].name, b[i].name, b[i].len) == 0)
            j++;
        if (j == i + 1) {
            char *plain = nnp__dump_strndup(d, b[i].name, b[i].len);
            if (!plain) {
                free(b);
                free(old);
                return nnp__nomem();
            }
            recs[b[i].rec].pub.name = plain;
        }
        i = j;
    }
    rename_same_as(recs, n, old);
    free(b);
    free(old);
    return NNP_OK;
}

typedef struct {
    const char *name;
    size_t rec;
} final_name;

static int by_final_name(const void *pa, const void *pb)
{
    const final_name *a = pa, *b = pb;
    int c = strcmp(a->name, b->name);
    return c ? c : a->rec < b->rec ? -1 : a->rec > b->rec;
}

/* Settling can make two records one name: rank 0's "x@rank1", which no other rank holds, keeps
 * that name, and so does rank 1's copy of an "x" that rank 0 holds too. A dump's records are
 * found by name, so such a set is refused, naming both records, their files and the rule.
 * `files[r]` is rank r's file name; `stored[i]` record i's name before settling, "@rank<R>"
 * included. */
static nnp_status refuse_clashes(nnp_dump *d, const char *dir, char *const *files,
                                 const char *const *stored)
{
    size_t n;
    nnp_rec *recs = nnp__dump_recs(d, &n);
    final_name *f = malloc((n ? n : 1) * sizeof *f);
    if (!f)
        return nnp__nomem();
    for (size_t i = 0; i < n; i++)
        f[i] = (final_name){recs[i].pub.name, i};
    qsort(f, n, sizeof *f, by_final_name);
    nnp_status st = NNP_OK;
    for (size_t i = 1; i < n && !st; i++) {
        if (strcmp(f[i - 1].name, f[i].name) != 0)
            continue;
        const nnp_rec *a = &recs[f[i - 1].rec], *b = &recs[f[i].rec];
        if (a->pub.rank > b->pub.rank) {
            const nnp_rec *t = a;
            a = b;
            b = t;
        }
        size_t ia = (size_t)(a - recs), ib = (size_t)(b - recs);
        st = nnp__fail(NNP_ERR_FORMAT, "%s: rank %d's record '%.*s' (%s) and rank %d's record "
                       "'%.*s' (%s) would both read as '%s': a name that several ranks hold reads "
                       "as \"<name>@rank<R>\" on each, so no record may be named like another "
                       "rank's copy (rename it before capturing)", dir, (int)a->pub.rank,
                       suffixless(stored[ia], a->pub.rank), stored[ia], files[a->pub.rank],
                       (int)b->pub.rank, suffixless(stored[ib], b->pub.rank), stored[ib],
                       files[b->pub.rank], a->pub.name);
    }
    free(f);
    return st;
}

typedef struct {
    uint64_t seq, order;
    size_t rec;
} rank_pos;

static int by_rank_order(const void *pa, const void *pb)
{
    const rank_pos *a = pa, *b = pb;
    if (a->seq != b->seq)
        return a->seq < b->seq ? -1 : 1;
    return a->order < b->order ? -1 : a->order > b->order;
}

/* The heap of ranks still holding records, keyed by (call of their next record, rank). */
typedef struct {
    const nnp_rec *recs;
    const rank_pos *pos;
    size_t *next, *end; /* per rank: its next position in pos, and its end */
    uint32_t *heap;
    size_t n;
} merge;

static bool before(const merge *m, uint32_t a, uint32_t b)
{
    uint64_t ca = m->recs[m->pos[m->next[a]].rec].pub.call;
    uint64_t cb = m->recs[m->pos[m->next[b]].rec].pub.call;
    return ca != cb ? ca < cb : a < b;
}

static void sift_down(merge *m, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, s = i;
        if (l < m->n && before(m, m->heap[l], m->heap[s]))
            s = l;
        if (r < m->n && before(m, m->heap[r], m->heap[s]))
            s = r;
        if (s == i)
            return;
        uint32_t t = m->heap[i];
        m->heap[i] = m->heap[s];
        m->heap[s] = t;
        i = s;
    }
}

/* Give every record its place in the merged order (see the top of the file) as its seq. */
static nnp_status merge_order(nnp_dump *d, uint32_t world)
{
    size_t n;
    nnp_rec *recs = nnp__dump_recs(d, &n);
    rank_pos *pos = malloc((n ? n : 1) * sizeof *pos);
    size_t *next = calloc(world, sizeof *next), *end = calloc(world, sizeof *end);
    uint32_t *heap = malloc(world * sizeof *heap);
    nnp_status st = pos && next && end && heap ? NNP_OK : nnp__nomem();
    if (!st) {
        /* records come rank after rank: each rank's run, in its own recorded order */
        for (size_t i = 0; i < n; i++) {
            pos[i] = (rank_pos){recs[i].has_meta_seq ? recs[i].meta_seq : UINT64_MAX,
                                recs[i].file_order, i};
            end[recs[i].pub.rank] = i + 1;
        }
        size_t at = 0;
        for (uint32_t r = 0; r < world; r++) {
            next[r] = at;
            end[r] = end[r] > at ? end[r] : at;
            qsort(pos + next[r], end[r] - next[r], sizeof *pos, by_rank_order);
            at = end[r];
        }
        merge m = {recs, pos, next, end, heap, 0};
        for (uint32_t r = 0; r < world; r++)
            if (next[r] < end[r])
                heap[m.n++] = r;
        for (size_t i = m.n / 2; i-- > 0;)
            sift_down(&m, i);
        for (uint64_t seq = 0; m.n; seq++) {
            uint32_t r = heap[0];
            nnp_rec *rec = &recs[pos[next[r]].rec];
            rec->meta_seq = seq;
            rec->has_meta_seq = true;
            if (++next[r] == end[r])
                heap[0] = heap[--m.n];
            sift_down(&m, 0);
        }
    }
    free(pos);
    free(next);
    free(end);
    free(heap);
    return st;
}

nnp_status nnp__ranks_load_dir(nnp_dump *d, const char *dir, char *const *names, size_t n,
                               bool *handled)
{
    *handled = false;
    size_t nranked = 0, first = 0, other = n;
    uint32_t rank, world = 0, w;
    for (size_t i = 0; i < n; i++) {
        if (!nnp__rank_file_name(names[i], &rank, &w)) {
            other = other < n ? other : i;
            continue;
        }
        if (!nranked++) {
            first = i;
            world = w;
        }
        if (w != world)
            return nnp__fail(NNP_ERR_FORMAT, "%s: rank files of different runs: %s is one of %u "
                             "ranks, %s one of %u (remove the older run's files)", dir,
                             names[first], world, names[i], w);
        if (rank >= w)
            return nnp__fail(NNP_ERR_FORMAT, "%s: %s: rank %u of %u ranks does not exist", dir,
                             names[i], rank, w);
    }
    if (!nranked)
        return NNP_OK;
    *handled = true;
    if (other < n)
        return nnp__fail(NNP_ERR_FORMAT, "%s: holds the rank files of a capture and also %s: a "
                         "capture directory holds one run's rank-R-of-N files only", dir,
                         names[other]);
    if (world > nranked) { /* a rank is missing: say which (ranks are few, names sorted) */
        for (uint32_t r = 0;; r++) {
            bool found = false;
            for (size_t i = 0; i < n && !found; i++)
                found = nnp__rank_file_name(names[i], &rank, &w) && rank == r;
            if (!found)
                return missing_rank(dir, r, world);
        }
    }
    size_t *by_rank = malloc(world * sizeof *by_rank);
    if (!by_rank)
        return nnp__nomem();
    for (uint32_t r = 0; r < world; r++)
        by_rank[r] = SIZE_MAX;
    nnp_status st = NNP_OK;
    for (size_t i = 0; i < n && !st; i++) {
        nnp__rank_file_name(names[i], &rank, &w);
        if (by_rank[rank] != SIZE_MAX)
            st = nnp__fail(NNP_ERR_FORMAT, "%s: rank %u has two files, %s and %s", dir, rank,
                           names[by_rank[rank]], names[i]);
        by_rank[rank] = i;
    }
    for (uint32_t r = 0; r < world && !st; r++) {
        if (by_rank[r] == SIZE_MAX) {
            st = missing_rank(dir, r, world);
            break;
        }
        char *path = join(dir, names[by_rank[r]]);
        if (!path) {
            st = nnp__nomem();
            break;
        }
        nnp__dump_next_file(d);
        nnp__dump_set_rank(d, (int32_t)r, world);
        st = nnp__safetensors_load(d, path);
        free(path);
    }
    nnp__dump_set_rank(d, -1, 0);
    /* the names as read, kept for the refusal of a clash (settling re-points them) */
    size_t nrecs = 0;
    const char **stored = NULL;
    char **files = NULL;
    if (!st) {
        nnp_rec *recs = nnp__dump_recs(d, &nrecs);
        stored = malloc((nrecs ? nrecs : 1) * sizeof *stored);
        files = malloc(world * sizeof *files);
        if (!stored || !files)
            st = nnp__nomem();
        for (size_t i = 0; !st && i < nrecs; i++)
            stored[i] = recs[i].pub.name;
        for (uint32_t r = 0; !st && r < world; r++)
            files[r] = names[by_rank[r]];
    }
    if (!st)
        st = settle_names(d);
    if (!st)
        st = refuse_clashes(d, dir, files, stored);
    free(stored);
    free(files);
    free(by_rank);
    if (!st)
        st = merge_order(d, world);
    char count[16];
    snprintf(count, sizeof count, "%u", world);
    if (!st)
        st = nnp__dump_add_meta(d, "nnparity.world_size", count);
    if (!st)
        nnp__dump_set_format(d, "safetensors-ranks");
    return st;
}
