/* test_slab: blocks of the state's entry allocator: reuse per size, blocks
 * over SR_SLAB_MAX from malloc, huge-page chunks once the slab is large,
 * every byte given back at close, and out-of-memory as NULL. */
#include "sr_test.h"

#include "sr_alloc.h"
#include "sr_slab.h"

#include <stdint.h>

static void test_reuse_alignment_and_close(void **state)
{
    (void)state;
    size_t before = sr_alloc_used();
    sr_slab_t s;
    sr_slab_init(&s);
    char *a = sr_slab_alloc(&s, 40), *b = sr_slab_alloc(&s, 41), *c = sr_slab_alloc(&s, 40);
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(c);
    assert_int_equal((uintptr_t)a % SR_SLAB_ALIGN, 0);
    assert_int_equal((uintptr_t)b % SR_SLAB_ALIGN, 0);
    assert_int_equal(b - a, 40); /* no header between blocks */
    assert_int_equal(c - b, 48); /* 41 rounded to 48 */
    memset(a, 1, 40);
    memset(b, 2, 41);
    sr_slab_free(&s, a, 40);
    assert_true(sr_slab_alloc(&s, 39) == a); /* same size class: reused */
    char *big = sr_slab_alloc(&s, SR_SLAB_MAX + 1);
    assert_non_null(big);
    assert_int_equal(s.large, 1);
    sr_slab_free(&s, big, SR_SLAB_MAX + 1);
    assert_int_equal(s.large, 0);
    sr_slab_close(&s);
    assert_int_equal(sr_alloc_used(), before);
}

static void test_huge_chunks_when_large(void **state)
{
    (void)state;
    size_t before = sr_alloc_used();
    sr_slab_t s;
    sr_slab_init(&s);
    /* 10 MB of 40-byte blocks, every byte written. */
    for (int i = 0; i < 250000; i++) {
        char *p = sr_slab_alloc(&s, 40);
        assert_non_null(p);
        memset(p, i, 40);
    }
    assert_true(s.chunk_bytes >= 10000000);
    /* Past 4 MiB, chunks of one 2 MiB page each, aligned to it. */
    assert_int_equal((uintptr_t)s.chunks % SR_ALLOC_HUGE, 0);
    sr_slab_close(&s);
    assert_int_equal(sr_alloc_used(), before);
}

static void test_out_of_memory(void **state)
{
    (void)state;
    size_t before = sr_alloc_used();
    sr_slab_t s;
    sr_slab_init(&s);
    sr_alloc_fail_after(0);
    assert_null(sr_slab_alloc(&s, 40));
    sr_alloc_fail_after(0);
    assert_null(sr_slab_alloc(&s, SR_SLAB_MAX + 1));
    assert_int_equal(s.large, 0);
    assert_non_null(sr_slab_alloc(&s, 40));
    sr_slab_close(&s);
    assert_int_equal(sr_alloc_used(), before);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reuse_alignment_and_close),
        cmocka_unit_test(test_huge_chunks_when_large),
        cmocka_unit_test(test_out_of_memory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
