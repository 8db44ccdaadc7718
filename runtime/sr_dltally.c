/* sr_dltally: dead letters counted per source and the last few kept. */
#include "sr_dltally.h"
#include "sr_alloc.h"
#include "sr_utf8.h"

#include <string.h>
#include <time.h>

/* Copies up to cap-1 bytes of s[0..len) into dst as valid UTF-8, invalid
 * sequences as U+FFFD, never cutting a character in two. */
static size_t sr__copy_text(char *dst, size_t cap, const char *s, size_t len)
{
    size_t o = 0, i = 0;
    while (i < len) {
        int valid;
        size_t n = sr_utf8_next(s + i, len - i, &valid);
        const char *src = valid ? s + i : SR_UTF8_REPLACEMENT;
        size_t w = valid ? n : sizeof(SR_UTF8_REPLACEMENT) - 1;
        /* Control bytes would garble a page: shown as spaces. */
        if (valid && n == 1 && ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)) src = " ";
        if (o + w >= cap) break;
        memcpy(dst + o, src, w);
        o += w;
        i += n;
    }
    dst[o] = '\0';
    return i;
}

static sr_dltally_count_t *sr__count_of(sr_dltally_t *t, const char *source)
{
    for (size_t i = 0; i < t->ncounts; i++)
        if (!strcmp(t->counts[i].source, source)) return &t->counts[i];
    if (t->ncounts >= SR_DLTALLY_SOURCES) return NULL;
    if (t->ncounts == t->cap) {
        size_t cap = t->cap ? 2 * t->cap : 8;
        sr_dltally_count_t *c = sr_realloc(t->counts, cap * sizeof(*c));
        if (!c) return NULL;
        t->counts = c;
        t->cap = cap;
    }
    char *name = sr_strdup(source);
    if (!name) return NULL;
    t->counts[t->ncounts] = (sr_dltally_count_t){.source = name, .count = 0};
    return &t->counts[t->ncounts++];
}

void sr_dltally_add(sr_dltally_t *t, const char *source, int64_t offset, const char *reason, const char *record,
                    size_t len)
{
    if (!source) source = "?";
    sr_dltally_count_t *c = sr__count_of(t, source);
    if (!c) c = sr__count_of(t, "?");
    if (c) c->count++;
    sr_dltally_entry_t *e = &t->recent[t->seq % SR_DLTALLY_RECENT];
    t->seq++;
    sr__copy_text(e->source, sizeof(e->source), source, strlen(source));
    sr__copy_text(e->reason, sizeof(e->reason), reason ? reason : "", reason ? strlen(reason) : 0);
    e->record_shown = sr__copy_text(e->record, sizeof(e->record), record ? record : "", record ? len : 0);
    e->record_len = record ? len : 0;
    e->offset = offset;
    e->seq = t->seq;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    e->unix_ms = (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

void sr_dltally_close(sr_dltally_t *t)
{
    for (size_t i = 0; i < t->ncounts; i++) sr_free(t->counts[i].source);
    sr_free(t->counts);
    memset(t, 0, sizeof(*t));
}

const char *sr_dltally_source(const sr_dltally_t *t, size_t i, uint64_t *count)
{
    if (i >= t->ncounts) return NULL;
    *count = t->counts[i].count;
    return t->counts[i].source;
}

const sr_dltally_entry_t *sr_dltally_recent(const sr_dltally_t *t, size_t i)
{
    if (i >= SR_DLTALLY_RECENT || i >= t->seq) return NULL;
    return &t->recent[(t->seq - 1 - i) % SR_DLTALLY_RECENT];
}
