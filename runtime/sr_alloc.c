/* sr_alloc: counting allocator wrapper with failure injection for tests. */
#include "sr_alloc.h"

#include <stdlib.h>
#include <string.h>

/* Each block carries its size in a header so sr_free can keep the count. */
typedef union { size_t size; max_align_t align; } sr__header_t;

static size_t used;
static long fail_countdown = -1;

static int sr__should_fail(void)
{
    if (fail_countdown < 0) return 0;
    if (fail_countdown == 0) { fail_countdown = -1; return 1; }
    fail_countdown--;
    return 0;
}

void *sr_malloc(size_t n)
{
    if (sr__should_fail()) return NULL;
    sr__header_t *h = malloc(sizeof(*h) + n);
    if (!h) return NULL;
    h->size = n;
    used += n;
    return h + 1;
}

void *sr_calloc(size_t count, size_t size)
{
    if (size && count > ((size_t)-1 - sizeof(sr__header_t)) / size) return NULL;
    void *p = sr_malloc(count * size);
    if (p) memset(p, 0, count * size);
    return p;
}

void *sr_realloc(void *p, size_t n)
{
    if (!p) return sr_malloc(n);
    if (sr__should_fail()) return NULL;
    sr__header_t *h = (sr__header_t *)p - 1;
    size_t old = h->size;
    sr__header_t *nh = realloc(h, sizeof(*nh) + n);
    if (!nh) return NULL;
    nh->size = n;
    used = used - old + n;
    return nh + 1;
}

char *sr_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = sr_malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

void sr_free(void *p)
{
    if (!p) return;
    sr__header_t *h = (sr__header_t *)p - 1;
    used -= h->size;
    free(h);
}

size_t sr_alloc_used(void) { return used; }

void sr_alloc_fail_after(long n) { fail_countdown = n; }
