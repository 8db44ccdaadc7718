/* sr_wal: the write-ahead log of a job with sources that cannot be read
 * again (sockets, stdin, tail, text_dir). Every record such a source
 * receives is logged before it can enter a batch, and every file text_dir
 * takes up before its lines; every sealed batch is logged as a marker with
 * its time and the positions of the sources that have one; a checkpoint
 * lets the segments before it go. Entries are length-prefixed,
 * each with its own CRC-32C; a torn tail is cut off when the log is read. */
#ifndef SR_WAL_H
#define SR_WAL_H
#include <stddef.h>
#include <stdint.h>

/* Entry types; OPEN starts what a run logs, so that recovery can tell what
 * a run killed before its next batch marker logged. */
enum { SR_WAL_SOURCE = 'S', SR_WAL_RECORD = 'R', SR_WAL_BATCH = 'B', SR_WAL_FILE = 'F', SR_WAL_OPEN = 'O' };

typedef struct sr_wal_pos {
    int index;       /* source */
    int64_t offset;  /* the byte after its last record in the batch */
    uint64_t inode;
} sr_wal_pos_t;

typedef struct sr_wal sr_wal_t;

/* Opens the log in dir (created if needed), starting a new segment after
 * the existing ones with an OPEN entry. NULL with a message in err on
 * failure. */
sr_wal_t *sr_wal_open(const char *dir, char *err, size_t errlen);
void sr_wal_free(sr_wal_t *w);
/* Names source index in this segment and the ones after it. */
int sr_wal_declare(sr_wal_t *w, int index, const char *name);
/* Logs a received record (buffered; written at the latest with the next
 * batch marker or when the buffer fills). Returns 0 or -1 (errno). */
int sr_wal_record(sr_wal_t *w, int index, int64_t pos, const char *data, size_t len);
/* Logs that source index takes up the file name of its directory (inode
 * of the file, or -1 when it could not be opened and is skipped). Buffered
 * like records. Returns 0 or -1 (errno). */
int sr_wal_file(sr_wal_t *w, int index, int64_t inode, const char *name);
/* Writes the buffered entries to the file (they then survive the process
 * being killed). Returns 0 or -1 (errno). */
int sr_wal_flush(sr_wal_t *w);
/* Logs a sealed batch and makes the log durable (write, fdatasync).
 * Returns 0 or -1 with errno. */
int sr_wal_batch(sr_wal_t *w, int64_t time_ms, const sr_wal_pos_t *pos, int npos);
/* Starts a new segment and writes its first entries; returns its number
 * (the first a checkpoint taken now does not cover), or 0 on failure. A
 * success clears the last write error. */
uint64_t sr_wal_rotate(sr_wal_t *w);
/* Deletes the segments numbered below seq. Returns how many. */
int sr_wal_drop_before(sr_wal_t *w, uint64_t seq);
/* The last write error (errno), 0 if none. */
int sr_wal_error(const sr_wal_t *w);

typedef struct sr_wal_entry {
    int type;            /* SR_WAL_SOURCE, _RECORD, _BATCH, _FILE or _OPEN */
    int index;           /* SOURCE, RECORD, FILE */
    int64_t pos;         /* RECORD: stream offset; FILE: inode or -1 */
    int64_t time_ms;     /* BATCH */
    const char *data;    /* SOURCE, FILE: name; RECORD: bytes (borrowed) */
    size_t len;
    const sr_wal_pos_t *positions; /* BATCH */
    int npos;
} sr_wal_entry_t;

/* Reads every segment of dir in order, calling fn for each entry. A torn or
 * corrupt tail of the last segment is cut off and described in note; the
 * same in an earlier segment stops the read there. Returns the number of
 * entries, or -1 with a message in note. */
long sr_wal_scan(const char *dir, void (*fn)(void *ud, const sr_wal_entry_t *e), void *ud,
                 char *note, size_t notelen);

#endif
