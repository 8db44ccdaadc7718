/* test_state: the keyed state table: insert, update, delete, growth,
 * iteration over every partition, a million keys, timeouts through the
 * wheel, and out-of-memory behaviour. */
#include "sr_test.h"

#include "sr_alloc.h"
#include "sr_error.h"
#include "sr_state.h"

static int put_str(sr_state_t *st, const char *k, const char *v)
{
    return sr_state_put(st, k, strlen(k), v, strlen(v), NULL);
}

static const char *get_str(sr_state_t *st, const char *k, char *buf)
{
    sr_state_entry_t *e = sr_state_get(st, k, strlen(k));
    if (!e) return NULL;
    memcpy(buf, sr_state_entry_value(e), sr_state_entry_vlen(e));
    buf[sr_state_entry_vlen(e)] = '\0';
    return buf;
}

static void test_put_get_update_remove(void **state)
{
    (void)state;
    size_t before = sr_alloc_used();
    sr_state_t *st = sr_state_new("totals", 4, 0, 0);
    assert_non_null(st);
    char buf[64];
    assert_null(get_str(st, "a", buf));
    assert_int_equal(put_str(st, "a", "1"), SR_OK);
    assert_int_equal(put_str(st, "b", "22"), SR_OK);
    assert_string_equal(get_str(st, "a", buf), "1");
    assert_int_equal(put_str(st, "a", "3"), SR_OK);             /* same size: in place */
    assert_int_equal(put_str(st, "a", "a longer value"), SR_OK); /* grows */
    assert_string_equal(get_str(st, "a", buf), "a longer value");
    assert_int_equal(st->count, 2);
    assert_int_equal(st->data_bytes, 1 + 14 + 1 + 2);
    assert_int_equal(sr_state_remove(st, "a", 1), 1);
    assert_int_equal(sr_state_remove(st, "a", 1), 0);
    assert_null(get_str(st, "a", buf));
    assert_string_equal(get_str(st, "b", buf), "22");
    assert_int_equal(st->count, 1);
    /* Keys are bytes: "1" and the msgpack encoding of 1 differ. */
    const char one_int[] = {0x01};
    assert_int_equal(sr_state_put(st, one_int, 1, "x", 1, NULL), SR_OK);
    assert_int_equal(put_str(st, "1", "y"), SR_OK);
    assert_string_equal(get_str(st, "1", buf), "y");
    assert_int_equal(st->count, 3);
    sr_state_free(st);
    assert_int_equal(sr_alloc_used(), before);
}

static void test_many_keys_growth_and_iteration(void **state)
{
    (void)state;
    enum { N = 1000000 };
    sr_state_t *st = sr_state_new("big", 16, 0, 0);
    char key[32], val[32], buf[64];
    for (int i = 0; i < N; i++) {
        int kl = snprintf(key, sizeof(key), "user%d", i);
        int vl = snprintf(val, sizeof(val), "%d", i * 3);
        assert_int_equal(sr_state_put(st, key, (size_t)kl, val, (size_t)vl, NULL), SR_OK);
    }
    assert_int_equal(st->count, N);
    for (int i = 0; i < N; i += 9973) {
        snprintf(key, sizeof(key), "user%d", i);
        snprintf(val, sizeof(val), "%d", i * 3);
        assert_string_equal(get_str(st, key, buf), val);
    }
    /* Table and entry headers cost under 64 bytes a key beyond its bytes. */
    assert_true((sr_state_memory(st) - st->data_bytes) / st->count < 64);
    /* Every partition is used and iteration visits every key once. */
    for (int p = 0; p < st->nparts; p++) assert_true(st->parts[p].count > N / 32);
    sr_state_iter_t it = {0, 0};
    size_t seen = 0;
    while (sr_state_next(st, &it)) seen++;
    assert_int_equal(seen, N);
    /* Delete every other key; the rest are all still found. */
    for (int i = 0; i < N; i += 2) {
        int kl = snprintf(key, sizeof(key), "user%d", i);
        assert_int_equal(sr_state_remove(st, key, (size_t)kl), 1);
    }
    assert_int_equal(st->count, N / 2);
    for (int i = 1; i < N; i += 2) {
        int kl = snprintf(key, sizeof(key), "user%d", i);
        assert_non_null(sr_state_get(st, key, (size_t)kl));
    }
    sr_state_free(st);
}

static void test_timeouts(void **state)
{
    (void)state;
    sr_state_t *st = sr_state_new("sessions", 2, 30000, 0);
    sr_state_entry_t *e;
    assert_int_equal(sr_state_put(st, "a", 1, "1", 1, &e), SR_OK);
    sr_state_touch(st, e, 1000);
    assert_int_equal(sr_state_put(st, "b", 1, "1", 1, &e), SR_OK);
    sr_state_touch(st, e, 2000);
    /* Idle exactly the timeout: not yet. */
    assert_null(sr_state_expire(st, 31000));
    /* a grows (realloc) while armed: its timer moves with it. */
    assert_int_equal(sr_state_put(st, "a", 1, "a much longer value", 19, NULL), SR_OK);
    sr_state_entry_t *due = sr_state_expire(st, 31001);
    assert_non_null(due);
    assert_int_equal(due->klen, 1);
    assert_memory_equal(sr_state_entry_key(due), "a", 1);
    assert_null(due->timer.next);
    /* Still in the table until the caller removes it. */
    assert_non_null(sr_state_get(st, "a", 1));
    assert_int_equal(sr_state_remove(st, "a", 1), 1);
    /* b touched again: its deadline moves. */
    sr_state_touch(st, sr_state_get(st, "b", 1), 31500);
    assert_null(sr_state_expire(st, 61500));
    due = sr_state_expire(st, 61501);
    assert_non_null(due);
    assert_memory_equal(sr_state_entry_key(due), "b", 1);
    /* Removing an armed key cancels its timer. */
    sr_state_touch(st, due, 70000);
    assert_int_equal(sr_state_remove(st, "b", 1), 1);
    assert_null(sr_state_expire(st, 1000000));
    sr_state_free(st);
}

static void test_out_of_memory(void **state)
{
    (void)state;
    size_t before = sr_alloc_used();
    for (long fail = 0; fail < 8; fail++) {
        sr_state_t *st = sr_state_new("x", 1, 0, 0);
        if (!st) continue;
        put_str(st, "keep", "v");
        sr_alloc_fail_after(fail);
        int rc = put_str(st, "k", "value");
        int rc2 = put_str(st, "keep", "a longer value");
        sr_alloc_fail_after(-1);
        char buf[64];
        if (rc == SR_OK) assert_string_equal(get_str(st, "k", buf), "value");
        else assert_null(get_str(st, "k", buf));
        /* A failed update keeps the previous value. */
        assert_string_equal(get_str(st, "keep", buf), rc2 == SR_OK ? "a longer value" : "v");
        sr_state_free(st);
        assert_int_equal(sr_alloc_used(), before);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_get_update_remove),
        cmocka_unit_test(test_many_keys_growth_and_iteration),
        cmocka_unit_test(test_timeouts),
        cmocka_unit_test(test_out_of_memory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
