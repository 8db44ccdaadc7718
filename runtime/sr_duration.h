/* sr_duration: parses durations such as "250ms", "1.5s", "2m", "1h", "3". */
#ifndef SR_DURATION_H
#define SR_DURATION_H
#include <stdint.h>

/* Parses s into milliseconds. A bare number is seconds. Returns 0, or
 * SR_EDURATION for anything malformed, negative, or not a whole ms count. */
int sr_duration_parse(const char *s, int64_t *ms);

#endif
