/* sr_source_file: text_file, reads one file once, line by line; bounded.
 * Batches hold exactly max_batch_records records (the rest of a read waits
 * for the next batch), so a file always cuts into the same batches, and a
 * checkpoint's offset resumes it at a batch boundary. A file that cannot be
 * opened when the source starts is an error of the job: it does not start.
 * Asked to (read_ahead: the only source of a job on two or more workers),
 * a thread cuts the next batch while the loop thread's is processed
 * (sr_readahead). */
#include "sr_alloc.h"
#include "sr_error.h"
#include "sr_readahead.h"
#include "sr_source.h"

#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SR_FILE_CHUNK (256 * 1024)

typedef struct sr__file {
    ev_idle reader;  /* reads a chunk per loop iteration until EOF */
    int fd;
    uint64_t inode;
    char *buf;
    size_t off, len; /* bytes of buf read but not fed yet */
    sr_readahead_t *ahead; /* or NULL: the loop thread reads */
} sr__file_t;

static void sr__file_finish(sr_source_t *s)
{
    sr__file_t *f = s->impl;
    ev_idle_stop(s->ev, &f->reader);
    sr_linesplit_finish(&s->split, 0, sr__source_line, s);
    sr__source_done(s);
}

/* Feeds what is left of the last read; 1 if the batch filled first. */
static int sr__file_feed(sr_source_t *s, sr__file_t *f)
{
    long used = sr_linesplit_feed(&s->split, f->buf + f->off, f->len, sr__source_line, s);
    if (used < 0) used = (long)f->len;
    f->off += (size_t)used;
    f->len -= (size_t)used;
    return f->len > 0;
}

static void sr__file_dead(void *ud, int64_t pos, const char *reason, const char *data, size_t len)
{
    sr__source_dead(ud, pos, reason, data, len);
}

/* With a read-ahead thread: takes its batch when it is ready, as the loop
 * thread would have read it (records, dead letters, position), else waits
 * for it (the idle watcher stops until the thread says it is ready). */
static void sr__file_take(sr_source_t *s, sr__file_t *f)
{
    int64_t end = 0;
    int eof = 0;
    if (!sr_readahead_take(f->ahead, &s->batch, sr__file_dead, s, &end, &eof)) {
        ev_idle_stop(s->ev, &f->reader);
        return;
    }
    /* (A text_file's records are not logged, so the ingest's record
     * callback has nothing to do for them: it is not called.) */
    s->records += s->batch.n;
    s->split.pos = s->split.line_pos = end;
    s->split.len = 0;
    if (eof) {
        ev_idle_stop(s->ev, &f->reader);
        sr__source_done(s);
    } else if (sr_batch_full(&s->batch)) {
        s->ingest->wake(s->ingest->ud, s);
    }
}

static void sr__file_ready(void *ud)
{
    sr_source_t *s = ud;
    sr__file_t *f = s->impl;
    if (f && !s->done) ev_idle_start(s->ev, &f->reader);
}

static void sr__file_on_idle(struct ev_loop *ev, ev_idle *w, int revents)
{
    (void)ev; (void)revents;
    sr_source_t *s = w->data;
    sr__file_t *f = s->impl;
    if (sr__source_waits(s)) return; /* until the batch is released, or the hold ends */
    if (f->ahead) {
        sr__file_take(s, f);
        return;
    }
    if (f->len) {
        sr__file_feed(s, f);
        return;
    }
    ssize_t n = read(f->fd, f->buf, SR_FILE_CHUNK);
    if (n < 0 && errno == EINTR) return;
    if (n < 0) {
        char reason[300];
        snprintf(reason, sizeof(reason), "read error: %s", strerror(errno));
        sr__source_dead(s, s->split.pos, reason, "", 0);
        sr__file_finish(s);
        return;
    }
    if (n == 0) {
        sr__file_finish(s);
        return;
    }
    f->off = 0;
    f->len = (size_t)n;
    sr__file_feed(s, f);
}

static int sr__file_start(sr_source_t *s, const sr_source_opts_t *o)
{
    if (!o->path) {
        snprintf(s->err, sizeof(s->err), "text_file needs a path");
        return SR_EINVAL;
    }
    /* A file that is not there is the job's error, not a record's: the job
     * does not start (nothing of it would ever be read). */
    int fd = open(o->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(s->err, sizeof(s->err), "text_file %s: %s", o->path, strerror(errno));
        return SR_ENOENT;
    }
    sr__file_t *f = sr_calloc(1, sizeof(*f));
    if (f) f->buf = sr_malloc(SR_FILE_CHUNK);
    if (!f || !f->buf) {
        if (f) sr_free(f);
        close(fd);
        return SR_ENOMEM;
    }
    f->fd = fd;
    s->impl = f;
    ev_idle_init(&f->reader, sr__file_on_idle);
    f->reader.data = s;
    struct stat st;
    int regular = 0;
    if (fstat(f->fd, &st) == 0) {
        f->inode = (uint64_t)st.st_ino;
        regular = S_ISREG(st.st_mode);
    }
    s->stored = regular; /* (a pipe's batch may never fill: see sr_loop) */
    if (o->start_offset > 0) {
        if (o->start_inode && o->start_inode != f->inode) {
            sr__source_log(s, "%s is not the file the checkpoint read (inode %llu, now %llu): reading it from the start",
                           o->path, (unsigned long long)o->start_inode, (unsigned long long)f->inode);
        } else if (lseek(f->fd, o->start_offset, SEEK_SET) == o->start_offset) {
            sr_linesplit_init(&s->split, s->split.max_line, o->start_offset);
        }
    }
    /* (Without a thread, the loop thread reads, as with one worker; so it
     * does a pipe or a device, whose read may block: a thread blocked there
     * could not be stopped.) */
    if (o->read_ahead && regular)
        f->ahead = sr_readahead_start(s->ev, f->fd, &s->batch, s->split.max_line, s->split.pos, sr__file_ready, s);
    ev_idle_start(s->ev, &f->reader);
    return SR_OK;
}

static void sr__file_position(sr_source_t *s, sr_source_pos_t *pos)
{
    sr__file_t *f = s->impl;
    /* Bytes of a line not complete yet are read again on resume. */
    pos->offset = sr_linesplit_resume_pos(&s->split);
    pos->inode = f ? f->inode : 0;
}

static void sr__file_stop(sr_source_t *s)
{
    sr__file_t *f = s->impl;
    if (!f) return;
    ev_idle_stop(s->ev, &f->reader);
    sr_readahead_free(f->ahead);
    if (f->fd >= 0) close(f->fd);
    sr_free(f->buf);
    sr_free(f);
    s->impl = NULL;
}

const sr_source_type_t sr_source_text_file = {
    .kind = "text_file",
    .traits = {.bounded = 1, .stored = 1, .logged = 0, .rereads = 1, .resumes = 1, .file_list = 0},
    .start = sr__file_start, .stop = sr__file_stop,
    .position = sr__file_position,
};

/* -- Replay -- */

typedef struct sr__range {
    sr_batch_t *out;
    int failed;
} sr__range_t;

static int sr__range_line(void *ud, const char *line, size_t len, int64_t pos, int status)
{
    sr__range_t *r = ud;
    /* Over-long lines were dead letters the first time: not again. */
    if (status == 0 && sr_batch_append(r->out, line, len, pos) < 0) r->failed = 1;
    return 0;
}

int sr_source_file_read_range(const char *path, uint64_t inode, int64_t start, int64_t end,
                              size_t max_line, sr_batch_t *out, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (inode && fstat(fd, &st) == 0 && (uint64_t)st.st_ino != inode) {
        snprintf(err, errlen, "%s is not the file the log read (inode %llu, now %llu)", path,
                 (unsigned long long)inode, (unsigned long long)st.st_ino);
        close(fd);
        return -1;
    }
    sr_linesplit_t ls;
    sr_linesplit_init(&ls, max_line, start);
    sr__range_t r = {out, 0};
    char buf[65536];
    int64_t at = start;
    while (at < end && !r.failed) {
        size_t want = (size_t)(end - at) < sizeof(buf) ? (size_t)(end - at) : sizeof(buf);
        ssize_t n = pread(fd, buf, want, at);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            snprintf(err, errlen, "%s ends at byte %lld, before the logged %lld", path, (long long)at, (long long)end);
            sr_linesplit_close(&ls);
            close(fd);
            return -1;
        }
        sr_linesplit_feed(&ls, buf, (size_t)n, sr__range_line, &r);
        at += n;
    }
    /* A last line without a newline ends the range at the end of the file. */
    sr_linesplit_finish(&ls, 0, sr__range_line, &r);
    sr_linesplit_close(&ls);
    close(fd);
    if (r.failed) {
        snprintf(err, errlen, "%s", sr_strerror(SR_ENOMEM));
        return -1;
    }
    return 0;
}
