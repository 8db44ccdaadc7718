/* sr_mpbuf: a growable byte buffer that msgpack-c packers write into (state
 * values, window elements, checkpoint sections). */
#ifndef SR_MPBUF_H
#define SR_MPBUF_H
#include <msgpack.h>
#include <stddef.h>

typedef struct sr_mpbuf {
    char *data; /* owned: sr_free it */
    size_t len, cap;
} sr_mpbuf_t;

/* Makes room for need more bytes after b's len; returns where they go
 * (len unchanged), or NULL when out of memory. */
char *sr_mpbuf_reserve(sr_mpbuf_t *b, size_t need);

/* msgpack-c's write callback: appends p[0..n) to the sr_mpbuf_t data.
 * Returns 0, or -1 when out of memory. */
int sr_mpbuf_write(void *data, const char *p, size_t n);

/* Starts packing into b (emptied first). */
void sr_mpbuf_packer(sr_mpbuf_t *b, msgpack_packer *pk);

#endif
