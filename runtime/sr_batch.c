/* sr_batch: growable record buffer for one source and one batch. */
#include "sr_batch.h"
#include "sr_alloc.h"
#include "sr_error.h"

#include <string.h>

/* Buffers of this many bytes or more are mapped on transparent huge pages
 * (sr_malloc_huge): a batch of a million lines fills tens of MB, which in
 * 4 KiB pages costs a page fault per 4 KiB on its first fill, a tenth of
 * the built-in word count's time. The size a buffer was asked for tells
 * which way it was allocated. */
#define SR__HUGE_FROM ((size_t)4 << 20)

static size_t sr__huge_bytes(size_t n) { return (n + SR_ALLOC_HUGE - 1) & ~(SR_ALLOC_HUGE - 1); }

static void *sr__buf_alloc(size_t n) { return n >= SR__HUGE_FROM ? sr_malloc_huge(sr__huge_bytes(n)) : sr_malloc(n); }

/* Frees a buffer allocated for n bytes. */
static void sr__buf_free(void *p, size_t n)
{
    if (n >= SR__HUGE_FROM) sr_free_huge(p, sr__huge_bytes(n));
    else sr_free(p);
}

/* A buffer of n bytes holding the first used bytes of old (allocated for
 * oldn bytes), or NULL (old is kept). */
static void *sr__buf_grow(void *old, size_t oldn, size_t used, size_t n)
{
    if (n < SR__HUGE_FROM) return sr_realloc(old, n);
    void *p = sr__buf_alloc(n);
    if (!p) return NULL;
    if (used) memcpy(p, old, used);
    if (old) sr__buf_free(old, oldn);
    return p;
}

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
    sr__buf_free(b->data, b->cap);
    sr__buf_free(b->off, (b->ncap + 1) * sizeof(*b->off));
    sr__buf_free(b->pos, b->ncap * sizeof(*b->pos));
    memset(b, 0, sizeof(*b));
}

static int sr__batch_grow_records(sr_batch_t *b)
{
    size_t ncap = b->ncap ? b->ncap * 2 : 256;
    size_t offn = (ncap + 1) * sizeof(uint32_t), posn = ncap * sizeof(int64_t);
    if (posn < SR__HUGE_FROM) {
        uint32_t *off = sr_realloc(b->off, offn);
        if (!off) return SR_ENOMEM;
        b->off = off;
        int64_t *pos = sr_realloc(b->pos, posn);
        if (!pos) return SR_ENOMEM; /* (off is larger than it needs: harmless) */
        b->pos = pos;
    } else {
        /* Both moved or neither: the sizes freed are told by ncap. */
        uint32_t *off = sr__buf_alloc(offn);
        int64_t *pos = sr__buf_alloc(posn);
        if (!off || !pos) {
            sr__buf_free(off, offn);
            sr__buf_free(pos, posn);
            return SR_ENOMEM;
        }
        memcpy(off, b->off, (b->ncap + 1) * sizeof(*off));
        memcpy(pos, b->pos, b->ncap * sizeof(*pos));
        sr__buf_free(b->off, (b->ncap + 1) * sizeof(*off));
        sr__buf_free(b->pos, b->ncap * sizeof(*pos));
        b->off = off;
        b->pos = pos;
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
        char *data = sr__buf_grow(b->data, b->cap, b->len, cap);
        if (!data) return SR_ENOMEM;
        b->data = data;
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
