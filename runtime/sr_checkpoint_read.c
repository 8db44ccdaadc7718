/* sr_checkpoint_read: the sections of a checkpoint (header and metadata,
 * each state, each window's slices and result) read into new sr_state and
 * sr_window objects, with every check restore relies on. No Lua: the
 * binding converts what this returns. */
#include "sr_alloc.h"
#include "sr_checkpoint.h"
#include "sr_mpbuf.h"
#include "sr_mpcheck.h"

#include <stdio.h>
#include <string.h>

#define SR_CKPT_MAX_PARTITIONS 65536 /* as the job DSL allows */

/* -- Decoded objects -- */

static const msgpack_object *sr__field(const msgpack_object *map, const char *key)
{
    if (map->type != MSGPACK_OBJECT_MAP) return NULL;
    size_t n = strlen(key);
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == n && memcmp(k->via.str.ptr, key, n) == 0)
            return &map->via.map.ptr[i].val;
    }
    return NULL;
}

static int64_t sr__int(const msgpack_object *o, int64_t dflt)
{
    if (!o) return dflt;
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) return (int64_t)o->via.u64;
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) return o->via.i64;
    return dflt;
}

static void sr__str(const msgpack_object *o, char *buf, size_t size)
{
    buf[0] = '\0';
    if (o && o->type == MSGPACK_OBJECT_STR) {
        size_t n = o->via.str.size < size - 1 ? o->via.str.size : size - 1;
        memcpy(buf, o->via.str.ptr, n);
        buf[n] = '\0';
    }
}

static int sr__is_int(const msgpack_object *o)
{
    return o->type == MSGPACK_OBJECT_POSITIVE_INTEGER || o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER;
}

static int sr__is_key(const msgpack_object *o)
{
    return sr__is_int(o) || o->type == MSGPACK_OBJECT_STR || o->type == MSGPACK_OBJECT_BOOLEAN ||
           o->type == MSGPACK_OBJECT_FLOAT32 || o->type == MSGPACK_OBJECT_FLOAT64;
}

/* Whether a window slice's bytes are what restore reads back: count
 * elements, each an array of one or two values nested no deeper than
 * stored values may be. */
static int sr__slice_ok(const char *p, size_t n, int64_t count)
{
    int64_t k = 0;
    for (size_t off = 0; off < n; k++) {
        long len = sr_mpcheck(p + off, n - off, SR_MP_MAX_DEPTH + 1);
        unsigned char c = (unsigned char)p[off];
        if (len < 0 || (c != 0x91 && c != 0x92)) return 0;
        off += (size_t)len;
    }
    return k == count;
}

/* -- Re-encoding -- */

/* Decoded objects are packed again into here: the encoding of keys and
 * values is canonical, so these are their original bytes. */
static int sr__append(const msgpack_object *o, sr_mpbuf_t *b)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, b, sr_mpbuf_write);
    return msgpack_pack_object(&pk, *o) < 0 ? -1 : 0;
}

/* -- Sections -- */

/* Reads the entries of a state block whose header was just read, at
 * head_at. Returns the new state, or NULL with err set. */
static sr_state_t *sr__load_state(sr_ckpt_reader_t *r, const msgpack_object *head, size_t head_at, sr_mpbuf_t *buf,
                                  char *err, size_t errlen)
{
    char name[512];
    sr__str(sr__field(head, "state"), name, sizeof(name));
    int64_t count = sr__int(sr__field(head, "count"), -1);
    int64_t partitions = sr__int(sr__field(head, "partitions"), 16);
    if (!name[0] || count < 0 || partitions < 1 || partitions > SR_CKPT_MAX_PARTITIONS) {
        snprintf(err, errlen, "offset %zu: malformed state header", head_at);
        return NULL;
    }
    /* An entry takes 4 bytes at the least: a count the content cannot hold
     * is a fault, not a size to reserve. */
    if ((uint64_t)count > sr_checkpoint_left(r) / 4) {
        snprintf(err, errlen, "state %s at offset %zu: %lld keys declared, %zu bytes left", name, head_at,
                 (long long)count, sr_checkpoint_left(r));
        return NULL;
    }
    sr_state_t *st = sr_state_new(name, (int)partitions, sr__int(sr__field(head, "timeout_ms"), 0),
                                  sr__int(sr__field(head, "now_ms"), 0));
    if (!st || sr_state_reserve(st, (size_t)count) < 0) {
        snprintf(err, errlen, "state %s: out of memory for %lld keys", name, (long long)count);
        goto fail;
    }
    for (int64_t i = 0; i < count; i++) {
        size_t at = r->off;
        msgpack_object e;
        /* What the runtime would have written: a key a string, number or
         * boolean, an expiry an integer or nil. */
        if (sr_checkpoint_next(r, &e) != 1 || e.type != MSGPACK_OBJECT_ARRAY || e.via.array.size != 3 ||
            !sr__is_key(&e.via.array.ptr[0]) ||
            (e.via.array.ptr[2].type != MSGPACK_OBJECT_NIL && !sr__is_int(&e.via.array.ptr[2]))) {
            snprintf(err, errlen, "state %s, entry %lld at offset %zu: malformed", name, (long long)i, at);
            goto fail;
        }
        /* The key, then the value, in buf. */
        buf->len = 0;
        if (sr__append(&e.via.array.ptr[0], buf) < 0) {
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
        size_t klen = buf->len;
        if (klen > SR_STATE_MAX_KEY) {
            snprintf(err, errlen, "state %s, entry %lld at offset %zu: a key of %zu bytes", name, (long long)i, at,
                     klen);
            goto fail;
        }
        if (sr__append(&e.via.array.ptr[1], buf) < 0) {
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
        sr_state_entry_t *entry;
        if (sr_state_put(st, buf->data, klen, buf->data + klen, buf->len - klen, &entry) < 0) {
            snprintf(err, errlen, "state %s: out of memory at entry %lld", name, (long long)i);
            goto fail;
        }
        const msgpack_object *exp = &e.via.array.ptr[2];
        if (exp->type != MSGPACK_OBJECT_NIL) sr_state_arm(st, entry, sr__int(exp, 0));
    }
    return st;
fail:
    sr_state_free(st);
    return NULL;
}

/* arr (n elements of elem bytes, room for *cap) with room for one more:
 * the same or a larger array, or NULL (arr untouched) when out of memory. */
static void *sr__grow(void *arr, size_t n, size_t *cap, size_t elem)
{
    if (n < *cap) return arr;
    size_t c = *cap ? *cap * 2 : 8;
    void *a = sr_realloc(arr, c * elem);
    if (a) *cap = c;
    return a;
}

/* Appends the slice s, [time_ms, count, bin], to w. Returns 0, or -1 when
 * it is malformed or its time is not after the previous slice's. */
static int sr__push_slice(sr_window_t *w, const msgpack_object *s)
{
    if (s->type != MSGPACK_OBJECT_ARRAY || s->via.array.size != 3) return -1;
    const msgpack_object *f = s->via.array.ptr;
    if (!sr__is_int(&f[0]) || f[1].type != MSGPACK_OBJECT_POSITIVE_INTEGER || f[1].via.u64 > UINT32_MAX ||
        f[2].type != MSGPACK_OBJECT_BIN || !sr__slice_ok(f[2].via.bin.ptr, f[2].via.bin.size, (int64_t)f[1].via.u64))
        return -1;
    return sr_window_push(w, sr__int(&f[0], 0), f[2].via.bin.ptr, f[2].via.bin.size, (uint32_t)f[1].via.u64) < 0 ? -1
                                                                                                                : 0;
}

/* Reads the window section whose header was just read at head_at, into
 * out->windows[out->nwindows] and its result. Returns 0, or -1 with err
 * set (what it made is out's, freed with it). */
static int sr__load_window(sr_ckpt_reader_t *r, const msgpack_object *head, size_t head_at, sr_ckpt_loaded_t *out,
                           sr_mpbuf_t *buf, char *err, size_t errlen)
{
    char name[512];
    sr__str(sr__field(head, "window"), name, sizeof(name));
    int64_t nslices = sr__int(sr__field(head, "nslices"), -1);
    const msgpack_object *has = sr__field(head, "result");
    if (!name[0] || nslices < 0 || !has || has->type != MSGPACK_OBJECT_BOOLEAN) {
        snprintf(err, errlen, "offset %zu: malformed window header", head_at);
        return -1;
    }
    /* head lives in the reader's zone, which the next object read clears. */
    int has_result = has->via.boolean;
    sr_window_t *w = sr_window_new(name);
    if (!w) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    size_t i = out->nwindows++;
    out->windows[i] = w;
    out->results[i] = NULL;
    for (int64_t k = 0; k < nslices; k++) {
        msgpack_object s;
        size_t at = r->off;
        if (sr_checkpoint_next(r, &s) != 1 || sr__push_slice(w, &s) < 0) {
            snprintf(err, errlen, "window %s, slice %lld at offset %zu: malformed", name, (long long)k, at);
            return -1;
        }
    }
    if (has_result) {
        msgpack_object rh;
        size_t at = r->off;
        if (sr_checkpoint_next(r, &rh) != 1) {
            snprintf(err, errlen, "window %s: offset %zu: malformed result header", name, at);
            return -1;
        }
        out->results[i] = sr__load_state(r, &rh, at, buf, err, errlen);
        if (!out->results[i]) return -1;
    }
    return 0;
}

/* Reads the header: out's metadata, and the counts of states and windows
 * it announces. Returns 0 or -1 with err set. */
static int sr__load_header(sr_ckpt_reader_t *r, sr_ckpt_loaded_t *out, sr_mpbuf_t *buf, int64_t *nstates,
                           int64_t *nwindows, char *err, size_t errlen)
{
    msgpack_object head;
    if (sr_checkpoint_next(r, &head) != 1 || head.type != MSGPACK_OBJECT_MAP) {
        snprintf(err, errlen, "offset 5: malformed header");
        return -1;
    }
    const msgpack_object *meta = sr__field(&head, "meta");
    *nstates = sr__int(sr__field(&head, "nstates"), -1);
    *nwindows = sr__int(sr__field(&head, "nwindows"), -1);
    if (!meta || *nstates < 0 || *nwindows < 0) {
        snprintf(err, errlen, "offset 5: malformed header");
        return -1;
    }
    if (sr__int(sr__field(meta, "batch"), -1) < 0 || sr__int(sr__field(meta, "time_ms"), -1) < 0) {
        snprintf(err, errlen, "offset 5: malformed metadata: not a map with a batch number and a time");
        return -1;
    }
    buf->len = 0;
    if (sr__append(meta, buf) < 0 || !(out->meta = sr_malloc(buf->len))) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    memcpy(out->meta, buf->data, buf->len);
    out->meta_len = buf->len;
    return 0;
}

/* Reads the header, the states and the windows into out. Returns 0 or -1
 * with err set. */
static int sr__load_sections(sr_ckpt_reader_t *r, sr_ckpt_loaded_t *out, sr_mpbuf_t *buf, char *err, size_t errlen)
{
    int64_t nstates, nwindows;
    if (sr__load_header(r, out, buf, &nstates, &nwindows, err, errlen) < 0) return -1;
    /* The arrays grow as sections are read: the counts announced are not
     * sizes to reserve. */
    size_t cap = 0, wcap = 0, rcap = 0;
    for (int64_t i = 0; i < nstates; i++) {
        msgpack_object sh;
        size_t at = r->off;
        if (sr_checkpoint_next(r, &sh) != 1) {
            snprintf(err, errlen, "offset %zu: malformed state header", at);
            return -1;
        }
        sr_state_t **states = sr__grow(out->states, out->nstates, &cap, sizeof(*states));
        if (!states) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        out->states = states;
        sr_state_t *st = sr__load_state(r, &sh, at, buf, err, errlen);
        if (!st) return -1;
        out->states[out->nstates++] = st;
    }
    for (int64_t i = 0; i < nwindows; i++) {
        msgpack_object wh;
        size_t at = r->off;
        if (sr_checkpoint_next(r, &wh) != 1) {
            snprintf(err, errlen, "offset %zu: malformed window header", at);
            return -1;
        }
        sr_window_t **windows = sr__grow(out->windows, out->nwindows, &wcap, sizeof(*windows));
        if (windows) out->windows = windows;
        sr_state_t **results = windows ? sr__grow(out->results, out->nwindows, &rcap, sizeof(*results)) : NULL;
        if (!results) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        out->results = results;
        if (sr__load_window(r, &wh, at, out, buf, err, errlen) < 0) return -1;
    }
    if (r->off != r->end) {
        snprintf(err, errlen, "offset %zu: %zu bytes after the last section", r->off, r->end - r->off);
        return -1;
    }
    return 0;
}

int sr_checkpoint_load(const char *path, sr_ckpt_loaded_t *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    sr_ckpt_reader_t r;
    if (sr_checkpoint_open(&r, path, err, errlen) < 0) return -1;
    sr_mpbuf_t buf = {NULL, 0, 0};
    int rc = sr__load_sections(&r, out, &buf, err, errlen);
    sr_free(buf.data);
    sr_checkpoint_close(&r);
    if (rc < 0) sr_checkpoint_unload(out);
    return rc;
}

void sr_checkpoint_unload(sr_ckpt_loaded_t *out)
{
    for (size_t i = 0; i < out->nstates; i++) sr_state_free(out->states[i]);
    for (size_t i = 0; i < out->nwindows; i++) {
        sr_window_free(out->windows[i]);
        sr_state_free(out->results[i]);
    }
    sr_free(out->states);
    sr_free(out->windows);
    sr_free(out->results);
    sr_free(out->meta);
    memset(out, 0, sizeof(*out));
}
