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

/* Bytes currently allocated through this module, as the C allocator
 * reports them (at least what was asked for). */
size_t sr_alloc_used(void);
/* Test hook: the (n+1)-th allocation from now fails; -1 turns failures off. */
void sr_alloc_fail_after(long n);

#endif
