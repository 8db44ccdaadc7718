/* sr_alloc: every heap allocation of the runtime goes through here, so tests
 * can count live bytes and make the n-th allocation fail. */
#ifndef SR_ALLOC_H
#define SR_ALLOC_H
#include <stddef.h>

/* Like malloc/calloc/realloc/strdup; NULL on failure (or injected failure). */
void *sr_malloc(size_t n);
void *sr_calloc(size_t count, size_t size);
void *sr_realloc(void *p, size_t n);
char *sr_strdup(const char *s);
void sr_free(void *p);

/* n bytes (a multiple of SR_ALLOC_HUGE) of zeroed memory aligned to
 * SR_ALLOC_HUGE, which the kernel is asked to back with transparent huge
 * pages (large tables touched at random then miss the TLB far less), or
 * NULL. Freed with sr_free_huge and the same n. */
#define SR_ALLOC_HUGE ((size_t)2 << 20)
void *sr_malloc_huge(size_t n);
void sr_free_huge(void *p, size_t n);

/* A buffer that grows in place: max bytes of address space (a multiple of
 * the page size), reserved inaccessible (no memory is committed to it),
 * of which the first n bytes are made usable and count as allocated.
 * sr_reserve_grow makes it usable up to `to` bytes (0, or -1 when the
 * system refuses: strict overcommit, a limit on data; a `to` below n only
 * counts it back, and cannot fail): growing copies nothing, and the
 * kernel zeroes only the pages written (ordinary pages: see sr_alloc.c).
 * NULL when the system refuses the address space (a limit on it) or the
 * first n bytes: allocate to size instead. Freed with sr_free_reserved,
 * the same max and the size last made usable. */
void *sr_reserve(size_t max, size_t n);
int sr_reserve_grow(void *p, size_t n, size_t to);
void sr_free_reserved(void *p, size_t max, size_t n);

/* Bytes currently allocated through this module, as the C allocator
 * reports them (at least what was asked for). */
size_t sr_alloc_used(void);
/* Test hook: the (n+1)-th allocation from now fails; -1 turns failures off. */
void sr_alloc_fail_after(long n);
/* Test hook: sr_reserve refuses while refuse is nonzero. */
void sr_alloc_refuse_reserve(int refuse);

#endif
