/* sr_http: libmicrohttpd serving the documents the loop thread publishes.
 * A document's body is reference-counted: the table holds one reference,
 * each response in flight one more. Publishing swaps the table's pointer
 * under a mutex held for that swap only, so the loop never waits for a
 * client; a body replaced while responses still send it is retired and
 * freed by a later publish (every free happens on the loop thread, as the
 * counting allocator wants). */
#include "sr_http.h"
#include "sr_alloc.h"
#include "sr_error.h"

#include <microhttpd.h>

#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

typedef struct sr__body {
    atomic_int refs;
    size_t len;
    struct sr__body *next_retired;
    char data[];
} sr__body_t;

typedef struct sr__doc {
    char *path;
    char *type;
    sr__body_t *body;
} sr__doc_t;

struct sr_http {
    struct MHD_Daemon *daemon;
    int port;
    pthread_mutex_t lock; /* guards docs[].body and ndocs */
    sr__doc_t docs[SR_HTTP_MAX_DOCUMENTS];
    int ndocs;
    sr__body_t *retired; /* loop thread only */
    atomic_uint_fast64_t requests, not_found;
};

/* -- Bodies -- */

static void sr__body_release(void *cls)
{
    sr__body_t *b = cls;
    atomic_fetch_sub(&b->refs, 1);
}

/* Frees the retired bodies no response sends any more. */
static void sr__sweep(sr_http_t *h)
{
    sr__body_t **p = &h->retired;
    while (*p) {
        sr__body_t *b = *p;
        if (atomic_load(&b->refs) == 0) {
            *p = b->next_retired;
            sr_free(b);
        } else {
            p = &b->next_retired;
        }
    }
}

/* -- Requests (the server's thread) -- */

static enum MHD_Result sr__answer(struct MHD_Connection *c, unsigned status, const char *type, sr__body_t *b,
                                  const char *text)
{
    struct MHD_Response *r;
    if (b)
        r = MHD_create_response_from_buffer_with_free_callback_cls(b->len, b->data, sr__body_release, b);
    else
        r = MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_PERSISTENT);
    if (!r) {
        if (b) sr__body_release(b);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED) MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result sr__on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                      const char *version, const char *upload, size_t *upload_len, void **state)
{
    (void)version;
    (void)upload;
    sr_http_t *h = cls;
    /* Any request body is not read: the answer goes at once. */
    if (*upload_len) *upload_len = 0;
    (void)state;
    atomic_fetch_add(&h->requests, 1);
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0) {
        atomic_fetch_add(&h->not_found, 1);
        return sr__answer(c, MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain; charset=utf-8", NULL,
                          "method not allowed: GET or HEAD\n");
    }
    sr__body_t *b = NULL;
    const char *type = NULL;
    pthread_mutex_lock(&h->lock);
    for (int i = 0; i < h->ndocs; i++) {
        if (!strcmp(h->docs[i].path, url)) {
            b = h->docs[i].body;
            type = h->docs[i].type;
            atomic_fetch_add(&b->refs, 1);
            break;
        }
    }
    pthread_mutex_unlock(&h->lock);
    if (!b) {
        atomic_fetch_add(&h->not_found, 1);
        return sr__answer(c, MHD_HTTP_NOT_FOUND, "text/plain; charset=utf-8", NULL, "not found\n");
    }
    /* type is the document's for life (set once, freed at stop). */
    return sr__answer(c, MHD_HTTP_OK, type, b, NULL);
}

/* -- The server -- */

int sr_http_is_wildcard(const char *host)
{
    return !host || !*host || !strcmp(host, "*") || !strcmp(host, "0.0.0.0") || !strcmp(host, "::") ||
           !strcmp(host, "[::]") || !strcmp(host, "0");
}

sr_http_t *sr_http_start(const char *host, int port, char *err, size_t errlen)
{
    struct addrinfo *addrs = NULL;
    sr_http_t *h = NULL;
    if (port < 0 || port > 65535) {
        snprintf(err, errlen, "http: port %d is not in 0..65535", port);
        goto fail;
    }
    if (!host || !*host) host = "127.0.0.1";
    char node[256];
    size_t hl = strlen(host);
    /* [::1] as in a URL. */
    if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']' && hl - 2 < sizeof(node)) {
        memcpy(node, host + 1, hl - 2);
        node[hl - 2] = '\0';
    } else {
        snprintf(node, sizeof(node), "%s", !strcmp(host, "*") ? "0.0.0.0" : host);
    }
    char service[16];
    snprintf(service, sizeof(service), "%d", port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    int rc = getaddrinfo(node, service, &hints, &addrs);
    if (rc != 0) {
        snprintf(err, errlen, "http %s:%d: %s", host, port, gai_strerror(rc));
        goto fail;
    }
    h = sr_calloc(1, sizeof(*h));
    if (!h) {
        snprintf(err, errlen, "http: %s", sr_strerror(SR_ENOMEM));
        goto fail;
    }
    pthread_mutex_init(&h->lock, NULL);
    /* poll(), not epoll: with 0.9.75's epoll mode, connections their
     * clients closed stayed open until their timeout, so a burst of them
     * kept the page away for minutes; poll() sees them go at once. */
    unsigned flags = MHD_USE_POLL_INTERNAL_THREAD;
    /* [::] is every interface, IPv4 ones too (as the warning says). */
    if (addrs->ai_family == AF_INET6) flags |= sr_http_is_wildcard(node) ? MHD_USE_DUAL_STACK : MHD_USE_IPv6;
    /* The server's thread takes no signal: they are the loop's. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    h->daemon = MHD_start_daemon(flags, (uint16_t)port, NULL, NULL, sr__on_request, h,
                                 MHD_OPTION_SOCK_ADDR, addrs->ai_addr,
                                 MHD_OPTION_CONNECTION_LIMIT, (unsigned)SR_HTTP_MAX_CONNECTIONS,
                                 MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)SR_HTTP_IDLE_TIMEOUT_S,
                                 MHD_OPTION_END);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (!h->daemon) {
        snprintf(err, errlen, "http %s:%d: cannot listen (address in use, or not an address of this host?)",
                 host, port);
        goto fail;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_BIND_PORT);
    h->port = info && info->port ? info->port : port;
    freeaddrinfo(addrs);
    return h;
fail:
    if (addrs) freeaddrinfo(addrs);
    if (h) {
        pthread_mutex_destroy(&h->lock);
        sr_free(h);
    }
    return NULL;
}

void sr_http_stop(sr_http_t *h)
{
    if (!h) return;
    /* After this no response holds a body. */
    if (h->daemon) MHD_stop_daemon(h->daemon);
    for (int i = 0; i < h->ndocs; i++) {
        sr_free(h->docs[i].path);
        sr_free(h->docs[i].type);
        sr_free(h->docs[i].body);
    }
    while (h->retired) {
        sr__body_t *b = h->retired;
        h->retired = b->next_retired;
        sr_free(b);
    }
    pthread_mutex_destroy(&h->lock);
    sr_free(h);
}

int sr_http_port(const sr_http_t *h) { return h->port; }

int sr_http_publish(sr_http_t *h, const char *path, const char *type, const char *body, size_t len)
{
    sr__sweep(h);
    sr__body_t *b = sr_malloc(sizeof(*b) + (len ? len : 1));
    if (!b) return SR_ENOMEM;
    atomic_init(&b->refs, 1);
    b->len = len;
    b->next_retired = NULL;
    if (len) memcpy(b->data, body, len);
    int i = 0;
    while (i < h->ndocs && strcmp(h->docs[i].path, path) != 0) i++;
    if (i == h->ndocs) {
        /* A new path: its strings are made before the table shows it. */
        if (h->ndocs == SR_HTTP_MAX_DOCUMENTS) {
            sr_free(b);
            return SR_EFULL;
        }
        char *p = sr_strdup(path), *t = sr_strdup(type);
        if (!p || !t) {
            sr_free(p);
            sr_free(t);
            sr_free(b);
            return SR_ENOMEM;
        }
        pthread_mutex_lock(&h->lock);
        h->docs[i] = (sr__doc_t){.path = p, .type = t, .body = b};
        h->ndocs++;
        pthread_mutex_unlock(&h->lock);
        return SR_OK;
    }
    /* A path's type is fixed by its first publish (requests read it
     * outside the lock). */
    pthread_mutex_lock(&h->lock);
    sr__body_t *old = h->docs[i].body;
    h->docs[i].body = b;
    pthread_mutex_unlock(&h->lock);
    if (atomic_fetch_sub(&old->refs, 1) == 1) {
        sr_free(old);
    } else {
        old->next_retired = h->retired;
        h->retired = old;
    }
    return SR_OK;
}

void sr_http_stats(sr_http_t *h, sr_http_stats_t *out)
{
    out->requests = atomic_load(&h->requests);
    out->not_found = atomic_load(&h->not_found);
}
