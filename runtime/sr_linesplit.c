/* sr_linesplit: line splitting with carry-over and max_line enforcement. */
#include "sr_linesplit.h"
#include "sr_alloc.h"
#include "sr_error.h"

#include <string.h>

void sr_linesplit_init(sr_linesplit_t *ls, size_t max_line, int64_t start_pos)
{
    memset(ls, 0, sizeof(*ls));
    ls->max_line = max_line ? max_line : (size_t)1 << 20;
    ls->pos = start_pos;
    ls->line_pos = start_pos;
}

void sr_linesplit_close(sr_linesplit_t *ls)
{
    sr_free(ls->buf);
    ls->buf = NULL;
    ls->len = ls->cap = 0;
}

static int sr__carry(sr_linesplit_t *ls, const char *p, size_t n)
{
    if (ls->len + n > ls->cap) {
        size_t cap = ls->cap ? ls->cap : 256;
        while (cap < ls->len + n) cap *= 2;
        char *buf = sr_realloc(ls->buf, cap);
        if (!buf) return SR_ENOMEM;
        ls->buf = buf;
        ls->cap = cap;
    }
    memcpy(ls->buf + ls->len, p, n);
    ls->len += n;
    return SR_OK;
}

static size_t sr__strip_cr(const char *line, size_t len)
{
    return (len && line[len - 1] == '\r') ? len - 1 : len;
}

/* Reports the first max_line bytes of an over-long line and drops the rest. */
static int sr__too_long(sr_linesplit_t *ls, const char *head, sr_line_fn fn, void *ud)
{
    ls->dropping = 1;
    return fn(ud, head, ls->max_line, ls->line_pos, SR_ETOOLONG);
}

/* A carried line without its newline yet is known to be too long once it
 * holds more than max_line bytes, unless the extra byte is a \r that the
 * next read may turn into a \r\n. */
static int sr__carried_too_long(const sr_linesplit_t *ls)
{
    return ls->len > ls->max_line + 1 ||
           (ls->len == ls->max_line + 1 && ls->buf[ls->len - 1] != '\r');
}

/* No memory to carry a line: reports what there is of it (at most max_line
 * bytes) with SR_ENOMEM and drops the rest, so the stream goes on. */
static int sr__no_memory(sr_linesplit_t *ls, const char *seg, size_t seglen, int has_nl,
                         sr_line_fn fn, void *ud)
{
    const char *head = ls->len ? ls->buf : seg;
    size_t len = ls->len ? ls->len : seglen;
    ls->len = 0;
    ls->dropping = !has_nl;
    return fn(ud, head, len < ls->max_line ? len : ls->max_line, ls->line_pos, SR_ENOMEM);
}

long sr_linesplit_feed(sr_linesplit_t *ls, const char *p, size_t n, sr_line_fn fn, void *ud)
{
    size_t i = 0;
    while (i < n) {
        const char *nl = memchr(p + i, '\n', n - i);
        size_t seg = nl ? (size_t)(nl - (p + i)) : n - i;
        size_t used = nl ? seg + 1 : seg;
        int stop = 0;
        if (ls->dropping) {
            if (nl) { ls->dropping = 0; ls->len = 0; }
        } else if (ls->len == 0 && nl) {
            /* Fast path: a whole line inside this read, no copy. */
            size_t len = sr__strip_cr(p + i, seg);
            ls->line_pos = ls->pos;
            stop = len > ls->max_line ? sr__too_long(ls, p + i, fn, ud)
                                      : fn(ud, p + i, len, ls->line_pos, 0);
            ls->dropping = 0;
        } else {
            if (ls->len == 0) ls->line_pos = ls->pos;
            /* Never carry more than max_line + 2 bytes: enough to tell a
             * too-long line from one of max_line bytes plus its \r. */
            size_t limit = ls->max_line + 2;
            size_t room = ls->len < limit ? limit - ls->len : 0;
            if (sr__carry(ls, p + i, seg < room ? seg : room) < 0) {
                stop = sr__no_memory(ls, p + i, seg, nl != NULL, fn, ud);
            } else if (nl) {
                size_t len = sr__strip_cr(ls->buf, ls->len);
                stop = len > ls->max_line ? sr__too_long(ls, ls->buf, fn, ud)
                                          : fn(ud, ls->buf, len, ls->line_pos, 0);
                ls->len = 0;
                ls->dropping = 0;
            } else if (sr__carried_too_long(ls)) {
                stop = sr__too_long(ls, ls->buf, fn, ud);
                ls->len = 0;
            }
        }
        i += used;
        ls->pos += (int64_t)used;
        if (stop) break;
    }
    return (long)i;
}

void sr_linesplit_finish(sr_linesplit_t *ls, int partial_status, sr_line_fn fn, void *ud)
{
    if (ls->len && !ls->dropping)
        fn(ud, ls->buf, partial_status ? ls->len : sr__strip_cr(ls->buf, ls->len),
           ls->line_pos, partial_status);
    ls->len = 0;
    ls->dropping = 0;
}

int sr_linesplit_pending(const sr_linesplit_t *ls) { return ls->len > 0 && !ls->dropping; }

int64_t sr_linesplit_resume_pos(const sr_linesplit_t *ls)
{
    return ls->dropping || ls->len ? ls->line_pos : ls->pos;
}
