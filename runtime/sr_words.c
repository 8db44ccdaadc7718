/* sr_words: one pass over a batch, FNV-1a hashes, linear probing. */
#include "sr_words.h"
#include "sr_alloc.h"
#include "sr_error.h"

#include <string.h>

sr_wordcount_t *sr_wordcount_new(void) { return sr_calloc(1, sizeof(sr_wordcount_t)); }

void sr_wordcount_free(sr_wordcount_t *wc)
{
    if (!wc) return;
    sr_free(wc->off);
    sr_free(wc->len);
    sr_free(wc->count);
    sr_free(wc->slots);
    sr_free(wc->hashes);
    sr_free(wc);
}

static int sr__grow_words(sr_wordcount_t *wc)
{
    size_t ncap = wc->ncap ? wc->ncap * 2 : 1024;
    uint32_t *off = sr_realloc(wc->off, ncap * sizeof(*off));
    if (!off) return SR_ENOMEM;
    wc->off = off;
    uint32_t *len = sr_realloc(wc->len, ncap * sizeof(*len));
    if (!len) return SR_ENOMEM;
    wc->len = len;
    double *count = sr_realloc(wc->count, ncap * sizeof(*count));
    if (!count) return SR_ENOMEM;
    wc->count = count;
    uint64_t *hashes = sr_realloc(wc->hashes, ncap * sizeof(*hashes));
    if (!hashes) return SR_ENOMEM;
    wc->hashes = hashes;
    wc->ncap = ncap;
    return SR_OK;
}

/* Rebuilds the slot table at cap (a power of two) for the words so far. */
static int sr__rehash(sr_wordcount_t *wc, size_t cap)
{
    uint32_t *slots = sr_calloc(cap, sizeof(*slots));
    if (!slots) return SR_ENOMEM;
    for (size_t i = 0; i < wc->n; i++) {
        size_t j = (size_t)wc->hashes[i] & (cap - 1);
        while (slots[j]) j = (j + 1) & (cap - 1);
        slots[j] = (uint32_t)i + 1;
    }
    sr_free(wc->slots);
    wc->slots = slots;
    wc->cap = cap;
    return SR_OK;
}

static int sr__is_space(unsigned char c) { return c == ' ' || (c >= 9 && c <= 13); }

int sr_wordcount_batch(sr_wordcount_t *wc, const sr_batch_t *b)
{
    wc->data = b->data;
    wc->n = 0;
    wc->words = 0;
    if (!wc->cap && sr__rehash(wc, 4096) < 0) return SR_ENOMEM;
    memset(wc->slots, 0, wc->cap * sizeof(*wc->slots));
    const unsigned char *data = (const unsigned char *)b->data;
    for (size_t r = 0; r < b->n; r++) {
        size_t i = b->off[r], end = b->off[r + 1];
        while (i < end) {
            while (i < end && sr__is_space(data[i])) i++;
            if (i >= end) break;
            size_t start = i;
            uint64_t h = 0xcbf29ce484222325ULL;
            while (i < end && !sr__is_space(data[i])) {
                h = (h ^ data[i]) * 0x100000001b3ULL;
                i++;
            }
            h ^= h >> 29;
            uint32_t len = (uint32_t)(i - start);
            size_t mask = wc->cap - 1, j = (size_t)h & mask;
            for (;;) {
                uint32_t s = wc->slots[j];
                if (!s) break;
                size_t k = s - 1;
                if (wc->hashes[k] == h && wc->len[k] == len && memcmp(data + wc->off[k], data + start, len) == 0) break;
                j = (j + 1) & mask;
            }
            wc->words++;
            if (wc->slots[j]) {
                wc->count[wc->slots[j] - 1] += 1;
                continue;
            }
            if (wc->n == wc->ncap && sr__grow_words(wc) < 0) return SR_ENOMEM;
            size_t k = wc->n++;
            wc->off[k] = (uint32_t)start;
            wc->len[k] = len;
            wc->count[k] = 1;
            wc->hashes[k] = h;
            wc->slots[j] = (uint32_t)k + 1;
            if (wc->n * 2 > wc->cap && sr__rehash(wc, wc->cap * 2) < 0) return SR_ENOMEM;
        }
    }
    return SR_OK;
}
