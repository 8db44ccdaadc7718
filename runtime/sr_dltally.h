/* sr_dltally: what the status page and /metrics say of dead letters: a
 * count per source (or stage) and the last few, each cut to a short prefix
 * of valid UTF-8. Kept beside the dead-letter file, in C, since C sources
 * write dead letters without Lua. */
#ifndef SR_DLTALLY_H
#define SR_DLTALLY_H
#include <stddef.h>
#include <stdint.h>

#define SR_DLTALLY_RECENT 20   /* dead letters kept in full */
#define SR_DLTALLY_SOURCES 256 /* sources counted apart; more share one row */
#define SR_DLTALLY_TEXT 160    /* bytes kept of a reason or record */

typedef struct sr_dltally_entry {
    char source[64];
    char reason[SR_DLTALLY_TEXT];
    char record[SR_DLTALLY_TEXT];
    size_t record_len; /* the whole record's length */
    size_t record_shown; /* how many of its bytes record shows (< record_len: cut) */
    int64_t offset;
    uint64_t seq;      /* 1 for the first dead letter, and so on */
    double unix_ms;    /* when it was written (wall clock) */
} sr_dltally_entry_t;

typedef struct sr_dltally_count {
    char *source; /* owned */
    uint64_t count;
} sr_dltally_count_t;

typedef struct sr_dltally {
    sr_dltally_entry_t recent[SR_DLTALLY_RECENT]; /* private: a ring */
    uint64_t seq;                 /* dead letters so far (read-only) */
    sr_dltally_count_t *counts;   /* private, owned */
    size_t ncounts, cap;          /* ncounts read-only */
} sr_dltally_t;

/* Counts one dead letter and keeps its prefix. Never fails: a source that
 * cannot get a row of its own (out of memory, too many) counts under "?". */
void sr_dltally_add(sr_dltally_t *t, const char *source, int64_t offset, const char *reason, const char *record,
                    size_t len);
/* Frees the counts; the tally is empty again. */
void sr_dltally_close(sr_dltally_t *t);
/* The i-th source counted (i < t->ncounts) and its count in *count; the
 * name is borrowed from the tally. */
const char *sr_dltally_source(const sr_dltally_t *t, size_t i, uint64_t *count);
/* The i-th most recent dead letter (0: the newest), or NULL when fewer were
 * written; borrowed until the next dead letter. */
const sr_dltally_entry_t *sr_dltally_recent(const sr_dltally_t *t, size_t i);

#endif
