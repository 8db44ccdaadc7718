/* sr_loop: the libev event loop that reads the sources and cuts their records
 * into micro-batches. Pull-style: Lua calls sr_loop_next, which runs libev
 * until the batch in progress closes and returns it sealed. */
#ifndef SR_LOOP_H
#define SR_LOOP_H
#include <stddef.h>
#include <stdint.h>

#include "sr_deadletter.h"
#include "sr_source.h"

typedef struct sr_loop sr_loop_t;

typedef struct sr_loop_opts {
    int64_t batch_ms;          /* batch interval */
    size_t max_batch_records;  /* a source's batch closes early at this many */
    size_t max_batch_bytes;    /* ... or this many bytes */
    const char *dead_letter_path; /* NULL or "-": stderr */
    int64_t dead_letter_max_bytes; /* the file rotates at this size (0: never) */
    int dead_letter_keep;          /* ... keeping this many rotated files */
} sr_loop_opts_t;

/* Why sr_loop_next returned. */
typedef struct sr_tick {
    int64_t time_ms;    /* the batch's time (a multiple of the interval) */
    int64_t delay_ms;   /* how late processing starts after time_ms */
    int last;           /* no batch follows: stop signal or input ended */
    int reload;         /* SIGHUP arrived since the last batch */
} sr_tick_t;

/* Creates the loop on libev's default loop and installs SIGINT, SIGTERM and
 * SIGHUP handlers. Returns NULL with a message in err on failure. */
sr_loop_t *sr_loop_new(const sr_loop_opts_t *o, char *err, size_t errlen);
/* Stops and frees every source, then the loop. */
void sr_loop_free(sr_loop_t *l);

/* Starts a source. Returns its index (>= 0), or a negative SR_E* with a
 * message in err. */
int sr_loop_add_source(sr_loop_t *l, const sr_source_opts_t *o, char *err, size_t errlen);
int sr_loop_nsources(const sr_loop_t *l);
/* Borrowed; valid until sr_loop_free. */
sr_source_t *sr_loop_source(sr_loop_t *l, int index);
/* The records source index received for the sealed batch (borrowed until
 * sr_loop_release). */
sr_batch_t *sr_loop_batch(sr_loop_t *l, int index);

/* Lua-side sources (generator, queue) still producing: while set, the loop
 * keeps cutting timed batches even when every C source is done. */
void sr_loop_set_lua_active(sr_loop_t *l, int active);

/* Runs the event loop until the batch in progress closes: its time comes, a
 * source's batch fills (closes early, keeping its time), every source is
 * done, or SIGINT/SIGTERM arrives. Returns 0 or a negative SR_E*. */
int sr_loop_next(sr_loop_t *l, sr_tick_t *t);
/* Empties the sealed batches once Lua has processed them. */
void sr_loop_release(sr_loop_t *l);
/* The time of the next batch (resuming from a checkpoint: the batch after
 * it; batches due while the job was down then follow at once). */
void sr_loop_set_next_time(sr_loop_t *l, int64_t time_ms);
/* 1 when the loop has C sources and every one has delivered all its input
 * (and no Lua-side source is active). */
int sr_loop_all_done(const sr_loop_t *l);
/* Stops a source a reload took out of the job: it reads nothing more and
 * counts as done. */
void sr_loop_remove_source(sr_loop_t *l, int index);
/* Changes the batch interval (a reload), from the next batch on. */
void sr_loop_set_interval(sr_loop_t *l, int64_t batch_ms);
/* Watches a file: when it changes, the next tick has reload set (as on
 * SIGHUP). Returns 0 or SR_ENOMEM. */
int sr_loop_watch(sr_loop_t *l, const char *path);
/* Stops watching every file. */
void sr_loop_unwatch(sr_loop_t *l);
/* Asks for a reload at the next batch boundary, as a watched file's change
 * or SIGHUP does. */
void sr_loop_request_reload(sr_loop_t *l);
/* Waits ms, then takes in signals, with sources holding (they read
 * nothing); returns 1 if SIGINT/SIGTERM arrived. For a job that must not
 * read (its checkpoints keep failing, or its log lost records). */
int sr_loop_wait(sr_loop_t *l, int64_t ms);
/* Asks the loop to stop after the batch in progress (as SIGTERM does). */
void sr_loop_stop(sr_loop_t *l);

/* Borrowed; shared by every source and by Lua for element errors. */
sr_deadletter_t *sr_loop_deadletter(sr_loop_t *l);
/* Records a dead letter found while processing (e.g. invalid JSON);
 * partition: the record's (Kafka), or -1. */
void sr_loop_dead_letter(sr_loop_t *l, const char *source, int32_t partition, int64_t offset,
                         const char *reason, const char *record, size_t len);
uint64_t sr_loop_dead_letters(const sr_loop_t *l);

/* Starts the write-ahead log in dir: from now on every record of a source
 * that cannot be read again is logged as it arrives, and every sealed batch
 * as a marker. Call after adding the sources. Returns 0 or SR_EIO with a
 * message in err. */
int sr_loop_set_wal(sr_loop_t *l, const char *dir, char *err, size_t errlen);
/* A checkpoint is being taken: starts a new log segment; returns its number
 * (0 without a log, or when the segment cannot be written). A rotation
 * that succeeds ends the hold a failed log write started. */
uint64_t sr_loop_wal_rotate(sr_loop_t *l);
/* Whether a log write failed since the last rotation that succeeded: what
 * was read since may not be in the log, so sources hold (the batch in
 * progress closed at the failure) until a checkpoint covers it. */
int sr_loop_wal_failed(const sr_loop_t *l);
/* The checkpoint succeeded: deletes the segments before seq. */
int sr_loop_wal_drop_before(sr_loop_t *l, uint64_t seq);

/* Wall-clock milliseconds since the epoch, as the loop sees them. */
double sr_loop_now_ms(sr_loop_t *l);

#endif
