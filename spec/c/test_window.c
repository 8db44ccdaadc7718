/* test_window: the slice ring of a windowed stage (sr_window): pushes in
 * time order, growth, order across wrap-around, drop_until, slices with no
 * data, memory accounting, and out-of-memory behaviour without leaks. */
#include "sr_test.h"

#include "sr_alloc.h"
#include "sr_error.h"
#include "sr_window.h"

/* Pushes a slice whose bytes are the decimal text of its time. */
static int push_time(sr_window_t *w, int64_t t)
{
    char buf[32];
    int len = snprintf(buf, sizeof(buf), "%lld", (long long)t);
    return sr_window_push(w, t, buf, (size_t)len, 1);
}

/* Asserts that the i-th oldest slice is the one push_time(t) made. */
static void assert_slice(const sr_window_t *w, size_t i, int64_t t)
{
    char buf[32];
    int len = snprintf(buf, sizeof(buf), "%lld", (long long)t);
    const sr_slice_t *s = sr_window_slice(w, i);
    assert_non_null(s);
    assert_int_equal(s->time_ms, t);
    assert_int_equal(s->len, (size_t)len);
    assert_int_equal(s->count, 1);
    assert_memory_equal(s->data, buf, (size_t)len);
}

/* The bytes of data the window's slices hold, summed slice by slice. */
static size_t sum_of_lens(const sr_window_t *w)
{
    size_t total = 0;
    for (size_t i = 0; i < w->n; i++) total += sr_window_slice(w, i)->len;
    return total;
}

static void test_new_and_free(void **state)
{
    (void)state;
    size_t before = sr_alloc_used();
    char name[] = "counts";
    sr_window_t *w = sr_window_new(name);
    assert_non_null(w);
    name[0] = 'X'; /* the window has its own copy */
    assert_string_equal(w->name, "counts");
    assert_int_equal(w->n, 0);
    assert_int_equal(w->data_bytes, 0);
    assert_null(sr_window_slice(w, 0));
    sr_window_drop_until(w, INT64_MAX); /* nothing to drop */
    sr_window_free(w);
    assert_int_equal(sr_alloc_used(), before);
    /* A NULL name is the empty name; freeing NULL does nothing. */
    w = sr_window_new(NULL);
    assert_non_null(w);
    assert_string_equal(w->name, "");
    sr_window_free(w);
    sr_window_free(NULL);
    assert_int_equal(sr_alloc_used(), before);
}

static void test_push_growth_and_order(void **state)
{
    (void)state;
    size_t before = sr_alloc_used();
    sr_window_t *w = sr_window_new("w");
    for (int64_t i = 1; i <= 100; i++) {
        assert_int_equal(push_time(w, i * 1000), SR_OK);
        assert_int_equal(w->n, (size_t)i);
        assert_true(w->cap >= w->n);
    }
    /* The ring grew from 8 by doubling. */
    assert_int_equal(w->cap, 128);
    for (size_t i = 0; i < 100; i++) assert_slice(w, i, (int64_t)(i + 1) * 1000);
    assert_null(sr_window_slice(w, 100));
    assert_int_equal(w->data_bytes, sum_of_lens(w));
    /* The bytes are copied: the caller's buffer may change afterwards. */
    char buf[] = "abc";
    assert_int_equal(sr_window_push(w, 200000, buf, 3, 7), SR_OK);
    buf[0] = 'z';
    const sr_slice_t *s = sr_window_slice(w, 100);
    assert_memory_equal(s->data, "abc", 3);
    assert_int_equal(s->count, 7);
    /* Times need not be evenly spaced, and may be 0 or negative. */
    sr_window_t *w2 = sr_window_new("w2");
    assert_int_equal(push_time(w2, -5000), SR_OK);
    assert_int_equal(push_time(w2, 0), SR_OK);
    assert_int_equal(push_time(w2, 1), SR_OK);
    assert_int_equal(push_time(w2, INT64_MAX), SR_OK);
    assert_slice(w2, 0, -5000);
    assert_slice(w2, 3, INT64_MAX);
    sr_window_free(w2);
    sr_window_free(w);
    assert_int_equal(sr_alloc_used(), before);
}

static void test_times_must_increase(void **state)
{
    (void)state;
    size_t before = sr_alloc_used();
    sr_window_t *w = sr_window_new("w");
    assert_int_equal(push_time(w, 2000), SR_OK);
    size_t bytes = w->data_bytes;
    /* The same time again, or an earlier one, is refused and changes nothing. */
    assert_int_equal(push_time(w, 2000), SR_EINVAL);
    assert_int_equal(push_time(w, 1000), SR_EINVAL);
    assert_int_equal(sr_window_push(w, 1999, NULL, 0, 0), SR_EINVAL);
    assert_int_equal(w->n, 1);
    assert_int_equal(w->data_bytes, bytes);
    assert_slice(w, 0, 2000);
    assert_int_equal(push_time(w, 2001), SR_OK);
    assert_int_equal(push_time(w, 2001), SR_EINVAL);
    /* Only the newest slice counts, not the oldest: after a drop too. */
    sr_window_drop_until(w, 2000);
    assert_int_equal(push_time(w, 2000), SR_EINVAL);
    assert_int_equal(push_time(w, 3000), SR_OK);
    assert_int_equal(w->n, 2);
    assert_slice(w, 0, 2001);
    assert_slice(w, 1, 3000);
    sr_window_free(w);
    assert_int_equal(sr_alloc_used(), before);
}

static void test_drop_until(void **state)
{
    (void)state;
    size_t before = sr_alloc_used();
    sr_window_t *w = sr_window_new("w");
    for (int64_t t = 1000; t <= 10000; t += 1000) assert_int_equal(push_time(w, t), SR_OK);
    /* Before the oldest: nothing goes. */
    sr_window_drop_until(w, 999);
    sr_window_drop_until(w, INT64_MIN);
    assert_int_equal(w->n, 10);
    /* Exactly a slice's time: that slice goes too (<=). */
    sr_window_drop_until(w, 3000);
    assert_int_equal(w->n, 7);
    assert_slice(w, 0, 4000);
    /* Between two slices. */
    sr_window_drop_until(w, 5500);
    assert_int_equal(w->n, 5);
    assert_slice(w, 0, 6000);
    assert_slice(w, 4, 10000);
    assert_int_equal(w->data_bytes, sum_of_lens(w));
    /* Again with the same time: nothing more. */
    sr_window_drop_until(w, 5500);
    assert_int_equal(w->n, 5);
    /* Past the newest: everything, and pushing goes on. */
    sr_window_drop_until(w, 10000);
    assert_int_equal(w->n, 0);
    assert_int_equal(w->data_bytes, 0);
    assert_null(sr_window_slice(w, 0));
    assert_int_equal(push_time(w, 11000), SR_OK);
    assert_slice(w, 0, 11000);
    sr_window_free(w);
    assert_int_equal(sr_alloc_used(), before);
}

static void test_memory_accounting(void **state)
{
    (void)state;
    size_t before = sr_alloc_used();
    sr_window_t *w = sr_window_new("memory");
    assert_int_equal(sr_window_memory(w), sizeof(sr_window_t));
    char big[1000];
    memset(big, 'x', sizeof(big));
    for (int i = 1; i <= 20; i++) {
        assert_int_equal(sr_window_push(w, i, big, (size_t)i * 10, (uint32_t)i), SR_OK);
        assert_int_equal(w->data_bytes, (size_t)(i * (i + 1) / 2) * 10);
        assert_int_equal(sr_window_memory(w), sizeof(sr_window_t) + w->cap * sizeof(sr_slice_t) + w->data_bytes);
        /* What the allocator gave is at least what the window counts. */
        assert_true(sr_alloc_used() - before >= sr_window_memory(w));
    }
    size_t full = sr_window_memory(w);
    size_t used_full = sr_alloc_used();
    sr_window_drop_until(w, 10);
    assert_int_equal(w->data_bytes, sum_of_lens(w));
    assert_int_equal(w->data_bytes, (size_t)(210 - 55) * 10);
    assert_true(sr_window_memory(w) < full);
    /* Dropped slices' bytes go back to the allocator. */
    assert_true(sr_alloc_used() < used_full);
    assert_true(sr_alloc_used() - before >= sr_window_memory(w));
    sr_window_drop_until(w, INT64_MAX);
    assert_int_equal(w->data_bytes, 0);
    /* The ring itself stays as large as it grew. */
    assert_int_equal(sr_window_memory(w), sizeof(sr_window_t) + w->cap * sizeof(sr_slice_t));
    sr_window_free(w);
    assert_int_equal(sr_alloc_used(), before);
}

static void test_slices_with_no_data(void **state)
{
    (void)state;
    size_t before = sr_alloc_used();
    sr_window_t *w = sr_window_new("empty");
    /* An empty batch: no bytes, no elements; NULL or not, nothing is copied. */
    assert_int_equal(sr_window_push(w, 1000, NULL, 0, 0), SR_OK);
    assert_int_equal(sr_window_push(w, 2000, "ignored", 0, 0), SR_OK);
    assert_int_equal(push_time(w, 3000), SR_OK);
    assert_int_equal(sr_window_push(w, 4000, NULL, 0, 0), SR_OK);
    assert_int_equal(w->n, 4);
    const sr_slice_t *s = sr_window_slice(w, 0);
    assert_int_equal(s->time_ms, 1000);
    assert_null(s->data);
    assert_int_equal(s->len, 0);
    assert_int_equal(s->count, 0);
    s = sr_window_slice(w, 1);
    assert_int_equal(s->time_ms, 2000);
    assert_null(s->data);
    assert_int_equal(s->len, 0);
    assert_slice(w, 2, 3000);
    assert_int_equal(w->data_bytes, 4);
    assert_int_equal(sr_window_memory(w), sizeof(sr_window_t) + w->cap * sizeof(sr_slice_t) + 4);
    /* Empty slices are dropped like the others. */
    sr_window_drop_until(w, 2000);
    assert_int_equal(w->n, 2);
    assert_slice(w, 0, 3000);
    sr_window_drop_until(w, 4000);
    assert_int_equal(w->n, 0);
    assert_int_equal(w->data_bytes, 0);
    /* Many empty slices cost the ring only. */
    for (int64_t t = 5000; t < 5000 + 1000; t++) assert_int_equal(sr_window_push(w, t, NULL, 0, 0), SR_OK);
    assert_int_equal(w->data_bytes, 0);
    assert_int_equal(sr_window_memory(w), sizeof(sr_window_t) + w->cap * sizeof(sr_slice_t));
    sr_window_free(w);
    assert_int_equal(sr_alloc_used(), before);
}

static void test_wrapping_ring(void **state)
{
    (void)state;
    size_t before = sr_alloc_used();
    sr_window_t *w = sr_window_new("wrap");
    /* A window of 5 slices sliding over 100000 batches: the ring never
     * grows past 8 and wraps around thousands of times. */
    enum { KEEP = 5, N = 100000 };
    for (int64_t i = 1; i <= N; i++) {
        int64_t t = i * 1000;
        assert_int_equal(push_time(w, t), SR_OK);
        sr_window_drop_until(w, t - KEEP * 1000);
        size_t expect_n = i < KEEP ? (size_t)i : KEEP;
        assert_int_equal(w->n, expect_n);
        assert_int_equal(w->cap, 8);
        if (i % 997 == 0 || i > N - 20) {
            for (size_t j = 0; j < w->n; j++) assert_slice(w, j, t - (int64_t)(w->n - 1 - j) * 1000);
            assert_int_equal(w->data_bytes, sum_of_lens(w));
        }
    }
    assert_int_not_equal(w->head, 0);
    /* Growth while wrapped (head in the middle of the ring) keeps order. */
    int64_t last = (int64_t)N * 1000;
    for (int k = 1; k <= 30; k++) assert_int_equal(push_time(w, last + k), SR_OK);
    assert_int_equal(w->n, KEEP + 30);
    assert_int_equal(w->cap, 64);
    for (size_t j = 0; j < KEEP; j++) assert_slice(w, j, last - (int64_t)(KEEP - 1 - j) * 1000);
    for (int k = 1; k <= 30; k++) assert_slice(w, KEEP + (size_t)k - 1, last + k);
    assert_int_equal(w->data_bytes, sum_of_lens(w));
    /* Drop and push in uneven steps across the wrap point. */
    int64_t t = last + 30;
    for (int round = 0; round < 1000; round++) {
        for (int k = 0; k < round % 7 + 1; k++) assert_int_equal(push_time(w, ++t), SR_OK);
        sr_window_drop_until(w, t - (round % 11) - 3);
        const sr_slice_t *oldest = sr_window_slice(w, 0);
        assert_non_null(oldest);
        assert_true(oldest->time_ms > t - (round % 11) - 3);
        for (size_t j = 0; j + 1 < w->n; j++) {
            assert_true(sr_window_slice(w, j)->time_ms < sr_window_slice(w, j + 1)->time_ms);
        }
        assert_int_equal(sr_window_slice(w, w->n - 1)->time_ms, t);
        assert_int_equal(w->data_bytes, sum_of_lens(w));
    }
    sr_window_free(w);
    assert_int_equal(sr_alloc_used(), before);
}

/* Fills a window to exactly its capacity, so the next push must grow it. */
static sr_window_t *full_window(void)
{
    sr_window_t *w = sr_window_new("oom");
    if (!w) return NULL;
    for (int64_t t = 1; t <= 8; t++) {
        if (push_time(w, t) != SR_OK) {
            sr_window_free(w);
            return NULL;
        }
    }
    return w;
}

static void test_out_of_memory(void **state)
{
    (void)state;
    size_t before = sr_alloc_used();
    /* sr_window_new: the struct or the name fails. */
    for (long fail = 0; fail < 2; fail++) {
        sr_alloc_fail_after(fail);
        sr_window_t *w = sr_window_new("x");
        sr_alloc_fail_after(-1);
        assert_null(w);
        assert_int_equal(sr_alloc_used(), before);
    }
    /* A push that needs to grow the ring and copy data: either allocation
     * may fail; the window is then as it was and still works. */
    int failures = 0;
    for (long fail = 0; fail < 4; fail++) {
        sr_window_t *w = full_window();
        assert_non_null(w);
        assert_int_equal(w->cap, 8);
        size_t bytes = w->data_bytes;
        sr_alloc_fail_after(fail);
        int rc = push_time(w, 100);
        sr_alloc_fail_after(-1);
        if (rc == SR_ENOMEM) {
            failures++;
            assert_int_equal(w->n, 8);
            assert_int_equal(w->data_bytes, bytes);
            for (size_t i = 0; i < 8; i++) assert_slice(w, i, (int64_t)i + 1);
            /* The same time can be pushed once memory is back. */
            assert_int_equal(push_time(w, 100), SR_OK);
        } else {
            assert_int_equal(rc, SR_OK);
        }
        assert_int_equal(w->n, 9);
        assert_slice(w, 8, 100);
        for (size_t i = 0; i < 8; i++) assert_slice(w, i, (int64_t)i + 1);
        sr_window_free(w);
        assert_int_equal(sr_alloc_used(), before);
    }
    /* Both the ring's growth and the data's copy failed once. */
    assert_int_equal(failures, 2);
    /* A push with room in the ring: only the copy can fail. */
    sr_window_t *w = sr_window_new("oom");
    assert_int_equal(push_time(w, 1), SR_OK);
    sr_alloc_fail_after(0);
    assert_int_equal(push_time(w, 2), SR_ENOMEM);
    sr_alloc_fail_after(-1);
    assert_int_equal(w->n, 1);
    /* An empty slice allocates nothing, so it cannot fail. */
    sr_alloc_fail_after(0);
    assert_int_equal(sr_window_push(w, 3, NULL, 0, 0), SR_OK);
    sr_alloc_fail_after(-1);
    assert_int_equal(w->n, 2);
    sr_window_free(w);
    assert_int_equal(sr_alloc_used(), before);
    /* Every allocation of a long run failing in turn: no leak, order kept. */
    for (long fail = 0; fail < 40; fail++) {
        w = sr_window_new("run");
        if (!w) continue;
        sr_alloc_fail_after(fail);
        int64_t t = 0;
        for (int i = 0; i < 40; i++) {
            if (push_time(w, t + 1) == SR_OK) t++;
            if (i % 5 == 4) sr_window_drop_until(w, t - 3);
        }
        sr_alloc_fail_after(-1);
        for (size_t j = 0; j + 1 < w->n; j++) {
            assert_true(sr_window_slice(w, j)->time_ms < sr_window_slice(w, j + 1)->time_ms);
        }
        assert_int_equal(w->data_bytes, sum_of_lens(w));
        sr_window_free(w);
        assert_int_equal(sr_alloc_used(), before);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_and_free),
        cmocka_unit_test(test_push_growth_and_order),
        cmocka_unit_test(test_times_must_increase),
        cmocka_unit_test(test_drop_until),
        cmocka_unit_test(test_memory_accounting),
        cmocka_unit_test(test_slices_with_no_data),
        cmocka_unit_test(test_wrapping_ring),
        cmocka_unit_test(test_out_of_memory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
