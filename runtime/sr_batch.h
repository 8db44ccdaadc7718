/* sr_batch: the records one source received for the batch in progress, as
 * contiguous bytes plus offsets. Lua reads a sealed batch through the FFI. */
#ifndef SR_BATCH_H
#define SR_BATCH_H
#include <stddef.h>
#include <stdint.h>

typedef struct sr_batch {
    char *data;        /* record bytes, back to back (public, read-only) */
    uint32_t *off;     /* record i is data[off[i] .. off[i+1]) (read-only) */
    int64_t *pos;      /* record i started at byte pos[i] of its stream */
    size_t n;          /* records (read-only) */
    size_t len;        /* bytes used in data (read-only) */
    size_t cap, ncap;  /* private */
    size_t rsv, nrsv;  /* private: bytes reserved for data, records for off and pos (0: none) */
    size_t max_records, max_bytes; /* the batch is full at either limit */
} sr_batch_t;

/* Heap batch for callers without an embedding struct (the test driver).
 * NULL when out of memory; free with sr_batch_free. */
sr_batch_t *sr_batch_new(size_t max_records, size_t max_bytes);
void sr_batch_free(sr_batch_t *b);
/* Initializes an empty batch with the given limits (0 = no limit). */
void sr_batch_init(sr_batch_t *b, size_t max_records, size_t max_bytes);
/* Releases the batch's memory. */
void sr_batch_close(sr_batch_t *b);
/* Copies one record in. Returns 0 or SR_ENOMEM; never refuses a record for
 * being over the limits: callers check sr_batch_full and stop reading. */
int sr_batch_append(sr_batch_t *b, const char *p, size_t len, int64_t pos);
/* 1 when the batch has reached max_records or max_bytes. */
int sr_batch_full(const sr_batch_t *b);
/* Empties the batch, keeping its memory for the next one. */
void sr_batch_clear(sr_batch_t *b);

#endif
