/* sr_window_split: a keyed window split among workers (SPEC section 15)
 * read as the one window a single worker holds. Worker k's part is two
 * windows of the same times: its slices (the elements of the keys of its
 * partitions) and their orders (element j of an orders slice is the array
 * [order] of element j of the slice: worker * 2^32 + position, the batch's
 * order of first appearance whatever the number of workers). The one
 * window's slice at a time holds every part's elements at that time, by
 * order, their bytes as the parts hold them. The checkpoint writer streams
 * it this way in its forked child, so the loop thread merges nothing. */
#ifndef SR_WINDOW_SPLIT_H
#define SR_WINDOW_SPLIT_H
#include <stddef.h>
#include <stdint.h>

#include "sr_window.h"

typedef struct sr_window_split {
    sr_window_t *const *slices; /* borrowed: per worker, its slices */
    sr_window_t *const *orders; /* borrowed: per worker, their orders */
    int n;                      /* workers: at least 1 */
} sr_window_split_t;

/* The one window's slice i (i < slices[0]->n: the times are worker 0's):
 * its time, byte length and count in *out (out->data is NULL). */
void sr_window_split_slice(const sr_window_split_t *s, size_t i, sr_slice_t *out);

/* Writes the elements of the one window's slice i, by order (a tie: the
 * lower worker first), each through write(ud, bytes, len): out->len bytes
 * in all. Returns 0, SR_EINVAL when a part is malformed (an element or
 * order that does not decode, an order that is no number, a slice and its
 * orders of different counts; write may have been called already), or
 * write's negative return. */
int sr_window_split_emit(const sr_window_split_t *s, size_t i,
                         int (*write)(void *ud, const char *p, size_t n), void *ud);

/* A new window named as worker 0's slices holding the one window's slices.
 * Returns 0 with *out (the caller owns it), or SR_ENOMEM or SR_EINVAL with
 * *out NULL. */
int sr_window_split_merge(const sr_window_split_t *s, sr_window_t **out);

#endif
