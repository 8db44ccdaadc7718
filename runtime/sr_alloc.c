/* sr_alloc: counting allocator wrapper with failure injection for tests.
 * Counts what the C allocator really gives (malloc_usable_size), with no
 * header of its own, so millions of small state entries cost nothing extra. */
#include "sr_alloc.h"

#include <malloc.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static size_t used;
static long fail_countdown = -1;
static int refuse_reserve;

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
    void *p = malloc(n ? n : 1);
    if (p) __atomic_add_fetch(&used, malloc_usable_size(p), __ATOMIC_RELAXED);
    return p;
}

/* From this size on, sr_calloc zeroes with memset: calloc gives such a
 * block as a fresh mapping, whose pages, read before they are written
 * (a hash table probed as it is filled), map the shared zero page and
 * fault again at their first write, each second fault flushing the TLB
 * on every CPU the process runs on. Written at once, each page faults
 * once: the word count's table grown on 2 workers spent 5% of the job
 * in those flushes. */
#define SR__CALLOC_WRITTEN ((size_t)64 << 10)
/* (called through a pointer the compiler cannot see through: it would
 * turn malloc and memset back into calloc) */
static void *(*volatile sr__zero)(void *, int, size_t) = memset;

void *sr_calloc(size_t count, size_t size)
{
    if (size && count > (size_t)-1 / size) return NULL;
    if (sr__should_fail()) return NULL;
    size_t n = (count ? count : 1) * (size ? size : 1);
    void *p = n >= SR__CALLOC_WRITTEN ? malloc(n) : calloc(n, 1);
    if (!p) return NULL;
    if (n >= SR__CALLOC_WRITTEN) sr__zero(p, 0, n);
    __atomic_add_fetch(&used, malloc_usable_size(p), __ATOMIC_RELAXED);
    return p;
}

void *sr_realloc(void *p, size_t n)
{
    if (!p) return sr_malloc(n);
    if (sr__should_fail()) return NULL;
    size_t old = malloc_usable_size(p);
    void *np = realloc(p, n ? n : 1);
    if (!np) return NULL;
    __atomic_add_fetch(&used, malloc_usable_size(np) - old, __ATOMIC_RELAXED);
    return np;
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
    __atomic_sub_fetch(&used, malloc_usable_size(p), __ATOMIC_RELAXED);
    free(p);
}

/* n bytes of address space aligned to SR_ALLOC_HUGE, mapped with the
 * given protection, or NULL. */
static char *sr__map_aligned(size_t n, int prot)
{
    /* Map one huge page more than asked, then give back what lies before
     * the first aligned address and after the block. */
    size_t span = n + SR_ALLOC_HUGE;
    char *raw = mmap(NULL, span, prot, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) return NULL;
    char *p = (char *)(((uintptr_t)raw + SR_ALLOC_HUGE - 1) & ~(uintptr_t)(SR_ALLOC_HUGE - 1));
    if (p > raw) munmap(raw, (size_t)(p - raw));
    if (raw + span > p + n) munmap(p + n, (size_t)(raw + span - (p + n)));
    return p;
}

void *sr_malloc_huge(size_t n)
{
    if (sr__should_fail()) return NULL;
    char *p = sr__map_aligned(n, PROT_READ | PROT_WRITE);
    if (!p) return NULL;
    madvise(p, n, MADV_HUGEPAGE); /* advice: without THP, ordinary pages */
    __atomic_add_fetch(&used, n, __ATOMIC_RELAXED);
    return p;
}

void sr_free_huge(void *p, size_t n)
{
    if (!p) return;
    munmap(p, n);
    __atomic_sub_fetch(&used, n, __ATOMIC_RELAXED);
}

/* n rounded up to whole pages: the part of a reservation made usable. */
static size_t sr__pages(size_t n)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    return (n + page - 1) / page * page;
}

/* Makes bytes [from, to) of reservation p usable (rounded to pages). */
static int sr__commit(char *p, size_t from, size_t to)
{
    size_t a = sr__pages(from), b = sr__pages(to);
    return b > a ? mprotect(p + a, b - a, PROT_READ | PROT_WRITE) : 0;
}

void *sr_reserve(size_t max, size_t n)
{
    if (refuse_reserve) return NULL;
    char *p = mmap(NULL, max, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return NULL;
    /* Ordinary pages, even where the system puts huge pages on any
     * mapping: a buffer filled once in order gains little from them,
     * and a huge page costs far more to fault in where memory is
     * handed back to a hypervisor when freed (a first fill of 80 MB took
     * 180 to 240 ms in huge pages, 35 to 40 ms in ordinary ones, most
     * of the reading thread's time in the built-in word count on 2
     * workers). */
    madvise(p, max, MADV_NOHUGEPAGE);
    if (sr__commit(p, 0, n) != 0) {
        munmap(p, max);
        return NULL;
    }
    __atomic_add_fetch(&used, n, __ATOMIC_RELAXED);
    return p;
}

int sr_reserve_grow(void *p, size_t n, size_t to)
{
    if (to > n && (sr__should_fail() || sr__commit(p, n, to) != 0)) return -1;
    __atomic_add_fetch(&used, to - n, __ATOMIC_RELAXED); /* (to < n: counted back, the pages left usable) */
    return 0;
}

void sr_free_reserved(void *p, size_t max, size_t n)
{
    if (!p) return;
    munmap(p, max);
    __atomic_sub_fetch(&used, n, __ATOMIC_RELAXED);
}

size_t sr_alloc_used(void) { return __atomic_load_n(&used, __ATOMIC_RELAXED); }

void sr_alloc_fail_after(long n) { fail_countdown = n; }

void sr_alloc_refuse_reserve(int refuse) { refuse_reserve = refuse; }
