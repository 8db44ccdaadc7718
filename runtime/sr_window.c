/* sr_window: a growable ring of slices, oldest at head. */
#include "sr_window.h"
#include "sr_alloc.h"
#include "sr_error.h"

#include <string.h>

sr_window_t *sr_window_new(const char *name)
{
    sr_window_t *w = sr_calloc(1, sizeof(*w));
    if (!w) return NULL;
    w->name = sr_strdup(name ? name : "");
    if (!w->name) {
        sr_free(w);
        return NULL;
    }
    return w;
}

void sr_window_free(sr_window_t *w)
{
    if (!w) return;
    sr_window_drop_until(w, INT64_MAX);
    sr_free(w->ring);
    sr_free(w->name);
    sr_free(w);
}

static sr_slice_t *sr__at(const sr_window_t *w, size_t i)
{
    return &w->ring[(w->head + i) % w->cap];
}

static int sr__grow(sr_window_t *w)
{
    size_t cap = w->cap ? w->cap * 2 : 8;
    sr_slice_t *ring = sr_malloc(cap * sizeof(*ring));
    if (!ring) return SR_ENOMEM;
    for (size_t i = 0; i < w->n; i++) ring[i] = *sr__at(w, i);
    sr_free(w->ring);
    w->ring = ring;
    w->cap = cap;
    w->head = 0;
    return SR_OK;
}

int sr_window_push(sr_window_t *w, int64_t time_ms, const char *data, size_t len, uint32_t count)
{
    if (w->n && sr__at(w, w->n - 1)->time_ms >= time_ms) return SR_EINVAL;
    if (w->n == w->cap && sr__grow(w) < 0) return SR_ENOMEM;
    char *copy = NULL;
    if (len) {
        copy = sr_malloc(len);
        if (!copy) return SR_ENOMEM;
        memcpy(copy, data, len);
    }
    sr_slice_t *s = sr__at(w, w->n);
    s->time_ms = time_ms;
    s->data = copy;
    s->len = len;
    s->count = count;
    w->n++;
    w->data_bytes += len;
    return SR_OK;
}

const sr_slice_t *sr_window_slice(const sr_window_t *w, size_t i)
{
    return i < w->n ? sr__at(w, i) : NULL;
}

void sr_window_drop_until(sr_window_t *w, int64_t time_ms)
{
    while (w->n && sr__at(w, 0)->time_ms <= time_ms) {
        sr_slice_t *s = sr__at(w, 0);
        w->data_bytes -= s->len;
        sr_free(s->data);
        s->data = NULL;
        w->head = (w->head + 1) % w->cap;
        w->n--;
    }
}

size_t sr_window_memory(const sr_window_t *w)
{
    return sizeof(*w) + w->cap * sizeof(sr_slice_t) + w->data_bytes;
}
