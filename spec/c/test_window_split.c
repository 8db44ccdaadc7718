/* test_window_split: a keyed window split among workers read as one
 * (sr_window_split): the parts' elements merged by order into the bytes
 * one window holds, whatever form the orders are packed in; the times are
 * worker 0's; malformed parts are refused; the checkpoint writer streams a
 * split window (and its result's shards) into the same bytes as the one
 * window; no leak, out of memory included. */
#include "sr_test.h"

#include "sr_alloc.h"
#include "sr_checkpoint.h"
#include "sr_error.h"
#include "sr_mpbuf.h"
#include "sr_shard.h"
#include "sr_window.h"
#include "sr_window_split.h"

#include <msgpack.h>

/* -- Building slices -- */

/* An element [key, value] as msgpack into b (appended). */
static void pack_element(sr_mpbuf_t *b, const char *key, int64_t value)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, b, sr_mpbuf_write);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_str(&pk, strlen(key));
    msgpack_pack_str_body(&pk, key, strlen(key));
    msgpack_pack_int64(&pk, value);
}

/* How an order is packed: as Lua packs it (an integer), or as a double. */
enum { AS_INT, AS_DOUBLE, AS_FLOAT };

static void pack_order(sr_mpbuf_t *b, double order, int form)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, b, sr_mpbuf_write);
    msgpack_pack_array(&pk, 1);
    if (form == AS_DOUBLE) msgpack_pack_double(&pk, order);
    else if (form == AS_FLOAT) msgpack_pack_float(&pk, (float)order);
    else msgpack_pack_int64(&pk, (int64_t)order);
}

/* An element of a part: its key, value and order. */
typedef struct el {
    const char *key;
    int64_t value;
    double order;
} el_t;

/* Pushes the slice at t of els[0..n) to slices, and their orders. */
static void push_part(sr_window_t *slices, sr_window_t *orders, int64_t t, const el_t *els, int n, int form)
{
    sr_mpbuf_t a = {0}, o = {0};
    for (int i = 0; i < n; i++) {
        pack_element(&a, els[i].key, els[i].value);
        pack_order(&o, els[i].order, form);
    }
    assert_int_equal(sr_window_push(slices, t, a.data, a.len, (uint32_t)n), 0);
    assert_int_equal(sr_window_push(orders, t, o.data, o.len, (uint32_t)n), 0);
    sr_free(a.data);
    sr_free(o.data);
}

/* Pushes the slice at t of the elements of els (n) to one window. */
static void push_one(sr_window_t *w, int64_t t, const el_t *els, int n)
{
    sr_mpbuf_t a = {0};
    for (int i = 0; i < n; i++) pack_element(&a, els[i].key, els[i].value);
    assert_int_equal(sr_window_push(w, t, a.data, a.len, (uint32_t)n), 0);
    sr_free(a.data);
}

static void assert_same_window(const sr_window_t *a, const sr_window_t *b)
{
    assert_string_equal(a->name, b->name);
    assert_int_equal(a->n, b->n);
    for (size_t i = 0; i < a->n; i++) {
        const sr_slice_t *x = sr_window_slice(a, i), *y = sr_window_slice(b, i);
        assert_int_equal(x->time_ms, y->time_ms);
        assert_int_equal(x->count, y->count);
        assert_int_equal(x->len, y->len);
        if (x->len) assert_memory_equal(x->data, y->data, x->len);
    }
}

#define W(k) ((double)(k) * 4294967296.0) /* worker k's orders start here */

/* Two batches of one window as one worker has them, and as two workers
 * split them (worker 0: "a", "c"; worker 1: "b", "d"). */
typedef struct fixture {
    sr_window_t *one, *slices[3], *orders[3];
    sr_window_split_t split;
} fixture_t;

static void fixture_init(fixture_t *f, int form)
{
    memset(f, 0, sizeof(*f));
    f->one = sr_window_new("counts");
    for (int k = 0; k < 2; k++) {
        f->slices[k] = sr_window_new("counts");
        f->orders[k] = sr_window_new("counts#orders");
    }
    /* Batch 1: arrival a (w0 #1), b (w1 #1), c (w0 #2), d (w1 #2), but
     * worker 1 saw d first in its share: orders say who came first. */
    const el_t one1[] = {{"a", 1, 0}, {"d", 4, 0}, {"c", 3, 0}, {"b", 2, 0}};
    const el_t w0a[] = {{"a", 1, W(0) + 1}, {"c", 3, W(0) + 3}};
    const el_t w1a[] = {{"d", 4, W(0) + 2}, {"b", 2, W(1) + 1}};
    push_one(f->one, 1000, one1, 4);
    push_part(f->slices[0], f->orders[0], 1000, w0a, 2, form);
    push_part(f->slices[1], f->orders[1], 1000, w1a, 2, form);
    /* Batch 2: worker 0 has nothing. */
    const el_t one2[] = {{"b", 7, 0}};
    const el_t w1b[] = {{"b", 7, W(1) + 1}};
    push_one(f->one, 2000, one2, 1);
    push_part(f->slices[0], f->orders[0], 2000, NULL, 0, form);
    push_part(f->slices[1], f->orders[1], 2000, w1b, 1, form);
    /* Batch 3: worker 1 has nothing. */
    const el_t one3[] = {{"c", 9, 0}, {"a", 8, 0}};
    const el_t w0c[] = {{"c", 9, W(0) + 1}, {"a", 8, W(0) + 2}};
    push_one(f->one, 3000, one3, 2);
    push_part(f->slices[0], f->orders[0], 3000, w0c, 2, form);
    push_part(f->slices[1], f->orders[1], 3000, NULL, 0, form);
    f->split.slices = f->slices;
    f->split.orders = f->orders;
    f->split.n = 2;
}

static void fixture_close(fixture_t *f)
{
    sr_window_free(f->one);
    for (int k = 0; k < 3; k++) {
        sr_window_free(f->slices[k]);
        sr_window_free(f->orders[k]);
    }
}

/* -- Merging -- */

static void test_merge_by_order(void **state)
{
    (void)state;
    size_t before = sr_alloc_used();
    for (int form = AS_INT; form <= AS_DOUBLE; form++) {
        fixture_t f;
        fixture_init(&f, form);
        sr_slice_t s;
        sr_window_split_slice(&f.split, 0, &s);
        assert_int_equal(s.time_ms, 1000);
        assert_int_equal(s.count, 4);
        assert_int_equal(s.len, sr_window_slice(f.one, 0)->len);
        assert_null(s.data);
        sr_window_t *w;
        assert_int_equal(sr_window_split_merge(&f.split, &w), 0);
        assert_same_window(f.one, w);
        sr_window_free(w);
        fixture_close(&f);
    }
    assert_int_equal(sr_alloc_used(), before);
}

/* One worker: the merge is a copy. Three workers with orders packed as
 * floats (exact for small positions); ties go to the lower worker. */
static void test_one_and_three_parts(void **state)
{
    (void)state;
    size_t before = sr_alloc_used();
    fixture_t f;
    fixture_init(&f, AS_INT);
    sr_window_split_t alone = {f.slices, f.orders, 1};
    sr_window_t *w;
    assert_int_equal(sr_window_split_merge(&alone, &w), 0);
    assert_same_window(f.slices[0], w);
    sr_window_free(w);
    fixture_close(&f);

    sr_window_t *slices[3], *orders[3], *one = sr_window_new("w");
    for (int k = 0; k < 3; k++) {
        slices[k] = sr_window_new("w");
        orders[k] = sr_window_new("w#orders");
    }
    const el_t p0[] = {{"x", 1, 2}, {"y", 2, 5}};
    const el_t p1[] = {{"z", 3, 1}, {"q", 4, 5}};
    const el_t p2[] = {{"r", 5, 3}};
    push_part(slices[0], orders[0], 10, p0, 2, AS_FLOAT);
    push_part(slices[1], orders[1], 10, p1, 2, AS_FLOAT);
    push_part(slices[2], orders[2], 10, p2, 1, AS_FLOAT);
    const el_t all[] = {{"z", 3, 0}, {"x", 1, 0}, {"r", 5, 0}, {"y", 2, 0}, {"q", 4, 0}};
    push_one(one, 10, all, 5);
    sr_window_split_t three = {slices, orders, 3};
    assert_int_equal(sr_window_split_merge(&three, &w), 0);
    assert_same_window(one, w);
    sr_window_free(w);
    sr_window_free(one);
    for (int k = 0; k < 3; k++) {
        sr_window_free(slices[k]);
        sr_window_free(orders[k]);
    }
    assert_int_equal(sr_alloc_used(), before);
}

/* The times are worker 0's: another part's slice at a time worker 0 does
 * not hold is left out, one it lacks contributes nothing. */
static void test_times_of_worker_zero(void **state)
{
    (void)state;
    size_t before = sr_alloc_used();
    fixture_t f;
    fixture_init(&f, AS_INT);
    const el_t late[] = {{"e", 5, W(1) + 1}};
    push_part(f.slices[1], f.orders[1], 4000, late, 1, AS_INT);
    sr_window_drop_until(f.slices[1], 1000); /* worker 1 lacks 1000 now */
    sr_window_drop_until(f.orders[1], 1000);
    sr_window_t *w;
    assert_int_equal(sr_window_split_merge(&f.split, &w), 0);
    assert_int_equal(w->n, 3);
    const sr_slice_t *s = sr_window_slice(w, 0);
    assert_int_equal(s->time_ms, 1000);
    assert_int_equal(s->count, 2); /* a, c */
    assert_int_equal(sr_window_slice(w, 1)->count, 1);
    assert_int_equal(sr_window_slice(w, 2)->time_ms, 3000);
    sr_window_free(w);
    fixture_close(&f);
    assert_int_equal(sr_alloc_used(), before);
}

static int count_bytes(void *ud, const char *p, size_t n)
{
    (void)p;
    *(size_t *)ud += n;
    return 0;
}

static int refuse(void *ud, const char *p, size_t n)
{
    (void)ud, (void)p, (void)n;
    return SR_EIO;
}

/* Malformed parts: orders of another count, an order that is no number,
 * an element cut short; a writer's failure is returned. */
static void test_malformed_parts(void **state)
{
    (void)state;
    size_t before = sr_alloc_used();
    sr_window_t *slices[2], *orders[2], *w = (sr_window_t *)1;
    for (int k = 0; k < 2; k++) {
        slices[k] = sr_window_new("w");
        orders[k] = sr_window_new("w#orders");
    }
    sr_window_split_t split = {slices, orders, 2};
    const el_t two[] = {{"a", 1, 1}, {"b", 2, 2}};
    push_part(slices[0], orders[0], 10, two, 2, AS_INT);
    /* Worker 1: two elements, one order. */
    sr_mpbuf_t a = {0}, o = {0};
    pack_element(&a, "c", 3);
    pack_element(&a, "d", 4);
    pack_order(&o, W(1) + 1, AS_INT);
    assert_int_equal(sr_window_push(slices[1], 10, a.data, a.len, 2), 0);
    assert_int_equal(sr_window_push(orders[1], 10, o.data, o.len, 1), 0);
    assert_int_equal(sr_window_split_merge(&split, &w), SR_EINVAL);
    assert_null(w);
    /* The same count, but the orders' bytes hold one order. */
    sr_window_drop_until(orders[1], 10);
    assert_int_equal(sr_window_push(orders[1], 10, o.data, o.len, 2), 0);
    assert_int_equal(sr_window_split_merge(&split, &w), SR_EINVAL);
    /* An order that is a string. */
    sr_window_drop_until(orders[1], 10);
    o.len = 0;
    msgpack_packer pk;
    msgpack_packer_init(&pk, &o, sr_mpbuf_write);
    for (int i = 0; i < 2; i++) {
        msgpack_pack_array(&pk, 1);
        msgpack_pack_str(&pk, 1);
        msgpack_pack_str_body(&pk, "x", 1);
    }
    assert_int_equal(sr_window_push(orders[1], 10, o.data, o.len, 2), 0);
    assert_int_equal(sr_window_split_merge(&split, &w), SR_EINVAL);
    /* Good orders, an element cut short. */
    sr_window_drop_until(orders[1], 10);
    sr_window_drop_until(slices[1], 10);
    o.len = 0;
    pack_order(&o, W(1) + 1, AS_INT);
    pack_order(&o, W(1) + 2, AS_INT);
    assert_int_equal(sr_window_push(orders[1], 10, o.data, o.len, 2), 0);
    assert_int_equal(sr_window_push(slices[1], 10, a.data, a.len - 1, 2), 0);
    assert_int_equal(sr_window_split_merge(&split, &w), SR_EINVAL);
    /* Whole again: merged; a writer that fails stops the merge. */
    sr_window_drop_until(slices[1], 10);
    assert_int_equal(sr_window_push(slices[1], 10, a.data, a.len, 2), 0);
    size_t n = 0;
    assert_int_equal(sr_window_split_emit(&split, 0, count_bytes, &n), 0);
    sr_slice_t s;
    sr_window_split_slice(&split, 0, &s);
    assert_int_equal(n, s.len);
    assert_int_equal(s.count, 4);
    assert_int_equal(sr_window_split_emit(&split, 0, refuse, NULL), SR_EIO);
    assert_int_equal(sr_window_split_emit(&split, 1, count_bytes, &n), SR_EINVAL); /* no slice 1 */
    sr_free(a.data);
    sr_free(o.data);
    for (int k = 0; k < 2; k++) {
        sr_window_free(slices[k]);
        sr_window_free(orders[k]);
    }
    assert_int_equal(sr_alloc_used(), before);
}

static void test_out_of_memory(void **state)
{
    (void)state;
    fixture_t f;
    fixture_init(&f, AS_INT);
    size_t before = sr_alloc_used();
    int failed = 0;
    for (long n = 0; n < 64; n++) {
        sr_window_t *w;
        sr_alloc_fail_after(n);
        int rc = sr_window_split_merge(&f.split, &w);
        sr_alloc_fail_after(-1);
        if (rc == 0) {
            assert_same_window(f.one, w);
            sr_window_free(w);
            break;
        }
        assert_int_equal(rc, SR_ENOMEM);
        assert_null(w);
        failed++;
        assert_int_equal(sr_alloc_used(), before);
    }
    assert_true(failed > 0);
    assert_int_equal(sr_alloc_used(), before);
    fixture_close(&f);
}

/* -- The checkpoint writer -- */

static void put(sr_state_t *st, const char *key, int64_t v)
{
    sr_mpbuf_t k = {0}, b = {0};
    msgpack_packer pk;
    msgpack_packer_init(&pk, &k, sr_mpbuf_write);
    msgpack_pack_str(&pk, strlen(key));
    msgpack_pack_str_body(&pk, key, strlen(key));
    msgpack_packer_init(&pk, &b, sr_mpbuf_write);
    msgpack_pack_int64(&pk, v);
    assert_int_equal(sr_state_put(st, k.data, k.len, b.data, b.len, NULL), 0);
    sr_free(k.data);
    sr_free(b.data);
}

/* A checkpoint of a split window (with a result split into shards) is the
 * bytes of the checkpoint of the one window and result; malformed parts
 * fail the checkpoint with no file left. */
static void test_checkpoint_of_split_window(void **state)
{
    (void)state;
    char dir[256], p1[512], p2[512], p3[512];
    sr_test_tmpdir(dir, sizeof(dir));
    fixture_t f;
    fixture_init(&f, AS_INT);
    sr_state_t *result = sr_state_new("counts#window", 8, 0, 0);
    const char *keys[] = {"a", "b", "c", "d", "some-longer-key", "ünï"};
    for (int i = 0; i < 6; i++) put(result, keys[i], i + 1);
    sr_state_t *shards[2] = {sr_shard_of(result, 2, 0), sr_shard_of(result, 2, 1)};
    assert_true(shards[0]->count > 0 && shards[1]->count > 0);
    /* {batch = 3, time_ms = 3000} */
    const char meta[] = "\x82\xa5" "batch" "\x03\xa7" "time_ms" "\xcd\x0b\xb8";

    sr_window_t *w1[1] = {f.one};
    sr_state_t *r1[1] = {result};
    sr_ckpt_content_t one = {.meta = meta, .meta_len = sizeof(meta) - 1, .windows = w1, .results = r1, .nwindows = 1};
    char err[512];
    assert_int_equal(sr_checkpoint_write(dir, "one.srck", &one, err, sizeof(err)), 0);

    const sr_window_split_t *splits[1] = {&f.split};
    sr_state_t *const *rshards[1] = {shards};
    sr_window_t *w2[1] = {f.slices[0]};
    sr_state_t *r2[1] = {shards[0]};
    sr_ckpt_content_t split = {.meta = meta, .meta_len = sizeof(meta) - 1, .windows = w2, .results = r2, .nwindows = 1,
                               .splits = splits, .result_shards = rshards};
    assert_int_equal(sr_checkpoint_write(dir, "split.srck", &split, err, sizeof(err)), 0);
    sr_test_blob_t a = sr_test_slurp(sr_test_path(p1, sizeof(p1), dir, "one.srck"));
    sr_test_blob_t b = sr_test_slurp(sr_test_path(p2, sizeof(p2), dir, "split.srck"));
    assert_non_null(a.data);
    assert_non_null(b.data);
    assert_int_equal(a.len, b.len);
    assert_memory_equal(a.data, b.data, a.len);
    free(a.data);
    free(b.data);

    /* It reads back as the one window. */
    sr_ckpt_loaded_t back;
    assert_int_equal(sr_checkpoint_load(p2, &back, err, sizeof(err)), 0);
    assert_int_equal(back.nwindows, 1);
    assert_same_window(f.one, back.windows[0]);
    assert_int_equal(back.results[0]->count, 6);
    sr_checkpoint_unload(&back);

    /* Worker 1's orders lose an element: no checkpoint. */
    sr_window_drop_until(f.orders[1], 1000);
    assert_int_equal(sr_checkpoint_write(dir, "bad.srck", &split, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "window counts: its workers' parts are malformed"));
    assert_int_equal(access(sr_test_path(p3, sizeof(p3), dir, "bad.srck"), F_OK), -1);
    assert_int_equal(access(sr_test_path(p3, sizeof(p3), dir, "bad.srck.tmp"), F_OK), -1);

    sr_state_free(shards[0]);
    sr_state_free(shards[1]);
    sr_state_free(result);
    fixture_close(&f);
    sr_test_rmtree(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_merge_by_order),
        cmocka_unit_test(test_one_and_three_parts),
        cmocka_unit_test(test_times_of_worker_zero),
        cmocka_unit_test(test_malformed_parts),
        cmocka_unit_test(test_out_of_memory),
        cmocka_unit_test(test_checkpoint_of_split_window),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
