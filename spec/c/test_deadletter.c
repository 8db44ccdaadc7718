/* test_deadletter: JSON string escaping and the dead-letter line format,
 * to a file and to stderr. */
#include "sr_test.h"

#include "sr_deadletter.h"
#include "sr_error.h"

#include <errno.h>

/* Returns what sr_json_write_string writes for s[0..len) (static buffer). */
static const char *json(const char *s, size_t len)
{
    static char out[1024];
    FILE *fp = fmemopen(out, sizeof(out), "w");
    assert_non_null(fp);
    sr_json_write_string(fp, s, len);
    assert_int_equal(fclose(fp), 0);
    return out;
}

static void test_plain(void **state)
{
    (void)state;
    assert_string_equal(json("hello world", 11), "\"hello world\"");
    assert_string_equal(json("", 0), "\"\"");
    /* Only len bytes are written. */
    assert_string_equal(json("abcdef", 3), "\"abc\"");
    /* UTF-8 passes through. */
    assert_string_equal(json("caf\xc3\xa9 \xe2\x82\xac", 9), "\"caf\xc3\xa9 \xe2\x82\xac\"");
}

static void test_escapes(void **state)
{
    (void)state;
    assert_string_equal(json("say \"hi\"", 8), "\"say \\\"hi\\\"\"");
    assert_string_equal(json("a\\b", 3), "\"a\\\\b\"");
    assert_string_equal(json("l1\nl2\r\n\tx", 9), "\"l1\\nl2\\r\\n\\tx\"");
    assert_string_equal(json("\x01\x1f\x7f", 3), "\"\\u0001\\u001f\\u007f\"");
    /* An embedded NUL does not end the string. */
    assert_string_equal(json("a\0b", 3), "\"a\\u0000b\"");
    /* '/' needs no escape. */
    assert_string_equal(json("a/b", 3), "\"a/b\"");
}

static void test_dead_letter_file(void **state)
{
    (void)state;
    char dir[256], path[512], text[4096];
    sr_test_tmpdir(dir, sizeof(dir));
    sr_test_path(path, sizeof(path), dir, "dead.jsonl");

    sr_deadletter_t dl;
    assert_int_equal(sr_deadletter_open(&dl, path), SR_OK);
    assert_int_equal(dl.count, 0);
    sr_deadletter_write(&dl, "lines", 42, "line longer than max_line", "bad \"rec\"\n", 10);
    sr_deadletter_write(&dl, "src\t2", -1, "cannot open x", NULL, 0);
    assert_int_equal(dl.count, 2);
    sr_deadletter_close(&dl);
    /* Written through: readable before and after close. */
    assert_true(sr_test_read(path, text, sizeof(text)) > 0);
    assert_string_equal(text,
        "{\"dead_letter\":true,\"source\":\"lines\",\"offset\":42,"
        "\"reason\":\"line longer than max_line\",\"record\":\"bad \\\"rec\\\"\\n\"}\n"
        "{\"dead_letter\":true,\"source\":\"src\\t2\",\"offset\":-1,"
        "\"reason\":\"cannot open x\",\"record\":\"\"}\n");

    /* Opening again appends. */
    assert_int_equal(sr_deadletter_open(&dl, path), SR_OK);
    sr_deadletter_write(&dl, "s", 0, "r", "x", 1);
    sr_deadletter_close(&dl);
    sr_test_read(path, text, sizeof(text));
    assert_non_null(strstr(text, "\"record\":\"x\"}\n"));
    assert_non_null(strstr(text, "\"offset\":42"));
    sr_test_rmtree(dir);
}

static void test_open_errors_and_stderr(void **state)
{
    (void)state;
    sr_deadletter_t dl;
    errno = 0;
    assert_int_equal(sr_deadletter_open(&dl, "/nonexistent-dir/x/dead.jsonl"), SR_EIO);
    assert_int_equal(errno, ENOENT);
    assert_int_equal(sr_deadletter_open(&dl, "-"), SR_OK);
    assert_ptr_equal(dl.fp, stderr);
    sr_deadletter_close(&dl);
    assert_int_equal(sr_deadletter_open(&dl, NULL), SR_OK);
    assert_ptr_equal(dl.fp, stderr);
    sr_deadletter_close(&dl);
    /* Closing does not close stderr, and writing after close only counts. */
    assert_int_equal(fcntl(STDERR_FILENO, F_GETFD) >= 0, 1);
    assert_int_equal(fputc('\n', stderr), '\n');
    sr_deadletter_write(&dl, "s", 0, "r", "x", 1);
    assert_int_equal(dl.count, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain),
        cmocka_unit_test(test_escapes),
        cmocka_unit_test(test_dead_letter_file),
        cmocka_unit_test(test_open_errors_and_stderr),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
