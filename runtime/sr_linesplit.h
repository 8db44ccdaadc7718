/* sr_linesplit: cuts a byte stream into lines ("\n" or "\r\n" stripped),
 * carrying partial lines across reads and cutting off over-long ones. */
#ifndef SR_LINESPLIT_H
#define SR_LINESPLIT_H
#include <stddef.h>
#include <stdint.h>

/* Called once per line. status is 0 for a whole line, SR_ETOOLONG for a line
 * over max_line (line holds its first max_line bytes), SR_ECLOSED for a
 * partial line left when the stream ended mid-line (see finish), SR_ENOMEM
 * for a line that could not be carried over for lack of memory (line holds
 * what there was of it, the rest is dropped). pos is the stream offset of
 * the line's first byte. Return non-zero to stop feeding. */
typedef int (*sr_line_fn)(void *ud, const char *line, size_t len, int64_t pos, int status);

typedef struct sr_linesplit {
    char *buf;          /* partial line carried over (private) */
    size_t len, cap;    /* private */
    size_t max_line;    /* lines longer than this are cut off */
    int64_t pos;        /* stream offset of the next unread byte */
    int64_t line_pos;   /* stream offset of the carried line's first byte */
    int dropping;       /* inside an over-long line already reported */
} sr_linesplit_t;

void sr_linesplit_init(sr_linesplit_t *ls, size_t max_line, int64_t start_pos);
void sr_linesplit_close(sr_linesplit_t *ls);
/* Feeds n bytes. Returns the number of bytes consumed: all of them unless the
 * callback asked to stop, in which case the rest must be fed again later.
 * Does not fail: out of memory, a line is reported with SR_ENOMEM. */
long sr_linesplit_feed(sr_linesplit_t *ls, const char *p, size_t n, sr_line_fn fn, void *ud);
/* Ends the stream: a carried partial line is passed to fn with status
 * partial_status (0 to treat it as a last line without newline, as at the
 * end of a file, or SR_ECLOSED for a connection that closed mid-line). */
void sr_linesplit_finish(sr_linesplit_t *ls, int partial_status, sr_line_fn fn, void *ud);
/* 1 when a partial line is being carried. */
int sr_linesplit_pending(const sr_linesplit_t *ls);
/* Where a reader that starts again must start to cut the same lines: the
 * first byte of the line in hand (carried, or over-long and being
 * skipped), else the next unread byte. */
int64_t sr_linesplit_resume_pos(const sr_linesplit_t *ls);

#endif
