/* sr_state_lua: Lua binding of sr_state. A state handle is a userdata owning
 * one sr_state_t; get/put/remove/touch take Lua keys (strings, numbers,
 * booleans: 1 and "1" differ) and Lua values, encoded as msgpack. Errors in
 * the data (a value msgpack cannot carry) come back as nil, message. */
#include "sr_state_lua.h"
#include "sr_alloc.h"
#include "sr_error.h"
#include "sr_state.h"

#include <lauxlib.h>
#include <math.h>
#include <msgpack.h>
#include <stdio.h>
#include <string.h>

#define SR_STATE_MT "streamrun.state"
#define SR_PACK_MAX_DEPTH 64

/* -- Packing: Lua values to msgpack -- */

typedef struct sr__buf {
    char *data;
    size_t len, cap;
} sr__buf_t;

/* One scratch buffer per kind: the runtime is single-threaded. */
static sr__buf_t key_buf, value_buf;
static msgpack_zone unpack_zone;
static int unpack_zone_ready;

static int sr__buf_write(void *data, const char *p, size_t n)
{
    sr__buf_t *b = data;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n) cap *= 2;
        char *d = sr_realloc(b->data, cap);
        if (!d) return -1;
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

static void sr__pack_number(msgpack_packer *pk, lua_Number n)
{
    if (n == floor(n) && n >= -9.2233720368547758e18 && n < 9.2233720368547758e18)
        msgpack_pack_int64(pk, (int64_t)n);
    else
        msgpack_pack_double(pk, n);
}

/* Packs the value at idx. Returns NULL or a static message (not packed). */
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
    if (depth >= SR_PACK_MAX_DEPTH) return "a table nested deeper than 64 levels (a cycle?)";
    if (idx < 0) idx = lua_gettop(L) + idx + 1;
    luaL_checkstack(L, 4, "state value");
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
        int kt = lua_type(L, -2);
        if (kt == LUA_TTABLE) { lua_pop(L, 2); return "a table with a table as a key"; }
        const char *err = sr__pack(L, -2, pk, depth + 1);
        if (!err) err = sr__pack(L, -1, pk, depth + 1);
        lua_pop(L, 1);
        if (err) { lua_pop(L, 1); return err; }
    }
    return NULL;
}

/* Packs the key at idx into key_buf; raises for a key that cannot be one. */
static void sr__pack_key(lua_State *L, int idx)
{
    int t = lua_type(L, idx);
    if (t != LUA_TSTRING && t != LUA_TNUMBER && t != LUA_TBOOLEAN)
        luaL_error(L, "state key must be a string, number or boolean, got %s", luaL_typename(L, idx));
    if (t == LUA_TNUMBER && isnan(lua_tonumber(L, idx))) luaL_error(L, "state key must not be NaN");
    msgpack_packer pk;
    key_buf.len = 0;
    msgpack_packer_init(&pk, &key_buf, sr__buf_write);
    sr__pack(L, idx, &pk, 0);
}

/* -- Unpacking: msgpack onto the Lua stack -- */

static void sr__push_object(lua_State *L, const msgpack_object *o)
{
    luaL_checkstack(L, 3, "state value");
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
            sr__push_object(L, &o->via.array.ptr[i]);
            lua_rawseti(L, -2, (int)i + 1);
        }
        break;
    case MSGPACK_OBJECT_MAP:
        lua_createtable(L, 0, (int)o->via.map.size);
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            sr__push_object(L, &o->via.map.ptr[i].key);
            sr__push_object(L, &o->via.map.ptr[i].val);
            lua_rawset(L, -3);
        }
        break;
    default: lua_pushnil(L); break;
    }
}

/* Pushes the value of msgpack bytes; nil if they do not decode. */
static void sr__push_msgpack(lua_State *L, const char *p, size_t n)
{
    if (!unpack_zone_ready) {
        msgpack_zone_init(&unpack_zone, 2048);
        unpack_zone_ready = 1;
    }
    msgpack_object obj;
    size_t off = 0;
    if (msgpack_unpack(p, n, &off, &unpack_zone, &obj) == MSGPACK_UNPACK_SUCCESS)
        sr__push_object(L, &obj);
    else
        lua_pushnil(L);
    msgpack_zone_clear(&unpack_zone);
}

/* -- The state handle -- */

typedef struct sr__handle {
    sr_state_t *st; /* owned; NULL once freed */
} sr__handle_t;

static sr_state_t *sr__check(lua_State *L)
{
    sr__handle_t *h = luaL_checkudata(L, 1, SR_STATE_MT);
    if (!h->st) luaL_error(L, "state has been freed");
    return h->st;
}

/* cstate.new(name, partitions, timeout_ms, now_ms) -> handle */
static int sr__new(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    int parts = (int)luaL_optinteger(L, 2, 16);
    int64_t timeout = (int64_t)luaL_optnumber(L, 3, 0);
    int64_t now = (int64_t)luaL_optnumber(L, 4, 0);
    sr__handle_t *h = lua_newuserdata(L, sizeof(*h));
    h->st = NULL;
    luaL_getmetatable(L, SR_STATE_MT);
    lua_setmetatable(L, -2);
    h->st = sr_state_new(name, parts, timeout, now);
    if (!h->st) return luaL_error(L, "state %s: out of memory", name);
    return 1;
}

/* handle:get(key) -> value or nil */
static int sr__get(lua_State *L)
{
    sr_state_t *st = sr__check(L);
    sr__pack_key(L, 2);
    sr_state_entry_t *e = sr_state_get(st, key_buf.data, key_buf.len);
    if (!e) return 0;
    sr__push_msgpack(L, sr_state_entry_value(e), e->vlen);
    return 1;
}

/* handle:put(key, value [, now_ms]) -> true, or nil and why. With now_ms,
 * the key's idle clock restarts at now_ms. The previous value stays when
 * the new one cannot be stored. */
static int sr__put(lua_State *L)
{
    sr_state_t *st = sr__check(L);
    sr__pack_key(L, 2);
    if (lua_isnoneornil(L, 3)) return luaL_error(L, "state value must not be nil (remove the key instead)");
    msgpack_packer pk;
    value_buf.len = 0;
    msgpack_packer_init(&pk, &value_buf, sr__buf_write);
    const char *err = sr__pack(L, 3, &pk, 0);
    if (err) {
        lua_pushnil(L);
        lua_pushfstring(L, "cannot store %s in state", err);
        return 2;
    }
    sr_state_entry_t *e;
    if (sr_state_put(st, key_buf.data, key_buf.len, value_buf.data, value_buf.len, &e) < 0) {
        lua_pushnil(L);
        lua_pushstring(L, sr_strerror(SR_ENOMEM));
        return 2;
    }
    if (!lua_isnoneornil(L, 4)) sr_state_touch(st, e, (int64_t)lua_tonumber(L, 4));
    lua_pushboolean(L, 1);
    return 1;
}

/* handle:touch(key, now_ms) -> true if the key exists */
static int sr__touch(lua_State *L)
{
    sr_state_t *st = sr__check(L);
    sr__pack_key(L, 2);
    sr_state_entry_t *e = sr_state_get(st, key_buf.data, key_buf.len);
    if (e) sr_state_touch(st, e, (int64_t)luaL_checknumber(L, 3));
    lua_pushboolean(L, e != NULL);
    return 1;
}

/* handle:remove(key) -> true if it was there */
static int sr__remove(lua_State *L)
{
    sr_state_t *st = sr__check(L);
    sr__pack_key(L, 2);
    lua_pushboolean(L, sr_state_remove(st, key_buf.data, key_buf.len));
    return 1;
}

static int sr__count(lua_State *L)
{
    lua_pushnumber(L, (lua_Number)sr__check(L)->count);
    return 1;
}

static int sr__memory(lua_State *L)
{
    lua_pushnumber(L, (lua_Number)sr_state_memory(sr__check(L)));
    return 1;
}

/* Pushes keys and values arrays of entries, and their count. */
static void sr__push_entry(lua_State *L, const sr_state_entry_t *e, int n)
{
    sr__push_msgpack(L, sr_state_entry_key(e), e->klen);
    lua_rawseti(L, -3, n);
    sr__push_msgpack(L, sr_state_entry_value(e), e->vlen);
    lua_rawseti(L, -2, n);
}

/* handle:snapshot() -> keys, values, n: every key, in table order */
static int sr__snapshot(lua_State *L)
{
    sr_state_t *st = sr__check(L);
    lua_createtable(L, (int)st->count, 0);
    lua_createtable(L, (int)st->count, 0);
    sr_state_iter_t it = {0, 0};
    int n = 0;
    for (sr_state_entry_t *e; (e = sr_state_next(st, &it));) sr__push_entry(L, e, ++n);
    lua_pushinteger(L, n);
    return 3;
}

/* handle:expire(now_ms) -> keys, values, n: the keys idle past the timeout
 * at now_ms; they stay in the state until removed. */
static int sr__expire(lua_State *L)
{
    sr_state_t *st = sr__check(L);
    sr_state_entry_t *due = sr_state_expire(st, (int64_t)luaL_checknumber(L, 2));
    lua_newtable(L);
    lua_newtable(L);
    int n = 0;
    for (; due; due = due->timer.next
                         ? (sr_state_entry_t *)((char *)due->timer.next - offsetof(sr_state_entry_t, timer))
                         : NULL)
        sr__push_entry(L, due, ++n);
    lua_pushinteger(L, n);
    return 3;
}

static int sr__free(lua_State *L)
{
    sr__handle_t *h = luaL_checkudata(L, 1, SR_STATE_MT);
    sr_state_free(h->st);
    h->st = NULL;
    return 0;
}

static int sr__tostring(lua_State *L)
{
    sr__handle_t *h = luaL_checkudata(L, 1, SR_STATE_MT);
    if (h->st) lua_pushfstring(L, "state %s (%d keys)", h->st->name, (int)h->st->count);
    else lua_pushstring(L, "state (freed)");
    return 1;
}

/* cstate.encode(value) -> msgpack string, or nil and why (for tests and
 * for checking a value before it reaches a stage). */
static int sr__encode(lua_State *L)
{
    msgpack_packer pk;
    value_buf.len = 0;
    msgpack_packer_init(&pk, &value_buf, sr__buf_write);
    const char *err = sr__pack(L, 1, &pk, 0);
    if (err) {
        lua_pushnil(L);
        lua_pushfstring(L, "cannot store %s in state", err);
        return 2;
    }
    lua_pushlstring(L, value_buf.data, value_buf.len);
    return 1;
}

/* cstate.decode(msgpack string) -> value */
static int sr__decode(lua_State *L)
{
    size_t n;
    const char *p = luaL_checklstring(L, 1, &n);
    sr__push_msgpack(L, p, n);
    return 1;
}

int luaopen_streamrun_cstate(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"get", sr__get}, {"put", sr__put}, {"touch", sr__touch}, {"remove", sr__remove},
        {"count", sr__count}, {"memory", sr__memory}, {"snapshot", sr__snapshot},
        {"expire", sr__expire}, {"free", sr__free}, {NULL, NULL},
    };
    static const luaL_Reg functions[] = {
        {"new", sr__new}, {"encode", sr__encode}, {"decode", sr__decode}, {NULL, NULL},
    };
    if (luaL_newmetatable(L, SR_STATE_MT)) {
        lua_newtable(L);
        luaL_register(L, NULL, methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, sr__free);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, sr__tostring);
        lua_setfield(L, -2, "__tostring");
    }
    lua_pop(L, 1);
    lua_newtable(L);
    luaL_register(L, NULL, functions);
    return 1;
}
