/* sr_readahead: a thread that cuts the next batch of a file's lines while
 * the loop thread's batch is processed. One batch ahead at most: the thread
 * fills its batch until it is full or the file ends, marks it ready, wakes
 * the loop (ev_async) and waits until the loop thread takes it, swapping in
 * the emptied buffers of the batch before. Dead letters wait with the batch
 * they belong to, so they are written when it is taken, as before. Each
 * read waits for a CPU the workers leave (sr_workers_wait_for_cpu). */
#include "sr_readahead.h"
#include "sr_alloc.h"
#include "sr_error.h"
#include "sr_linesplit.h"
#include "sr_workers.h"

#include <errno.h>
#include <ev.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define SR__RA_CHUNK (256 * 1024)

typedef struct sr__ra_dead {
    int64_t pos;
    char *reason; /* owned */
    char *data;   /* owned */
    size_t len;
} sr__ra_dead_t;

typedef struct sr__ra_letters {
    sr__ra_dead_t *d;
    size_t n, cap;
} sr__ra_letters_t;

struct sr_readahead {
    struct ev_loop *ev;
    ev_async async;
    void (*ready_fn)(void *ud);
    void *ud;
    int fd;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* Under mu: */
    int ready;    /* batch, letters, end_pos and eof are the loop thread's to take */
    int stopping; /* sr_readahead_free: the thread ends */
    /* The thread's while !ready, the loop thread's while ready: */
    sr_batch_t batch;
    sr__ra_letters_t letters;
    int64_t end_pos;
    int eof;
    /* The thread's alone: */
    sr_linesplit_t split;
    char *buf;
    size_t off, len; /* bytes of buf read but not cut yet */
};

static void sr__letters_free(sr__ra_letters_t *l)
{
    for (size_t i = 0; i < l->n; i++) {
        sr_free(l->d[i].reason);
        sr_free(l->d[i].data);
    }
    sr_free(l->d);
    memset(l, 0, sizeof(*l));
}

/* Keeps a dead letter for the batch (a copy: the bytes are the read
 * buffer's). Out of memory, its data is dropped; the letter is kept if at
 * all possible. */
static void sr__letter(sr_readahead_t *ra, int64_t pos, const char *reason, const char *data, size_t len)
{
    sr__ra_letters_t *l = &ra->letters;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        sr__ra_dead_t *d = sr_realloc(l->d, cap * sizeof(*d));
        if (!d) return;
        l->d = d;
        l->cap = cap;
    }
    sr__ra_dead_t *e = &l->d[l->n];
    e->pos = pos;
    e->reason = sr_strdup(reason);
    e->data = len ? sr_malloc(len) : NULL;
    e->len = e->data ? len : 0;
    if (e->data) memcpy(e->data, data, len);
    if (!e->reason) {
        sr_free(e->data);
        return;
    }
    l->n++;
}

/* An sr_line_fn into the thread's batch, as sr__source_line does for a
 * source of stored input: 1 once the batch is full. */
static int sr__ra_line(void *ud, const char *line, size_t len, int64_t pos, int status)
{
    sr_readahead_t *ra = ud;
    if (status != 0) {
        sr__letter(ra, pos, sr_strerror(status), line, len);
        return 0;
    }
    if (sr_batch_append(&ra->batch, line, len, pos) < 0) {
        sr__letter(ra, pos, sr_strerror(SR_ENOMEM), line, len);
        return 0;
    }
    return sr_batch_full(&ra->batch);
}

static int sr__stopping(sr_readahead_t *ra)
{
    pthread_mutex_lock(&ra->mu);
    int s = ra->stopping;
    pthread_mutex_unlock(&ra->mu);
    return s;
}

/* Fills the thread's batch until it is full or the file ends (eof: the
 * last line without a newline included, as sr_source_file finishes). */
static void sr__fill(sr_readahead_t *ra)
{
    while (!sr_batch_full(&ra->batch)) {
        if (ra->len == 0) {
            if (sr__stopping(ra)) return;
            sr_workers_wait_for_cpu();
            ssize_t n = read(ra->fd, ra->buf, SR__RA_CHUNK);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) {
                if (n < 0) {
                    char reason[300];
                    snprintf(reason, sizeof(reason), "read error: %s", strerror(errno));
                    sr__letter(ra, ra->split.pos, reason, "", 0);
                }
                sr_linesplit_finish(&ra->split, 0, sr__ra_line, ra);
                ra->eof = 1;
                break;
            }
            ra->off = 0;
            ra->len = (size_t)n;
        }
        long used = sr_linesplit_feed(&ra->split, ra->buf + ra->off, ra->len, sr__ra_line, ra);
        if (used < 0) used = (long)ra->len;
        ra->off += (size_t)used;
        ra->len -= (size_t)used;
    }
    /* Bytes of a line not complete yet are read again on resume. */
    ra->end_pos = sr_linesplit_resume_pos(&ra->split);
}

static void *sr__ra_thread(void *p)
{
    sr_readahead_t *ra = p;
    pthread_mutex_lock(&ra->mu);
    for (;;) {
        while (!ra->stopping && ra->ready) pthread_cond_wait(&ra->cv, &ra->mu);
        if (ra->stopping || ra->eof) break;
        pthread_mutex_unlock(&ra->mu);
        sr__fill(ra);
        pthread_mutex_lock(&ra->mu);
        if (ra->stopping) break;
        ra->ready = 1;
        ev_async_send(ra->ev, &ra->async);
    }
    pthread_mutex_unlock(&ra->mu);
    return NULL;
}

static void sr__on_ready(struct ev_loop *ev, ev_async *w, int revents)
{
    (void)ev; (void)revents;
    sr_readahead_t *ra = w->data;
    ra->ready_fn(ra->ud);
}

sr_readahead_t *sr_readahead_start(struct ev_loop *ev, int fd, const sr_batch_t *like, size_t max_line,
                                   int64_t start_pos, void (*ready)(void *ud), void *ud)
{
    sr_readahead_t *ra = sr_calloc(1, sizeof(*ra));
    if (!ra) return NULL;
    ra->buf = sr_malloc(SR__RA_CHUNK);
    if (!ra->buf) {
        sr_free(ra);
        return NULL;
    }
    ra->ev = ev;
    ra->fd = fd;
    ra->ready_fn = ready;
    ra->ud = ud;
    sr_batch_init(&ra->batch, like->max_records, like->max_bytes);
    sr_linesplit_init(&ra->split, max_line, start_pos);
    pthread_mutex_init(&ra->mu, NULL);
    pthread_cond_init(&ra->cv, NULL);
    ev_async_init(&ra->async, sr__on_ready);
    ra->async.data = ra;
    ev_async_start(ev, &ra->async);
    /* The thread starts with every signal blocked: they stay with the loop
     * thread, whose handlers expect to run there. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&ra->thread, NULL, sr__ra_thread, ra);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        ev_async_stop(ev, &ra->async);
        pthread_cond_destroy(&ra->cv);
        pthread_mutex_destroy(&ra->mu);
        sr_batch_close(&ra->batch);
        sr_linesplit_close(&ra->split);
        sr_free(ra->buf);
        sr_free(ra);
        return NULL;
    }
    return ra;
}

int sr_readahead_take(sr_readahead_t *ra, sr_batch_t *b, sr_readahead_dead_fn dead, void *ud,
                      int64_t *end_pos, int *eof)
{
    if (b->n != 0) return 0;
    pthread_mutex_lock(&ra->mu);
    if (!ra->ready) {
        pthread_mutex_unlock(&ra->mu);
        return 0;
    }
    sr_batch_t mine = *b;
    *b = ra->batch;
    ra->batch = mine;
    sr_batch_clear(&ra->batch);
    sr__ra_letters_t letters = ra->letters;
    memset(&ra->letters, 0, sizeof(ra->letters));
    *end_pos = ra->end_pos;
    *eof = ra->eof;
    ra->ready = 0;
    pthread_cond_signal(&ra->cv);
    pthread_mutex_unlock(&ra->mu);
    for (size_t i = 0; i < letters.n; i++)
        dead(ud, letters.d[i].pos, letters.d[i].reason, letters.d[i].data ? letters.d[i].data : "", letters.d[i].len);
    sr__letters_free(&letters);
    return 1;
}

void sr_readahead_free(sr_readahead_t *ra)
{
    if (!ra) return;
    pthread_mutex_lock(&ra->mu);
    ra->stopping = 1;
    pthread_cond_signal(&ra->cv);
    pthread_mutex_unlock(&ra->mu);
    pthread_join(ra->thread, NULL);
    ev_async_stop(ra->ev, &ra->async);
    pthread_cond_destroy(&ra->cv);
    pthread_mutex_destroy(&ra->mu);
    sr_batch_close(&ra->batch);
    sr_linesplit_close(&ra->split);
    sr__letters_free(&ra->letters);
    sr_free(ra->buf);
    sr_free(ra);
}
