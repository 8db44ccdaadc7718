/* sr_words: word counting in C for the compiler's fused path of
 * flat_map(sr.words) -> map(w -> (w, 1)) -> reduce_by_key(sr.add): one pass
 * over a batch of lines, whitespace-separated words counted in an
 * open-addressing table, distinct words listed in order of first
 * appearance (as reduce_by_key lists keys). Lua reads the result through
 * the FFI and makes strings only for distinct words. */
#ifndef SR_WORDS_H
#define SR_WORDS_H
#include <stddef.h>
#include <stdint.h>

#include "sr_batch.h"

typedef struct sr_wordcount {
    const char *data;   /* read-only: the batch's bytes the words point into */
    uint32_t *off;      /* read-only: word i is data[off[i] .. off[i] + len[i]) */
    uint32_t *len;      /* read-only */
    double *count;      /* read-only: occurrences of word i */
    size_t n;           /* read-only: distinct words */
    size_t words;       /* read-only: all words */
    uint32_t *slots;    /* private: index + 1 of a word, 0 = empty */
    uint64_t *hashes;   /* private */
    size_t cap, ncap;   /* private */
} sr_wordcount_t;

sr_wordcount_t *sr_wordcount_new(void);
void sr_wordcount_free(sr_wordcount_t *wc);
/* Counts the words of every record of b (words point into b's data, valid
 * while b is). Returns 0 or SR_ENOMEM. */
int sr_wordcount_batch(sr_wordcount_t *wc, const sr_batch_t *b);

#endif
