/* fuzz_wal: libFuzzer target for the write-ahead log reader. The first byte
 * of an input steers: bit 0 recomputes every entry's CRC-32C (so payloads
 * reach the entry decoder), bits 1-7 split the rest into two segments at
 * that many 128ths (0: one segment). The segments go into a temp directory
 * and sr_wal_scan reads them, then cwal.read (what recovery uses). Checked
 * beyond memory safety: every entry is of a known type with its bytes in
 * bounds; a second scan after the torn tail was cut reads the same entries
 * and finds nothing more to cut; cwal.read never raises and counts the
 * same entries. */
#include "fuzz_common.h"
#include "sr_crc32c.h"
#include "sr_wal.h"
#include "sr_wal_lua.h"

static char seg[2][4200];
static lua_State *L;
static int read_ref;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc; (void)argv;
    fz_init_dir("wal");
    for (int i = 0; i < 2; i++) snprintf(seg[i], sizeof(seg[i]), "%s/%020d.wal", fz_dir, i + 1);
    L = fz_lua(luaopen_streamrun_cwal, "read", &read_ref);
    return 0;
}

typedef struct sums {
    long entries;
    uint64_t bytes; /* a sum over every byte handed out, so all are read */
} sums_t;

static void on_entry(void *ud, const sr_wal_entry_t *e)
{
    sums_t *s = ud;
    FZ_CHECK(e->type == SR_WAL_SOURCE || e->type == SR_WAL_RECORD || e->type == SR_WAL_BATCH || e->type == SR_WAL_FILE
             || e->type == SR_WAL_OPEN,
             "entry type %d", e->type);
    if (e->type == SR_WAL_BATCH) {
        FZ_CHECK(e->npos >= 0 && e->npos <= 256, "npos %d", e->npos);
        for (int i = 0; i < e->npos; i++)
            s->bytes += (uint64_t)e->positions[i].index + (uint64_t)e->positions[i].offset + e->positions[i].inode;
    } else {
        FZ_CHECK(e->index >= 0 && e->index < 65536, "index %d", e->index);
        for (size_t i = 0; i < e->len; i++) s->bytes += (unsigned char)e->data[i];
    }
    s->entries++;
}

/* Makes every whole entry's CRC-32C right, from the start of a segment. */
static void fix_crcs(uint8_t *p, size_t size)
{
    size_t off = 0;
    while (off + 8 <= size) {
        size_t n = fz_get32(p + off);
        if (n == 0 || n > size - off - 8) break;
        fz_put32(p + off + 4, sr_crc32c(0, p + off + 8, n));
        off += 8 + n;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    unsigned ctl = data[0];
    data++;
    size--;
    uint8_t *copy = malloc(size ? size : 1);
    if (!copy) return 0;
    if (size) memcpy(copy, data, size);
    size_t split = (ctl >> 1) ? size * (ctl >> 1) / 128 : size;
    size_t len[2] = {split, size - split};
    unlink(seg[1]);
    for (int i = 0; i < 2; i++) {
        if (i == 1 && !(ctl >> 1)) break;
        uint8_t *p = copy + (i ? split : 0);
        if (ctl & 1) fix_crcs(p, len[i]);
        fz_write(seg[i], p, len[i]);
    }
    free(copy);

    char note[1024], again[1024];
    sums_t s1 = {0, 0}, s2 = {0, 0};
    long n1 = sr_wal_scan(fz_dir, on_entry, &s1, note, sizeof(note));
    FZ_CHECK(n1 >= 0, "scan failed: %s", note);
    FZ_CHECK(n1 == s1.entries, "scan counted %ld, called back %ld times", n1, s1.entries);
    long n2 = sr_wal_scan(fz_dir, on_entry, &s2, again, sizeof(again));
    FZ_CHECK(n2 == n1 && s2.bytes == s1.bytes, "second scan: %ld entries, first %ld", n2, n1);
    if (strstr(note, "cut off")) FZ_CHECK(again[0] == '\0', "after the cut: %s", again);
    else FZ_CHECK(strcmp(note, again) == 0, "notes differ: '%s', then '%s'", note, again);

    lua_rawgeti(L, LUA_REGISTRYINDEX, read_ref);
    lua_pushstring(L, fz_dir);
    int rc = lua_pcall(L, 1, 1, 0);
    FZ_CHECK(rc == 0, "cwal.read raised: %s", lua_tostring(L, -1));
    FZ_CHECK(lua_istable(L, 1), "cwal.read returned a %s", luaL_typename(L, 1));
    lua_getfield(L, 1, "entries");
    FZ_CHECK(lua_tointeger(L, -1) == n1, "cwal.read counted %ld entries, the scan %ld", (long)lua_tointeger(L, -1), n1);
    fz_lua_reset(L);
    return 0;
}
