/* sr_window: the slices of one windowed stage, owned by C so checkpoints and
 * reloads keep them. A slice is one batch's contribution to the window, as
 * msgpack bytes: per-key partial aggregates for the reducing windows, the
 * raw elements for window(). Slices are kept oldest first in a ring. */
#ifndef SR_WINDOW_H
#define SR_WINDOW_H
#include <stddef.h>
#include <stdint.h>

typedef struct sr_slice {
    int64_t time_ms; /* the batch's time */
    char *data;      /* owned: count msgpack objects back to back */
    size_t len;
    uint32_t count;
} sr_slice_t;

typedef struct sr_window {
    char *name;         /* read-only: the stage's name */
    sr_slice_t *ring;   /* private */
    size_t cap, head;   /* private */
    size_t n;           /* read-only: slices held */
    size_t data_bytes;  /* read-only: bytes of all slices */
} sr_window_t;

/* A new window with no slices; NULL when out of memory. */
sr_window_t *sr_window_new(const char *name);
void sr_window_free(sr_window_t *w);
/* Appends a slice (copying its bytes); times must increase. Returns 0,
 * SR_EINVAL for a time not after the newest slice's, or SR_ENOMEM. */
int sr_window_push(sr_window_t *w, int64_t time_ms, const char *data, size_t len, uint32_t count);
/* The i-th oldest slice (i < n); borrowed until the window changes. */
const sr_slice_t *sr_window_slice(const sr_window_t *w, size_t i);
/* Drops the slices whose time is <= time_ms. */
void sr_window_drop_until(sr_window_t *w, int64_t time_ms);
/* Bytes of memory the window holds. */
size_t sr_window_memory(const sr_window_t *w);

#endif
