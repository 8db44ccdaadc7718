/* sr_deadletter: where records that cannot be processed go, one JSON line
 * each: {"source":..,"offset":..,"reason":..,"record":..}. The file rotates
 * at a size, as logrotate does (path.1, path.2, ...), and a write error is
 * reported on stderr once per failure streak. */
#ifndef SR_DEADLETTER_H
#define SR_DEADLETTER_H
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "sr_dltally.h"

#define SR_DEADLETTER_MAX_BYTES (64 * 1024 * 1024)
#define SR_DEADLETTER_KEEP 3

typedef struct sr_deadletter {
    int fd;            /* private: the file, stderr's, or -1 (reopen) */
    char *path;        /* private, owned: the file; NULL for stderr */
    int64_t size;      /* private: bytes in the file */
    int64_t max_bytes; /* private: rotated once it holds this many (0: never) */
    int keep;          /* private: rotated files kept */
    int failing;       /* private: the last write failed (reported) */
    int rotate_failing; /* private: the last rotation failed (reported) */
    uint64_t lost;     /* dead letters not written since failing began (read-only) */
    FILE *line;        /* private: the line being built (a memory stream) */
    char *buf;         /* private: its buffer */
    size_t buflen;
    uint64_t count;    /* dead letters written so far (read-only) */
    sr_dltally_t tally; /* per source, and the last few (read-only) */
    struct sr__expected *expected; /* private: lines a replay writes again */
} sr_deadletter_t;

/* Opens path for appending, or uses stderr when path is NULL or "-"; it
 * rotates at SR_DEADLETTER_MAX_BYTES keeping SR_DEADLETTER_KEEP. Returns 0,
 * SR_EIO (errno set) or SR_ENOMEM. */
int sr_deadletter_open(sr_deadletter_t *dl, const char *path);
/* Rotates the file once it holds max_bytes (0: never), keeping keep rotated
 * files (path.1 the newest; 0: none). */
void sr_deadletter_set_rotation(sr_deadletter_t *dl, int64_t max_bytes, int keep);
void sr_deadletter_close(sr_deadletter_t *dl);
/* The counts per source and the last dead letters; borrowed from dl. */
const sr_dltally_t *sr_deadletter_tally(const sr_deadletter_t *dl);
/* Writes one dead letter as one whole line (a failing write is cut back);
 * record bytes need not be text (escaped as JSON, invalid UTF-8 as
 * U+FFFD). */
void sr_deadletter_write(sr_deadletter_t *dl, const char *source, int64_t offset,
                         const char *reason, const char *record, size_t len);
/* The same for a record of a source with partitions (Kafka): the line
 * names the partition too ("partition": N after "source"); -1: none. */
void sr_deadletter_write_at(sr_deadletter_t *dl, const char *source, int32_t partition, int64_t offset,
                            const char *reason, const char *record, size_t len);

/* Where the file ends now: *bytes its size, *ino its inode, *tail a hash
 * of the bytes before its end (inodes are reused). Returns 0, or -1 when
 * the dead letters go to stderr, the file is not open or does not end a
 * line. */
int sr_deadletter_mark(const sr_deadletter_t *dl, int64_t *bytes, uint64_t *ino, uint64_t *tail);
/* Recovery from a checkpoint whose mark was (bytes, ino, tail), for a job whose
 * sources re-read their input from the checkpoint's positions: the
 * dead letters past the mark are cut away, since the batches run again
 * letter them again. Nothing is cut when the file is another (rotated
 * since). Returns 0, or SR_EIO (errno set). */
int sr_deadletter_cut_back(sr_deadletter_t *dl, int64_t bytes, uint64_t ino, uint64_t tail);
/* Recovery from a checkpoint whose mark was (bytes, ino, tail), for a job that
 * replays batches from its write-ahead log: the dead letters past the mark
 * are expected again. Until sr_deadletter_expect_end, a write equal to an
 * expected letter is counted but not written, once per copy expected, so
 * a replayed batch's dead letters stay in the file once (letters the
 * replay does not make again, a source's over-long lines, stay too; a
 * torn last line, cut short by the kill, goes). Nothing is expected when
 * the file is another (rotated since). Returns how many letters are
 * expected, or SR_ENOMEM / SR_EIO (none expected). */
int64_t sr_deadletter_expect(sr_deadletter_t *dl, int64_t bytes, uint64_t ino, uint64_t tail);
/* The replay is over: later writes are written whatever they hold. */
void sr_deadletter_expect_end(sr_deadletter_t *dl);

/* Writes s[0..len) to fp as a JSON string literal, quotes included, bytes
 * that are not valid UTF-8 replaced by U+FFFD. */
void sr_json_write_string(FILE *fp, const char *s, size_t len);

#endif
