/* Word count baseline for `make bench`: a plain C program with an
 * open-addressing hash table (FNV-1a, linear probing, power-of-two size,
 * grown at 1/2 load). Words are maximal runs of bytes other than ASCII
 * whitespace, as Lua's %S+ and streamrun's sr.words split them.
 *   wc_baseline FILE   -> prints "TOTAL DISTINCT" */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct { uint64_t hash; char *word; uint32_t len; uint64_t count; } slot_t;

static slot_t *table;
static size_t cap = 1 << 16, used;

static void *xmalloc(size_t n)
{
    void *p = malloc(n);
    if (!p) { perror("malloc"); exit(1); }
    return p;
}

static void grow(void)
{
    size_t ncap = cap * 2;
    slot_t *nt = calloc(ncap, sizeof *nt);
    if (!nt) { perror("calloc"); exit(1); }
    for (size_t i = 0; i < cap; i++) {
        if (!table[i].word) continue;
        size_t j = table[i].hash & (ncap - 1);
        while (nt[j].word) j = (j + 1) & (ncap - 1);
        nt[j] = table[i];
    }
    free(table);
    table = nt;
    cap = ncap;
}

static void add(const char *w, uint32_t len)
{
    uint64_t h = 1469598103934665603ULL;
    for (uint32_t i = 0; i < len; i++) h = (h ^ (unsigned char)w[i]) * 1099511628211ULL;
    size_t j = h & (cap - 1);
    for (;;) {
        slot_t *s = &table[j];
        if (!s->word) break;
        if (s->hash == h && s->len == len && memcmp(s->word, w, len) == 0) { s->count++; return; }
        j = (j + 1) & (cap - 1);
    }
    table[j].hash = h;
    table[j].word = memcpy(xmalloc(len), w, len);
    table[j].len = len;
    table[j].count = 1;
    if (++used * 2 > cap) grow();
}

static int space(unsigned char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

int main(int argc, char **argv)
{
    if (argc != 2) { fprintf(stderr, "usage: wc_baseline FILE\n"); return 2; }
    FILE *f = fopen(argv[1], "rb");
    if (!f) { perror(argv[1]); return 1; }
    table = calloc(cap, sizeof *table);
    size_t bufsz = 1 << 20, have = 0;
    char *buf = xmalloc(bufsz);
    for (;;) {
        size_t n = fread(buf + have, 1, bufsz - have, f);
        int eof = n == 0;
        have += n;
        size_t i = 0, start = 0, keep = 0;
        while (i < have) {
            while (i < have && space((unsigned char)buf[i])) i++;
            start = i;
            while (i < have && !space((unsigned char)buf[i])) i++;
            if (i == start) break;
            if (i == have && !eof) { keep = have - start; break; } /* may go on in the next read */
            add(buf + start, (uint32_t)(i - start));
        }
        if (eof) break;
        memmove(buf, buf + have - keep, keep);
        have = keep;
        if (have == bufsz) { bufsz *= 2; buf = realloc(buf, bufsz); if (!buf) { perror("realloc"); return 1; } }
    }
    fclose(f);
    uint64_t total = 0;
    for (size_t i = 0; i < cap; i++) if (table[i].word) total += table[i].count;
    printf("%llu %llu\n", (unsigned long long)total, (unsigned long long)used);
    return 0;
}
