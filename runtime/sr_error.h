/* sr_error: the runtime's error codes and the one table of their messages. */
#ifndef SR_ERROR_H
#define SR_ERROR_H

enum {
    SR_OK = 0,
    SR_ENOMEM = -1,    /* out of memory */
    SR_EINVAL = -2,    /* invalid argument */
    SR_EIO = -3,       /* I/O error (errno has details) */
    SR_EFULL = -4,     /* batch is full */
    SR_ENOENT = -5,    /* no such file, source or stage */
    SR_ETOOLONG = -6,  /* line longer than max_line */
    SR_EDURATION = -7, /* malformed duration */
    SR_ECLOSED = -8,   /* connection closed mid-line */
    SR_EUSAGE = -9,    /* bad command line */
    SR_EBUSY = -10,    /* held by another process */
    SR_ERR_COUNT = 11
};

/* Returns a static, human-readable message for an SR_E* code. */
const char *sr_strerror(int code);

#endif
