/* sr_batch: growable record buffer for one source and one batch. */
#include "sr_batch.h"
#include "sr_alloc.h"
#include "sr_error.h"

#include <string.h>

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
    sr_free(b->data);
    sr_free(b->off);
    sr_free(b->pos);
    memset(b, 0, sizeof(*b));
}

static int sr__batch_grow_records(sr_batch_t *b)
{
    size_t ncap = b->ncap ? b->ncap * 2 : 256;
    uint32_t *off = sr_realloc(b->off, (ncap + 1) * sizeof(*off));
    if (!off) return SR_ENOMEM;
    b->off = off;
    int64_t *pos = sr_realloc(b->pos, ncap * sizeof(*pos));
    if (!pos) return SR_ENOMEM;
    b->pos = pos;
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
        char *data = sr_realloc(b->data, cap);
        if (!data) return SR_ENOMEM;
        b->data = data;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, len);
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
