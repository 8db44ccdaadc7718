/* sr_error: message table for SR_E* codes. */
#include "sr_error.h"

static const char *const sr__messages[SR_ERR_COUNT] = {
    [0] = "ok",
    [-SR_ENOMEM] = "out of memory",
    [-SR_EINVAL] = "invalid argument",
    [-SR_EIO] = "I/O error",
    [-SR_EFULL] = "batch is full",
    [-SR_ENOENT] = "not found",
    [-SR_ETOOLONG] = "line longer than max_line",
    [-SR_EDURATION] = "malformed duration (want e.g. 250ms, 1s, 1.5s, 2m, 1h or seconds)",
    [-SR_ECLOSED] = "connection closed mid-line",
    [-SR_EUSAGE] = "bad usage",
    [-SR_EBUSY] = "in use by another process",
};

const char *sr_strerror(int code)
{
    if (code > 0 || code <= -SR_ERR_COUNT) return "unknown error"; /* no -INT_MIN */
    return sr__messages[-code];
}
