/* test_linesplit: the line splitter: separators, carry-over across reads at
 * every byte boundary, max_line cut-off, finish() and stopping early. */
#include "sr_test.h"

#include "sr_alloc.h"
#include "sr_error.h"
#include "sr_linesplit.h"

#define MAXL 64

typedef struct line {
    char text[256];
    size_t len;
    int64_t pos;
    int status;
} line_t;

typedef struct lines {
    line_t v[MAXL];
    int n;
    int stop_after; /* return 1 from the callback after this many lines; 0: never */
} lines_t;

static int collect(void *ud, const char *p, size_t len, int64_t pos, int status)
{
    lines_t *ls = ud;
    assert_true(ls->n < MAXL);
    assert_true(len < sizeof(ls->v[0].text));
    line_t *l = &ls->v[ls->n++];
    memcpy(l->text, p, len);
    l->text[len] = '\0';
    l->len = len;
    l->pos = pos;
    l->status = status;
    return ls->stop_after && ls->n >= ls->stop_after;
}

static void expect_line(const lines_t *ls, int i, const char *text, int64_t pos, int status)
{
    assert_true(i < ls->n);
    assert_string_equal(ls->v[i].text, text);
    assert_int_equal(ls->v[i].len, strlen(text));
    assert_int_equal(ls->v[i].pos, pos);
    assert_int_equal(ls->v[i].status, status);
}

/* Feeds in pieces cut at the given offsets (ascending, within the input). */
static void feed_cut(sr_linesplit_t *sp, const char *in, const size_t *cuts, int ncuts,
                     lines_t *out)
{
    size_t at = 0, n = strlen(in);
    for (int c = 0; c <= ncuts; c++) {
        size_t end = c < ncuts ? cuts[c] : n;
        long used = sr_linesplit_feed(sp, in + at, end - at, collect, out);
        assert_int_equal(used, (long)(end - at));
        at = end;
    }
}

static void same_lines(const lines_t *a, const lines_t *b)
{
    assert_int_equal(a->n, b->n);
    for (int i = 0; i < a->n; i++) {
        assert_string_equal(a->v[i].text, b->v[i].text);
        assert_int_equal(a->v[i].len, b->v[i].len);
        assert_int_equal(a->v[i].pos, b->v[i].pos);
        assert_int_equal(a->v[i].status, b->v[i].status);
    }
}

static void test_separators_and_empty_lines(void **state)
{
    (void)state;
    sr_linesplit_t sp;
    lines_t out = {0};
    sr_linesplit_init(&sp, 0, 0);
    const char *in = "a\nbc\r\n\n\r\nd\re\n";
    assert_int_equal(sr_linesplit_feed(&sp, in, strlen(in), collect, &out), (long)strlen(in));
    assert_int_equal(out.n, 5);
    expect_line(&out, 0, "a", 0, 0);
    expect_line(&out, 1, "bc", 2, 0);
    expect_line(&out, 2, "", 6, 0);
    expect_line(&out, 3, "", 7, 0);
    expect_line(&out, 4, "d\re", 9, 0); /* a lone \r inside a line is data */
    assert_false(sr_linesplit_pending(&sp));
    assert_int_equal(sp.pos, (int64_t)strlen(in));
    sr_linesplit_finish(&sp, 0, collect, &out);
    assert_int_equal(out.n, 5);
    sr_linesplit_close(&sp);
}

static void test_start_pos(void **state)
{
    (void)state;
    sr_linesplit_t sp;
    lines_t out = {0};
    sr_linesplit_init(&sp, 0, 1000);
    sr_linesplit_feed(&sp, "x\nyy\n", 5, collect, &out);
    expect_line(&out, 0, "x", 1000, 0);
    expect_line(&out, 1, "yy", 1002, 0);
    sr_linesplit_close(&sp);
}

/* Every way of cutting the input into two and three reads gives the lines
 * of one read. */
static void check_all_cuts(const char *in, size_t max_line, int finish_status)
{
    lines_t whole = {0};
    sr_linesplit_t sp;
    sr_linesplit_init(&sp, max_line, 0);
    feed_cut(&sp, in, NULL, 0, &whole);
    sr_linesplit_finish(&sp, finish_status, collect, &whole);
    sr_linesplit_close(&sp);

    size_t n = strlen(in);
    for (size_t i = 0; i <= n; i++) {
        for (size_t j = i; j <= n; j++) {
            lines_t cut = {0};
            size_t cuts[2] = {i, j};
            sr_linesplit_init(&sp, max_line, 0);
            feed_cut(&sp, in, cuts, 2, &cut);
            sr_linesplit_finish(&sp, finish_status, collect, &cut);
            sr_linesplit_close(&sp);
            same_lines(&whole, &cut);
        }
    }
    /* One byte per read. */
    lines_t bytes = {0};
    size_t cuts[256];
    assert_true(n < 256);
    for (size_t i = 0; i < n; i++) cuts[i] = i + 1;
    sr_linesplit_init(&sp, max_line, 0);
    feed_cut(&sp, in, cuts, (int)n, &bytes);
    sr_linesplit_finish(&sp, finish_status, collect, &bytes);
    sr_linesplit_close(&sp);
    same_lines(&whole, &bytes);
}

static void test_every_byte_boundary(void **state)
{
    (void)state;
    const char *in = "alpha\r\nbeta\n\ngamma\r\n\r\ndelta";
    check_all_cuts(in, 0, 0);

    lines_t out = {0};
    sr_linesplit_t sp;
    sr_linesplit_init(&sp, 0, 0);
    size_t cuts[] = {3, 6, 7, 13};
    feed_cut(&sp, in, cuts, 4, &out);
    assert_true(sr_linesplit_pending(&sp));
    sr_linesplit_finish(&sp, 0, collect, &out);
    sr_linesplit_close(&sp);
    assert_int_equal(out.n, 6);
    expect_line(&out, 0, "alpha", 0, 0);
    expect_line(&out, 1, "beta", 7, 0);
    expect_line(&out, 2, "", 12, 0);
    expect_line(&out, 3, "gamma", 13, 0);
    expect_line(&out, 4, "", 20, 0);
    expect_line(&out, 5, "delta", 22, 0);
}

static void test_max_line(void **state)
{
    (void)state;
    sr_linesplit_t sp;
    lines_t out = {0};
    sr_linesplit_init(&sp, 5, 0);
    const char *in = "abcdefghij\nxy\nvwxyz\n0123456\r\nok\r\n";
    sr_linesplit_feed(&sp, in, strlen(in), collect, &out);
    assert_int_equal(out.n, 5);
    expect_line(&out, 0, "abcde", 0, SR_ETOOLONG); /* the head; the rest is dropped */
    expect_line(&out, 1, "xy", 11, 0);
    expect_line(&out, 2, "vwxyz", 14, 0);          /* exactly max_line is fine */
    expect_line(&out, 3, "01234", 20, SR_ETOOLONG);
    expect_line(&out, 4, "ok", 29, 0);
    sr_linesplit_close(&sp);

    /* The same, cut anywhere: one report per long line, none for its rest. */
    check_all_cuts(in, 5, 0);
    /* A line of exactly max_line bytes ended by \r\n is not too long, even
     * when its \r arrives in a read before its \n. */
    check_all_cuts("abcde\r\nfghij\r\n", 5, 0);
    lines_t cr = {0};
    sr_linesplit_init(&sp, 5, 0);
    sr_linesplit_feed(&sp, "abcde\r", 6, collect, &cr);
    assert_int_equal(cr.n, 0);
    sr_linesplit_feed(&sp, "\nabcdef", 7, collect, &cr);
    assert_int_equal(cr.n, 2);
    expect_line(&cr, 0, "abcde", 0, 0);
    expect_line(&cr, 1, "abcde", 7, SR_ETOOLONG);
    sr_linesplit_close(&sp);

    /* A long line still going when the stream ends is not reported twice. */
    lines_t tail = {0};
    sr_linesplit_init(&sp, 3, 0);
    sr_linesplit_feed(&sp, "abcdefgh", 8, collect, &tail);
    sr_linesplit_feed(&sp, "ijk", 3, collect, &tail);
    assert_false(sr_linesplit_pending(&sp));
    sr_linesplit_finish(&sp, SR_ECLOSED, collect, &tail);
    assert_int_equal(tail.n, 1);
    expect_line(&tail, 0, "abc", 0, SR_ETOOLONG);
    /* ... and the next line after finish is whole again. */
    sr_linesplit_feed(&sp, "xy\n", 3, collect, &tail);
    assert_int_equal(tail.n, 2);
    expect_line(&tail, 1, "xy", 11, 0);
    sr_linesplit_close(&sp);
}

static void test_finish(void **state)
{
    (void)state;
    sr_linesplit_t sp;
    lines_t out = {0};

    /* Status 0: the end of a file; the last line needs no newline. */
    sr_linesplit_init(&sp, 0, 0);
    sr_linesplit_feed(&sp, "one\ntwo\r", 8, collect, &out);
    assert_int_equal(out.n, 1);
    assert_true(sr_linesplit_pending(&sp));
    sr_linesplit_finish(&sp, 0, collect, &out);
    assert_int_equal(out.n, 2);
    expect_line(&out, 1, "two", 4, 0);
    assert_false(sr_linesplit_pending(&sp));
    sr_linesplit_finish(&sp, 0, collect, &out); /* nothing left: no call */
    assert_int_equal(out.n, 2);
    sr_linesplit_close(&sp);

    /* SR_ECLOSED: a connection closed mid-line; the bytes as received. */
    lines_t cl = {0};
    sr_linesplit_init(&sp, 0, 0);
    sr_linesplit_feed(&sp, "a\npar", 5, collect, &cl);
    sr_linesplit_feed(&sp, "tial", 4, collect, &cl);
    sr_linesplit_finish(&sp, SR_ECLOSED, collect, &cl);
    assert_int_equal(cl.n, 2);
    expect_line(&cl, 0, "a", 0, 0);
    expect_line(&cl, 1, "partial", 2, SR_ECLOSED);
    /* The splitter goes on counting bytes for the next stream. */
    sr_linesplit_feed(&sp, "next\n", 5, collect, &cl);
    assert_int_equal(cl.n, 3);
    expect_line(&cl, 2, "next", 9, 0);
    sr_linesplit_close(&sp);

    /* Empty input: finish reports nothing. */
    lines_t none = {0};
    sr_linesplit_init(&sp, 0, 0);
    sr_linesplit_finish(&sp, SR_ECLOSED, collect, &none);
    assert_int_equal(none.n, 0);
    sr_linesplit_close(&sp);
}

static void test_stop_by_callback(void **state)
{
    (void)state;
    sr_linesplit_t sp;
    lines_t out = {.stop_after = 1};
    sr_linesplit_init(&sp, 0, 0);
    const char *in = "ab\ncd\nef";
    long used = sr_linesplit_feed(&sp, in, strlen(in), collect, &out);
    assert_int_equal(used, 3);
    assert_int_equal(out.n, 1);
    out.stop_after = 2;
    used += sr_linesplit_feed(&sp, in + used, strlen(in) - (size_t)used, collect, &out);
    assert_int_equal(used, 6);
    assert_int_equal(out.n, 2);
    out.stop_after = 0;
    used += sr_linesplit_feed(&sp, in + used, strlen(in) - (size_t)used, collect, &out);
    assert_int_equal(used, 8);
    assert_int_equal(out.n, 2);
    sr_linesplit_finish(&sp, 0, collect, &out);
    expect_line(&out, 0, "ab", 0, 0);
    expect_line(&out, 1, "cd", 3, 0);
    expect_line(&out, 2, "ef", 6, 0);

    /* Stopping on a carried line. */
    lines_t c = {.stop_after = 1};
    sr_linesplit_t sp2;
    sr_linesplit_init(&sp2, 0, 0);
    sr_linesplit_feed(&sp2, "x", 1, collect, &c);
    used = sr_linesplit_feed(&sp2, "y\nz\n", 4, collect, &c);
    assert_int_equal(used, 2);
    expect_line(&c, 0, "xy", 0, 0);
    c.stop_after = 0;
    sr_linesplit_feed(&sp2, "z\n", 2, collect, &c);
    expect_line(&c, 1, "z", 3, 0);
    sr_linesplit_close(&sp2);
    sr_linesplit_close(&sp);
}

/* Out of memory while carrying a line: the line becomes an SR_ENOMEM
 * report, its rest is dropped, and the following lines are unharmed. */
static void test_out_of_memory(void **state)
{
    (void)state;
    size_t before = sr_alloc_used();
    sr_linesplit_t sp;
    lines_t out = {0};
    sr_linesplit_init(&sp, 0, 0);
    sr_alloc_fail_after(0);
    long used = sr_linesplit_feed(&sp, "ok\npartial", 10, collect, &out);
    sr_alloc_fail_after(-1);
    assert_int_equal(used, 10);
    assert_int_equal(out.n, 2);
    expect_line(&out, 0, "ok", 0, 0);
    expect_line(&out, 1, "partial", 3, SR_ENOMEM);
    assert_false(sr_linesplit_pending(&sp));
    sr_linesplit_feed(&sp, "-rest\nnext\n", 11, collect, &out);
    assert_int_equal(out.n, 3);
    expect_line(&out, 2, "next", 16, 0);
    sr_linesplit_close(&sp);
    assert_int_equal(sr_alloc_used(), before);
}

/* Where a reader started again must start: the line in hand's first
 * byte, also while an over-long one is skipped; else the next byte. */
static void test_resume_pos(void **state)
{
    (void)state;
    sr_linesplit_t sp;
    lines_t out = {0};
    sr_linesplit_init(&sp, 4, 100);
    assert_int_equal(sr_linesplit_resume_pos(&sp), 100);
    assert_int_equal(sr_linesplit_feed(&sp, "ab\ncd", 5, collect, &out), 5);
    assert_int_equal(sr_linesplit_resume_pos(&sp), 103); /* "cd" carried */
    assert_int_equal(sr_linesplit_feed(&sp, "efgh", 4, collect, &out), 4);
    assert_int_equal(out.n, 2); /* "cdefgh" is too long: reported, skipped */
    expect_line(&out, 1, "cdef", 103, SR_ETOOLONG);
    assert_int_equal(sr_linesplit_resume_pos(&sp), 103);
    assert_int_equal(sr_linesplit_feed(&sp, "ij\n", 3, collect, &out), 3);
    assert_int_equal(sr_linesplit_resume_pos(&sp), 112);
    sr_linesplit_close(&sp);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_separators_and_empty_lines),
        cmocka_unit_test(test_start_pos),
        cmocka_unit_test(test_every_byte_boundary),
        cmocka_unit_test(test_max_line),
        cmocka_unit_test(test_finish),
        cmocka_unit_test(test_stop_by_callback),
        cmocka_unit_test(test_out_of_memory),
        cmocka_unit_test(test_resume_pos),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
