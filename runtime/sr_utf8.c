/* sr_utf8: UTF-8 validation by the well-formed byte sequences of Unicode
 * (Table 3-7 of the standard). */
#include "sr_utf8.h"

size_t sr_utf8_next(const char *p, size_t n, int *valid)
{
    const unsigned char *s = (const unsigned char *)p;
    unsigned char c = s[0], lo = 0x80, hi = 0xbf;
    size_t need;
    *valid = 1;
    if (c < 0x80) return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        need = 1;
    } else if (c >= 0xe0 && c <= 0xef) {
        need = 2;
        if (c == 0xe0) lo = 0xa0;      /* overlong */
        else if (c == 0xed) hi = 0x9f; /* surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
        need = 3;
        if (c == 0xf0) lo = 0x90;      /* overlong */
        else if (c == 0xf4) hi = 0x8f; /* past U+10FFFF */
    } else {
        *valid = 0;
        return 1;
    }
    size_t i = 1;
    for (; i <= need && i < n; i++) {
        if (s[i] < lo || s[i] > hi) break;
        lo = 0x80;
        hi = 0xbf;
    }
    if (i <= need) *valid = 0;
    return i;
}
