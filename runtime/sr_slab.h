/* sr_slab: an allocator of many small blocks of a few sizes (the state
 * table's entries): blocks are carved from large chunks without a header
 * of their own, freed blocks are kept per size for reuse, and once the
 * chunks pass a few megabytes they come on transparent huge pages. */
#ifndef SR_SLAB_H
#define SR_SLAB_H
#include <stddef.h>

/* Blocks up to this many bytes come from the slab; larger ones from
 * sr_malloc (sr_slab_alloc and sr_slab_free do either by the size). */
#define SR_SLAB_MAX 256
#define SR_SLAB_ALIGN 8

typedef struct sr_slab {
    void *free[SR_SLAB_MAX / SR_SLAB_ALIGN + 1]; /* private: per size */
    char *cur;                                  /* private: chunk carved */
    size_t left;                                /* private: its bytes left */
    void *chunks;                               /* private: every chunk */
    size_t chunk_bytes;                         /* read-only: all chunks */
    size_t large;                               /* read-only: live blocks
                                                   over SR_SLAB_MAX */
} sr_slab_t;

/* Starts an empty slab (embedded in its owner; no allocation yet). */
void sr_slab_init(sr_slab_t *s);
/* Frees every chunk: every block of the slab at once (blocks larger than
 * SR_SLAB_MAX, from sr_malloc, are the caller's to free). */
void sr_slab_close(sr_slab_t *s);
/* A block of n bytes (> 0), aligned to SR_SLAB_ALIGN, or NULL. */
void *sr_slab_alloc(sr_slab_t *s, size_t n);
/* Gives back a block of n bytes (the n it was asked with). */
void sr_slab_free(sr_slab_t *s, void *p, size_t n);

#endif
