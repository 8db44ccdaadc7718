/* fuzz_checkpoint: libFuzzer target for the checkpoint decoder. Each input
 * is written as a checkpoint file and read twice: as it is (open's checks:
 * magic, version, trailer, checksum) and with its trailer recomputed, so the
 * msgpack objects behind the checksum reach sr_checkpoint_next,
 * sr_checkpoint_load (what restore reads, in C) and ckpt.load (its Lua
 * binding, which `streamrun run` and `inspect` call). Checked beyond memory
 * safety: open fails with a reason or succeeds on a valid trailer;
 * sr_checkpoint_load returns a reason, or the sections it announced with
 * nothing leaked; ckpt.load never raises and agrees with it: nil and the
 * same reason, or meta, states and windows. */
#include <msgpack.h>

#include "fuzz_common.h"
#include "sr_alloc.h"
#include "sr_checkpoint.h"
#include "sr_checkpoint_lua.h"
#include "sr_crc32c.h"

#define HEAD 5
#define TRAILER 8

static char path[4200];
static lua_State *L;
static int load_ref;
static msgpack_sbuffer sbuf;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc; (void)argv;
    fz_init_dir("checkpoint");
    snprintf(path, sizeof(path), "%s/input%s", fz_dir, SR_CKPT_SUFFIX);
    L = fz_lua(luaopen_streamrun_ckpt, "load", &load_ref);
    msgpack_sbuffer_init(&sbuf);
    return 0;
}

/* Whether the file's trailer is "SREN" and the CRC-32C of what precedes it. */
static int trailer_valid(const uint8_t *p, size_t n)
{
    if (n < HEAD + TRAILER || memcmp(p + n - TRAILER, "SREN", 4) != 0) return 0;
    return sr_crc32c(0, p, n - TRAILER) == fz_get32(p + n - 4);
}

/* sr_checkpoint_open, then every object through sr_checkpoint_next, each
 * packed again (which reads all of it). */
static void walk(const uint8_t *data, size_t size)
{
    sr_ckpt_reader_t r;
    char err[1024] = "";
    if (sr_checkpoint_open(&r, path, err, sizeof(err)) < 0) {
        FZ_CHECK(err[0] != '\0', "open failed without a reason");
        FZ_CHECK(!(trailer_valid(data, size) && memcmp(data, "SRCK", 4) == 0 && data[4] == SR_CKPT_VERSION),
                 "a valid file refused: %s", err);
        return;
    }
    FZ_CHECK(trailer_valid(data, size), "a file with a bad trailer opened");
    msgpack_object o;
    int rc;
    size_t objects = 0;
    while ((rc = sr_checkpoint_next(&r, &o)) == 1) {
        FZ_CHECK(r.off <= r.end, "reader past the trailer: %zu > %zu", r.off, r.end);
        msgpack_sbuffer_clear(&sbuf);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &sbuf, msgpack_sbuffer_write);
        msgpack_pack_object(&pk, o);
        objects++;
    }
    FZ_CHECK(rc == 0 || rc == -1, "sr_checkpoint_next returned %d", rc);
    FZ_CHECK(objects <= size, "more objects than bytes");
    sr_checkpoint_close(&r);
}

/* sr_checkpoint_load, then ckpt.load in the Lua state, protected. */
static void load(void)
{
    char err[1024] = "";
    sr_ckpt_loaded_t c;
    size_t before = sr_alloc_used();
    int loaded = sr_checkpoint_load(path, &c, err, sizeof(err)) == 0;
    if (loaded) {
        FZ_CHECK(c.meta && c.meta_len > 0, "loaded without metadata");
        for (size_t i = 0; i < c.nstates; i++) FZ_CHECK(c.states[i] != NULL, "state %zu missing", i);
        for (size_t i = 0; i < c.nwindows; i++) FZ_CHECK(c.windows[i] != NULL, "window %zu missing", i);
        sr_checkpoint_unload(&c);
    } else {
        FZ_CHECK(err[0] != '\0', "sr_checkpoint_load refused without a reason");
        FZ_CHECK(!c.states && !c.windows && !c.meta, "a refused load left sections");
    }
    FZ_CHECK(sr_alloc_used() == before, "sr_checkpoint_load leaked %zu bytes", sr_alloc_used() - before);
    lua_rawgeti(L, LUA_REGISTRYINDEX, load_ref);
    lua_pushstring(L, path);
    int rc = lua_pcall(L, 1, LUA_MULTRET, 0);
    FZ_CHECK(rc == 0, "ckpt.load raised: %s", lua_tostring(L, -1));
    int n = lua_gettop(L);
    if (lua_isnil(L, 1)) {
        FZ_CHECK(n == 2 && lua_type(L, 2) == LUA_TSTRING, "ckpt.load refused without a reason (%d results)", n);
        FZ_CHECK(!loaded && strcmp(lua_tostring(L, 2), err) == 0, "ckpt.load refused (%s), the C loader %s%s",
                 lua_tostring(L, 2), loaded ? "did not" : "with ", loaded ? "" : err);
    } else {
        FZ_CHECK(n == 3 && lua_istable(L, 2) && lua_istable(L, 3), "ckpt.load returned %d results", n);
        FZ_CHECK(loaded, "ckpt.load loaded what the C loader refused: %s", err);
    }
    fz_lua_reset(L);
}

static void one(const uint8_t *data, size_t size)
{
    fz_write(path, data, size);
    walk(data, size);
    load();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    one(data, size);
    if (size >= HEAD + TRAILER && !trailer_valid(data, size)) {
        uint8_t *copy = malloc(size);
        if (!copy) return 0;
        memcpy(copy, data, size);
        memcpy(copy + size - TRAILER, "SREN", 4);
        fz_put32(copy + size - 4, sr_crc32c(0, copy, size - TRAILER));
        one(copy, size);
        free(copy);
    }
    return 0;
}
