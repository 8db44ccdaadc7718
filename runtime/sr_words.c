/* sr_words: one pass over a batch, FNV-1a hashes, linear probing. */
#include "sr_words.h"
#include "sr_alloc.h"
#include "sr_error.h"

#include <string.h>

#define SR__TAG 0xffffffff00000000ULL

sr_wordcount_t *sr_wordcount_new(void) { return sr_calloc(1, sizeof(sr_wordcount_t)); }

void sr_wordcount_free(sr_wordcount_t *wc)
{
    if (!wc) return;
    sr_free(wc->word);
    sr_free(wc->slots);
    sr_free(wc);
}

static int sr__grow_words(sr_wordcount_t *wc)
{
    size_t ncap = wc->ncap ? wc->ncap * 2 : 1024;
    sr_wordcount_word_t *word = sr_realloc(wc->word, ncap * sizeof(*word));
    if (!word) return SR_ENOMEM;
    wc->word = word;
    wc->ncap = ncap;
    return SR_OK;
}

static int sr__is_space(unsigned char c) { return c == ' ' || (c >= 9 && c <= 13); }

static uint64_t sr__hash(const unsigned char *p, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < len; i++) h = (h ^ p[i]) * 0x100000001b3ULL;
    return h ^ (h >> 29);
}

/* A slot: the word's index + 1, and the top of its hash, so a probe
 * touches the word's entry only when that matches. */
static uint64_t sr__slot(size_t k, uint64_t h) { return (h & SR__TAG) | (uint64_t)(k + 1); }

/* Rebuilds the slot table at cap (a power of two) for the words so far
 * (their hashes computed again from the batch's bytes). */
static int sr__rehash(sr_wordcount_t *wc, size_t cap)
{
    uint64_t *slots = sr_calloc(cap, sizeof(*slots));
    if (!slots) return SR_ENOMEM;
    const unsigned char *data = (const unsigned char *)wc->data;
    for (size_t i = 0; i < wc->n; i++) {
        uint64_t h = sr__hash(data + wc->word[i].off, wc->word[i].len);
        size_t j = (size_t)h & (cap - 1);
        while (slots[j]) j = (j + 1) & (cap - 1);
        slots[j] = sr__slot(i, h);
    }
    sr_free(wc->slots);
    wc->slots = slots;
    wc->cap = cap;
    return SR_OK;
}

/* A word cut from the batch, waiting to be counted. */
typedef struct sr__pending {
    uint64_t h, head[2];
    uint32_t start, len;
} sr__pending_t;

/* Counts one word: finds it (words are mostly short: their first 16 bytes
 * are compared as two numbers held in the entry, only the rest, if any, in
 * the batch's bytes) or adds it. Returns 0 or SR_ENOMEM. */
static int sr__count(sr_wordcount_t *wc, const unsigned char *data, const sr__pending_t *p, double add)
{
    uint64_t tag = p->h & SR__TAG, s;
    size_t mask = wc->cap - 1, j = (size_t)p->h & mask;
    uint32_t len = p->len;
    for (;;) {
        s = wc->slots[j];
        if (!s) break;
        if ((s & SR__TAG) == tag) {
            const sr_wordcount_word_t *w = &wc->word[(uint32_t)s - 1];
            if (w->head[0] == p->head[0] && w->head[1] == p->head[1] && w->len == len
                && (len <= 16 || memcmp(data + w->off + 16, data + p->start + 16, len - 16) == 0))
                break;
        }
        j = (j + 1) & mask;
    }
    if (s) {
        wc->word[(uint32_t)s - 1].count += add;
        return SR_OK;
    }
    int rc;
    if (wc->n == wc->ncap && (rc = sr__grow_words(wc)) < 0) return rc;
    size_t k = wc->n++;
    sr_wordcount_word_t *w = &wc->word[k];
    w->head[0] = p->head[0];
    w->head[1] = p->head[1];
    w->off = p->start;
    w->len = len;
    w->count = add;
    wc->slots[j] = sr__slot(k, p->h);
    if (wc->n * 2 > wc->cap) return sr__rehash(wc, wc->cap * 2);
    return SR_OK;
}

/* Words are counted SR__LAG behind the scan: a word's slot is prefetched
 * when it is cut, its entry SR__LAG / 2 words later, so the lookups of
 * several words wait on memory at once instead of one after another (the
 * tables outgrow the caches with the vocabulary). Prefetches are only
 * hints: each count probes the table as it is then. */
#define SR__LAG 16
#define SR__RING 32 /* a power of two > SR__LAG */

int sr_wordcount_batch(sr_wordcount_t *wc, const sr_batch_t *b) { return sr_wordcount_range(wc, b, 0, b->n); }

int sr_wordcount_range(sr_wordcount_t *wc, const sr_batch_t *b, size_t lo, size_t hi)
{
    wc->data = b->data;
    wc->n = 0;
    wc->words = 0;
    if (!wc->cap && sr__rehash(wc, 4096) < 0) return SR_ENOMEM;
    memset(wc->slots, 0, wc->cap * sizeof(*wc->slots));
    const unsigned char *data = (const unsigned char *)b->data;
    sr__pending_t ring[SR__RING];
    size_t cut = 0, counted = 0;
    int rc = SR_OK;
    for (size_t r = lo; r < hi; r++) {
        size_t i = b->off[r], end = b->off[r + 1];
        while (i < end) {
            while (i < end && sr__is_space(data[i])) i++;
            if (i >= end) break;
            size_t start = i;
            uint64_t h = 0xcbf29ce484222325ULL, head0 = 0, head1 = 0;
            while (i < end && !sr__is_space(data[i])) {
                size_t at = i - start;
                if (at < 8) head0 |= (uint64_t)data[i] << (8 * at);
                else if (at < 16) head1 |= (uint64_t)data[i] << (8 * (at - 8));
                h = (h ^ data[i]) * 0x100000001b3ULL;
                i++;
            }
            h ^= h >> 29;
            sr__pending_t *p = &ring[cut % SR__RING];
            p->h = h;
            p->head[0] = head0;
            p->head[1] = head1;
            p->start = (uint32_t)start;
            p->len = (uint32_t)(i - start);
            __builtin_prefetch(&wc->slots[(size_t)h & (wc->cap - 1)]);
            cut++;
            if (cut > SR__LAG / 2) {
                const sr__pending_t *q = &ring[(cut - 1 - SR__LAG / 2) % SR__RING];
                uint64_t s = wc->slots[(size_t)q->h & (wc->cap - 1)];
                if (s && (uint32_t)s - 1 < wc->n) __builtin_prefetch(&wc->word[(uint32_t)s - 1]);
            }
            if (cut - counted > SR__LAG) {
                if ((rc = sr__count(wc, data, &ring[counted % SR__RING], 1)) < 0) goto fail;
                counted++;
            }
        }
    }
    while (counted < cut) {
        if ((rc = sr__count(wc, data, &ring[counted % SR__RING], 1)) < 0) goto fail;
        counted++;
    }
fail:
    wc->words = counted;
    return rc;
}

int sr_wordcount_merge(sr_wordcount_t *dst, const sr_wordcount_t *src)
{
    const unsigned char *data = (const unsigned char *)dst->data;
    if (!dst->cap && sr__rehash(dst, 4096) < 0) return SR_ENOMEM;
    for (size_t i = 0; i < src->n; i++) {
        const sr_wordcount_word_t *w = &src->word[i];
        sr__pending_t p = { .h = sr__hash(data + w->off, w->len), .start = w->off, .len = w->len };
        p.head[0] = w->head[0];
        p.head[1] = w->head[1];
        int rc = sr__count(dst, data, &p, w->count);
        if (rc < 0) return rc;
    }
    dst->words += src->words;
    return SR_OK;
}
