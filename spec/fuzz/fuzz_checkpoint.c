/* fuzz_checkpoint: libFuzzer target for the checkpoint decoder. Each input
 * is written as a checkpoint file and read twice: as it is (open's checks:
 * magic, version, trailer, checksum) and with its trailer recomputed, so the
 * msgpack objects behind the checksum reach sr_checkpoint_next and
 * ckpt.load (the loader `streamrun run` and `inspect` use). Checked beyond
 * memory safety: open fails with a reason or succeeds on a valid trailer;
 * ckpt.load never raises and returns nil and a reason, or meta, states and
 * windows.
 *
 * Known bug, let pass (FUZZ_STRICT=1 in the environment checks it too):
 * ckpt.load raises "table index is nil" or "table index is NaN" when the
 * metadata has a map key of an extension type or a NaN float
 * (sr_mplua_push_object, runtime/sr_msgpack_lua.c), leaking the mapped file
 * and its msgpack zone; inputs that would trip it skip ckpt.load. The
 * pending specs of spec/unit/checkpoint_corrupt_spec.lua and
 * spec/e2e/corrupt_spec.lua hold the repro. Remove the filter once fixed. */
#include <math.h>
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
static int strict;
static int tripped; /* the input's metadata trips the known bug */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc; (void)argv;
    fz_init_dir("checkpoint");
    snprintf(path, sizeof(path), "%s/input%s", fz_dir, SR_CKPT_SUFFIX);
    L = fz_lua(luaopen_streamrun_ckpt, "load", &load_ref);
    msgpack_sbuffer_init(&sbuf);
    strict = getenv("FUZZ_STRICT") && strcmp(getenv("FUZZ_STRICT"), "1") == 0;
    return 0;
}

/* Whether o holds, at any depth, a map key Lua cannot index a table with
 * once sr_mplua_push_object converted it: an extension (pushed as nil) or
 * a NaN. */
static int bad_key_inside(const msgpack_object *o)
{
    if (o->type == MSGPACK_OBJECT_ARRAY) {
        for (uint32_t i = 0; i < o->via.array.size; i++)
            if (bad_key_inside(&o->via.array.ptr[i])) return 1;
    } else if (o->type == MSGPACK_OBJECT_MAP) {
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            const msgpack_object *k = &o->via.map.ptr[i].key;
            if (k->type == MSGPACK_OBJECT_EXT) return 1;
            if ((k->type == MSGPACK_OBJECT_FLOAT32 || k->type == MSGPACK_OBJECT_FLOAT64) && isnan(k->via.f64)) return 1;
            if (bad_key_inside(k) || bad_key_inside(&o->via.map.ptr[i].val)) return 1;
        }
    }
    return 0;
}

/* The known bug: the header's meta (the first "meta" key, as ckpt.load
 * finds it) holds such a key. */
static int trips_known_bug(const msgpack_object *head)
{
    if (head->type != MSGPACK_OBJECT_MAP) return 0;
    for (uint32_t i = 0; i < head->via.map.size; i++) {
        const msgpack_object *k = &head->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == 4 && memcmp(k->via.str.ptr, "meta", 4) == 0)
            return bad_key_inside(&head->via.map.ptr[i].val);
    }
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
        if (objects == 0 && !strict) tripped = trips_known_bug(&o);
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
    tripped = 0;
    walk(data, size);
    if (!tripped) load();
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
