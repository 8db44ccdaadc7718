/* test_deadletter: JSON string escaping (invalid UTF-8 replaced) and the
 * dead-letter line format, to a file and to stderr; rotation at a size;
 * write errors reported once per failure streak, no torn line; after a
 * checkpoint's mark, letters cut back or expected again once. */
#include "sr_test.h"

#include "sr_deadletter.h"
#include "sr_error.h"

#include <errno.h>
#include <signal.h>
#include <sys/resource.h>

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
    sr_deadletter_write_at(&dl, "events", 3, 7, "invalid JSON", "x", 1);
    assert_int_equal(dl.count, 3);
    sr_deadletter_close(&dl);
    /* Written through: readable before and after close. */
    assert_true(sr_test_read(path, text, sizeof(text)) > 0);
    assert_string_equal(text,
        "{\"dead_letter\":true,\"source\":\"lines\",\"offset\":42,"
        "\"reason\":\"line longer than max_line\",\"record\":\"bad \\\"rec\\\"\\n\"}\n"
        "{\"dead_letter\":true,\"source\":\"src\\t2\",\"offset\":-1,"
        "\"reason\":\"cannot open x\",\"record\":\"\"}\n"
        "{\"dead_letter\":true,\"source\":\"events\",\"partition\":3,\"offset\":7,"
        "\"reason\":\"invalid JSON\",\"record\":\"x\"}\n");

    /* Opening again appends. */
    assert_int_equal(sr_deadletter_open(&dl, path), SR_OK);
    sr_deadletter_write(&dl, "s", 0, "r", "x", 1);
    sr_deadletter_close(&dl);
    sr_test_read(path, text, sizeof(text));
    assert_non_null(strstr(text, "\"record\":\"x\"}\n"));
    assert_non_null(strstr(text, "\"offset\":42"));
    sr_test_rmtree(dir);
}

/* Recovery: past a checkpoint's mark, the letters are cut away (sources
 * that read again) or expected again from a replay, each copy once. */
static void test_recovery_after_mark(void **state)
{
    (void)state;
    char dir[256], path[512], text[4096];
    sr_test_tmpdir(dir, sizeof(dir));
    sr_test_path(path, sizeof(path), dir, "dead.jsonl");
    sr_deadletter_t dl;
    assert_int_equal(sr_deadletter_open(&dl, path), SR_OK);
    sr_deadletter_write(&dl, "s", 1, "r", "before", 6);
    int64_t bytes;
    uint64_t ino, tail;
    assert_int_equal(sr_deadletter_mark(&dl, &bytes, &ino, &tail), 0);
    assert_int_equal(bytes, dl.size);
    sr_deadletter_write(&dl, "s", 2, "r", "a", 1);
    sr_deadletter_write(&dl, "s", 3, "r", "b", 1);
    sr_deadletter_write(&dl, "s", 3, "r", "b", 1);
    sr_deadletter_close(&dl);
    /* A line torn by the kill. */
    FILE *fp = fopen(path, "a");
    fputs("{\"dead_letter\":true,\"source\":\"s\"", fp);
    fclose(fp);

    /* Replayed: a, b, b again are not written; a third b and the letter
     * with another offset are; after the end a is written again. The torn
     * line goes. Another file (inode, or bytes before the mark) is left
     * alone. */
    assert_int_equal(sr_deadletter_open(&dl, path), SR_OK);
    assert_int_equal(sr_deadletter_expect(&dl, bytes, ino + 1, tail), 0);
    assert_int_equal(sr_deadletter_expect(&dl, bytes, ino, tail + 1), 0);
    assert_int_equal(sr_deadletter_expect(&dl, bytes - 1, ino, tail), 0); /* not a line's end */
    assert_int_equal(sr_deadletter_expect(&dl, bytes, ino, tail), 3);
    uint64_t before = dl.count;
    sr_deadletter_write(&dl, "s", 3, "r", "b", 1);
    sr_deadletter_write(&dl, "s", 2, "r", "a", 1);
    sr_deadletter_write(&dl, "s", 3, "r", "b", 1);
    sr_deadletter_write(&dl, "s", 3, "r", "b", 1);
    sr_deadletter_write(&dl, "s", 4, "r", "a", 1);
    sr_deadletter_expect_end(&dl);
    sr_deadletter_write(&dl, "s", 2, "r", "a", 1);
    assert_int_equal(dl.count - before, 6); /* counted, written or not */
    sr_deadletter_close(&dl);
    sr_test_read(path, text, sizeof(text));
    assert_string_equal(text + bytes,
        "{\"dead_letter\":true,\"source\":\"s\",\"offset\":2,\"reason\":\"r\",\"record\":\"a\"}\n"
        "{\"dead_letter\":true,\"source\":\"s\",\"offset\":3,\"reason\":\"r\",\"record\":\"b\"}\n"
        "{\"dead_letter\":true,\"source\":\"s\",\"offset\":3,\"reason\":\"r\",\"record\":\"b\"}\n"
        "{\"dead_letter\":true,\"source\":\"s\",\"offset\":3,\"reason\":\"r\",\"record\":\"b\"}\n"
        "{\"dead_letter\":true,\"source\":\"s\",\"offset\":4,\"reason\":\"r\",\"record\":\"a\"}\n"
        "{\"dead_letter\":true,\"source\":\"s\",\"offset\":2,\"reason\":\"r\",\"record\":\"a\"}\n");

    /* Read again from their positions: cut back to the mark, not past it;
     * another file is left alone. */
    assert_int_equal(sr_deadletter_open(&dl, path), SR_OK);
    assert_int_equal(sr_deadletter_cut_back(&dl, bytes, ino + 1, tail), SR_OK);
    assert_int_equal(sr_deadletter_cut_back(&dl, bytes, ino, tail + 1), SR_OK);
    assert_true(dl.size > bytes);
    assert_int_equal(sr_deadletter_cut_back(&dl, bytes, ino, tail), SR_OK);
    assert_int_equal(dl.size, bytes);
    assert_int_equal(sr_deadletter_cut_back(&dl, bytes + 100, ino, tail), SR_OK);
    assert_int_equal(dl.size, bytes);
    sr_deadletter_write(&dl, "s", 2, "r", "a", 1);
    sr_deadletter_close(&dl);
    sr_test_read(path, text, sizeof(text));
    assert_string_equal(text,
        "{\"dead_letter\":true,\"source\":\"s\",\"offset\":1,\"reason\":\"r\",\"record\":\"before\"}\n"
        "{\"dead_letter\":true,\"source\":\"s\",\"offset\":2,\"reason\":\"r\",\"record\":\"a\"}\n");
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
    assert_int_equal(dl.fd, STDERR_FILENO);
    sr_deadletter_close(&dl);
    assert_int_equal(sr_deadletter_open(&dl, NULL), SR_OK);
    assert_int_equal(dl.fd, STDERR_FILENO);
    sr_deadletter_close(&dl);
    /* Closing does not close stderr, and writing after close only counts. */
    assert_int_equal(fcntl(STDERR_FILENO, F_GETFD) >= 0, 1);
    assert_int_equal(fputc('\n', stderr), '\n');
    sr_deadletter_write(&dl, "s", 0, "r", "x", 1);
    assert_int_equal(dl.count, 1);
}

static void test_invalid_utf8(void **state)
{
    (void)state;
    /* A stray continuation byte, a cut sequence, an overlong '/', a
     * surrogate and a code point past U+10FFFF: one U+FFFD per maximal
     * invalid part; valid characters around them stay. */
    assert_string_equal(json("a\x80" "b", 3), "\"a\xef\xbf\xbd" "b\"");
    assert_string_equal(json("\xe2\x82", 2), "\"\xef\xbf\xbd\"");
    assert_string_equal(json("\xc0\xaf", 2), "\"\xef\xbf\xbd\xef\xbf\xbd\"");
    assert_string_equal(json("\xed\xa0\x80", 3), "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\"");
    assert_string_equal(json("\xf4\x90\x80\x80", 4),
                        "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\"");
    assert_string_equal(json("\xf0\x9f\x98\x80\xff\xe2\x82\xac", 8),
                        "\"\xf0\x9f\x98\x80\xef\xbf\xbd\xe2\x82\xac\"");
}

/* The whole file as a string (sr_test_slurp leaves room for the NUL). */
static sr_test_blob_t slurp_text(const char *path)
{
    sr_test_blob_t b = sr_test_slurp(path);
    if (b.data) b.data[b.len] = '\0';
    return b;
}

/* Lines in the file at path (0 when it does not exist). */
static int count_lines(const char *path)
{
    sr_test_blob_t b = slurp_text(path);
    int n = 0;
    for (size_t i = 0; i < b.len; i++) n += b.data[i] == '\n';
    free(b.data);
    return n;
}

static void test_rotation(void **state)
{
    (void)state;
    char dir[256], path[512], p1[600], p2[600], p3[600];
    sr_test_tmpdir(dir, sizeof(dir));
    sr_test_path(path, sizeof(path), dir, "dead.jsonl");
    snprintf(p1, sizeof(p1), "%s.1", path);
    snprintf(p2, sizeof(p2), "%s.2", path);
    snprintf(p3, sizeof(p3), "%s.3", path);
    char record[100];
    memset(record, 'x', sizeof(record));
    /* Each line is 177 bytes: a file holds 3 before it passes 500. */
    sr_deadletter_t dl;
    assert_int_equal(sr_deadletter_open(&dl, path), SR_OK);
    sr_deadletter_set_rotation(&dl, 500, 2);
    for (int i = 0; i < 3; i++) sr_deadletter_write(&dl, "s", i, "r", record, sizeof(record));
    assert_int_equal(count_lines(path), 0);
    assert_int_equal(count_lines(p1), 3);
    for (int i = 3; i < 11; i++) sr_deadletter_write(&dl, "s", i, "r", record, sizeof(record));
    assert_int_equal(dl.count, 11);
    /* 11 lines: 3 in .2 (lines 4-6), 3 in .1 (7-9), 2 in the new file;
     * the first 3 went with the rotation past keep. */
    assert_int_equal(count_lines(path), 2);
    assert_int_equal(count_lines(p1), 3);
    assert_int_equal(count_lines(p2), 3);
    assert_int_equal(access(p3, F_OK), -1);
    sr_test_blob_t b = slurp_text(p2);
    assert_non_null(strstr(b.data, "\"offset\":3,"));
    free(b.data);
    b = slurp_text(path);
    assert_non_null(strstr(b.data, "\"offset\":10,"));
    free(b.data);
    sr_deadletter_close(&dl);

    /* Reopened: its size counts toward the limit. keep 0: no old file. */
    assert_int_equal(sr_deadletter_open(&dl, path), SR_OK);
    sr_deadletter_set_rotation(&dl, 500, 0);
    sr_deadletter_write(&dl, "s", 11, "r", record, sizeof(record));
    assert_int_equal(count_lines(path), 0);
    assert_int_equal(count_lines(p1), 3);
    sr_deadletter_close(&dl);
    remove(p1);
    remove(p2);
    remove(path);
    sr_test_rmtree(dir);
}

/* What stderr got while captured: into a pipe, which no file size limit
 * cuts short. */
static char captured[8192];
static int capture_fds[3];

static void capture_stderr(void)
{
    assert_int_equal(pipe(capture_fds), 0);
    capture_fds[2] = dup(STDERR_FILENO);
    assert_true(capture_fds[2] >= 0);
    assert_int_equal(dup2(capture_fds[1], STDERR_FILENO), STDERR_FILENO);
    close(capture_fds[1]);
}

static void restore_stderr(void)
{
    assert_int_equal(dup2(capture_fds[2], STDERR_FILENO), STDERR_FILENO);
    close(capture_fds[2]);
    ssize_t n = read(capture_fds[0], captured, sizeof(captured) - 1);
    captured[n > 0 ? n : 0] = '\0';
    close(capture_fds[0]);
}

/* How many times needle occurs in what stderr got. */
static int occurrences(const char *needle)
{
    int n = 0;
    for (const char *p = captured; (p = strstr(p, needle)); p++) n++;
    return n;
}

static void test_write_errors_reported_once(void **state)
{
    (void)state;
    char dir[256], path[512];
    sr_test_tmpdir(dir, sizeof(dir));
    sr_test_path(path, sizeof(path), dir, "dead.jsonl");

    /* A full device: every write fails, reported once. */
    sr_deadletter_t dl;
    assert_int_equal(sr_deadletter_open(&dl, "/dev/full"), SR_OK);
    capture_stderr();
    for (int i = 0; i < 5; i++) sr_deadletter_write(&dl, "s", i, "r", "x", 1);
    restore_stderr();
    assert_int_equal(dl.count, 5);
    assert_int_equal(dl.lost, 5);
    assert_int_equal(occurrences("streamrun: dead-letter file /dev/full: cannot write: No space left on device"), 1);
    sr_deadletter_close(&dl);

    /* A file limit tears a write: it is cut back, reported once, and the
     * next write after the limit goes says how many were lost. */
    struct rlimit old, lim;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    void (*handler)(int) = signal(SIGXFSZ, SIG_IGN);
    assert_int_equal(sr_deadletter_open(&dl, path), SR_OK);
    sr_deadletter_write(&dl, "s", 1, "r", "first", 5);
    sr_test_blob_t whole = sr_test_slurp(path);
    long first = (long)whole.len;
    free(whole.data);
    capture_stderr();
    lim.rlim_cur = (rlim_t)first + 20;
    lim.rlim_max = old.rlim_max;
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    sr_deadletter_write(&dl, "s", 2, "r", "second", 6);
    sr_deadletter_write(&dl, "s", 3, "r", "third", 5);
    whole = sr_test_slurp(path);
    long held = (long)whole.len;
    free(whole.data);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    sr_deadletter_write(&dl, "s", 4, "r", "fourth", 6);
    restore_stderr();
    signal(SIGXFSZ, handler);
    sr_deadletter_close(&dl);
    assert_int_equal(held, first);
    assert_int_equal(occurrences(": cannot write: File too large; dead letters are lost until it works again"), 1);
    assert_int_equal(occurrences("written again; 2 dead letters were lost"), 1);
    sr_test_blob_t b = slurp_text(path);
    assert_int_equal(count_lines(path), 2);
    assert_non_null(strstr(b.data, "\"record\":\"first\"}\n{"));
    assert_non_null(strstr(b.data, "\"record\":\"fourth\"}\n"));
    free(b.data);
    remove(path);
    sr_test_rmtree(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_invalid_utf8),
        cmocka_unit_test(test_rotation),
        cmocka_unit_test(test_write_errors_reported_once),
        cmocka_unit_test(test_plain),
        cmocka_unit_test(test_escapes),
        cmocka_unit_test(test_dead_letter_file),
        cmocka_unit_test(test_recovery_after_mark),
        cmocka_unit_test(test_open_errors_and_stderr),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
