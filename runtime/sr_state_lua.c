/* sr_state_lua: Lua binding of sr_state. A state handle is a userdata owning
 * one sr_state_t; get/put/remove/touch take Lua keys (strings, numbers,
 * booleans: 1 and "1" differ) and Lua values, encoded as msgpack
 * (sr_msgpack_lua). Errors in
 * the data (a value msgpack cannot carry) come back as nil, message. */
#include "sr_state_lua.h"
#include "sr_error.h"
#include "sr_handle.h"
#include "sr_msgpack_lua.h"
#include "sr_state.h"

#include "sr_alloc.h"

#include <lauxlib.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define SR_STATE_MT "streamrun.state"

/* Per thread: each worker thread runs its own VM (SPEC section 15). */
static __thread sr_mpbuf_t key_buf, value_buf;

/* Packs the key at idx into key_buf; raises for a key that cannot be one. */
static void sr__pack_key(lua_State *L, int idx)
{
    msgpack_packer pk;
    sr_mpbuf_packer(&key_buf, &pk);
    sr_mplua_pack_key(L, idx, &pk);
}

/* -- The state handle -- */

static sr_state_t *sr__check(lua_State *L) { return sr_handle_check(L, 1, SR_STATE_MT, "state"); }

sr_state_t *sr_state_lua_get(lua_State *L, int idx) { return sr_handle_get(L, idx, SR_STATE_MT); }

void sr_state_lua_push(lua_State *L, sr_state_t *st) { sr_handle_push(L, st, SR_STATE_MT); }

/* cstate.new(name, partitions, timeout_ms, now_ms) -> handle */
static int sr__new(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    int parts = (int)luaL_optinteger(L, 2, 16);
    int64_t timeout = (int64_t)luaL_optnumber(L, 3, 0);
    int64_t now = (int64_t)luaL_optnumber(L, 4, 0);
    sr_handle_t *h = sr_handle_push(L, NULL, SR_STATE_MT);
    h->obj = sr_state_new(name, parts, timeout, now);
    if (!h->obj) return luaL_error(L, "state %s: out of memory", name);
    return 1;
}

/* handle:get(key) -> value or nil */
static int sr__get(lua_State *L)
{
    sr_state_t *st = sr__check(L);
    sr__pack_key(L, 2);
    sr_state_entry_t *e = sr_state_get(st, key_buf.data, key_buf.len);
    if (!e) return 0;
    sr_mplua_push(L, sr_state_entry_value(e), sr_state_entry_vlen(e));
    return 1;
}

/* handle:get_found(i, key) -> value or nil: key i of the batch
 * sr_state_find_batch looked up (i from 0), read from the entry found. */
static int sr__get_found(lua_State *L)
{
    sr_state_t *st = sr__check(L);
    size_t i = (size_t)luaL_checknumber(L, 2);
    int t = lua_type(L, 3);
    size_t len = 0;
    const char *s = NULL;
    double num = 0;
    int ktype = 0;
    if (t == LUA_TSTRING) { ktype = SR_KEY_STRING; s = lua_tolstring(L, 3, &len); }
    else if (t == LUA_TNUMBER) { ktype = SR_KEY_NUMBER; num = lua_tonumber(L, 3); }
    else if (t == LUA_TBOOLEAN) { ktype = SR_KEY_BOOLEAN; num = lua_toboolean(L, 3); }
    sr_state_entry_t *e = ktype ? sr_state_found(st, i, ktype, s, len, num) : NULL;
    if (!e) return 0;
    sr_mplua_push(L, sr_state_entry_value(e), sr_state_entry_vlen(e));
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
    sr_mpbuf_packer(&value_buf, &pk);
    const char *err = sr_mplua_pack(L, 3, &pk, 0);
    if (err) {
        lua_pushnil(L);
        lua_pushfstring(L, "cannot store %s in state", err);
        return 2;
    }
    sr_state_entry_t *e;
    int rc = sr_state_put(st, key_buf.data, key_buf.len, value_buf.data, value_buf.len, &e);
    if (rc < 0) {
        lua_pushnil(L);
        if (rc == SR_EINVAL) lua_pushfstring(L, "a key longer than %d bytes cannot be stored", SR_STATE_MAX_KEY);
        else lua_pushstring(L, sr_strerror(rc));
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

/* handle:arm(key, expiry_ms) -> true if the key exists: it falls due at
 * expiry_ms (timers of event time: windows and sessions close when the
 * watermark reaches them). */
static int sr__arm(lua_State *L)
{
    sr_state_t *st = sr__check(L);
    sr__pack_key(L, 2);
    sr_state_entry_t *e = sr_state_get(st, key_buf.data, key_buf.len);
    if (e) sr_state_arm(st, e, (int64_t)luaL_checknumber(L, 3));
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

/* handle:partitions() -> the partitions its keys are hashed into */
static int sr__partitions(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)sr__check(L)->nparts);
    return 1;
}

static int sr__memory(lua_State *L)
{
    lua_pushnumber(L, (lua_Number)sr_state_memory(sr__check(L)));
    return 1;
}

/* The entry after e in a list of due entries. */
static sr_state_entry_t *sr__next_due(sr_state_entry_t *e)
{
    return e->timer.next ? (sr_state_entry_t *)((char *)e->timer.next - offsetof(sr_state_entry_t, timer)) : NULL;
}

/* Pushes keys and values arrays of entries, and their count. */
static void sr__push_entry(lua_State *L, const sr_state_entry_t *e, int n)
{
    sr_mplua_push(L, sr_state_entry_key(e), e->klen);
    lua_rawseti(L, -3, n);
    sr_mplua_push(L, sr_state_entry_value(e), sr_state_entry_vlen(e));
    lua_rawseti(L, -2, n);
}

/* Orders entries by their key bytes: the same order in every run and after
 * every restore, whatever the table's history. */
static int sr__cmp_entries(const void *a, const void *b)
{
    const sr_state_entry_t *x = *(sr_state_entry_t *const *)a, *y = *(sr_state_entry_t *const *)b;
    size_t n = x->klen < y->klen ? x->klen : y->klen;
    int c = memcmp(sr_state_entry_key(x), sr_state_entry_key(y), n);
    return c ? c : (x->klen > y->klen) - (x->klen < y->klen);
}

static __thread sr_state_entry_t **sorted_buf;
static __thread size_t sorted_cap;

void sr_state_lua_thread_free(void)
{
    sr_free(key_buf.data);
    sr_free(value_buf.data);
    sr_free(sorted_buf);
    memset(&key_buf, 0, sizeof(key_buf));
    memset(&value_buf, 0, sizeof(value_buf));
    sorted_buf = NULL;
    sorted_cap = 0;
}

/* Pushes keys and values arrays of the n entries of list, sorted by key. */
static int sr__push_sorted(lua_State *L, sr_state_entry_t **list, size_t n)
{
    if (n > 1) qsort(list, n, sizeof(*list), sr__cmp_entries); /* (list is NULL when n is 0) */
    lua_createtable(L, (int)n, 0);
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) sr__push_entry(L, list[i], (int)i + 1);
    lua_pushinteger(L, (lua_Integer)n);
    return 3;
}

static sr_state_entry_t **sr__sorted(lua_State *L, size_t n)
{
    if (n > sorted_cap) {
        sr_state_entry_t **b = sr_realloc(sorted_buf, n * sizeof(*b));
        if (!b) luaL_error(L, "state: out of memory");
        sorted_buf = b;
        sorted_cap = n;
    }
    return sorted_buf;
}

/* handle:snapshot() -> keys, values, n: every key, ordered by key bytes */
static int sr__snapshot(lua_State *L)
{
    sr_state_t *st = sr__check(L);
    sr_state_entry_t **list = sr__sorted(L, st->count);
    sr_state_iter_t it = {0, 0};
    size_t n = 0;
    for (sr_state_entry_t *e; (e = sr_state_next(st, &it));) list[n++] = e;
    return sr__push_sorted(L, list, n);
}

/* cstate.snapshot_of({handles}) -> keys, values, n: every key of the states,
 * ordered by key bytes: the shards of one state (no key in two) give the
 * snapshot of their gathering, without copying a table of every entry. */
static int sr__snapshot_of(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    int ns = (int)lua_objlen(L, 1);
    size_t count = 0;
    for (int k = 1; k <= ns; k++) {
        lua_rawgeti(L, 1, k);
        sr_state_t *st = sr_state_lua_get(L, -1);
        lua_pop(L, 1);
        if (!st) return luaL_error(L, "snapshot_of: element %d is not a state handle", k);
        count += st->count;
    }
    sr_state_entry_t **list = sr__sorted(L, count);
    size_t n = 0;
    for (int k = 1; k <= ns; k++) {
        lua_rawgeti(L, 1, k);
        sr_state_t *st = sr_state_lua_get(L, -1);
        lua_pop(L, 1);
        sr_state_iter_t it = {0, 0};
        for (sr_state_entry_t *e; n < count && (e = sr_state_next(st, &it));) list[n++] = e;
    }
    return sr__push_sorted(L, list, n);
}

/* handle:expire(now_ms) -> keys, values, n: the keys idle past the timeout
 * at now_ms, ordered by key bytes; they stay in the state until removed. */
static int sr__expire(lua_State *L)
{
    sr_state_t *st = sr__check(L);
    sr_state_entry_t *due = sr_state_expire(st, (int64_t)luaL_checknumber(L, 2));
    size_t n = 0;
    for (sr_state_entry_t *e = due; e; e = sr__next_due(e)) n++;
    sr_state_entry_t **list = sr__sorted(L, n);
    n = 0;
    for (sr_state_entry_t *e = due; e; e = sr__next_due(e)) list[n++] = e;
    return sr__push_sorted(L, list, n);
}

/* handle:expire_sorted(now_ms) -> n: as expire, but the keys that fell due
 * stay in the state's due list for due() and remove_due() to take in
 * chunks (no arrays of every due key and value at once). */
static int sr__expire_sorted(lua_State *L)
{
    sr_state_t *st = sr__check(L);
    size_t n;
    int rc = sr_state_expire_sorted(st, (int64_t)luaL_checknumber(L, 2), &n);
    if (rc < 0) return luaL_error(L, "state: %s", sr_strerror(rc));
    lua_pushinteger(L, (lua_Integer)n);
    return 1;
}

/* handle:due(from, n, keys, values) -> count: the due list's keys and
 * values from the from-th (1-based), at most n, written to keys[1..count]
 * and values[1..count] (tables the caller reuses). */
static int sr__due(lua_State *L)
{
    sr_state_t *st = sr__check(L);
    lua_Integer from = luaL_checkinteger(L, 2), n = luaL_checkinteger(L, 3);
    luaL_checktype(L, 4, LUA_TTABLE);
    luaL_checktype(L, 5, LUA_TTABLE);
    lua_settop(L, 5);
    lua_pushvalue(L, 4);
    lua_pushvalue(L, 5);
    int c = 0;
    for (sr_state_entry_t *e; c < n && from >= 1 && (e = sr_state_due(st, (size_t)(from - 1 + c)));) {
        sr_state_entry_t *ahead = sr_state_due(st, (size_t)(from - 1 + c + 8));
        if (ahead) __builtin_prefetch(ahead->data);
        sr__push_entry(L, e, ++c);
    }
    lua_pushinteger(L, c);
    return 1;
}

/* handle:remove_due(from, n): removes the due list's keys from the
 * from-th (1-based), at most n. */
static int sr__remove_due(lua_State *L)
{
    sr_state_t *st = sr__check(L);
    lua_Integer from = luaL_checkinteger(L, 2), n = luaL_checkinteger(L, 3);
    if (from >= 1 && n > 0) sr_state_remove_due(st, (size_t)(from - 1), (size_t)n);
    return 0;
}

static int sr__free(lua_State *L)
{
    sr_state_free(sr_handle_take(L, 1, SR_STATE_MT));
    return 0;
}

/* handle:detach() -> light userdata: the state, no longer owned by this
 * handle (a reload hands it to the next VM). */
static int sr__detach(lua_State *L)
{
    lua_pushlightuserdata(L, sr_handle_take(L, 1, SR_STATE_MT));
    return 1;
}

/* cstate.adopt(light userdata) -> a handle owning that state. */
static int sr__adopt(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TLIGHTUSERDATA);
    sr_state_lua_push(L, lua_touserdata(L, 1));
    return 1;
}

/* handle:pointer() -> light userdata: the state, for the FFI fast path of
 * numbers (still owned by the handle). */
static int sr__pointer(lua_State *L)
{
    lua_pushlightuserdata(L, sr__check(L));
    return 1;
}

/* handle:set_timeout(ms): keys touched from now on time out after ms. */
static int sr__set_timeout(lua_State *L)
{
    sr_state_t *st = sr__check(L);
    st->timeout_ms = (int64_t)luaL_checknumber(L, 2);
    return 0;
}

static int sr__tostring(lua_State *L)
{
    sr_state_t *st = sr_handle_get(L, 1, SR_STATE_MT);
    if (st) lua_pushfstring(L, "state %s (%d keys)", st->name, (int)st->count);
    else lua_pushstring(L, "state (freed)");
    return 1;
}

/* cstate.encode(value) -> msgpack string, or nil and why (for tests and
 * for checking a value before it reaches a stage). */
static int sr__encode(lua_State *L)
{
    msgpack_packer pk;
    sr_mpbuf_packer(&value_buf, &pk);
    const char *err = sr_mplua_pack(L, 1, &pk, 0);
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
    sr_mplua_push(L, p, n);
    return 1;
}

int luaopen_streamrun_cstate(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"get", sr__get}, {"put", sr__put}, {"touch", sr__touch}, {"remove", sr__remove},
        {"count", sr__count}, {"partitions", sr__partitions}, {"memory", sr__memory}, {"snapshot", sr__snapshot},
        {"expire", sr__expire}, {"expire_sorted", sr__expire_sorted}, {"due", sr__due},
        {"remove_due", sr__remove_due}, {"free", sr__free}, {"detach", sr__detach},
        {"set_timeout", sr__set_timeout}, {"pointer", sr__pointer}, {"get_found", sr__get_found},
        {"arm", sr__arm},
        {NULL, NULL},
    };
    static const luaL_Reg functions[] = {
        {"new", sr__new}, {"encode", sr__encode}, {"decode", sr__decode}, {"adopt", sr__adopt},
        {"snapshot_of", sr__snapshot_of}, {NULL, NULL},
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
