/* sr_wheel: hierarchical timing wheel. A node sits at the level of the
 * highest 6-bit group in which its expiry differs from the wheel's time, in
 * the slot of that group's value; advancing takes the slots the time passed
 * over, level by level, and re-inserts the nodes not yet due lower down. */
#include "sr_wheel.h"
#include "sr_alloc.h"

#include <string.h>

#define SR__WIDE_HEADS (SR_WHEEL_LEVELS * SR_WHEEL_SLOTS * SR_WHEEL_WAYS)

void sr_wheel_init(sr_wheel_t *w, int64_t now)
{
    memset(w, 0, sizeof(*w));
    w->now = now;
    w->wide_at = SR_WHEEL_WIDE_AT;
}

void sr_wheel_close(sr_wheel_t *w)
{
    size_t wide_at = w->wide_at;
    sr_free(w->wide);
    sr_wheel_init(w, w->now);
    w->wide_at = wide_at;
}

/* The list heads of a slot: SR_WHEEL_WAYS of them when wide, else one. */
static inline sr_wheel_node_t **sr__heads(sr_wheel_t *w, int level, unsigned slot)
{
    if (w->wide) return &w->wide[((size_t)level * SR_WHEEL_SLOTS + slot) * SR_WHEEL_WAYS];
    return &w->slots[level][slot];
}

/* Turns the wheel wide: each slot's list becomes its first way (only the
 * list's first node points back at its head). Stays narrow when out of
 * memory. */
static void sr__widen(sr_wheel_t *w)
{
    sr_wheel_node_t **wide = sr_calloc(SR__WIDE_HEADS, sizeof(*wide));
    if (!wide) {
        w->wide_at = SIZE_MAX;
        return;
    }
    for (int level = 0; level < SR_WHEEL_LEVELS; level++) {
        for (unsigned slot = 0; slot < SR_WHEEL_SLOTS; slot++) {
            sr_wheel_node_t **head = &wide[((size_t)level * SR_WHEEL_SLOTS + slot) * SR_WHEEL_WAYS];
            *head = w->slots[level][slot];
            w->slots[level][slot] = NULL;
            if (*head) (*head)->pprev = head;
        }
    }
    w->wide = wide;
}

static void sr__push(sr_wheel_node_t **head, sr_wheel_node_t *n)
{
    n->next = *head;
    if (n->next) n->next->pprev = &n->next;
    n->pprev = head;
    *head = n;
}

static void sr__unlink(sr_wheel_node_t *n)
{
    *n->pprev = n->next;
    if (n->next) n->next->pprev = n->pprev;
    n->next = NULL;
    n->pprev = NULL;
}

/* Places an unarmed node by its expiry relative to w->now. */
static void sr__place(sr_wheel_t *w, sr_wheel_node_t *n)
{
    uint64_t now = (uint64_t)w->now, exp = (uint64_t)n->expiry;
    if (n->expiry <= w->now) {
        sr__push(&w->due, n);
        return;
    }
    uint64_t diff = now ^ exp;
    int level = (63 - __builtin_clzll(diff)) / SR_WHEEL_BITS;
    if (level >= SR_WHEEL_LEVELS) level = SR_WHEEL_LEVELS - 1;
    unsigned slot = (unsigned)(exp >> (level * SR_WHEEL_BITS)) & (SR_WHEEL_SLOTS - 1);
    sr_wheel_node_t **heads = sr__heads(w, level, slot);
    if (w->wide) {
        heads += w->way;
        w->way = (w->way + 1) & (SR_WHEEL_WAYS - 1);
    }
    sr__push(heads, n);
    w->occupied[level] |= (uint64_t)1 << slot;
}

void sr_wheel_add(sr_wheel_t *w, sr_wheel_node_t *n, int64_t expiry)
{
    sr_wheel_cancel(w, n);
    n->expiry = expiry;
    if (expiry > w->latest) w->latest = expiry;
    if (++w->count >= w->wide_at && !w->wide) sr__widen(w);
    sr__place(w, n);
}

void sr_wheel_clear(sr_wheel_t *w, int64_t to)
{
    sr_wheel_node_t **wide = w->wide;
    size_t wide_at = w->wide_at;
    sr_wheel_init(w, to > w->now ? to : w->now);
    if (wide) memset(wide, 0, SR__WIDE_HEADS * sizeof(*wide));
    w->wide = wide;
    w->wide_at = wide_at;
}

void sr_wheel_cancel(sr_wheel_t *w, sr_wheel_node_t *n)
{
    if (!n->pprev) return;
    /* Emptied slots keep their occupied bit; advance clears it lazily. */
    sr__unlink(n);
    w->count--;
}

/* Detaches the lists of the slots in mask at level, whole, into lists
 * (each node is then touched once, when it is re-placed). */
static void sr__take(sr_wheel_t *w, int level, uint64_t mask, sr_wheel_node_t **lists, int *nl)
{
    uint64_t bits = w->occupied[level] & mask;
    w->occupied[level] &= ~mask;
    int ways = w->wide ? SR_WHEEL_WAYS : 1;
    while (bits) {
        int slot = __builtin_ctzll(bits);
        bits &= bits - 1;
        sr_wheel_node_t **heads = sr__heads(w, level, (unsigned)slot);
        for (int k = 0; k < ways; k++) {
            if (!heads[k]) continue;
            lists[(*nl)++] = heads[k];
            heads[k] = NULL;
        }
    }
}

sr_wheel_node_t *sr_wheel_advance(sr_wheel_t *w, int64_t to)
{
    /* At most every list of every level, and the due list. */
    sr_wheel_node_t *lists[SR__WIDE_HEADS + 1], *expired = NULL;
    int nl = 0;
    if (to < w->now) to = w->now;
    uint64_t now = (uint64_t)w->now, target = (uint64_t)to;
    /* Nodes added already due. */
    if (w->due) {
        lists[nl++] = w->due;
        w->due = NULL;
    }
    for (int level = 0; level < SR_WHEEL_LEVELS; level++) {
        int shift = level * SR_WHEEL_BITS;
        uint64_t from_idx = now >> shift, to_idx = target >> shift;
        if (from_idx == to_idx) break; /* no slot of this level or above passed */
        /* Only the current rotation of a level holds nodes (their higher
         * groups equal the time's), so the passed slots run from the one
         * after now's to to's, or to the end when a rotation ends. */
        unsigned first = (unsigned)(from_idx & (SR_WHEEL_SLOTS - 1)) + 1;
        unsigned last = (from_idx >> SR_WHEEL_BITS) != (to_idx >> SR_WHEEL_BITS)
                            ? SR_WHEEL_SLOTS - 1
                            : (unsigned)(to_idx & (SR_WHEEL_SLOTS - 1));
        if (first <= last && first < SR_WHEEL_SLOTS) {
            uint64_t upto = last == 63 ? ~(uint64_t)0 : (((uint64_t)1 << (last + 1)) - 1);
            uint64_t below = ((uint64_t)1 << first) - 1;
            sr__take(w, level, upto & ~below, lists, &nl);
        }
    }
    w->now = to;
    /* The lists SR_WHEEL_WAYS at a time, a node of each in turn: the next
     * node of every list is fetched while the others are handled. */
    for (int l = 0; l < nl; l += SR_WHEEL_WAYS) {
        sr_wheel_node_t *cur[SR_WHEEL_WAYS];
        int k = nl - l < SR_WHEEL_WAYS ? nl - l : SR_WHEEL_WAYS, live = k;
        for (int q = 0; q < k; q++) cur[q] = lists[l + q];
        while (live) {
            for (int q = 0; q < k; q++) {
                sr_wheel_node_t *n = cur[q];
                if (!n) continue;
                sr_wheel_node_t *next = n->next;
                if (next) __builtin_prefetch(next);
                else live--;
                cur[q] = next;
                if (n->expiry <= to) {
                    w->count--;
                    n->next = expired;
                    n->pprev = NULL;
                    expired = n;
                } else {
                    sr__place(w, n);
                }
            }
        }
    }
    return expired;
}
