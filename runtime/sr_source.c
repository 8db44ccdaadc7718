/* sr_source: the registry of source kinds and the helpers sources share. */
#include "sr_source.h"
#include "sr_error.h"
#include "sr_loop.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const sr_source_type_t *const sr__source_types[] = {
    &sr_source_text_file, &sr_source_stdin, &sr_source_socket_text,
    &sr_source_listen_text, &sr_source_tail, &sr_source_text_dir,
};

const sr_source_type_t *sr_source_type_find(const char *kind)
{
    for (size_t i = 0; i < sizeof(sr__source_types) / sizeof(sr__source_types[0]); i++)
        if (strcmp(sr__source_types[i]->kind, kind) == 0) return sr__source_types[i];
    return NULL;
}

int sr__source_line(void *ud, const char *line, size_t len, int64_t pos, int status)
{
    sr_source_t *s = ud;
    if (status != 0) {
        sr__source_dead(s, pos, sr_strerror(status), line, len);
        return 0;
    }
    if (sr_batch_append(&s->batch, line, len, pos) < 0) {
        sr__source_dead(s, pos, sr_strerror(SR_ENOMEM), line, len);
        return 0;
    }
    s->records++;
    sr__loop_log_record(s->loop, s, pos, line, len);
    if (sr_batch_full(&s->batch)) {
        sr__loop_wake(s->loop, s);
        return s->type->fast;
    }
    return 0;
}

int sr_source_position(sr_source_t *s, sr_source_pos_t *pos)
{
    memset(pos, 0, sizeof(*pos));
    if (!s->type->position) return SR_EINVAL;
    s->type->position(s, pos);
    return SR_OK;
}

int sr__source_waits(sr_source_t *s)
{
    return sr_batch_full(&s->batch) || sr__loop_holds(s->loop);
}

void sr__source_dead(sr_source_t *s, int64_t pos, const char *reason,
                     const char *data, size_t len)
{
    s->dead_letters++;
    sr_deadletter_write(sr_loop_deadletter(s->loop), s->name, pos, reason, data, len);
}

void sr__source_done(sr_source_t *s)
{
    s->done = 1;
    sr__loop_wake(s->loop, s);
}

void sr__source_log(sr_source_t *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "streamrun: source %s: ", s->name);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}
