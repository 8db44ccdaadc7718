/* test_dltally: dead letters counted per source, the last ones kept newest
 * first, their text cut to valid UTF-8 without control bytes; the file's
 * writer feeds the tally. */
#include "sr_test.h"

#include "sr_deadletter.h"
#include "sr_dltally.h"

static uint64_t count_of(const sr_dltally_t *t, const char *source)
{
    uint64_t c;
    for (size_t i = 0; i < t->ncounts; i++) {
        const char *name = sr_dltally_source(t, i, &c);
        if (!strcmp(name, source)) return c;
    }
    return 0;
}

static void test_counts_and_ring(void **state)
{
    (void)state;
    sr_dltally_t t;
    memset(&t, 0, sizeof(t));
    assert_null(sr_dltally_recent(&t, 0));
    char rec[32];
    for (int i = 0; i < 50; i++) {
        snprintf(rec, sizeof(rec), "record %d", i);
        sr_dltally_add(&t, i % 5 == 0 ? "stage.map" : "lines", i, "invalid JSON", rec, strlen(rec));
    }
    assert_int_equal(t.seq, 50);
    assert_int_equal(t.ncounts, 2);
    assert_int_equal(count_of(&t, "stage.map"), 10);
    assert_int_equal(count_of(&t, "lines"), 40);
    const sr_dltally_entry_t *e = sr_dltally_recent(&t, 0);
    assert_string_equal(e->record, "record 49");
    assert_int_equal(e->offset, 49);
    assert_int_equal(e->seq, 50);
    assert_string_equal(e->source, "lines");
    e = sr_dltally_recent(&t, SR_DLTALLY_RECENT - 1);
    assert_string_equal(e->record, "record 30");
    assert_null(sr_dltally_recent(&t, SR_DLTALLY_RECENT));
    sr_dltally_close(&t);
    assert_int_equal(t.ncounts, 0);
}

static void test_text_cut(void **state)
{
    (void)state;
    sr_dltally_t t;
    memset(&t, 0, sizeof(t));
    /* Invalid UTF-8 and a control byte, then a long run of 2-byte
     * characters that must not be cut in the middle. */
    char rec[600];
    size_t n = 0;
    rec[n++] = 'a';
    rec[n++] = (char)0xff;
    rec[n++] = '\n';
    while (n + 2 < sizeof(rec)) { rec[n++] = (char)0xc3; rec[n++] = (char)0xa9; }
    sr_dltally_add(&t, "src", 7, "bad", rec, n);
    const sr_dltally_entry_t *e = sr_dltally_recent(&t, 0);
    assert_int_equal(e->record_len, n);
    assert_memory_equal(e->record, "a\xef\xbf\xbd \xc3\xa9", 7);
    size_t len = strlen(e->record);
    assert_true(len < SR_DLTALLY_TEXT);
    assert_int_equal((len - 5) % 2, 0); /* whole characters only */
    assert_true(e->record_shown < n); /* cut */
    /* A whole record, its text longer than its bytes once an invalid
     * byte is replaced: not cut. */
    sr_dltally_add(&t, "src", 8, "bad", "Gr\xc3\xbc\xc3\x9f" "e \xff", 9);
    e = sr_dltally_recent(&t, 0);
    assert_int_equal(e->record_len, 9);
    assert_int_equal(e->record_shown, 9);
    sr_dltally_close(&t);
}

static void test_many_sources(void **state)
{
    (void)state;
    sr_dltally_t t;
    memset(&t, 0, sizeof(t));
    char name[32];
    for (int i = 0; i < SR_DLTALLY_SOURCES + 10; i++) {
        snprintf(name, sizeof(name), "s%d", i);
        sr_dltally_add(&t, name, 0, "r", "x", 1);
    }
    assert_int_equal(t.ncounts, SR_DLTALLY_SOURCES);
    assert_int_equal(t.seq, SR_DLTALLY_SOURCES + 10);
    sr_dltally_close(&t);
}

static void test_writer_feeds_tally(void **state)
{
    (void)state;
    char dir[256], path[300];
    sr_test_tmpdir(dir, sizeof(dir));
    snprintf(path, sizeof(path), "%s/dead.jsonl", dir);
    sr_deadletter_t dl;
    assert_int_equal(sr_deadletter_open(&dl, path), 0);
    sr_deadletter_write(&dl, "lines", 12, "line longer than max_line", "xyz", 3);
    sr_deadletter_write(&dl, "lines", 40, "invalid JSON", "{", 1);
    const sr_dltally_t *t = sr_deadletter_tally(&dl);
    assert_int_equal(t->seq, 2);
    assert_int_equal(count_of(t, "lines"), 2);
    assert_string_equal(sr_dltally_recent(t, 0)->reason, "invalid JSON");
    sr_deadletter_close(&dl);
    sr_test_rmtree(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counts_and_ring),
        cmocka_unit_test(test_text_cut),
        cmocka_unit_test(test_many_sources),
        cmocka_unit_test(test_writer_feeds_tally),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
