/* sr_source_socket: socket_text, a TCP client reading one record per line
 * (Spark's socketTextStream); unbounded, reconnects with backoff. */

/* A failed or closed connection is retried after 100 ms, doubling up to 5 s,
 * back to 100 ms once a connection is made. A connection that closes
 * mid-line leaves the partial line as a dead letter. Offsets count every
 * byte received, across connections, so they only grow. */
#include "sr_alloc.h"
#include "sr_error.h"
#include "sr_source.h"

#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define SR_SOCKET_CHUNK (64 * 1024)
#define SR_SOCKET_BACKOFF_MIN 0.1
#define SR_SOCKET_BACKOFF_MAX 5.0

typedef struct sr__socket {
    ev_io io;              /* EV_WRITE while connecting, then EV_READ */
    ev_timer retry;        /* the next connection attempt */
    char *host;            /* owned */
    char port[16];
    struct addrinfo *addrs;    /* of the attempt in progress (getaddrinfo's) */
    struct addrinfo *next_addr; /* to try when the current one fails */
    int fd;                /* -1 when not connected */
    int connected;
    double backoff;        /* seconds to wait before the next attempt */
    char buf[SR_SOCKET_CHUNK];
} sr__socket_t;

static void sr__socket_connect(sr_source_t *s);

/* -- Connection life -- */

static void sr__socket_close_fd(sr_source_t *s)
{
    sr__socket_t *k = s->impl;
    ev_io_stop(s->ev, &k->io);
    if (k->fd >= 0) close(k->fd);
    k->fd = -1;
    k->connected = 0;
}

static void sr__socket_free_addrs(sr__socket_t *k)
{
    if (k->addrs) freeaddrinfo(k->addrs);
    k->addrs = k->next_addr = NULL;
}

/* Waits for the backoff, then tries again; the next wait is twice as long. */
static void sr__socket_schedule(sr_source_t *s)
{
    sr__socket_t *k = s->impl;
    sr__socket_free_addrs(k);
    ev_timer_stop(s->ev, &k->retry);
    ev_timer_set(&k->retry, k->backoff, 0.);
    ev_timer_start(s->ev, &k->retry);
    k->backoff *= 2;
    if (k->backoff > SR_SOCKET_BACKOFF_MAX) k->backoff = SR_SOCKET_BACKOFF_MAX;
}

/* The connection ended (EOF or error): a partial line is a dead letter, the
 * splitter starts clean for the next connection, and we reconnect. */
static void sr__socket_lost(sr_source_t *s, const char *why)
{
    sr__socket_t *k = s->impl;
    sr_linesplit_finish(&s->split, SR_ECLOSED, sr__source_line, s);
    sr__socket_close_fd(s);
    sr__source_log(s, "connection to %s:%s %s; reconnecting in %.0f ms", k->host, k->port,
                   why, k->backoff * 1000);
    sr__socket_schedule(s);
}

static void sr__socket_on_read(struct ev_loop *ev, ev_io *w, int revents)
{
    (void)ev; (void)revents;
    sr_source_t *s = w->data;
    sr__socket_t *k = s->impl;
    if (sr__source_waits(s)) return; /* until the batch is released, or the hold ends */
    ssize_t n = recv(k->fd, k->buf, sizeof(k->buf), 0);
    if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) return;
    if (n < 0) {
        char why[128];
        snprintf(why, sizeof(why), "failed: %s", strerror(errno));
        sr__socket_lost(s, why);
        return;
    }
    if (n == 0) {
        sr__socket_lost(s, "closed");
        return;
    }
    sr_linesplit_feed(&s->split, k->buf, (size_t)n, sr__source_line, s);
}

static void sr__socket_established(sr_source_t *s)
{
    sr__socket_t *k = s->impl;
    sr__socket_free_addrs(k);
    k->connected = 1;
    k->backoff = SR_SOCKET_BACKOFF_MIN;
    sr__source_log(s, "connected to %s:%s", k->host, k->port);
    ev_io_stop(s->ev, &k->io);
    ev_io_set(&k->io, k->fd, EV_READ);
    ev_set_cb(&k->io, sr__socket_on_read);
    ev_io_start(s->ev, &k->io);
}

/* Every address of this attempt failed (the last with err). */
static void sr__socket_failed(sr_source_t *s, int err)
{
    sr__socket_t *k = s->impl;
    sr__socket_close_fd(s);
    sr__source_log(s, "cannot connect to %s:%s: %s; retrying in %.0f ms", k->host, k->port,
                   strerror(err), k->backoff * 1000);
    sr__socket_schedule(s);
}

/* Starts a non-blocking connect to the next address of k->addrs. Returns 0
 * when one is in progress or made, or an errno when none is left. */
static int sr__socket_try_next(sr_source_t *s, int last_err)
{
    sr__socket_t *k = s->impl;
    while (k->next_addr) {
        struct addrinfo *a = k->next_addr;
        k->next_addr = a->ai_next;
        int fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                        a->ai_protocol);
        if (fd < 0) { last_err = errno; continue; }
        if (connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
            k->fd = fd;
            sr__socket_established(s);
            return 0;
        }
        if (errno == EINPROGRESS) {
            k->fd = fd;
            ev_io_set(&k->io, fd, EV_WRITE);
            ev_io_start(s->ev, &k->io);
            return 0;
        }
        last_err = errno;
        close(fd);
    }
    return last_err ? last_err : ECONNREFUSED;
}

static void sr__socket_on_connect(struct ev_loop *ev, ev_io *w, int revents)
{
    (void)ev; (void)revents;
    sr_source_t *s = w->data;
    sr__socket_t *k = s->impl;
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(k->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
    if (err == 0) {
        sr__socket_established(s);
        return;
    }
    sr__socket_close_fd(s);
    ev_set_cb(&k->io, sr__socket_on_connect);
    err = sr__socket_try_next(s, err);
    if (err) sr__socket_failed(s, err);
}

/* Resolves the host and starts the first connection attempt. */
static void sr__socket_connect(sr_source_t *s)
{
    sr__socket_t *k = s->impl;
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV,
    };
    sr__socket_free_addrs(k);
    ev_set_cb(&k->io, sr__socket_on_connect);
    int rc = getaddrinfo(k->host, k->port, &hints, &k->addrs);
    if (rc != 0) {
        k->addrs = NULL;
        sr__source_log(s, "cannot resolve %s: %s; retrying in %.0f ms", k->host,
                       gai_strerror(rc), k->backoff * 1000);
        sr__socket_schedule(s);
        return;
    }
    k->next_addr = k->addrs;
    int err = sr__socket_try_next(s, 0);
    if (err) sr__socket_failed(s, err);
}

static void sr__socket_on_retry(struct ev_loop *ev, ev_timer *w, int revents)
{
    (void)ev; (void)revents;
    sr__socket_connect(w->data);
}

/* -- Registration -- */

static int sr__socket_start(sr_source_t *s, const sr_source_opts_t *o)
{
    if (!o->host || !*o->host || o->port <= 0 || o->port > 65535) {
        snprintf(s->err, sizeof(s->err), "socket_text needs a host and a port in 1..65535");
        return SR_EINVAL;
    }
    sr__socket_t *k = sr_calloc(1, sizeof(*k));
    if (!k) return SR_ENOMEM;
    k->host = sr_strdup(o->host);
    if (!k->host) { sr_free(k); return SR_ENOMEM; }
    snprintf(k->port, sizeof(k->port), "%d", o->port);
    k->fd = -1;
    k->backoff = SR_SOCKET_BACKOFF_MIN;
    ev_init(&k->io, sr__socket_on_connect);
    k->io.data = s;
    ev_init(&k->retry, sr__socket_on_retry);
    k->retry.data = s;
    s->impl = k;
    /* A server that is not up yet is not an error: we keep trying. */
    sr__socket_connect(s);
    return SR_OK;
}

static void sr__socket_stop(sr_source_t *s)
{
    sr__socket_t *k = s->impl;
    if (!k) return;
    ev_timer_stop(s->ev, &k->retry);
    sr__socket_close_fd(s);
    sr__socket_free_addrs(k);
    sr_free(k->host);
    sr_free(k);
    s->impl = NULL;
}

const sr_source_type_t sr_source_socket_text = {
    .kind = "socket_text",
    .traits = {.bounded = 0, .stored = 0, .logged = 1, .rereads = 0, .resumes = 0, .file_list = 0},
    .start = sr__socket_start, .stop = sr__socket_stop,
};
