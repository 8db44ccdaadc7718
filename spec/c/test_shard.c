/* test_shard: a state split among n workers by partition and gathered
 * back keeps every entry and its timeout, each shard holding only its own
 * partitions; the pool's start/wait runs workers 1 .. n - 1 only. */
#include "sr_test.h"

#include "sr_alloc.h"
#include "sr_error.h"
#include "sr_shard.h"
#include "sr_workers.h"

#include <stdio.h>

static void fill(sr_state_t *st, int n)
{
    char k[32], v[32];
    for (int i = 0; i < n; i++) {
        int kl = snprintf(k, sizeof(k), "key%d", i), vl = snprintf(v, sizeof(v), "v%d", i * 7);
        sr_state_entry_t *e;
        assert_int_equal(sr_state_put(st, k, (size_t)kl, v, (size_t)vl, &e), SR_OK);
        if (i % 3 == 0) sr_state_arm(st, e, 1000 + i);
    }
}

static void same_entries(sr_state_t *a, sr_state_t *b)
{
    assert_int_equal(a->count, b->count);
    sr_state_iter_t it = { 0, 0 };
    for (sr_state_entry_t *e; (e = sr_state_next(a, &it));) {
        sr_state_entry_t *f = sr_state_get(b, sr_state_entry_key(e), e->klen);
        assert_non_null(f);
        assert_int_equal(sr_state_entry_vlen(e), sr_state_entry_vlen(f));
        assert_memory_equal(sr_state_entry_value(e), sr_state_entry_value(f), sr_state_entry_vlen(e));
        assert_int_equal(sr_wheel_armed(&e->timer), sr_wheel_armed(&f->timer));
        if (sr_wheel_armed(&e->timer)) assert_true(e->timer.expiry == f->timer.expiry);
    }
}

static void test_split_and_gather(void **state)
{
    (void)state;
    size_t before = sr_alloc_used();
    sr_state_t *whole = sr_state_new("s", 16, 500, 10);
    assert_non_null(whole);
    fill(whole, 5000);
    for (int n = 1; n <= 5; n++) {
        sr_state_t *shards[5];
        size_t total = 0;
        for (int k = 0; k < n; k++) {
            shards[k] = sr_shard_of(whole, n, k);
            assert_non_null(shards[k]);
            total += shards[k]->count;
            /* Only the shard's own partitions hold keys. */
            sr_state_iter_t it = { 0, 0 };
            for (sr_state_entry_t *e; (e = sr_state_next(shards[k], &it));) {
                assert_int_equal(sr_state_partition(sr_state_entry_key(e), e->klen, 16) % n, k);
                assert_int_equal(it.part, sr_state_partition(sr_state_entry_key(e), e->klen, 16));
            }
        }
        assert_int_equal(total, whole->count);
        sr_state_t *back = sr_state_new("s", 16, 500, 10);
        assert_int_equal(sr_shard_gather(back, shards, n), SR_OK);
        same_entries(whole, back);
        same_entries(back, whole);
        /* Timeouts fire on the shard that holds the key. */
        size_t due = 0;
        for (int k = 0; k < n; k++) {
            for (sr_state_entry_t *e = sr_state_expire(shards[k], 1000 + 300); e;) {
                due++;
                e = e->timer.next ? (sr_state_entry_t *)((char *)e->timer.next - offsetof(sr_state_entry_t, timer)) : NULL;
            }
        }
        assert_int_equal(due, 101); /* keys 0, 3, ..., 300 */
        sr_state_free(back);
        for (int k = 0; k < n; k++) sr_state_free(shards[k]);
    }
    sr_state_free(whole);
    assert_int_equal(sr_alloc_used(), before);
}

static void test_split_out_of_memory(void **state)
{
    (void)state;
    size_t before = sr_alloc_used();
    sr_state_t *whole = sr_state_new("s", 8, 0, 0);
    fill(whole, 300);
    for (long after = 0; after < 40; after++) {
        sr_alloc_fail_after(after);
        sr_state_t *s = sr_shard_of(whole, 2, 1);
        sr_alloc_fail_after(-1);
        if (s) sr_state_free(s);
    }
    sr_state_free(whole);
    assert_int_equal(sr_alloc_used(), before);
}

static void share(void *arg, int k, int n)
{
    int *seen = arg;
    (void)n;
    __atomic_add_fetch(&seen[k], 1, __ATOMIC_RELAXED);
}

static void test_start_wait_runs_the_others(void **state)
{
    (void)state;
    sr_workers_t *w = sr_workers_new(4);
    assert_non_null(w);
    int seen[4] = { 0 };
    for (int round = 0; round < 50; round++) {
        sr_workers_start(w, share, seen);
        sr_workers_wait(w);
    }
    assert_int_equal(seen[0], 0); /* worker 0 is the caller's to run */
    for (int k = 1; k < 4; k++) assert_int_equal(seen[k], 50);
    sr_workers_free(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split_and_gather),
        cmocka_unit_test(test_split_out_of_memory),
        cmocka_unit_test(test_start_wait_runs_the_others),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
