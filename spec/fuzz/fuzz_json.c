/* fuzz_json: libFuzzer target for the batch decoder of JSON sources
 * (runtime/sr_json_decode.c). The input's lines are a sealed batch's
 * records; they are decoded as sources.lua does (the batch decoder, then
 * lua-cjson for each record it leaves), and every record's outcome must be
 * lua-cjson's own: the same value (numbers to the bit, strings byte for
 * byte, cjson.null, the same members and lengths), or a failure where
 * lua-cjson fails (bare nulls included). Beyond memory safety, then: the
 * fast path never accepts or reads what lua-cjson would not. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "sr_batch.h"
#include "sr_json_lua.h"

static lua_State *L;
static int check_ref;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* check(batch_ud): raises with what differs. The JIT is off: a compiled
 * trace registers its unwind frames with malloc, which libFuzzer would take
 * for a leak of the input that compiled it. */
static const char CHECK[] =
    "local decode_batch = ...\n"
    "require('jit').off()\n"
    "local ffi, cjson = require 'ffi', require 'cjson'\n"
    "ffi.cdef [[typedef struct sr_batch { char *data; uint32_t *off; int64_t *pos; size_t n; size_t len;\n"
    "  size_t cap, ncap; size_t rsv, nrsv; size_t max_records, max_bytes; } sr_batch_t;]]\n"
    "local null = cjson.null\n"
    "local function same(x, y, path)\n"
    "  if type(x) ~= type(y) then error(path .. ': ' .. type(x) .. ' vs ' .. type(y), 0) end\n"
    "  if type(x) == 'number' then\n"
    "    if x ~= x and y ~= y then return end\n"
    "    if x ~= y or 1 / x ~= 1 / y then error(('%s: %.17g vs %.17g'):format(path, x, y), 0) end\n"
    "  elseif type(x) == 'table' then\n"
    "    if #x ~= #y then error(path .. ': lengths', 0) end\n"
    "    for k, v in pairs(x) do same(v, y[k], path .. '.' .. tostring(k)) end\n"
    "    for k in pairs(y) do if x[k] == nil then error(path .. '.' .. tostring(k) .. ': missing', 0) end end\n"
    "  elseif x ~= y then error(path .. ': ' .. tostring(x) .. ' vs ' .. tostring(y), 0) end\n"
    "end\n"
    "return function(ud)\n"
    "  local cb = ffi.cast('sr_batch_t *', ud)\n"
    "  local n = tonumber(cb.n)\n"
    "  local function line(i) return ffi.string(cb.data + cb.off[i - 1], cb.off[i] - cb.off[i - 1]) end\n"
    "  local out, got, m, i = {}, {}, 0, 0\n"
    "  while true do\n"
    "    m, i = decode_batch(cb, out, m, i)\n"
    "    if i >= n then break end\n"
    "    i = i + 1\n"
    "    local ok, v = pcall(cjson.decode, line(i))\n"
    "    if ok and v ~= null then m = m + 1 out[m] = v else got[i] = false end\n"
    "  end\n"
    "  local k = 0\n"
    "  for r = 1, n do\n"
    "    local ok, v = pcall(cjson.decode, line(r))\n"
    "    local fails = not ok or v == null\n"
    "    if fails ~= (got[r] == false) then error(('record %d: %q: lua-cjson %s'):format(r, line(r),\n"
    "      fails and 'fails' or 'decodes it'), 0) end\n"
    "    if not fails then k = k + 1 same(out[k], v, ('record %d %q'):format(r, line(r))) end\n"
    "  end\n"
    "  if k ~= m then error(('%d elements, lua-cjson %d'):format(m, k), 0) end\n"
    "end\n";

/* The error handler of every call: the message with a traceback. */
static int traceback(lua_State *L)
{
    luaL_traceback(L, L, lua_tostring(L, 1), 1);
    return 1;
}

/* Closing the state frees what lua-cjson keeps (its buffers), which the
 * leak check at exit would otherwise report; the batch lives until then. */
static void close_lua(void) { lua_close(L); }

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc; (void)argv;
    L = luaL_newstate();
    if (!L) exit(1);
    atexit(close_lua);
    luaL_openlibs(L);
    lua_pushcfunction(L, traceback); /* stays at index 1 */
    if (luaL_loadbuffer(L, CHECK, sizeof(CHECK) - 1, "fuzz_json") != 0) {
        fprintf(stderr, "fuzz_json: %s\n", lua_tostring(L, -1));
        exit(1);
    }
    lua_pushcfunction(L, luaopen_streamrun_json);
    if (lua_pcall(L, 0, 1, 1) != 0) {
        fprintf(stderr, "fuzz_json: %s\n", lua_tostring(L, -1));
        exit(1);
    }
    lua_getfield(L, -1, "decode_batch");
    lua_remove(L, -2);
    if (lua_pcall(L, 1, 1, 1) != 0) {
        fprintf(stderr, "fuzz_json: %s\n", lua_tostring(L, -1));
        exit(1);
    }
    check_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    /* A first batch, so that the batch and the decoder's scratch buffers
     * (kept from call to call) are there before the inputs: libFuzzer looks
     * for leaks when an input mallocs more than it frees, and lua-cjson's
     * buffers, held in LuaJIT's own memory, which the leak check does not
     * scan, would be reported. */
    static const uint8_t warm[] = "{\"a\\n\":\"b\\n\"}";
    LLVMFuzzerTestOneInput(warm, sizeof(warm) - 1);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* One batch for every input (emptied, its memory kept), made by the
     * first batch of LLVMFuzzerInitialize. */
    static sr_batch_t *b;
    if (!b && !(b = sr_batch_new(0, 0))) return 0;
    sr_batch_clear(b);
    const char *p = (const char *)data, *end = p + size;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
        if (sr_batch_append(b, p, len, p - (const char *)data) != 0) break;
        p += len + 1;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, check_ref);
    lua_pushlightuserdata(L, b);
    if (lua_pcall(L, 1, 0, 1) != 0) {
        /* libFuzzer reports the abort as a crash and keeps the input. */
        fprintf(stderr, "fuzz check failed: %s\n", lua_tostring(L, -1));
        abort();
    }
    lua_settop(L, 1);
    lua_gc(L, LUA_GCCOLLECT, 0);
    return 0;
}
