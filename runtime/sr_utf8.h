/* sr_utf8: UTF-8 validation for the runtime's JSON writers, which replace
 * what is not valid UTF-8 with U+FFFD so that strict parsers accept them. */
#ifndef SR_UTF8_H
#define SR_UTF8_H
#include <stddef.h>

/* U+FFFD REPLACEMENT CHARACTER, in UTF-8. */
#define SR_UTF8_REPLACEMENT "\xef\xbf\xbd"

/* Reads the sequence starting at p[0] (n >= 1 bytes left). Returns how many
 * bytes it takes: a whole valid character (*valid = 1), or the bytes of an
 * invalid one to be replaced by one U+FFFD (*valid = 0; Unicode's "maximal
 * subpart", at least 1). Overlong forms, surrogates and code points past
 * U+10FFFF are invalid. */
size_t sr_utf8_next(const char *p, size_t n, int *valid);

#endif
