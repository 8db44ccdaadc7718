/* sr_state: the keyed state of one stateful stage, owned by C so it outlives
 * any Lua VM. Partitioned open-addressing hash tables map key bytes to value
 * bytes (both msgpack); each entry embeds its timing-wheel node, so per-key
 * timeouts cost no allocation. Entries come from the state's slab. */
#ifndef SR_STATE_H
#define SR_STATE_H
#include <stddef.h>
#include <stdint.h>

#include "sr_slab.h"
#include "sr_wheel.h"

/* An entry is one block of the state's slab (sr_slab: no allocator header,
 * sizes rounded to 8 bytes): its header is 28 bytes (data starts right
 * after vlen, not at sizeof), so a key and value of 12 bytes together take
 * 40. Keys are at most SR_STATE_MAX_KEY bytes; a
 * value of SR_STATE_VLEN_LONG bytes or more has vlen SR_STATE_VLEN_LONG and
 * its length as a uint32 between the key and the value. */
typedef struct sr_state_entry {
    sr_wheel_node_t timer; /* armed while the stage has a timeout */
    uint16_t klen;         /* key bytes */
    uint16_t vlen;         /* private: value bytes (sr_state_entry_vlen) */
    char data[];           /* key bytes, then value bytes */
} sr_state_entry_t;

#define SR_STATE_MAX_KEY 65535
#define SR_STATE_VLEN_LONG 0xFFFF
#define SR_STATE_ENTRY_HEAD offsetof(sr_state_entry_t, data)

static inline const char *sr_state_entry_key(const sr_state_entry_t *e) { return e->data; }
static inline size_t sr_state_entry_vlen(const sr_state_entry_t *e)
{
    if (e->vlen != SR_STATE_VLEN_LONG) return e->vlen;
    uint32_t n;
    __builtin_memcpy(&n, e->data + e->klen, sizeof(n));
    return n;
}
static inline const char *sr_state_entry_value(const sr_state_entry_t *e)
{
    return e->data + e->klen + (e->vlen == SR_STATE_VLEN_LONG ? sizeof(uint32_t) : 0);
}

typedef struct sr_state_part {
    uintptr_t *slots;         /* private: linear probing, 0 = empty; an entry's
                                 address with a 16-bit hash tag on top */
    size_t cap;               /* private: a power of two */
    size_t count;             /* read-only */
} sr_state_part_t;

typedef struct sr_state {
    char *name;             /* read-only: the stage's name */
    int nparts;             /* read-only */
    uint64_t part_mul;      /* private: 2^64 / nparts rounded up, for the partition of a hash */
    sr_state_part_t *parts; /* private: NULL until the first key */
    size_t count;           /* read-only: keys */
    size_t data_bytes;      /* read-only: key and value bytes of all keys */
    int64_t timeout_ms;     /* read-only: 0 when keys never time out */
    sr_wheel_t wheel;       /* private */
    sr_slab_t slab;         /* private: the entries */
    /* private: the entry the last sr_state_get_number found, and how its key
     * was given, so the write that follows needs no second lookup. Any
     * other change to the table forgets it. */
    sr_state_entry_t *last;
    int last_ktype;
    const char *last_s;
    size_t last_len;
    double last_num;
    /* private: the entries sr_state_find_batch found (NULL: no such key
     * then), and the entries removed or moved since, freed at the next
     * sr_state_find_batch or sr_state_release (found[] may point at them). */
    sr_state_entry_t **found;
    size_t nfound, found_cap;
    sr_state_entry_t *graveyard;
    int holding;
    size_t inserted; /* private: keys put since sr_state_find_batch */
    uint64_t *scratch; /* private: the lookup pipeline's hashes */
    struct sr_state_key *keys; /* private: sr_state_keys's buffer */
    size_t keys_cap;
    /* private: the entries sr_state_expire_sorted took from the wheel, by
     * key bytes (sr_state_due reads them). */
    struct sr_state_due *due;
    size_t ndue, due_cap;
    int due_owned; /* private: the table was emptied, the due list holds its entries */
    /* private: the entries sr_state_found_value handed out since the batch's
     * lookup, by hold number (sr_state_held_put_bytes writes to them) */
    struct sr_state_entry **held;
    size_t nheld, held_cap;
} sr_state_t;

typedef struct sr_state_iter {
    int part;
    size_t slot;
} sr_state_iter_t;

/* A new, empty state with the given partitions (>= 1) and timeout (0 for
 * none), its wheel at time now_ms. NULL when out of memory. */
sr_state_t *sr_state_new(const char *name, int partitions, int64_t timeout_ms, int64_t now_ms);
/* Frees the state and every entry. */
void sr_state_free(sr_state_t *st);

/* Sizes the tables for n keys at once (restoring: keys arrive in hash
 * order, which a growing linear-probing table would cluster). Returns 0 or
 * SR_ENOMEM. */
int sr_state_reserve(sr_state_t *st, size_t n);
/* The entry for the key bytes, or NULL. Borrowed until the key is changed. */
sr_state_entry_t *sr_state_get(sr_state_t *st, const char *key, size_t klen);
/* Sets the key's value (copying both). Returns 0, SR_EINVAL for a key over
 * SR_STATE_MAX_KEY bytes, or SR_ENOMEM (the key's previous value, if any,
 * is then kept). *out, if given, gets the entry. */
int sr_state_put(sr_state_t *st, const char *key, size_t klen, const char *value, size_t vlen,
                 sr_state_entry_t **out);
/* Removes the key. Returns 1 if it was there, else 0. */
int sr_state_remove(sr_state_t *st, const char *key, size_t klen);

/* Arms the entry to time out after timeout_ms of inactivity from now_ms:
 * it falls due at the first time after now_ms + timeout_ms. No-op without a
 * timeout. */
void sr_state_touch(sr_state_t *st, sr_state_entry_t *e, int64_t now_ms);
/* Arms the entry to fall due at expiry_ms (restoring a checkpoint). */
void sr_state_arm(sr_state_t *st, sr_state_entry_t *e, int64_t expiry_ms);
/* Advances the state's clock to now_ms and returns the entries that fell
 * due, chained through e->timer.next (disarmed, still in the table: the
 * caller makes the timing-out call and removes them). */
sr_state_entry_t *sr_state_expire(sr_state_t *st, int64_t now_ms);
/* As sr_state_expire, but the entries that fell due are kept in the
 * state's due list, ordered by key bytes (the same order in every run and
 * after every restore), for the caller to take in chunks: *n is their
 * count. When every key is armed and falls due, the table is emptied at
 * once and the list holds the entries until sr_state_remove_due frees
 * them. Returns 0,
 * or SR_ENOMEM (the keys stay due, at the next call). The list is valid
 * until the next call or until one of its entries is removed outside
 * sr_state_remove_due. */
int sr_state_expire_sorted(sr_state_t *st, int64_t now_ms, size_t *n);
/* The i-th (from 0) entry of the due list. */
sr_state_entry_t *sr_state_due(const sr_state_t *st, size_t i);
/* Removes the due list's entries [from, from + n) from the table. */
void sr_state_remove_due(sr_state_t *st, size_t from, size_t n);
/* The next entry from an iterator started as {0, 0}, or NULL at the end.
 * Changing the state invalidates the iterator. */
sr_state_entry_t *sr_state_next(sr_state_t *st, sr_state_iter_t *it);
/* Bytes of memory the state holds: tables and entries. */
size_t sr_state_memory(const sr_state_t *st);

/* -- Numbers by FFI (the fast path of counters and sums) --
 * The key is given as its Lua type and value: SR_KEY_STRING (s, len),
 * SR_KEY_NUMBER (num) or SR_KEY_BOOLEAN (num 0 or 1), and encoded as the
 * Lua binding encodes keys, so both see the same entries. */
enum { SR_KEY_STRING = 1, SR_KEY_NUMBER = 2, SR_KEY_BOOLEAN = 3 };

/* The key's value if it is a number: returns 1 and sets *out; 0 when the
 * key has no state; -1 when its state is not a number (read it through
 * the Lua binding). */
int sr_state_get_number(sr_state_t *st, int ktype, const char *s, size_t len, double num, double *out);
/* Stores a number as the key's value; when now_ms >= 0 restarts its idle
 * clock. Returns 0 or SR_ENOMEM. */
int sr_state_put_number(sr_state_t *st, int ktype, const char *s, size_t len, double num, double value,
                        int64_t now_ms);
/* Stores value[0..vlen) (msgpack bytes, as the Lua binding packs a value)
 * as the key's value; when now_ms >= 0 restarts its idle clock. Returns 0,
 * SR_EINVAL (a key too long) or SR_ENOMEM. */
int sr_state_put_bytes(sr_state_t *st, int ktype, const char *s, size_t len, double num, const char *value,
                       size_t vlen, int64_t now_ms);
/* Restarts the key's idle clock; 1 if it has state, else 0. */
int sr_state_touch_key(sr_state_t *st, int ktype, const char *s, size_t len, double num, int64_t now_ms);

/* -- A batch's keys, looked up at once --
 * sr_state_find_batch looks up a batch's keys in one pass whose memory
 * fetches overlap, and keeps the entries found; the calls below then work
 * on key i of the batch by its index, each given the key again (as for
 * the numbers above) for when its entry is not the one found: the key was
 * new, removed or its value moved since. Until sr_state_release, or the
 * next sr_state_find_batch, entries removed or moved are not freed, so a
 * found entry is never a dangling pointer. */
typedef struct sr_state_key {
    const char *s; /* borrowed: SR_KEY_STRING's bytes */
    size_t len;
    double num;    /* SR_KEY_NUMBER, or SR_KEY_BOOLEAN's 0 or 1 */
    int type;      /* SR_KEY_*, or 0: not a key (found: NULL) */
} sr_state_key_t;

/* Room for n keys, owned by the state (kept outside the Lua heap, so a
 * large batch's keys do not raise its collector's pace), valid until the
 * next call; NULL when out of memory. */
sr_state_key_t *sr_state_keys(sr_state_t *st, size_t n);
/* Finds the entries of keys[0..n) (NULL for a key with no state). Returns
 * 0 or SR_ENOMEM (then nothing is found: each call below looks its key up
 * alone). */
int sr_state_find_batch(sr_state_t *st, const sr_state_key_t *keys, size_t n);
/* Key i's entry, looked up again when the one found is gone (NULL: the
 * key has no state). Borrowed until sr_state_release. */
sr_state_entry_t *sr_state_found(sr_state_t *st, size_t i, int ktype, const char *s, size_t len, double num);
/* As sr_state_get_number, for key i of the batch. */
int sr_state_found_number(sr_state_t *st, size_t i, int ktype, const char *s, size_t len, double num,
                          double *out);
/* As sr_state_put_number, for key i of the batch. */
int sr_state_found_put_number(sr_state_t *st, size_t i, int ktype, const char *s, size_t len, double num,
                              double value, int64_t now_ms);
/* Key i's value, its msgpack bytes (borrowed until sr_state_release or the
 * next change of the key) and *vlen; NULL when the key has no state. With
 * hold, *hold gets a number for the key's entry (-1 when none is kept) for
 * sr_state_held_put_bytes, valid until sr_state_release. */
const char *sr_state_found_value(sr_state_t *st, size_t i, int ktype, const char *s, size_t len, double num,
                                 size_t *vlen, long *hold);
/* As sr_state_put_bytes, written straight into the entry held as hold (no
 * lookup) while it is still the key's and its value keeps its size. While
 * entries are held, a new sr_state_find_batch frees nothing: the entries
 * removed or moved are freed by sr_state_release. */
int sr_state_held_put_bytes(sr_state_t *st, long hold, int ktype, const char *s, size_t len, double num,
                            const char *value, size_t vlen, int64_t now_ms);
/* Restarts key i's idle clock at now_ms; 1 if it has state, else 0. */
int sr_state_found_touch(sr_state_t *st, size_t i, int ktype, const char *s, size_t len, double num,
                         int64_t now_ms);
/* Ends the batch: frees the entries removed or moved since its lookup. */
void sr_state_release(sr_state_t *st);

/* 64-bit hash of bytes (also used to pick a key's partition). */
uint64_t sr_state_hash(const char *p, size_t n);
/* The partition (0 .. nparts - 1) of a state with nparts partitions that
 * holds the key bytes: workers own keys by it (SPEC section 15). */
int sr_state_partition(const char *key, size_t klen, int nparts);

#endif
