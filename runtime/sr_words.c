/* sr_words: one pass over a batch, 16 bytes at a time (SSE2 where there is
 * one), word-at-a-time hashes, linear probing. */
#include "sr_words.h"
#include "sr_alloc.h"
#include "sr_error.h"

#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif


sr_wordcount_t *sr_wordcount_new(void) { return sr_calloc(1, sizeof(sr_wordcount_t)); }

void sr_wordcount_free(sr_wordcount_t *wc)
{
    if (!wc) return;
    sr_free(wc->word);
    sr_free(wc->slots);
    sr_free(wc->ids);
    sr_free(wc->rec_end);
    sr_free(wc->own.data);
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

/* Bit k set when byte k of the 16 at p is whitespace (p may be unaligned). */
static inline unsigned sr__space16(const unsigned char *p)
{
#if defined(__SSE2__)
    __m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
    __m128i sp = _mm_cmpeq_epi8(v, _mm_set1_epi8(' '));
    __m128i t = _mm_sub_epi8(v, _mm_set1_epi8(9)); /* 9..13 -> 0..4 */
    __m128i ctl = _mm_cmpeq_epi8(_mm_min_epu8(t, _mm_set1_epi8(4)), t);
    return (unsigned)_mm_movemask_epi8(_mm_or_si128(sp, ctl));
#else
#define sr__is_space(c) ((c) == ' ' || ((c) >= 9 && (c) <= 13))
    unsigned m = 0;
    for (int k = 0; k < 16; k++) m |= (unsigned)sr__is_space(p[k]) << k;
    return m;
#endif
}

static inline uint64_t sr__load64(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof(v));
    return v; /* little-endian hosts: byte 0 in the low bits */
}

/* The low n (0..8) bytes of v. */
static inline uint64_t sr__low_bytes(uint64_t v, size_t n) { return n >= 8 ? v : v & ((1ULL << (8 * n)) - 1); }

/* Up to 8 bytes at p (n of them), zero-padded, read without passing p + n. */
static uint64_t sr__load_upto8(const unsigned char *p, size_t n)
{
    uint64_t v = 0;
    memcpy(&v, p, n < 8 ? n : 8);
    return v;
}

/* A word's hash from its first 16 bytes (zero-padded, as held in its
 * entry), its length and, past 16 bytes, the rest read from p: whole
 * 8-byte words at a time, not a multiply per byte. The same function hashes
 * a word cut from a batch and one merged from another counter. */
static inline __attribute__((always_inline)) uint64_t sr__hash_word(uint64_t head0, uint64_t head1, const unsigned char *p, size_t len)
{
    uint64_t h = head0 * 0x9e3779b97f4a7c15ULL ^ (head1 + len) * 0xc2b2ae3d27d4eb4fULL;
    for (size_t at = 16; at < len; at += 8) {
        h ^= sr__load_upto8(p + at, len - at);
        h = (h ^ (h >> 29)) * 0xbf58476d1ce4e5b9ULL;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    return h ^ (h >> 33);
}

static uint64_t sr__hash(const unsigned char *p, size_t len)
{
    uint64_t head0 = sr__load_upto8(p, len), head1 = len > 8 ? sr__load_upto8(p + 8, len - 8) : 0;
    return sr__hash_word(head0, head1, p, len);
}

/* A slot holds a word's first 16 bytes (zero-padded) and its count in the
 * batch, beside its index + 1 (low 32 bits; 0 = empty slot), its length
 * (8 bits, 255 for 255 or more) and the top 24 bits of its hash: a word of
 * up to 16 bytes is found and counted touching its slot alone (32 bytes:
 * one cache line, or two when the table is not 32-byte aligned). The counts go to the
 * words' entries at the end of a pass (sr__flush). */
typedef struct sr__slot {
    uint64_t head0, head1;
    double count;
    uint64_t key;
} sr__slot_t;

#define SR__KEY_HI 0xffffffff00000000ULL

static uint64_t sr__key_hi(uint64_t h, size_t len)
{
    return (h & 0xffffff0000000000ULL) | ((uint64_t)(len < 255 ? len : 255) << 32);
}

static sr__slot_t *sr__slots(const sr_wordcount_t *wc) { return (sr__slot_t *)(void *)wc->slots; }

/* Each word's count from its slot to its entry. */
static void sr__flush(sr_wordcount_t *wc)
{
    sr__slot_t *slots = sr__slots(wc);
    for (size_t j = 0; j < wc->cap; j++)
        if (slots[j].key) wc->word[(uint32_t)slots[j].key - 1].count = slots[j].count;
}

/* Rebuilds the slot table at cap (a power of two) for the words so far
 * (their hashes computed again from their entries and the batch's bytes,
 * their counts kept). */
static int sr__rehash(sr_wordcount_t *wc, size_t cap)
{
    sr__slot_t *slots = sr_calloc(cap, sizeof(*slots));
    if (!slots) return SR_ENOMEM;
    if (wc->slots) sr__flush(wc);
    const unsigned char *data = (const unsigned char *)wc->data;
    for (size_t i = 0; i < wc->n; i++) {
        const sr_wordcount_word_t *w = &wc->word[i];
        uint64_t h = sr__hash_word(w->head[0], w->head[1], data + w->off, w->len);
        size_t j = (size_t)h & (cap - 1);
        while (slots[j].key) j = (j + 1) & (cap - 1);
        slots[j].head0 = w->head[0];
        slots[j].head1 = w->head[1];
        slots[j].count = w->count;
        slots[j].key = sr__key_hi(h, w->len) | (uint64_t)(i + 1);
    }
    sr_free(wc->slots);
    wc->slots = (uint64_t *)(void *)slots;
    wc->cap = cap;
    return SR_OK;
}

/* Copies a word new to sr_wordcount_ids's kept words to their own bytes
 * (data then points there); *off: where it lies. 0 or SR_ENOMEM. */
static int sr__keep_bytes(sr_wordcount_t *wc, const unsigned char *p, size_t len, uint32_t *off)
{
    char *d = wc->own.len + len <= UINT32_MAX ? sr_mpbuf_reserve(&wc->own, len) : NULL;
    if (!d) return SR_ENOMEM;
    memcpy(d, p, len);
    *off = (uint32_t)wc->own.len;
    wc->own.len += len;
    wc->data = wc->own.data;
    return SR_OK;
}

/* A word cut from the batch, waiting to be counted. */
typedef struct sr__pending {
    uint64_t h, head[2];
    uint32_t start, len;
} sr__pending_t;

/* Counts one word: finds it (its slot's 16 bytes compared as two numbers,
 * only the rest of a longer word in the batch's bytes) or adds it.
 * Returns its index in wc->word, or SR_ENOMEM. */
static int sr__count(sr_wordcount_t *wc, const unsigned char *data, const sr__pending_t *p, double add)
{
    sr__slot_t *slots = sr__slots(wc);
    uint64_t hi = sr__key_hi(p->h, p->len);
    size_t mask = wc->cap - 1, j = (size_t)p->h & mask;
    uint32_t len = p->len;
    for (;;) {
        sr__slot_t *s = &slots[j];
        if (!s->key) break;
        if ((s->key & SR__KEY_HI) == hi && s->head0 == p->head[0] && s->head1 == p->head[1]) {
            if (len <= 16) {
                s->count += add;
                return (int)((uint32_t)s->key - 1);
            }
            const sr_wordcount_word_t *w = &wc->word[(uint32_t)s->key - 1];
            const unsigned char *known = (const unsigned char *)wc->data;
            if (w->len == len && memcmp(known + w->off + 16, data + p->start + 16, len - 16) == 0) {
                s->count += add;
                return (int)((uint32_t)s->key - 1);
            }
        }
        j = (j + 1) & mask;
    }
    int rc;
    if (wc->n == wc->ncap && (rc = sr__grow_words(wc)) < 0) return rc;
    uint32_t off = p->start;
    if (wc->kept && (rc = sr__keep_bytes(wc, data + p->start, len, &off)) < 0) return rc;
    size_t k = wc->n++;
    sr_wordcount_word_t *w = &wc->word[k];
    w->head[0] = p->head[0];
    w->head[1] = p->head[1];
    w->off = off;
    w->len = len;
    w->count = add;
    sr__slot_t *s = &slots[j];
    s->head0 = p->head[0];
    s->head1 = p->head[1];
    s->count = add;
    s->key = hi | (uint64_t)(k + 1);
    if (wc->n * 2 > wc->cap && (rc = sr__rehash(wc, wc->cap * 2)) < 0) return rc;
    return (int)k;
}

/* Words are counted SR__LAG behind the scan: a word's slot is prefetched
 * when it is cut, so the lookups of several words wait on memory at once
 * instead of one after another (the table outgrows the caches with the
 * vocabulary). Prefetches are only hints: each count probes the table as it
 * is then. */
#define SR__LAG 16
#define SR__RING 32 /* a power of two > SR__LAG */

int sr_wordcount_batch(sr_wordcount_t *wc, const sr_batch_t *b) { return sr_wordcount_range(wc, b, 0, b->n); }

/* Room for n ids and the ends of records records; 0 or SR_ENOMEM. */
static int sr__ids_room(sr_wordcount_t *wc, size_t n, size_t records)
{
    if (n > wc->idcap) {
        size_t cap = wc->idcap ? wc->idcap : 4096;
        while (cap < n) cap *= 2;
        uint32_t *ids = sr_realloc(wc->ids, cap * sizeof(*ids));
        if (!ids) return SR_ENOMEM;
        wc->ids = ids;
        wc->idcap = cap;
    }
    if (records + 1 > wc->reccap) {
        uint32_t *ends = sr_realloc(wc->rec_end, (records + 1) * sizeof(*ends));
        if (!ends) return SR_ENOMEM;
        wc->rec_end = ends;
        wc->reccap = records + 1;
    }
    return SR_OK;
}

static int sr__range(sr_wordcount_t *wc, const sr_batch_t *b, size_t lo, size_t hi, int with_ids);

int sr_wordcount_range(sr_wordcount_t *wc, const sr_batch_t *b, size_t lo, size_t hi)
{
    return sr__range(wc, b, lo, hi, 0);
}

void sr_wordcount_forget(sr_wordcount_t *wc)
{
    wc->kept = 0;
    wc->n = 0;
}

int sr_wordcount_ids(sr_wordcount_t *wc, const sr_batch_t *b, size_t lo, size_t hi)
{
    /* (A record of L bytes holds (L + 1) / 2 words at most.) */
    size_t bytes = hi > lo ? b->off[hi] - b->off[lo] : 0;
    int rc = sr__ids_room(wc, bytes / 2 + (hi - lo) + 1, hi - lo);
    if (rc < 0) return rc;
    return sr__range(wc, b, lo, hi, 1);
}

/* Counts the words of records [lo, hi) of b; with_ids: notes each one's id
 * and each record's end (room made by the caller). */
static int sr__range(sr_wordcount_t *wc, const sr_batch_t *b, size_t lo, size_t hi, int with_ids)
{
    wc->words = 0;
    if (!wc->cap && sr__rehash(wc, 4096) < 0) return SR_ENOMEM;
    if (!with_ids || !wc->kept) {
        /* (a count, or the first call naming words: none known) */
        wc->n = 0;
        wc->own.len = 0;
        wc->kept = with_ids;
        wc->data = with_ids ? wc->own.data : b->data;
        memset(wc->slots, 0, wc->cap * sizeof(sr__slot_t));
    }
    const unsigned char *data = (const unsigned char *)b->data;
    sr__pending_t ring[SR__RING];
    size_t cut = 0, counted = 0;
    int rc = SR_OK;
    const size_t total = b->len;
    for (size_t r = lo; r < hi; r++) {
        size_t i = b->off[r], end = b->off[r + 1];
        while (i < end) {
            /* The 32 bytes at i, from the batch or, within 32 bytes of its
             * end, a copy padded with spaces (never read past the data). */
            unsigned char pad[32];
            const unsigned char *p = data + i;
            if (i + 32 > total) {
                memset(pad, ' ', sizeof(pad));
                memcpy(pad, p, total - i);
                p = pad;
            }
            /* Whitespace bits of the 16 bytes at i; bits 16.. and the bytes
             * past the record count as whitespace. */
            unsigned m = sr__space16(p) | 0xffff0000u;
            if (end - i < 16) m |= ~0u << (end - i);
            if (m == ~0u) {
                i += 16;
                continue;
            }
            unsigned s0 = (unsigned)__builtin_ctz(~m);
            unsigned e0 = s0 + (unsigned)__builtin_ctz(m >> s0);
            size_t start = i + s0, len;
            if (e0 < 16) {
                len = e0 - s0;
                i += e0;
            } else {
                /* A word that reaches past these 16 bytes. */
                size_t j = i + 16;
                while (j < end) {
                    unsigned char pj[16];
                    const unsigned char *q = data + j;
                    if (j + 16 > total) {
                        memset(pj, ' ', sizeof(pj));
                        memcpy(pj, q, total - j);
                        q = pj;
                    }
                    unsigned mj = sr__space16(q) | 0xffff0000u;
                    if (end - j < 16) mj |= ~0u << (end - j);
                    unsigned z = (unsigned)__builtin_ctz(mj);
                    j += z;
                    if (z < 16) break;
                }
                len = j - start;
                i = j;
            }
            /* Its first 16 bytes, zero-padded: from the 32 at p when the
             * word starts in the first 16 (always, unless it is long). */
            uint64_t head0, head1;
            if (len <= 16) {
                head0 = sr__low_bytes(sr__load64(p + s0), len);
                head1 = len > 8 ? sr__low_bytes(sr__load64(p + s0 + 8), len - 8) : 0;
            } else {
                head0 = sr__load64(p + s0);
                head1 = sr__load64(p + s0 + 8);
            }
            uint64_t h = sr__hash_word(head0, head1, data + start, len);
            sr__pending_t *pw = &ring[cut % SR__RING];
            pw->h = h;
            pw->head[0] = head0;
            pw->head[1] = head1;
            pw->start = (uint32_t)start;
            pw->len = (uint32_t)len;
            __builtin_prefetch(&sr__slots(wc)[(size_t)h & (wc->cap - 1)], 1);
            cut++;
            if (cut - counted > SR__LAG) {
                if ((rc = sr__count(wc, data, &ring[counted % SR__RING], 1)) < 0) goto fail;
                if (with_ids) wc->ids[counted] = (uint32_t)rc + 1;
                counted++;
            }
        }
        if (with_ids) wc->rec_end[r - lo + 1] = (uint32_t)cut;
    }
    while (counted < cut) {
        if ((rc = sr__count(wc, data, &ring[counted % SR__RING], 1)) < 0) goto fail;
        if (with_ids) wc->ids[counted] = (uint32_t)rc + 1;
        counted++;
    }
    rc = SR_OK;
    if (with_ids) wc->rec_end[0] = 0;
fail:
    if (!with_ids) sr__flush(wc); /* (named words' counts are not read) */
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
        if (rc < 0) {
            sr__flush(dst);
            return rc;
        }
    }
    sr__flush(dst);
    dst->words += src->words;
    return SR_OK;
}
