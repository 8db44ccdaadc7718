/* sr_source: the interface every C source implements (one registration
 * struct per kind, like Fluent Bit's input plugins, with the traits the rest
 * of the runtime reads), the ingest interface through which a source reports
 * to whoever runs it, and the helpers sources use to hand it lines and dead
 * letters. */
#ifndef SR_SOURCE_H
#define SR_SOURCE_H
#include <stddef.h>
#include <stdint.h>

#include "sr_batch.h"
#include "sr_deadletter.h"
#include "sr_linesplit.h"

struct ev_loop;
typedef struct sr_source sr_source_t;

/* What a job script asked for; strings are borrowed for the call only. */
typedef struct sr_source_opts {
    const char *kind;     /* "socket_text", "listen_text", "text_file", ... */
    const char *name;     /* stage name, e.g. "lines" */
    const char *host;     /* socket_text, listen_text */
    int port;             /* socket_text, listen_text */
    const char *path;     /* text_file, text_dir, tail */
    size_t max_line;      /* longer lines are dead letters; 0 = 1 MiB */
    int from_start;       /* tail: read the existing content first */
    int max_connections;  /* listen_text: producers at once; 0 = 1024 */
    int64_t start_offset; /* text_file, tail, text_dir: resume at this byte (a checkpoint's) */
    uint64_t start_inode; /* ... if the file is still this one */
    const char *start_file;        /* text_dir: the file to resume (at start_offset) */
    const char *const *done_files; /* text_dir: names of the files it is done with */
    size_t ndone;
    const char *const *kv;         /* kind-specific settings: nkv pairs kv[2i] = kv[2i+1] (kafka) */
    size_t nkv;
    int read_ahead;       /* text_file: a thread cuts the next batch while one is processed */
} sr_source_opts_t;

/* Where a source stands between batches, for checkpoints. */
typedef struct sr_source_pos {
    int64_t offset;  /* the byte after the last record delivered */
    uint64_t inode;  /* of the file read, 0 if none */
    const char *file; /* text_dir: name of the file taken up last, NULL if
                         none (borrowed until the source reads again) */
} sr_source_pos_t;

/* What a kind of source is, for the loop, checkpoints and recovery: the
 * one place these are said (Lua reads them with sr_source_traits). */
typedef struct sr_source_traits {
    int bounded;   /* its input ends (the job may finish when all have) */
    int stored;    /* reads stored input: a job with only such sources need
                      not wait for the clock between batches, and a full
                      batch holds exactly max_batch_records records */
    int logged;    /* its records go to the write-ahead log as they arrive
                      (they could not be read again after a crash) */
    int rereads;   /* a logged batch is replayed by reading the file again
                      between the positions its markers hold */
    int resumes;   /* resumes at a position (position is set): records
                      received after the last marker are read again */
    int file_list; /* its position also names files (the one taken up last,
                      those it is done with) */
} sr_source_traits_t;

/* How a source reports to what runs it (the loop), which hands each source
 * one at start; ud is the runner's. */
typedef struct sr_ingest {
    void *ud;
    /* A source's batch filled, or the source is done: the batch in
     * progress may close. */
    void (*wake)(void *ud, sr_source_t *s);
    /* Whether every source is to read nothing for now. */
    int (*holds)(void *ud);
    /* A record was received (the runner logs those of logged kinds). */
    void (*record)(void *ud, sr_source_t *s, int64_t pos, const char *line, size_t len);
    /* s takes up file name (inode, or -1: skipped). */
    void (*file)(void *ud, sr_source_t *s, int64_t inode, const char *name);
    sr_deadletter_t *dead; /* where dead letters go (borrowed) */
} sr_ingest_t;

typedef struct sr_source_type {
    const char *kind;
    sr_source_traits_t traits;
    /* Opens what the source reads and starts its libev watchers. On failure
     * returns a negative SR_E* with a message in s->err; stop is not called. */
    int (*start)(sr_source_t *s, const sr_source_opts_t *o);
    /* Stops every watcher, closes every fd, frees s->impl. */
    void (*stop)(sr_source_t *s);
    /* Optional: fills *pos (sources that can resume at an offset). */
    void (*position)(sr_source_t *s, sr_source_pos_t *pos);
} sr_source_type_t;

struct sr_source {
    const sr_source_type_t *type; /* read-only */
    char *name;                   /* owned */
    int index;                    /* position in the loop's list */
    const sr_ingest_t *ingest;    /* borrowed: where it reports */
    struct ev_loop *ev;           /* borrowed */
    sr_batch_t batch;             /* records of the batch in progress */
    sr_linesplit_t split;         /* for sources that read one byte stream */
    int done;                     /* a bounded source delivered all input */
    int removed;                  /* a reload took it out of the job */
    int stored;                   /* reads a regular file (a text_file's, or
                                     stdin redirected from one): no need to
                                     wait for the clock, and a stop lets its
                                     batch fill (sr_loop) */
    uint64_t records;             /* records received so far */
    uint64_t dead_letters;        /* records sent to the dead-letter output */
    void *impl;                   /* private to the source kind */
    char err[256];                /* last start error */
};

/* Fills *pos with where the source stands; returns 0, or SR_EINVAL for a
 * kind that cannot resume at an offset. */
int sr_source_position(sr_source_t *s, sr_source_pos_t *pos);

/* Reads the lines of a text_file between bytes start and end into out, to
 * replay a logged batch; inode (if not 0) must still be the file's. Returns
 * 0, or -1 with a message in err. */
int sr_source_file_read_range(const char *path, uint64_t inode, int64_t start, int64_t end,
                              size_t max_line, sr_batch_t *out, char *err, size_t errlen);

/* Looks a kind up in the registry; NULL if unknown. */
const sr_source_type_t *sr_source_type_find(const char *kind);

/* Copies the traits of kind into *out; returns 0, or SR_EINVAL (and *out
 * zeroed) for a kind the registry does not know. */
int sr_source_traits(const char *kind, sr_source_traits_t *out);

/* The port a listen_text source is bound to (the one picked by the system
 * when it was asked for port 0), or SR_EINVAL for another kind of source. */
int sr_source_listen_port(sr_source_t *s);

/* text_dir: the i-th (from 0, in name order) of the files it is done with:
 * read whole, or skipped (not the one its position names). NULL past the
 * last, and for other kinds. */
const char *sr_source_done_file(sr_source_t *s, size_t i);

/* -- For source implementations -- */

/* An sr_line_fn: appends a whole line (status 0) to s->batch, or sends it to
 * the dead-letter output with the reason status names. ud is the source.
 * For a kind that reads stored input it returns 1 once the batch is full, so
 * batches hold exactly max_batch_records records and the caller keeps the
 * rest of its read for the next batch; other sources always get 0. */
int sr__source_line(void *ud, const char *line, size_t len, int64_t pos, int status);
/* Whether s is to read nothing for now: its batch is full (until it is
 * released), or the loop holds every source. Readers check it first. */
int sr__source_waits(sr_source_t *s);
/* Sends one record to the dead-letter output with a reason. */
void sr__source_dead(sr_source_t *s, int64_t pos, const char *reason,
                     const char *data, size_t len);
/* A bounded source calls this once when it has delivered all its input. */
void sr__source_done(sr_source_t *s);
/* Reports that s takes up file name (inode, or -1: skipped). */
void sr__source_file(sr_source_t *s, int64_t inode, const char *name);
/* Logs a notice about the source on stderr ("source lines: ..."). */
void sr__source_log(sr_source_t *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

extern const sr_source_type_t sr_source_text_file;
extern const sr_source_type_t sr_source_stdin;
extern const sr_source_type_t sr_source_socket_text;
extern const sr_source_type_t sr_source_listen_text;
extern const sr_source_type_t sr_source_tail;
extern const sr_source_type_t sr_source_text_dir;
extern const sr_source_type_t sr_source_kafka;

#endif
