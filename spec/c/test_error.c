/* test_error: sr_strerror gives every SR_E* code its own message and any other code "unknown error". */
#include "sr_test.h"

#include "sr_error.h"

#include <limits.h>

static const int codes[] = {
    SR_OK, SR_ENOMEM, SR_EINVAL, SR_EIO, SR_EFULL, SR_ENOENT,
    SR_ETOOLONG, SR_EDURATION, SR_ECLOSED, SR_EUSAGE, SR_EBUSY,
};
#define NCODES ((int)(sizeof(codes) / sizeof(codes[0])))

static void test_every_code_has_a_message(void **state)
{
    (void)state;
    assert_int_equal(NCODES, SR_ERR_COUNT); /* a new code must be added here */
    for (int i = 0; i < NCODES; i++) {
        const char *m = sr_strerror(codes[i]);
        if (!m || !*m) fail_msg("code %d has no message", codes[i]);
        if (strcmp(m, "unknown error") == 0) fail_msg("code %d is unknown", codes[i]);
    }
}

static void test_messages_are_distinct(void **state)
{
    (void)state;
    for (int i = 0; i < NCODES; i++)
        for (int j = i + 1; j < NCODES; j++)
            if (strcmp(sr_strerror(codes[i]), sr_strerror(codes[j])) == 0)
                fail_msg("codes %d and %d share \"%s\"", codes[i], codes[j],
                         sr_strerror(codes[i]));
}

static void test_known_messages(void **state)
{
    (void)state;
    assert_string_equal(sr_strerror(SR_OK), "ok");
    assert_string_equal(sr_strerror(SR_ENOMEM), "out of memory");
    assert_string_equal(sr_strerror(SR_ECLOSED), "connection closed mid-line");
    assert_string_equal(sr_strerror(SR_ETOOLONG), "line longer than max_line");
}

static void test_unknown_codes(void **state)
{
    (void)state;
    const int unknown[] = {1, 2, SR_ERR_COUNT, -SR_ERR_COUNT, -SR_ERR_COUNT - 1, -100,
                           INT_MAX, INT_MIN, INT_MIN + 1};
    for (size_t i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++)
        assert_string_equal(sr_strerror(unknown[i]), "unknown error");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_code_has_a_message),
        cmocka_unit_test(test_messages_are_distinct),
        cmocka_unit_test(test_known_messages),
        cmocka_unit_test(test_unknown_codes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
