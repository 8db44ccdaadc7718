/* test_mpcheck: the msgpack walker gives an object's length, refuses bytes
 * cut short, reserved bytes and lengths beyond the bytes present, and counts
 * nesting as the encoder does (every container, empty ones too). */
#include "sr_test.h"

#include "sr_mpcheck.h"

#include <msgpack.h>

static long check(const char *p, size_t n, int max_depth) { return sr_mpcheck(p, n, max_depth); }

static void test_lengths_of_every_kind(void **state)
{
    (void)state;
    static const struct { const char *bytes; size_t n; } cases[] = {
        {"\x01", 1}, {"\xff", 1}, {"\xc0", 1}, {"\xc3", 1}, {"\xa3" "abc", 4}, {"\xd9\x02" "ab", 4},
        {"\xc4\x01" "x", 3}, {"\xcb" "12345678", 9}, {"\xcd\x01\x02", 3}, {"\xd4\x01\x02", 3},
        {"\xc7\x01\x05" "x", 4}, {"\x92\x01\xa1" "x", 4}, {"\x81\xa1" "k\x90", 4},
        {"\xdc\x00\x02\x01\x02", 5}, {"\xde\x00\x01\x01\x02", 5},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        /* A byte after the object: only the object is measured. */
        char buf[32];
        memcpy(buf, cases[i].bytes, cases[i].n);
        buf[cases[i].n] = '\x07';
        if (check(buf, cases[i].n + 1, 4) != (long)cases[i].n) fail_msg("case %zu", i);
        /* Every shorter prefix is cut short. */
        for (size_t k = 0; k < cases[i].n; k++)
            if (check(buf, k, 4) != -1) fail_msg("case %zu cut to %zu", i, k);
    }
}

static void test_refusals(void **state)
{
    (void)state;
    assert_int_equal(check("\xc1", 1, 4), -1);
    /* 2^31 elements announced in a few bytes. */
    assert_int_equal(check("\xdd\x7f\xff\xff\xff\x01\x02", 7, 4), -1);
    assert_int_equal(check("\xdf\x00\x00\x00\x02\x01\x02\x03", 8, 4), -1);
    assert_int_equal(check("\xdb\x00\x01\x00\x00" "ab", 7, 4), -1);
    assert_int_equal(check("\x01", 1, 65), -1);
}

/* n arrays one inside the other around nil, or an empty one innermost. */
static size_t nested(char *buf, int n, int empty)
{
    size_t k = 0;
    for (int i = 0; i < n - (empty ? 1 : 0); i++) buf[k++] = (char)0x91;
    buf[k++] = empty ? (char)0x90 : (char)0xc0;
    return k;
}

static void test_depth_as_the_encoder_counts_it(void **state)
{
    (void)state;
    char buf[64];
    for (int empty = 0; empty <= 1; empty++) {
        size_t n = nested(buf, SR_MP_MAX_DEPTH, empty);
        assert_int_equal(check(buf, n, SR_MP_MAX_DEPTH), (long)n);
        n = nested(buf, SR_MP_MAX_DEPTH + 1, empty);
        assert_int_equal(check(buf, n, SR_MP_MAX_DEPTH), -1);
        assert_int_equal(check(buf, n, SR_MP_MAX_DEPTH + 1), (long)n);
    }
    /* What the walker allows msgpack-c unpacks. */
    size_t n = nested(buf, SR_MP_MAX_DEPTH + 1, 0);
    msgpack_zone zone;
    msgpack_zone_init(&zone, 1024);
    msgpack_object obj;
    size_t off = 0;
    assert_int_equal(msgpack_unpack(buf, n, &off, &zone, &obj), MSGPACK_UNPACK_SUCCESS);
    msgpack_zone_destroy(&zone);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lengths_of_every_kind),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_depth_as_the_encoder_counts_it),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
