/* sr_mpbuf: the byte buffer msgpack-c packers write into. */
#include "sr_mpbuf.h"
#include "sr_alloc.h"

#include <string.h>

char *sr_mpbuf_reserve(sr_mpbuf_t *b, size_t need)
{
    if (b->len + need > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + need) cap *= 2;
        char *d = sr_realloc(b->data, cap);
        if (!d) return NULL;
        b->data = d;
        b->cap = cap;
    }
    return b->data + b->len;
}

int sr_mpbuf_write(void *data, const char *p, size_t n)
{
    sr_mpbuf_t *b = data;
    if (n == 0) return 0; /* msgpack-c hands empty strings as (NULL, 0) */
    char *d = sr_mpbuf_reserve(b, n);
    if (!d) return -1;
    memcpy(d, p, n);
    b->len += n;
    return 0;
}

void sr_mpbuf_packer(sr_mpbuf_t *b, msgpack_packer *pk)
{
    b->len = 0;
    msgpack_packer_init(pk, b, sr_mpbuf_write);
}
