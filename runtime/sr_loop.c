/* sr_loop: batch timer, signals and the run-until-batch-closes driver. */
#include "sr_loop.h"
#include "sr_alloc.h"
#include "sr_error.h"
#include "sr_stop.h"
#include "sr_wal.h"

#include <errno.h>
#include <ev.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

struct sr_loop {
    struct ev_loop *ev;
    ev_timer batch_timer;   /* fires when the batch in progress is due */
    ev_signal sigint, sigterm, sighup;
    sr_loop_opts_t opts;
    sr_source_t **sources;
    int nsources;
    sr_deadletter_t dead;
    sr_ingest_t ingest;     /* handed to every source: how it reports here */
    int64_t next_time_ms;   /* time of the batch in progress; 0 before start */
    int closing;            /* the batch in progress has closed */
    int stopping;           /* SIGINT/SIGTERM: the current batch is the last */
    int reload;             /* SIGHUP seen */
    int lua_active;
    sr_wal_t *wal;          /* owned; NULL when no checkpoint directory */
    ev_prepare wal_flush;   /* writes what was logged before the loop blocks */
    int wal_reported;       /* a WAL write error was logged */
    int wal_failed;         /* a WAL write failed since the last good rotation:
                               sources hold until a checkpoint covers it */
    int holding;            /* sr_loop_wait runs: sources do not read */
    struct sr__watch *watches; /* owned: files whose change asks for a reload */
    ev_timer watch_timer;      /* looks at them every 250 ms */
};

/* A watched file and what it looked like. libev's ev_stat compares times
 * in whole seconds, so a save of the same size within the same second
 * would go unseen: modification times are compared to the nanosecond. */
typedef struct sr__watch {
    char *path;
    struct timespec mtime;
    off_t size;
    ino_t ino;
    int exists;
    struct sr__watch *next;
} sr__watch_t;

static void sr__wal_failed(sr_loop_t *l, const char *what);
static int sr__loop_holds(void *ud);
static void sr__loop_log_record(void *ud, sr_source_t *s, int64_t pos, const char *line, size_t len);
static void sr__loop_log_file(void *ud, sr_source_t *s, int64_t inode, const char *name);

static void sr__loop_close_batch(sr_loop_t *l)
{
    l->closing = 1;
    ev_break(l->ev, EVBREAK_ONE);
}

static void sr__on_batch_timer(struct ev_loop *ev, ev_timer *w, int revents)
{
    (void)ev; (void)revents;
    sr__loop_close_batch(w->data);
}

/* Only stored input (files): batches follow each other without waiting for
 * the clock, each time one interval later. */
static int sr__fast_forward(const sr_loop_t *l)
{
    if (l->lua_active || !l->nsources) return 0;
    for (int i = 0; i < l->nsources; i++)
        if (!l->sources[i]->removed && !l->sources[i]->type->traits.stored && !l->sources[i]->stored) return 0;
    return 1;
}

/* Every source reads a regular file: a batch fills at once (a pipe's or a
 * device's may never), so a stop may let it fill. */
static int sr__regular_files(const sr_loop_t *l)
{
    if (l->lua_active || !l->nsources) return 0;
    for (int i = 0; i < l->nsources; i++)
        if (!l->sources[i]->removed && !l->sources[i]->stored) return 0;
    return 1;
}

static int sr__all_done(const sr_loop_t *l)
{
    if (l->lua_active) return 0;
    for (int i = 0; i < l->nsources; i++) {
        const sr_source_t *s = l->sources[i];
        if (!s->removed && (!s->type->traits.bounded || !s->done)) return 0;
    }
    return 1;
}

/* The ingest interface's callbacks (ud is the loop). */
static void sr__loop_wake(void *ud, sr_source_t *s)
{
    sr_loop_t *l = ud;
    if (sr_batch_full(&s->batch) || (s->done && sr__all_done(l))) sr__loop_close_batch(l);
}

static void sr__on_signal(struct ev_loop *ev, ev_signal *w, int revents)
{
    (void)ev; (void)revents;
    sr_loop_t *l = w->data;
    if (w->signum == SIGHUP) {
        l->reload = 1;
        return;
    }
    l->stopping = 1;
    /* A batch of regular files is not cut short: it fills as if no signal
     * had come (sr_loop_next), so a resumed run cuts its batches as one
     * that was never stopped. */
    if (!sr__regular_files(l)) sr__loop_close_batch(l);
}

sr_loop_t *sr_loop_new(const sr_loop_opts_t *o, char *err, size_t errlen)
{
    if (o->batch_ms <= 0) {
        snprintf(err, errlen, "batch interval must be positive");
        return NULL;
    }
    sr_loop_t *l = sr_calloc(1, sizeof(*l));
    if (!l) { snprintf(err, errlen, "%s", sr_strerror(SR_ENOMEM)); return NULL; }
    l->ev = ev_default_loop(EVFLAG_AUTO);
    if (!l->ev) {
        snprintf(err, errlen, "cannot initialize libev");
        sr_free(l);
        return NULL;
    }
    l->opts = *o;
    l->opts.dead_letter_path = NULL;
    if (sr_deadletter_open(&l->dead, o->dead_letter_path) < 0) {
        snprintf(err, errlen, "cannot open dead-letter file %s: %s", o->dead_letter_path,
                 strerror(errno));
        sr_free(l);
        return NULL;
    }
    sr_deadletter_set_rotation(&l->dead, o->dead_letter_max_bytes, o->dead_letter_keep);
    l->ingest = (sr_ingest_t){.ud = l, .wake = sr__loop_wake, .holds = sr__loop_holds,
                              .record = sr__loop_log_record, .file = sr__loop_log_file,
                              .dead = &l->dead};
    signal(SIGPIPE, SIG_IGN);
    ev_timer_init(&l->batch_timer, sr__on_batch_timer, 0., 0.);
    l->batch_timer.data = l;
    ev_signal *sigs[] = {&l->sigint, &l->sigterm, &l->sighup};
    int nums[] = {SIGINT, SIGTERM, SIGHUP};
    for (int i = 0; i < 3; i++) {
        ev_signal_init(sigs[i], sr__on_signal, nums[i]);
        sigs[i]->data = l;
        ev_signal_start(l->ev, sigs[i]);
        ev_unref(l->ev);
    }
    /* A stop signal that came before the loop (sr_stop noted it, or the
     * watchdog did for an earlier loop of the process): it stops now. */
    sr_stop_loop_started();
    if (sr_stop_requested()) l->stopping = 1;
    return l;
}

void sr_loop_free(sr_loop_t *l)
{
    if (!l) return;
    sr_loop_unwatch(l);
    for (int i = 0; i < l->nsources; i++) {
        sr_source_t *s = l->sources[i];
        if (!s->removed) s->type->stop(s);
        sr_batch_close(&s->batch);
        sr_linesplit_close(&s->split);
        sr_free(s->name);
        sr_free(s);
    }
    sr_free(l->sources);
    ev_timer_stop(l->ev, &l->batch_timer);
    ev_signal *sigs[] = {&l->sigint, &l->sigterm, &l->sighup};
    for (int i = 0; i < 3; i++) {
        ev_ref(l->ev);
        ev_signal_stop(l->ev, sigs[i]);
    }
    sr_deadletter_close(&l->dead);
    if (l->wal) {
        ev_ref(l->ev);
        ev_prepare_stop(l->ev, &l->wal_flush);
    }
    sr_wal_free(l->wal);
    sr_free(l);
}

int sr_loop_add_source(sr_loop_t *l, const sr_source_opts_t *o, char *err, size_t errlen)
{
    const sr_source_type_t *type = sr_source_type_find(o->kind);
    if (!type) {
        snprintf(err, errlen, "unknown source kind '%s'", o->kind);
        return SR_EINVAL;
    }
    sr_source_t **list = sr_realloc(l->sources, (size_t)(l->nsources + 1) * sizeof(*list));
    if (!list) goto nomem;
    l->sources = list;
    sr_source_t *s = sr_calloc(1, sizeof(*s));
    if (!s) goto nomem;
    s->name = sr_strdup(o->name ? o->name : o->kind);
    if (!s->name) { sr_free(s); goto nomem; }
    s->type = type;
    s->index = l->nsources;
    s->ingest = &l->ingest;
    s->ev = l->ev;
    sr_batch_init(&s->batch, l->opts.max_batch_records, l->opts.max_batch_bytes);
    sr_linesplit_init(&s->split, o->max_line, 0);
    int rc = type->start(s, o);
    if (rc < 0) {
        snprintf(err, errlen, "%s", s->err[0] ? s->err : sr_strerror(rc));
        sr_batch_close(&s->batch);
        sr_linesplit_close(&s->split);
        sr_free(s->name);
        sr_free(s);
        return rc;
    }
    l->sources[l->nsources++] = s;
    if (l->wal && sr_wal_declare(l->wal, s->index, s->name) < 0) sr__wal_failed(l, "source");
    return s->index;
nomem:
    snprintf(err, errlen, "%s", sr_strerror(SR_ENOMEM));
    return SR_ENOMEM;
}

int sr_loop_nsources(const sr_loop_t *l) { return l->nsources; }

sr_source_t *sr_loop_source(sr_loop_t *l, int index)
{
    return index >= 0 && index < l->nsources ? l->sources[index] : NULL;
}

sr_batch_t *sr_loop_batch(sr_loop_t *l, int index)
{
    sr_source_t *s = sr_loop_source(l, index);
    return s ? &s->batch : NULL;
}

void sr_loop_set_lua_active(sr_loop_t *l, int active) { l->lua_active = active; }

double sr_loop_now_ms(sr_loop_t *l)
{
    (void)l;
    return ev_time() * 1000.0;
}

/* What was read is not all in the log: the batch in progress closes, and
 * sources read nothing more until a rotation succeeds. */
static void sr__wal_failed(sr_loop_t *l, const char *what)
{
    if (!l->wal_failed) sr__loop_close_batch(l);
    l->wal_failed = 1;
    if (l->wal_reported) return;
    l->wal_reported = 1;
    fprintf(stderr, "streamrun: write-ahead log: %s: %s\n", what, strerror(sr_wal_error(l->wal) ? sr_wal_error(l->wal) : errno));
}

/* Logs the sealed batch with the positions of the sources that have one. */
static void sr__loop_log_batch(sr_loop_t *l, int64_t time_ms)
{
    sr_wal_pos_t pos[256];
    int n = 0;
    for (int i = 0; i < l->nsources && n < 256; i++) {
        sr_source_pos_t p;
        if (sr_source_position(l->sources[i], &p) == 0) {
            pos[n].index = i;
            pos[n].offset = p.offset;
            pos[n].inode = p.inode;
            n++;
        }
    }
    if (sr_wal_batch(l->wal, time_ms, pos, n) < 0) sr__wal_failed(l, "batch marker");
    else l->wal_reported = 0;
}

static void sr__on_prepare(struct ev_loop *ev, ev_prepare *w, int revents)
{
    (void)ev; (void)revents;
    sr_loop_t *l = w->data;
    if (sr_wal_flush(l->wal) < 0) sr__wal_failed(l, "records");
}

int sr_loop_set_wal(sr_loop_t *l, const char *dir, char *err, size_t errlen)
{
    l->wal = sr_wal_open(dir, err, errlen);
    if (!l->wal) return SR_EIO;
    /* Records read in one loop iteration reach the file before the next. */
    ev_prepare_init(&l->wal_flush, sr__on_prepare);
    l->wal_flush.data = l;
    ev_prepare_start(l->ev, &l->wal_flush);
    ev_unref(l->ev);
    for (int i = 0; i < l->nsources; i++)
        if (sr_wal_declare(l->wal, i, l->sources[i]->name) < 0) {
            snprintf(err, errlen, "write-ahead log in %s: %s", dir, strerror(errno));
            return SR_EIO;
        }
    return SR_OK;
}

uint64_t sr_loop_wal_rotate(sr_loop_t *l)
{
    if (!l->wal) return 0;
    uint64_t seq = sr_wal_rotate(l->wal);
    if (seq) l->wal_failed = l->wal_reported = 0;
    else sr__wal_failed(l, "new segment");
    return seq;
}

int sr_loop_wal_failed(const sr_loop_t *l) { return l->wal_failed; }

static int sr__loop_holds(void *ud)
{
    const sr_loop_t *l = ud;
    return l->holding || l->wal_failed;
}

int sr_loop_wal_drop_before(sr_loop_t *l, uint64_t seq) { return l->wal ? sr_wal_drop_before(l->wal, seq) : 0; }

static void sr__loop_log_record(void *ud, sr_source_t *s, int64_t pos, const char *line, size_t len)
{
    sr_loop_t *l = ud;
    if (!l->wal || !s->type->traits.logged) return;
    if (sr_wal_record(l->wal, s->index, pos, line, len) < 0) sr__wal_failed(l, "record");
}

static void sr__loop_log_file(void *ud, sr_source_t *s, int64_t inode, const char *name)
{
    sr_loop_t *l = ud;
    if (!l->wal) return;
    if (sr_wal_file(l->wal, s->index, inode, name) < 0) sr__wal_failed(l, "file");
}

int sr_loop_next(sr_loop_t *l, sr_tick_t *t)
{
    int64_t interval = l->opts.batch_ms;
    ev_now_update(l->ev); /* processing took time: timers start from now */
    double now = sr_loop_now_ms(l);
    int fast = sr__fast_forward(l);
    /* Stored input runs on a logical clock: batch k at k * interval, so a
     * run is the same whenever it starts (and after a restore). */
    if (l->next_time_ms == 0)
        l->next_time_ms = fast ? interval : ((int64_t)floor(now) / interval + 1) * interval;
    l->closing = l->wal_failed; /* sources hold: the batch closes at once */
    /* A stop ends the batch in progress, except one of regular files: that
     * one is read to its whole size first (it is at hand, and a batch cut
     * short would shift every later batch of a resumed run). */
    int fill = sr__regular_files(l);
    int cut = l->stopping && !fill;
    if (!cut && !(l->nsources && sr__all_done(l))) {
        double wait = (double)l->next_time_ms - now;
        if (fast) {
            /* no timer: the batch closes when full or when the input ends */
        } else if (wait > 0) {
            ev_timer_set(&l->batch_timer, wait / 1000.0, 0.);
            ev_timer_start(l->ev, &l->batch_timer);
        } else {
            l->closing = 1;
        }
        /* One non-blocking pass even when the batch is already due, so that
         * sources are read whenever processing runs behind. */
        ev_run(l->ev, EVRUN_NOWAIT);
        while (!l->closing && !(l->stopping && !fill)) ev_run(l->ev, EVRUN_ONCE);
        ev_timer_stop(l->ev, &l->batch_timer);
        /* A batch that filled early may run at most one interval ahead of
         * the clock, so records after a burst are not held back: wait with
         * sources unread (full ones do not read; sockets push back). */
        while (!fast && !l->stopping) {
            double ahead = (double)(l->next_time_ms - interval) - sr_loop_now_ms(l);
            if (ahead <= 0) break;
            ev_sleep(ahead > 50 ? 0.05 : ahead / 1000.0);
            ev_run(l->ev, EVRUN_NOWAIT);
        }
    }
    t->time_ms = l->next_time_ms;
    /* No marker while the log is failing: the batch's records may not all
     * be in it. A restart before the checkpoint that covers the batch
     * treats them as received after the last marker. */
    if (l->wal && !l->wal_failed) sr__loop_log_batch(l, t->time_ms);
    now = sr_loop_now_ms(l);
    /* On the logical clock of stored input no batch is late. */
    t->delay_ms = !sr__fast_forward(l) && now > (double)t->time_ms ? (int64_t)(now - (double)t->time_ms) : 0;
    t->last = l->stopping || (l->nsources && sr__all_done(l));
    t->reload = l->reload;
    l->reload = 0;
    l->next_time_ms += interval;
    return SR_OK;
}

void sr_loop_release(sr_loop_t *l)
{
    for (int i = 0; i < l->nsources; i++) sr_batch_clear(&l->sources[i]->batch);
}

void sr_loop_stop(sr_loop_t *l) { l->stopping = 1; }

void sr_loop_remove_source(sr_loop_t *l, int index)
{
    sr_source_t *s = sr_loop_source(l, index);
    if (!s || s->removed) return;
    s->type->stop(s);
    s->removed = 1;
    s->done = 1;
    sr_batch_clear(&s->batch);
}

void sr_loop_set_interval(sr_loop_t *l, int64_t batch_ms)
{
    if (batch_ms > 0) l->opts.batch_ms = batch_ms;
}

/* Whether the file changed since it was last looked at (and remembers it). */
static int sr__watch_changed(sr__watch_t *w)
{
    struct stat st;
    int exists = stat(w->path, &st) == 0;
    int changed = exists != w->exists ||
                  (exists && (st.st_mtim.tv_sec != w->mtime.tv_sec || st.st_mtim.tv_nsec != w->mtime.tv_nsec ||
                              st.st_size != w->size || st.st_ino != w->ino));
    w->exists = exists;
    if (exists) {
        w->mtime = st.st_mtim;
        w->size = st.st_size;
        w->ino = st.st_ino;
    }
    return changed;
}

static void sr__on_watch_timer(struct ev_loop *ev, ev_timer *t, int revents)
{
    (void)ev; (void)revents;
    sr_loop_t *l = t->data;
    for (sr__watch_t *w = l->watches; w; w = w->next)
        if (sr__watch_changed(w)) l->reload = 1;
}

int sr_loop_watch(sr_loop_t *l, const char *path)
{
    sr__watch_t *w = sr_calloc(1, sizeof(*w));
    if (!w || !(w->path = sr_strdup(path))) {
        sr_free(w);
        return SR_ENOMEM;
    }
    sr__watch_changed(w); /* as it is now */
    w->next = l->watches;
    if (!l->watches) {
        ev_timer_init(&l->watch_timer, sr__on_watch_timer, 0.25, 0.25);
        l->watch_timer.data = l;
        ev_timer_start(l->ev, &l->watch_timer);
        ev_unref(l->ev); /* watching alone must not keep ev_run going */
    }
    l->watches = w;
    return SR_OK;
}

void sr_loop_request_reload(sr_loop_t *l) { l->reload = 1; }

void sr_loop_unwatch(sr_loop_t *l)
{
    if (l->watches) {
        ev_ref(l->ev);
        ev_timer_stop(l->ev, &l->watch_timer);
    }
    while (l->watches) {
        sr__watch_t *w = l->watches;
        l->watches = w->next;
        sr_free(w->path);
        sr_free(w);
    }
}

int sr_loop_wait(sr_loop_t *l, int64_t ms)
{
    /* Sources are not read: during the sleep the loop does not run
     * (libev's signal handler only marks a signal), and in the one pass
     * that runs the signal callbacks every source holds. */
    ev_sleep((double)ms / 1000.0);
    l->holding = 1;
    ev_run(l->ev, EVRUN_NOWAIT);
    l->holding = 0;
    return l->stopping;
}

void sr_loop_set_next_time(sr_loop_t *l, int64_t time_ms) { l->next_time_ms = time_ms; }

int sr_loop_all_done(const sr_loop_t *l) { return l->nsources && sr__all_done(l); }

sr_deadletter_t *sr_loop_deadletter(sr_loop_t *l) { return &l->dead; }

void sr_loop_dead_letter(sr_loop_t *l, const char *source, int32_t partition, int64_t offset,
                         const char *reason, const char *record, size_t len)
{
    sr_deadletter_write_at(&l->dead, source, partition, offset, reason, record, len);
}

uint64_t sr_loop_dead_letters(const sr_loop_t *l) { return l->dead.count; }
