/* sr_checkpoint: writing checkpoints through sr_io (so tests can make any
 * call fail) and reading their objects back from a mapped file. */
#include "sr_checkpoint.h"
#include "sr_alloc.h"
#include "sr_crc32c.h"
#include "sr_error.h"
#include "sr_io.h"
#include "sr_mpcheck.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define SR_CKPT_MAGIC "SRCK"
#define SR_CKPT_TRAILER "SREN"

/* -- Writing -- */

typedef struct sr__out {
    int fd;
    uint32_t crc;
    int failed;   /* errno of the first failed write, or 0 */
    size_t len;
    char buf[1 << 16];
} sr__out_t;

static void sr__flush(sr__out_t *o)
{
    if (o->len && !o->failed && sr_io_write_all(o->fd, o->buf, o->len) < 0) o->failed = errno ? errno : EIO;
    o->len = 0;
}

static int sr__out_write(void *data, const char *p, size_t n)
{
    sr__out_t *o = data;
    o->crc = sr_crc32c(o->crc, p, n);
    while (n) {
        size_t room = sizeof(o->buf) - o->len;
        size_t k = n < room ? n : room;
        memcpy(o->buf + o->len, p, k);
        o->len += k;
        p += k;
        n -= k;
        if (o->len == sizeof(o->buf)) sr__flush(o);
    }
    return 0;
}

static void sr__pack_cstr(msgpack_packer *pk, const char *s)
{
    size_t n = strlen(s);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

static void sr__pack_entry(msgpack_packer *pk, const sr_state_entry_t *e)
{
    msgpack_pack_array(pk, 3);
    /* Keys and values are msgpack already: written as they are. */
    pk->callback(pk->data, sr_state_entry_key(e), e->klen);
    pk->callback(pk->data, sr_state_entry_value(e), sr_state_entry_vlen(e));
    if (sr_wheel_armed(&e->timer)) msgpack_pack_int64(pk, e->timer.expiry);
    else msgpack_pack_nil(pk);
}

/* shards: NULL, or the nsh shards of the state (st the first): the same
 * bytes as the one state they split, partition by partition. */
static void sr__pack_state(msgpack_packer *pk, const sr_state_t *st, sr_state_t *const *shards, int nsh)
{
    size_t count = st->count;
    int64_t now = st->wheel.now;
    for (int k = 1; shards && k < nsh; k++) {
        count += shards[k]->count;
        if (shards[k]->wheel.now > now) now = shards[k]->wheel.now;
    }
    msgpack_pack_map(pk, 5);
    sr__pack_cstr(pk, "state");
    sr__pack_cstr(pk, st->name);
    sr__pack_cstr(pk, "count");
    msgpack_pack_uint64(pk, count);
    sr__pack_cstr(pk, "timeout_ms");
    msgpack_pack_int64(pk, st->timeout_ms);
    sr__pack_cstr(pk, "now_ms");
    msgpack_pack_int64(pk, now);
    sr__pack_cstr(pk, "partitions");
    msgpack_pack_int(pk, st->nparts);
    if (!shards) {
        sr_state_iter_t it = {0, 0};
        for (sr_state_entry_t *e; (e = sr_state_next((sr_state_t *)st, &it));) sr__pack_entry(pk, e);
        return;
    }
    for (int p = 0; p < st->nparts; p++) {
        sr_state_iter_t it = {p, 0};
        for (sr_state_entry_t *e; (e = sr_state_next(shards[p % nsh], &it)) && it.part == p;) sr__pack_entry(pk, e);
    }
}

/* split: NULL, or the parts of the window (w the first's slices), merged
 * here, slice by slice; result_shards: the parts' results (result the
 * first). Returns 0, or SR_EINVAL when a part is malformed (the file is
 * not written then). */
static int sr__pack_window(msgpack_packer *pk, const sr_window_t *w, const sr_state_t *result,
                           const sr_window_split_t *split, sr_state_t *const *result_shards)
{
    msgpack_pack_map(pk, 3);
    sr__pack_cstr(pk, "window");
    sr__pack_cstr(pk, w->name);
    sr__pack_cstr(pk, "nslices");
    msgpack_pack_uint64(pk, w->n);
    sr__pack_cstr(pk, "result");
    if (result) msgpack_pack_true(pk); else msgpack_pack_false(pk);
    for (size_t i = 0; i < w->n; i++) {
        sr_slice_t one;
        const sr_slice_t *s = sr_window_slice(w, i);
        if (split) {
            sr_window_split_slice(split, i, &one);
            s = &one;
        }
        msgpack_pack_array(pk, 3);
        msgpack_pack_int64(pk, s->time_ms);
        msgpack_pack_uint32(pk, s->count);
        msgpack_pack_bin(pk, s->len);
        if (!split) {
            msgpack_pack_bin_body(pk, s->data, s->len);
            continue;
        }
        int rc = sr_window_split_emit(split, i, pk->callback, pk->data);
        if (rc < 0) return rc;
    }
    if (result) sr__pack_state(pk, result, split ? result_shards : NULL, split ? split->n : 0);
    return SR_OK;
}

static void sr__fail(char *err, size_t errlen, const char *op, const char *path, int e)
{
    snprintf(err, errlen, "%s %s: %s", op, path, strerror(e));
}

int sr_checkpoint_write(const char *dir, const char *name, const sr_ckpt_content_t *c,
                        char *err, size_t errlen)
{
    char path[4096], tmp[4200];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    sr__out_t *o = sr_malloc(sizeof(*o));
    if (!o) {
        snprintf(err, errlen, "write %s: %s", tmp, sr_strerror(SR_ENOMEM));
        return -1;
    }
    o->fd = sr_io.open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (o->fd < 0) {
        sr__fail(err, errlen, "open", tmp, errno);
        sr_free(o);
        return -1;
    }
    o->crc = 0;
    o->failed = 0;
    o->len = 0;
    msgpack_packer pk;
    msgpack_packer_init(&pk, o, sr__out_write);
    unsigned char head[5] = {'S', 'R', 'C', 'K', SR_CKPT_VERSION};
    sr__out_write(o, (const char *)head, sizeof(head));
    msgpack_pack_map(&pk, 3);
    sr__pack_cstr(&pk, "meta");
    if (c->meta_len) pk.callback(pk.data, c->meta, c->meta_len);
    else msgpack_pack_map(&pk, 0);
    sr__pack_cstr(&pk, "nstates");
    msgpack_pack_uint64(&pk, c->nstates);
    sr__pack_cstr(&pk, "nwindows");
    msgpack_pack_uint64(&pk, c->nwindows);
    for (size_t i = 0; i < c->nstates; i++)
        sr__pack_state(&pk, c->states[i], c->shards ? c->shards[i] : NULL, c->shards ? c->nshards[i] : 0);
    int bad = -1; /* a split window whose parts are malformed */
    for (size_t i = 0; i < c->nwindows && bad < 0; i++) {
        const sr_window_split_t *split = c->splits ? c->splits[i] : NULL;
        if (sr__pack_window(&pk, c->windows[i], c->results ? c->results[i] : NULL, split,
                            split ? c->result_shards[i] : NULL) < 0)
            bad = (int)i;
    }
    unsigned char trailer[8] = {'S', 'R', 'E', 'N'};
    uint32_t crc = o->crc;
    for (int i = 0; i < 4; i++) trailer[4 + i] = (unsigned char)(crc >> (8 * i));
    sr__out_write(o, (const char *)trailer, sizeof(trailer));
    sr__flush(o);
    int e = o->failed;
    const char *op = "write";
    if (!e && sr_io.fsync(o->fd) < 0) { e = errno; op = "fsync"; }
    if (sr_io.close(o->fd) < 0 && !e) { e = errno; op = "close"; }
    sr_free(o);
    if (bad >= 0) {
        snprintf(err, errlen, "write %s: window %s: its workers' parts are malformed", tmp, c->windows[bad]->name);
        unlink(tmp);
        return -1;
    }
    if (e) {
        sr__fail(err, errlen, op, tmp, e);
        unlink(tmp);
        return -1;
    }
    if (sr_io.rename(tmp, path) < 0) {
        sr__fail(err, errlen, "rename", tmp, errno);
        unlink(tmp);
        return -1;
    }
    if (sr_io_fsync_dir(dir) < 0) {
        /* The checkpoint is in place but may not survive a power loss. */
        sr__fail(err, errlen, "fsync directory", dir, errno);
        return -1;
    }
    return 0;
}

/* -- Reading -- */

int sr_checkpoint_open(sr_ckpt_reader_t *r, const char *path, char *err, size_t errlen)
{
    memset(r, 0, sizeof(*r));
    /* O_NONBLOCK: a FIFO named like a checkpoint must not hang the open. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        snprintf(err, errlen, "cannot open: %s", strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) < 0) {
        snprintf(err, errlen, "cannot stat: %s", strerror(errno));
        close(fd);
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "not a regular file");
        close(fd);
        return -1;
    }
    size_t size = (size_t)st.st_size;
    if (size < 5 + 8) {
        snprintf(err, errlen, "truncated: %zu bytes, too short for a checkpoint", size);
        close(fd);
        return -1;
    }
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) {
        snprintf(err, errlen, "cannot map: %s", strerror(errno));
        return -1;
    }
    r->data = map;
    r->size = size;
    const unsigned char *b = map;
    if (memcmp(b, SR_CKPT_MAGIC, 4) != 0) {
        snprintf(err, errlen, "bad magic at offset 0: not a streamrun checkpoint");
        goto fail;
    }
    if (b[4] != SR_CKPT_VERSION) {
        snprintf(err, errlen, "format version %d is not supported (this streamrun reads %d)", b[4], SR_CKPT_VERSION);
        goto fail;
    }
    r->end = size - 8;
    if (memcmp(b + r->end, SR_CKPT_TRAILER, 4) != 0) {
        snprintf(err, errlen, "truncated: no trailer at offset %zu (file cut short?)", r->end);
        goto fail;
    }
    uint32_t want = 0;
    for (int i = 0; i < 4; i++) want |= (uint32_t)b[r->end + 4 + i] << (8 * i);
    uint32_t got = sr_crc32c(0, b, r->end);
    if (got != want) {
        snprintf(err, errlen, "checksum mismatch over bytes 0..%zu: stored %08x, computed %08x", r->end, want, got);
        goto fail;
    }
    r->off = 5;
    msgpack_zone_init(&r->zone, 4096);
    return 0;
fail:
    munmap(r->data, r->size);
    r->data = NULL;
    return -1;
}

size_t sr_checkpoint_left(const sr_ckpt_reader_t *r) { return r->off < r->end ? r->end - r->off : 0; }

int sr_checkpoint_next(sr_ckpt_reader_t *r, msgpack_object *obj)
{
    if (r->off >= r->end) return 0;
    msgpack_zone_clear(&r->zone);
    /* Checked first: msgpack-c reserves what a length announces. Objects
     * are values wrapped in one container (a state entry, the header's
     * metadata). */
    long len = sr_mpcheck(r->data + r->off, r->end - r->off, SR_MP_MAX_DEPTH + 1);
    if (len < 0) return -1;
    size_t off = r->off;
    msgpack_unpack_return rc = msgpack_unpack(r->data, r->off + (size_t)len, &off, &r->zone, obj);
    if (rc != MSGPACK_UNPACK_SUCCESS && rc != MSGPACK_UNPACK_EXTRA_BYTES) return -1;
    r->off = off;
    return 1;
}

void sr_checkpoint_close(sr_ckpt_reader_t *r)
{
    if (r->data) {
        munmap(r->data, r->size);
        msgpack_zone_destroy(&r->zone);
    }
    r->data = NULL;
}
