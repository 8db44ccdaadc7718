/* test_wal: the write-ahead log: records and batch markers read back in
 * order, rotation and dropping, torn and corrupt tails cut off (every
 * length, every byte), corruption in an earlier segment, and write
 * failures through sr_io. */
#include "sr_test.h"

#include "sr_alloc.h"
#include "sr_io.h"
#include "sr_wal.h"

#include <dirent.h>
#include <errno.h>

/* -- Reading back -- */

typedef struct got {
    int type, index, npos;
    int64_t pos, time_ms;
    char data[300];
    size_t len;
    sr_wal_pos_t positions[4];
} got_t;

typedef struct log {
    got_t e[4096];
    int n;
    int opens; /* OPEN entries, counted apart: one per sr_wal_open */
} log_t;

static log_t got;

static void on_entry(void *ud, const sr_wal_entry_t *e)
{
    log_t *l = ud;
    if (e->type == SR_WAL_OPEN) {
        l->opens++;
        return;
    }
    assert_true(l->n < 4096);
    got_t *g = &l->e[l->n++];
    memset(g, 0, sizeof(*g));
    g->type = e->type;
    g->index = e->index;
    g->pos = e->pos;
    g->time_ms = e->time_ms;
    /* The first bytes of long records are enough. */
    if (e->len) memcpy(g->data, e->data, e->len < sizeof(g->data) ? e->len : sizeof(g->data));
    g->len = e->len;
    g->npos = e->npos;
    assert_true(e->npos <= 4);
    for (int i = 0; i < e->npos; i++) g->positions[i] = e->positions[i];
}

/* The number of entries other than OPEN ones (those are in got.opens). */
static long scan(const char *dir, char *note, size_t len)
{
    memset(&got, 0, sizeof(got));
    long n = sr_wal_scan(dir, on_entry, &got, note, len);
    return n < 0 ? n : n - got.opens;
}

static void assert_source(const got_t *g, int index, const char *name)
{
    assert_int_equal(g->type, SR_WAL_SOURCE);
    assert_int_equal(g->index, index);
    assert_int_equal(g->len, strlen(name));
    assert_memory_equal(g->data, name, g->len);
}

static void assert_record(const got_t *g, int index, int64_t pos, const char *data)
{
    assert_int_equal(g->type, SR_WAL_RECORD);
    assert_int_equal(g->index, index);
    assert_int_equal(g->pos, pos);
    assert_int_equal(g->len, strlen(data));
    if (g->len) assert_memory_equal(g->data, data, g->len);
    assert_true(g->len <= sizeof(g->data));
}

static void assert_batch(const got_t *g, int64_t time_ms, int npos)
{
    assert_int_equal(g->type, SR_WAL_BATCH);
    assert_int_equal(g->time_ms, time_ms);
    assert_int_equal(g->npos, npos);
}

/* Entry sizes on disk: 8 bytes of length and CRC, then the payload. */
static size_t open_size(void) { return 8 + 1; }
static size_t source_size(const char *name) { return 8 + 3 + strlen(name); }
static size_t record_size(size_t len) { return 8 + 11 + len; }
static size_t batch_size(int npos) { return 8 + 11 + 18 * (size_t)npos; }

/* -- Files -- */

static char *segment(char *buf, size_t len, const char *dir, unsigned long long seq)
{
    snprintf(buf, len, "%s/%020llu.wal", dir, seq);
    return buf;
}

static long file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}


/* The names in dir, sorted and joined by spaces. */
static void listing(const char *dir, char *buf, size_t len)
{
    struct dirent **names;
    int n = scandir(dir, &names, NULL, alphasort);
    assert_true(n >= 0);
    buf[0] = '\0';
    for (int i = 0; i < n; i++) {
        if (strcmp(names[i]->d_name, ".") && strcmp(names[i]->d_name, "..")) {
            if (buf[0]) strncat(buf, " ", len - strlen(buf) - 1);
            strncat(buf, names[i]->d_name, len - strlen(buf) - 1);
        }
        free(names[i]);
    }
    free(names);
}

/* -- Fault injection through sr_io -- */

static struct {
    int fail_write;   /* this write call fails (from 1; 0: none) */
    int persistent;   /* and every one after it */
    int err;
    size_t partial;   /* the failing call is preceded by one writing only this many bytes */
    int fail_open;    /* open calls on files (not directories) fail */
    int null_open;    /* files open /dev/null instead: writes succeed, fdatasync fails */
    int writes, failed;
} F;

static ssize_t fake_write(int fd, const void *p, size_t n)
{
    int k = ++F.writes;
    if (F.fail_write && F.partial && k == F.fail_write - 1) {
        /* The first part of the buffer reaches the file, then the error. */
        return sr_io_real.write(fd, p, n < F.partial ? n : F.partial);
    }
    if (F.fail_write && (k == F.fail_write || (F.persistent && k > F.fail_write))) {
        F.failed++;
        errno = F.err;
        return -1;
    }
    return sr_io_real.write(fd, p, n);
}

static int fake_open(const char *path, int flags, mode_t mode)
{
    if (!(flags & O_DIRECTORY) && F.fail_open) {
        F.failed++;
        errno = F.err;
        return -1;
    }
    if (!(flags & O_DIRECTORY) && F.null_open) return sr_io_real.open("/dev/null", O_WRONLY | O_CLOEXEC, 0);
    return sr_io_real.open(path, flags, mode);
}

static char base[256], dir[300];

static int setup(void **state)
{
    (void)state;
    sr_io = sr_io_real;
    memset(&F, 0, sizeof(F));
    sr_test_tmpdir(base, sizeof(base));
    snprintf(dir, sizeof(dir), "%s/wal", base);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    sr_io = sr_io_real;
    sr_test_rmtree(base);
    return 0;
}

static sr_wal_t *open_wal(void)
{
    char err[512] = "";
    sr_wal_t *w = sr_wal_open(dir, err, sizeof(err));
    if (!w) fail_msg("sr_wal_open %s: %s", dir, err);
    return w;
}

/* -- Tests -- */

static void test_records_and_batches_in_order(void **state)
{
    (void)state;
    size_t mem = sr_alloc_used();
    sr_wal_t *w = open_wal();
    assert_int_equal(sr_wal_declare(w, 0, "sock"), 0);
    assert_int_equal(sr_wal_declare(w, 3, "stdin"), 0);
    assert_int_equal(sr_wal_record(w, 0, 10, "a", 1), 0);
    assert_int_equal(sr_wal_record(w, 3, 5, "bb", 2), 0);
    /* Buffered until flushed: nothing on disk yet. */
    char note[512];
    assert_int_equal(scan(dir, note, sizeof(note)), 0);
    assert_int_equal(sr_wal_flush(w), 0);
    assert_int_equal(scan(dir, note, sizeof(note)), 4);
    assert_string_equal(note, "");
    assert_int_equal(sr_wal_record(w, 0, 20, "ccc", 3), 0);
    sr_wal_pos_t p1[2] = {{0, 20, 0}, {3, 5, 0x123456789abcULL}};
    assert_int_equal(sr_wal_batch(w, 1000, p1, 2), 0);
    assert_int_equal(sr_wal_record(w, 3, 9, "", 0), 0);
    assert_int_equal(sr_wal_record(w, 0, -1, "line\0with nul", 14), 0);
    sr_wal_pos_t p2[1] = {{3, 9, 42}};
    assert_int_equal(sr_wal_batch(w, 2000, p2, 1), 0);
    /* A marker without positions, and records after the last marker. */
    assert_int_equal(sr_wal_batch(w, 3000, NULL, 0), 0);
    assert_int_equal(sr_wal_record(w, 0, 30, "pending", 7), 0);
    assert_int_equal(sr_wal_error(w), 0);
    sr_wal_free(w); /* flushes */
    assert_int_equal(sr_alloc_used(), mem);

    assert_int_equal(scan(dir, note, sizeof(note)), 11);
    assert_string_equal(note, "");
    assert_int_equal(got.n, 11);
    assert_source(&got.e[0], 0, "sock");
    assert_source(&got.e[1], 3, "stdin");
    assert_record(&got.e[2], 0, 10, "a");
    assert_record(&got.e[3], 3, 5, "bb");
    assert_record(&got.e[4], 0, 20, "ccc");
    assert_batch(&got.e[5], 1000, 2);
    assert_int_equal(got.e[5].positions[0].index, 0);
    assert_int_equal(got.e[5].positions[0].offset, 20);
    assert_int_equal(got.e[5].positions[0].inode, 0);
    assert_int_equal(got.e[5].positions[1].index, 3);
    assert_int_equal(got.e[5].positions[1].offset, 5);
    assert_true(got.e[5].positions[1].inode == 0x123456789abcULL);
    assert_record(&got.e[6], 3, 9, "");
    assert_int_equal(got.e[7].type, SR_WAL_RECORD);
    assert_int_equal(got.e[7].pos, -1);
    assert_int_equal(got.e[7].len, 14);
    assert_memory_equal(got.e[7].data, "line\0with nul", 14);
    assert_batch(&got.e[8], 2000, 1);
    assert_int_equal(got.e[8].positions[0].index, 3);
    assert_int_equal(got.e[8].positions[0].offset, 9);
    assert_int_equal(got.e[8].positions[0].inode, 42);
    assert_batch(&got.e[9], 3000, 0);
    assert_record(&got.e[10], 0, 30, "pending");
    /* One segment, numbered 1, exactly as long as its entries. */
    char names[1024], path[512];
    listing(dir, names, sizeof(names));
    assert_string_equal(names, "00000000000000000001.wal");
    assert_int_equal(file_size(segment(path, sizeof(path), dir, 1)),
                     open_size() + source_size("sock") + source_size("stdin") + record_size(1) + record_size(2) + record_size(3) +
                         batch_size(2) + record_size(0) + record_size(14) + batch_size(1) + batch_size(0) +
                         record_size(7));
    /* A scan of a whole log changes nothing: the same again. */
    assert_int_equal(scan(dir, note, sizeof(note)), 11);
    assert_string_equal(note, "");
    /* No log at all: nothing. */
    char none[512];
    snprintf(none, sizeof(none), "%s/none", base);
    assert_int_equal(scan(none, note, sizeof(note)), 0);
    assert_string_equal(note, "");
}

/* text_dir's files taken up: read back in order among the records, with
 * their inode, or -1 for a file skipped. */
static void test_file_entries(void **state)
{
    (void)state;
    sr_wal_t *w = open_wal();
    assert_int_equal(sr_wal_declare(w, 1, "dir"), 0);
    assert_int_equal(sr_wal_file(w, 1, 987654321, "a.txt"), 0);
    assert_int_equal(sr_wal_record(w, 1, 0, "a1", 2), 0);
    assert_int_equal(sr_wal_file(w, 1, -1, "unreadable"), 0);
    assert_int_equal(sr_wal_file(w, 1, 5, "b.txt"), 0);
    sr_wal_pos_t p[1] = {{1, 0, 5}};
    assert_int_equal(sr_wal_batch(w, 100, p, 1), 0);
    sr_wal_free(w);
    char note[512];
    assert_int_equal(scan(dir, note, sizeof(note)), 6);
    assert_string_equal(note, "");
    assert_source(&got.e[0], 1, "dir");
    const struct { int64_t inode; const char *name; } files[] = {{987654321, "a.txt"}, {-1, "unreadable"}, {5, "b.txt"}};
    const int at[] = {1, 3, 4};
    for (int i = 0; i < 3; i++) {
        const got_t *g = &got.e[at[i]];
        assert_int_equal(g->type, SR_WAL_FILE);
        assert_int_equal(g->index, 1);
        assert_int_equal(g->pos, files[i].inode);
        assert_int_equal(g->len, strlen(files[i].name));
        assert_memory_equal(g->data, files[i].name, g->len);
    }
    assert_record(&got.e[2], 1, 0, "a1");
    assert_batch(&got.e[5], 100, 1);
}

static void test_big_records_flush_on_their_own(void **state)
{
    (void)state;
    sr_wal_t *w = open_wal();
    assert_int_equal(sr_wal_declare(w, 0, "s"), 0);
    static char rec[10000];
    memset(rec, 'x', sizeof(rec));
    char note[512], path[512];
    /* Past 256 KiB of buffered entries they reach the file unasked. */
    int i = 0;
    while (file_size(segment(path, sizeof(path), dir, 1)) == 0) {
        assert_true(i < 100);
        assert_int_equal(sr_wal_record(w, 0, i, rec, sizeof(rec)), 0);
        i++;
    }
    assert_true(i * sizeof(rec) >= 256 * 1024);
    assert_int_equal(scan(dir, note, sizeof(note)), 1 + i);
    sr_wal_free(w);
}

static void test_rotate_and_drop_before(void **state)
{
    (void)state;
    char note[512], names[1024];
    sr_wal_t *w = open_wal();
    assert_int_equal(sr_wal_declare(w, 0, "sock"), 0);
    assert_int_equal(sr_wal_declare(w, 1, "in"), 0);
    assert_int_equal(sr_wal_record(w, 0, 1, "one", 3), 0);
    sr_wal_pos_t p = {0, 1, 0};
    assert_int_equal(sr_wal_batch(w, 100, &p, 1), 0);
    assert_int_equal(sr_wal_rotate(w), 2);
    assert_int_equal(sr_wal_record(w, 1, 7, "two", 3), 0);
    assert_int_equal(sr_wal_batch(w, 200, NULL, 0), 0);
    assert_int_equal(sr_wal_rotate(w), 3);
    assert_int_equal(sr_wal_record(w, 0, 2, "three", 5), 0);
    assert_int_equal(sr_wal_batch(w, 300, NULL, 0), 0);
    listing(dir, names, sizeof(names));
    assert_string_equal(names, "00000000000000000001.wal 00000000000000000002.wal 00000000000000000003.wal");
    /* Every segment starts by naming the sources again; only the first,
     * which a run opened, has an OPEN entry. */
    assert_int_equal(scan(dir, note, sizeof(note)), 12);
    assert_string_equal(note, "");
    assert_int_equal(got.opens, 1);
    assert_source(&got.e[0], 0, "sock");
    assert_source(&got.e[1], 1, "in");
    assert_record(&got.e[2], 0, 1, "one");
    assert_batch(&got.e[3], 100, 1);
    assert_source(&got.e[4], 0, "sock");
    assert_source(&got.e[5], 1, "in");
    assert_record(&got.e[6], 1, 7, "two");
    assert_batch(&got.e[7], 200, 0);
    assert_source(&got.e[8], 0, "sock");
    assert_source(&got.e[9], 1, "in");
    assert_record(&got.e[10], 0, 2, "three");
    assert_batch(&got.e[11], 300, 0);
    /* Dropping: nothing below 1, then the segments a checkpoint covers. */
    assert_int_equal(sr_wal_drop_before(w, 1), 0);
    assert_int_equal(sr_wal_drop_before(w, 3), 2);
    assert_int_equal(sr_wal_drop_before(w, 3), 0);
    listing(dir, names, sizeof(names));
    assert_string_equal(names, "00000000000000000003.wal");
    assert_int_equal(scan(dir, note, sizeof(note)), 4);
    assert_source(&got.e[0], 0, "sock");
    assert_record(&got.e[2], 0, 2, "three");
    assert_batch(&got.e[3], 300, 0);
    /* The log goes on in segment 3. */
    assert_int_equal(sr_wal_record(w, 1, 8, "four", 4), 0);
    assert_int_equal(sr_wal_batch(w, 400, NULL, 0), 0);
    assert_int_equal(scan(dir, note, sizeof(note)), 6);
    assert_record(&got.e[4], 1, 8, "four");
    sr_wal_free(w);
    /* Opened again, a new segment after the last. */
    w = open_wal();
    assert_int_equal(sr_wal_rotate(w), 5);
    sr_wal_free(w);
    listing(dir, names, sizeof(names));
    assert_string_equal(names, "00000000000000000003.wal 00000000000000000004.wal 00000000000000000005.wal");
    assert_int_equal(scan(dir, note, sizeof(note)), 6);
    assert_string_equal(note, "");
    assert_int_equal(got.opens, 1); /* segment 4's; 3's went with segment 1 */
}

/* Two segments: the first whole, the second ending with `last` (a record,
 * or a batch marker when last is NULL). Returns the entries in all; *start
 * gets where the last entry of segment 2 starts. */
static long two_segments(const char *last, size_t *start)
{
    sr_wal_t *w = open_wal();
    assert_int_equal(sr_wal_declare(w, 0, "sock"), 0);
    assert_int_equal(sr_wal_record(w, 0, 1, "first", 5), 0);
    assert_int_equal(sr_wal_batch(w, 100, NULL, 0), 0);
    assert_int_equal(sr_wal_rotate(w), 2);
    assert_int_equal(sr_wal_record(w, 0, 2, "second", 6), 0);
    sr_wal_pos_t p[2] = {{0, 2, 0}, {1, 77, 5}};
    assert_int_equal(sr_wal_batch(w, 200, p, 2), 0);
    assert_int_equal(sr_wal_record(w, 0, 3, "third", 5), 0);
    if (last) assert_int_equal(sr_wal_record(w, 0, 4, last, strlen(last)), 0);
    else assert_int_equal(sr_wal_batch(w, 300, p, 2), 0);
    sr_wal_free(w);
    char path[512];
    long size = file_size(segment(path, sizeof(path), dir, 2));
    *start = (size_t)size - (last ? record_size(strlen(last)) : batch_size(2));
    return 8;
}

/* The entries before the last one of two_segments, intact. */
static void assert_all_but_last(void)
{
    assert_source(&got.e[0], 0, "sock");
    assert_record(&got.e[1], 0, 1, "first");
    assert_batch(&got.e[2], 100, 0);
    assert_source(&got.e[3], 0, "sock");
    assert_record(&got.e[4], 0, 2, "second");
    assert_batch(&got.e[5], 200, 2);
    assert_int_equal(got.e[5].positions[1].index, 1);
    assert_int_equal(got.e[5].positions[1].offset, 77);
    assert_int_equal(got.e[5].positions[1].inode, 5);
    assert_record(&got.e[6], 0, 3, "third");
}

static void check_cut(const char *seg2, size_t start, size_t len, const char *what)
{
    char note[1024], want[1200];
    long n = scan(dir, note, sizeof(note));
    if (n != 7) fail_msg("%s: %ld entries, want 7 (note: %s)", what, n, note);
    assert_all_but_last();
    if (len == start) {
        if (note[0]) fail_msg("%s: note \"%s\" for a log cut between entries", what, note);
    } else {
        snprintf(want, sizeof(want), "%s: torn or corrupt tail at offset %zu (%zu bytes) cut off", seg2, start,
                 len - start);
        if (strcmp(note, want) != 0) fail_msg("%s: note \"%s\", want \"%s\"", what, note, want);
    }
    if (file_size(seg2) != (long)start) fail_msg("%s: %ld bytes left, want %zu", what, file_size(seg2), start);
    /* Cut once: the next read finds nothing to report. */
    n = scan(dir, note, sizeof(note));
    if (n != 7 || note[0]) fail_msg("%s: read again: %ld entries, note \"%s\"", what, n, note);
}

static void test_torn_tail_at_every_length(void **state)
{
    (void)state;
    char seg1[512], seg2[512], what[200];
    segment(seg1, sizeof(seg1), dir, 1);
    segment(seg2, sizeof(seg2), dir, 2);
    const char *lasts[] = {"the last record, torn", NULL};
    for (int k = 0; k < 2; k++) {
        sr_test_rmtree(dir);
        size_t start;
        char note[512];
        assert_int_equal(scan(dir, note, sizeof(note)), 0);
        assert_int_equal(two_segments(lasts[k], &start), 8);
        assert_int_equal(scan(dir, note, sizeof(note)), 8);
        assert_string_equal(note, "");
        sr_test_blob_t whole = sr_test_slurp(seg2);
        sr_test_blob_t first = sr_test_slurp(seg1);
        assert_true(start < whole.len);
        for (size_t len = start; len < whole.len; len++) {
            sr_test_spit(seg2, whole.data, len);
            snprintf(what, sizeof(what), "%s cut to %zu of %zu bytes", lasts[k] ? "record" : "batch marker", len,
                     whole.len);
            check_cut(seg2, start, len, what);
            /* The earlier segment is never touched. */
            sr_test_blob_t again = sr_test_slurp(seg1);
            assert_int_equal(again.len, first.len);
            assert_memory_equal(again.data, first.data, first.len);
            free(again.data);
        }
        free(whole.data);
        free(first.data);
    }
}

static void test_flipped_byte_in_the_last_entry(void **state)
{
    (void)state;
    char seg2[512], what[200];
    segment(seg2, sizeof(seg2), dir, 2);
    const char *lasts[] = {"the last record, damaged", NULL};
    for (int k = 0; k < 2; k++) {
        sr_test_rmtree(dir);
        size_t start;
        two_segments(lasts[k], &start);
        sr_test_blob_t whole = sr_test_slurp(seg2);
        /* Every byte of it: length, checksum and payload. */
        for (size_t i = start; i < whole.len; i++) {
            whole.data[i] ^= 0x20;
            sr_test_spit(seg2, whole.data, whole.len);
            whole.data[i] ^= 0x20;
            snprintf(what, sizeof(what), "%s, byte %zu of %zu flipped", lasts[k] ? "record" : "batch marker", i,
                     whole.len);
            check_cut(seg2, start, whole.len, what);
        }
        free(whole.data);
    }
}

static void test_corruption_in_an_earlier_segment_stops_the_read(void **state)
{
    (void)state;
    sr_wal_t *w = open_wal();
    assert_int_equal(sr_wal_declare(w, 0, "s"), 0);
    assert_int_equal(sr_wal_record(w, 0, 1, "r1", 2), 0);
    assert_int_equal(sr_wal_batch(w, 100, NULL, 0), 0);
    assert_int_equal(sr_wal_rotate(w), 2);
    assert_int_equal(sr_wal_record(w, 0, 2, "r2", 2), 0);
    assert_int_equal(sr_wal_record(w, 0, 3, "r3", 2), 0);
    assert_int_equal(sr_wal_record(w, 0, 4, "r4", 2), 0);
    assert_int_equal(sr_wal_batch(w, 200, NULL, 0), 0);
    assert_int_equal(sr_wal_rotate(w), 3);
    assert_int_equal(sr_wal_record(w, 0, 5, "r5", 2), 0);
    assert_int_equal(sr_wal_batch(w, 300, NULL, 0), 0);
    sr_wal_free(w);
    char seg2[512], seg3[512], note[1024], want[1200];
    segment(seg2, sizeof(seg2), dir, 2);
    segment(seg3, sizeof(seg3), dir, 3);
    long size2 = file_size(seg2), size3 = file_size(seg3);
    /* r3's payload, past its 8-byte header and type byte. */
    size_t at = source_size("s") + record_size(2);
    sr_test_blob_t b = sr_test_slurp(seg2);
    b.data[at + 8 + 11] ^= 0x01;
    sr_test_spit(seg2, b.data, b.len);
    free(b.data);
    long n = scan(dir, note, sizeof(note));
    assert_int_equal(n, 3 + 2);
    assert_source(&got.e[0], 0, "s");
    assert_record(&got.e[1], 0, 1, "r1");
    assert_batch(&got.e[2], 100, 0);
    assert_source(&got.e[3], 0, "s");
    assert_record(&got.e[4], 0, 2, "r2");
    snprintf(want, sizeof(want), "%s: corrupt at offset %zu; the log after it is not read", seg2, at);
    assert_string_equal(note, want);
    /* Nothing is cut from a segment that is not the last. */
    assert_int_equal(file_size(seg2), size2);
    assert_int_equal(file_size(seg3), size3);
    /* A torn (short) earlier segment: the same. */
    b = sr_test_slurp(seg2);
    sr_test_spit(seg2, b.data, at + 5);
    free(b.data);
    n = scan(dir, note, sizeof(note));
    assert_int_equal(n, 5);
    assert_string_equal(note, want);
    assert_int_equal(file_size(seg2), (long)at + 5);
    assert_int_equal(file_size(seg3), size3);
}

static void test_write_failures_are_reported(void **state)
{
    (void)state;
    const int errs[] = {ENOSPC, EIO, EACCES};
    for (size_t k = 0; k < 3; k++) {
        int e = errs[k];
        sr_test_rmtree(dir);
        size_t mem = sr_alloc_used();
        char note[512], err[512] = "";

        /* No segment can be opened: no log. */
        memset(&F, 0, sizeof(F));
        F.fail_open = 1;
        F.err = e;
        sr_io.open = fake_open;
        assert_null(sr_wal_open(dir, err, sizeof(err)));
        sr_io = sr_io_real;
        char want[600];
        snprintf(want, sizeof(want), "cannot open a log segment in %s: %s", dir, strerror(e));
        assert_string_equal(err, want);
        assert_int_equal(F.failed, 1);
        assert_int_equal(sr_alloc_used(), mem);

        sr_wal_t *w = open_wal();
        assert_int_equal(sr_wal_declare(w, 0, "s"), 0);
        assert_int_equal(sr_wal_record(w, 0, 1, "kept", 4), 0);
        assert_int_equal(sr_wal_batch(w, 100, NULL, 0), 0);
        sr_io.write = fake_write;
        sr_io.open = fake_open;

        /* The flush of records. */
        memset(&F, 0, sizeof(F));
        F.fail_write = 1;
        F.err = e;
        assert_int_equal(sr_wal_record(w, 0, 2, "r", 1), 0);
        errno = 0;
        assert_int_equal(sr_wal_flush(w), -1);
        assert_int_equal(errno, e);
        assert_int_equal(sr_wal_error(w), e);

        /* A batch marker. */
        memset(&F, 0, sizeof(F));
        F.fail_write = 1;
        F.err = e;
        errno = 0;
        assert_int_equal(sr_wal_batch(w, 200, NULL, 0), -1);
        assert_int_equal(errno, e);
        assert_int_equal(sr_wal_error(w), e);
        assert_int_equal(F.failed, 1);

        /* Records past the buffer's size, the write failing every time. */
        memset(&F, 0, sizeof(F));
        F.fail_write = 1;
        F.persistent = 1;
        F.err = e;
        static char rec[4096];
        int rc = 0, i = 0;
        while (rc == 0) {
            assert_true(i < 1000);
            rc = sr_wal_record(w, 0, i++, rec, sizeof(rec));
        }
        assert_int_equal(rc, -1);
        assert_int_equal(sr_wal_error(w), e);

        /* A new segment that cannot be opened: the log goes on in the old. */
        memset(&F, 0, sizeof(F));
        F.fail_open = 1;
        F.err = e;
        assert_int_equal(sr_wal_rotate(w), 0);
        assert_int_equal(sr_wal_error(w), e);
        sr_io = sr_io_real;
        assert_int_equal(sr_wal_record(w, 0, 3, "after", 5), 0);
        assert_int_equal(sr_wal_batch(w, 300, NULL, 0), 0);
        char names[1024];
        /* A new segment that opens but takes no write: it goes, and the
         * next rotation that works reuses its number. */
        memset(&F, 0, sizeof(F));
        F.fail_write = 1;
        F.persistent = 1;
        F.err = e;
        sr_io.write = fake_write;
        assert_int_equal(sr_wal_rotate(w), 0);
        assert_int_equal(sr_wal_rotate(w), 0);
        listing(dir, names, sizeof(names));
        assert_string_equal(names, "00000000000000000001.wal");
        sr_io = sr_io_real;
        assert_int_equal(sr_wal_rotate(w), 2);
        assert_int_equal(sr_wal_error(w), 0);
        assert_int_equal(sr_wal_drop_before(w, 1), 0);
        sr_wal_free(w);
        listing(dir, names, sizeof(names));
        assert_string_equal(names, "00000000000000000001.wal 00000000000000000002.wal");
        /* What failed to be written is not in the log; what came before
         * and after is, whole. */
        assert_int_equal(scan(dir, note, sizeof(note)), 6);
        assert_string_equal(note, "");
        assert_source(&got.e[0], 0, "s");
        assert_record(&got.e[1], 0, 1, "kept");
        assert_batch(&got.e[2], 100, 0);
        assert_record(&got.e[3], 0, 3, "after");
        assert_batch(&got.e[4], 300, 0);
        assert_source(&got.e[5], 0, "s"); /* segment 2 */
        assert_int_equal(sr_alloc_used(), mem);
    }
}

/* sr_wal_batch calls fdatasync(2) itself, not through sr_io, so ENOSPC or
 * EIO from it cannot be injected. What can be tested: a log whose segment
 * is a special file (here /dev/null, opened through sr_io.open) takes the
 * writes and fails fdatasync with EINVAL, which reaches the caller. */
static void test_fdatasync_failure(void **state)
{
    (void)state;
    memset(&F, 0, sizeof(F));
    F.null_open = 1;
    sr_io.open = fake_open;
    sr_wal_t *w = open_wal();
    sr_io = sr_io_real;
    assert_int_equal(sr_wal_declare(w, 0, "s"), 0);
    assert_int_equal(sr_wal_record(w, 0, 1, "r", 1), 0);
    assert_int_equal(sr_wal_flush(w), 0);
    assert_int_equal(sr_wal_error(w), 0);
    errno = 0;
    assert_int_equal(sr_wal_batch(w, 100, NULL, 0), -1);
    assert_int_equal(errno, EINVAL);
    assert_int_equal(sr_wal_error(w), EINVAL);
    sr_wal_free(w);
}

/* A write that fails part way through an entry (ENOSPC after a short
 * write) is cut back to the last whole entry, so the entries logged once
 * there is space again are read back. */
static void test_entries_after_a_partial_write_are_kept(void **state)
{
    (void)state;
    sr_wal_t *w = open_wal();
    assert_int_equal(sr_wal_declare(w, 0, "s"), 0);
    assert_int_equal(sr_wal_batch(w, 100, NULL, 0), 0);
    memset(&F, 0, sizeof(F));
    F.fail_write = 2;
    F.partial = 10;
    F.err = ENOSPC;
    sr_io.write = fake_write;
    assert_int_equal(sr_wal_record(w, 0, 1, "a record that is cut in two", 27), 0);
    assert_int_equal(sr_wal_batch(w, 200, NULL, 0), -1);
    assert_int_equal(sr_wal_error(w), ENOSPC);
    sr_io = sr_io_real;
    /* Space again: the next batch is logged and made durable. */
    assert_int_equal(sr_wal_record(w, 0, 2, "later", 5), 0);
    assert_int_equal(sr_wal_batch(w, 300, NULL, 0), 0);
    sr_wal_free(w);
    char note[1024];
    long n = scan(dir, note, sizeof(note));
    print_message("read back %ld entries; note: %s\n", n, note);
    assert_int_equal(n, 4);
    assert_record(&got.e[2], 0, 2, "later");
    assert_batch(&got.e[3], 300, 0);
}

/* A segment that cannot be opened (here a directory: EISDIR) stops the
 * read there, with a note, rather than skipping its batches silently. */
static void test_unreadable_segment_stops_the_read(void **state)
{
    (void)state;
    sr_wal_t *w = open_wal();
    assert_int_equal(sr_wal_declare(w, 0, "s"), 0);
    assert_int_equal(sr_wal_batch(w, 100, NULL, 0), 0);
    assert_int_equal(sr_wal_rotate(w), 2);
    assert_int_equal(sr_wal_batch(w, 200, NULL, 0), 0);
    assert_int_equal(sr_wal_rotate(w), 3);
    assert_int_equal(sr_wal_batch(w, 300, NULL, 0), 0);
    sr_wal_free(w);
    char seg2[512], note[1024];
    segment(seg2, sizeof(seg2), dir, 2);
    assert_int_equal(unlink(seg2), 0);
    assert_int_equal(mkdir(seg2, 0755), 0);
    long n = scan(dir, note, sizeof(note));
    print_message("read back %ld entries; note: \"%s\"\n", n, note);
    assert_true(note[0] != '\0');
    assert_non_null(strstr(note, "00000000000000000002.wal"));
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_records_and_batches_in_order),
        T(test_file_entries),
        T(test_big_records_flush_on_their_own),
        T(test_rotate_and_drop_before),
        T(test_torn_tail_at_every_length),
        T(test_flipped_byte_in_the_last_entry),
        T(test_corruption_in_an_earlier_segment_stops_the_read),
        T(test_write_failures_are_reported),
        T(test_fdatasync_failure),
        T(test_entries_after_a_partial_write_are_kept),
        T(test_unreadable_segment_stops_the_read),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
