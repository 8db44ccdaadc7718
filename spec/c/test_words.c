/* test_words: the C word counter: splitting on every whitespace byte, counts,
 * order of first appearance, growth past the initial table, reuse, and its
 * 16-bytes-at-a-time scan against a byte-at-a-time reference, also naming
 * each word of a range of records by its distinct word (sr_wordcount_ids). */
#include "sr_test.h"

#include "sr_alloc.h"
#include "sr_batch.h"
#include "sr_words.h"

static void add(sr_batch_t *b, const char *line) { sr_batch_append(b, line, strlen(line), 0); }

static void test_counts_in_first_appearance_order(void **state)
{
    (void)state;
    size_t before = sr_alloc_used();
    sr_batch_t b;
    sr_batch_init(&b, 0, 0);
    add(&b, "  to be\tor not\r\nto be ");
    add(&b, "");
    add(&b, "\v\fbe");
    sr_wordcount_t *wc = sr_wordcount_new();
    assert_int_equal(sr_wordcount_batch(wc, &b), 0);
    const char *want[] = {"to", "be", "or", "not"};
    double counts[] = {2, 3, 1, 1};
    assert_int_equal(wc->n, 4);
    assert_int_equal(wc->words, 7);
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(wc->word[i].len, strlen(want[i]));
        assert_memory_equal(wc->data + wc->word[i].off, want[i], wc->word[i].len);
        assert_true(wc->word[i].count == counts[i]);
    }
    /* Reused for the next batch: starts empty. */
    sr_batch_clear(&b);
    add(&b, "x x");
    assert_int_equal(sr_wordcount_batch(wc, &b), 0);
    assert_int_equal(wc->n, 1);
    assert_true(wc->word[0].count == 2);
    sr_wordcount_free(wc);
    sr_batch_close(&b);
    assert_int_equal(sr_alloc_used(), before);
}

static void test_many_distinct_words(void **state)
{
    (void)state;
    enum { N = 50000 };
    sr_batch_t b;
    sr_batch_init(&b, 0, 0);
    char line[64];
    for (int i = 0; i < N; i++) {
        snprintf(line, sizeof(line), "w%d w%d", i, i % 7);
        add(&b, line);
    }
    sr_wordcount_t *wc = sr_wordcount_new();
    assert_int_equal(sr_wordcount_batch(wc, &b), 0);
    assert_int_equal(wc->words, 2 * N);
    assert_int_equal(wc->n, N); /* w0..w6 come back as the second words */
    double total = 0;
    for (size_t i = 0; i < wc->n; i++) total += wc->word[i].count;
    assert_true(total == 2 * N);
    assert_memory_equal(wc->data + wc->word[0].off, "w0", 2);
    assert_true(wc->word[0].count == 1 + (N + 6) / 7);
    sr_wordcount_free(wc);
    sr_batch_close(&b);
}

/* Words that share their first 16 bytes, differ only in length, or hold
 * NUL bytes are told apart. */
static void test_words_alike_at_the_start(void **state)
{
    (void)state;
    sr_batch_t b;
    sr_batch_init(&b, 0, 0);
    add(&b, "abcdefghijklmnopX abcdefghijklmnopY abcdefghijklmnop abcdefgh abcdefghijklmnopX");
    sr_batch_append(&b, "a\0 a a\0", 7, 0);
    sr_wordcount_t *wc = sr_wordcount_new();
    assert_int_equal(sr_wordcount_batch(wc, &b), 0);
    const char *want[] = {"abcdefghijklmnopX", "abcdefghijklmnopY", "abcdefghijklmnop", "abcdefgh"};
    assert_int_equal(wc->n, 6);
    assert_int_equal(wc->words, 8);
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(wc->word[i].len, strlen(want[i]));
        assert_memory_equal(wc->data + wc->word[i].off, want[i], wc->word[i].len);
        assert_true(wc->word[i].count == (i == 0 ? 2 : 1));
    }
    assert_int_equal(wc->word[4].len, 2); /* "a\0" twice */
    assert_true(wc->word[4].count == 2);
    assert_int_equal(wc->word[5].len, 1);
    sr_wordcount_free(wc);
    sr_batch_close(&b);
}

/* The 16-bytes-at-a-time scan against a byte-at-a-time reference, over
 * random records: words of 1 to 82 bytes (across 16- and 32-byte steps),
 * every whitespace byte, NUL and high bytes, records that end mid-word
 * next to one that starts with a word (not one word), and words that end
 * the batch's data. */
typedef struct ref_word { const char *p; size_t len; double count; } ref_word_t;

static int ref_space(unsigned char c) { return c == ' ' || (c >= 9 && c <= 13); }

/* The reference count of records [lo, hi) of b; with ids and ends, each
 * word's id (1 + its index in words) and each record's end in ids. */
static void ref_count(const sr_batch_t *b, size_t lo, size_t hi, ref_word_t *words, size_t *n, size_t *total,
                      uint32_t *ids, uint32_t *ends)
{
    *n = 0;
    *total = 0;
    if (ends) ends[0] = 0;
    for (size_t r = lo; r < hi; r++) {
        size_t i = b->off[r], end = b->off[r + 1];
        while (i < end) {
            while (i < end && ref_space((unsigned char)b->data[i])) i++;
            if (i >= end) break;
            size_t start = i;
            while (i < end && !ref_space((unsigned char)b->data[i])) i++;
            size_t k = 0;
            while (k < *n && !(words[k].len == i - start && memcmp(words[k].p, b->data + start, i - start) == 0)) k++;
            if (k == *n) {
                words[k].p = b->data + start;
                words[k].len = i - start;
                words[k].count = 0;
                (*n)++;
            }
            words[k].count++;
            if (ids) ids[*total] = (uint32_t)k + 1;
            (*total)++;
        }
        if (ends) ends[r - lo + 1] = (uint32_t)*total;
    }
}

static void test_scan_matches_reference(void **state)
{
    (void)state;
    static const char spaces[] = " \t\n\v\f\r";
    static const char vocab[][96] = {
        "a", "to", "be", "the", "abcdefg", "abcdefgh", "abcdefghi", "abcdefghijklmno", "abcdefghijklmnop",
        "abcdefghijklmnopq", "abcdefghijklmnopqrstuvwxyz012345", "abcdefghijklmnopqrstuvwxyz0123456",
        "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ-long-word-of-82-bytes",
        "\x80\xff\xfe", "x\x01y",
    };
    enum { NV = sizeof(vocab) / sizeof(vocab[0]) };
    unsigned seed = 12345;
    sr_wordcount_t *wc = sr_wordcount_new();
    ref_word_t *ref = malloc(4096 * sizeof(*ref));
    for (int round = 0; round < 200; round++) {
        sr_batch_t b;
        sr_batch_init(&b, 0, 0);
        int records = 1 + round % 37;
        for (int r = 0; r < records; r++) {
            char line[600];
            size_t len = 0;
            int parts = (int)((seed = seed * 1103515245u + 12345u) >> 16) % 12;
            for (int k = 0; k < parts; k++) {
                seed = seed * 1103515245u + 12345u;
                unsigned x = seed >> 8;
                if (x % 3 == 0) {
                    int ns = 1 + (int)(x / 3 % 20); /* runs of whitespace, some past 16 bytes */
                    for (int q = 0; q < ns; q++) line[len++] = spaces[(x + (unsigned)q) % 6];
                } else {
                    const char *w = vocab[x / 3 % NV];
                    size_t wl = strlen(w);
                    if (x % 7 == 0) wl = 1 + x / 21 % wl; /* a prefix: words alike at the start */
                    memcpy(line + len, w, wl);
                    len += wl;
                    if (x % 11 == 0) line[len++] = '\0';
                    if (x % 2) line[len++] = ' ';
                }
            }
            sr_batch_append(&b, line, len, r);
        }
        size_t rn, rtotal;
        ref_count(&b, 0, b.n, ref, &rn, &rtotal, NULL, NULL);
        assert_int_equal(sr_wordcount_batch(wc, &b), 0);
        assert_int_equal(wc->n, rn);
        assert_int_equal(wc->words, rtotal);
        for (size_t k = 0; k < rn; k++) {
            assert_int_equal(wc->word[k].len, ref[k].len);
            assert_memory_equal(wc->data + wc->word[k].off, ref[k].p, ref[k].len);
            assert_true(wc->word[k].count == ref[k].count);
        }
        /* Each word of a range named by its distinct word, and where each
         * record's words end. */
        size_t lo = round % 3 == 0 ? 0 : (size_t)round % b.n, hi = b.n - (size_t)(round % 5 == 1 && lo + 1 < b.n);
        static uint32_t ids[8000], ends[64];
        ref_count(&b, lo, hi, ref, &rn, &rtotal, ids, ends);
        assert_int_equal(sr_wordcount_ids(wc, &b, lo, hi), 0);
        assert_int_equal(wc->n, rn);
        assert_int_equal(wc->words, rtotal);
        for (size_t r = 0; r <= hi - lo; r++) assert_int_equal(wc->rec_end[r], ends[r]);
        for (size_t j = 0; j < rtotal; j++) assert_int_equal(wc->ids[j], ids[j]);
        for (size_t k = 0; k < rn; k++) assert_memory_equal(wc->data + wc->word[k].off, ref[k].p, ref[k].len);
        sr_batch_close(&b);
    }
    free(ref);
    sr_wordcount_free(wc);
}

/* sr_wordcount_ids keeps its words from call to call: over batches freed
 * after their call, a word keeps the id it first had, new words come after,
 * and the bytes of each stay readable; forgotten, ids start over. */
static void test_ids_kept_across_calls(void **state)
{
    (void)state;
    static const char *lines[][3] = {
        {"alpha beta", "gamma alpha", "a-word-longer-than-sixteen-bytes beta"},
        {"beta delta", "a-word-longer-than-sixteen-bytes-too", "alpha epsilon gamma"},
        {"delta", "", "a-word-longer-than-sixteen-bytes zeta"},
    };
    char known[16][64];
    size_t nknown = 0;
    sr_wordcount_t *wc = sr_wordcount_new();
    for (int round = 0; round < 2; round++) {
        nknown = 0;
        for (int bi = 0; bi < 3; bi++) {
            sr_batch_t b;
            sr_batch_init(&b, 0, 0);
            for (int r = 0; r < 3; r++) sr_batch_append(&b, lines[bi][r], strlen(lines[bi][r]), r);
            assert_int_equal(sr_wordcount_ids(wc, &b, 0, b.n), 0);
            /* Each word's id: its place among the words seen since the
             * start (or the last forget), first seen first. */
            size_t j = 0;
            for (int r = 0; r < 3; r++) {
                char line[128];
                snprintf(line, sizeof(line), "%s", lines[bi][r]);
                for (char *w = strtok(line, " "); w; w = strtok(NULL, " ")) {
                    size_t k = 0;
                    while (k < nknown && strcmp(known[k], w) != 0) k++;
                    if (k == nknown) snprintf(known[nknown++], sizeof(known[0]), "%s", w);
                    assert_int_equal(wc->ids[j], k + 1);
                    j++;
                }
            }
            assert_int_equal(wc->words, j);
            assert_int_equal(wc->n, nknown);
            sr_batch_close(&b);
            /* (the batch is gone: the words' bytes are the table's own) */
            for (size_t k = 0; k < nknown; k++) {
                assert_int_equal(wc->word[k].len, strlen(known[k]));
                assert_memory_equal(wc->data + wc->word[k].off, known[k], strlen(known[k]));
            }
        }
        sr_wordcount_forget(wc);
        assert_int_equal(wc->n, 0);
    }
    /* Past the table's first size (it is rebuilt from the kept bytes):
     * 6000 distinct words over 3 batches, every other one long, each
     * batch naming the words of the one before again. */
    for (int bi = 0; bi < 3; bi++) {
        sr_batch_t b;
        sr_batch_init(&b, 0, 0);
        for (int k = bi == 0 ? 0 : (bi - 1) * 2000; k < (bi + 1) * 2000; k++) {
            char w[64];
            int len = snprintf(w, sizeof(w), k % 2 ? "w%d" : "w%d-and-more-than-sixteen-bytes", k);
            sr_batch_append(&b, w, (size_t)len, k);
        }
        assert_int_equal(sr_wordcount_ids(wc, &b, 0, b.n), 0);
        size_t j = 0;
        for (int k = bi == 0 ? 0 : (bi - 1) * 2000; k < (bi + 1) * 2000; k++) assert_int_equal(wc->ids[j++], k + 1);
        assert_int_equal(wc->n, (size_t)(bi + 1) * 2000);
        sr_batch_close(&b);
    }
    for (int k = 0; k < 6000; k += 997) {
        char w[64];
        int len = snprintf(w, sizeof(w), k % 2 ? "w%d" : "w%d-and-more-than-sixteen-bytes", k);
        assert_int_equal(wc->word[k].len, (size_t)len);
        assert_memory_equal(wc->data + wc->word[k].off, w, (size_t)len);
    }
    sr_wordcount_forget(wc);
    /* A count forgets them too. */
    sr_batch_t b;
    sr_batch_init(&b, 0, 0);
    sr_batch_append(&b, "zeta alpha", 10, 0);
    assert_int_equal(sr_wordcount_ids(wc, &b, 0, 1), 0);
    assert_int_equal(sr_wordcount_batch(wc, &b), 0);
    assert_int_equal(sr_wordcount_ids(wc, &b, 0, 1), 0);
    assert_int_equal(wc->n, 2);
    assert_int_equal(wc->ids[0], 1);
    assert_int_equal(wc->ids[1], 2);
    sr_batch_close(&b);
    sr_wordcount_free(wc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counts_in_first_appearance_order),
        cmocka_unit_test(test_many_distinct_words),
        cmocka_unit_test(test_words_alike_at_the_start),
        cmocka_unit_test(test_scan_matches_reference),
        cmocka_unit_test(test_ids_kept_across_calls),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
