/* sr_source_listen: listen_text, a TCP server taking one record per line
 * from many producers at once; unbounded. */

/* Each connection has its own line splitter, so lines of different clients
 * never mix; offsets count bytes within the connection. A client that
 * closes mid-line leaves the partial line as a dead letter. At most
 * max_connections clients are served at once, and never so many that the
 * job's own files and checkpoints lack descriptors: past that, and while
 * the process is out of descriptors, new connections wait in the kernel's
 * backlog until one closes (or a pause ends). A wildcard address is warned
 * of: it takes producers from every network the host is on. */
#include "sr_alloc.h"
#include "sr_error.h"
#include "sr_source.h"

#include <errno.h>
#include <ev.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define SR_LISTEN_CHUNK (64 * 1024)
#define SR_LISTEN_PAUSE 0.1 /* seconds without accepting when out of fds */
#define SR_LISTEN_MAX_CLIENTS 1024
/* Descriptors left to the rest of the job (checkpoints, the write-ahead
 * log, files): producers never take the last of them. */
#define SR_LISTEN_FD_RESERVE 32

typedef struct sr__client sr__client_t;

typedef struct sr__listen {
    ev_io accept_io;
    ev_timer pause;         /* restarts accept_io after EMFILE */
    int fd;
    int port;               /* bound port (useful with port 0) */
    size_t max_line;
    int nclients, max_clients;
    int at_limit;           /* accepting stopped at max_clients */
    sr__client_t *clients;  /* owned, doubly linked */
    char buf[SR_LISTEN_CHUNK]; /* shared by the clients: one read at a time */
} sr__listen_t;

struct sr__client {
    ev_io io;
    sr_linesplit_t split;   /* this connection's partial line */
    sr_source_t *source;    /* borrowed */
    sr__client_t *prev, *next;
};

/* -- Clients -- */

static void sr__client_free(sr_source_t *s, sr__client_t *c)
{
    sr__listen_t *ls = s->impl;
    ev_io_stop(s->ev, &c->io);
    close(c->io.fd);
    sr_linesplit_close(&c->split);
    if (c->prev) c->prev->next = c->next;
    else ls->clients = c->next;
    if (c->next) c->next->prev = c->prev;
    sr_free(c);
    ls->nclients--;
    if (ls->at_limit) {
        ls->at_limit = 0;
        ev_io_start(s->ev, &ls->accept_io);
    }
}

static void sr__client_on_read(struct ev_loop *ev, ev_io *w, int revents)
{
    (void)ev; (void)revents;
    sr__client_t *c = w->data;
    sr_source_t *s = c->source;
    sr__listen_t *ls = s->impl;
    if (sr__source_waits(s)) return; /* until the batch is released, or the hold ends */
    ssize_t n = recv(w->fd, ls->buf, sizeof(ls->buf), 0);
    if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) return;
    if (n > 0) {
        sr_linesplit_feed(&c->split, ls->buf, (size_t)n, sr__source_line, s);
        return;
    }
    if (n < 0 && errno != ECONNRESET) sr__source_log(s, "client read error: %s", strerror(errno));
    sr_linesplit_finish(&c->split, SR_ECLOSED, sr__source_line, s);
    sr__client_free(s, c);
}

static void sr__listen_on_pause(struct ev_loop *ev, ev_timer *w, int revents)
{
    (void)revents;
    sr_source_t *s = w->data;
    sr__listen_t *ls = s->impl;
    ev_io_start(ev, &ls->accept_io);
}

static void sr__listen_on_accept(struct ev_loop *ev, ev_io *w, int revents)
{
    (void)revents;
    sr_source_t *s = w->data;
    sr__listen_t *ls = s->impl;
    for (;;) {
        if (ls->nclients >= ls->max_clients) {
            if (!ls->at_limit)
                sr__source_log(s, "%d connections, its max_connections: new ones wait until one closes",
                               ls->nclients);
            ls->at_limit = 1;
            ev_io_stop(ev, w);
            return;
        }
        int fd = accept4(ls->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return;
            /* Out of fds (or worse): stop accepting for a moment instead
             * of spinning on a listening socket that stays readable. */
            sr__source_log(s, "accept: %s; pausing", strerror(errno));
            ev_io_stop(ev, w);
            ev_timer_set(&ls->pause, SR_LISTEN_PAUSE, 0.);
            ev_timer_start(ev, &ls->pause);
            return;
        }
        sr__client_t *c = sr_calloc(1, sizeof(*c));
        if (!c) {
            sr__source_log(s, "out of memory: refusing a connection");
            close(fd);
            continue;
        }
        c->source = s;
        sr_linesplit_init(&c->split, ls->max_line, 0);
        ev_io_init(&c->io, sr__client_on_read, fd, EV_READ);
        c->io.data = c;
        c->next = ls->clients;
        if (ls->clients) ls->clients->prev = c;
        ls->clients = c;
        ls->nclients++;
        ev_io_start(ev, &c->io);
    }
}

/* -- Registration -- */

static int sr__is_wildcard(const char *host)
{
    return !host || !*host || !strcmp(host, "*") || !strcmp(host, "0.0.0.0") || !strcmp(host, "::") ||
           !strcmp(host, "[::]") || !strcmp(host, "0");
}

/* Binds and listens on host:port (port 0: any free port). Returns the
 * listening fd, or -1 with the reason in s->err. */
static int sr__listen_bind(sr_source_t *s, const char *host, int port)
{
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
        .ai_flags = AI_PASSIVE | AI_NUMERICSERV,
    };
    struct addrinfo *addrs = NULL;
    char service[16];
    snprintf(service, sizeof(service), "%d", port);
    const char *node = host && *host && strcmp(host, "*") != 0 ? host : NULL;
    int rc = getaddrinfo(node, service, &hints, &addrs);
    if (rc != 0) {
        snprintf(s->err, sizeof(s->err), "listen_text %s:%d: %s", host ? host : "*", port,
                 gai_strerror(rc));
        return -1;
    }
    int fd = -1, err = 0;
    for (struct addrinfo *a = addrs; a; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) { err = errno; continue; }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, a->ai_addr, a->ai_addrlen) == 0 && listen(fd, SOMAXCONN) == 0) break;
        err = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(addrs);
    if (fd < 0)
        snprintf(s->err, sizeof(s->err), "listen_text %s:%d: %s", host ? host : "*", port,
                 strerror(err ? err : EADDRNOTAVAIL));
    return fd;
}

static int sr__listen_start(sr_source_t *s, const sr_source_opts_t *o)
{
    if (o->port < 0 || o->port > 65535) {
        snprintf(s->err, sizeof(s->err), "listen_text needs a port in 0..65535");
        return SR_EINVAL;
    }
    sr__listen_t *ls = sr_calloc(1, sizeof(*ls));
    if (!ls) return SR_ENOMEM;
    ls->fd = sr__listen_bind(s, o->host, o->port);
    if (ls->fd < 0) {
        sr_free(ls);
        return SR_EIO;
    }
    struct sockaddr_storage sa;
    socklen_t salen = sizeof(sa);
    ls->port = o->port;
    if (getsockname(ls->fd, (struct sockaddr *)&sa, &salen) == 0) {
        if (sa.ss_family == AF_INET) ls->port = ntohs(((struct sockaddr_in *)&sa)->sin_port);
        else if (sa.ss_family == AF_INET6)
            ls->port = ntohs(((struct sockaddr_in6 *)&sa)->sin6_port);
    }
    ls->max_line = o->max_line;
    ls->max_clients = o->max_connections > 0 ? o->max_connections : SR_LISTEN_MAX_CLIENTS;
    struct rlimit nofile;
    if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur != RLIM_INFINITY) {
        rlim_t room = nofile.rlim_cur > 2 * SR_LISTEN_FD_RESERVE ? nofile.rlim_cur - SR_LISTEN_FD_RESERVE
                                                                 : nofile.rlim_cur / 2;
        if (room < 1) room = 1;
        if ((rlim_t)ls->max_clients > room) {
            sr__source_log(s, "max_connections %d is more than the descriptor limit allows (%llu, ulimit -n): "
                              "at most %llu at once",
                           ls->max_clients, (unsigned long long)nofile.rlim_cur, (unsigned long long)room);
            ls->max_clients = (int)room;
        }
    }
    if (sr__is_wildcard(o->host))
        sr__source_log(s, "warning: listening on every interface (%s:%d): producers on any network this host "
                          "is on can send records; give 127.0.0.1 to take local ones only",
                       o->host && *o->host ? o->host : "*", ls->port);
    ev_io_init(&ls->accept_io, sr__listen_on_accept, ls->fd, EV_READ);
    ls->accept_io.data = s;
    ev_init(&ls->pause, sr__listen_on_pause);
    ls->pause.data = s;
    s->impl = ls;
    ev_io_start(s->ev, &ls->accept_io);
    return SR_OK;
}

static void sr__listen_stop(sr_source_t *s)
{
    sr__listen_t *ls = s->impl;
    if (!ls) return;
    while (ls->clients) sr__client_free(s, ls->clients);
    ev_io_stop(s->ev, &ls->accept_io);
    ev_timer_stop(s->ev, &ls->pause);
    close(ls->fd);
    sr_free(ls);
    s->impl = NULL;
}

/* The bound port, or SR_EINVAL when s is not a started listen_text. */
int sr_source_listen_port(sr_source_t *s)
{
    if (!s || s->type != &sr_source_listen_text || !s->impl) return SR_EINVAL;
    return ((sr__listen_t *)s->impl)->port;
}

const sr_source_type_t sr_source_listen_text = {
    .kind = "listen_text",
    .traits = {.bounded = 0, .stored = 0, .logged = 1, .rereads = 0, .resumes = 0, .file_list = 0},
    .start = sr__listen_start, .stop = sr__listen_stop,
};
