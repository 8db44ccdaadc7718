/* test_sources: each C source kind driven through the real event loop: input
 * is produced (files, sockets), sr_loop_next runs batch after batch until the
 * records arrive (a bounded number of batches, never a blind sleep), and the
 * records, offsets and dead letters are checked. */
#include "sr_test.h"

#include "sr_alloc.h"
#include "sr_error.h"
#include "sr_io.h"
#include "sr_loop.h"
#include "sr_source.h"
#include "sr_wal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>

#define BATCH_MS 50
#define MAX_BATCHES 100 /* 5 s of batches: the most any wait may take */
#define MAXREC 128
#define MAXSRC 4

typedef struct recs {
    char text[MAXREC][128];
    int64_t pos[MAXREC];
    int n;
} recs_t;

typedef struct fixture {
    char dir[256];
    char dead[512];             /* the dead-letter file */
    size_t alloc_before;
    sr_loop_t *l;
    recs_t recs[MAXSRC];        /* every record received, per source */
    size_t max_batch_n;         /* the most records one batch held */
    int batches;
    int last;                   /* a tick said no batch follows */
    void (*pump)(struct fixture *f); /* runs before each batch */
    int lfd, cfd;               /* test-side sockets, -1 when closed */
    int port;
} fixture_t;

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    f->alloc_before = sr_alloc_used();
    sr_test_tmpdir(f->dir, sizeof(f->dir));
    sr_test_path(f->dead, sizeof(f->dead), f->dir, "dead.jsonl");
    f->lfd = f->cfd = -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    sr_loop_free(f->l);
    if (f->lfd >= 0) close(f->lfd);
    if (f->cfd >= 0) close(f->cfd);
    sr_test_rmtree(f->dir);
    size_t leaked = sr_alloc_used() - f->alloc_before;
    free(f);
    assert_int_equal(leaked, 0);
    return 0;
}

static void new_loop(fixture_t *f, size_t max_records)
{
    char err[256] = "";
    sr_loop_opts_t o = {
        .batch_ms = BATCH_MS, .max_batch_records = max_records, .dead_letter_path = f->dead,
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
    assert_true(idx < MAXSRC);
    return idx;
}

/* Runs one batch and keeps its records. */
static void step(fixture_t *f)
{
    if (f->pump) f->pump(f);
    sr_tick_t t;
    assert_int_equal(sr_loop_next(f->l, &t), SR_OK);
    assert_int_equal(t.time_ms % BATCH_MS, 0);
    f->batches++;
    f->last = t.last;
    for (int i = 0; i < sr_loop_nsources(f->l); i++) {
        sr_batch_t *b = sr_loop_batch(f->l, i);
        recs_t *r = &f->recs[i];
        if (b->n > f->max_batch_n) f->max_batch_n = b->n;
        for (size_t j = 0; j < b->n; j++) {
            if (r->n == MAXREC) continue; /* counted by the caller's batch */
            size_t len = b->off[j + 1] - b->off[j];
            assert_true(len < sizeof(r->text[0]));
            memcpy(r->text[r->n], b->data + b->off[j], len);
            r->text[r->n][len] = '\0';
            r->pos[r->n] = b->pos[j];
            r->n++;
        }
    }
    sr_loop_release(f->l);
}

/* Runs batches until cond holds, at most MAX_BATCHES of them. */
#define RUN_UNTIL(f, cond)                                                          \
    do {                                                                            \
        for (int run_ = 0; !(cond) && run_ < MAX_BATCHES; run_++) step(f);          \
        if (!(cond)) fail_msg("still not true after %d batches: %s", MAX_BATCHES, #cond); \
    } while (0)

static void run_batches(fixture_t *f, int n)
{
    for (int i = 0; i < n; i++) step(f);
}

static void expect_rec(const fixture_t *f, int src, int i, const char *text, int64_t pos)
{
    const recs_t *r = &f->recs[src];
    if (i >= r->n) fail_msg("record %d of source %d missing (%d received)", i, src, r->n);
    if (strcmp(r->text[i], text) != 0)
        fail_msg("record %d of source %d is \"%s\", want \"%s\"", i, src, r->text[i], text);
    if (pos >= 0 && r->pos[i] != pos)
        fail_msg("record %d (\"%s\") at %lld, want %lld", i, text, (long long)r->pos[i],
                 (long long)pos);
}

static int has_rec(const fixture_t *f, int src, const char *text)
{
    for (int i = 0; i < f->recs[src].n; i++)
        if (strcmp(f->recs[src].text[i], text) == 0) return 1;
    return 0;
}

static uint64_t dead(fixture_t *f, int src)
{
    return sr_loop_source(f->l, src)->dead_letters;
}

/* The dead-letter file holds needle. */
static void expect_dead_letter(fixture_t *f, const char *needle)
{
    static char text[65536];
    assert_true(sr_test_read(f->dead, text, sizeof(text)) >= 0);
    if (!strstr(text, needle)) fail_msg("dead letters lack %s:\n%s", needle, text);
}

/* Writes lines "line-000000" .. to path, one per number below n. */
static void write_numbered_lines(const char *path, int n)
{
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    for (int i = 0; i < n; i++) fprintf(fp, "line-%06d\n", i);
    fclose(fp);
}

static void file_path(fixture_t *f, char *buf, size_t len, const char *name)
{
    sr_test_path(buf, len, f->dir, name);
}

/* -- text_file -- */

static void test_text_file_lines(void **state)
{
    fixture_t *f = *state;
    char path[512];
    file_path(f, path, sizeof(path), "in.txt");
    sr_test_write(path, "w", "a\nb\r\n\nlast");
    new_loop(f, 0);
    int src = add(f, (sr_source_opts_t){.kind = "text_file", .path = path});
    RUN_UNTIL(f, f->last);
    assert_int_equal(f->recs[src].n, 4);
    expect_rec(f, src, 0, "a", 0);
    expect_rec(f, src, 1, "b", 2);
    expect_rec(f, src, 2, "", 5);
    expect_rec(f, src, 3, "last", 6); /* no final newline: still a line */
    assert_true(sr_loop_source(f->l, src)->done);
    assert_int_equal(sr_loop_source(f->l, src)->records, 4);
    assert_int_equal(dead(f, src), 0);
}

static void test_text_file_missing(void **state)
{
    fixture_t *f = *state;
    char path[512], err[256] = "", want[700];
    file_path(f, path, sizeof(path), "nope.txt");
    new_loop(f, 0);
    sr_source_opts_t o = {.kind = "text_file", .name = "missing", .path = path};
    assert_true(sr_loop_add_source(f->l, &o, err, sizeof(err)) < 0);
    snprintf(want, sizeof(want), "text_file %s: No such file or directory", path);
    assert_string_equal(err, want);
    assert_int_equal(sr_loop_nsources(f->l), 0);
    assert_int_equal(sr_loop_dead_letters(f->l), 0);
}

static void test_text_file_max_line(void **state)
{
    fixture_t *f = *state;
    char path[512];
    file_path(f, path, sizeof(path), "long.txt");
    sr_test_write(path, "w", "short\nxxxxxxxxxxyyyyyyyyyy\nafter\nexactly8\n");
    new_loop(f, 0);
    int src = add(f, (sr_source_opts_t){.kind = "text_file", .path = path, .max_line = 8});
    RUN_UNTIL(f, f->last);
    assert_int_equal(f->recs[src].n, 3);
    expect_rec(f, src, 0, "short", 0);
    expect_rec(f, src, 1, "after", 27);
    expect_rec(f, src, 2, "exactly8", 33);
    assert_int_equal(dead(f, src), 1);
    expect_dead_letter(f, "\"offset\":6,\"reason\":\"line longer than max_line\","
                          "\"record\":\"xxxxxxxx\"");
}

/* A file bigger than one read with a small max_batch_records: batches close
 * early, the reader waits for each to be released, nothing is lost. */
static void test_text_file_backpressure(void **state)
{
    fixture_t *f = *state;
    char path[512];
    file_path(f, path, sizeof(path), "big.txt");
    const int lines = 60000; /* 12 bytes each: 720 kB, about three reads */
    write_numbered_lines(path, lines);
    new_loop(f, 1000);
    int src = add(f, (sr_source_opts_t){.kind = "text_file", .path = path});
    uint64_t seen = 0;
    int batches = 0;
    while (!f->last && batches++ < MAX_BATCHES) {
        sr_tick_t t;
        assert_int_equal(sr_loop_next(f->l, &t), SR_OK);
        f->last = t.last;
        sr_batch_t *b = sr_loop_batch(f->l, src);
        /* At most one read's worth past the limit. */
        assert_true(b->n <= 1000 + 256 * 1024 / 12 + 1);
        char want[32];
        for (size_t j = 0; j < b->n; j++, seen++) {
            snprintf(want, sizeof(want), "line-%06d", (int)seen);
            assert_int_equal(b->off[j + 1] - b->off[j], 11);
            assert_memory_equal(b->data + b->off[j], want, 11);
            assert_int_equal(b->pos[j], (int64_t)seen * 12);
        }
        sr_loop_release(f->l);
    }
    assert_true(f->last);
    assert_int_equal(seen, lines);
    assert_true(batches >= 3);
}

/* Every batch of a text_file (records, their offsets, the source's
 * position after it) and its dead letters, read with or without the
 * read-ahead thread. */
typedef struct file_run {
    char text[1 << 20]; /* the records, each followed by \n, batch after batch */
    size_t len;
    int64_t pos[65536]; /* each record's offset */
    int64_t after[512]; /* the position after each batch */
    size_t sizes[512];  /* records per batch */
    int batches;
    uint64_t records, dead;
} file_run_t;

static void read_file_batches(fixture_t *f, const char *path, size_t max_records, int ahead, file_run_t *r)
{
    memset(r, 0, sizeof(*r));
    new_loop(f, max_records);
    int src = add(f, (sr_source_opts_t){.kind = "text_file", .path = path, .max_line = 16, .read_ahead = ahead});
    int last = 0;
    while (!last) {
        if (r->batches == 512) fail_msg("more than 512 batches");
        sr_tick_t t;
        assert_int_equal(sr_loop_next(f->l, &t), SR_OK);
        last = t.last;
        sr_batch_t *b = sr_loop_batch(f->l, src);
        for (size_t j = 0; j < b->n; j++) {
            size_t len = b->off[j + 1] - b->off[j];
            assert_true(r->len + len + 1 < sizeof(r->text));
            memcpy(r->text + r->len, b->data + b->off[j], len);
            r->len += len;
            r->text[r->len++] = '\n';
            assert_true(r->records < 65536);
            r->pos[r->records++] = b->pos[j];
        }
        sr_source_pos_t p;
        assert_int_equal(sr_source_position(sr_loop_source(f->l, src), &p), SR_OK);
        r->after[r->batches] = p.offset;
        r->sizes[r->batches++] = b->n;
        sr_loop_release(f->l);
    }
    assert_true(sr_loop_source(f->l, src)->done);
    assert_int_equal(sr_loop_source(f->l, src)->records, r->records);
    r->dead = dead(f, src);
    sr_loop_free(f->l);
    f->l = NULL;
}

/* Reads path with and without the read-ahead thread in batches of at most
 * max records, and checks both read the same. */
static void expect_same_with_read_ahead(fixture_t *f, const char *path, size_t max)
{
    static char dead_plain[65536], dead_ahead[65536];
    file_run_t *plain = malloc(sizeof(*plain)), *ahead = malloc(sizeof(*ahead));
    assert_non_null(plain);
    assert_non_null(ahead);
    read_file_batches(f, path, max, 0, plain);
    assert_true(sr_test_read(f->dead, dead_plain, sizeof(dead_plain)) >= 0);
    unlink(f->dead);
    read_file_batches(f, path, max, 1, ahead);
    assert_true(sr_test_read(f->dead, dead_ahead, sizeof(dead_ahead)) >= 0);
    unlink(f->dead);
    assert_int_equal(ahead->batches, plain->batches);
    assert_int_equal(ahead->records, plain->records);
    assert_int_equal(ahead->len, plain->len);
    assert_memory_equal(ahead->text, plain->text, plain->len);
    assert_memory_equal(ahead->pos, plain->pos, plain->records * sizeof(int64_t));
    assert_memory_equal(ahead->sizes, plain->sizes, (size_t)plain->batches * sizeof(size_t));
    assert_memory_equal(ahead->after, plain->after, (size_t)plain->batches * sizeof(int64_t));
    assert_true(plain->dead > 0);
    assert_int_equal(ahead->dead, plain->dead);
    assert_string_equal(dead_ahead, dead_plain);
    free(plain);
    free(ahead);
}

/* The read-ahead thread hands over the batches the loop thread would have
 * read: the same records and offsets in the same batches, the same
 * positions between them, the same dead letters (over-long lines, \r\n,
 * a last line without a newline; batches of one record, and of many over
 * several of the thread's reads). */
static void test_text_file_read_ahead_same_batches(void **state)
{
    fixture_t *f = *state;
    char path[512];
    file_path(f, path, sizeof(path), "small.txt");
    sr_test_write(path, "w", "a\nb\r\n\nxxxxxxxxxxxxxxxxxxxxxxxxxx\nlast");
    expect_same_with_read_ahead(f, path, 1);
    file_path(f, path, sizeof(path), "mixed.txt");
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    /* 40000 lines of 12 or 13 bytes, every 500th too long: 520 kB, over
     * two reads of 256 kB. */
    for (int i = 0; i < 40000; i++) {
        if (i % 500 == 7) fprintf(fp, "too-long-line-%06d-xxxxxxxx\n", i);
        else if (i % 3 == 0) fprintf(fp, "line-%06d\r\n", i);
        else fprintf(fp, "line-%06d\n", i);
    }
    fprintf(fp, "no-newline");
    fclose(fp);
    expect_same_with_read_ahead(f, path, 7000);
    expect_same_with_read_ahead(f, path, 100);
}

/* A source with a read-ahead thread resumes at a checkpoint's offset, and
 * stops (the loop freed) while its thread has read ahead, leaking nothing
 * (the fixture counts). */
static void test_text_file_read_ahead_resume_and_stop(void **state)
{
    fixture_t *f = *state;
    char path[512];
    file_path(f, path, sizeof(path), "big.txt");
    const int lines = 60000; /* 12 bytes each: 720 kB, about three reads */
    write_numbered_lines(path, lines);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    new_loop(f, 1000);
    int src = add(f, (sr_source_opts_t){.kind = "text_file", .path = path, .read_ahead = 1,
                                         .start_offset = 12 * 25000, .start_inode = (uint64_t)st.st_ino});
    for (int k = 0; k < 3; k++) {
        sr_tick_t t;
        assert_int_equal(sr_loop_next(f->l, &t), SR_OK);
        sr_batch_t *b = sr_loop_batch(f->l, src);
        assert_int_equal(b->n, 1000);
        char want[32];
        snprintf(want, sizeof(want), "line-%06d", 25000 + 1000 * k);
        assert_memory_equal(b->data + b->off[0], want, 11);
        assert_int_equal(b->pos[0], (int64_t)(25000 + 1000 * k) * 12);
        sr_source_pos_t p;
        assert_int_equal(sr_source_position(sr_loop_source(f->l, src), &p), SR_OK);
        assert_int_equal(p.offset, (int64_t)(26000 + 1000 * k) * 12);
        sr_loop_release(f->l);
    }
    /* (teardown frees the loop with the thread a batch ahead) */
}

/* -- stdin -- */

static void test_stdin(void **state)
{
    fixture_t *f = *state;
    int p[2];
    assert_int_equal(pipe(p), 0);
    int saved = dup(STDIN_FILENO);
    assert_true(saved >= 0);
    assert_int_equal(dup2(p[0], STDIN_FILENO), STDIN_FILENO);
    close(p[0]);
    assert_int_equal(write(p[1], "in1\nin2\r\nin3", 12), 12);
    close(p[1]);
    new_loop(f, 0);
    int src = add(f, (sr_source_opts_t){.kind = "stdin"});
    RUN_UNTIL(f, f->last);
    dup2(saved, STDIN_FILENO);
    close(saved);
    assert_int_equal(f->recs[src].n, 3);
    expect_rec(f, src, 0, "in1", 0);
    expect_rec(f, src, 1, "in2", 4);
    expect_rec(f, src, 2, "in3", 9);
}

/* Standard input redirected from a regular file (which epoll refuses). */
static void test_stdin_regular_file(void **state)
{
    fixture_t *f = *state;
    char path[512];
    file_path(f, path, sizeof(path), "stdin.txt");
    sr_test_write(path, "w", "r1\nr2\n");
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    int saved = dup(STDIN_FILENO);
    assert_int_equal(dup2(fd, STDIN_FILENO), STDIN_FILENO);
    close(fd);
    new_loop(f, 0);
    int src = add(f, (sr_source_opts_t){.kind = "stdin"});
    RUN_UNTIL(f, f->last);
    dup2(saved, STDIN_FILENO);
    close(saved);
    assert_int_equal(f->recs[src].n, 2);
    expect_rec(f, src, 0, "r1", 0);
    expect_rec(f, src, 1, "r2", 3);
}

/* -- tail -- */

static void test_tail_follows_appends(void **state)
{
    fixture_t *f = *state;
    char path[512];
    file_path(f, path, sizeof(path), "app.log");
    sr_test_write(path, "w", "old1\nold2\n");
    new_loop(f, 0);
    int src = add(f, (sr_source_opts_t){.kind = "tail", .path = path});
    run_batches(f, 3);
    assert_int_equal(f->recs[src].n, 0); /* starts at the end */
    sr_test_write(path, "a", "new1\nnew2\npar");
    RUN_UNTIL(f, f->recs[src].n >= 2);
    expect_rec(f, src, 0, "new1", 10);
    expect_rec(f, src, 1, "new2", 15);
    /* The partial line is held, across several polls. */
    run_batches(f, 8);
    assert_int_equal(f->recs[src].n, 2);
    sr_test_write(path, "a", "tial\nmore\n");
    RUN_UNTIL(f, f->recs[src].n >= 4);
    expect_rec(f, src, 2, "partial", 20);
    expect_rec(f, src, 3, "more", 28);
    assert_int_equal(dead(f, src), 0);
}

static void test_tail_from_start(void **state)
{
    fixture_t *f = *state;
    char path[512];
    file_path(f, path, sizeof(path), "app.log");
    sr_test_write(path, "w", "old1\nold2\n");
    new_loop(f, 0);
    int src = add(f, (sr_source_opts_t){.kind = "tail", .path = path, .from_start = 1});
    RUN_UNTIL(f, f->recs[src].n >= 2);
    expect_rec(f, src, 0, "old1", 0);
    expect_rec(f, src, 1, "old2", 5);
    sr_test_write(path, "a", "new\n");
    RUN_UNTIL(f, f->recs[src].n >= 3);
    expect_rec(f, src, 2, "new", 10);
}

/* Starting at the end of a file whose last line is unfinished: that line
 * comes whole once finished, not just its rest. */
static void test_tail_start_mid_line(void **state)
{
    fixture_t *f = *state;
    char path[512];
    file_path(f, path, sizeof(path), "app.log");
    sr_test_write(path, "w", "done\nhal");
    new_loop(f, 0);
    int src = add(f, (sr_source_opts_t){.kind = "tail", .path = path});
    run_batches(f, 2);
    sr_test_write(path, "a", "f\n");
    RUN_UNTIL(f, f->recs[src].n >= 1);
    expect_rec(f, src, 0, "half", 5);
}

static void test_tail_rotation(void **state)
{
    fixture_t *f = *state;
    char path[512], old[512];
    file_path(f, path, sizeof(path), "app.log");
    file_path(f, old, sizeof(old), "app.log.1");
    sr_test_write(path, "w", "a\n");
    new_loop(f, 0);
    int src = add(f, (sr_source_opts_t){.kind = "tail", .path = path});
    sr_test_write(path, "a", "b\n");
    RUN_UNTIL(f, f->recs[src].n >= 1);
    expect_rec(f, src, 0, "b", 2);
    /* Rotate: rename, the writer still appends to the old file, then a new
     * file appears under the path. */
    assert_int_equal(rename(path, old), 0);
    sr_test_write(old, "a", "c\nx");
    sr_test_write(path, "w", "d\ne\n");
    RUN_UNTIL(f, f->recs[src].n >= 5);
    expect_rec(f, src, 1, "c", 4);
    expect_rec(f, src, 2, "x", 6);  /* the old file's unfinished last line */
    expect_rec(f, src, 3, "d", 0);  /* the new file from its start */
    expect_rec(f, src, 4, "e", 2);
    sr_test_write(path, "a", "f\n");
    RUN_UNTIL(f, f->recs[src].n >= 6);
    expect_rec(f, src, 5, "f", 4);
    /* Deleted and recreated. */
    assert_int_equal(unlink(path), 0);
    sr_test_write(path, "w", "g\n");
    RUN_UNTIL(f, f->recs[src].n >= 7);
    expect_rec(f, src, 6, "g", 0);
    run_batches(f, 4);
    assert_int_equal(f->recs[src].n, 7);
}

static void test_tail_truncation(void **state)
{
    fixture_t *f = *state;
    char path[512];
    file_path(f, path, sizeof(path), "app.log");
    sr_test_write(path, "w", "aaaa\nbbbb\n");
    new_loop(f, 0);
    int src = add(f, (sr_source_opts_t){.kind = "tail", .path = path, .from_start = 1});
    RUN_UNTIL(f, f->recs[src].n >= 2);
    sr_test_write(path, "w", "c\n"); /* truncates, then writes less than before */
    RUN_UNTIL(f, f->recs[src].n >= 3);
    expect_rec(f, src, 2, "c", 0);
}

static void test_tail_waits_for_file(void **state)
{
    fixture_t *f = *state;
    char path[512];
    file_path(f, path, sizeof(path), "later.log");
    new_loop(f, 0);
    int src = add(f, (sr_source_opts_t){.kind = "tail", .path = path});
    run_batches(f, 3);
    assert_int_equal(f->recs[src].n, 0);
    /* A file that appears after the start is read from its beginning. */
    sr_test_write(path, "w", "first\nsecond\n");
    RUN_UNTIL(f, f->recs[src].n >= 2);
    expect_rec(f, src, 0, "first", 0);
    expect_rec(f, src, 1, "second", 6);
}

/* -- text_dir -- */

static void test_text_dir(void **state)
{
    fixture_t *f = *state;
    char in[512], p[600], q[600];
    file_path(f, in, sizeof(in), "in");
    assert_int_equal(mkdir(in, 0755), 0);
    sr_test_write(sr_test_path(p, sizeof(p), in, "b.txt"), "w", "b1\nb2");
    sr_test_write(sr_test_path(p, sizeof(p), in, "a.txt"), "w", "a1\n");
    sr_test_write(sr_test_path(p, sizeof(p), in, ".hidden"), "w", "hidden\n");
    sr_test_write(sr_test_path(p, sizeof(p), in, "_copying"), "w", "copying\n");
    assert_int_equal(mkdir(sr_test_path(p, sizeof(p), in, "sub"), 0755), 0);
    new_loop(f, 0);
    int src = add(f, (sr_source_opts_t){.kind = "text_dir", .path = in});
    /* Files present at start are read, in name order. */
    RUN_UNTIL(f, f->recs[src].n >= 3);
    expect_rec(f, src, 0, "a1", 0);
    expect_rec(f, src, 1, "b1", 0);
    expect_rec(f, src, 2, "b2", 3);

    /* A file written under a temporary name is read once renamed. */
    sr_test_write(sr_test_path(p, sizeof(p), in, "_c.tmp"), "w", "c1\nc2\n");
    run_batches(f, 8);
    assert_int_equal(f->recs[src].n, 3);
    assert_int_equal(rename(p, sr_test_path(q, sizeof(q), in, "c.txt")), 0);
    RUN_UNTIL(f, f->recs[src].n >= 5);
    expect_rec(f, src, 3, "c1", 0);
    expect_rec(f, src, 4, "c2", 3);

    /* Each file once: growing a read file, or touching it, does nothing. */
    sr_test_write(sr_test_path(p, sizeof(p), in, "a.txt"), "a", "a2\n");
    sr_test_write(sr_test_path(p, sizeof(p), in, "d.txt"), "w", "d1\n");
    RUN_UNTIL(f, f->recs[src].n >= 6);
    expect_rec(f, src, 5, "d1", 0);
    run_batches(f, 8);
    assert_int_equal(f->recs[src].n, 6);
    assert_false(has_rec(f, src, "hidden"));
    assert_false(has_rec(f, src, "copying"));
    assert_false(has_rec(f, src, "a2"));
    assert_int_equal(dead(f, src), 0);
}

static uint64_t inode_of(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return (uint64_t)st.st_ino;
}

/* The files text_dir took up, as the write-ahead log in waldir has them:
 * "name:inode name:-1 ..." (inode shown as + when it is a real one). */
typedef struct taken { char text[512]; } taken_t;

static void on_wal_entry(void *ud, const sr_wal_entry_t *e)
{
    taken_t *t = ud;
    if (e->type != SR_WAL_FILE) return;
    size_t n = strlen(t->text);
    snprintf(t->text + n, sizeof(t->text) - n, "%s%.*s:%s", n ? " " : "", (int)e->len, e->data,
             e->pos < 0 ? "-1" : "+");
}

/* Resumed where a checkpoint left it: the files done with are skipped, the
 * one taken up last is read from its offset, new ones follow; the position
 * and the done files say where it stands, and each file taken up is logged. */
static void test_text_dir_resume(void **state)
{
    fixture_t *f = *state;
    char in[512], p[600], b[600], wal[512];
    file_path(f, in, sizeof(in), "in");
    file_path(f, wal, sizeof(wal), "wal");
    assert_int_equal(mkdir(in, 0755), 0);
    sr_test_write(sr_test_path(p, sizeof(p), in, "a.txt"), "w", "a1\na2\n");
    sr_test_write(sr_test_path(b, sizeof(b), in, "b.txt"), "w", "b1\nb2\nb3\n");
    sr_test_write(sr_test_path(p, sizeof(p), in, "c.txt"), "w", "c1\n");
    const char *done[] = {"a.txt", "gone.txt"};
    new_loop(f, 0);
    char err[512];
    assert_int_equal(sr_loop_set_wal(f->l, wal, err, sizeof(err)), SR_OK);
    int src = add(f, (sr_source_opts_t){.kind = "text_dir", .path = in, .start_file = "b.txt",
                                         .start_offset = 3, .start_inode = inode_of(b),
                                         .done_files = done, .ndone = 2});
    sr_source_t *s = sr_loop_source(f->l, src);
    /* Before it reads, its position is the checkpoint's. */
    sr_source_pos_t pos;
    assert_int_equal(sr_source_position(s, &pos), SR_OK);
    assert_string_equal(pos.file, "b.txt");
    assert_int_equal(pos.offset, 3);
    assert_true(pos.inode == inode_of(b));
    RUN_UNTIL(f, f->recs[src].n >= 3);
    expect_rec(f, src, 0, "b2", 3);
    expect_rec(f, src, 1, "b3", 6);
    expect_rec(f, src, 2, "c1", 0);
    run_batches(f, 4);
    assert_int_equal(f->recs[src].n, 3);
    assert_int_equal(sr_source_position(s, &pos), SR_OK);
    assert_string_equal(pos.file, "c.txt");
    assert_int_equal(pos.offset, 3);
    assert_string_equal(sr_source_done_file(s, 0), "a.txt");
    assert_string_equal(sr_source_done_file(s, 1), "b.txt");
    assert_string_equal(sr_source_done_file(s, 2), "c.txt"); /* read to its end */
    assert_string_equal(sr_source_done_file(s, 3), "gone.txt");
    assert_null(sr_source_done_file(s, 4));
    assert_int_equal(dead(f, src), 0);
    sr_loop_free(f->l); /* flushes the log */
    f->l = NULL;
    taken_t t = {""};
    char note[512];
    assert_true(sr_wal_scan(wal, on_wal_entry, &t, note, sizeof(note)) > 0);
    assert_string_equal(t.text, "b.txt:+ c.txt:+");
}

/* The file to resume is not the checkpoint's any more (another inode): it
 * is read from its start; gone: a dead letter, and done with. */
static void test_text_dir_resume_replaced_or_gone(void **state)
{
    fixture_t *f = *state;
    char in[512], p[600];
    file_path(f, in, sizeof(in), "in");
    assert_int_equal(mkdir(in, 0755), 0);
    sr_test_write(sr_test_path(p, sizeof(p), in, "b.txt"), "w", "b1\nb2\n");
    new_loop(f, 0);
    int src = add(f, (sr_source_opts_t){.kind = "text_dir", .path = in, .start_file = "b.txt",
                                         .start_offset = 3, .start_inode = inode_of(p) + 1});
    int gone = add(f, (sr_source_opts_t){.kind = "text_dir", .name = "gone", .path = in,
                                          .start_file = "x.txt", .start_offset = 10,
                                          .done_files = (const char *[]){"b.txt"}, .ndone = 1});
    RUN_UNTIL(f, f->recs[src].n >= 2 && dead(f, gone) == 1);
    expect_rec(f, src, 0, "b1", 0);
    expect_rec(f, src, 1, "b2", 3);
    assert_int_equal(f->recs[gone].n, 0);
    expect_dead_letter(f, "x.txt: No such file or directory");
    sr_source_t *s = sr_loop_source(f->l, gone);
    assert_string_equal(sr_source_done_file(s, 0), "b.txt");
    assert_string_equal(sr_source_done_file(s, 1), "x.txt");
    assert_null(sr_source_done_file(s, 2));
    sr_source_pos_t pos;
    assert_int_equal(sr_source_position(s, &pos), SR_OK);
    assert_null(pos.file);
}

static void test_text_dir_missing(void **state)
{
    fixture_t *f = *state;
    char in[512], err[256] = "", want[700];
    file_path(f, in, sizeof(in), "absent");
    new_loop(f, 0);
    sr_source_opts_t o = {.kind = "text_dir", .name = "d", .path = in};
    assert_true(sr_loop_add_source(f->l, &o, err, sizeof(err)) < 0);
    snprintf(want, sizeof(want), "text_dir %s: No such file or directory", in);
    assert_string_equal(err, want);
    assert_int_equal(sr_loop_nsources(f->l), 0);
}

/* -- socket_text -- */

/* Listens on 127.0.0.1:port (0: any), non-blocking; returns the port. */
static int server_listen(fixture_t *f, int port)
{
    f->lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    assert_true(f->lfd >= 0);
    int one = 1;
    setsockopt(f->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(f->lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0) fail_msg("bind: %s", strerror(errno));
    assert_int_equal(listen(f->lfd, 8), 0);
    socklen_t len = sizeof(sa);
    assert_int_equal(getsockname(f->lfd, (struct sockaddr *)&sa, &len), 0);
    f->port = ntohs(sa.sin_port);
    return f->port;
}

/* Pump: accepts the source's connection when it comes. */
static void server_accept(fixture_t *f)
{
    if (f->lfd < 0 || f->cfd >= 0) return;
    f->cfd = accept(f->lfd, NULL, NULL);
    if (f->cfd < 0) assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
}

static void server_send(fixture_t *f, const char *s)
{
    assert_int_equal(write(f->cfd, s, strlen(s)), (ssize_t)strlen(s));
}

static void test_socket_text_lines(void **state)
{
    fixture_t *f = *state;
    server_listen(f, 0);
    new_loop(f, 0);
    f->pump = server_accept;
    int src = add(f, (sr_source_opts_t){
        .kind = "socket_text", .name = "sock", .host = "127.0.0.1", .port = f->port});
    RUN_UNTIL(f, f->cfd >= 0);
    server_send(f, "l1\nl2\r\npar");
    RUN_UNTIL(f, f->recs[src].n >= 2);
    expect_rec(f, src, 0, "l1", 0);
    expect_rec(f, src, 1, "l2", 3);
    run_batches(f, 3);
    assert_int_equal(f->recs[src].n, 2);

    /* The server closes mid-line: the partial line is a dead letter. */
    close(f->cfd);
    f->cfd = -1;
    RUN_UNTIL(f, dead(f, src) == 1);
    expect_dead_letter(f, "\"source\":\"sock\",\"offset\":7,"
                          "\"reason\":\"connection closed mid-line\",\"record\":\"par\"");
    /* It reconnects (the listener is still there); offsets go on growing. */
    RUN_UNTIL(f, f->cfd >= 0);
    server_send(f, "l3\n");
    RUN_UNTIL(f, f->recs[src].n >= 3);
    expect_rec(f, src, 2, "l3", 10);
    assert_int_equal(dead(f, src), 1);
}

static ssize_t write_enospc(int fd, const void *p, size_t n)
{
    (void)fd; (void)p; (void)n;
    errno = ENOSPC;
    return -1;
}

static void count_markers(void *ud, const sr_wal_entry_t *e)
{
    if (e->type == SR_WAL_BATCH) ++*(int *)ud;
}

static int markers_in(const char *wal)
{
    int n = 0;
    char note[512];
    assert_true(sr_wal_scan(wal, count_markers, &n, note, sizeof(note)) >= 0);
    return n;
}

/* A write to the log fails: the batch closes, no batch gets a marker and no
 * source reads until a rotation of the log succeeds (nothing more is taken
 * in that the log could lose). */
static void test_sources_hold_while_the_log_fails(void **state)
{
    fixture_t *f = *state;
    char wal[512], err[512];
    file_path(f, wal, sizeof(wal), "wal");
    server_listen(f, 0);
    new_loop(f, 0);
    assert_int_equal(sr_loop_set_wal(f->l, wal, err, sizeof(err)), SR_OK);
    f->pump = server_accept;
    int src = add(f, (sr_source_opts_t){.kind = "socket_text", .host = "127.0.0.1", .port = f->port});
    RUN_UNTIL(f, f->cfd >= 0);
    server_send(f, "a\n");
    RUN_UNTIL(f, f->recs[src].n >= 1);
    assert_int_equal(sr_loop_wal_failed(f->l), 0);

    sr_io.write = write_enospc;
    server_send(f, "b\n");
    RUN_UNTIL(f, sr_loop_wal_failed(f->l)); /* read, then logging it failed */
    assert_int_equal(f->recs[src].n, 2);
    int markers = markers_in(wal);
    server_send(f, "c\n");
    run_batches(f, 4);
    assert_int_equal(markers_in(wal), markers);
    assert_int_equal(sr_loop_wait(f->l, 5), 0);
    assert_int_equal(f->recs[src].n, 2);
    /* Still failing: the rotation fails and the hold goes on. */
    assert_int_equal(sr_loop_wal_rotate(f->l), 0);
    assert_int_equal(sr_loop_wal_failed(f->l), 1);
    run_batches(f, 2);
    assert_int_equal(f->recs[src].n, 2);

    sr_io = sr_io_real;
    assert_true(sr_loop_wal_rotate(f->l) > 0);
    assert_int_equal(sr_loop_wal_failed(f->l), 0);
    RUN_UNTIL(f, f->recs[src].n >= 3);
    expect_rec(f, src, 2, "c", 4);
    assert_true(markers_in(wal) > markers);
}

static void test_socket_text_server_restart(void **state)
{
    fixture_t *f = *state;
    int port = server_listen(f, 0);
    new_loop(f, 0);
    f->pump = server_accept;
    int src = add(f, (sr_source_opts_t){
        .kind = "socket_text", .host = "localhost", .port = port});
    RUN_UNTIL(f, f->cfd >= 0);
    server_send(f, "one\n");
    RUN_UNTIL(f, f->recs[src].n >= 1);
    expect_rec(f, src, 0, "one", 0);

    /* The server goes away: connection attempts fail for a while. */
    close(f->cfd);
    close(f->lfd);
    f->cfd = f->lfd = -1;
    run_batches(f, 8);
    assert_int_equal(dead(f, src), 0); /* it closed between lines */

    /* It comes back on the same port: the source finds it again. */
    server_listen(f, port);
    RUN_UNTIL(f, f->cfd >= 0);
    server_send(f, "two\n");
    RUN_UNTIL(f, f->recs[src].n >= 2);
    expect_rec(f, src, 1, "two", 4);
}

static void test_socket_text_bad_options(void **state)
{
    fixture_t *f = *state;
    char err[256] = "";
    new_loop(f, 0);
    sr_source_opts_t o = {.kind = "socket_text", .host = "127.0.0.1", .port = 0};
    assert_int_equal(sr_loop_add_source(f->l, &o, err, sizeof(err)), SR_EINVAL);
    assert_non_null(strstr(err, "port"));
}

/* -- listen_text -- */

static int client_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        fail_msg("connect: %s", strerror(errno));
    return fd;
}

static void send_str(int fd, const char *s)
{
    assert_int_equal(write(fd, s, strlen(s)), (ssize_t)strlen(s));
}

static void test_listen_text_clients(void **state)
{
    fixture_t *f = *state;
    new_loop(f, 0);
    int src = add(f, (sr_source_opts_t){
        .kind = "listen_text", .name = "in", .host = "127.0.0.1", .port = 0});
    int port = sr_source_listen_port(sr_loop_source(f->l, src));
    assert_true(port > 0);
    int c1 = client_connect(port), c2 = client_connect(port);
    /* Partial lines from both clients, interleaved across batches. */
    send_str(c1, "a1-");
    run_batches(f, 2);
    send_str(c2, "b1-");
    run_batches(f, 2);
    send_str(c1, "x\n");
    run_batches(f, 2);
    send_str(c2, "y\r\nb2");
    RUN_UNTIL(f, f->recs[src].n >= 2);
    expect_rec(f, src, 0, "a1-x", 0);
    expect_rec(f, src, 1, "b1-y", 0);
    /* A client that closes mid-line leaves a dead letter; the other goes on. */
    close(c2);
    RUN_UNTIL(f, dead(f, src) == 1);
    expect_dead_letter(f, "\"source\":\"in\",\"offset\":6,"
                          "\"reason\":\"connection closed mid-line\",\"record\":\"b2\"");
    send_str(c1, "a2\n");
    RUN_UNTIL(f, f->recs[src].n >= 3);
    expect_rec(f, src, 2, "a2", 5);
    /* A new client after others left. */
    int c3 = client_connect(port);
    send_str(c3, "c1\n");
    close(c3);
    RUN_UNTIL(f, f->recs[src].n >= 4);
    expect_rec(f, src, 3, "c1", 0);
    assert_int_equal(dead(f, src), 1);
    /* c1 is still connected, mid-line, when the loop is freed: stop()
     * releases it (the teardown checks for leaks). */
    send_str(c1, "unfinished");
    run_batches(f, 2);
    sr_loop_free(f->l);
    f->l = NULL;
    close(c1);
}

/* Ten producers, each sending its lines in pieces, one piece per client per
 * batch: every line arrives whole and exactly once. */
static void test_listen_text_many_clients(void **state)
{
    fixture_t *f = *state;
    enum { NC = 10 };
    new_loop(f, 0);
    int src = add(f, (sr_source_opts_t){.kind = "listen_text", .host = "127.0.0.1"});
    int port = sr_source_listen_port(sr_loop_source(f->l, src));
    int c[NC];
    for (int i = 0; i < NC; i++) c[i] = client_connect(port);
    const char *pieces[] = {"client-", "%d-line-", "one\nclient-", "%d-line-", "two\n"};
    for (size_t p = 0; p < sizeof(pieces) / sizeof(pieces[0]); p++) {
        for (int i = 0; i < NC; i++) {
            char buf[64];
            snprintf(buf, sizeof(buf), pieces[p], i);
            send_str(c[i], buf);
        }
        step(f);
    }
    RUN_UNTIL(f, f->recs[src].n >= 2 * NC);
    assert_int_equal(f->recs[src].n, 2 * NC);
    for (int i = 0; i < NC; i++) {
        char want[64];
        int found = 0;
        snprintf(want, sizeof(want), "client-%d-line-one", i);
        for (int r = 0; r < f->recs[src].n; r++)
            if (strcmp(f->recs[src].text[r], want) == 0) {
                found++;
                assert_int_equal(f->recs[src].pos[r], 0);
            }
        assert_int_equal(found, 1);
        snprintf(want, sizeof(want), "client-%d-line-two", i);
        assert_true(has_rec(f, src, want));
    }
    for (int i = 0; i < NC; i++) close(c[i]);
    run_batches(f, 2);
    assert_int_equal(dead(f, src), 0);
}

static void test_listen_text_bind_failure(void **state)
{
    fixture_t *f = *state;
    int port = server_listen(f, 0); /* the port is taken */
    new_loop(f, 0);
    char err[256] = "", want[128];
    sr_source_opts_t o = {.kind = "listen_text", .host = "127.0.0.1", .port = port};
    assert_true(sr_loop_add_source(f->l, &o, err, sizeof(err)) < 0);
    snprintf(want, sizeof(want), "listen_text 127.0.0.1:%d: Address already in use", port);
    assert_string_equal(err, want);
    assert_int_equal(sr_loop_nsources(f->l), 0);
}

static void test_listen_port_of_other_kind(void **state)
{
    fixture_t *f = *state;
    char path[512];
    file_path(f, path, sizeof(path), "x.txt");
    sr_test_write(path, "w", "x\n");
    new_loop(f, 0);
    int src = add(f, (sr_source_opts_t){.kind = "text_file", .path = path});
    assert_int_equal(sr_source_listen_port(sr_loop_source(f->l, src)), SR_EINVAL);
    assert_int_equal(sr_source_listen_port(NULL), SR_EINVAL);
}

/* -- Out of memory -- */

/* Every allocation of starting each kind fails in turn: the source either
 * starts or reports an error, and nothing leaks either way. */
static void test_add_source_out_of_memory(void **state)
{
    fixture_t *f = *state;
    char file[512], dir[512], p[600];
    file_path(f, file, sizeof(file), "in.txt");
    sr_test_write(file, "w", "x\n");
    file_path(f, dir, sizeof(dir), "in");
    assert_int_equal(mkdir(dir, 0755), 0);
    for (int i = 0; i < 3; i++) {
        char name[16];
        snprintf(name, sizeof(name), "f%d", i);
        sr_test_write(sr_test_path(p, sizeof(p), dir, name), "w", "y\n");
    }
    int lport = server_listen(f, 0);
    sr_source_opts_t kinds[] = {
        {.kind = "text_file", .path = file},
        {.kind = "tail", .path = file},
        {.kind = "text_dir", .path = dir},
        {.kind = "listen_text", .host = "127.0.0.1"},
        {.kind = "socket_text", .host = "127.0.0.1", .port = lport},
    };
    for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
        int started = 0;
        for (long n = 0; n < 40; n++) {
            size_t before = sr_alloc_used();
            new_loop(f, 0);
            char err[256] = "";
            sr_alloc_fail_after(n);
            int rc = sr_loop_add_source(f->l, &kinds[k], err, sizeof(err));
            sr_alloc_fail_after(-1);
            if (rc >= 0) {
                started++;
                step(f);
            } else {
                assert_int_equal(rc, SR_ENOMEM);
                assert_string_equal(err, "out of memory");
            }
            sr_loop_free(f->l);
            f->l = NULL;
            if (sr_alloc_used() != before)
                fail_msg("%s leaks when allocation %ld fails", kinds[k].kind, n);
        }
        if (!started) fail_msg("%s never started", kinds[k].kind);
    }
}

/* -- Several sources in one loop -- */

static void test_sources_together(void **state)
{
    fixture_t *f = *state;
    char path[512], logp[512];
    file_path(f, path, sizeof(path), "in.txt");
    file_path(f, logp, sizeof(logp), "app.log");
    sr_test_write(path, "w", "f1\nf2\n");
    sr_test_write(logp, "w", "");
    new_loop(f, 0);
    int file = add(f, (sr_source_opts_t){.kind = "text_file", .path = path});
    int tail = add(f, (sr_source_opts_t){.kind = "tail", .path = logp});
    int lis = add(f, (sr_source_opts_t){.kind = "listen_text", .host = "127.0.0.1"});
    int c = client_connect(sr_source_listen_port(sr_loop_source(f->l, lis)));
    send_str(c, "l1\n");
    sr_test_write(logp, "a", "t1\n");
    RUN_UNTIL(f, f->recs[file].n >= 2 && f->recs[tail].n >= 1 && f->recs[lis].n >= 1);
    expect_rec(f, file, 1, "f2", 3);
    expect_rec(f, tail, 0, "t1", 0);
    expect_rec(f, lis, 0, "l1", 0);
    /* The file is done but the others are not: the job goes on. */
    run_batches(f, 2);
    assert_false(f->last);
    close(c);
}

/* -- Traits -- */

/* What each kind says it is, as the loop and the Lua side read it; the
 * traits agree with what the kind implements. */
static void test_source_traits(void **state)
{
    (void)state;
    static const struct {
        const char *kind;
        sr_source_traits_t t;
    } want[] = {
        {"text_file", {.bounded = 1, .stored = 1, .rereads = 1, .resumes = 1}},
        {"stdin", {.bounded = 1, .logged = 1}},
        {"socket_text", {.logged = 1}},
        {"listen_text", {.logged = 1}},
        {"tail", {.logged = 1, .resumes = 1}},
        {"text_dir", {.logged = 1, .resumes = 1, .file_list = 1}},
    };
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        sr_source_traits_t t;
        memset(&t, 0xff, sizeof(t));
        assert_int_equal(sr_source_traits(want[i].kind, &t), SR_OK);
        if (memcmp(&t, &want[i].t, sizeof(t)) != 0) fail_msg("traits of %s", want[i].kind);
        const sr_source_type_t *type = sr_source_type_find(want[i].kind);
        assert_non_null(type);
        /* Resuming at a position needs one; stored input is read again,
         * never logged. */
        assert_int_equal(t.resumes, type->position != NULL);
        assert_false(t.stored && t.logged);
        assert_false(t.rereads && t.logged);
    }
    sr_source_traits_t t;
    memset(&t, 0xff, sizeof(t));
    assert_int_equal(sr_source_traits("generator", &t), SR_EINVAL);
    sr_source_traits_t zero = {0};
    assert_memory_equal(&t, &zero, sizeof(t));
    assert_int_equal(sr_source_traits(NULL, &t), SR_EINVAL);
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_text_file_lines),
        T(test_text_file_missing),
        T(test_text_file_max_line),
        T(test_text_file_backpressure),
        T(test_text_file_read_ahead_same_batches),
        T(test_text_file_read_ahead_resume_and_stop),
        T(test_stdin),
        T(test_stdin_regular_file),
        T(test_tail_follows_appends),
        T(test_tail_from_start),
        T(test_tail_start_mid_line),
        T(test_tail_rotation),
        T(test_tail_truncation),
        T(test_tail_waits_for_file),
        T(test_text_dir),
        T(test_sources_hold_while_the_log_fails),
        T(test_text_dir_resume),
        T(test_text_dir_resume_replaced_or_gone),
        T(test_text_dir_missing),
        T(test_socket_text_lines),
        T(test_socket_text_server_restart),
        T(test_socket_text_bad_options),
        T(test_listen_text_clients),
        T(test_listen_text_many_clients),
        T(test_listen_text_bind_failure),
        T(test_listen_port_of_other_kind),
        T(test_add_source_out_of_memory),
        T(test_sources_together),
        T(test_source_traits),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
