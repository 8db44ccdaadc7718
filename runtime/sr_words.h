/* sr_words: the built-in word count of flat_map(sr.words) -> count_by_value()
 * in C, asked for by name: one pass over a batch of lines, whitespace-
 * separated words counted in an open-addressing table, distinct words listed
 * in order of first appearance (as count_by_value lists them). Lua reads the
 * result through the FFI and makes strings only for distinct words. */
#ifndef SR_WORDS_H
#define SR_WORDS_H
#include <stddef.h>
#include <stdint.h>

#include "sr_batch.h"
#include "sr_mpbuf.h"

/* One distinct word: 32 bytes, so a probe that finds it touches one half
 * cache line (the count it adds to included). */
typedef struct sr_wordcount_word {
    uint64_t head[2]; /* private: the word's first 16 bytes, zero-padded */
    uint32_t off;     /* read-only: the word is data[off .. off + len) */
    uint32_t len;     /* read-only */
    double count;     /* read-only: occurrences (not kept by sr_wordcount_ids) */
} sr_wordcount_word_t;

typedef struct sr_wordcount {
    const char *data;          /* read-only: the batch's bytes the words point into */
    sr_wordcount_word_t *word; /* read-only: the distinct words, in order of first appearance */
    size_t n;                  /* read-only: distinct words */
    size_t words;              /* read-only: all words */
    uint64_t *slots;           /* private: the slot table (sr_words.c) */
    size_t cap, ncap;          /* private */
    /* sr_wordcount_ids only (read-only): ids[j] is 1 + the index in word of
     * the range's j-th word (0-based); record lo + r's words are ids
     * [rec_end[r], rec_end[r + 1]), rec_end[0] = 0. */
    uint32_t *ids, *rec_end;
    size_t idcap, reccap; /* private */
    sr_mpbuf_t own; /* private: sr_wordcount_ids's words' own bytes (data while kept) */
    int kept;       /* private */
} sr_wordcount_t;

sr_wordcount_t *sr_wordcount_new(void);
void sr_wordcount_free(sr_wordcount_t *wc);
/* Counts the words of every record of b (words point into b's data, valid
 * while b is). Returns 0 or SR_ENOMEM. */
int sr_wordcount_batch(sr_wordcount_t *wc, const sr_batch_t *b);
/* The same over records [lo, hi) of b only. */
int sr_wordcount_range(sr_wordcount_t *wc, const sr_batch_t *b, size_t lo, size_t hi);
/* Names each word of records [lo, hi) of b by its distinct word (ids,
 * rec_end): what the fused chain of flat_map(sr.words) reads instead of
 * interning every word as a Lua string. The distinct words are kept from
 * one call to the next (their bytes copied, so data no longer points into
 * a batch): a word keeps its id, words new to the call are appended, and
 * n counts all. sr_wordcount_forget, sr_wordcount_batch or _range start
 * over. Returns 0 or SR_ENOMEM. */
int sr_wordcount_ids(sr_wordcount_t *wc, const sr_batch_t *b, size_t lo, size_t hi);
/* Forgets the words sr_wordcount_ids kept (n = 0). */
void sr_wordcount_forget(sr_wordcount_t *wc);
/* Adds src's counts to dst, src's words new to dst appended in src's order
 * (both counted over the same batch: dst's words first appear before
 * src's). Returns 0 or SR_ENOMEM. */
int sr_wordcount_merge(sr_wordcount_t *dst, const sr_wordcount_t *src);

#endif
