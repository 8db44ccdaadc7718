/* test_state: the keyed state table: insert, update, delete, growth,
 * iteration over every partition, a million keys, timeouts through the
 * wheel, and out-of-memory behaviour. */
#include "sr_test.h"

#include "sr_alloc.h"
#include "sr_error.h"
#include "sr_state.h"

#include <math.h>
#include <msgpack.h>
#include <stdlib.h>

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

/* A key sits in the partition sr_state_partition names (the hash's top
 * bits modulo the partitions, which workers own keys by), whatever the
 * number of partitions, and every partition gets keys. */
static void test_partition_of_every_key(void **state)
{
    (void)state;
    static const int counts[] = {1, 2, 3, 7, 16, 100, 255, 1000};
    char key[32];
    for (size_t c = 0; c < sizeof(counts) / sizeof(counts[0]); c++) {
        int np = counts[c];
        sr_state_t *st = sr_state_new("parts", np, 0, 0);
        for (int i = 0; i < 20000; i++) {
            int kl = snprintf(key, sizeof(key), "k%d", i);
            assert_int_equal(sr_state_put(st, key, (size_t)kl, "v", 1, NULL), SR_OK);
        }
        sr_state_iter_t it = {0, 0};
        sr_state_entry_t *e;
        size_t seen = 0;
        while ((e = sr_state_next(st, &it))) {
            int p = sr_state_partition(sr_state_entry_key(e), e->klen, np);
            assert_true(p >= 0 && p < np);
            assert_int_equal(it.part, p);
            seen++;
        }
        assert_int_equal(seen, 20000);
        for (int p = 0; p < np; p++) assert_true(st->parts[p].count > 0);
        for (int i = 0; i < 20000; i += 7) {
            int kl = snprintf(key, sizeof(key), "k%d", i);
            assert_non_null(sr_state_get(st, key, (size_t)kl));
        }
        sr_state_free(st);
    }
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

/* Timers armed by hand in event time (windows and sessions): a table with
 * no timeout, epoch-ms expiries, re-armed earlier and later, an expiry
 * behind the wheel's time, and the final watermark's jump. */
static void test_event_timers(void **state)
{
    (void)state;
    sr_state_t *st = sr_state_new("windows", 4, 0, 0);
    const int64_t t0 = 1700000000000;
    sr_state_entry_t *e;
    assert_int_equal(sr_state_put(st, "a", 1, "1", 1, &e), SR_OK);
    sr_state_arm(st, e, t0 + 10000);
    assert_int_equal(sr_state_put(st, "b", 1, "1", 1, &e), SR_OK);
    sr_state_arm(st, e, t0 + 20000);
    /* Touching does nothing without a timeout: the timer stays. */
    sr_state_touch(st, e, t0);
    assert_null(sr_state_expire(st, t0 + 9999));
    sr_state_entry_t *due = sr_state_expire(st, t0 + 10000);
    assert_non_null(due);
    assert_memory_equal(sr_state_entry_key(due), "a", 1);
    assert_null(due->timer.next);
    /* Re-armed behind the wheel's time: due at the next advance. */
    sr_state_arm(st, due, t0 + 5000);
    due = sr_state_expire(st, t0 + 10000);
    assert_non_null(due);
    assert_memory_equal(sr_state_entry_key(due), "a", 1);
    /* b moved earlier, then later. */
    e = sr_state_get(st, "b", 1);
    sr_state_arm(st, e, t0 + 15000);
    sr_state_arm(st, e, t0 + 40000);
    assert_null(sr_state_expire(st, t0 + 39999));
    assert_non_null(sr_state_expire(st, t0 + 40000));
    /* The final watermark (2^46 ms) takes every timer left. */
    sr_state_arm(st, sr_state_get(st, "a", 1), t0 + 3600000);
    sr_state_arm(st, sr_state_get(st, "b", 1), t0 + 7200000);
    due = sr_state_expire(st, (int64_t)1 << 46);
    assert_non_null(due);
    assert_non_null(due->timer.next);
    assert_int_equal(sr_state_remove(st, "a", 1) + sr_state_remove(st, "b", 1), 2);
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


/* msgpack-c's bytes for a number as the Lua binding packs it. */
static size_t mp_num(double x, char *out)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    if (x == floor(x) && x >= -9.2233720368547758e18 && x < 9.2233720368547758e18) msgpack_pack_int64(&pk, (int64_t)x);
    else msgpack_pack_double(&pk, x);
    size_t n = sb.size;
    memcpy(out, sb.data, n);
    msgpack_sbuffer_destroy(&sb);
    return n;
}

static sr_state_key_t skey(const char *s) { return (sr_state_key_t){s, strlen(s), 0, SR_KEY_STRING}; }

/* Numbers written by the FFI path are msgpack-c's bytes, read back equal,
 * under string, number and boolean keys, through both FFI paths. */
static void test_numbers_as_msgpack(void **state)
{
    (void)state;
    static const double xs[] = {0, 1, -1, 127, 128, -32, -33, 255, 256, -128, -129, 65535, 65536, -32768, -32769,
                                2147483647.0, 2147483648.0, -2147483648.0, -2147483649.0, 4294967295.0,
                                4294967296.0, 9007199254740992.0, -9007199254740993.0, 1.5, -0.25, 1e300,
                                -9.2233720368547758e18, 9.2233720368547758e18, -0.0};
    sr_state_t *st = sr_state_new("n", 4, 0, 0);
    for (size_t i = 0; i < sizeof(xs) / sizeof(xs[0]); i++) {
        char want[16];
        size_t wl = mp_num(xs[i], want);
        double got;
        /* key "k", then key i (a number), then true */
        assert_int_equal(sr_state_put_number(st, SR_KEY_STRING, "k", 1, 0, xs[i], -1), SR_OK);
        sr_state_key_t keys[3] = {skey("k"), {NULL, 0, (double)i, SR_KEY_NUMBER}, {NULL, 0, 1, SR_KEY_BOOLEAN}};
        assert_int_equal(sr_state_find_batch(st, keys, 3), SR_OK);
        assert_int_equal(sr_state_found_put_number(st, 1, SR_KEY_NUMBER, NULL, 0, (double)i, xs[i], -1), SR_OK);
        assert_int_equal(sr_state_found_put_number(st, 2, SR_KEY_BOOLEAN, NULL, 0, 1, xs[i], -1), SR_OK);
        sr_state_release(st);
        char kb[16];
        size_t kl = mp_num((double)i, kb);
        const char *ks[3] = {"\xa1k", kb, "\xc3"};
        size_t kls[3] = {2, kl, 1};
        for (int j = 0; j < 3; j++) {
            sr_state_entry_t *e = sr_state_get(st, ks[j], kls[j]);
            assert_non_null(e);
            assert_int_equal(sr_state_entry_vlen(e), wl);
            assert_memory_equal(sr_state_entry_value(e), want, wl);
        }
        assert_int_equal(sr_state_get_number(st, SR_KEY_NUMBER, NULL, 0, (double)i, &got), 1);
        assert_true(got == xs[i]);
        assert_int_equal(sr_state_find_batch(st, keys, 3), SR_OK);
        assert_int_equal(sr_state_found_number(st, 0, SR_KEY_STRING, "k", 1, 0, &got), 1);
        assert_true(got == xs[i]);
        sr_state_release(st);
    }
    assert_int_equal(st->count, 3 + sizeof(xs) / sizeof(xs[0]) - 1);
    sr_state_free(st);
}

/* Values as bytes: sr_state_put_bytes stores them under the key as the
 * binding encodes it (a new key, a value of the same size, another size),
 * restarts the idle clock when asked, and sr_state_found_value reads them
 * back by the batch's index (NULL for a key with no state). */
static void test_value_bytes(void **state)
{
    (void)state;
    sr_state_t *st = sr_state_new("b", 4, 1000, 0);
    const char a[] = "\x92\x01\x02", b[] = "\x92\x03\x04", c[] = "\x92\xcb\x3f\xf8\0\0\0\0\0\0\x05";
    assert_int_equal(sr_state_put_bytes(st, SR_KEY_STRING, "k", 1, 0, a, 3, -1), SR_OK);
    assert_int_equal(sr_state_put_bytes(st, SR_KEY_NUMBER, NULL, 0, 7, b, 3, 100), SR_OK);
    sr_state_entry_t *e = sr_state_get(st, "\xa1k", 2);
    assert_non_null(e);
    assert_int_equal(sr_state_entry_vlen(e), 3);
    assert_memory_equal(sr_state_entry_value(e), a, 3);
    /* only the key put with a time is armed */
    assert_int_equal(st->wheel.count, 1);
    sr_state_key_t keys[3] = {skey("k"), {NULL, 0, 7, SR_KEY_NUMBER}, skey("none")};
    assert_int_equal(sr_state_find_batch(st, keys, 3), SR_OK);
    size_t vl = 0;
    long hk = -2, h7 = -2, hn = -2;
    const char *v = sr_state_found_value(st, 0, SR_KEY_STRING, "k", 1, 0, &vl, &hk);
    assert_non_null(v);
    assert_int_equal(vl, 3);
    assert_memory_equal(v, a, 3);
    v = sr_state_found_value(st, 1, SR_KEY_NUMBER, NULL, 0, 7, &vl, &h7);
    assert_non_null(v);
    assert_memory_equal(v, b, 3);
    assert_null(sr_state_found_value(st, 2, SR_KEY_STRING, "none", 4, 0, &vl, &hn));
    assert_int_equal(hk, 0);
    assert_int_equal(h7, 1);
    assert_int_equal(hn, -1);
    /* same size in place, then another size (the entry moves) */
    assert_int_equal(sr_state_put_bytes(st, SR_KEY_STRING, "k", 1, 0, b, 3, -1), SR_OK);
    assert_int_equal(sr_state_put_bytes(st, SR_KEY_STRING, "k", 1, 0, c, 11, 50), SR_OK);
    v = sr_state_found_value(st, 0, SR_KEY_STRING, "k", 1, 0, &vl, NULL);
    assert_non_null(v);
    assert_int_equal(vl, 11);
    assert_memory_equal(v, c, 11);
    /* Held entries, across a new lookup: key 7's in place (its idle clock
     * restarted); "k"'s entry moved since it was held, so the full path
     * stores it; a new key through no hold. */
    assert_int_equal(sr_state_find_batch(st, keys, 3), SR_OK);
    assert_int_equal(sr_state_held_put_bytes(st, h7, SR_KEY_NUMBER, NULL, 0, 7, a, 3, 400), SR_OK);
    assert_int_equal(sr_state_held_put_bytes(st, hk, SR_KEY_STRING, "k", 1, 0, a, 3, -1), SR_OK);
    assert_int_equal(sr_state_held_put_bytes(st, -1, SR_KEY_STRING, "none", 4, 0, b, 3, -1), SR_OK);
    sr_state_release(st);
    assert_int_equal(st->nheld, 0);
    e = sr_state_get(st, "\x07", 1);
    assert_non_null(e);
    assert_memory_equal(sr_state_entry_value(e), a, 3);
    assert_true(e->timer.expiry > 400);
    e = sr_state_get(st, "\xa1k", 2);
    assert_non_null(e);
    assert_int_equal(sr_state_entry_vlen(e), 3);
    assert_memory_equal(sr_state_entry_value(e), a, 3);
    e = sr_state_get(st, "\xa4none", 5);
    assert_non_null(e);
    assert_memory_equal(sr_state_entry_value(e), b, 3);
    assert_int_equal(st->count, 3);
    assert_int_equal(st->wheel.count, 2);
    sr_state_free(st);
}

/* A value of 64 KiB or more keeps its length beside it. */
static void test_long_values(void **state)
{
    (void)state;
    size_t before = sr_alloc_used();
    sr_state_t *st = sr_state_new("long", 2, 0, 0);
    enum { BIG = 70000 };
    char *big = malloc(BIG);
    for (size_t i = 0; i < BIG; i++) big[i] = (char)(i * 7);
    assert_int_equal(sr_state_put(st, "a", 1, big, BIG, NULL), SR_OK);
    assert_int_equal(sr_state_put(st, "b", 1, big, 65535, NULL), SR_OK);
    assert_int_equal(sr_state_put(st, "c", 1, big, 65534, NULL), SR_OK);
    sr_state_entry_t *e = sr_state_get(st, "a", 1);
    assert_int_equal(sr_state_entry_vlen(e), BIG);
    assert_memory_equal(sr_state_entry_value(e), big, BIG);
    assert_int_equal(sr_state_entry_vlen(sr_state_get(st, "b", 1)), 65535);
    assert_memory_equal(sr_state_entry_value(sr_state_get(st, "b", 1)), big, 65535);
    assert_int_equal(sr_state_entry_vlen(sr_state_get(st, "c", 1)), 65534);
    char buf[64];
    assert_int_equal(put_str(st, "a", "short"), SR_OK);
    assert_string_equal(get_str(st, "a", buf), "short");
    assert_int_equal(sr_state_put(st, "a", 1, big, BIG, NULL), SR_OK);
    assert_memory_equal(sr_state_entry_value(sr_state_get(st, "a", 1)), big, BIG);
    assert_int_equal(st->data_bytes, 3 + BIG + 65535 + 65534);
    assert_int_equal(sr_state_remove(st, "b", 1), 1);
    sr_state_free(st);
    free(big);
    assert_int_equal(sr_alloc_used(), before);
}

/* A batch's lookup finds what single lookups find; within the batch, a key
 * put, removed or moved after the lookup is seen as it is now, and the
 * entries left behind are freed at release. */
static void test_find_batch(void **state)
{
    (void)state;
    size_t before = sr_alloc_used();
    sr_state_t *st = sr_state_new("b", 16, 1000, 0);
    enum { N = 200000, B = 5000 };
    char key[32];
    for (int i = 0; i < N; i += 2) {
        int kl = snprintf(key, sizeof(key), "key%07d", i);
        assert_int_equal(sr_state_put_number(st, SR_KEY_STRING, key, (size_t)kl, 0, i, 0), SR_OK);
    }
    static char names[B][32];
    static sr_state_key_t keys[B];
    /* The key buffer exists for an empty batch too (NULL means no memory). */
    assert_non_null(sr_state_keys(st, 0));
    assert_non_null(sr_state_keys(st, B));
    uint64_t seed = 7;
    for (int round = 0; round < 5; round++) {
        for (int i = 0; i < B; i++) {
            seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
            int k = (int)((seed >> 33) % N);
            snprintf(names[i], sizeof(names[i]), "key%07d", k);
            keys[i] = skey(names[i]);
        }
        assert_int_equal(sr_state_find_batch(st, keys, B), SR_OK);
        for (int i = 0; i < B; i++) {
            double got;
            int k = atoi(names[i] + 3);
            int rc = sr_state_found_number(st, (size_t)i, SR_KEY_STRING, names[i], strlen(names[i]), 0, &got);
            assert_int_equal(rc, k % 2 == 0 ? 1 : 0);
            if (rc == 1) assert_true(got == k);
        }
        sr_state_release(st);
    }
    /* Runs of every length around the lookup's pipeline depth find the
     * same entries as single lookups. */
    static const size_t runs[] = {1, 2, 15, 16, 17, 31, 32, 33, 47, 48, 49, 127, 128, 129, 256, 257, 1000};
    for (size_t r = 0; r < sizeof(runs) / sizeof(runs[0]); r++) {
        size_t off = r * 97;
        assert_int_equal(sr_state_find_batch(st, keys + off, runs[r]), SR_OK);
        for (size_t i = 0; i < runs[r]; i++) {
            const sr_state_key_t *k = &keys[off + i];
            char mk[40]; /* the key as stored: a msgpack fixstr */
            mk[0] = (char)(0xa0 | k->len);
            memcpy(mk + 1, k->s, k->len);
            sr_state_entry_t *want = sr_state_get(st, mk, k->len + 1);
            assert_true(st->found[i] == want);
            assert_true((want != NULL) == (atoi(names[off + i] + 3) % 2 == 0));
        }
        sr_state_release(st);
    }
    /* Within a batch: "key0000001" twice (absent: put by the first),
     * "key0000002" twice (removed between), "key0000004" twice (its value
     * grows from 1 to 3 bytes: it moves), a number and a non-key. */
    sr_state_key_t k6[8] = {skey("key0000001"), skey("key0000002"), skey("key0000004"), skey("key0000001"),
                            skey("key0000002"), skey("key0000004"), {NULL, 0, 5, SR_KEY_NUMBER}, {NULL, 0, 0, 0}};
    assert_int_equal(sr_state_find_batch(st, k6, 8), SR_OK);
    double got;
    assert_int_equal(sr_state_found_number(st, 0, SR_KEY_STRING, "key0000001", 10, 0, &got), 0);
    assert_int_equal(sr_state_found_put_number(st, 0, SR_KEY_STRING, "key0000001", 10, 0, 11, 500), SR_OK);
    assert_int_equal(sr_state_found_number(st, 1, SR_KEY_STRING, "key0000002", 10, 0, &got), 1);
    assert_int_equal(sr_state_remove(st, "\xaakey0000002", 11), 1);
    assert_int_equal(sr_state_found_put_number(st, 2, SR_KEY_STRING, "key0000004", 10, 0, 300, 500), SR_OK);
    assert_int_equal(sr_state_found_number(st, 3, SR_KEY_STRING, "key0000001", 10, 0, &got), 1);
    assert_true(got == 11);
    assert_int_equal(sr_state_found_number(st, 4, SR_KEY_STRING, "key0000002", 10, 0, &got), 0);
    assert_int_equal(sr_state_found_touch(st, 4, SR_KEY_STRING, "key0000002", 10, 0, 600), 0);
    assert_int_equal(sr_state_found_number(st, 5, SR_KEY_STRING, "key0000004", 10, 0, &got), 1);
    assert_true(got == 300);
    assert_int_equal(sr_state_found_touch(st, 5, SR_KEY_STRING, "key0000004", 10, 0, 700), 1);
    assert_int_equal(sr_state_found_number(st, 6, SR_KEY_NUMBER, NULL, 0, 5, &got), 0);
    assert_non_null(st->graveyard);
    sr_state_release(st);
    assert_null(st->graveyard);
    /* The moved entry kept its idle clock (touched at 700: due at 1701);
     * every other key was last touched by 500. */
    size_t n = 0;
    for (sr_state_entry_t *e = sr_state_expire(st, 1600); e; n++) {
        assert_memory_not_equal(sr_state_entry_key(e), "\xaakey0000004", 11);
        e = e->timer.next ? (sr_state_entry_t *)((char *)e->timer.next - offsetof(sr_state_entry_t, timer)) : NULL;
    }
    assert_int_equal(n, N / 2 - 2 + 1);
    sr_state_entry_t *due = sr_state_expire(st, 1701);
    assert_non_null(due);
    assert_memory_equal(sr_state_entry_key(due), "\xaakey0000004", 11);
    assert_null(due->timer.next);
    sr_state_free(st);
    assert_int_equal(sr_alloc_used(), before);
}

/* The due list in key order: keys sharing a long common start (the sort's
 * prefixes begin after it), some due and some not (the table stays), then
 * every key due (the table is emptied at once and the list holds the
 * entries, a long one among them), and the table used again after. */
static void assert_due_sorted(sr_state_t *st, size_t n)
{
    for (size_t i = 1; i < n; i++) {
        const sr_state_entry_t *a = sr_state_due(st, i - 1), *b = sr_state_due(st, i);
        size_t m = a->klen < b->klen ? a->klen : b->klen;
        int c = memcmp(a->data, b->data, m);
        assert_true(c < 0 || (c == 0 && a->klen < b->klen));
    }
    assert_null(sr_state_due(st, n));
}

static void test_expire_sorted(void **state)
{
    (void)state;
    enum { N = 3000 };
    sr_state_t *st = sr_state_new("due", 4, 1000, 0);
    static char keys[N][24];
    sr_state_entry_t *e;
    size_t n;
    for (int i = 0; i < N; i++) {
        /* Scrambled order of insertion; every key starts "session-00". */
        snprintf(keys[i], sizeof(keys[i]), "session-00%05d%s", (i * 7919) % N, i % 3 ? "" : "x");
        assert_int_equal(sr_state_put(st, keys[i], strlen(keys[i]), "1", 1, &e), SR_OK);
        sr_state_touch(st, e, i % 2 ? 0 : 5000);
    }
    /* The odd ones (idle since 0) are due at 1001. */
    assert_int_equal(sr_state_expire_sorted(st, 1001, &n), SR_OK);
    assert_int_equal(n, N / 2);
    assert_due_sorted(st, n);
    sr_state_remove_due(st, 0, 10);
    sr_state_remove_due(st, 10, n);
    assert_int_equal(st->count, N - N / 2);
    for (int i = 0; i < N; i++)
        assert_true((sr_state_get(st, keys[i], strlen(keys[i])) != NULL) == (i % 2 == 0));
    /* One long value among them, then every key due. */
    char big[600];
    memset(big, 'v', sizeof(big));
    assert_int_equal(sr_state_put(st, keys[0], strlen(keys[0]), big, sizeof(big), &e), SR_OK);
    assert_int_equal(sr_state_expire_sorted(st, 1 << 20, &n), SR_OK);
    assert_int_equal(n, N - N / 2);
    assert_int_equal(st->count, 0);
    assert_null(sr_state_get(st, keys[0], strlen(keys[0])));
    assert_due_sorted(st, n);
    sr_state_remove_due(st, 0, n / 2);
    /* The table takes keys again; the rest of the list (the long value
     * among it) is freed with it. */
    assert_int_equal(sr_state_put(st, "again", 5, "2", 1, &e), SR_OK);
    assert_int_equal(st->count, 1);
    assert_non_null(sr_state_get(st, "again", 5));
    assert_int_equal(sr_state_expire_sorted(st, 1 << 20, &n), SR_OK);
    assert_int_equal(n, 0);
    sr_state_free(st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_get_update_remove),
        cmocka_unit_test(test_many_keys_growth_and_iteration),
        cmocka_unit_test(test_partition_of_every_key),
        cmocka_unit_test(test_timeouts),
        cmocka_unit_test(test_event_timers),
        cmocka_unit_test(test_out_of_memory),
        cmocka_unit_test(test_numbers_as_msgpack),
        cmocka_unit_test(test_long_values),
        cmocka_unit_test(test_value_bytes),
        cmocka_unit_test(test_find_batch),
        cmocka_unit_test(test_expire_sorted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
