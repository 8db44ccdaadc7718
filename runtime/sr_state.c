/* sr_state: partitioned hash tables of msgpack keys and values, with
 * linear probing and backward-shift deletion (no tombstones), one heap
 * block per entry holding its key, value and wheel node. */
#include "sr_state.h"
#include "sr_alloc.h"
#include "sr_error.h"

#include <math.h>
#include <msgpack.h>
#include <stddef.h>
#include <string.h>

#define SR_STATE_MIN_CAP 16

uint64_t sr_state_hash(const char *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ULL ^ n;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 0x100000001b3ULL;
    }
    /* splitmix64 finalizer: FNV's low bits alone probe badly */
    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9ULL;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebULL;
    h ^= h >> 31;
    return h;
}

/* Slots hold an entry's address (48 bits on x86-64 and arm64) and the top
 * 16 bits of its key's hash: a probe compares tags before it touches an
 * entry, so a lookup costs about one cache miss. */
#define SR__ADDR ((uintptr_t)0x0000FFFFFFFFFFFFULL)

static inline sr_state_entry_t *sr__slot_entry(uintptr_t v) { return (sr_state_entry_t *)(v & SR__ADDR); }
static inline uintptr_t sr__slot(sr_state_entry_t *e, uint64_t h)
{
    return (uintptr_t)e | ((uintptr_t)(h >> 48) << 48);
}

static sr_state_entry_t *sr__entry_of(sr_wheel_node_t *n)
{
    return n ? (sr_state_entry_t *)((char *)n - offsetof(sr_state_entry_t, timer)) : NULL;
}

sr_state_t *sr_state_new(const char *name, int partitions, int64_t timeout_ms, int64_t now_ms)
{
    if (partitions < 1) partitions = 1;
    sr_state_t *st = sr_calloc(1, sizeof(*st));
    if (!st) return NULL;
    st->name = sr_strdup(name ? name : "");
    if (!st->name) goto fail;
    /* The partitions come with the first key: a state without keys (or a
     * checkpoint's header announcing one) costs no table. */
    st->nparts = partitions;
    st->timeout_ms = timeout_ms > 0 ? timeout_ms : 0;
    sr_wheel_init(&st->wheel, now_ms);
    return st;
fail:
    sr_free(st->name);
    sr_free(st->parts);
    sr_free(st);
    return NULL;
}

void sr_state_free(sr_state_t *st)
{
    if (!st) return;
    for (int p = 0; st->parts && p < st->nparts; p++) {
        sr_state_part_t *part = &st->parts[p];
        for (size_t i = 0; i < part->cap; i++) sr_free(sr__slot_entry(part->slots[i]));
        sr_free(part->slots);
    }
    sr_free(st->parts);
    sr_free(st->name);
    sr_free(st);
}

static sr_state_part_t *sr__part(sr_state_t *st, uint64_t h)
{
    return &st->parts[(h >> 40) % (uint64_t)st->nparts];
}

/* Slot index of the key in part, or of the empty slot where it would go. */
static size_t sr__probe(const sr_state_part_t *part, uint64_t h, const char *key, size_t klen)
{
    size_t mask = part->cap - 1, i = (size_t)h & mask;
    uintptr_t tag = (uintptr_t)(h >> 48) << 48;
    for (;;) {
        uintptr_t v = part->slots[i];
        if (!v) return i;
        if ((v & ~SR__ADDR) == tag) {
            sr_state_entry_t *e = sr__slot_entry(v);
            if (e->klen == klen && memcmp(e->data, key, klen) == 0) return i;
        }
        i = (i + 1) & mask;
    }
}

static int sr__grow(sr_state_part_t *part)
{
    size_t cap = part->cap ? part->cap * 2 : SR_STATE_MIN_CAP;
    uintptr_t *slots = sr_calloc(cap, sizeof(*slots));
    if (!slots) return SR_ENOMEM;
    for (size_t i = 0; i < part->cap; i++) {
        uintptr_t v = part->slots[i];
        if (!v) continue;
        sr_state_entry_t *e = sr__slot_entry(v);
        size_t j = (size_t)sr_state_hash(e->data, e->klen) & (cap - 1);
        while (slots[j]) j = (j + 1) & (cap - 1);
        slots[j] = v;
    }
    sr_free(part->slots);
    part->slots = slots;
    part->cap = cap;
    return SR_OK;
}

static int sr__parts(sr_state_t *st)
{
    if (st->parts) return SR_OK;
    st->parts = sr_calloc((size_t)st->nparts, sizeof(*st->parts));
    return st->parts ? SR_OK : SR_ENOMEM;
}

int sr_state_reserve(sr_state_t *st, size_t n)
{
    st->last = NULL;
    /* Fewer keys than partitions: tables grow as keys come (a few keys per
     * table cluster little), so what is reserved never exceeds what n keys
     * need. */
    if (n < (size_t)st->nparts * SR_STATE_MIN_CAP / 2) return SR_OK;
    if (sr__parts(st) < 0) return SR_ENOMEM;
    /* Partitions share keys about evenly; leave room for the skew. */
    size_t per = n / (size_t)st->nparts + n / (size_t)st->nparts / 8 + 16;
    for (int p = 0; p < st->nparts; p++)
        while (st->parts[p].cap * 3 < per * 4)
            if (sr__grow(&st->parts[p]) < 0) return SR_ENOMEM;
    return SR_OK;
}

sr_state_entry_t *sr_state_get(sr_state_t *st, const char *key, size_t klen)
{
    if (!st->parts) return NULL;
    uint64_t h = sr_state_hash(key, klen);
    sr_state_part_t *part = sr__part(st, h);
    if (!part->cap) return NULL;
    return sr__slot_entry(part->slots[sr__probe(part, h, key, klen)]);
}

int sr_state_put(sr_state_t *st, const char *key, size_t klen, const char *value, size_t vlen,
                 sr_state_entry_t **out)
{
    st->last = NULL;
    if (klen > SR_STATE_MAX_KEY || vlen > UINT32_MAX) return SR_EINVAL;
    if (!st->parts && sr__parts(st) < 0) return SR_ENOMEM;
    uint64_t h = sr_state_hash(key, klen);
    sr_state_part_t *part = sr__part(st, h);
    /* Keep the load factor under 3/4. */
    if ((part->count + 1) * 4 > part->cap * 3 && sr__grow(part) < 0) return SR_ENOMEM;
    size_t i = sr__probe(part, h, key, klen);
    sr_state_entry_t *e = sr__slot_entry(part->slots[i]);
    if (e && e->vlen == vlen) {
        memcpy(e->data + klen, value, vlen);
    } else if (e) {
        int armed = sr_wheel_armed(&e->timer);
        int64_t expiry = e->timer.expiry;
        sr_wheel_cancel(&st->wheel, &e->timer);
        sr_state_entry_t *ne = sr_realloc(e, SR_STATE_ENTRY_HEAD + klen + vlen);
        if (!ne) {
            if (armed) sr_wheel_add(&st->wheel, &e->timer, expiry);
            return SR_ENOMEM;
        }
        e = ne;
        sr_wheel_node_init(&e->timer);
        st->data_bytes = st->data_bytes - e->vlen + vlen;
        e->vlen = (uint32_t)vlen;
        memcpy(e->data + klen, value, vlen);
        part->slots[i] = sr__slot(e, h);
        if (armed) sr_wheel_add(&st->wheel, &e->timer, expiry);
    } else {
        e = sr_malloc(SR_STATE_ENTRY_HEAD + klen + vlen);
        if (!e) return SR_ENOMEM;
        sr_wheel_node_init(&e->timer);
        e->klen = (uint16_t)klen;
        e->vlen = (uint32_t)vlen;
        memcpy(e->data, key, klen);
        memcpy(e->data + klen, value, vlen);
        part->slots[i] = sr__slot(e, h);
        part->count++;
        st->count++;
        st->data_bytes += klen + vlen;
    }
    if (out) *out = e;
    return SR_OK;
}

int sr_state_remove(sr_state_t *st, const char *key, size_t klen)
{
    st->last = NULL;
    if (!st->parts) return 0;
    uint64_t h = sr_state_hash(key, klen);
    sr_state_part_t *part = sr__part(st, h);
    if (!part->cap) return 0;
    size_t mask = part->cap - 1, i = sr__probe(part, h, key, klen);
    sr_state_entry_t *e = sr__slot_entry(part->slots[i]);
    if (!e) return 0;
    sr_wheel_cancel(&st->wheel, &e->timer);
    st->data_bytes -= e->klen + e->vlen;
    sr_free(e);
    part->slots[i] = 0;
    part->count--;
    st->count--;
    /* Backward shift: pull later entries of the run into the hole when
     * their home slot is not in (hole, their slot]. */
    size_t hole = i, j = (i + 1) & mask;
    while (part->slots[j]) {
        sr_state_entry_t *m = sr__slot_entry(part->slots[j]);
        size_t home = (size_t)sr_state_hash(m->data, m->klen) & mask;
        int stays = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
        if (!stays) {
            part->slots[hole] = part->slots[j];
            part->slots[j] = 0;
            hole = j;
        }
        j = (j + 1) & mask;
    }
    return 1;
}

void sr_state_touch(sr_state_t *st, sr_state_entry_t *e, int64_t now_ms)
{
    if (!st->timeout_ms) return;
    /* Idle for longer than the timeout: due at the first ms past it. */
    sr_wheel_add(&st->wheel, &e->timer, now_ms + st->timeout_ms + 1);
}

void sr_state_arm(sr_state_t *st, sr_state_entry_t *e, int64_t expiry_ms)
{
    sr_wheel_add(&st->wheel, &e->timer, expiry_ms);
}

sr_state_entry_t *sr_state_expire(sr_state_t *st, int64_t now_ms)
{
    sr_wheel_node_t *n = sr_wheel_advance(&st->wheel, now_ms);
    return sr__entry_of(n);
}

sr_state_entry_t *sr_state_next(sr_state_t *st, sr_state_iter_t *it)
{
    while (st->parts && it->part < st->nparts) {
        sr_state_part_t *part = &st->parts[it->part];
        while (it->slot < part->cap) {
            sr_state_entry_t *e = sr__slot_entry(part->slots[it->slot++]);
            if (e) return e;
        }
        it->part++;
        it->slot = 0;
    }
    return NULL;
}

size_t sr_state_memory(const sr_state_t *st)
{
    if (!st->parts) return sizeof(*st);
    size_t bytes = sizeof(*st) + (size_t)st->nparts * sizeof(*st->parts);
    for (int p = 0; p < st->nparts; p++) bytes += st->parts[p].cap * sizeof(uintptr_t);
    return bytes + st->count * SR_STATE_ENTRY_HEAD + st->data_bytes;
}

/* -- Numbers by FFI -- */

typedef struct sr__bytes {
    char buf[64];
    size_t len;
} sr__bytes_t;

static int sr__bytes_write(void *data, const char *p, size_t n)
{
    sr__bytes_t *b = data;
    if (b->len + n > sizeof(b->buf)) return -1;
    memcpy(b->buf + b->len, p, n);
    b->len += n;
    return 0;
}

/* msgpack of a number as the Lua binding packs it: whole numbers as
 * integers, the others as doubles. */
static void sr__pack_num(msgpack_packer *pk, double x)
{
    if (x == floor(x) && x >= -9.2233720368547758e18 && x < 9.2233720368547758e18) msgpack_pack_int64(pk, (int64_t)x);
    else msgpack_pack_double(pk, x);
}

/* The key's msgpack bytes: small keys in kb, long strings by reference. */
static const char *sr__key(int ktype, const char *s, size_t len, double num, sr__bytes_t *kb, size_t *klen,
                           char **heap)
{
    msgpack_packer pk;
    kb->len = 0;
    *heap = NULL;
    msgpack_packer_init(&pk, kb, sr__bytes_write);
    if (ktype == SR_KEY_STRING) {
        if (len + 9 > sizeof(kb->buf)) {
            *heap = sr_malloc(len + 9);
            if (!*heap) return NULL;
            sr__bytes_t tmp = {{0}, 0};
            msgpack_packer_init(&pk, &tmp, sr__bytes_write);
            msgpack_pack_str(&pk, len);
            memcpy(*heap, tmp.buf, tmp.len);
            memcpy(*heap + tmp.len, s, len);
            *klen = tmp.len + len;
            return *heap;
        }
        msgpack_pack_str(&pk, len);
        msgpack_pack_str_body(&pk, s, len);
    } else if (ktype == SR_KEY_NUMBER) {
        sr__pack_num(&pk, num);
    } else {
        if (num != 0) msgpack_pack_true(&pk); else msgpack_pack_false(&pk);
    }
    *klen = kb->len;
    return kb->buf;
}

int sr_state_get_number(sr_state_t *st, int ktype, const char *s, size_t len, double num, double *out)
{
    sr__bytes_t kb;
    size_t klen;
    char *heap;
    const char *key = sr__key(ktype, s, len, num, &kb, &klen, &heap);
    if (!key) return -1;
    sr_state_entry_t *e = sr_state_get(st, key, klen);
    sr_free(heap);
    st->last = e;
    st->last_ktype = ktype;
    st->last_s = s;
    st->last_len = len;
    st->last_num = num;
    if (!e) return 0;
    /* Only numbers are read here: fixints, ints and uints of every width,
     * floats 32 and 64 (the encodings msgpack-c writes for numbers). */
    const unsigned char *v = (const unsigned char *)sr_state_entry_value(e);
    size_t n = e->vlen;
    if (n == 1 && v[0] <= 0x7f) { *out = v[0]; return 1; }
    if (n == 1 && v[0] >= 0xe0) { *out = (int8_t)v[0]; return 1; }
    uint64_t u = 0;
    if (n == 9 && (v[0] == 0xcb || v[0] == 0xcf || v[0] == 0xd3)) {
        for (int i = 1; i <= 8; i++) u = (u << 8) | v[i];
        if (v[0] == 0xcb) { double d; memcpy(&d, &u, 8); *out = d; }
        else if (v[0] == 0xcf) *out = (double)u;
        else *out = (double)(int64_t)u;
        return 1;
    }
    if (n == 5 && (v[0] == 0xca || v[0] == 0xce || v[0] == 0xd2)) {
        for (int i = 1; i <= 4; i++) u = (u << 8) | v[i];
        uint32_t w = (uint32_t)u;
        if (v[0] == 0xca) { float f; memcpy(&f, &w, 4); *out = f; }
        else if (v[0] == 0xce) *out = w;
        else *out = (int32_t)w;
        return 1;
    }
    if (n == 3 && (v[0] == 0xcd || v[0] == 0xd1)) {
        uint16_t w = (uint16_t)((v[1] << 8) | v[2]);
        *out = v[0] == 0xcd ? (double)w : (double)(int16_t)w;
        return 1;
    }
    if (n == 2 && (v[0] == 0xcc || v[0] == 0xd0)) {
        *out = v[0] == 0xcc ? (double)v[1] : (double)(int8_t)v[1];
        return 1;
    }
    return -1;
}

/* Whether the key is the one sr_state_get_number just found: the same
 * Lua string (interned, so the same pointer) or the same number. */
static int sr__is_last(const sr_state_t *st, int ktype, const char *s, size_t len, double num)
{
    return st->last && ktype == st->last_ktype && len == st->last_len && s == st->last_s &&
           (ktype == SR_KEY_STRING || num == st->last_num);
}

int sr_state_put_number(sr_state_t *st, int ktype, const char *s, size_t len, double num, double value,
                        int64_t now_ms)
{
    sr__bytes_t kb, vb = {{0}, 0};
    if (sr__is_last(st, ktype, s, len, num)) {
        msgpack_packer vp;
        msgpack_packer_init(&vp, &vb, sr__bytes_write);
        sr__pack_num(&vp, value);
        sr_state_entry_t *e = st->last;
        if (e->vlen == vb.len) {
            memcpy(e->data + e->klen, vb.buf, vb.len);
            if (now_ms >= 0) sr_state_touch(st, e, now_ms);
            return SR_OK;
        }
        vb.len = 0;
    }
    size_t klen;
    char *heap;
    const char *key = sr__key(ktype, s, len, num, &kb, &klen, &heap);
    if (!key) return SR_ENOMEM;
    msgpack_packer pk;
    msgpack_packer_init(&pk, &vb, sr__bytes_write);
    sr__pack_num(&pk, value);
    sr_state_entry_t *e;
    int rc = sr_state_put(st, key, klen, vb.buf, vb.len, &e);
    sr_free(heap);
    if (rc == 0 && now_ms >= 0) sr_state_touch(st, e, now_ms);
    return rc;
}

int sr_state_touch_key(sr_state_t *st, int ktype, const char *s, size_t len, double num, int64_t now_ms)
{
    if (sr__is_last(st, ktype, s, len, num)) {
        sr_state_touch(st, st->last, now_ms);
        return 1;
    }
    sr__bytes_t kb;
    size_t klen;
    char *heap;
    const char *key = sr__key(ktype, s, len, num, &kb, &klen, &heap);
    if (!key) return 0;
    sr_state_entry_t *e = sr_state_get(st, key, klen);
    sr_free(heap);
    if (e) sr_state_touch(st, e, now_ms);
    return e != NULL;
}
