/* sr_http: the job's HTTP server (SPEC section 12), libmicrohttpd in a
 * thread of its own serving documents the loop thread publishes after each
 * batch (/metrics, /api/status, the page's assets). A request never reaches
 * the job: it is answered from the last published copy, so no client can
 * delay a batch. */
#ifndef SR_HTTP_H
#define SR_HTTP_H
#include <stddef.h>
#include <stdint.h>

/* Connections served at once; more wait in the kernel's backlog. */
#define SR_HTTP_MAX_CONNECTIONS 64
/* Seconds a connection may stay idle (a client that never reads, never
 * sends its request) before it is closed. */
#define SR_HTTP_IDLE_TIMEOUT_S 10
/* Paths the server can hold documents for. */
#define SR_HTTP_MAX_DOCUMENTS 32

typedef struct sr_http sr_http_t;

typedef struct sr_http_stats {
    uint64_t requests;  /* requests answered (any status) */
    uint64_t not_found; /* of them, 404 or 405 */
} sr_http_stats_t;

/* Starts serving on host:port (host NULL or "" means 127.0.0.1; port 0 takes
 * any free port, see sr_http_port). Returns the server (owned by the caller,
 * released with sr_http_stop), or NULL with the reason in err. */
sr_http_t *sr_http_start(const char *host, int port, char *err, size_t errlen);
/* Stops the server thread, closes every connection, frees the documents. */
void sr_http_stop(sr_http_t *h);
/* The port the server listens on. */
int sr_http_port(const sr_http_t *h);
/* Whether host is a wildcard address (every interface). */
int sr_http_is_wildcard(const char *host);
/* Makes body[0..len) (copied) the document at path, with its Content-Type;
 * requests from now on get it, those in flight keep the copy they had.
 * Call from one thread only (the loop's). Returns 0, SR_ENOMEM, or SR_EFULL
 * when SR_HTTP_MAX_DOCUMENTS paths are taken. */
int sr_http_publish(sr_http_t *h, const char *path, const char *type, const char *body, size_t len);
/* The counts of requests answered so far, copied into out. */
void sr_http_stats(sr_http_t *h, sr_http_stats_t *out);

#endif
