/* sr_window_lua: Lua binding of sr_window. A slice is pushed as columns of
 * elements (a[i] alone, or the pair a[i], b[i]), each packed as a msgpack
 * array of one or two values, and read back as columns. */
#include "sr_window_lua.h"
#include "sr_alloc.h"
#include "sr_error.h"
#include "sr_handle.h"
#include "sr_msgpack_lua.h"
#include "sr_window.h"
#include "sr_window_split.h"

#include <lauxlib.h>
#include <string.h>

#define SR_WINDOW_MT "streamrun.window"

static __thread sr_mpbuf_t slice_buf; /* per thread: each worker runs its own VM */

void sr_window_lua_thread_free(void)
{
    sr_free(slice_buf.data);
    memset(&slice_buf, 0, sizeof(slice_buf));
}

static sr_window_t *sr__check(lua_State *L) { return sr_handle_check(L, 1, SR_WINDOW_MT, "window"); }

sr_window_t *sr_window_lua_get(lua_State *L, int idx) { return sr_handle_get(L, idx, SR_WINDOW_MT); }

void sr_window_lua_push(lua_State *L, sr_window_t *w) { sr_handle_push(L, w, SR_WINDOW_MT); }

/* cwindow.new(name) -> handle */
static int sr__new(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    sr_handle_t *h = sr_handle_push(L, NULL, SR_WINDOW_MT);
    h->obj = sr_window_new(name);
    if (!h->obj) return luaL_error(L, "window %s: out of memory", name);
    return 1;
}

/* handle:push(time_ms, a, b, n) -> nil, or when some elements cannot be
 * stored (a function, ...): an array of their indices and why; the others
 * are stored. */
static int sr__push(lua_State *L)
{
    sr_window_t *w = sr__check(L);
    int64_t time = (int64_t)luaL_checknumber(L, 2);
    luaL_checktype(L, 3, LUA_TTABLE);
    luaL_checktype(L, 4, LUA_TTABLE);
    int n = (int)luaL_checkinteger(L, 5);
    msgpack_packer pk;
    sr_mpbuf_packer(&slice_buf, &pk);
    int nbad = 0, bad_table = 0;
    const char *why = NULL;
    for (int i = 1; i <= n; i++) {
        size_t mark = slice_buf.len;
        lua_rawgeti(L, 3, i);
        lua_rawgeti(L, 4, i);
        int pair = !lua_isnil(L, -1);
        msgpack_pack_array(&pk, pair ? 2 : 1);
        /* Elements nest as deep as state values: the array around them is
         * the one level decoders allow beyond SR_MP_MAX_DEPTH. */
        const char *err = sr_mplua_pack(L, -2, &pk, 0);
        if (!err && pair) err = sr_mplua_pack(L, -1, &pk, 0);
        lua_pop(L, 2);
        if (err) {
            slice_buf.len = mark; /* the element is left out */
            why = err;
            if (!bad_table) {
                lua_newtable(L);
                bad_table = lua_gettop(L);
            }
            lua_pushinteger(L, i);
            lua_rawseti(L, bad_table, ++nbad);
        }
    }
    int rc = sr_window_push(w, time, slice_buf.data, slice_buf.len, (uint32_t)(n - nbad));
    if (rc < 0) return luaL_error(L, "window %s: %s", w->name, sr_strerror(rc));
    if (!nbad) return 0;
    lua_pushfstring(L, "cannot keep %s in a window", why);
    return 2;
}

typedef struct sr__reader {
    lua_State *L;
    int a, b; /* stack indices of the output columns */
    int n;
} sr__reader_t;

static void sr__read_one(void *ud, const msgpack_object *o)
{
    sr__reader_t *r = ud;
    if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size < 1) return;
    r->n++;
    sr_mplua_push_object(r->L, &o->via.array.ptr[0]);
    lua_rawseti(r->L, r->a, r->n);
    if (o->via.array.size > 1) {
        sr_mplua_push_object(r->L, &o->via.array.ptr[1]);
        lua_rawseti(r->L, r->b, r->n);
    }
}

/* handle:read(from_ms, to_ms) -> a, b, n: the elements of the slices with
 * from_ms < time <= to_ms, oldest first, as columns. */
static int sr__read(lua_State *L)
{
    sr_window_t *w = sr__check(L);
    int64_t from = (int64_t)luaL_checknumber(L, 2), to = (int64_t)luaL_checknumber(L, 3);
    size_t total = 0;
    for (size_t i = 0; i < w->n; i++) {
        const sr_slice_t *s = sr_window_slice(w, i);
        if (s->time_ms > from && s->time_ms <= to) total += s->count;
    }
    lua_createtable(L, (int)total, 0);
    lua_createtable(L, (int)total, 0);
    sr__reader_t r = {L, lua_gettop(L) - 1, lua_gettop(L), 0};
    for (size_t i = 0; i < w->n; i++) {
        const sr_slice_t *s = sr_window_slice(w, i);
        if (s->time_ms <= from || s->time_ms > to) continue;
        if (sr_mplua_each(s->data, s->len, sr__read_one, &r) < 0)
            return luaL_error(L, "window %s: slice at %d ms is corrupt", w->name, (int)s->time_ms);
    }
    lua_pushinteger(L, r.n);
    return 3;
}

/* handle:drop_until(time_ms): forgets the slices with time <= time_ms. */
static int sr__drop_until(lua_State *L)
{
    sr_window_drop_until(sr__check(L), (int64_t)luaL_checknumber(L, 2));
    return 0;
}

/* handle:times() -> the slices' times, oldest first. */
static int sr__times(lua_State *L)
{
    sr_window_t *w = sr__check(L);
    lua_createtable(L, (int)w->n, 0);
    for (size_t i = 0; i < w->n; i++) {
        lua_pushnumber(L, (lua_Number)sr_window_slice(w, i)->time_ms);
        lua_rawseti(L, -2, (int)i + 1);
    }
    return 1;
}

static int sr__memory(lua_State *L)
{
    lua_pushnumber(L, (lua_Number)sr_window_memory(sr__check(L)));
    return 1;
}

static int sr__free(lua_State *L)
{
    sr_window_free(sr_handle_take(L, 1, SR_WINDOW_MT));
    return 0;
}

/* handle:detach() -> light userdata: the window, no longer owned here. */
static int sr__detach(lua_State *L)
{
    lua_pushlightuserdata(L, sr_handle_take(L, 1, SR_WINDOW_MT));
    return 1;
}

/* handle:pointer() -> light userdata: the window, still owned by the
 * handle (a worker's VM adopts it by its address). */
static int sr__pointer(lua_State *L)
{
    lua_pushlightuserdata(L, sr__check(L));
    return 1;
}

/* cwindow.adopt(light userdata, or its address as a number: how a
 * worker's VM is told of its window) -> a handle owning that window. */
static int sr__adopt(lua_State *L)
{
    sr_window_t *w;
    if (lua_type(L, 1) == LUA_TNUMBER) {
        w = (sr_window_t *)(uintptr_t)lua_tonumber(L, 1);
    } else {
        luaL_checktype(L, 1, LUA_TLIGHTUSERDATA);
        w = lua_touserdata(L, 1);
    }
    luaL_argcheck(L, w != NULL, 1, "a window");
    sr_window_lua_push(L, w);
    return 1;
}

/* cwindow.merge(slices, orders) -> a new window handle: the one window a
 * keyed window split among workers makes (sr_window_split), from arrays
 * of the workers' slices and orders handles (one each per worker). */
static int sr__merge(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_checktype(L, 2, LUA_TTABLE);
    int n = (int)lua_objlen(L, 1);
    luaL_argcheck(L, n >= 1 && n <= 256 && (int)lua_objlen(L, 2) == n, 2, "1 to 256 slices and as many orders");
    sr_window_t *slices[256], *orders[256];
    for (int k = 0; k < n; k++) {
        lua_rawgeti(L, 1, k + 1);
        lua_rawgeti(L, 2, k + 1);
        slices[k] = sr_window_lua_get(L, -2);
        orders[k] = sr_window_lua_get(L, -1);
        lua_pop(L, 2);
        if (!slices[k] || !orders[k]) return luaL_error(L, "merge: part %d is not a window handle", k + 1);
    }
    sr_window_split_t split = { slices, orders, n };
    sr_window_t *w;
    int rc = sr_window_split_merge(&split, &w);
    if (rc < 0) return luaL_error(L, "window %s: %s", slices[0]->name,
                                  rc == SR_EINVAL ? "its workers' parts are malformed" : sr_strerror(rc));
    sr_window_lua_push(L, w);
    return 1;
}

int luaopen_streamrun_cwindow(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"push", sr__push}, {"read", sr__read}, {"drop_until", sr__drop_until},
        {"times", sr__times}, {"memory", sr__memory}, {"free", sr__free}, {"detach", sr__detach},
        {"pointer", sr__pointer}, {NULL, NULL},
    };
    if (luaL_newmetatable(L, SR_WINDOW_MT)) {
        lua_newtable(L);
        luaL_register(L, NULL, methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, sr__free);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushcfunction(L, sr__new);
    lua_setfield(L, -2, "new");
    lua_pushcfunction(L, sr__adopt);
    lua_setfield(L, -2, "adopt");
    lua_pushcfunction(L, sr__merge);
    lua_setfield(L, -2, "merge");
    return 1;
}
