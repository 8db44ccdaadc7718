/* test_alloc: the counting allocator, injected failures, and that callers
 * (the batch, the splitter) fail cleanly under them without leaking. */
#include "sr_test.h"

#include "sr_alloc.h"
#include "sr_batch.h"
#include "sr_error.h"
#include "sr_linesplit.h"

/* The allocator may round a request up, by less than 32 bytes a block. */
#define assert_used(base, asked, blocks)                                   \
    do {                                                                   \
        assert_true(sr_alloc_used() >= (base) + (asked));                  \
        assert_true(sr_alloc_used() < (base) + (asked) + 32 * (blocks));   \
    } while (0)

static void test_counting(void **state)
{
    (void)state;
    size_t base = sr_alloc_used();
    char *a = sr_malloc(100);
    assert_non_null(a);
    assert_used(base, 100, 1);
    char *b = sr_calloc(10, 8);
    assert_non_null(b);
    for (int i = 0; i < 80; i++) assert_int_equal(b[i], 0);
    assert_used(base, 180, 2);
    a = sr_realloc(a, 1000);
    assert_non_null(a);
    assert_used(base, 1080, 2);
    a = sr_realloc(a, 10);
    assert_used(base, 90, 2);
    char *s = sr_strdup("streamrun");
    assert_string_equal(s, "streamrun");
    assert_used(base, 100, 3);
    char *r = sr_realloc(NULL, 5); /* realloc(NULL) is malloc */
    assert_used(base, 105, 4);
    sr_free(r);
    sr_free(s);
    sr_free(b);
    sr_free(a);
    sr_free(NULL);
    assert_int_equal(sr_alloc_used(), base);
}

static void test_fail_after(void **state)
{
    (void)state;
    size_t base = sr_alloc_used();
    sr_alloc_fail_after(0);
    assert_null(sr_malloc(1));
    void *p = sr_malloc(1); /* one failure only */
    assert_non_null(p);
    sr_free(p);

    sr_alloc_fail_after(2);
    void *x = sr_malloc(8), *y = sr_calloc(1, 8), *z = sr_strdup("z");
    assert_non_null(x);
    assert_non_null(y);
    assert_null(z);
    /* A failed realloc keeps the old block and its contents. */
    memcpy(x, "1234567", 8);
    sr_alloc_fail_after(0);
    assert_null(sr_realloc(x, 1 << 20));
    assert_string_equal(x, "1234567");
    assert_used(base, 16, 2);
    sr_alloc_fail_after(-1);
    for (int i = 0; i < 100; i++) {
        void *q = sr_malloc(1);
        assert_non_null(q);
        sr_free(q);
    }
    sr_free(x);
    sr_free(y);
    /* Overflowing sizes fail without allocating. */
    assert_null(sr_calloc((size_t)-1 / 2, 4));
    assert_int_equal(sr_alloc_used(), base);
}

/* Each allocation of the first append fails in turn: the append returns
 * SR_ENOMEM, the batch stays consistent and usable, nothing leaks. */
static void test_batch_append_enomem(void **state)
{
    (void)state;
    size_t base = sr_alloc_used();
    int failures = 0;
    for (long k = 0; k < 5; k++) {
        sr_batch_t b;
        sr_batch_init(&b, 0, 0);
        sr_alloc_fail_after(k);
        int rc = sr_batch_append(&b, "hello", 5, 7);
        sr_alloc_fail_after(-1);
        if (rc == SR_ENOMEM) {
            failures++;
            assert_int_equal(b.n, 0);
            assert_int_equal(b.len, 0);
        } else {
            assert_int_equal(rc, SR_OK);
            assert_int_equal(b.n, 1);
        }
        assert_int_equal(sr_batch_append(&b, "world", 5, 13), SR_OK);
        assert_int_equal(b.off[b.n] - b.off[b.n - 1], 5);
        assert_memory_equal(b.data + b.off[b.n - 1], "world", 5);
        assert_int_equal(b.pos[b.n - 1], 13);
        sr_batch_close(&b);
        assert_int_equal(sr_alloc_used(), base);
    }
    assert_int_equal(failures, 3); /* offsets, positions, data */
}

/* Growth of a batch that already holds records. */
static void test_batch_grow_enomem(void **state)
{
    (void)state;
    size_t base = sr_alloc_used();
    for (long k = 0; k < 3; k++) {
        sr_batch_t b;
        sr_batch_init(&b, 0, 0);
        char rec[8192];
        memset(rec, 'r', sizeof(rec));
        for (int i = 0; i < 256; i++) assert_int_equal(sr_batch_append(&b, "x", 1, i), SR_OK);
        sr_alloc_fail_after(k);
        assert_int_equal(sr_batch_append(&b, rec, sizeof(rec), 256), SR_ENOMEM);
        sr_alloc_fail_after(-1);
        assert_int_equal(b.n, 256);
        assert_int_equal(b.len, 256);
        assert_int_equal(b.off[256], 256);
        assert_int_equal(b.pos[255], 255);
        assert_int_equal(sr_batch_append(&b, rec, sizeof(rec), 256), SR_OK);
        assert_int_equal(b.n, 257);
        assert_int_equal(b.off[257], 256 + sizeof(rec));
        sr_batch_close(&b);
        assert_int_equal(sr_alloc_used(), base);
    }
}

static int count_lines(void *ud, const char *p, size_t len, int64_t pos, int status)
{
    (void)p; (void)len; (void)pos;
    int *n = ud;
    n[status == 0 ? 0 : 1]++;
    return 0;
}

static void test_linesplit_enomem(void **state)
{
    (void)state;
    size_t base = sr_alloc_used();
    for (long k = 0; k < 4; k++) {
        sr_linesplit_t sp;
        int n[2] = {0, 0};
        sr_linesplit_init(&sp, 0, 0);
        sr_alloc_fail_after(k);
        for (int i = 0; i < 50; i++) sr_linesplit_feed(&sp, "abcdefgh", 8, count_lines, n);
        sr_linesplit_feed(&sp, "\nnext\n", 6, count_lines, n);
        sr_alloc_fail_after(-1);
        /* Either the long line came whole, or it was reported lost; the
         * next line is always whole. */
        assert_int_equal(n[0] + n[1], 2);
        assert_true(n[0] >= 1);
        sr_linesplit_close(&sp);
        assert_int_equal(sr_alloc_used(), base);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counting),
        cmocka_unit_test(test_fail_after),
        cmocka_unit_test(test_batch_append_enomem),
        cmocka_unit_test(test_batch_grow_enomem),
        cmocka_unit_test(test_linesplit_enomem),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
