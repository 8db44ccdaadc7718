/* sr_wal: log segments DIR/<seq>.wal of entries [u32 length][u32 crc32c]
 * [payload]; payload: type byte, then for S: u16 index, name; R: u16
 * index, i64 pos, bytes; B: i64 time, u16 n, n x (u16 index, i64 offset,
 * u64 inode); F: u16 index, i64 inode, name; O: nothing more. Integers
 * little-endian. */
#include "sr_wal.h"
#include "sr_alloc.h"
#include "sr_crc32c.h"
#include "sr_error.h"
#include "sr_io.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define SR_WAL_FLUSH_AT (256 * 1024)
#define SR_WAL_MAX_SOURCES 256

struct sr_wal {
    char *dir;
    int fd;
    uint64_t seq;
    char *buf;
    size_t len, cap;
    off_t file_len; /* bytes of whole entries in the segment */
    int err;
    char *names[SR_WAL_MAX_SOURCES]; /* declared sources, re-declared per segment */
};

/* -- Encoding -- */

static int sr__reserve(sr_wal_t *w, size_t n)
{
    if (w->len + n <= w->cap) return 0;
    size_t cap = w->cap ? w->cap : 65536;
    while (cap < w->len + n) cap *= 2;
    char *b = sr_realloc(w->buf, cap);
    if (!b) { errno = ENOMEM; return -1; }
    w->buf = b;
    w->cap = cap;
    return 0;
}

static void sr__put(char *p, uint64_t v, int bytes)
{
    for (int i = 0; i < bytes; i++) p[i] = (char)(v >> (8 * i));
}

static uint64_t sr__get(const char *p, int bytes)
{
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++) v |= (uint64_t)(unsigned char)p[i] << (8 * i);
    return v;
}

/* Starts an entry of payload size n; returns where its payload goes. */
static char *sr__entry(sr_wal_t *w, size_t n)
{
    if (sr__reserve(w, 8 + n) < 0) return NULL;
    char *p = w->buf + w->len;
    sr__put(p, n, 4);
    w->len += 8 + n;
    return p + 8;
}

static void sr__seal(char *payload, size_t n)
{
    sr__put(payload - 4, sr_crc32c(0, payload, n), 4);
}

static int sr__flush(sr_wal_t *w)
{
    if (!w->len) return 0;
    if (w->fd < 0 || sr_io_write_all(w->fd, w->buf, w->len) < 0) {
        w->err = w->fd < 0 ? EBADF : errno;
        /* A partial write would hide every entry after it: cut it off. */
        if (w->fd >= 0 && ftruncate(w->fd, w->file_len) < 0) { /* reported as w->err already */ }
        w->len = 0;
        errno = w->err;
        return -1;
    }
    w->file_len += (off_t)w->len;
    w->len = 0;
    return 0;
}

/* -- Segments -- */

static char *sr__segment_path(char *buf, size_t len, const char *dir, uint64_t seq)
{
    snprintf(buf, len, "%s/%020llu.wal", dir, (unsigned long long)seq);
    return buf;
}

static int sr__seq_of(const char *name, uint64_t *seq)
{
    char *end;
    unsigned long long v = strtoull(name, &end, 10);
    if (end == name || strcmp(end, ".wal") != 0) return 0;
    *seq = v;
    return 1;
}

static int sr__cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* The segment numbers in dir, sorted; *n of them (sr_free the array). */
static uint64_t *sr__segments(const char *dir, size_t *n)
{
    *n = 0;
    DIR *d = opendir(dir);
    if (!d) return NULL;
    uint64_t *seqs = NULL;
    size_t cap = 0;
    for (struct dirent *de; (de = readdir(d));) {
        uint64_t s;
        if (!sr__seq_of(de->d_name, &s)) continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            uint64_t *ns = sr_realloc(seqs, cap * sizeof(*ns));
            if (!ns) break;
            seqs = ns;
        }
        seqs[(*n)++] = s;
    }
    closedir(d);
    if (*n) qsort(seqs, *n, sizeof(*seqs), sr__cmp_u64);
    return seqs;
}

static int sr__open_segment(sr_wal_t *w, uint64_t seq)
{
    char path[4200];
    int fd = sr_io.open(sr__segment_path(path, sizeof(path), w->dir, seq),
                        O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) return -1;
    if (w->fd >= 0) sr_io.close(w->fd);
    w->fd = fd;
    w->seq = seq;
    struct stat st;
    w->file_len = fstat(fd, &st) == 0 ? st.st_size : 0;
    if (sr_io_fsync_dir(w->dir) < 0) w->err = errno;
    for (int i = 0; i < SR_WAL_MAX_SOURCES; i++)
        if (w->names[i]) {
            size_t n = strlen(w->names[i]);
            char *p = sr__entry(w, 3 + n);
            if (!p) return -1;
            p[0] = SR_WAL_SOURCE;
            sr__put(p + 1, (uint64_t)i, 2);
            memcpy(p + 3, w->names[i], n);
            sr__seal(p, 3 + n);
        }
    return 0;
}

sr_wal_t *sr_wal_open(const char *dir, char *err, size_t errlen)
{
    if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
        snprintf(err, errlen, "cannot create %s: %s", dir, strerror(errno));
        return NULL;
    }
    sr_wal_t *w = sr_calloc(1, sizeof(*w));
    if (!w || !(w->dir = sr_strdup(dir))) {
        sr_free(w);
        snprintf(err, errlen, "%s", sr_strerror(SR_ENOMEM));
        return NULL;
    }
    w->fd = -1;
    size_t n;
    uint64_t *seqs = sr__segments(dir, &n);
    uint64_t next = n ? seqs[n - 1] + 1 : 1;
    sr_free(seqs);
    char *p;
    if (sr__open_segment(w, next) < 0 || !(p = sr__entry(w, 1))) {
        snprintf(err, errlen, "cannot open a log segment in %s: %s", dir, strerror(errno));
        sr_wal_free(w);
        return NULL;
    }
    p[0] = SR_WAL_OPEN;
    sr__seal(p, 1);
    return w;
}

void sr_wal_free(sr_wal_t *w)
{
    if (!w) return;
    sr__flush(w);
    if (w->fd >= 0) sr_io.close(w->fd);
    for (int i = 0; i < SR_WAL_MAX_SOURCES; i++) sr_free(w->names[i]);
    sr_free(w->buf);
    sr_free(w->dir);
    sr_free(w);
}

int sr_wal_declare(sr_wal_t *w, int index, const char *name)
{
    if (index < 0 || index >= SR_WAL_MAX_SOURCES) { errno = EINVAL; return -1; }
    sr_free(w->names[index]);
    w->names[index] = sr_strdup(name);
    size_t n = strlen(name);
    char *p = sr__entry(w, 3 + n);
    if (!p) return -1;
    p[0] = SR_WAL_SOURCE;
    sr__put(p + 1, (uint64_t)index, 2);
    memcpy(p + 3, name, n);
    sr__seal(p, 3 + n);
    return 0;
}

/* Buffers an entry of type, index, a 64-bit number and bytes (R and F). */
static int sr__indexed(sr_wal_t *w, int type, int index, int64_t num, const char *data, size_t len)
{
    char *p = sr__entry(w, 11 + len);
    if (!p) return -1;
    p[0] = (char)type;
    sr__put(p + 1, (uint64_t)index, 2);
    sr__put(p + 3, (uint64_t)num, 8);
    memcpy(p + 11, data, len);
    sr__seal(p, 11 + len);
    if (w->len >= SR_WAL_FLUSH_AT) return sr__flush(w);
    return 0;
}

int sr_wal_record(sr_wal_t *w, int index, int64_t pos, const char *data, size_t len)
{
    return sr__indexed(w, SR_WAL_RECORD, index, pos, data, len);
}

int sr_wal_file(sr_wal_t *w, int index, int64_t inode, const char *name)
{
    return sr__indexed(w, SR_WAL_FILE, index, inode, name, strlen(name));
}

int sr_wal_flush(sr_wal_t *w) { return sr__flush(w); }

int sr_wal_batch(sr_wal_t *w, int64_t time_ms, const sr_wal_pos_t *pos, int npos)
{
    size_t n = 11 + (size_t)npos * 18;
    char *p = sr__entry(w, n);
    if (!p) return -1;
    p[0] = SR_WAL_BATCH;
    sr__put(p + 1, (uint64_t)time_ms, 8);
    sr__put(p + 9, (uint64_t)npos, 2);
    for (int i = 0; i < npos; i++) {
        char *q = p + 11 + (size_t)i * 18;
        sr__put(q, (uint64_t)pos[i].index, 2);
        sr__put(q + 2, (uint64_t)pos[i].offset, 8);
        sr__put(q + 10, pos[i].inode, 8);
    }
    sr__seal(p, n);
    if (sr__flush(w) < 0) return -1;
    if (sr_io.fdatasync(w->fd) < 0) {
        w->err = errno;
        return -1;
    }
    return 0;
}

uint64_t sr_wal_rotate(sr_wal_t *w)
{
    if (sr__flush(w) < 0) return 0;
    if (sr__open_segment(w, w->seq + 1) < 0) {
        w->err = errno;
        return 0;
    }
    /* The new segment must take its first entries; if it does not, it goes
     * (retries must not leave a file each) and the next try reuses its
     * number. */
    if (sr__flush(w) < 0) {
        char path[4200];
        unlink(sr__segment_path(path, sizeof(path), w->dir, w->seq));
        w->seq--;
        errno = w->err;
        return 0;
    }
    w->err = 0;
    return w->seq;
}

int sr_wal_drop_before(sr_wal_t *w, uint64_t seq)
{
    size_t n;
    uint64_t *seqs = sr__segments(w->dir, &n);
    int dropped = 0;
    for (size_t i = 0; i < n; i++) {
        if (seqs[i] >= seq) continue;
        char path[4200];
        if (unlink(sr__segment_path(path, sizeof(path), w->dir, seqs[i])) == 0) dropped++;
    }
    sr_free(seqs);
    return dropped;
}

int sr_wal_error(const sr_wal_t *w) { return w->err; }

/* -- Reading -- */

/* Calls fn for each whole, valid entry of the segment; returns the offset
 * where the valid entries end (the file's size when all are valid). */
static size_t sr__scan_segment(const char *data, size_t size, void (*fn)(void *, const sr_wal_entry_t *),
                               void *ud, long *count)
{
    size_t off = 0;
    sr_wal_pos_t pos[SR_WAL_MAX_SOURCES];
    while (off + 8 <= size) {
        size_t n = (size_t)sr__get(data + off, 4);
        uint32_t crc = (uint32_t)sr__get(data + off + 4, 4);
        if (n == 0 || n > size - off - 8) break;
        const char *p = data + off + 8;
        if (sr_crc32c(0, p, n) != crc) break;
        sr_wal_entry_t e;
        memset(&e, 0, sizeof(e));
        e.type = p[0];
        if (e.type == SR_WAL_SOURCE && n >= 3) {
            e.index = (int)sr__get(p + 1, 2);
            e.data = p + 3;
            e.len = n - 3;
        } else if ((e.type == SR_WAL_RECORD || e.type == SR_WAL_FILE) && n >= 11) {
            e.index = (int)sr__get(p + 1, 2);
            e.pos = (int64_t)sr__get(p + 3, 8);
            e.data = p + 11;
            e.len = n - 11;
        } else if (e.type == SR_WAL_OPEN && n == 1) {
            /* nothing more */
        } else if (e.type == SR_WAL_BATCH && n >= 11) {
            e.time_ms = (int64_t)sr__get(p + 1, 8);
            e.npos = (int)sr__get(p + 9, 2);
            if (e.npos > SR_WAL_MAX_SOURCES || n != 11 + (size_t)e.npos * 18) break;
            for (int i = 0; i < e.npos; i++) {
                const char *q = p + 11 + (size_t)i * 18;
                pos[i].index = (int)sr__get(q, 2);
                pos[i].offset = (int64_t)sr__get(q + 2, 8);
                pos[i].inode = sr__get(q + 10, 8);
            }
            e.positions = pos;
        } else {
            break;
        }
        fn(ud, &e);
        (*count)++;
        off += 8 + n;
    }
    return off;
}

long sr_wal_scan(const char *dir, void (*fn)(void *ud, const sr_wal_entry_t *e), void *ud,
                 char *note, size_t notelen)
{
    note[0] = '\0';
    size_t n;
    uint64_t *seqs = sr__segments(dir, &n);
    long count = 0;
    for (size_t i = 0; i < n; i++) {
        char path[4200];
        int fd = open(sr__segment_path(path, sizeof(path), dir, seqs[i]), O_RDWR | O_CLOEXEC);
        if (fd < 0) {
            snprintf(note, notelen, "cannot open %s: %s; the log after it is not read", path, strerror(errno));
            break;
        }
        struct stat st;
        size_t size = fstat(fd, &st) == 0 ? (size_t)st.st_size : 0;
        size_t good = 0;
        if (size) {
            void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
            if (map == MAP_FAILED) {
                close(fd);
                snprintf(note, notelen, "cannot map %s: %s", path, strerror(errno));
                sr_free(seqs);
                return -1;
            }
            good = sr__scan_segment(map, size, fn, ud, &count);
            munmap(map, size);
        }
        if (good < size) {
            if (i + 1 == n) {
                snprintf(note, notelen, "%s: torn or corrupt tail at offset %zu (%zu bytes) cut off", path, good,
                         size - good);
                if (ftruncate(fd, (off_t)good) < 0) { /* reported by the next read */ }
            } else {
                snprintf(note, notelen, "%s: corrupt at offset %zu; the log after it is not read", path, good);
                close(fd);
                break;
            }
        }
        close(fd);
    }
    sr_free(seqs);
    return count;
}
