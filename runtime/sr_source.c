/* sr_source: the registry of source kinds (and their traits) and the
 * helpers sources share; they report through their ingest interface. */
#include "sr_source.h"
#include "sr_error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const sr_source_type_t *const sr__source_types[] = {
    &sr_source_text_file, &sr_source_stdin, &sr_source_socket_text,
    &sr_source_listen_text, &sr_source_tail, &sr_source_text_dir,
    &sr_source_kafka,
};

const sr_source_type_t *sr_source_type_find(const char *kind)
{
    for (size_t i = 0; i < sizeof(sr__source_types) / sizeof(sr__source_types[0]); i++)
        if (strcmp(sr__source_types[i]->kind, kind) == 0) return sr__source_types[i];
    return NULL;
}

int sr_source_traits(const char *kind, sr_source_traits_t *out)
{
    const sr_source_type_t *type = kind ? sr_source_type_find(kind) : NULL;
    memset(out, 0, sizeof(*out));
    if (!type) return SR_EINVAL;
    *out = type->traits;
    return SR_OK;
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
    s->ingest->record(s->ingest->ud, s, pos, line, len);
    if (sr_batch_full(&s->batch)) {
        s->ingest->wake(s->ingest->ud, s);
        return s->type->traits.stored;
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
    return sr_batch_full(&s->batch) || s->ingest->holds(s->ingest->ud);
}

void sr__source_dead(sr_source_t *s, int64_t pos, const char *reason,
                     const char *data, size_t len)
{
    s->dead_letters++;
    sr_deadletter_write(s->ingest->dead, s->name, pos, reason, data, len);
}

void sr__source_done(sr_source_t *s)
{
    s->done = 1;
    s->ingest->wake(s->ingest->ud, s);
}

void sr__source_file(sr_source_t *s, int64_t inode, const char *name)
{
    s->ingest->file(s->ingest->ud, s, inode, name);
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
