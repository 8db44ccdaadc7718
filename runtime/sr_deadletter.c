/* sr_deadletter: the dead-letter output as JSON lines, rotated at a size. */
#include "sr_deadletter.h"
#include "sr_alloc.h"
#include "sr_error.h"
#include "sr_outfile.h"
#include "sr_utf8.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* -- Opening and rotation -- */

/* Opens dl->path. Returns 0 or SR_EIO (errno set). */
static int sr__reopen(sr_deadletter_t *dl)
{
    int64_t size;
    int fd = sr_outfile_open(dl->path, &size);
    if (fd < 0) return SR_EIO;
    dl->fd = fd;
    dl->size = size < 0 ? 0 : size;
    return SR_OK;
}

int sr_deadletter_open(sr_deadletter_t *dl, const char *path)
{
    int rc = SR_ENOMEM;
    memset(dl, 0, sizeof(*dl));
    dl->fd = STDERR_FILENO;
    dl->max_bytes = SR_DEADLETTER_MAX_BYTES;
    dl->keep = SR_DEADLETTER_KEEP;
    dl->line = open_memstream(&dl->buf, &dl->buflen);
    if (!dl->line) goto fail;
    if (!path || strcmp(path, "-") == 0) return SR_OK;
    dl->path = sr_strdup(path);
    if (!dl->path) goto fail;
    dl->fd = -1;
    rc = sr__reopen(dl);
    if (rc < 0) goto fail;
    return SR_OK;
fail:;
    int saved = errno;
    sr_deadletter_close(dl);
    errno = saved;
    return rc;
}

const sr_dltally_t *sr_deadletter_tally(const sr_deadletter_t *dl) { return &dl->tally; }

void sr_deadletter_set_rotation(sr_deadletter_t *dl, int64_t max_bytes, int keep)
{
    dl->max_bytes = max_bytes < 0 ? 0 : max_bytes;
    dl->keep = keep < 0 ? 0 : keep;
}

void sr_deadletter_close(sr_deadletter_t *dl)
{
    sr_deadletter_expect_end(dl);
    if (dl->path && dl->fd >= 0) sr_outfile_close(dl->fd);
    dl->fd = -1;
    sr_free(dl->path);
    dl->path = NULL;
    if (dl->line) fclose(dl->line);
    dl->line = NULL;
    sr_dltally_close(&dl->tally);
    free(dl->buf); /* open_memstream's, from malloc */
    dl->buf = NULL;
}

/* Shifts path.(keep-1) to path.keep, ..., path to path.1 and opens a new
 * path. Returns 0 or SR_EIO (errno set). */
static int sr__rotate(sr_deadletter_t *dl)
{
    char from[PATH_MAX], to[PATH_MAX];
    for (int i = dl->keep; i >= 1; i--) {
        if (i == 1) snprintf(from, sizeof(from), "%s", dl->path);
        else snprintf(from, sizeof(from), "%s.%d", dl->path, i - 1);
        snprintf(to, sizeof(to), "%s.%d", dl->path, i);
        if (rename(from, to) < 0 && errno != ENOENT) return SR_EIO;
    }
    if (dl->keep == 0 && unlink(dl->path) < 0 && errno != ENOENT) return SR_EIO;
    sr_outfile_close(dl->fd);
    dl->fd = -1;
    return sr__reopen(dl);
}

/* -- Writing -- */

void sr_json_write_string(FILE *fp, const char *s, size_t len)
{
    fputc('"', fp);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        switch (c) {
        case '"': fputs("\\\"", fp); break;
        case '\\': fputs("\\\\", fp); break;
        case '\n': fputs("\\n", fp); break;
        case '\r': fputs("\\r", fp); break;
        case '\t': fputs("\\t", fp); break;
        default:
            if (c >= 0x80) {
                int valid;
                size_t n = sr_utf8_next(s + i, len - i, &valid);
                if (valid) fwrite(s + i, 1, n, fp);
                else fputs(SR_UTF8_REPLACEMENT, fp);
                i += n - 1;
            } else if (c < 0x20 || c == 0x7f) {
                fprintf(fp, "\\u%04x", c);
            } else {
                fputc(c, fp);
            }
        }
    }
    fputc('"', fp);
}

/* Reports a failing write once per streak (nowhere to say it when the
 * dead letters go to stderr). */
static void sr__failed(sr_deadletter_t *dl, const char *what, int err)
{
    dl->lost++;
    if (dl->failing) return;
    dl->failing = 1;
    if (dl->path)
        fprintf(stderr, "streamrun: dead-letter file %s: %s: %s; dead letters are lost until it works again\n",
                dl->path, what, strerror(err));
}

/* -- Recovery: the letters written after a checkpoint -- */

/* The letters written after a checkpoint, sorted by hash. */
typedef struct sr__key {
    uint64_t hash;
    size_t off, len; /* the line in sr__expected.bytes */
    int taken;
} sr__key_t;

struct sr__expected {
    char *bytes;
    sr__key_t *keys;
    size_t n;
};

static uint64_t sr__hash(const char *p, size_t n)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)p[i]) * 1099511628211ULL;
    return h;
}

static int sr__key_cmp(const void *a, const void *b)
{
    uint64_t x = ((const sr__key_t *)a)->hash, y = ((const sr__key_t *)b)->hash;
    return x < y ? -1 : x > y;
}

/* The hash of the (up to 64) bytes of file path (inode ino) before byte
 * at, which must end a line (or be 0). Returns 0, or -1 when it is
 * another file, shorter, or at is not at a line's end. */
static int sr__tail_hash(const char *path, uint64_t ino, int64_t at, uint64_t *hash)
{
    char tail[64];
    size_t k = at < (int64_t)sizeof(tail) ? (size_t)at : sizeof(tail);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    struct stat st;
    ssize_t r = -1;
    if (fstat(fd, &st) == 0 && (uint64_t)st.st_ino == ino && st.st_size >= at) {
        do r = pread(fd, tail, k, (off_t)(at - (int64_t)k));
        while (r < 0 && errno == EINTR);
    }
    close(fd);
    if (r != (ssize_t)k || (k > 0 && tail[k - 1] != '\n')) return -1;
    *hash = sr__hash(tail, k);
    return 0;
}

int sr_deadletter_mark(const sr_deadletter_t *dl, int64_t *bytes, uint64_t *ino, uint64_t *tail)
{
    struct stat st;
    if (!dl->path || dl->fd < 0 || fstat(dl->fd, &st) != 0) return -1;
    *bytes = (int64_t)st.st_size;
    *ino = (uint64_t)st.st_ino;
    return sr__tail_hash(dl->path, *ino, *bytes, tail);
}

/* The file's size now when it is still the one marked (inode, and the
 * bytes before the mark) and holds more than bytes, else -1. (Inodes are
 * reused: a file rotated away may leave its number to a new one.) */
static int64_t sr__past_mark(const sr_deadletter_t *dl, int64_t bytes, uint64_t ino, uint64_t tail)
{
    struct stat st;
    uint64_t h;
    if (bytes < 0 || !dl->path || dl->fd < 0 || fstat(dl->fd, &st) != 0 || (uint64_t)st.st_ino != ino ||
        st.st_size <= bytes || sr__tail_hash(dl->path, ino, bytes, &h) != 0 || h != tail)
        return -1;
    return (int64_t)st.st_size;
}

int sr_deadletter_cut_back(sr_deadletter_t *dl, int64_t bytes, uint64_t ino, uint64_t tail)
{
    if (sr__past_mark(dl, bytes, ino, tail) < 0) return SR_OK;
    if (sr_outfile_cut(dl->fd, bytes) < 0) return SR_EIO;
    dl->size = bytes;
    return SR_OK;
}

int64_t sr_deadletter_expect(sr_deadletter_t *dl, int64_t bytes, uint64_t ino, uint64_t tail)
{
    sr_deadletter_expect_end(dl);
    int64_t now = sr__past_mark(dl, bytes, ino, tail);
    if (now < 0) return 0;
    size_t n = (size_t)(now - bytes);
    struct sr__expected *e = calloc(1, sizeof(*e));
    char *buf = malloc(n);
    if (!e || !buf) {
        free(e);
        free(buf);
        return SR_ENOMEM;
    }
    e->bytes = buf;
    dl->expected = e;
    /* (The file is open for appending only: read it through a new
     * descriptor; sr__past_mark just found it the file marked.) */
    int fd = open(dl->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        sr_deadletter_expect_end(dl);
        return SR_EIO;
    }
    for (size_t got = 0; got < n;) {
        ssize_t r = pread(fd, buf + got, n - got, (off_t)(bytes + (int64_t)got));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            close(fd);
            sr_deadletter_expect_end(dl);
            return SR_EIO;
        }
        got += (size_t)r;
    }
    close(fd);
    /* A torn last line (a write the kill cut short) goes, or the next
     * letter would be written onto it. */
    size_t whole = n;
    while (whole > 0 && buf[whole - 1] != '\n') whole--;
    if (whole < n) {
        if (sr_outfile_cut(dl->fd, bytes + (int64_t)whole) < 0) {
            sr_deadletter_expect_end(dl);
            return SR_EIO;
        }
        dl->size = bytes + (int64_t)whole;
        n = whole;
    }
    size_t lines = 0;
    for (size_t i = 0; i < n; i++) lines += buf[i] == '\n';
    e->keys = calloc(lines ? lines : 1, sizeof(*e->keys));
    if (!e->keys) {
        sr_deadletter_expect_end(dl);
        return SR_ENOMEM;
    }
    for (size_t start = 0, i = 0; i < n; i++) {
        if (buf[i] != '\n') continue;
        sr__key_t *k = &e->keys[e->n++];
        k->off = start;
        k->len = i + 1 - start;
        k->hash = sr__hash(buf + start, k->len);
        start = i + 1;
    }
    qsort(e->keys, e->n, sizeof(*e->keys), sr__key_cmp);
    return (int64_t)e->n;
}

void sr_deadletter_expect_end(sr_deadletter_t *dl)
{
    struct sr__expected *e = dl->expected;
    if (!e) return;
    free(e->bytes);
    free(e->keys);
    free(e);
    dl->expected = NULL;
}

/* Whether letter p[0..n) is expected (and now taken). */
static int sr__take_expected(struct sr__expected *e, const char *p, size_t n)
{
    uint64_t h = sr__hash(p, n);
    size_t lo = 0, hi = e->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (e->keys[mid].hash < h) lo = mid + 1;
        else hi = mid;
    }
    for (size_t i = lo; i < e->n && e->keys[i].hash == h; i++) {
        sr__key_t *k = &e->keys[i];
        if (!k->taken && k->len == n && memcmp(e->bytes + k->off, p, n) == 0) {
            k->taken = 1;
            return 1;
        }
    }
    return 0;
}

void sr_deadletter_write(sr_deadletter_t *dl, const char *source, int64_t offset,
                         const char *reason, const char *record, size_t len)
{
    sr_deadletter_write_at(dl, source, -1, offset, reason, record, len);
}

void sr_deadletter_write_at(sr_deadletter_t *dl, const char *source, int32_t partition, int64_t offset,
                            const char *reason, const char *record, size_t len)
{
    dl->count++;
    if (!dl->line) return;
    sr_dltally_add(&dl->tally, source, offset, reason, record, len);
    rewind(dl->line);
    fputs("{\"dead_letter\":true,\"source\":", dl->line);
    sr_json_write_string(dl->line, source, strlen(source));
    if (partition >= 0) fprintf(dl->line, ",\"partition\":%d", (int)partition);
    fprintf(dl->line, ",\"offset\":%lld,\"reason\":", (long long)offset);
    sr_json_write_string(dl->line, reason, strlen(reason));
    fputs(",\"record\":", dl->line);
    sr_json_write_string(dl->line, record ? record : "", record ? len : 0);
    fputs("}\n", dl->line);
    off_t n = ftello(dl->line);
    if (fflush(dl->line) != 0 || ferror(dl->line) || n < 0) {
        clearerr(dl->line);
        sr__failed(dl, "cannot build a line", ENOMEM);
        return;
    }
    if (dl->expected && sr__take_expected(dl->expected, dl->buf, (size_t)n)) return;
    if (dl->fd < 0 && sr__reopen(dl) < 0) {
        sr__failed(dl, "cannot open", errno);
        return;
    }
    size_t written;
    if (sr_outfile_write(dl->fd, dl->buf, (size_t)n, &written) < 0) {
        int err = errno;
        if (dl->path) sr_outfile_cut(dl->fd, dl->size); /* no torn line */
        sr__failed(dl, "cannot write", err);
        return;
    }
    if (dl->failing && dl->path)
        fprintf(stderr, "streamrun: dead-letter file %s written again; %llu dead letters were lost\n", dl->path,
                (unsigned long long)dl->lost);
    dl->failing = 0;
    dl->lost = 0;
    dl->size += n;
    if (!dl->path || dl->max_bytes == 0 || dl->size < dl->max_bytes) return;
    if (sr__rotate(dl) == 0) {
        dl->rotate_failing = 0;
    } else if (!dl->rotate_failing) {
        /* Written on where it is (or reopened by the next write), and
         * rotated by a later one. */
        dl->rotate_failing = 1;
        fprintf(stderr, "streamrun: dead-letter file %s: cannot rotate: %s\n", dl->path, strerror(errno));
    }
}
