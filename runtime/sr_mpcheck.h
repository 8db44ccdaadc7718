/* sr_mpcheck: walks msgpack bytes without decoding them, so that decoders
 * refuse, before allocating anything, an object whose lengths announce more
 * than the bytes present or that nests deeper than the encoder writes.
 * msgpack-c then allocates in proportion to the bytes it reads. */
#ifndef SR_MPCHECK_H
#define SR_MPCHECK_H
#include <stddef.h>

/* The deepest nesting of containers (tables) a stored value may have. The
 * encoder refuses deeper values and every decoder refuses them too, so what
 * is stored restores. A checkpoint wraps a value in one array more (a state
 * entry, a window element): msgpack-c must unpack SR_MP_MAX_DEPTH + 1. */
#define SR_MP_MAX_DEPTH 31

/* The length in bytes of the msgpack object at p (n bytes available), or
 * -1 when it is cut short, uses a reserved byte, announces more elements
 * than bytes remain, or nests containers deeper than max_depth (an array
 * holding a scalar has depth 1; max_depth at most 64). */
long sr_mpcheck(const char *p, size_t n, int max_depth);

#endif
