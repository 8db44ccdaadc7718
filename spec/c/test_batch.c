/* test_batch: the record buffer: append, growth past its first capacity
 * and into reserved address space (or blocks, where refused), the record and byte limits, clearing. */
#include "sr_test.h"

#include "sr_alloc.h"
#include "sr_batch.h"
#include "sr_error.h"

static void expect_record(const sr_batch_t *b, size_t i, const char *text, int64_t pos)
{
    assert_true(i < b->n);
    size_t len = b->off[i + 1] - b->off[i];
    assert_int_equal(len, strlen(text));
    assert_memory_equal(b->data + b->off[i], text, len);
    assert_int_equal(b->pos[i], pos);
}

static void test_append(void **state)
{
    (void)state;
    sr_batch_t b;
    sr_batch_init(&b, 0, 0);
    assert_int_equal(b.n, 0);
    assert_int_equal(b.len, 0);
    assert_int_equal(sr_batch_append(&b, "hello", 5, 10), SR_OK);
    assert_int_equal(sr_batch_append(&b, "", 0, 16), SR_OK);
    assert_int_equal(sr_batch_append(&b, "wo\0rld", 6, 17), SR_OK);
    assert_int_equal(b.n, 3);
    assert_int_equal(b.len, 11);
    assert_int_equal(b.off[0], 0);
    expect_record(&b, 0, "hello", 10);
    expect_record(&b, 1, "", 16);
    assert_int_equal(b.off[3] - b.off[2], 6);
    assert_memory_equal(b.data + b.off[2], "wo\0rld", 6);
    assert_int_equal(b.pos[2], 17);
    sr_batch_close(&b);
    assert_null(b.data);
}

/* Appends n records "record-<i>" at positions i * 100 to b and reads every
 * step-th and the last back. */
static void fill_and_check(sr_batch_t *b, int n, int step)
{
    char rec[64];
    for (int i = 0; i < n; i++) {
        int len = snprintf(rec, sizeof(rec), "record-%d", i);
        assert_int_equal(sr_batch_append(b, rec, (size_t)len, (int64_t)i * 100), SR_OK);
    }
    assert_int_equal(b->n, (size_t)n);
    for (int i = 0; i < n; i += step) {
        snprintf(rec, sizeof(rec), "record-%d", i);
        expect_record(b, (size_t)i, rec, (int64_t)i * 100);
    }
    snprintf(rec, sizeof(rec), "record-%d", n - 1);
    expect_record(b, (size_t)n - 1, rec, (int64_t)(n - 1) * 100);
}

static void test_grow(void **state)
{
    (void)state;
    size_t before = sr_alloc_used();
    sr_batch_t b;
    sr_batch_init(&b, 0, 0);
    /* Past the first record capacity (256) and the first byte capacity. */
    fill_and_check(&b, 3000, 123);
    assert_true(b.cap >= b.len);
    assert_true(b.ncap >= b.n);
    /* One record bigger than the whole buffer. */
    char big[10000];
    memset(big, 'x', sizeof(big));
    assert_int_equal(sr_batch_append(&b, big, sizeof(big), -1), SR_OK);
    assert_int_equal(b.off[b.n] - b.off[b.n - 1], sizeof(big));
    assert_memory_equal(b.data + b.off[b.n - 1], big, sizeof(big));
    sr_batch_close(&b);
    assert_int_equal(sr_alloc_used(), before);
}

/* Whether this system grants a reservation of address space at all (a
 * limit on it refuses one). */
static int can_reserve(void)
{
    void *p = sr_reserve(SR_ALLOC_HUGE, 0);
    if (!p) return 0;
    sr_free_reserved(p, SR_ALLOC_HUGE, 0);
    return 1;
}

/* Past the size from which buffers are reserved: every record
 * reads back the same, whether they grow within reserved address space
 * (without moving) or, where the system refuses it, by copying. */
static void grow_large(int reserve, size_t max_bytes)
{
    sr_alloc_refuse_reserve(!reserve);
    size_t before = sr_alloc_used();
    sr_batch_t b;
    sr_batch_init(&b, 0, max_bytes);
    fill_and_check(&b, 400000, 997); /* data: 4.7 MB, pos: 3.2 MB */
    assert_true(b.cap >= ((size_t)4 << 20));
    const char *data = b.data;
    sr_batch_clear(&b);
    fill_and_check(&b, 1200000, 997); /* pos: 9.6 MB, data: ~15 MB */
    assert_true(b.cap >= ((size_t)8 << 20));
    assert_true(b.ncap >= 1200000);
    assert_int_equal(b.rsv != 0, reserve);
    assert_int_equal(b.nrsv != 0, reserve);
    if (reserve) {
        assert_ptr_equal(b.data, data);
        /* Twice the batch's limit, or without one what its offsets reach. */
        assert_int_equal(b.rsv, max_bytes ? 2 * max_bytes : (size_t)UINT32_MAX + 1);
        assert_int_equal(b.nrsv, (size_t)1 << 28);
    } else {
        assert_ptr_not_equal(b.data, data);
    }
    /* Cleared and filled again: the memory is kept and not grown. */
    sr_batch_clear(&b);
    data = b.data;
    size_t cap = b.cap, ncap = b.ncap;
    fill_and_check(&b, 1200000, 997);
    assert_ptr_equal(b.data, data);
    assert_int_equal(b.cap, cap);
    assert_int_equal(b.ncap, ncap);
    sr_batch_close(&b);
    assert_int_equal(sr_alloc_used(), before);
    sr_alloc_refuse_reserve(0);
}

static void test_grow_large_reserved(void **state)
{
    (void)state;
    if (!can_reserve()) {
        print_message("(no address space to reserve here: the refused case only)\n");
        return;
    }
    grow_large(1, 0);
    grow_large(1, (size_t)32 << 20);
}

static void test_grow_large_refused(void **state)
{
    (void)state;
    grow_large(0, 0);
}

/* Growing within a reservation can be refused (strict overcommit): the
 * record is refused, the batch keeps what it held. */
static void test_grow_reserved_refused(void **state)
{
    (void)state;
    if (!can_reserve()) return;
    size_t before = sr_alloc_used();
    sr_batch_t b;
    sr_batch_init(&b, 0, 0);
    fill_and_check(&b, 600000, 997);
    assert_true(b.rsv != 0 && b.nrsv != 0);
    /* The data's next growth, then the records' (off, then pos). */
    char big[64];
    memset(big, 'y', sizeof(big));
    while (b.len + sizeof(big) <= b.cap) assert_int_equal(sr_batch_append(&b, big, sizeof(big), 1), SR_OK);
    size_t n = b.n, len = b.len;
    assert_true(n < b.ncap); /* (the bytes grow, not the records) */
    sr_alloc_fail_after(0);
    assert_int_equal(sr_batch_append(&b, big, sizeof(big), 1), SR_ENOMEM);
    assert_int_equal(b.n, n);
    assert_int_equal(b.len, len);
    assert_int_equal(sr_batch_append(&b, big, sizeof(big), 1), SR_OK);
    while (b.n < b.ncap) assert_int_equal(sr_batch_append(&b, "", 0, 2), SR_OK);
    for (long k = 0; k < 2; k++) {
        n = b.n;
        sr_alloc_fail_after(k);
        assert_int_equal(sr_batch_append(&b, "", 0, 3), SR_ENOMEM);
        sr_alloc_fail_after(-1);
        assert_int_equal(b.n, n);
    }
    assert_int_equal(sr_batch_append(&b, "z", 1, 4), SR_OK);
    assert_memory_equal(b.data + b.off[b.n - 1], "z", 1);
    assert_int_equal(b.pos[b.n - 1], 4);
    sr_batch_close(&b);
    assert_int_equal(sr_alloc_used(), before);
}

static void test_full_by_records(void **state)
{
    (void)state;
    sr_batch_t b;
    sr_batch_init(&b, 3, 0);
    assert_false(sr_batch_full(&b));
    sr_batch_append(&b, "a", 1, 0);
    sr_batch_append(&b, "b", 1, 2);
    assert_false(sr_batch_full(&b));
    sr_batch_append(&b, "c", 1, 4);
    assert_true(sr_batch_full(&b));
    /* Never refuses a record: the caller stops reading instead. */
    assert_int_equal(sr_batch_append(&b, "d", 1, 6), SR_OK);
    assert_int_equal(b.n, 4);
    assert_true(sr_batch_full(&b));
    sr_batch_close(&b);
}

static void test_full_by_bytes(void **state)
{
    (void)state;
    sr_batch_t b;
    sr_batch_init(&b, 0, 10);
    sr_batch_append(&b, "12345", 5, 0);
    assert_false(sr_batch_full(&b));
    sr_batch_append(&b, "1234", 4, 6);
    assert_false(sr_batch_full(&b));
    sr_batch_append(&b, "1", 1, 11);
    assert_true(sr_batch_full(&b));
    sr_batch_close(&b);

    /* Either limit closes it. */
    sr_batch_init(&b, 2, 100);
    sr_batch_append(&b, "x", 1, 0);
    sr_batch_append(&b, "y", 1, 0);
    assert_true(sr_batch_full(&b));
    sr_batch_close(&b);
    sr_batch_init(&b, 100, 2);
    sr_batch_append(&b, "xyz", 3, 0);
    assert_true(sr_batch_full(&b));
    sr_batch_close(&b);
}

static void test_no_limits(void **state)
{
    (void)state;
    sr_batch_t b;
    sr_batch_init(&b, 0, 0);
    for (int i = 0; i < 1000; i++) sr_batch_append(&b, "0123456789", 10, i);
    assert_false(sr_batch_full(&b));
    sr_batch_close(&b);
}

static void test_clear(void **state)
{
    (void)state;
    sr_batch_t b;
    sr_batch_init(&b, 2, 0);
    sr_batch_append(&b, "one", 3, 0);
    sr_batch_append(&b, "two", 3, 4);
    assert_true(sr_batch_full(&b));
    char *data = b.data;
    size_t cap = b.cap, ncap = b.ncap;
    size_t used = sr_alloc_used();
    sr_batch_clear(&b);
    assert_int_equal(b.n, 0);
    assert_int_equal(b.len, 0);
    assert_false(sr_batch_full(&b));
    /* The memory is kept for the next batch. */
    assert_ptr_equal(b.data, data);
    assert_int_equal(b.cap, cap);
    assert_int_equal(b.ncap, ncap);
    assert_int_equal(sr_alloc_used(), used);
    sr_batch_append(&b, "three", 5, 8);
    assert_int_equal(b.n, 1);
    expect_record(&b, 0, "three", 8);
    assert_int_equal(sr_alloc_used(), used);
    sr_batch_close(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_append),
        cmocka_unit_test(test_grow),
        cmocka_unit_test(test_grow_large_reserved),
        cmocka_unit_test(test_grow_large_refused),
        cmocka_unit_test(test_grow_reserved_refused),
        cmocka_unit_test(test_full_by_records),
        cmocka_unit_test(test_full_by_bytes),
        cmocka_unit_test(test_no_limits),
        cmocka_unit_test(test_clear),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
