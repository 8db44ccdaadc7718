/* test_checkpoint_corrupt: the checkpoint decoder under ASan/UBSan on every
 * byte of a small checkpoint flipped, every truncation length, and every
 * body byte rewritten under a valid checksum: sr_checkpoint_open refuses
 * with the reason for the part hit, and ckpt.load (through a Lua state, as
 * the runtime calls it) returns nil and a reason or a whole load, never
 * raising; sr_checkpoint_load (no Lua) gives the same verdict and reason. spec/unit/checkpoint_corrupt_spec.lua checks the messages in
 * more detail; this is the same sweep with the sanitizers watching. */
#include "sr_test.h"

#include <lauxlib.h>
#include <lua.h>

#include "sr_alloc.h"
#include "sr_checkpoint.h"
#include "sr_checkpoint_lua.h"
#include "sr_crc32c.h"
#include "sr_state_lua.h"
#include "sr_window_lua.h"

#define HEAD 5
#define TRAILER 8

/* A 32-bit array or map length under a valid checksum makes msgpack-c ask
 * for up to 100 GB before it finds the elements missing; it copes with the
 * allocation failing, so let it fail (as where memory is not overcommitted)
 * instead of ASan aborting. The environment's ASAN_OPTIONS add to these. */
const char *__asan_default_options(void);
const char *__asan_default_options(void) { return "allocator_may_return_null=1:max_allocation_size_mb=2048"; }

static char dir[4096], path[4200], probe[4200];
static unsigned char good[4096];
static size_t good_len;
static lua_State *L;

/* msgpack: a fixstr and a positive fixint. */
static size_t mp_str(char *out, const char *s)
{
    size_t n = strlen(s);
    out[0] = (char)(0xa0 | n);
    memcpy(out + 1, s, n);
    return n + 1;
}

static void put(sr_state_t *st, const char *k, int v, int64_t expiry)
{
    char key[32], value[1] = {(char)v};
    size_t klen = mp_str(key, k);
    sr_state_entry_t *e;
    assert_int_equal(sr_state_put(st, key, klen, value, 1, &e), 0);
    if (expiry) sr_state_arm(st, e, expiry);
}

/* A checkpoint with metadata, a state with timeouts, one without, and a
 * window with its with-inverse result, read into good. */
static int setup(void **unused)
{
    (void)unused;
    sr_test_tmpdir(dir, sizeof(dir));
    sr_state_t *idle = sr_state_new("idle", 2, 5000, 2000);
    sr_state_t *totals = sr_state_new("totals", 2, 0, 2000);
    sr_state_t *result = sr_state_new("win#window", 1, 0, 2000);
    sr_window_t *win = sr_window_new("win");
    put(idle, "x", 2, 7000);
    put(idle, "y", 1, 6000);
    put(totals, "x", 2, 0);
    put(totals, "y", 1, 0);
    put(result, "x", 2, 0);
    char slice[32];
    size_t n = 0;
    slice[n++] = (char)0x92;
    n += mp_str(slice + n, "x");
    slice[n++] = 1;
    assert_int_equal(sr_window_push(win, 1000, slice, n, 1), 0);
    assert_int_equal(sr_window_push(win, 2000, slice, n, 1), 0);
    static const char meta[] = "\x83\xa3job\xa7" "corrupt" "\xa5" "batch\x02\xa7time_ms\xcd\x07\xd0";
    sr_state_t *states[] = {idle, totals};
    sr_window_t *windows[] = {win};
    sr_state_t *results[] = {result};
    sr_ckpt_content_t c = {.meta = meta, .meta_len = sizeof(meta) - 1, .states = states, .nstates = 2,
                           .windows = windows, .results = results, .nwindows = 1};
    char err[1024];
    assert_int_equal(sr_checkpoint_write(dir, "good.srck", &c, err, sizeof(err)), 0);
    sr_state_free(idle);
    sr_state_free(totals);
    sr_state_free(result);
    sr_window_free(win);
    sr_test_path(path, sizeof(path), dir, "good.srck");
    sr_test_path(probe, sizeof(probe), dir, "probe.srck");
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    good_len = fread(good, 1, sizeof(good), f);
    fclose(f);
    assert_true(good_len > 100 && good_len < sizeof(good));

    L = luaL_newstate();
    lua_pushcfunction(L, luaopen_streamrun_cstate);
    lua_call(L, 0, 0);
    lua_pushcfunction(L, luaopen_streamrun_cwindow);
    lua_call(L, 0, 0);
    lua_pushcfunction(L, luaopen_streamrun_ckpt);
    lua_call(L, 0, 1);
    lua_setglobal(L, "ckpt");
    return 0;
}

static int teardown(void **unused)
{
    (void)unused;
    lua_close(L);
    sr_test_rmtree(dir);
    return 0;
}

/* Writes n bytes as a new probe file (removed first: ext4 flushes a file
 * rewritten in place on close). */
static void write_probe(const unsigned char *p, size_t n)
{
    unlink(probe);
    FILE *f = fopen(probe, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

static void fix_crc(unsigned char *p, size_t n)
{
    memcpy(p + n - TRAILER, "SREN", 4);
    uint32_t crc = sr_crc32c(0, p, n - TRAILER);
    for (int i = 0; i < 4; i++) p[n - 4 + i] = (unsigned char)(crc >> (8 * i));
}

/* sr_checkpoint_open on the probe: the reason it refused ("" if it opened,
 * after walking every object). */
static const char *open_probe(char *err, size_t errlen)
{
    sr_ckpt_reader_t r;
    err[0] = '\0';
    if (sr_checkpoint_open(&r, probe, err, errlen) < 0) {
        assert_true(err[0] != '\0');
        return err;
    }
    msgpack_object o;
    while (sr_checkpoint_next(&r, &o) == 1) assert_true(r.off <= r.end);
    sr_checkpoint_close(&r);
    return err;
}

/* ckpt.load(probe), protected, then sr_checkpoint_load. Returns 0 for a
 * refusal (nil and a string, copied to why), 1 for a whole load (meta,
 * states, windows); fails the test on anything else, or when the C loader
 * disagrees or leaks. */
static int load_probe(char *why, size_t whylen)
{
    lua_getglobal(L, "ckpt");
    lua_getfield(L, -1, "load");
    lua_remove(L, -2);
    lua_pushstring(L, probe);
    int rc = lua_pcall(L, 1, LUA_MULTRET, 0);
    if (rc != 0) fail_msg("ckpt.load raised: %s", lua_tostring(L, -1));
    int n = lua_gettop(L), whole = !lua_isnil(L, 1);
    if (whole) {
        assert_int_equal(n, 3);
        assert_true(lua_istable(L, 2) && lua_istable(L, 3));
    } else {
        assert_int_equal(n, 2);
        assert_int_equal(lua_type(L, 2), LUA_TSTRING);
        snprintf(why, whylen, "%s", lua_tostring(L, 2));
    }
    lua_settop(L, 0);
    lua_gc(L, LUA_GCCOLLECT, 0);
    /* The C loader restore goes through: the same verdict, the same reason. */
    sr_ckpt_loaded_t c;
    char err[1024];
    size_t before = sr_alloc_used();
    int loaded = sr_checkpoint_load(probe, &c, err, sizeof(err)) == 0;
    assert_int_equal(loaded, whole);
    if (loaded) sr_checkpoint_unload(&c);
    else assert_string_equal(err, why);
    assert_int_equal(sr_alloc_used(), before);
    return whole;
}

static int starts(const char *s, const char *prefix) { return strncmp(s, prefix, strlen(prefix)) == 0; }

static void test_control(void **unused)
{
    (void)unused;
    char err[1024], why[1024];
    write_probe(good, good_len);
    assert_string_equal(open_probe(err, sizeof(err)), "");
    assert_int_equal(load_probe(why, sizeof(why)), 1);
}

static void test_every_byte_flipped(void **unused)
{
    (void)unused;
    unsigned char buf[4096];
    char err[1024], why[1024];
    for (size_t i = 0; i < good_len; i++) {
        memcpy(buf, good, good_len);
        buf[i] ^= 0xff;
        write_probe(buf, good_len);
        const char *want = i < 4 ? "bad magic at offset 0"
                         : i == 4 ? "format version 254 is not supported"
                         : i < good_len - TRAILER ? "checksum mismatch over bytes"
                         : i < good_len - 4 ? "truncated: no trailer at offset"
                         : "checksum mismatch over bytes";
        open_probe(err, sizeof(err));
        if (!starts(err, want)) fail_msg("byte %zu flipped: \"%s\", want \"%s\"", i, err, want);
        assert_int_equal(load_probe(why, sizeof(why)), 0);
        assert_string_equal(why, err);
    }
}

static void test_every_truncation(void **unused)
{
    (void)unused;
    char err[1024], why[1024], want[128];
    for (size_t n = 0; n < good_len; n++) {
        write_probe(good, n);
        if (n < HEAD + TRAILER) snprintf(want, sizeof(want), "truncated: %zu bytes, too short", n);
        else snprintf(want, sizeof(want), "truncated: no trailer at offset %zu ", n - TRAILER);
        open_probe(err, sizeof(err));
        if (!starts(err, want)) fail_msg("cut to %zu bytes: \"%s\", want \"%s\"", n, err, want);
        assert_int_equal(load_probe(why, sizeof(why)), 0);
        assert_string_equal(why, err);
    }
}

/* Each body byte flipped or replaced by a byte that changes an object's type
 * or announces more than there is, the checksum made valid: open succeeds
 * and every object decodes or stops the walk; ckpt.load loads it whole or
 * names an offset. */
static void test_body_rewritten_under_valid_checksum(void **unused)
{
    (void)unused;
    static const int values[] = {-1, 0xc1, 0xdd, 0xdf, 0xc6, 0xcf, 0xc0, 0xc2};
    unsigned char buf[4096];
    char err[1024], why[1024];
    int refused = 0, loaded = 0;
    for (size_t i = HEAD; i < good_len - TRAILER; i++) {
        for (size_t v = 0; v < sizeof(values) / sizeof(values[0]); v++) {
            memcpy(buf, good, good_len);
            buf[i] = values[v] < 0 ? (unsigned char)(buf[i] ^ 0xff) : (unsigned char)values[v];
            if (buf[i] == good[i]) continue;
            fix_crc(buf, good_len);
            write_probe(buf, good_len);
            assert_string_equal(open_probe(err, sizeof(err)), "");
            if (load_probe(why, sizeof(why))) {
                loaded++;
            } else {
                if (!strstr(why, "offset ")) fail_msg("byte %zu := %d: \"%s\" names no offset", i, values[v], why);
                refused++;
            }
        }
    }
    assert_true(refused > 0 && loaded > 0);
}

/* A state header declaring more keys than the content can hold (2^31 - 1
 * here) is refused before anything is reserved for them. */
static void test_key_count_beyond_the_content(void **unused)
{
    (void)unused;
    static const unsigned char key[] = {0xa5, 'c', 'o', 'u', 'n', 't'};
    unsigned char buf[4096 + 8];
    size_t at = 0;
    for (size_t i = HEAD; i + sizeof(key) < good_len && !at; i++)
        if (memcmp(good + i, key, sizeof(key)) == 0) at = i + sizeof(key);
    assert_true(at > 0);
    assert_true(good[at] <= 0x7f); /* a positive fixint now */
    memcpy(buf, good, at);
    static const unsigned char huge[] = {0xce, 0x7f, 0xff, 0xff, 0xff};
    memcpy(buf + at, huge, sizeof(huge));
    memcpy(buf + at + sizeof(huge), good + at + 1, good_len - at - 1);
    size_t len = good_len + sizeof(huge) - 1;
    fix_crc(buf, len);
    write_probe(buf, len);
    char err[1024], why[1024];
    assert_string_equal(open_probe(err, sizeof(err)), "");
    assert_false(load_probe(why, sizeof(why)));
    if (!strstr(why, "2147483647 keys declared")) fail_msg("\"%s\"", why);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_control),
        cmocka_unit_test(test_every_byte_flipped),
        cmocka_unit_test(test_every_truncation),
        cmocka_unit_test(test_body_rewritten_under_valid_checksum),
        cmocka_unit_test(test_key_count_beyond_the_content),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
