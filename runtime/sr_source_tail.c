/* sr_source_tail: tail, follows a growing file as `tail -F` does, through
 * rotation and truncation; unbounded. */

/* Starts at the end of the existing content (at the start of its last,
 * unfinished line if it has one), or at the beginning with from_start.
 * Rotation (the path names another file) and truncation (the file shrank)
 * are followed: the old file is read to its end, then the new content from
 * its start. A path that does not exist yet is waited for and then read
 * from its start. A partial last line is held until its newline arrives;
 * when the file is rotated or truncated, it is delivered as the old file's
 * last line. Offsets are byte offsets within the file being read. */
#include "sr_alloc.h"
#include "sr_error.h"
#include "sr_source.h"

#include <dirent.h>
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SR_TAIL_CHUNK (64 * 1024)
#define SR_TAIL_POLL 0.25    /* seconds between checks when no event comes */
#define SR_TAIL_BACKSCAN 65536 /* how far back to look for the last newline */

typedef struct sr__tail {
    ev_stat watch;         /* changes of the path (inotify where available) */
    ev_timer poll;         /* fallback: look again every SR_TAIL_POLL */
    ev_idle reader;        /* reads a chunk per loop iteration while there is data */
    char *path;            /* owned; ev_stat keeps a pointer to it */
    int fd;                /* -1 while the file does not exist */
    dev_t dev;             /* identity of the file fd reads */
    ino_t ino;
    off_t offset;          /* bytes of fd read so far */
    size_t max_line;
    int waiting;           /* we logged that the path is missing */
    int64_t resume_offset; /* a checkpoint's: where to resume the file... */
    uint64_t resume_inode; /* ... if it is still this one */
    char buf[SR_TAIL_CHUNK];
} sr__tail_t;

/* Where to start in an existing file when not reading it from the start:
 * just after its last newline, so that a line still being written comes
 * whole; at the end if there is none within SR_TAIL_BACKSCAN bytes. */
static off_t sr__tail_end_offset(int fd, off_t size, char *buf)
{
    off_t base = size > SR_TAIL_BACKSCAN ? size - SR_TAIL_BACKSCAN : 0;
    ssize_t n = pread(fd, buf, (size_t)(size - base), base);
    if (n <= 0) return size;
    for (ssize_t i = n; i > 0; i--)
        if (buf[i - 1] == '\n') return base + i;
    return base == 0 ? 0 : size;
}

/* The file a resumed position names, renamed away beside the path while
 * the job was down (rotated: log.txt -> log.txt.1): opened into *st, or -1
 * when the path's directory holds no such file (deleted, or truncated in
 * place: its lines after the position are gone). name gets its name. */
static int sr__tail_open_rotated(const sr__tail_t *t, dev_t dev, struct stat *st, char *name, size_t len)
{
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s", t->path);
    char *slash = strrchr(dir, '/');
    if (slash == dir) slash[1] = '\0';
    else if (slash) *slash = '\0';
    else snprintf(dir, sizeof(dir), ".");
    DIR *d = opendir(dir);
    if (!d) return -1;
    int fd = -1;
    for (struct dirent *e; fd < 0 && (e = readdir(d));) {
        if ((uint64_t)e->d_ino != t->resume_inode) continue;
        int n = snprintf(name, len, "%s/%s", dir, e->d_name);
        if (n < 0 || (size_t)n >= len) continue;
        fd = open(name, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
        if (fd >= 0 && (fstat(fd, st) < 0 || st->st_dev != dev || (uint64_t)st->st_ino != t->resume_inode ||
                        !S_ISREG(st->st_mode) || st->st_size < t->resume_offset)) {
            close(fd);
            fd = -1;
        }
    }
    closedir(d);
    return fd;
}

/* Opens the path (at its end, or its start). Returns 1 when open, 0 when
 * the file is not there (logged once). */
static int sr__tail_open(sr_source_t *s, int at_end)
{
    sr__tail_t *t = s->impl;
    int fd = open(t->path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        if (!t->waiting)
            sr__source_log(s, "waiting for %s to appear (%s)", t->path, strerror(errno));
        t->waiting = 1;
        return 0;
    }
    struct stat st;
    int err = fstat(fd, &st) < 0 ? errno : S_ISDIR(st.st_mode) ? EISDIR : 0;
    if (err) {
        if (!t->waiting) sr__source_log(s, "cannot follow %s: %s", t->path, strerror(err));
        t->waiting = 1;
        close(fd);
        return 0;
    }
    if (t->waiting) sr__source_log(s, "%s appeared", t->path);
    t->waiting = 0;
    off_t offset = at_end && S_ISREG(st.st_mode) ? sr__tail_end_offset(fd, st.st_size, t->buf) : 0;
    if (t->resume_inode) {
        /* Resuming: the same file continues where the checkpoint or log
         * left it. Rotated meanwhile, the old file is read to its end
         * first if it is still beside the path (then, as when a rotation
         * is seen running, the path's file from its start); else the
         * path's file is read from its start. */
        char old[4200];
        struct stat ost;
        int ofd;
        if ((uint64_t)st.st_ino == t->resume_inode && t->resume_offset <= st.st_size) {
            offset = t->resume_offset;
        } else if ((uint64_t)st.st_ino != t->resume_inode &&
                   (ofd = sr__tail_open_rotated(t, st.st_dev, &ost, old, sizeof(old))) >= 0) {
            sr__source_log(s, "%s was rotated while the job was down; reading the rest of %s first", t->path, old);
            close(fd);
            fd = ofd;
            st = ost;
            offset = t->resume_offset;
        } else {
            offset = 0;
        }
        t->resume_inode = 0;
    }
    t->fd = fd;
    t->dev = st.st_dev;
    t->ino = st.st_ino;
    t->offset = offset;
    if (t->offset) lseek(fd, t->offset, SEEK_SET);
    sr_linesplit_close(&s->split);
    sr_linesplit_init(&s->split, t->max_line, t->offset);
    return 1;
}

/* Reads the old file to its end (ignoring the batch limit: this is the last
 * of it), delivers a partial last line, and closes it. */
static void sr__tail_drain(sr_source_t *s)
{
    sr__tail_t *t = s->impl;
    for (;;) {
        ssize_t n = read(t->fd, t->buf, sizeof(t->buf));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        t->offset += n;
        sr_linesplit_feed(&s->split, t->buf, (size_t)n, sr__source_line, s);
    }
    sr_linesplit_finish(&s->split, 0, sr__source_line, s);
    close(t->fd);
    t->fd = -1;
}

/* At the end of what fd holds: has the path moved on to another file, or
 * has the file been truncated? If so, switches to the new content and
 * returns 1; returns 0 when there is simply nothing new yet. */
static int sr__tail_check_rotation(sr_source_t *s)
{
    sr__tail_t *t = s->impl;
    struct stat now, cur;
    if (fstat(t->fd, &cur) < 0) return 0;
    int exists = stat(t->path, &now) == 0;
    /* Another file under the path: renamed away (same inode impossible while
     * the old one exists) or deleted (nlink 0) and recreated. */
    if (exists && (now.st_dev != t->dev || now.st_ino != t->ino || cur.st_nlink == 0)) {
        sr__tail_drain(s);
        sr__source_log(s, "%s was rotated; reading the new file from its start", t->path);
        if (!sr__tail_open(s, 0)) return 0;
        return 1;
    }
    if (S_ISREG(cur.st_mode) && cur.st_size < t->offset) {
        sr_linesplit_finish(&s->split, 0, sr__source_line, s);
        sr__source_log(s, "%s was truncated; reading it from its start", t->path);
        lseek(t->fd, 0, SEEK_SET);
        t->offset = 0;
        sr_linesplit_close(&s->split);
        sr_linesplit_init(&s->split, t->max_line, 0);
        return 1;
    }
    return 0;
}

static void sr__tail_on_idle(struct ev_loop *ev, ev_idle *w, int revents)
{
    (void)revents;
    sr_source_t *s = w->data;
    sr__tail_t *t = s->impl;
    if (sr__source_waits(s)) return; /* until the batch is released, or the hold ends */
    if (t->fd < 0 && !sr__tail_open(s, 0)) {
        ev_idle_stop(ev, w);
        return;
    }
    ssize_t n = read(t->fd, t->buf, sizeof(t->buf));
    if (n > 0) {
        t->offset += n;
        sr_linesplit_feed(&s->split, t->buf, (size_t)n, sr__source_line, s);
        return;
    }
    if (n < 0 && errno == EINTR) return;
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
        sr__source_log(s, "read error on %s: %s", t->path, strerror(errno));
    if (!sr__tail_check_rotation(s)) ev_idle_stop(ev, w);
}

static void sr__tail_wake(sr_source_t *s)
{
    sr__tail_t *t = s->impl;
    ev_idle_start(s->ev, &t->reader);
}

static void sr__tail_on_stat(struct ev_loop *ev, ev_stat *w, int revents)
{
    (void)ev; (void)revents;
    sr__tail_wake(w->data);
}

static void sr__tail_on_poll(struct ev_loop *ev, ev_timer *w, int revents)
{
    (void)ev; (void)revents;
    sr__tail_wake(w->data);
}

/* -- Registration -- */

static int sr__tail_start(sr_source_t *s, const sr_source_opts_t *o)
{
    if (!o->path || !*o->path) {
        snprintf(s->err, sizeof(s->err), "tail needs a path");
        return SR_EINVAL;
    }
    sr__tail_t *t = sr_calloc(1, sizeof(*t));
    if (!t) return SR_ENOMEM;
    t->path = sr_strdup(o->path);
    if (!t->path) { sr_free(t); return SR_ENOMEM; }
    t->fd = -1;
    t->max_line = o->max_line;
    /* A position of a path that did not exist (offset -1): whatever it is
     * now came since, so it is read from its start. */
    int missing = o->start_offset < 0;
    t->resume_offset = missing ? 0 : o->start_offset;
    t->resume_inode = missing ? 0 : o->start_inode;
    s->impl = t;
    ev_stat_init(&t->watch, sr__tail_on_stat, t->path, 0.);
    t->watch.data = s;
    ev_timer_init(&t->poll, sr__tail_on_poll, SR_TAIL_POLL, SR_TAIL_POLL);
    t->poll.data = s;
    ev_idle_init(&t->reader, sr__tail_on_idle);
    t->reader.data = s;
    /* A file that does not exist yet is read from its start once it does. */
    sr__tail_open(s, !o->from_start && !missing);
    ev_stat_start(s->ev, &t->watch);
    ev_timer_start(s->ev, &t->poll);
    ev_idle_start(s->ev, &t->reader);
    return SR_OK;
}

static void sr__tail_stop(sr_source_t *s)
{
    sr__tail_t *t = s->impl;
    if (!t) return;
    ev_idle_stop(s->ev, &t->reader);
    ev_timer_stop(s->ev, &t->poll);
    ev_stat_stop(s->ev, &t->watch);
    if (t->fd >= 0) close(t->fd);
    sr_free(t->path);
    sr_free(t);
    s->impl = NULL;
}

/* Where the file stands: the byte after the last whole line delivered;
 * before a resumed position is taken up, that position; offset -1 while
 * the path names no file (a restart reads what appears there from its
 * start, as this run would). */
static void sr__tail_position(sr_source_t *s, sr_source_pos_t *pos)
{
    sr__tail_t *t = s->impl;
    if (!t) return;
    if (t->fd < 0) {
        pos->offset = t->resume_inode ? t->resume_offset : -1;
        pos->inode = t->resume_inode;
        return;
    }
    pos->offset = sr_linesplit_resume_pos(&s->split);
    pos->inode = (uint64_t)t->ino;
}

const sr_source_type_t sr_source_tail = {
    .kind = "tail",
    .traits = {.bounded = 0, .stored = 0, .logged = 1, .rereads = 0, .resumes = 1, .file_list = 0},
    .start = sr__tail_start, .stop = sr__tail_stop,
    .position = sr__tail_position,
};
