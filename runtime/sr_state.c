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

/* An entry with 8 bytes of its key as a big-endian number (zeros past the
 * end), from the first byte where the due keys differ: most comparisons of
 * the sort never touch the entries. */
typedef struct sr_state_due {
    uint64_t prefix;
    sr_state_entry_t *e;
} sr_state_due_t;


/* FNV-1a over the bytes a[0..na) then b[0..nb), as over one run of bytes. */
static inline uint64_t sr__hash2(const unsigned char *a, size_t na, const unsigned char *b, size_t nb)
{
    uint64_t h = 0xcbf29ce484222325ULL ^ (na + nb);
    for (size_t i = 0; i < na; i++) {
        h ^= a[i];
        h *= 0x100000001b3ULL;
    }
    for (size_t i = 0; i < nb; i++) {
        h ^= b[i];
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

uint64_t sr_state_hash(const char *p, size_t n)
{
    return sr__hash2((const unsigned char *)p, n, NULL, 0);
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

/* Bytes of an entry holding klen and vlen bytes. */
static size_t sr__entry_size(size_t klen, size_t vlen)
{
    return SR_STATE_ENTRY_HEAD + klen + vlen + (vlen >= SR_STATE_VLEN_LONG ? sizeof(uint32_t) : 0);
}

static size_t sr__esize(const sr_state_entry_t *e) { return sr__entry_size(e->klen, sr_state_entry_vlen(e)); }

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
    st->part_mul = UINT64_MAX / (uint64_t)partitions + 1;
    st->timeout_ms = timeout_ms > 0 ? timeout_ms : 0;
    sr_wheel_init(&st->wheel, now_ms);
    sr_slab_init(&st->slab);
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
    sr_state_release(st);
    sr_wheel_close(&st->wheel);
    for (size_t i = 0; st->due_owned && i < st->ndue; i++) {
        sr_state_entry_t *e = st->due[i].e;
        if (e && sr__esize(e) > SR_SLAB_MAX) sr_slab_free(&st->slab, e, sr__esize(e));
    }
    for (int p = 0; st->parts && p < st->nparts; p++) {
        sr_state_part_t *part = &st->parts[p];
        /* Entries too large for the slab were each allocated alone. */
        for (size_t i = 0; st->slab.large && i < part->cap; i++) {
            sr_state_entry_t *e = sr__slot_entry(part->slots[i]);
            if (e && sr__esize(e) > SR_SLAB_MAX) sr_slab_free(&st->slab, e, sr__esize(e));
        }
        sr_free(part->slots);
    }
    sr_slab_close(&st->slab);
    sr_free(st->found);
    sr_free(st->scratch);
    sr_free(st->held);
    sr_free(st->keys);
    sr_free(st->due);
    sr_free(st->parts);
    sr_free(st->name);
    sr_free(st);
}

/* (h >> 40) % nparts by two multiplications, not a division (Lemire's
 * fastmod, exact for dividends under 2^32): every lookup takes it. */
static inline sr_state_part_t *sr__part(sr_state_t *st, uint64_t h)
{
    uint64_t low = st->part_mul * (h >> 40);
    return &st->parts[(size_t)(((unsigned __int128)low * (uint64_t)st->nparts) >> 64)];
}

int sr_state_partition(const char *key, size_t klen, int nparts)
{
    return (int)((sr_state_hash(key, klen) >> 40) % (uint64_t)nparts); /* as sr__part */
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
    /* Each entry is read for its key's hash: fetched some slots ahead,
     * so the cache misses of many entries overlap. */
    for (size_t i = 0; i < part->cap; i++) {
        if (i + 12 < part->cap && part->slots[i + 12]) __builtin_prefetch(sr__slot_entry(part->slots[i + 12]));
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


/* Sets e's value length field (the entry has room for it). */
static void sr__set_value(sr_state_entry_t *e, const char *value, size_t vlen)
{
    char *v = e->data + e->klen;
    if (vlen >= SR_STATE_VLEN_LONG) {
        uint32_t n = (uint32_t)vlen;
        e->vlen = SR_STATE_VLEN_LONG;
        memcpy(v, &n, sizeof(n));
        v += sizeof(n);
    } else {
        e->vlen = (uint16_t)vlen;
    }
    memcpy(v, value, vlen);
}

/* An entry removed or moved: freed now, or at sr_state_release while a
 * batch's found entries may point at it (marked gone, unarmed). */
#define SR__GONE INT64_MIN
static void sr__bury(sr_state_t *st, sr_state_entry_t *e)
{
    if (!st->holding) {
        sr_slab_free(&st->slab, e, sr__esize(e));
        return;
    }
    e->timer.pprev = NULL;
    e->timer.expiry = SR__GONE;
    e->timer.next = (sr_wheel_node_t *)st->graveyard;
    st->graveyard = e;
}

static inline int sr__gone(const sr_state_entry_t *e)
{
    return !e->timer.pprev && e->timer.expiry == SR__GONE;
}

/* Sets the value of the entry in slot i of part, moving it when its size
 * changes. Returns the entry, or NULL when out of memory (it keeps its
 * value). */
static sr_state_entry_t *sr__replace(sr_state_t *st, sr_state_part_t *part, size_t i, uint64_t h,
                                     sr_state_entry_t *e, const char *value, size_t vlen)
{
    size_t old = sr_state_entry_vlen(e);
    if (old == vlen) {
        memcpy((char *)sr_state_entry_value(e), value, vlen);
        return e;
    }
    size_t klen = e->klen, size = sr__entry_size(klen, vlen);
    int armed = sr_wheel_armed(&e->timer);
    int64_t expiry = e->timer.expiry;
    sr_state_entry_t *ne;
    ne = sr_slab_alloc(&st->slab, size);
    if (!ne) return NULL;
    memcpy(ne, e, SR_STATE_ENTRY_HEAD + klen);
    sr_wheel_cancel(&st->wheel, &e->timer);
    sr__bury(st, e);
    sr_wheel_node_init(&ne->timer);
    st->data_bytes = st->data_bytes - old + vlen;
    sr__set_value(ne, value, vlen);
    part->slots[i] = sr__slot(ne, h);
    if (armed) sr_wheel_add(&st->wheel, &ne->timer, expiry);
    return ne;
}

/* Puts a new key in the empty slot i of part. Returns the entry or NULL. */
static sr_state_entry_t *sr__insert(sr_state_t *st, sr_state_part_t *part, size_t i, uint64_t h,
                                    const char *key, size_t klen, const char *value, size_t vlen)
{
    sr_state_entry_t *e = sr_slab_alloc(&st->slab, sr__entry_size(klen, vlen));
    if (!e) return NULL;
    sr_wheel_node_init(&e->timer);
    e->klen = (uint16_t)klen;
    memcpy(e->data, key, klen);
    sr__set_value(e, value, vlen);
    part->slots[i] = sr__slot(e, h);
    part->count++;
    st->count++;
    st->data_bytes += klen + vlen;
    st->inserted++;
    return e;
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
    e = e ? sr__replace(st, part, i, h, e, value, vlen) : sr__insert(st, part, i, h, key, klen, value, vlen);
    if (!e) return SR_ENOMEM;
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
    st->data_bytes -= e->klen + sr_state_entry_vlen(e);
    sr__bury(st, e);
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
    /* Idle for longer than the timeout: due at the first ms past it. A
     * later deadline leaves the node where it is (no list is touched: the
     * wheel moves it when its slot comes). */
    sr_wheel_extend(&st->wheel, &e->timer, now_ms + st->timeout_ms + 1);
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

/* -- Due lists in key order -- */

static __thread size_t due_skip; /* the due keys' common leading bytes, while sorting */

static int sr__cmp_due(const sr_state_due_t *x, const sr_state_due_t *y)
{
    if (x->prefix != y->prefix) return x->prefix < y->prefix ? -1 : 1;
    size_t n = x->e->klen < y->e->klen ? x->e->klen : y->e->klen;
    int c = memcmp(x->e->data + due_skip, y->e->data + due_skip, n - due_skip);
    return c ? c : (x->e->klen > y->e->klen) - (x->e->klen < y->e->klen);
}

/* Heapsort of a[0..n), the fallback of sr__qsort_due. */
static void sr__sift(sr_state_due_t *a, size_t i, size_t n)
{
    sr_state_due_t x = a[i];
    for (size_t c; (c = 2 * i + 1) < n; i = c) {
        if (c + 1 < n && sr__cmp_due(&a[c], &a[c + 1]) < 0) c++;
        if (sr__cmp_due(&x, &a[c]) >= 0) break;
        a[i] = a[c];
    }
    a[i] = x;
}

static void sr__heapsort_due(sr_state_due_t *a, size_t n)
{
    for (size_t i = n / 2; i-- > 0;) sr__sift(a, i, n);
    for (size_t end = n; end > 1;) {
        sr_state_due_t t = a[0];
        a[0] = a[--end];
        a[end] = t;
        sr__sift(a, 0, end);
    }
}

/* Introsort, in place: qsort would allocate a copy of the array (as large
 * again as the due list, every key's at the end of bounded input). */
static void sr__qsort_due(sr_state_due_t *a, size_t n, int depth)
{
    while (n > 16) {
        if (depth-- == 0) {
            sr__heapsort_due(a, n);
            return;
        }
        sr_state_due_t t, *m = &a[n / 2], *z = &a[n - 1];
        /* Median of three at a[0], the pivot then in the middle. */
        if (sr__cmp_due(m, a) < 0) { t = *m; *m = *a; *a = t; }
        if (sr__cmp_due(z, m) < 0) { t = *z; *z = *m; *m = t; }
        if (sr__cmp_due(m, a) < 0) { t = *m; *m = *a; *a = t; }
        sr_state_due_t pivot = *m;
        size_t i = 0, j = n - 1;
        for (;;) {
            while (sr__cmp_due(&a[i], &pivot) < 0) i++;
            while (sr__cmp_due(&pivot, &a[j]) < 0) j--;
            if (i >= j) break;
            t = a[i]; a[i] = a[j]; a[j] = t;
            i++;
            j--;
        }
        /* a[0..j] <= pivot <= a[j+1..n): the smaller side recursively. */
        size_t left = j + 1;
        if (left < n - left) {
            sr__qsort_due(a, left, depth);
            a += left;
            n -= left;
        } else {
            sr__qsort_due(a + left, n - left, depth);
            n = left;
        }
    }
    for (size_t i = 1; i < n; i++) {
        sr_state_due_t x = a[i];
        size_t j = i;
        for (; j > 0 && sr__cmp_due(&x, &a[j - 1]) < 0; j--) a[j] = a[j - 1];
        a[j] = x;
    }
}

/* Every key is armed and due (the end of bounded input): the table is
 * emptied at once. Its slots are read in order (the entries prefetched
 * ahead) instead of the wheel's lists (a cache miss per entry, one after
 * the other), each partition's slots freed as the due list grows, and the
 * due list owns the entries until sr_state_remove_due buries them. */
static int sr__drain(sr_state_t *st, int64_t now_ms, size_t *n)
{
    size_t k = 0;
    for (int p = 0; p < st->nparts; p++) {
        sr_state_part_t *part = &st->parts[p];
        if (k + part->count > st->due_cap) {
            sr_state_due_t *d = sr_realloc(st->due, (k + part->count) * sizeof(*d));
            if (!d) {
                /* The keys taken so far are the due ones, off the wheel. */
                for (size_t i = 0; i < k; i++) sr_wheel_cancel(&st->wheel, &st->due[i].e->timer);
                goto out;
            }
            st->due = d;
            st->due_cap = k + part->count;
        }
        for (size_t i = 0; i < part->cap; i++) {
            if (i + 16 < part->cap && part->slots[i + 16]) __builtin_prefetch(sr__slot_entry(part->slots[i + 16]));
            sr_state_entry_t *e = sr__slot_entry(part->slots[i]);
            if (!e) continue;
            st->data_bytes -= e->klen + sr_state_entry_vlen(e);
            st->due[k++].e = e;
        }
        st->count -= part->count;
        sr_free(part->slots);
        part->slots = NULL;
        part->cap = part->count = 0;
    }
    sr_free(st->parts);
    st->parts = NULL;
    sr_wheel_clear(&st->wheel, now_ms);
    for (size_t i = 0; i < k; i++) st->due[i].e->timer.pprev = NULL;
out:
    st->last = NULL;
    st->due_owned = 1;
    *n = k;
    return 0;
}

/* Orders the due list's k entries by key. */
static void sr__sort_due(sr_state_t *st, size_t k)
{
    if (!k) return;
    /* The keys' common leading bytes, then 8 bytes after them as the
     * prefix, the entries prefetched ahead. */
    const sr_state_entry_t *first = st->due[0].e;
    size_t skip = first->klen;
    for (size_t d = 0; d < k; d++) {
        if (d + 16 < k) __builtin_prefetch(st->due[d + 16].e->data);
        const sr_state_entry_t *e = st->due[d].e;
        size_t m = e->klen < skip ? e->klen : skip, j = 0;
        while (j < m && e->data[j] == first->data[j]) j++;
        skip = j;
    }
    for (size_t d = 0; d < k; d++) {
        if (d + 16 < k) __builtin_prefetch(st->due[d + 16].e->data);
        const sr_state_entry_t *e = st->due[d].e;
        uint64_t x = 0;
        for (size_t i = skip; i < skip + 8; i++) x = x << 8 | (i < e->klen ? (unsigned char)e->data[i] : 0);
        st->due[d].prefix = x;
    }
    due_skip = skip;
    sr__qsort_due(st->due, k, 2 * (int)(64 - __builtin_clzll((unsigned long long)k)));
}

int sr_state_expire_sorted(sr_state_t *st, int64_t now_ms, size_t *n)
{
    *n = st->ndue = 0;
    st->due_owned = 0;
    size_t k;
    if (st->parts && st->count && st->wheel.count == st->count && now_ms >= st->wheel.latest) {
        sr__drain(st, now_ms, &k);
        sr__sort_due(st, k);
        *n = st->ndue = k;
        return 0;
    }
    size_t armed = st->wheel.count;
    sr_state_entry_t *list = sr_state_expire(st, now_ms);
    k = armed - st->wheel.count;
    if (!k) return 0;
    if (k > st->due_cap) {
        sr_free(st->due);
        st->due = sr_malloc(k * sizeof(*st->due));
        st->due_cap = st->due ? k : 0;
        if (!st->due) {
            /* Back on the wheel, due at the next expiry. */
            for (sr_state_entry_t *e = list, *next; e; e = next) {
                next = sr__entry_of(e->timer.next);
                e->timer.pprev = NULL;
                sr_wheel_add(&st->wheel, &e->timer, e->timer.expiry);
            }
            return SR_ENOMEM;
        }
    }
    k = 0;
    for (sr_state_entry_t *e = list; e; e = sr__entry_of(e->timer.next)) st->due[k++].e = e;
    sr__sort_due(st, k);
    *n = st->ndue = k;
    return 0;
}

sr_state_entry_t *sr_state_due(const sr_state_t *st, size_t i)
{
    return i < st->ndue ? st->due[i].e : NULL;
}

void sr_state_remove_due(sr_state_t *st, size_t from, size_t n)
{
    for (size_t i = from; i < from + n && i < st->ndue; i++) {
        if (i + 16 < st->ndue && st->due[i + 16].e) __builtin_prefetch(st->due[i + 16].e);
        sr_state_entry_t *e = st->due[i].e;
        if (!e) continue;
        st->due[i].e = NULL;
        if (st->due_owned) sr__bury(st, e);
        else sr_state_remove(st, e->data, e->klen); /* (the key is read before the entry is buried) */
    }
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

/* The entry's value if it is a number: 1 and *out, else -1. Only numbers
 * are read here: fixints, ints and uints of every width, floats 32 and 64
 * (the encodings msgpack-c writes for numbers). */
static int sr__entry_number(const sr_state_entry_t *e, double *out)
{
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

/* Big-endian bytes of u, n of them, at p. */
static void sr__be(unsigned char *p, uint64_t u, int n)
{
    for (int i = n - 1; i >= 0; i--, u >>= 8) p[i] = (unsigned char)u;
}

/* The msgpack bytes of a number as the Lua binding packs it (whole numbers
 * as msgpack-c's smallest integer, the others as doubles): their count. */
static size_t sr__num_bytes(double x, unsigned char *p)
{
    if (!(x == floor(x) && x >= -9.2233720368547758e18 && x < 9.2233720368547758e18)) {
        uint64_t u;
        memcpy(&u, &x, 8);
        p[0] = 0xcb;
        sr__be(p + 1, u, 8);
        return 9;
    }
    int64_t d = (int64_t)x;
    if (d >= -32 && d < 128) { p[0] = (unsigned char)(int8_t)d; return 1; }
    if (d < 0) {
        if (d >= -128) { p[0] = 0xd0; sr__be(p + 1, (uint64_t)d, 1); return 2; }
        if (d >= -32768) { p[0] = 0xd1; sr__be(p + 1, (uint64_t)d, 2); return 3; }
        if (d >= -2147483648LL) { p[0] = 0xd2; sr__be(p + 1, (uint64_t)d, 4); return 5; }
        p[0] = 0xd3;
        sr__be(p + 1, (uint64_t)d, 8);
        return 9;
    }
    if (d < 256) { p[0] = 0xcc; p[1] = (unsigned char)d; return 2; }
    if (d < 65536) { p[0] = 0xcd; sr__be(p + 1, (uint64_t)d, 2); return 3; }
    if (d < 4294967296LL) { p[0] = 0xce; sr__be(p + 1, (uint64_t)d, 4); return 5; }
    p[0] = 0xcf;
    sr__be(p + 1, (uint64_t)d, 8);
    return 9;
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
    return sr__entry_number(e, out);
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
            memcpy((char *)sr_state_entry_value(e), vb.buf, vb.len);
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

int sr_state_put_bytes(sr_state_t *st, int ktype, const char *s, size_t len, double num, const char *value,
                       size_t vlen, int64_t now_ms)
{
    sr__bytes_t kb;
    size_t klen;
    char *heap;
    const char *key = sr__key(ktype, s, len, num, &kb, &klen, &heap);
    if (!key) return SR_ENOMEM;
    sr_state_entry_t *e;
    int rc = sr_state_put(st, key, klen, value, vlen, &e);
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

/* -- A batch's keys, looked up at once -- */

void sr_state_release(sr_state_t *st)
{
    while (st->graveyard) {
        sr_state_entry_t *e = st->graveyard;
        st->graveyard = (sr_state_entry_t *)e->timer.next;
        sr_slab_free(&st->slab, e, sr__esize(e));
    }
    st->holding = 0;
    st->nfound = 0;
    st->nheld = 0;
}

/* The msgpack bytes of the key up to a string's body (all of a number or
 * boolean) in head: their count, 0 for what is no key. */
static size_t sr__key_head(int type, size_t len, double num, unsigned char *head)
{
    switch (type) {
    case SR_KEY_STRING:
        if (len < 32) { head[0] = (unsigned char)(0xa0 | len); return 1; }
        if (len < 256) { head[0] = 0xd9; head[1] = (unsigned char)len; return 2; }
        if (len < 65536) { head[0] = 0xda; sr__be(head + 1, len, 2); return 3; }
        head[0] = 0xdb;
        sr__be(head + 1, len, 4);
        return 5;
    case SR_KEY_NUMBER: return num == num ? sr__num_bytes(num, head) : 0;
    case SR_KEY_BOOLEAN: head[0] = num != 0 ? 0xc3 : 0xc2; return 1;
    default: return 0;
    }
}

/* Whether n bytes at a and b are the same (keys are short: a call to
 * memcmp costs more than the loop). */
static inline int sr__same(const char *a, const char *b, size_t n)
{
    if (n > 32) return memcmp(a, b, n) == 0;
    for (size_t i = 0; i < n; i++)
        if (a[i] != b[i]) return 0;
    return 1;
}

/* Slot index of the key head||body in part, or of the empty slot where it
 * would go. */
static size_t sr__probe2(const sr_state_part_t *part, uint64_t h, const unsigned char *head, size_t hl,
                         const char *body, size_t bl)
{
    size_t mask = part->cap - 1, i = (size_t)h & mask;
    uintptr_t tag = (uintptr_t)(h >> 48) << 48;
    for (;;) {
        uintptr_t v = part->slots[i];
        if (!v) return i;
        if ((v & ~SR__ADDR) == tag) {
            sr_state_entry_t *e = sr__slot_entry(v);
            if (e->klen == hl + bl && sr__same(e->data, (const char *)head, hl) && sr__same(e->data + hl, body, bl))
                return i;
        }
        i = (i + 1) & mask;
    }
}

sr_state_key_t *sr_state_keys(sr_state_t *st, size_t n)
{
    if (!st->keys || n > st->keys_cap) {
        size_t cap = n > 16 ? n : 16;
        sr_state_key_t *k = sr_realloc(st->keys, cap * sizeof(*k));
        if (!k) return NULL;
        st->keys = k;
        st->keys_cap = cap;
    }
    return st->keys;
}

int sr_state_find_batch(sr_state_t *st, const sr_state_key_t *keys, size_t n)
{
    /* Entries held for sr_state_held_put_bytes stay (and what was buried
     * with them) until the batch's own sr_state_release. */
    if (!st->nheld) sr_state_release(st);
    st->last = NULL;
    if (n > st->found_cap) {
        sr_state_entry_t **f = sr_realloc(st->found, n * sizeof(*f));
        if (f) st->found = f;
        uint64_t *h = f ? sr_realloc(st->scratch, n * sizeof(*h)) : NULL;
        if (h) st->scratch = h;
        if (!f || !h) return SR_ENOMEM;
        st->found_cap = n;
    }
    st->holding = 1;
    st->inserted = 0;
    st->nfound = n;
    sr_state_entry_t **found = st->found;
    if (!st->parts) {
        memset(found, 0, n * sizeof(*found));
        return SR_OK;
    }
    /* Three stages D keys apart, so each key's two cache misses (its slot,
     * then its entry) are in flight while the keys before it are read:
     * hash and fetch the slot; fetch the entry the slot's tag points at;
     * compare. */
    /* (16 apart: at 8, a key's slot or entry had often not arrived when
     * its turn came, on a table of a million keys. 128 apart made the
     * lookups alone about a fifth faster, interleaved with their reads and
     * writes in C, but the whole job's steady batches slower: the lines
     * fetched ahead push the rest of the batch's work out of the cache.) */
    enum { D = 16 };
    uint64_t *hs = st->scratch;
    unsigned char head[9];
    for (size_t j = 0; j < n + 2 * D; j++) {
        if (j < n) {
            const sr_state_key_t *k = &keys[j];
            size_t hl = sr__key_head(k->type, k->len, k->num, head);
            const char *body = k->type == SR_KEY_STRING ? k->s : NULL;
            size_t bl = body ? k->len : 0;
            uint64_t h = hl ? sr__hash2(head, hl, (const unsigned char *)body, bl) : 0;
            hs[j] = h;
            const sr_state_part_t *part = sr__part(st, h);
            if (hl && part->cap) __builtin_prefetch(&part->slots[(size_t)h & (part->cap - 1)]);
        }
        if (j >= D && j - D < n) {
            size_t i = j - D;
            uint64_t h = hs[i];
            const sr_state_part_t *part = sr__part(st, h);
            if (keys[i].type && part->cap) {
                /* The first entry with the key's tag, among the slots of
                 * the line fetched (most keys sit in or near their home). */
                size_t mask = part->cap - 1, at = (size_t)h & mask;
                uintptr_t tag = (uintptr_t)(h >> 48) << 48;
                for (size_t k = 0; k < 8; k++, at = (at + 1) & mask) {
                    uintptr_t v = part->slots[at];
                    if (!v) break;
                    if ((v & ~SR__ADDR) == tag) {
                        const char *e = (const char *)sr__slot_entry(v);
                        __builtin_prefetch(e);
                        __builtin_prefetch(e + 47);
                        break;
                    }
                }
            }
        }
        if (j >= 2 * D) {
            size_t i = j - 2 * D;
            const sr_state_key_t *k = &keys[i];
            size_t hl = sr__key_head(k->type, k->len, k->num, head);
            const sr_state_part_t *part = sr__part(st, hs[i]);
            if (!hl || !part->cap) {
                found[i] = NULL;
                continue;
            }
            const char *body = k->type == SR_KEY_STRING ? k->s : NULL;
            found[i] = sr__slot_entry(part->slots[sr__probe2(part, hs[i], head, hl, body, body ? k->len : 0)]);
        }
    }
    return SR_OK;
}

/* Key i's entry now: the one found, unless it is gone, or none was and a
 * key was put since (looked up again then). */
static sr_state_entry_t *sr__found(sr_state_t *st, size_t i, int ktype, const char *s, size_t len, double num)
{
    sr_state_entry_t *e = NULL;
    if (i < st->nfound) {
        e = st->found[i];
        if (e ? !sr__gone(e) : !st->inserted) return e;
    }
    unsigned char head[9];
    size_t hl = sr__key_head(ktype, len, num, head);
    if (!hl || !st->parts) return NULL;
    const char *body = ktype == SR_KEY_STRING ? s : NULL;
    size_t bl = body ? len : 0;
    uint64_t h = sr__hash2(head, hl, (const unsigned char *)body, bl);
    sr_state_part_t *part = sr__part(st, h);
    if (!part->cap) return NULL;
    e = sr__slot_entry(part->slots[sr__probe2(part, h, head, hl, body, bl)]);
    if (i < st->nfound) st->found[i] = e;
    return e;
}

sr_state_entry_t *sr_state_found(sr_state_t *st, size_t i, int ktype, const char *s, size_t len, double num)
{
    return sr__found(st, i, ktype, s, len, num);
}

int sr_state_found_number(sr_state_t *st, size_t i, int ktype, const char *s, size_t len, double num,
                          double *out)
{
    sr_state_entry_t *e = sr__found(st, i, ktype, s, len, num);
    return e ? sr__entry_number(e, out) : 0;
}

int sr_state_found_put_number(sr_state_t *st, size_t i, int ktype, const char *s, size_t len, double num,
                              double value, int64_t now_ms)
{
    sr_state_entry_t *e = sr__found(st, i, ktype, s, len, num);
    unsigned char vb[9];
    size_t vl = sr__num_bytes(value, vb);
    if (e && e->vlen == vl) {
        memcpy((char *)sr_state_entry_value(e), vb, vl);
    } else {
        /* A new key, or a value of another size: the full path. */
        unsigned char key[64];
        unsigned char head[9];
        size_t hl = sr__key_head(ktype, len, num, head);
        if (!hl || hl > sizeof(head)) return SR_EINVAL;
        size_t bl = ktype == SR_KEY_STRING ? len : 0;
        char *heap = NULL;
        unsigned char *kb = key;
        if (hl + bl > sizeof(key)) {
            heap = sr_malloc(hl + bl);
            if (!heap) return SR_ENOMEM;
            kb = (unsigned char *)heap;
        }
        memcpy(kb, head, hl);
        if (bl) memcpy(kb + hl, s, bl);
        int rc = sr_state_put(st, (const char *)kb, hl + bl, (const char *)vb, vl, &e);
        sr_free(heap);
        if (rc < 0) return rc;
        if (i < st->nfound) st->found[i] = e;
    }
    if (now_ms >= 0) sr_state_touch(st, e, now_ms);
    return SR_OK;
}

const char *sr_state_found_value(sr_state_t *st, size_t i, int ktype, const char *s, size_t len, double num,
                                 size_t *vlen, long *hold)
{
    sr_state_entry_t *e = sr__found(st, i, ktype, s, len, num);
    if (hold) *hold = -1;
    if (!e) return NULL;
    *vlen = sr_state_entry_vlen(e);
    if (hold && st->holding) {
        if (st->nheld == st->held_cap) {
            size_t cap = st->held_cap ? 2 * st->held_cap : 256;
            sr_state_entry_t **h = sr_realloc(st->held, cap * sizeof(*h));
            if (h) {
                st->held = h;
                st->held_cap = cap;
            }
        }
        if (st->nheld < st->held_cap) {
            st->held[st->nheld] = e;
            *hold = (long)st->nheld++;
        }
    }
    return sr_state_entry_value(e);
}

int sr_state_held_put_bytes(sr_state_t *st, long hold, int ktype, const char *s, size_t len, double num,
                            const char *value, size_t vlen, int64_t now_ms)
{
    /* Entries removed or moved since are not freed before sr_state_release
     * (they are marked gone): the key's own entry, or the full path. */
    if (hold >= 0 && (size_t)hold < st->nheld) {
        sr_state_entry_t *e = st->held[hold];
        if (!sr__gone(e) && sr_state_entry_vlen(e) == vlen) {
            memcpy((char *)sr_state_entry_value(e), value, vlen);
            st->last = NULL;
            if (now_ms >= 0) sr_state_touch(st, e, now_ms);
            return SR_OK;
        }
    }
    return sr_state_put_bytes(st, ktype, s, len, num, value, vlen, now_ms);
}

int sr_state_found_touch(sr_state_t *st, size_t i, int ktype, const char *s, size_t len, double num,
                         int64_t now_ms)
{
    sr_state_entry_t *e = sr__found(st, i, ktype, s, len, num);
    if (e) sr_state_touch(st, e, now_ms);
    return e != NULL;
}
