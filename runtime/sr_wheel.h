/* sr_wheel: a hierarchical timing wheel (Varghese & Lauck) for per-key
 * timeouts, at millisecond resolution. Nodes are embedded in their owners'
 * structs; add, cancel and re-arm are O(1) and never allocate; advancing
 * costs the slots crossed and the nodes due, even across large jumps. */
#ifndef SR_WHEEL_H
#define SR_WHEEL_H
#include <stddef.h>
#include <stdint.h>

#define SR_WHEEL_BITS 6
#define SR_WHEEL_SLOTS (1 << SR_WHEEL_BITS)
#define SR_WHEEL_LEVELS 8 /* 48 bits of milliseconds: ~8900 years */

typedef struct sr_wheel_node {
    struct sr_wheel_node *next;   /* private */
    struct sr_wheel_node **pprev; /* private: NULL when not armed */
    int64_t expiry;               /* read-only: when the node falls due */
} sr_wheel_node_t;

/* Past SR_WHEEL_WIDE_AT armed nodes, each slot holds SR_WHEEL_WAYS lists,
 * filled in turn, in one block allocated then (a small wheel costs no more
 * than its struct): advancing walks a slot's lists side by side, so the
 * cache misses of their nodes overlap instead of coming one after the
 * other down a single list. */
#define SR_WHEEL_WAYS 8
#define SR_WHEEL_WIDE_AT 4096

typedef struct sr_wheel {
    int64_t now;                                   /* read-only */
    uint64_t occupied[SR_WHEEL_LEVELS];            /* private: non-empty slots */
    sr_wheel_node_t *slots[SR_WHEEL_LEVELS][SR_WHEEL_SLOTS]; /* private: lists while not wide */
    sr_wheel_node_t **wide; /* private: NULL, or [level][slot][way] lists (then slots[][] are empty) */
    unsigned way;           /* private: the way the next node placed goes to */
    size_t wide_at;         /* private: armed nodes from which the wheel turns wide */
    sr_wheel_node_t *due;                          /* private: added already due */
    size_t count;                                  /* read-only: armed nodes */
    int64_t latest; /* read-only: no armed node falls due after it */
} sr_wheel_t;

/* Starts an empty wheel at time now (ms, >= 0). */
void sr_wheel_init(sr_wheel_t *w, int64_t now);
/* Frees what the wheel allocated (its wide lists); its nodes are the
 * owners'. The wheel is then as after sr_wheel_init at its time. */
void sr_wheel_close(sr_wheel_t *w);
/* Sets how many armed nodes turn the wheel wide (SR_WHEEL_WIDE_AT by
 * default; for tests). */
static inline void sr_wheel_set_wide_at(sr_wheel_t *w, size_t n) { w->wide_at = n; }
/* Arms n to fall due at expiry (re-arms it if armed). An expiry <= now falls
 * due at the next advance. */
void sr_wheel_add(sr_wheel_t *w, sr_wheel_node_t *n, int64_t expiry);
/* Moves n's expiry to a later one without touching any list: n stays in
 * its slot, and advancing re-places it, by its new expiry, when that slot
 * comes (an idle clock restarted on every record costs a store, not three
 * cache misses). Not armed, or an earlier expiry: the same as add. */
static inline void sr_wheel_extend(sr_wheel_t *w, sr_wheel_node_t *n, int64_t expiry)
{
    if (n->pprev && expiry >= n->expiry) {
        n->expiry = expiry;
        if (expiry > w->latest) w->latest = expiry;
    } else {
        sr_wheel_add(w, n, expiry);
    }
}
/* Disarms n; nothing happens if it is not armed. */
void sr_wheel_cancel(sr_wheel_t *w, sr_wheel_node_t *n);
static inline int sr_wheel_armed(const sr_wheel_node_t *n) { return n->pprev != NULL; }
/* Marks a node embedded in freshly allocated memory as not armed. */
static inline void sr_wheel_node_init(sr_wheel_node_t *n) { n->next = NULL; n->pprev = NULL; n->expiry = 0; }
/* Moves the wheel to time `to` (>= now). Every node with expiry <= to is
 * disarmed and chained, through next, into the returned list (NULL if none),
 * in no particular order. */
sr_wheel_node_t *sr_wheel_advance(sr_wheel_t *w, int64_t to);
/* Moves the wheel to time `to` (>= latest: every node is due) and forgets
 * every node at once, touching none: the caller owns them all and marks
 * them unarmed. The wheel keeps its wide lists' block (emptied). */
void sr_wheel_clear(sr_wheel_t *w, int64_t to);

#endif
