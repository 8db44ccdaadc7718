/* sr_batch: growable record buffer for one source and one batch. */
#include "sr_batch.h"
#include "sr_alloc.h"
#include "sr_error.h"

#include <string.h>

/* Buffers of this many bytes or more live in a reservation of address
 * space (sr_reserve) that they grow into without moving: grown by copying
 * into ever larger blocks, the first batches of a job zeroed and copied
 * three times the bytes they hold (a third of the reading thread's time
 * in the built-in word count on 2 workers). Where the system refuses the
 * address space, blocks of the size asked for, grown by copying. */
#define SR__RESERVE_FROM ((size_t)4 << 20)
/* The reservations: twice a batch's limits (a batch stops one record or
 * read past them), or without a limit, what its offsets can address
 * (UINT32_MAX bytes) and 2^28 records; past them, a buffer moves to a
 * reservation four times as large. */
#define SR__RESERVE_BYTES (SIZE_MAX > UINT32_MAX ? (size_t)UINT32_MAX + 1 : (size_t)1 << 30)
#define SR__RESERVE_RECORDS ((size_t)1 << 28)

/* Bytes to reserve for a batch's data of at least n bytes, records for
 * at least n records. */
static size_t sr__want_bytes(const sr_batch_t *b, size_t n)
{
    size_t r = b->max_bytes && b->max_bytes < SR__RESERVE_BYTES / 2 ? 2 * b->max_bytes : SR__RESERVE_BYTES;
    while (r < n) r *= 4;
    return r;
}

static size_t sr__want_records(const sr_batch_t *b, size_t n)
{
    size_t r = b->max_records && b->max_records < SR__RESERVE_RECORDS / 2 ? 2 * b->max_records : SR__RESERVE_RECORDS;
    while (r < n) r *= 4;
    return r;
}

/* n rounded up to a size reservations are made in (whole pages). */
static size_t sr__rsv_bytes(size_t n) { return (n + SR__RESERVE_FROM - 1) & ~(SR__RESERVE_FROM - 1); }

/* Frees a buffer allocated for n bytes within rsv bytes reserved (0: a
 * block of its size). */
static void sr__buf_free(void *p, size_t n, size_t rsv)
{
    if (rsv) sr_free_reserved(p, rsv, n);
    else sr_free(p);
}

/* A buffer of n bytes within *rsv bytes reserved (want, rounded up), or
 * where refused (*rsv = 0) allocated to size; NULL when out of memory. */
static void *sr__buf_reserve(size_t n, size_t want, size_t *rsv)
{
    size_t max = sr__rsv_bytes(want > n ? want : n);
    void *p = sr_reserve(max, n);
    *rsv = p ? max : 0;
    return p ? p : sr_malloc(n);
}

/* The records' arrays reserved for r records. */
static size_t sr__off_rsv(size_t r) { return r ? sr__rsv_bytes((r + 1) * sizeof(uint32_t)) : 0; }
static size_t sr__pos_rsv(size_t r) { return r ? sr__rsv_bytes(r * sizeof(int64_t)) : 0; }

void sr_batch_init(sr_batch_t *b, size_t max_records, size_t max_bytes)
{
    memset(b, 0, sizeof(*b));
    b->max_records = max_records;
    b->max_bytes = max_bytes;
}

sr_batch_t *sr_batch_new(size_t max_records, size_t max_bytes)
{
    sr_batch_t *b = sr_malloc(sizeof(*b));
    if (b) sr_batch_init(b, max_records, max_bytes);
    return b;
}

void sr_batch_free(sr_batch_t *b)
{
    if (!b) return;
    sr_batch_close(b);
    sr_free(b);
}

void sr_batch_close(sr_batch_t *b)
{
    sr__buf_free(b->data, b->cap, b->rsv);
    sr__buf_free(b->off, (b->ncap + 1) * sizeof(*b->off), sr__off_rsv(b->nrsv));
    sr__buf_free(b->pos, b->ncap * sizeof(*b->pos), sr__pos_rsv(b->nrsv));
    memset(b, 0, sizeof(*b));
}

static int sr__batch_grow_records(sr_batch_t *b)
{
    size_t ncap = b->ncap ? b->ncap * 2 : 256;
    size_t offn = (ncap + 1) * sizeof(uint32_t), posn = ncap * sizeof(int64_t);
    size_t oldoff = (b->ncap + 1) * sizeof(uint32_t), oldpos = b->ncap * sizeof(int64_t);
    if (ncap <= b->nrsv) {
        if (sr_reserve_grow(b->off, oldoff, offn) != 0) return SR_ENOMEM;
        if (sr_reserve_grow(b->pos, oldpos, posn) != 0) {
            sr_reserve_grow(b->off, offn, oldoff);
            return SR_ENOMEM;
        }
    } else if (posn < SR__RESERVE_FROM) {
        uint32_t *off = sr_realloc(b->off, offn);
        if (!off) return SR_ENOMEM;
        b->off = off;
        int64_t *pos = sr_realloc(b->pos, posn);
        if (!pos) return SR_ENOMEM; /* (off is larger than it needs: harmless) */
        b->pos = pos;
    } else {
        /* Both moved or neither, into reservations for r records or, where
         * refused, blocks of their size: the sizes freed are told by ncap
         * and nrsv. */
        size_t r = sr__want_records(b, ncap), offr, posr;
        uint32_t *off = sr__buf_reserve(offn, sr__off_rsv(r), &offr);
        int64_t *pos = sr__buf_reserve(posn, sr__pos_rsv(r), &posr);
        if (off && pos && !offr != !posr) {
            /* One reservation refused: both to size. */
            if (offr) {
                sr_free_reserved(off, offr, offn);
                off = sr_malloc(offn);
            } else {
                sr_free_reserved(pos, posr, posn);
                pos = sr_malloc(posn);
            }
            offr = posr = 0;
        }
        if (!off || !pos) {
            sr__buf_free(off, offn, offr);
            sr__buf_free(pos, posn, posr);
            return SR_ENOMEM;
        }
        memcpy(off, b->off, oldoff);
        memcpy(pos, b->pos, oldpos);
        sr__buf_free(b->off, oldoff, sr__off_rsv(b->nrsv));
        sr__buf_free(b->pos, oldpos, sr__pos_rsv(b->nrsv));
        b->off = off;
        b->pos = pos;
        b->nrsv = offr ? r : 0;
    }
    if (b->ncap == 0) b->off[0] = 0;
    b->ncap = ncap;
    return SR_OK;
}

int sr_batch_append(sr_batch_t *b, const char *p, size_t len, int64_t pos)
{
    if (b->len + len > UINT32_MAX) return SR_ENOMEM;
    if (b->n == b->ncap && sr__batch_grow_records(b) < 0) return SR_ENOMEM;
    if (b->len + len > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + len) cap *= 2;
        if (cap <= b->rsv) {
            if (sr_reserve_grow(b->data, b->cap, cap) != 0) return SR_ENOMEM;
        } else if (cap < SR__RESERVE_FROM) {
            char *data = sr_realloc(b->data, cap);
            if (!data) return SR_ENOMEM;
            b->data = data;
        } else {
            size_t rsv;
            char *data = sr__buf_reserve(cap, sr__want_bytes(b, cap), &rsv);
            if (!data) return SR_ENOMEM;
            if (b->len) memcpy(data, b->data, b->len);
            sr__buf_free(b->data, b->cap, b->rsv);
            b->data = data;
            b->rsv = rsv;
        }
        b->cap = cap;
    }
    if (len) memcpy(b->data + b->len, p, len); /* (data is NULL before the first byte) */
    b->pos[b->n] = pos;
    b->len += len;
    b->n++;
    b->off[b->n] = (uint32_t)b->len;
    return SR_OK;
}

int sr_batch_full(const sr_batch_t *b)
{
    return (b->max_records && b->n >= b->max_records) ||
           (b->max_bytes && b->len >= b->max_bytes);
}

void sr_batch_clear(sr_batch_t *b)
{
    b->n = 0;
    b->len = 0;
}
