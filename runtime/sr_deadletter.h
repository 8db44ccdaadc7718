/* sr_deadletter: where records that cannot be processed go, one JSON line
 * each: {"source":..,"offset":..,"reason":..,"record":..}. */
#ifndef SR_DEADLETTER_H
#define SR_DEADLETTER_H
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef struct sr_deadletter {
    FILE *fp;        /* private: the file, or stderr */
    int owned;       /* private: fp is ours to close */
    uint64_t count;  /* dead letters written so far (read-only) */
} sr_deadletter_t;

/* Opens path for appending, or uses stderr when path is NULL or "-".
 * Returns 0 or SR_EIO (errno set). */
int sr_deadletter_open(sr_deadletter_t *dl, const char *path);
void sr_deadletter_close(sr_deadletter_t *dl);
/* Writes one dead letter; record bytes need not be text (escaped as JSON). */
void sr_deadletter_write(sr_deadletter_t *dl, const char *source, int64_t offset,
                         const char *reason, const char *record, size_t len);

/* Writes s[0..len) to fp as a JSON string literal, quotes included. */
void sr_json_write_string(FILE *fp, const char *s, size_t len);

#endif
