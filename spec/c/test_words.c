/* test_words: the C word counter: splitting on every whitespace byte, counts,
 * order of first appearance, growth past the initial table, and reuse. */
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counts_in_first_appearance_order),
        cmocka_unit_test(test_many_distinct_words),
        cmocka_unit_test(test_words_alike_at_the_start),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
