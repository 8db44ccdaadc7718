/* test_duration: duration strings ("250ms", "1.5s", "2m", "1h", "3") and
 * the malformed ones that must be refused. */
#include "sr_test.h"

#include "sr_duration.h"
#include "sr_error.h"

static void expect_ms(const char *s, int64_t want)
{
    int64_t ms = -12345;
    int rc = sr_duration_parse(s, &ms);
    if (rc != SR_OK) fail_msg("\"%s\" refused", s);
    if (ms != want) fail_msg("\"%s\" gave %lld ms, want %lld", s, (long long)ms, (long long)want);
}

static void expect_bad(const char *s)
{
    int64_t ms = -12345;
    int rc = sr_duration_parse(s, &ms);
    if (rc != SR_EDURATION) fail_msg("\"%s\" accepted (%lld ms)", s ? s : "(null)", (long long)ms);
    assert_int_equal(ms, -12345); /* untouched on error */
}

static void test_units(void **state)
{
    (void)state;
    expect_ms("250ms", 250);
    expect_ms("1s", 1000);
    expect_ms("1.5s", 1500);
    expect_ms("2m", 120000);
    expect_ms("1h", 3600000);
    expect_ms("0ms", 0);
    expect_ms("0.25s", 250);
    expect_ms("1.001s", 1001);
    expect_ms("0.5m", 30000);
}

static void test_bare_number_is_seconds(void **state)
{
    (void)state;
    expect_ms("3", 3000);
    expect_ms("0", 0);
    expect_ms("2.5", 2500);
    expect_ms("86400", 86400000);
}

static void test_malformed(void **state)
{
    (void)state;
    expect_bad("");
    expect_bad(NULL);
    expect_bad("x");
    expect_bad("s");
    expect_bad("ms");
    expect_bad("-1s");
    expect_bad("+1s");
    expect_bad("1.0005s"); /* not a whole number of ms */
    expect_bad("0.1ms");
    expect_bad("1d");
    expect_bad("1 s");
    expect_bad(" 1s");
    expect_bad("1s ");
    expect_bad("1sec");
    expect_bad("1S");
    expect_bad("nan");
    expect_bad("inf");
    expect_bad("infs");
    expect_bad("1e400s");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_units),
        cmocka_unit_test(test_bare_number_is_seconds),
        cmocka_unit_test(test_malformed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
