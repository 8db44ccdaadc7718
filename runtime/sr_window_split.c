/* sr_window_split: merging the parts of a window split among workers, by
 * order, without decoding their elements (sr_mpcheck finds where each
 * ends; only the orders are read). */
#include "sr_window_split.h"
#include "sr_alloc.h"
#include "sr_error.h"
#include "sr_mpbuf.h"
#include "sr_mpcheck.h"

#include <string.h>

/* The slice of w at time t, or NULL (times increase: a binary search). */
static const sr_slice_t *sr__at_time(const sr_window_t *w, int64_t t)
{
    size_t lo = 0, hi = w->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const sr_slice_t *s = sr_window_slice(w, mid);
        if (s->time_ms == t) return s;
        if (s->time_ms < t) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

void sr_window_split_slice(const sr_window_split_t *s, size_t i, sr_slice_t *out)
{
    const sr_slice_t *first = sr_window_slice(s->slices[0], i);
    memset(out, 0, sizeof(*out));
    if (!first) return;
    out->time_ms = first->time_ms;
    out->len = first->len;
    out->count = first->count;
    for (int k = 1; k < s->n; k++) {
        const sr_slice_t *p = sr__at_time(s->slices[k], first->time_ms);
        if (!p) continue;
        out->len += p->len;
        out->count += p->count;
    }
}

/* -- One part's cursor -- */

typedef struct sr__cursor {
    const char *p, *end;   /* the slice's elements not yet written */
    const char *op, *oend; /* their orders */
    uint32_t left;         /* elements not yet written */
    double order;          /* of the element at p (left > 0) */
} sr__cursor_t;

static uint64_t sr__be(const unsigned char *p, int w)
{
    uint64_t v = 0;
    for (int i = 0; i < w; i++) v = v << 8 | p[i];
    return v;
}

/* The number at p (n bytes): 0 and *v, or -1 when it is no number. */
static int sr__number(const unsigned char *p, size_t n, double *v)
{
    if (n < 1) return -1;
    unsigned c = p[0];
    if (c <= 0x7f) { *v = c; return 0; }
    if (c >= 0xe0) { *v = (int8_t)c; return 0; }
    static const int width[] = { [0xca - 0xca] = 4, [0xcb - 0xca] = 8, [0xcc - 0xca] = 1, [0xcd - 0xca] = 2,
                                 [0xce - 0xca] = 4, [0xcf - 0xca] = 8, [0xd0 - 0xca] = 1, [0xd1 - 0xca] = 2,
                                 [0xd2 - 0xca] = 4, [0xd3 - 0xca] = 8 };
    if (c < 0xca || c > 0xd3) return -1;
    int w = width[c - 0xca];
    if (n < (size_t)w + 1) return -1;
    uint64_t u = sr__be(p + 1, w);
    switch (c) {
    case 0xca: { uint32_t b = (uint32_t)u; float f; memcpy(&f, &b, 4); *v = f; break; }
    case 0xcb: { double d; memcpy(&d, &u, 8); *v = d; break; }
    case 0xcc: case 0xcd: case 0xce: case 0xcf: *v = (double)u; break;
    case 0xd0: *v = (int8_t)u; break;
    case 0xd1: *v = (int16_t)u; break;
    case 0xd2: *v = (int32_t)u; break;
    default: *v = (double)(int64_t)u; break;
    }
    return 0;
}

/* Reads the order of the element at c->p: 0, or SR_EINVAL. */
static int sr__read_order(sr__cursor_t *c)
{
    const unsigned char *p = (const unsigned char *)c->op;
    size_t n = (size_t)(c->oend - c->op);
    long len = sr_mpcheck(c->op, n, SR_MP_MAX_DEPTH + 1);
    if (len < 2) return SR_EINVAL;
    size_t head;
    if (p[0] >= 0x91 && p[0] <= 0x9f) head = 1;
    else if (p[0] == 0xdc && sr__be(p + 1, 2) >= 1) head = 3;
    else if (p[0] == 0xdd && sr__be(p + 1, 4) >= 1) head = 5;
    else return SR_EINVAL;
    if (sr__number(p + head, (size_t)len - head, &c->order) < 0) return SR_EINVAL;
    c->op += len;
    return SR_OK;
}

static int sr__cursor_init(sr__cursor_t *c, const sr_slice_t *s, const sr_slice_t *o)
{
    memset(c, 0, sizeof(*c));
    if (!s) return SR_OK;
    if (!o || o->count != s->count) return SR_EINVAL;
    c->p = s->data;
    c->end = s->data + s->len;
    c->op = o->data;
    c->oend = o->data + o->len;
    c->left = s->count;
    return c->left ? sr__read_order(c) : SR_OK;
}

int sr_window_split_emit(const sr_window_split_t *s, size_t i,
                         int (*write)(void *ud, const char *p, size_t n), void *ud)
{
    const sr_slice_t *first = sr_window_slice(s->slices[0], i);
    if (!first) return SR_EINVAL;
    int64_t t = first->time_ms;
    sr__cursor_t one[2], *cur = s->n <= 2 ? one : sr_malloc((size_t)s->n * sizeof(*cur));
    if (!cur) return SR_ENOMEM;
    int rc = SR_OK;
    for (int k = 0; k < s->n && rc == SR_OK; k++) {
        const sr_slice_t *sl = k == 0 ? first : sr__at_time(s->slices[k], t);
        rc = sr__cursor_init(&cur[k], sl, sl ? sr__at_time(s->orders[k], t) : NULL);
    }
    while (rc == SR_OK) {
        int best = -1;
        for (int k = 0; k < s->n; k++) {
            if (cur[k].left && (best < 0 || cur[k].order < cur[best].order)) best = k;
        }
        if (best < 0) break;
        sr__cursor_t *c = &cur[best];
        long len = sr_mpcheck(c->p, (size_t)(c->end - c->p), SR_MP_MAX_DEPTH + 1);
        if (len <= 0) {
            rc = SR_EINVAL;
            break;
        }
        rc = write(ud, c->p, (size_t)len);
        if (rc < 0) break;
        rc = SR_OK;
        c->p += len;
        if (--c->left) rc = sr__read_order(c);
    }
    /* Every byte of every part written, every order read: nothing left. */
    for (int k = 0; k < s->n && rc == SR_OK; k++) {
        if (cur[k].p != cur[k].end || cur[k].op != cur[k].oend) rc = SR_EINVAL;
    }
    if (cur != one) sr_free(cur);
    return rc;
}

int sr_window_split_merge(const sr_window_split_t *s, sr_window_t **out)
{
    *out = NULL;
    sr_window_t *w = sr_window_new(s->slices[0]->name);
    if (!w) return SR_ENOMEM;
    sr_mpbuf_t buf = { 0 };
    int rc = SR_OK;
    for (size_t i = 0; i < s->slices[0]->n; i++) {
        sr_slice_t one;
        sr_window_split_slice(s, i, &one);
        buf.len = 0;
        rc = sr_window_split_emit(s, i, sr_mpbuf_write, &buf);
        if (rc < 0) goto fail;
        rc = sr_window_push(w, one.time_ms, buf.data, buf.len, one.count);
        if (rc < 0) goto fail;
    }
    sr_free(buf.data);
    *out = w;
    return SR_OK;
fail:
    sr_free(buf.data);
    sr_window_free(w);
    return rc;
}
