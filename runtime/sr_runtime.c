/* sr_runtime: small functions of the FFI surface that belong to no other
 * module: the version, a monotonic clock for measuring batches and the
 * wall clock in milliseconds. */
#include "sr_runtime.h"
#include "sr_version.h"

#include <stdint.h>
#include <time.h>

const char *sr_version(void) { return SR_VERSION; }

/* Monotonic milliseconds, for processing-time measurements. */
double sr_clock_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

/* Milliseconds since the Unix epoch (the wall clock), for what a user
 * reads as a date. */
double sr_unix_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)(ts.tv_nsec / 1000000);
}
