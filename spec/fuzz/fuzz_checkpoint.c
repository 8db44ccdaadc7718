/* fuzz_checkpoint: libFuzzer target for the checkpoint decoder. Each input
 * is written as a checkpoint file and read twice: as it is (open's checks:
 * magic, version, trailer, checksum) and with its trailer recomputed, so the
 * msgpack objects behind the checksum reach sr_checkpoint_next and
 * ckpt.load (the loader `streamrun run` and `inspect` use). Checked beyond
 * memory safety: open fails with a reason or succeeds on a valid trailer;
 * ckpt.load never raises and returns nil and a reason, or meta, states and
 * windows. */
#include <msgpack.h>

#include "fuzz_common.h"
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

/* ckpt.load(path) in the Lua state, protected. */
static void load(void)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, load_ref);
    lua_pushstring(L, path);
    int rc = lua_pcall(L, 1, LUA_MULTRET, 0);
    FZ_CHECK(rc == 0, "ckpt.load raised: %s", lua_tostring(L, -1));
    int n = lua_gettop(L);
    if (lua_isnil(L, 1)) {
        FZ_CHECK(n == 2 && lua_type(L, 2) == LUA_TSTRING, "ckpt.load refused without a reason (%d results)", n);
    } else {
        FZ_CHECK(n == 3 && lua_istable(L, 2) && lua_istable(L, 3), "ckpt.load returned %d results", n);
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
