/* sr_source_stdin: lines from standard input; bounded (ends at EOF). A
 * regular file on stdin is stored input: batches need not wait for the
 * clock. */
#include "sr_alloc.h"
#include "sr_error.h"
#include "sr_source.h"

#include <errno.h>
#include <ev.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SR_STDIN_CHUNK (64 * 1024)

typedef struct sr__stdin {
    ev_io reader;
    char buf[SR_STDIN_CHUNK];
} sr__stdin_t;

static void sr__stdin_on_read(struct ev_loop *ev, ev_io *w, int revents)
{
    (void)revents;
    sr_source_t *s = w->data;
    if (sr__source_waits(s)) return;
    sr__stdin_t *in = s->impl;
    ssize_t n = read(w->fd, in->buf, sizeof(in->buf));
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) return;
    if (n <= 0) {
        if (n < 0) sr__source_log(s, "read error: %s", strerror(errno));
        ev_io_stop(ev, w);
        sr_linesplit_finish(&s->split, 0, sr__source_line, s);
        sr__source_done(s);
        return;
    }
    sr_linesplit_feed(&s->split, in->buf, (size_t)n, sr__source_line, s);
}

static int sr__stdin_start(sr_source_t *s, const sr_source_opts_t *o)
{
    (void)o;
    sr__stdin_t *in = sr_calloc(1, sizeof(*in));
    if (!in) return SR_ENOMEM;
    s->impl = in;
    struct stat st;
    if (fstat(STDIN_FILENO, &st) == 0 && S_ISREG(st.st_mode)) s->stored = 1;
    ev_io_init(&in->reader, sr__stdin_on_read, STDIN_FILENO, EV_READ);
    in->reader.data = s;
    ev_io_start(s->ev, &in->reader);
    return SR_OK;
}

static void sr__stdin_stop(sr_source_t *s)
{
    sr__stdin_t *in = s->impl;
    if (!in) return;
    ev_io_stop(s->ev, &in->reader);
    sr_free(in);
    s->impl = NULL;
}

const sr_source_type_t sr_source_stdin = {
    .kind = "stdin",
    .traits = {.bounded = 1, .stored = 0, .logged = 1, .rereads = 0, .resumes = 0, .file_list = 0},
    .start = sr__stdin_start, .stop = sr__stdin_stop,
};
