/* sr_source_dir: text_dir, as Spark's textFileStream: each regular file that
 * appears in a directory is read whole, line by line, once; unbounded. */

/* Unlike Spark, files already in the directory at start are read too.
 * Names starting with '.' or '_' are files still being written and are
 * skipped: producers write under such a name and rename when done (a file
 * written in place may be read before it is complete). Within one scan,
 * files are read in name order. The names read are remembered for the
 * source's life (a file deleted and recreated under the same name is not
 * read again) and across restarts: its position is the file taken up last
 * with the byte offset in it, plus the names of the files it is done with;
 * a restart resumes that file (if it is still the same inode) and skips
 * those. Each file taken up is logged to the write-ahead log before its
 * lines, so recovery can tell what was taken since the checkpoint. */
#include "sr_alloc.h"
#include "sr_error.h"
#include "sr_source.h"

#include <dirent.h>
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SR_DIR_CHUNK (64 * 1024)
#define SR_DIR_POLL 0.25 /* seconds between scans when no event comes */

/* A growable array of owned names. */
typedef struct sr__names {
    char **v;
    size_t n, cap;
} sr__names_t;

typedef struct sr__dir {
    ev_stat watch;       /* changes of the directory (inotify where available) */
    ev_timer poll;       /* fallback: scan again every SR_DIR_POLL */
    ev_idle reader;      /* reads a chunk per loop iteration while files wait */
    char *path;          /* owned; ev_stat keeps a pointer to it */
    sr__names_t seen;    /* every name queued so far, sorted */
    sr__names_t queue;   /* names still to read, in order (borrowed from seen) */
    sr__names_t done;    /* names of files done with, sorted (borrowed from seen) */
    size_t next;         /* queue.v[next] is the next file to open */
    int fd;              /* file being read, or -1 */
    const char *cur;     /* the file taken up last (borrowed from seen), or NULL */
    uint64_t cur_inode;
    const char *resume;  /* the file to resume at resume_offset (borrowed), or NULL */
    int64_t resume_offset;
    uint64_t resume_inode;
    size_t max_line;
    int missing;         /* we logged that the directory is gone */
    char buf[SR_DIR_CHUNK];
} sr__dir_t;

/* -- Name sets -- */

/* Appends name (ownership taken only on success). Returns 0 or SR_ENOMEM. */
static int sr__names_push(sr__names_t *ns, char *name)
{
    if (ns->n == ns->cap) {
        size_t cap = ns->cap ? ns->cap * 2 : 16;
        char **v = sr_realloc(ns->v, cap * sizeof(*v));
        if (!v) return SR_ENOMEM;
        ns->v = v;
        ns->cap = cap;
    }
    ns->v[ns->n++] = name;
    return SR_OK;
}

/* Index of the first name >= name in a sorted set. */
static size_t sr__names_lower(const sr__names_t *ns, const char *name)
{
    size_t lo = 0, hi = ns->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(ns->v[mid], name) < 0) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

static int sr__names_has(const sr__names_t *ns, const char *name)
{
    size_t i = sr__names_lower(ns, name);
    return i < ns->n && strcmp(ns->v[i], name) == 0;
}

/* Inserts name into a sorted set (ownership taken only on success).
 * Returns 0 or SR_ENOMEM. */
static int sr__names_insert(sr__names_t *ns, char *name)
{
    size_t i = sr__names_lower(ns, name);
    if (sr__names_push(ns, name) < 0) return SR_ENOMEM;
    memmove(ns->v + i + 1, ns->v + i, (ns->n - 1 - i) * sizeof(*ns->v));
    ns->v[i] = name;
    return SR_OK;
}

static void sr__names_free(sr__names_t *ns, int owned)
{
    if (owned)
        for (size_t i = 0; i < ns->n; i++) sr_free(ns->v[i]);
    sr_free(ns->v);
    memset(ns, 0, sizeof(*ns));
}

static int sr__names_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* -- Scanning -- */

static int sr__dir_wanted(const char *name)
{
    return name[0] != '.' && name[0] != '_';
}

/* Lists the directory and queues the regular files not seen before, in name
 * order. Returns 0, or a negative SR_E* with errno set when the directory
 * cannot be read. */
static int sr__dir_scan(sr_source_t *s)
{
    sr__dir_t *d = s->impl;
    DIR *dir = opendir(d->path);
    if (!dir) return SR_EIO;
    sr__names_t found = {0};
    struct dirent *e;
    int rc = SR_OK;
    while ((e = readdir(dir)) != NULL) {
        if (!sr__dir_wanted(e->d_name) || sr__names_has(&d->seen, e->d_name)) continue;
        struct stat st;
        if (fstatat(dirfd(dir), e->d_name, &st, 0) < 0 || !S_ISREG(st.st_mode)) continue;
        char *name = sr_strdup(e->d_name);
        if (!name || sr__names_push(&found, name) < 0) {
            sr_free(name);
            rc = SR_ENOMEM;
            break;
        }
    }
    closedir(dir);
    if (found.n) qsort(found.v, found.n, sizeof(*found.v), sr__names_cmp);
    size_t queued = 0;
    for (; queued < found.n; queued++) {
        char *name = found.v[queued];
        /* The queue grows first so that a name in seen is always queued. */
        if (sr__names_push(&d->queue, name) < 0) { rc = SR_ENOMEM; break; }
        if (sr__names_insert(&d->seen, name) < 0) {
            d->queue.n--;
            rc = SR_ENOMEM;
            break;
        }
    }
    for (size_t i = queued; i < found.n; i++) sr_free(found.v[i]);
    sr__names_free(&found, 0);
    if (rc == SR_ENOMEM) sr__source_log(s, "out of memory while scanning %s", d->path);
    if (d->next < d->queue.n) ev_idle_start(s->ev, &d->reader);
    return SR_OK;
}

static void sr__dir_rescan(sr_source_t *s)
{
    sr__dir_t *d = s->impl;
    if (sr__dir_scan(s) < 0) {
        if (!d->missing) sr__source_log(s, "cannot read %s: %s", d->path, strerror(errno));
        d->missing = 1;
        return;
    }
    if (d->missing) sr__source_log(s, "%s readable again", d->path);
    d->missing = 0;
}

/* -- Reading -- */

/* Marks name done with (it is in seen); returns 0 or SR_ENOMEM. */
static int sr__dir_mark_done(sr__dir_t *d, const char *name)
{
    if (sr__names_has(&d->done, name)) return SR_OK;
    return sr__names_insert(&d->done, (char *)name);
}

/* The file to resume is opened where the checkpoint left it, if it is
 * still the same file. */
static void sr__dir_resume(sr_source_t *s, const char *path, struct stat *st)
{
    sr__dir_t *d = s->impl;
    d->resume = NULL;
    if (d->resume_inode && (uint64_t)st->st_ino != d->resume_inode) {
        sr__source_log(s, "%s is not the file the checkpoint read (inode %llu, now %llu): reading it from the start",
                       path, (unsigned long long)d->resume_inode, (unsigned long long)st->st_ino);
    } else if (lseek(d->fd, d->resume_offset, SEEK_SET) == d->resume_offset) {
        sr_linesplit_init(&s->split, d->max_line, d->resume_offset);
    }
}

/* Opens the next queued file, taking it up (logged before any of its
 * lines). Returns 1 when one is open, 0 when the queue is empty. A file
 * that cannot be opened is a dead letter and done with. */
static int sr__dir_open_next(sr_source_t *s)
{
    sr__dir_t *d = s->impl;
    while (d->next < d->queue.n) {
        const char *name = d->queue.v[d->next++];
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", d->path, name);
        d->fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
        struct stat st;
        if (d->fd >= 0 && fstat(d->fd, &st) == 0) {
            if (d->cur && sr__dir_mark_done(d, d->cur) < 0)
                sr__source_log(s, "out of memory: %s is not remembered as read", d->cur);
            d->cur = name;
            d->cur_inode = (uint64_t)st.st_ino;
            sr__source_file(s, (int64_t)st.st_ino, name);
            sr_linesplit_close(&s->split);
            sr_linesplit_init(&s->split, d->max_line, 0);
            if (name == d->resume) sr__dir_resume(s, path, &st);
            return 1;
        }
        char reason[4200];
        snprintf(reason, sizeof(reason), "cannot open %s: %s", path, strerror(errno));
        if (d->fd >= 0) close(d->fd);
        d->fd = -1;
        if (name == d->resume) d->resume = NULL;
        sr__source_file(s, -1, name);
        if (sr__dir_mark_done(d, name) < 0) sr__source_log(s, "out of memory: %s is not remembered as read", name);
        sr__source_log(s, "%s", reason);
        sr__source_dead(s, 0, reason, "", 0);
    }
    /* Everything queued is read: the queue's memory can go. */
    d->queue.n = 0;
    d->next = 0;
    return 0;
}

static void sr__dir_on_idle(struct ev_loop *ev, ev_idle *w, int revents)
{
    (void)revents;
    sr_source_t *s = w->data;
    sr__dir_t *d = s->impl;
    if (sr__source_waits(s)) return; /* until the batch is released, or the hold ends */
    if (d->fd < 0 && !sr__dir_open_next(s)) {
        ev_idle_stop(ev, w);
        return;
    }
    ssize_t n = read(d->fd, d->buf, sizeof(d->buf));
    if (n > 0) {
        sr_linesplit_feed(&s->split, d->buf, (size_t)n, sr__source_line, s);
        return;
    }
    if (n < 0 && errno == EINTR) return;
    if (n < 0) {
        char reason[300];
        snprintf(reason, sizeof(reason), "read error: %s", strerror(errno));
        sr__source_dead(s, s->split.pos, reason, "", 0);
    }
    /* End of this file: its last line needs no newline. It is done with
     * (a checkpoint lists it so: a restart after it was deleted does not
     * look for it), and stays the position's file until the next. */
    sr_linesplit_finish(&s->split, 0, sr__source_line, s);
    close(d->fd);
    d->fd = -1;
    if (d->cur && sr__dir_mark_done(d, d->cur) < 0)
        sr__source_log(s, "out of memory: %s is not remembered as read", d->cur);
}

static void sr__dir_on_stat(struct ev_loop *ev, ev_stat *w, int revents)
{
    (void)ev; (void)revents;
    sr__dir_rescan(w->data);
}

static void sr__dir_on_poll(struct ev_loop *ev, ev_timer *w, int revents)
{
    (void)ev; (void)revents;
    sr__dir_rescan(w->data);
}

/* -- Registration -- */

static void sr__dir_free(sr_source_t *s)
{
    sr__dir_t *d = s->impl;
    sr__names_free(&d->queue, 0);
    sr__names_free(&d->done, 0);
    sr__names_free(&d->seen, 1);
    sr_free(d->path);
    sr_free(d);
    s->impl = NULL;
}

/* Adds name to seen (a copy) and returns the copy; NULL when out of
 * memory or already there. */
static const char *sr__dir_remember(sr__dir_t *d, const char *name)
{
    if (sr__names_has(&d->seen, name)) return NULL;
    char *copy = sr_strdup(name);
    if (!copy || sr__names_insert(&d->seen, copy) < 0) {
        sr_free(copy);
        return NULL;
    }
    return copy;
}

/* Takes over where a checkpoint left the source: the files done with are
 * not read again, the one taken up last is read first from its offset.
 * Returns 0 or SR_ENOMEM. */
static int sr__dir_restore(sr__dir_t *d, const sr_source_opts_t *o)
{
    for (size_t i = 0; i < o->ndone; i++) {
        const char *name = sr__dir_remember(d, o->done_files[i]);
        if (name && sr__names_insert(&d->done, (char *)name) < 0) return SR_ENOMEM;
    }
    if (o->start_file && *o->start_file) {
        const char *name = sr__dir_remember(d, o->start_file);
        if (!name) return sr__names_has(&d->seen, o->start_file) ? SR_OK : SR_ENOMEM;
        if (sr__names_push(&d->queue, (char *)name) < 0) return SR_ENOMEM;
        d->resume = name;
        d->resume_offset = o->start_offset;
        d->resume_inode = o->start_inode;
    }
    return SR_OK;
}

static int sr__dir_start(sr_source_t *s, const sr_source_opts_t *o)
{
    if (!o->path || !*o->path) {
        snprintf(s->err, sizeof(s->err), "text_dir needs a path");
        return SR_EINVAL;
    }
    struct stat st;
    int err = stat(o->path, &st) < 0 ? errno : S_ISDIR(st.st_mode) ? 0 : ENOTDIR;
    if (err) {
        snprintf(s->err, sizeof(s->err), "text_dir %s: %s", o->path, strerror(err));
        return SR_ENOENT;
    }
    sr__dir_t *d = sr_calloc(1, sizeof(*d));
    if (!d) return SR_ENOMEM;
    d->path = sr_strdup(o->path);
    if (!d->path) { sr_free(d); return SR_ENOMEM; }
    d->fd = -1;
    d->max_line = o->max_line;
    s->impl = d;
    ev_stat_init(&d->watch, sr__dir_on_stat, d->path, 0.);
    d->watch.data = s;
    ev_timer_init(&d->poll, sr__dir_on_poll, SR_DIR_POLL, SR_DIR_POLL);
    d->poll.data = s;
    ev_idle_init(&d->reader, sr__dir_on_idle);
    d->reader.data = s;
    if (sr__dir_restore(d, o) < 0) {
        sr__dir_free(s);
        return SR_ENOMEM;
    }
    if (sr__dir_scan(s) < 0) {
        snprintf(s->err, sizeof(s->err), "text_dir %s: %s", o->path, strerror(errno));
        ev_idle_stop(s->ev, &d->reader);
        sr__dir_free(s);
        return SR_EIO;
    }
    ev_stat_start(s->ev, &d->watch);
    ev_timer_start(s->ev, &d->poll);
    return SR_OK;
}

static void sr__dir_stop(sr_source_t *s)
{
    sr__dir_t *d = s->impl;
    if (!d) return;
    ev_idle_stop(s->ev, &d->reader);
    ev_timer_stop(s->ev, &d->poll);
    ev_stat_stop(s->ev, &d->watch);
    if (d->fd >= 0) close(d->fd);
    sr__dir_free(s);
}

/* The file taken up last and the byte after its last whole line delivered
 * (the checkpoint's while the file to resume is not open yet). */
static void sr__dir_position(sr_source_t *s, sr_source_pos_t *pos)
{
    sr__dir_t *d = s->impl;
    if (d && d->resume) { /* not opened again yet */
        pos->file = d->resume;
        pos->inode = d->resume_inode;
        pos->offset = d->resume_offset;
        return;
    }
    if (!d || !d->cur) return;
    pos->file = d->cur;
    pos->inode = d->cur_inode;
    pos->offset = sr_linesplit_resume_pos(&s->split);
}

const sr_source_type_t sr_source_text_dir = {
    .kind = "text_dir",
    .traits = {.bounded = 0, .stored = 0, .logged = 1, .rereads = 0, .resumes = 1, .file_list = 1},
    .start = sr__dir_start, .stop = sr__dir_stop,
    .position = sr__dir_position,
};

const char *sr_source_done_file(sr_source_t *s, size_t i)
{
    if (s->type != &sr_source_text_dir || !s->impl) return NULL;
    sr__dir_t *d = s->impl;
    return i < d->done.n ? d->done.v[i] : NULL;
}
