/* sr_readahead: a thread that cuts the next batch of a file's lines while
 * the loop thread's batch is processed (a text_file that is the only
 * source of a job on two or more workers). The batch it hands over is exactly the one the loop thread
 * would have read: same records, positions and dead letters, delivered at
 * the same point. */
#ifndef SR_READAHEAD_H
#define SR_READAHEAD_H
#include <stddef.h>
#include <stdint.h>

#include "sr_batch.h"

struct ev_loop;
typedef struct sr_readahead sr_readahead_t;

/* A dead letter of a batch taken, handed over as the loop thread would
 * have sent it. */
typedef void (*sr_readahead_dead_fn)(void *ud, int64_t pos, const char *reason, const char *data, size_t len);

/* Starts a thread reading fd from its current offset, which is byte
 * start_pos of the file, into batches limited as like is (max_records,
 * max_bytes), lines longer than max_line being dead letters. ready(ud)
 * runs on the loop thread (an ev_async on ev) when a batch is ready to be
 * taken. Returns NULL when out of memory or no thread starts (the caller
 * then reads on the loop thread). fd stays the caller's: close it after
 * sr_readahead_free. */
sr_readahead_t *sr_readahead_start(struct ev_loop *ev, int fd, const sr_batch_t *like, size_t max_line,
                                   int64_t start_pos, void (*ready)(void *ud), void *ud);

/* On the loop thread: when the next batch is ready, swaps it into *b (which
 * must be empty: its buffers become the thread's for the batch after),
 * sends its dead letters through dead(ud, ...) in the order read, sets
 * *end_pos to the byte after its last line and *eof when the file ended
 * with it, and returns 1. Returns 0 when it is not ready yet (ready is
 * called when it is) or b is not empty. */
int sr_readahead_take(sr_readahead_t *ra, sr_batch_t *b, sr_readahead_dead_fn dead, void *ud,
                      int64_t *end_pos, int *eof);

/* On the loop thread: stops the thread (it stops between two reads), joins
 * it and frees what it read and did not hand over. */
void sr_readahead_free(sr_readahead_t *ra);

#endif
