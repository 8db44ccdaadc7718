/* sr_mpcheck: a non-allocating msgpack walker (lengths and depth only). */
#include "sr_mpcheck.h"

#include <stdint.h>

#define SR__MAX_STACK 65

static uint64_t sr__be(const unsigned char *p, int k)
{
    uint64_t v = 0;
    for (int i = 0; i < k; i++) v = (v << 8) | p[i];
    return v;
}

long sr_mpcheck(const char *p, size_t n, int max_depth)
{
    const unsigned char *b = (const unsigned char *)p;
    uint64_t left[SR__MAX_STACK]; /* objects still to read, per open container */
    int top = 0;
    size_t off = 0;
    if (max_depth < 0 || max_depth >= SR__MAX_STACK) return -1;
    left[0] = 1;
    while (top >= 0) {
        if (left[top] == 0) {
            top--;
            continue;
        }
        left[top]--;
        if (off >= n) return -1;
        unsigned c = b[off];
        size_t head = 1;   /* bytes of the header */
        uint64_t body = 0; /* bytes after it */
        uint64_t items = 0;
        int container = 0;
        if (c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3) {
            /* a fixint, nil or a boolean */
        } else if (c <= 0x8f) {
            container = 1, items = 2 * (uint64_t)(c & 0x0f);
        } else if (c <= 0x9f) {
            container = 1, items = c & 0x0f;
        } else if (c <= 0xbf) {
            body = c & 0x1f;
        } else {
            int lenk = 0; /* bytes of a length field */
            switch (c) {
            case 0xc4: case 0xd9: lenk = 1; break;
            case 0xc5: case 0xda: lenk = 2; break;
            case 0xc6: case 0xdb: lenk = 4; break;
            case 0xc7: lenk = 1; head = 2; break; /* ext: the type byte too */
            case 0xc8: lenk = 2; head = 2; break;
            case 0xc9: lenk = 4; head = 2; break;
            case 0xca: body = 4; break;
            case 0xcb: body = 8; break;
            case 0xcc: case 0xd0: body = 1; break;
            case 0xcd: case 0xd1: body = 2; break;
            case 0xce: case 0xd2: body = 4; break;
            case 0xcf: case 0xd3: body = 8; break;
            case 0xd4: body = 2; break;
            case 0xd5: body = 3; break;
            case 0xd6: body = 5; break;
            case 0xd7: body = 9; break;
            case 0xd8: body = 17; break;
            case 0xdc: container = 1; lenk = 2; break;
            case 0xdd: container = 1; lenk = 4; break;
            case 0xde: container = 2; lenk = 2; break;
            case 0xdf: container = 2; lenk = 4; break;
            default: return -1; /* 0xc1: never used */
            }
            if (lenk) {
                if (n - off < 1 + (size_t)lenk) return -1;
                uint64_t len = sr__be(b + off + 1, lenk);
                head += (size_t)lenk;
                if (container) items = container == 2 ? 2 * len : len;
                else body = len;
            }
        }
        if (n - off < head || n - off - head < body) return -1;
        off += head + (size_t)body;
        if (container) {
            if (top + 1 > max_depth) return -1;
            /* Every element takes a byte at the least. */
            if (items > n - off) return -1;
            left[++top] = items;
        }
    }
    return (long)off;
}
