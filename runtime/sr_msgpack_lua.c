/* sr_msgpack_lua: conversion between Lua values and msgpack (msgpack-c). */
#include "sr_msgpack_lua.h"
#include "sr_alloc.h"
#include "sr_mpcheck.h"

#include <lauxlib.h>
#include <math.h>
#include <msgpack/unpack_define.h>
#include <string.h>

/* Nothing deeper than decoders take is packed: a checkpoint wraps a value
 * in one array more, and msgpack-c unpacks MSGPACK_EMBED_STACK_SIZE levels. */
_Static_assert(MSGPACK_EMBED_STACK_SIZE >= SR_MP_MAX_DEPTH + 1, "msgpack-c unpacks fewer levels");
#define SR__STR(x) #x
#define SR__XSTR(x) SR__STR(x)

/* Per thread: each worker thread runs its own VM (SPEC section 15). */
static __thread msgpack_zone unpack_zone;
static __thread int unpack_zone_ready;

static void sr__pack_number(msgpack_packer *pk, lua_Number n)
{
    if (n == floor(n) && n >= -9.2233720368547758e18 && n < 9.2233720368547758e18)
        msgpack_pack_int64(pk, (int64_t)n);
    else
        msgpack_pack_double(pk, n);
}

static const char *sr__pack(lua_State *L, int idx, msgpack_packer *pk, int depth)
{
    switch (lua_type(L, idx)) {
    case LUA_TNUMBER: sr__pack_number(pk, lua_tonumber(L, idx)); return NULL;
    case LUA_TBOOLEAN:
        if (lua_toboolean(L, idx)) msgpack_pack_true(pk); else msgpack_pack_false(pk);
        return NULL;
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        msgpack_pack_str(pk, len);
        msgpack_pack_str_body(pk, s, len);
        return NULL;
    }
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, idx) == NULL) { msgpack_pack_nil(pk); return NULL; } /* cjson.null */
        return "a light userdata";
    case LUA_TTABLE: break;
    case LUA_TFUNCTION: return "a function";
    case LUA_TUSERDATA: return "a userdata";
    case LUA_TTHREAD: return "a coroutine";
    case LUA_TNIL: return "nil";
    default: return "a value of this type";
    }
    if (depth >= SR_MP_MAX_DEPTH) return "a table nested deeper than " SR__XSTR(SR_MP_MAX_DEPTH) " levels (a cycle?)";
    if (idx < 0) idx = lua_gettop(L) + idx + 1;
    luaL_checkstack(L, 4, "msgpack value");
    /* An array when the keys are exactly 1..n, else a map. */
    size_t n = lua_objlen(L, idx), count = 0;
    int array = 1;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        count++;
        if (array) {
            if (lua_type(L, -2) != LUA_TNUMBER) array = 0;
            else {
                lua_Number k = lua_tonumber(L, -2);
                if (k != floor(k) || k < 1 || k > (lua_Number)n) array = 0;
            }
        }
        lua_pop(L, 1);
    }
    if (array && count == n) {
        msgpack_pack_array(pk, n);
        for (size_t i = 1; i <= n; i++) {
            lua_rawgeti(L, idx, (int)i);
            const char *err = sr__pack(L, -1, pk, depth + 1);
            lua_pop(L, 1);
            if (err) return err;
        }
        return NULL;
    }
    msgpack_pack_map(pk, count);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        if (lua_type(L, -2) == LUA_TTABLE) { lua_pop(L, 2); return "a table with a table as a key"; }
        const char *err = sr__pack(L, -2, pk, depth + 1);
        if (!err) err = sr__pack(L, -1, pk, depth + 1);
        lua_pop(L, 1);
        if (err) { lua_pop(L, 1); return err; }
    }
    return NULL;
}

const char *sr_mplua_pack(lua_State *L, int idx, msgpack_packer *pk, int depth)
{
    return sr__pack(L, idx, pk, depth);
}

void sr_mplua_pack_key(lua_State *L, int idx, msgpack_packer *pk)
{
    int t = lua_type(L, idx);
    if (t != LUA_TSTRING && t != LUA_TNUMBER && t != LUA_TBOOLEAN)
        luaL_error(L, "state key must be a string, number or boolean, got %s", luaL_typename(L, idx));
    if (t == LUA_TNUMBER && isnan(lua_tonumber(L, idx))) luaL_error(L, "state key must not be NaN");
    sr__pack(L, idx, pk, 0);
}

void sr_mplua_push_object(lua_State *L, const msgpack_object *o)
{
    luaL_checkstack(L, 3, "msgpack value");
    switch (o->type) {
    case MSGPACK_OBJECT_NIL: lua_pushlightuserdata(L, NULL); break; /* cjson.null */
    case MSGPACK_OBJECT_BOOLEAN: lua_pushboolean(L, o->via.boolean); break;
    case MSGPACK_OBJECT_POSITIVE_INTEGER: lua_pushnumber(L, (lua_Number)o->via.u64); break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: lua_pushnumber(L, (lua_Number)o->via.i64); break;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: lua_pushnumber(L, (lua_Number)o->via.f64); break;
    case MSGPACK_OBJECT_STR: lua_pushlstring(L, o->via.str.ptr, o->via.str.size); break;
    case MSGPACK_OBJECT_BIN: lua_pushlstring(L, o->via.bin.ptr, o->via.bin.size); break;
    case MSGPACK_OBJECT_ARRAY:
        lua_createtable(L, (int)o->via.array.size, 0);
        for (uint32_t i = 0; i < o->via.array.size; i++) {
            sr_mplua_push_object(L, &o->via.array.ptr[i]);
            lua_rawseti(L, -2, (int)i + 1);
        }
        break;
    case MSGPACK_OBJECT_MAP:
        lua_createtable(L, 0, (int)o->via.map.size);
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            sr_mplua_push_object(L, &o->via.map.ptr[i].key);
            /* A key Lua cannot index by (an extension type, NaN) is left out. */
            if (lua_isnil(L, -1) || (lua_type(L, -1) == LUA_TNUMBER && lua_tonumber(L, -1) != lua_tonumber(L, -1))) {
                lua_pop(L, 1);
                continue;
            }
            sr_mplua_push_object(L, &o->via.map.ptr[i].val);
            lua_rawset(L, -3);
        }
        break;
    default: lua_pushnil(L); break;
    }
}

static void sr__zone_ready(void)
{
    if (!unpack_zone_ready) {
        msgpack_zone_init(&unpack_zone, 2048);
        unpack_zone_ready = 1;
    }
}

void sr_mplua_thread_free(void)
{
    if (unpack_zone_ready) msgpack_zone_destroy(&unpack_zone);
    unpack_zone_ready = 0;
}

/* Big-endian unsigned integer of n bytes at p. */
static uint64_t sr__be_read(const unsigned char *p, int n)
{
    uint64_t u = 0;
    for (int i = 0; i < n; i++) u = u << 8 | p[i];
    return u;
}

/* Scalars and arrays of them (counters, sums, small records), decoded
 * straight onto the stack as sr_mplua_push_object would push them, with
 * no object tree. Returns the bytes used, or 0 for what it leaves to
 * msgpack-c (maps, extensions, bytes cut short, deep nesting): then what
 * it pushed is for the caller to drop. */
static size_t sr__fast_push(lua_State *L, const unsigned char *p, size_t n, int depth)
{
    if (n == 0) return 0;
    unsigned c = p[0];
    size_t len, head;
    if (c <= 0x7f) { lua_pushnumber(L, c); return 1; }
    if (c >= 0xe0) { lua_pushnumber(L, (int8_t)c); return 1; }
    if ((c & 0xe0) == 0xa0) { len = c & 0x1f; head = 1; goto str; }
    if ((c & 0xf0) == 0x90) { len = c & 0x0f; head = 1; goto array; }
    switch (c) {
    case 0xc0: lua_pushlightuserdata(L, NULL); return 1; /* cjson.null */
    case 0xc2: lua_pushboolean(L, 0); return 1;
    case 0xc3: lua_pushboolean(L, 1); return 1;
    case 0xcc: case 0xcd: case 0xce: case 0xcf: {
        int w = 1 << (c - 0xcc);
        if (n < (size_t)w + 1) return 0;
        lua_pushnumber(L, (lua_Number)sr__be_read(p + 1, w));
        return (size_t)w + 1;
    }
    case 0xd0: case 0xd1: case 0xd2: case 0xd3: {
        int w = 1 << (c - 0xd0);
        if (n < (size_t)w + 1) return 0;
        uint64_t u = sr__be_read(p + 1, w);
        int64_t v = w == 8 ? (int64_t)u : (int64_t)(u ^ ((uint64_t)1 << (8 * w - 1))) - ((int64_t)1 << (8 * w - 1));
        lua_pushnumber(L, (lua_Number)v);
        return (size_t)w + 1;
    }
    case 0xca: {
        if (n < 5) return 0;
        uint32_t u = (uint32_t)sr__be_read(p + 1, 4);
        float f;
        memcpy(&f, &u, sizeof(f));
        lua_pushnumber(L, (lua_Number)f);
        return 5;
    }
    case 0xcb: {
        if (n < 9) return 0;
        uint64_t u = sr__be_read(p + 1, 8);
        double d;
        memcpy(&d, &u, sizeof(d));
        lua_pushnumber(L, d);
        return 9;
    }
    case 0xd9: case 0xc4: head = 2; break;
    case 0xda: case 0xc5: head = 3; break;
    case 0xdb: case 0xc6: head = 5; break;
    case 0xdc: head = 3; break;
    case 0xdd: head = 5; break;
    default: return 0;
    }
    if (n < head) return 0;
    len = (size_t)sr__be_read(p + 1, (int)head - 1);
    if (c == 0xdc || c == 0xdd) goto array;
str:
    if (len > n - head) return 0;
    lua_pushlstring(L, (const char *)p + head, len);
    return head + len;
array:
    /* Each element takes a byte at least: a count beyond the bytes left is
     * malformed, and no table is made for it. */
    if (depth >= 8 || len > n - head) return 0;
    luaL_checkstack(L, 3, "msgpack value");
    lua_createtable(L, (int)len, 0);
    size_t off = head;
    for (size_t i = 0; i < len; i++) {
        size_t used = sr__fast_push(L, p + off, n - off, depth + 1);
        if (!used) return 0;
        lua_rawseti(L, -2, (int)i + 1);
        off += used;
    }
    return off;
}

void sr_mplua_push(lua_State *L, const char *p, size_t n)
{
    int top = lua_gettop(L);
    luaL_checkstack(L, 3, "msgpack value");
    size_t used = sr__fast_push(L, (const unsigned char *)p, n, 0);
    if (used && used == n) return;
    lua_settop(L, top);
    sr__zone_ready();
    msgpack_object obj;
    size_t off = 0;
    if (msgpack_unpack(p, n, &off, &unpack_zone, &obj) == MSGPACK_UNPACK_SUCCESS)
        sr_mplua_push_object(L, &obj);
    else
        lua_pushnil(L);
    msgpack_zone_clear(&unpack_zone);
}

size_t sr_mplua_push_next(lua_State *L, const char *p, size_t n)
{
    int top = lua_gettop(L);
    size_t used = sr__fast_push(L, (const unsigned char *)p, n, 0);
    if (used) return used;
    lua_settop(L, top);
    luaL_checkstack(L, 3, "msgpack value");
    sr__zone_ready();
    msgpack_object obj;
    size_t off = 0;
    msgpack_unpack_return rc = msgpack_unpack(p, n, &off, &unpack_zone, &obj);
    if (rc != MSGPACK_UNPACK_SUCCESS && rc != MSGPACK_UNPACK_EXTRA_BYTES) {
        msgpack_zone_clear(&unpack_zone);
        return 0;
    }
    sr_mplua_push_object(L, &obj);
    msgpack_zone_clear(&unpack_zone);
    return off;
}

long sr_mplua_each(const char *p, size_t n, void (*fn)(void *ud, const msgpack_object *o), void *ud)
{
    sr__zone_ready();
    size_t off = 0;
    long count = 0;
    while (off < n) {
        msgpack_object obj;
        msgpack_unpack_return rc = msgpack_unpack(p, n, &off, &unpack_zone, &obj);
        if (rc != MSGPACK_UNPACK_SUCCESS && rc != MSGPACK_UNPACK_EXTRA_BYTES) {
            msgpack_zone_clear(&unpack_zone);
            return -1;
        }
        fn(ud, &obj);
        msgpack_zone_clear(&unpack_zone);
        count++;
    }
    return count;
}
