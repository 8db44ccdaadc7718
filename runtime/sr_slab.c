/* sr_slab: size classes of SR_SLAB_ALIGN bytes, each a free list threaded
 * through its free blocks; chunks of 64 KiB from sr_malloc while the slab
 * is small, then of one huge page each. */
#include "sr_slab.h"
#include "sr_alloc.h"

#include <stdint.h>
#include <string.h>

#define SR__SMALL_CHUNK ((size_t)64 << 10)
/* Past this many bytes of chunks, a huge page per chunk: a small state
 * does not pay 2 MiB of resident memory. */
#define SR__HUGE_AFTER ((size_t)4 << 20)

/* A chunk starts with its link and size (the first block follows). */
typedef struct sr__chunk {
    struct sr__chunk *next;
    size_t size;
    int huge;
} sr__chunk_t;

#define SR__CHUNK_HEAD ((sizeof(sr__chunk_t) + SR_SLAB_ALIGN - 1) & ~(size_t)(SR_SLAB_ALIGN - 1))

static size_t sr__round(size_t n) { return (n + SR_SLAB_ALIGN - 1) & ~(size_t)(SR_SLAB_ALIGN - 1); }

void sr_slab_init(sr_slab_t *s) { memset(s, 0, sizeof(*s)); }

void sr_slab_close(sr_slab_t *s)
{
    sr__chunk_t *c = s->chunks;
    while (c) {
        sr__chunk_t *next = c->next;
        if (c->huge) sr_free_huge(c, c->size);
        else sr_free(c);
        c = next;
    }
    sr_slab_init(s);
}

static int sr__new_chunk(sr_slab_t *s)
{
    int huge = s->chunk_bytes >= SR__HUGE_AFTER;
    size_t size = huge ? SR_ALLOC_HUGE : SR__SMALL_CHUNK;
    sr__chunk_t *c = huge ? sr_malloc_huge(size) : sr_malloc(size);
    if (!c) return -1;
    c->next = s->chunks;
    c->size = size;
    c->huge = huge;
    s->chunks = c;
    s->chunk_bytes += size;
    /* The rest of the chunk before is left unused: at most a block. */
    s->cur = (char *)c + SR__CHUNK_HEAD;
    s->left = size - SR__CHUNK_HEAD;
    return 0;
}

void *sr_slab_alloc(sr_slab_t *s, size_t n)
{
    if (n > SR_SLAB_MAX) {
        void *p = sr_malloc(n);
        if (p) s->large++;
        return p;
    }
    n = sr__round(n ? n : 1);
    void **head = &s->free[n / SR_SLAB_ALIGN];
    if (*head) {
        void *p = *head;
        memcpy(head, p, sizeof(void *));
        return p;
    }
    if (s->left < n && sr__new_chunk(s) < 0) return NULL;
    void *p = s->cur;
    s->cur += n;
    s->left -= n;
    return p;
}

void sr_slab_free(sr_slab_t *s, void *p, size_t n)
{
    if (!p) return;
    if (n > SR_SLAB_MAX) {
        sr_free(p);
        s->large--;
        return;
    }
    n = sr__round(n ? n : 1);
    void **head = &s->free[n / SR_SLAB_ALIGN];
    memcpy(p, head, sizeof(void *));
    *head = p;
}
