/* test_wheel: the hierarchical timing wheel: deadlines on every level,
 * cancel, re-arm, large jumps, and random operations against a plain model. */
#include "sr_test.h"

#include "sr_wheel.h"

static size_t drain(sr_wheel_node_t *list, int64_t *last_expiry)
{
    size_t n = 0;
    while (list) {
        sr_wheel_node_t *next = list->next;
        assert_false(sr_wheel_armed(list));
        if (last_expiry) *last_expiry = list->expiry;
        n++;
        list = next;
    }
    return n;
}

static void test_fires_at_deadline_on_every_level(void **state)
{
    (void)state;
    static sr_wheel_t w;
    int64_t deltas[] = {1, 5, 63, 64, 65, 4095, 4096, 4097, 262143, 262144, 262145,
                        16777216, 1073741824LL, 68719476736LL};
    for (size_t i = 0; i < sizeof(deltas) / sizeof(deltas[0]); i++) {
        int64_t start = 1000 + (int64_t)i * 7;
        sr_wheel_init(&w, start);
        sr_wheel_node_t n;
        sr_wheel_node_init(&n);
        sr_wheel_add(&w, &n, start + deltas[i]);
        assert_true(sr_wheel_armed(&n));
        assert_int_equal(w.count, 1);
        /* Not due one millisecond early, even reached in several steps. */
        assert_null(sr_wheel_advance(&w, start + deltas[i] / 2));
        assert_null(sr_wheel_advance(&w, start + deltas[i] - 1));
        int64_t exp = 0;
        assert_int_equal(drain(sr_wheel_advance(&w, start + deltas[i]), &exp), 1);
        assert_int_equal(exp, start + deltas[i]);
        assert_int_equal(w.count, 0);
    }
}

static void test_cancel_and_rearm(void **state)
{
    (void)state;
    static sr_wheel_t w;
    sr_wheel_init(&w, 0);
    sr_wheel_node_t a, b, c;
    sr_wheel_node_init(&a);
    sr_wheel_node_init(&b);
    sr_wheel_node_init(&c);
    sr_wheel_add(&w, &a, 100);
    sr_wheel_add(&w, &b, 100);
    sr_wheel_add(&w, &c, 5000);
    sr_wheel_cancel(&w, &b);
    sr_wheel_cancel(&w, &b); /* twice is harmless */
    assert_false(sr_wheel_armed(&b));
    sr_wheel_add(&w, &c, 150); /* re-arm earlier */
    sr_wheel_add(&w, &a, 7000); /* re-arm later */
    assert_int_equal(w.count, 2);
    int64_t exp = 0;
    assert_int_equal(drain(sr_wheel_advance(&w, 200), &exp), 1);
    assert_int_equal(exp, 150);
    assert_null(sr_wheel_advance(&w, 6999));
    assert_int_equal(drain(sr_wheel_advance(&w, 7000), &exp), 1);
    assert_int_equal(exp, 7000);
}

static void test_already_due_and_large_jump(void **state)
{
    (void)state;
    static sr_wheel_t w;
    sr_wheel_init(&w, 10000);
    static sr_wheel_node_t nodes[1000];
    for (int i = 0; i < 1000; i++) {
        sr_wheel_node_init(&nodes[i]);
        sr_wheel_add(&w, &nodes[i], i < 5 ? 10000 - i : 10000 + (int64_t)i * 997 * 1000);
    }
    /* The first five are already due (expiry <= now). */
    assert_int_equal(drain(sr_wheel_advance(&w, 10000), NULL), 5);
    /* A jump over days of milliseconds takes everything at once. */
    assert_null(sr_wheel_advance(&w, 10000 + 5LL * 997 * 1000 - 1));
    assert_int_equal(drain(sr_wheel_advance(&w, 10000 + 999LL * 997 * 1000), NULL), 995);
    assert_int_equal(w.count, 0);
}

/* A node extended again and again stays in its slot and falls due at its
 * last deadline, across levels. */
static void test_extend(void **state)
{
    (void)state;
    static sr_wheel_t w;
    sr_wheel_init(&w, 1000);
    sr_wheel_node_t n;
    sr_wheel_node_init(&n);
    sr_wheel_extend(&w, &n, 61001); /* unarmed: added */
    assert_true(sr_wheel_armed(&n));
    for (int64_t t = 1000; t < 200000; t += 20000) {
        assert_null(sr_wheel_advance(&w, t));
        sr_wheel_extend(&w, &n, t + 60001);
        assert_int_equal(n.expiry, t + 60001);
    }
    int64_t last = n.expiry;
    assert_null(sr_wheel_advance(&w, last - 1));
    assert_true(sr_wheel_advance(&w, last) == &n);
    assert_false(sr_wheel_armed(&n));
    assert_int_equal(w.count, 0);
    /* An earlier deadline re-arms it there. */
    sr_wheel_add(&w, &n, last + 50000);
    sr_wheel_extend(&w, &n, last + 10);
    assert_null(sr_wheel_advance(&w, last + 9));
    assert_true(sr_wheel_advance(&w, last + 10) == &n);
}

/* Random adds, extensions, cancels, re-arms and advances against a plain
 * array model; the wheel turns wide (several lists per slot) at wide_at
 * armed nodes. */
static void random_against_model(size_t wide_at)
{
    enum { N = 2000 };
    static sr_wheel_t w;
    static sr_wheel_node_t nodes[N];
    static int64_t model[N]; /* expiry, or -1 when not armed */
    uint64_t seed = 42;
    for (int round = 0; round < 20; round++) {
        int64_t now = (int64_t)(seed % 100000);
        sr_wheel_init(&w, now);
        sr_wheel_set_wide_at(&w, wide_at);
        for (int i = 0; i < N; i++) { sr_wheel_node_init(&nodes[i]); model[i] = -1; }
        for (int step = 0; step < 5000; step++) {
            seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
            int i = (int)((seed >> 33) % N);
            unsigned op = (unsigned)(seed >> 20) % 10;
            if (op < 6) {
                int64_t span = (int64_t)1 << ((seed >> 40) % 30);
                int64_t exp = now + (int64_t)((seed >> 8) % (uint64_t)span) - 2;
                /* Extending moves a deadline without moving the node (an
                 * earlier one, or an unarmed node, is an add). */
                if (op == 5) sr_wheel_extend(&w, &nodes[i], exp);
                else sr_wheel_add(&w, &nodes[i], exp);
                model[i] = exp;
            } else if (op < 8) {
                sr_wheel_cancel(&w, &nodes[i]);
                model[i] = -1;
            } else {
                int64_t to = now + (int64_t)((seed >> 12) % ((uint64_t)1 << ((seed >> 50) % 24)));
                sr_wheel_node_t *due = sr_wheel_advance(&w, to);
                static char fired[N];
                memset(fired, 0, sizeof(fired));
                for (; due; due = due->next) fired[due - nodes] = 1;
                for (int k = 0; k < N; k++) {
                    int should = model[k] >= 0 && model[k] <= to;
                    assert_int_equal(fired[k], should);
                    if (should) model[k] = -1;
                    assert_int_equal(sr_wheel_armed(&nodes[k]), model[k] >= 0);
                }
                now = to;
            }
        }
        size_t armed = 0;
        for (int k = 0; k < N; k++) armed += model[k] >= 0;
        assert_int_equal(w.count, armed);
        /* (a wheel with fewer armed nodes than wide_at never turns wide) */
        if (armed >= wide_at) assert_non_null(w.wide);
        sr_wheel_close(&w);
    }
}

static void test_random_against_model(void **state)
{
    (void)state;
    random_against_model(SR_WHEEL_WIDE_AT);
}

/* The same with a wheel that turns wide early in every round, its
 * existing lists kept as the first way of their slots. */
static void test_random_against_model_wide(void **state)
{
    (void)state;
    random_against_model(50);
}

/* Turning wide keeps every node's deadline; clearing keeps the wide block,
 * empty, and the wheel goes on as wide. */
static void test_wide_then_clear(void **state)
{
    (void)state;
    enum { N = 300 };
    static sr_wheel_node_t nodes[N];
    sr_wheel_t w;
    sr_wheel_init(&w, 0);
    sr_wheel_set_wide_at(&w, 100);
    for (int i = 0; i < N; i++) {
        sr_wheel_node_init(&nodes[i]);
        sr_wheel_add(&w, &nodes[i], 1 + (i * 7919) % 100000);
        assert_true((w.wide != NULL) == (i + 1 >= 100));
    }
    int64_t last = 0;
    size_t fired = 0;
    for (int64_t t = 0; t <= 100000; t += 997) {
        fired += drain(sr_wheel_advance(&w, t), &last);
        assert_int_equal(fired + w.count, N);
    }
    fired += drain(sr_wheel_advance(&w, 100000), &last);
    assert_int_equal(fired, N);
    sr_wheel_node_t **wide = w.wide;
    sr_wheel_clear(&w, 200000);
    assert_true(w.wide == wide);
    assert_int_equal(w.count, 0);
    for (int i = 0; i < 10; i++) {
        sr_wheel_node_init(&nodes[i]);
        sr_wheel_add(&w, &nodes[i], 200000 + 5000 + i);
    }
    assert_null(sr_wheel_advance(&w, 205000 - 1));
    assert_int_equal(drain(sr_wheel_advance(&w, 205009), NULL), 10);
    sr_wheel_close(&w);
    assert_null(w.wide);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fires_at_deadline_on_every_level),
        cmocka_unit_test(test_cancel_and_rearm),
        cmocka_unit_test(test_already_due_and_large_jump),
        cmocka_unit_test(test_extend),
        cmocka_unit_test(test_random_against_model),
        cmocka_unit_test(test_random_against_model_wide),
        cmocka_unit_test(test_wide_then_clear),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
