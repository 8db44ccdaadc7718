/* test_loop: how sr_loop_next cuts batches: fast-forward over files, the batch timer, stop and signals, bursts running at most one interval ahead, dead letters. */
#include "sr_test.h"

#include "sr_alloc.h"
#include "sr_error.h"
#include "sr_loop.h"
#include "sr_source.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <time.h>

#define TOL_MS 5.0 /* clock slack allowed on either side of a deadline */

typedef struct fixture {
    char dir[256];
    char dead[512];             /* the dead-letter file */
    size_t alloc_before;
    sr_loop_t *l;
    int cfd;                    /* test-side client socket, -1 when closed */
    int saved_stderr;           /* -1 unless stderr is being captured */
} fixture_t;

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    f->alloc_before = sr_alloc_used();
    sr_test_tmpdir(f->dir, sizeof(f->dir));
    sr_test_path(f->dead, sizeof(f->dead), f->dir, "dead.jsonl");
    f->cfd = f->saved_stderr = -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    if (f->saved_stderr >= 0) {
        dup2(f->saved_stderr, STDERR_FILENO);
        close(f->saved_stderr);
    }
    sr_loop_free(f->l);
    if (f->cfd >= 0) close(f->cfd);
    sr_test_rmtree(f->dir);
    size_t leaked = sr_alloc_used() - f->alloc_before;
    free(f);
    assert_int_equal(leaked, 0);
    return 0;
}

/* The wall clock in milliseconds since the epoch, read independently of the
 * loop. */
static double wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

static void new_loop(fixture_t *f, int64_t batch_ms, size_t max_records, const char *dead)
{
    char err[256] = "";
    sr_loop_opts_t o = {
        .batch_ms = batch_ms, .max_batch_records = max_records, .dead_letter_path = dead,
    };
    f->l = sr_loop_new(&o, err, sizeof(err));
    if (!f->l) fail_msg("sr_loop_new: %s", err);
}

static int add(fixture_t *f, sr_source_opts_t o)
{
    char err[256] = "";
    if (!o.name) o.name = o.kind;
    int idx = sr_loop_add_source(f->l, &o, err, sizeof(err));
    if (idx < 0) fail_msg("adding %s: %s", o.kind, err);
    return idx;
}

/* One sr_loop_next; the batches are released. */
static sr_tick_t tick(fixture_t *f)
{
    sr_tick_t t;
    memset(&t, 0x5a, sizeof(t));
    assert_int_equal(sr_loop_next(f->l, &t), SR_OK);
    sr_loop_release(f->l);
    return t;
}

/* -- Creation -- */

static void test_new_rejects_bad_interval(void **state)
{
    (void)state;
    size_t before = sr_alloc_used();
    const int64_t bad[] = {0, -1, -1000};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char err[256] = "";
        sr_loop_opts_t o = {.batch_ms = bad[i]};
        assert_null(sr_loop_new(&o, err, sizeof(err)));
        assert_string_equal(err, "batch interval must be positive");
    }
    assert_int_equal(sr_alloc_used(), before);
}

static void test_new_bad_dead_letter_path(void **state)
{
    fixture_t *f = *state;
    char path[600], err[1024] = "", want[1024];
    sr_test_path(path, sizeof(path), f->dir, "no/such/dir/dead.jsonl");
    sr_loop_opts_t o = {.batch_ms = 100, .dead_letter_path = path};
    assert_null(sr_loop_new(&o, err, sizeof(err)));
    snprintf(want, sizeof(want), "cannot open dead-letter file %s: No such file or directory",
             path);
    assert_string_equal(err, want);
}

static void test_unknown_source_kind(void **state)
{
    fixture_t *f = *state;
    new_loop(f, 100, 0, f->dead);
    char err[256] = "";
    sr_source_opts_t o = {.kind = "carrier_pigeon"};
    assert_int_equal(sr_loop_add_source(f->l, &o, err, sizeof(err)), SR_EINVAL);
    assert_string_equal(err, "unknown source kind 'carrier_pigeon'");
    assert_int_equal(sr_loop_nsources(f->l), 0);
    assert_null(sr_loop_source(f->l, 0));
    assert_null(sr_loop_batch(f->l, 0));
    assert_null(sr_loop_batch(f->l, -1));
}

/* -- (a) Fast-forward over stored input -- */

/* Only text_file sources: a 6 MB file with max_batch_records 100 and a 1 s
 * interval. Batches of exactly 100 records follow each other without
 * waiting for the clock, on a logical clock (batch k at k s); every line
 * arrives once, in order; the last tick says so. */
static void test_fast_forward_text_file(void **state)
{
    fixture_t *f = *state;
    enum { LINES = 60000, LEN = 100, INTERVAL = 1000 };
    char path[600];
    sr_test_path(path, sizeof(path), f->dir, "big.txt");
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    for (int i = 0; i < LINES; i++) fprintf(fp, "%07d-%0*d\n", i, LEN - 9, 0);
    assert_int_equal(fclose(fp), 0);

    new_loop(f, INTERVAL, 100, f->dead);
    int src = add(f, (sr_source_opts_t){.kind = "text_file", .path = path});
    double start = wall_ms();
    int batches = 0, seen = 0, lasts = 0;
    int64_t prev = 0;
    sr_tick_t t = {0};
    while (!t.last && batches < 1000) {
        assert_int_equal(sr_loop_next(f->l, &t), SR_OK);
        batches++;
        if (t.last) lasts++;
        /* A logical clock: batch k at k * interval. */
        assert_int_equal(t.time_ms, (int64_t)batches * INTERVAL);
        if (prev) assert_int_equal(t.time_ms, prev + INTERVAL);
        prev = t.time_ms;
        assert_int_equal(t.reload, 0);
        sr_batch_t *b = sr_loop_batch(f->l, src);
        /* Exactly max_batch_records a batch, whatever the reads. */
        if (!t.last) assert_int_equal(b->n, 100);
        char want[16];
        for (size_t j = 0; j < b->n; j++, seen++) {
            snprintf(want, sizeof(want), "%07d-", seen);
            if (b->off[j + 1] - b->off[j] != LEN - 1 || memcmp(b->data + b->off[j], want, 8))
                fail_msg("batch %d record %zu is not line %d", batches, j, seen);
            assert_int_equal(b->pos[j], (int64_t)seen * LEN);
        }
        sr_loop_release(f->l);
    }
    double elapsed = wall_ms() - start;
    assert_true(t.last);
    assert_int_equal(lasts, 1);
    assert_int_equal(seen, LINES);
    assert_int_equal(batches, LINES / 100 + 1);
    /* 600 intervals of 1 s went by in well under 2 s of wall time. */
    if (elapsed >= 2000) fail_msg("%d batches took %.0f ms", batches, elapsed);
    assert_int_equal(sr_loop_dead_letters(f->l), 0);
}

/* Once every source is done, each call returns at once with last set. */
static void test_done_stays_last(void **state)
{
    fixture_t *f = *state;
    char path[600];
    sr_test_path(path, sizeof(path), f->dir, "small.txt");
    sr_test_write(path, "w", "one\ntwo\n");
    new_loop(f, 10000, 0, f->dead);
    int src = add(f, (sr_source_opts_t){.kind = "text_file", .path = path});
    double start = wall_ms();
    sr_tick_t t;
    assert_int_equal(sr_loop_next(f->l, &t), SR_OK);
    assert_true(t.last);
    assert_int_equal(sr_loop_batch(f->l, src)->n, 2);
    sr_loop_release(f->l);
    sr_tick_t t2 = tick(f);
    assert_true(t2.last);
    assert_int_equal(t2.time_ms, t.time_ms + 10000);
    assert_int_equal(sr_loop_batch(f->l, src)->n, 0);
    assert_true(wall_ms() - start < 1000);
}

/* -- (b) The first batch's time -- */

static void test_first_time_multiple_of_interval_fast(void **state)
{
    fixture_t *f = *state;
    char path[600];
    sr_test_path(path, sizeof(path), f->dir, "x.txt");
    sr_test_write(path, "w", "x\n");
    new_loop(f, 333, 0, f->dead);
    add(f, (sr_source_opts_t){.kind = "text_file", .path = path});
    sr_tick_t t = tick(f);
    /* Stored input runs on a logical clock from 0: the first batch at 333. */
    assert_int_equal(t.time_ms, 333);
}

static void test_first_time_multiple_of_interval_timed(void **state)
{
    fixture_t *f = *state;
    new_loop(f, 70, 0, f->dead);
    sr_loop_set_lua_active(f->l, 1);
    double before = wall_ms();
    sr_tick_t t = tick(f);
    assert_int_equal(t.time_ms % 70, 0);
    assert_true((double)t.time_ms > before - 1);
    assert_true((double)t.time_ms < before + 70 + 30); /* not a later one */
    assert_false(t.last);
}

/* -- (c) sr_loop_stop -- */

static void test_stop_returns_at_once(void **state)
{
    fixture_t *f = *state;
    new_loop(f, 60000, 0, f->dead);
    add(f, (sr_source_opts_t){.kind = "listen_text", .host = "127.0.0.1"});
    sr_loop_set_lua_active(f->l, 1);
    sr_loop_stop(f->l);
    double start = wall_ms();
    sr_tick_t t = tick(f);
    double took = wall_ms() - start;
    assert_true(t.last);
    assert_int_equal(t.time_ms % 60000, 0);
    if (took > 1000) fail_msg("a stopped loop waited %.0f ms", took);
    /* It stays stopped. */
    t = tick(f);
    assert_true(t.last);
    assert_true(wall_ms() - start < 1000);
}

static void test_stop_after_ticks(void **state)
{
    fixture_t *f = *state;
    enum { INTERVAL = 100 };
    new_loop(f, INTERVAL, 0, f->dead);
    sr_loop_set_lua_active(f->l, 1);
    sr_tick_t t = tick(f);
    assert_false(t.last);
    t = tick(f);
    assert_false(t.last);
    int64_t prev = t.time_ms;
    sr_loop_stop(f->l);
    double start = wall_ms();
    t = tick(f);
    assert_true(t.last);
    assert_int_equal(t.time_ms, prev + INTERVAL);
    /* It did not wait for the batch's time. */
    assert_true(wall_ms() - start < INTERVAL / 2);
}

/* -- (d) The batch timer -- */

/* A Lua source and no C source: the timer cuts every batch, one interval
 * after the previous, never before its time. */
static void test_timer_cuts_batches(void **state)
{
    fixture_t *f = *state;
    enum { INTERVAL = 20, N = 15 };
    new_loop(f, INTERVAL, 0, f->dead);
    sr_loop_set_lua_active(f->l, 1);
    int64_t prev = 0;
    double start = wall_ms();
    for (int i = 0; i < N; i++) {
        sr_tick_t t = tick(f);
        double now = wall_ms();
        assert_int_equal(t.time_ms % INTERVAL, 0);
        if (prev) assert_int_equal(t.time_ms, prev + INTERVAL);
        prev = t.time_ms;
        if (now < (double)t.time_ms - TOL_MS)
            fail_msg("batch %d of time %lld returned at %.1f, %.1f ms early", i,
                     (long long)t.time_ms, now, (double)t.time_ms - now);
        if (now > (double)t.time_ms + 1000)
            fail_msg("batch %d returned %.0f ms late", i, now - (double)t.time_ms);
        assert_true(t.delay_ms >= 0 && t.delay_ms < 1000);
        assert_false(t.last);
        assert_false(t.reload);
    }
    /* N intervals took about N intervals. */
    assert_true(wall_ms() - start >= (N - 1) * INTERVAL - TOL_MS);
}

/* Processing that runs behind: a batch already due closes at once, and the
 * times go on one interval apart (none skipped). */
static void test_timer_behind_catches_up(void **state)
{
    fixture_t *f = *state;
    enum { INTERVAL = 20 };
    new_loop(f, INTERVAL, 0, f->dead);
    sr_loop_set_lua_active(f->l, 1);
    sr_tick_t t = tick(f);
    int64_t first = t.time_ms;
    /* Processing that takes six intervals (a bounded busy loop on the
     * clock standing for work, not a wait for the loop). */
    double until = wall_ms() + 6 * INTERVAL;
    while (wall_ms() < until) {}
    double start = wall_ms();
    for (int i = 1; i <= 4; i++) {
        t = tick(f);
        assert_int_equal(t.time_ms, first + i * INTERVAL);
        assert_true(t.delay_ms > 0);
    }
    /* Four batches already due came back without waiting an interval each. */
    double took = wall_ms() - start;
    if (took >= 3 * INTERVAL) fail_msg("four due batches took %.1f ms", took);
}

/* No source at all and no Lua source: timed batches, never the last. */
static void test_no_sources_ticks(void **state)
{
    fixture_t *f = *state;
    new_loop(f, 20, 0, f->dead);
    int64_t prev = 0;
    for (int i = 0; i < 3; i++) {
        sr_tick_t t = tick(f);
        assert_false(t.last);
        assert_true(wall_ms() >= (double)t.time_ms - TOL_MS);
        if (prev) assert_int_equal(t.time_ms, prev + 20);
        prev = t.time_ms;
    }
}

/* -- (e) Signals -- */

static void stop_signal(fixture_t *f, int sig)
{
    new_loop(f, 60000, 0, f->dead);
    sr_loop_set_lua_active(f->l, 1);
    assert_int_equal(raise(sig), 0);
    double start = wall_ms();
    sr_tick_t t = tick(f);
    double took = wall_ms() - start;
    assert_true(t.last);
    assert_false(t.reload);
    assert_int_equal(t.time_ms % 60000, 0);
    if (took > 1000) fail_msg("signal %d: the batch waited %.0f ms", sig, took);
    t = tick(f);
    assert_true(t.last);
}

static void test_sigterm_ends_batch(void **state)
{
    stop_signal(*state, SIGTERM);
}

static void test_sigint_ends_batch(void **state)
{
    stop_signal(*state, SIGINT);
}

/* SIGTERM after a few normal batches: the next one is the last. */
static void test_sigterm_after_ticks(void **state)
{
    fixture_t *f = *state;
    new_loop(f, 20, 0, f->dead);
    sr_loop_set_lua_active(f->l, 1);
    int64_t prev = 0;
    for (int i = 0; i < 3; i++) {
        sr_tick_t t = tick(f);
        assert_false(t.last);
        prev = t.time_ms;
    }
    assert_int_equal(raise(SIGTERM), 0);
    sr_tick_t t = tick(f);
    assert_true(t.last);
    assert_int_equal(t.time_ms, prev + 20);
}

static void test_sighup_reloads_without_stopping(void **state)
{
    fixture_t *f = *state;
    new_loop(f, 20, 0, f->dead);
    sr_loop_set_lua_active(f->l, 1);
    sr_tick_t t = tick(f);
    assert_false(t.reload);
    assert_int_equal(raise(SIGHUP), 0);
    assert_int_equal(raise(SIGHUP), 0); /* two before a batch: one reload */
    t = tick(f);
    assert_true(t.reload);
    assert_false(t.last);
    /* A timed batch as usual: not cut short. */
    assert_true(wall_ms() >= (double)t.time_ms - TOL_MS);
    t = tick(f);
    assert_false(t.reload);
    assert_false(t.last);
    assert_int_equal(raise(SIGHUP), 0);
    t = tick(f);
    assert_true(t.reload);
    assert_false(t.last);
}

/* -- (f) A burst on a socket -- */

static int client_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        fail_msg("connect: %s", strerror(errno));
    assert_int_equal(fcntl(fd, F_SETFL, O_NONBLOCK), 0);
    return fd;
}

/* listen_text with max_batch_records 100 receiving ~500 kB at once: full
 * batches close early, but each returns at most one interval before its
 * time, so the batch times never run more than one interval ahead of the
 * clock. Every line arrives once, in order. */
static void test_burst_at_most_one_interval_ahead(void **state)
{
    fixture_t *f = *state;
    enum { INTERVAL = 100, MAXREC = 100, LINES = 40000, LEN = 13 };
    new_loop(f, INTERVAL, MAXREC, f->dead);
    int src = add(f, (sr_source_opts_t){.kind = "listen_text", .host = "127.0.0.1"});
    int port = sr_source_listen_port(sr_loop_source(f->l, src));
    assert_true(port > 0);
    f->cfd = client_connect(port);

    char *data = malloc((size_t)LINES * LEN + 1);
    assert_non_null(data);
    for (int i = 0; i < LINES; i++) snprintf(data + (size_t)i * LEN, LEN + 1, "burst-%06d\n", i);
    size_t total = (size_t)LINES * LEN, sent = 0;

    int seen = 0, early = 0, ticks = 0;
    int64_t prev = 0;
    while (seen < LINES && ticks < 300) {
        /* Writes what the socket takes, without blocking. */
        while (sent < total) {
            ssize_t n = write(f->cfd, data + sent, total - sent);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
            if (n <= 0) fail_msg("write: %s", strerror(errno));
            sent += (size_t)n;
        }
        sr_tick_t t;
        assert_int_equal(sr_loop_next(f->l, &t), SR_OK);
        double now = wall_ms();
        ticks++;
        if (prev) assert_int_equal(t.time_ms, prev + INTERVAL);
        prev = t.time_ms;
        double ahead = (double)t.time_ms - now;
        if (ahead > INTERVAL + TOL_MS)
            fail_msg("tick %d: batch time %lld is %.1f ms ahead of the clock", ticks,
                     (long long)t.time_ms, ahead);
        sr_batch_t *b = sr_loop_batch(f->l, src);
        if (b->n >= MAXREC && ahead > INTERVAL / 2) early++;
        char want[LEN + 1];
        for (size_t j = 0; j < b->n; j++, seen++) {
            snprintf(want, sizeof(want), "burst-%06d", seen);
            if (b->off[j + 1] - b->off[j] != LEN - 1 ||
                memcmp(b->data + b->off[j], want, LEN - 1) != 0)
                fail_msg("tick %d record %zu is not line %d", ticks, j, seen);
        }
        assert_false(t.last);
        sr_loop_release(f->l);
    }
    free(data);
    assert_int_equal(seen, LINES);
    /* The burst did close batches early (else this test proves nothing). */
    if (early < 3) fail_msg("only %d of %d batches closed early", early, ticks);
    assert_int_equal(sr_loop_dead_letters(f->l), 0);
}

/* -- (g) Dead letters -- */

static void test_dead_letters_counted_and_written(void **state)
{
    fixture_t *f = *state;
    char input[600];
    sr_test_path(input, sizeof(input), f->dir, "long.txt");
    sr_test_write(input, "w", "a line longer than 8 bytes\n");
    new_loop(f, 100, 0, f->dead);
    assert_int_equal(sr_loop_dead_letters(f->l), 0);
    sr_loop_dead_letter(f->l, "parse", -1, 42, "invalid JSON", "{\"a\":", 5);
    assert_int_equal(sr_loop_dead_letters(f->l), 1);
    static const char odd[] = "tab\tquote\"nl\nbs\\\x01";
    sr_loop_dead_letter(f->l, "stage \"x\"", -1, -1, "element error: bad", odd, sizeof(odd) - 1);
    sr_loop_dead_letter(f->l, "parse", -1, 7, "no record", NULL, 0);
    assert_int_equal(sr_loop_dead_letters(f->l), 3);
    assert_int_equal(sr_loop_deadletter(f->l)->count, 3);
    /* A source's dead letters go to the same count and file. */
    add(f, (sr_source_opts_t){.kind = "text_file", .name = "long", .path = input, .max_line = 8});
    tick(f);
    assert_int_equal(sr_loop_dead_letters(f->l), 4);

    char text[4096], want[2048];
    assert_true(sr_test_read(f->dead, text, sizeof(text)) > 0);
    snprintf(want, sizeof(want),
             "{\"dead_letter\":true,\"source\":\"parse\",\"offset\":42,"
             "\"reason\":\"invalid JSON\",\"record\":\"{\\\"a\\\":\"}\n"
             "{\"dead_letter\":true,\"source\":\"stage \\\"x\\\"\",\"offset\":-1,"
             "\"reason\":\"element error: bad\","
             "\"record\":\"tab\\tquote\\\"nl\\nbs\\\\\\u0001\"}\n"
             "{\"dead_letter\":true,\"source\":\"parse\",\"offset\":7,"
             "\"reason\":\"no record\",\"record\":\"\"}\n"
             "{\"dead_letter\":true,\"source\":\"long\",\"offset\":0,"
             "\"reason\":\"line longer than max_line\",\"record\":\"a line l\"}\n");
    assert_string_equal(text, want);
}

/* The file is appended to, not truncated, by a second loop. */
static void test_dead_letter_file_appended(void **state)
{
    fixture_t *f = *state;
    sr_test_write(f->dead, "w", "{\"earlier\":true}\n");
    new_loop(f, 100, 0, f->dead);
    sr_loop_dead_letter(f->l, "s", -1, 1, "r", "x", 1);
    char text[1024];
    assert_true(sr_test_read(f->dead, text, sizeof(text)) > 0);
    assert_string_equal(text, "{\"earlier\":true}\n"
                              "{\"dead_letter\":true,\"source\":\"s\",\"offset\":1,"
                              "\"reason\":\"r\",\"record\":\"x\"}\n");
    assert_int_equal(sr_loop_dead_letters(f->l), 1);
}

/* Without a path (or with "-"), dead letters go to stderr and still count. */
static void test_dead_letters_to_stderr(void **state)
{
    fixture_t *f = *state;
    char cap[600], text[1024];
    sr_test_path(cap, sizeof(cap), f->dir, "stderr.txt");
    const char *paths[] = {NULL, "-"};
    for (int i = 0; i < 2; i++) {
        new_loop(f, 100, 0, paths[i]);
        fflush(stderr);
        f->saved_stderr = dup(STDERR_FILENO);
        assert_true(f->saved_stderr >= 0);
        int fd = open(cap, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        assert_true(fd >= 0);
        assert_int_equal(dup2(fd, STDERR_FILENO), STDERR_FILENO);
        close(fd);
        sr_loop_dead_letter(f->l, "s", -1, 3, "r", "rec", 3);
        sr_loop_dead_letter(f->l, "s", -1, 4, "r", "rec2", 4);
        fflush(stderr);
        dup2(f->saved_stderr, STDERR_FILENO);
        close(f->saved_stderr);
        f->saved_stderr = -1;
        assert_int_equal(sr_loop_dead_letters(f->l), 2);
        assert_true(sr_test_read(cap, text, sizeof(text)) > 0);
        assert_string_equal(text, "{\"dead_letter\":true,\"source\":\"s\",\"offset\":3,"
                                  "\"reason\":\"r\",\"record\":\"rec\"}\n"
                                  "{\"dead_letter\":true,\"source\":\"s\",\"offset\":4,"
                                  "\"reason\":\"r\",\"record\":\"rec2\"}\n");
        sr_loop_free(f->l);
        f->l = NULL;
    }
    /* No file was made in its stead. */
    assert_int_equal(access(f->dead, F_OK), -1);
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_new_rejects_bad_interval),
        T(test_new_bad_dead_letter_path),
        T(test_unknown_source_kind),
        T(test_fast_forward_text_file),
        T(test_done_stays_last),
        T(test_first_time_multiple_of_interval_fast),
        T(test_first_time_multiple_of_interval_timed),
        T(test_stop_returns_at_once),
        T(test_stop_after_ticks),
        T(test_timer_cuts_batches),
        T(test_timer_behind_catches_up),
        T(test_no_sources_ticks),
        T(test_sigterm_ends_batch),
        T(test_sigint_ends_batch),
        T(test_sigterm_after_ticks),
        T(test_sighup_reloads_without_stopping),
        T(test_burst_at_most_one_interval_ahead),
        T(test_dead_letters_counted_and_written),
        T(test_dead_letter_file_appended),
        T(test_dead_letters_to_stderr),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
