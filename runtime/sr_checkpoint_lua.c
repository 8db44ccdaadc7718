/* sr_checkpoint_lua: Lua binding of sr_checkpoint and sr_checkpoint_writer:
 * Lua values to the content they write, and what sr_checkpoint_load reads
 * to handles and tables. */
#include "sr_checkpoint_lua.h"
#include "sr_alloc.h"
#include "sr_checkpoint.h"
#include "sr_checkpoint_writer.h"
#include "sr_msgpack_lua.h"
#include "sr_state_lua.h"
#include "sr_window_lua.h"

#include <lauxlib.h>
#include <string.h>

static sr_mpbuf_t meta_buf;

typedef struct sr__refs {
    sr_ckpt_content_t c;
    sr_state_t *states[256];
    sr_window_t *windows[256];
    sr_state_t *results[256];
    /* a state split among workers: its shards, from a pool */
    sr_state_t *const *shards[256];
    int nshards[256];
    sr_state_t *shard_pool[4096];
    /* a window split among workers: its parts, from pools */
    const sr_window_split_t *splits[256];
    sr_window_split_t split_of[256];
    sr_state_t *const *result_shards[256];
    sr_window_t *slices_pool[4096], *orders_pool[4096];
    sr_state_t *result_pool[4096];
} sr__refs_t;

/* The handles of the array at idx (a window's parts: one per worker) into
 * pool[0..k): k, or raises. state: state handles, else window handles. */
static int sr__parts(lua_State *L, int idx, void **pool, size_t room, int state, int i, const char *what)
{
    int k = (int)lua_objlen(L, idx);
    if (k < 1 || (size_t)k > room) luaL_error(L, "checkpoint: windows[%d].%s has %d parts", i, what, k);
    for (int j = 0; j < k; j++) {
        lua_rawgeti(L, idx, j + 1);
        pool[j] = state ? (void *)sr_state_lua_get(L, -1) : (void *)sr_window_lua_get(L, -1);
        if (!pool[j]) luaL_error(L, "checkpoint: windows[%d].%s[%d] is not a %s handle", i, what, j + 1,
                                 state ? "state" : "window");
        lua_pop(L, 1);
    }
    return k;
}

/* Reads windows[i] (the table at the top): {slices = handle, result =
 * handle|nil}, or a window split among workers: {slices = {handles},
 * orders = {handles}, result = {handles}|nil}, one each per worker. */
static void sr__window(lua_State *L, sr__refs_t *refs, size_t i, size_t *pooled)
{
    int top = lua_gettop(L);
    refs->splits[i] = NULL;
    refs->result_shards[i] = NULL;
    lua_getfield(L, top, "slices");
    lua_getfield(L, top, "orders");
    lua_getfield(L, top, "result");
    if (!lua_istable(L, top + 1)) {
        refs->windows[i] = sr_window_lua_get(L, top + 1);
        if (!refs->windows[i]) luaL_error(L, "checkpoint: windows[%d].slices is not a window handle", (int)i + 1);
        refs->results[i] = lua_isnil(L, top + 3) ? NULL : sr_state_lua_get(L, top + 3);
        lua_settop(L, top);
        return;
    }
    size_t room = sizeof(refs->slices_pool) / sizeof(refs->slices_pool[0]) - *pooled;
    sr_window_split_t *sp = &refs->split_of[i];
    if (!lua_istable(L, top + 2)) luaL_error(L, "checkpoint: windows[%d] has slices but no orders", (int)i + 1);
    int n = sr__parts(L, top + 1, (void **)&refs->slices_pool[*pooled], room, 0, (int)i + 1, "slices");
    if (sr__parts(L, top + 2, (void **)&refs->orders_pool[*pooled], room, 0, (int)i + 1, "orders") != n)
        luaL_error(L, "checkpoint: windows[%d]: as many orders as slices", (int)i + 1);
    sp->slices = &refs->slices_pool[*pooled];
    sp->orders = &refs->orders_pool[*pooled];
    sp->n = n;
    refs->windows[i] = sp->slices[0];
    refs->results[i] = NULL;
    if (!lua_isnil(L, top + 3)) {
        luaL_checktype(L, top + 3, LUA_TTABLE);
        if (sr__parts(L, top + 3, (void **)&refs->result_pool[*pooled], room, 1, (int)i + 1, "result") != n)
            luaL_error(L, "checkpoint: windows[%d]: as many results as slices", (int)i + 1);
        refs->result_shards[i] = &refs->result_pool[*pooled];
        refs->results[i] = refs->result_pool[*pooled];
    }
    refs->splits[i] = sp;
    *pooled += (size_t)n;
    lua_settop(L, top);
}

/* Reads the content arguments: meta (2), states array (3: each a handle,
 * or an array of the handles of a state's shards, one per worker), windows
 * array (4: each as sr__window reads it). */
static void sr__content(lua_State *L, int base, sr__refs_t *refs)
{
    memset(&refs->c, 0, sizeof(refs->c));
    msgpack_packer pk;
    sr_mpbuf_packer(&meta_buf, &pk);
    const char *err = sr_mplua_pack(L, base, &pk, 0);
    if (err) luaL_error(L, "checkpoint metadata: cannot store %s", err);
    refs->c.meta = meta_buf.data;
    refs->c.meta_len = meta_buf.len;
    luaL_checktype(L, base + 1, LUA_TTABLE);
    luaL_checktype(L, base + 2, LUA_TTABLE);
    size_t ns = lua_objlen(L, base + 1), nw = lua_objlen(L, base + 2);
    if (ns > 256 || nw > 256) luaL_error(L, "checkpoint: more than 256 stateful stages or windows");
    size_t pooled = 0;
    int any_shards = 0;
    for (size_t i = 0; i < ns; i++) {
        lua_rawgeti(L, base + 1, (int)i + 1);
        refs->shards[i] = NULL;
        refs->nshards[i] = 0;
        if (lua_istable(L, -1)) {
            size_t k = lua_objlen(L, -1);
            if (k < 1 || pooled + k > sizeof(refs->shard_pool) / sizeof(refs->shard_pool[0]))
                luaL_error(L, "checkpoint: states[%d] has %d shards", (int)i + 1, (int)k);
            for (size_t j = 0; j < k; j++) {
                lua_rawgeti(L, -1, (int)j + 1);
                refs->shard_pool[pooled + j] = sr_state_lua_get(L, -1);
                if (!refs->shard_pool[pooled + j]) luaL_error(L, "checkpoint: states[%d][%d] is not a state handle", (int)i + 1, (int)j + 1);
                lua_pop(L, 1);
            }
            refs->shards[i] = &refs->shard_pool[pooled];
            refs->nshards[i] = (int)k;
            refs->states[i] = refs->shard_pool[pooled];
            pooled += k;
            any_shards = 1;
            lua_pop(L, 1);
            continue;
        }
        refs->states[i] = sr_state_lua_get(L, -1);
        if (!refs->states[i]) luaL_error(L, "checkpoint: states[%d] is not a state handle", (int)i + 1);
        lua_pop(L, 1);
    }
    size_t wpooled = 0;
    int any_split = 0;
    for (size_t i = 0; i < nw; i++) {
        lua_rawgeti(L, base + 2, (int)i + 1);
        luaL_checktype(L, -1, LUA_TTABLE);
        sr__window(L, refs, i, &wpooled);
        if (refs->splits[i]) any_split = 1;
        lua_pop(L, 1);
    }
    refs->c.states = refs->states;
    refs->c.nstates = ns;
    refs->c.shards = any_shards ? refs->shards : NULL;
    refs->c.nshards = refs->nshards;
    refs->c.windows = refs->windows;
    refs->c.results = refs->results;
    refs->c.nwindows = nw;
    refs->c.splits = any_split ? refs->splits : NULL;
    refs->c.result_shards = any_split ? refs->result_shards : NULL;
}

static int sr__fault(lua_State *L, const char *err)
{
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
}

/* ckpt.write(dir, name, meta, states, windows [, keep]) -> true, or nil and
 * why. Written here, in this process (the test driver, inspect). */
static int sr__write(lua_State *L)
{
    const char *dir = luaL_checkstring(L, 1), *name = luaL_checkstring(L, 2);
    int keep = (int)luaL_optinteger(L, 6, 0);
    sr__refs_t *refs = lua_newuserdata(L, sizeof(*refs));
    sr__content(L, 3, refs);
    char err[1024];
    if (sr_checkpoint_save(dir, name, &refs->c, keep, err, sizeof(err)) < 0) return sr__fault(L, err);
    lua_pushboolean(L, 1);
    return 1;
}

/* ckpt.start(dir, name, meta, states, windows, keep) -> pid, fd: a forked
 * child writes the checkpoint; poll(pid, fd) says when it is done. Or nil
 * and why. */
static int sr__start(lua_State *L)
{
    const char *dir = luaL_checkstring(L, 1), *name = luaL_checkstring(L, 2);
    int keep = (int)luaL_optinteger(L, 6, 0);
    sr__refs_t *refs = lua_newuserdata(L, sizeof(*refs));
    sr__content(L, 3, refs);
    sr_ckpt_writer_t w;
    char err[1024];
    if (sr_checkpoint_writer_start(&w, dir, name, &refs->c, keep, err, sizeof(err)) < 0) return sr__fault(L, err);
    lua_pushinteger(L, w.pid);
    lua_pushinteger(L, w.fd);
    return 2;
}

/* poll(pid, fd) and wait(pid, fd): nil while running (poll), else true, or
 * false and the child's reason. */
static int sr__finish(lua_State *L, int wait)
{
    sr_ckpt_writer_t w = {(pid_t)luaL_checkinteger(L, 1), (int)luaL_checkinteger(L, 2)};
    char err[1200];
    int rc = wait ? sr_checkpoint_writer_wait(&w, err, sizeof(err)) : sr_checkpoint_writer_poll(&w, err, sizeof(err));
    if (rc == 1) return 0;
    lua_pushboolean(L, rc == 0);
    if (rc == 0) return 1;
    lua_pushstring(L, err);
    return 2;
}

static int sr__poll(lua_State *L) { return sr__finish(L, 0); }
static int sr__wait(lua_State *L) { return sr__finish(L, 1); }

/* -- Loading -- */

/* ckpt.load(path) -> meta, states {name = handle}, windows {name =
 * {slices = handle, result = handle|nil}}; or nil and why. The handles
 * take the states and windows over from the load. */
static int sr__load(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    sr_ckpt_loaded_t c;
    char err[1024];
    if (sr_checkpoint_load(path, &c, err, sizeof(err)) < 0) return sr__fault(L, err);
    sr_mplua_push(L, c.meta, c.meta_len);
    lua_newtable(L);
    for (size_t i = 0; i < c.nstates; i++) {
        sr_state_lua_push(L, c.states[i]);
        lua_setfield(L, -2, c.states[i]->name);
        c.states[i] = NULL;
    }
    lua_newtable(L);
    for (size_t i = 0; i < c.nwindows; i++) {
        lua_newtable(L);
        sr_window_lua_push(L, c.windows[i]);
        lua_setfield(L, -2, "slices");
        if (c.results[i]) {
            sr_state_lua_push(L, c.results[i]);
            lua_setfield(L, -2, "result");
        }
        lua_setfield(L, -2, c.windows[i]->name);
        c.windows[i] = NULL;
        c.results[i] = NULL;
    }
    sr_checkpoint_unload(&c);
    return 3;
}

/* ckpt.verify(path) -> true, or nil and why (checksum and structure). */
static int sr__verify(lua_State *L)
{
    sr_ckpt_loaded_t c;
    char err[1024];
    if (sr_checkpoint_load(luaL_checkstring(L, 1), &c, err, sizeof(err)) < 0) return sr__fault(L, err);
    sr_checkpoint_unload(&c);
    lua_pushboolean(L, 1);
    return 1;
}

/* ckpt.list(dir) -> the checkpoint file names of dir, oldest first. */
static int sr__list(lua_State *L)
{
    char **names;
    int n = sr_checkpoint_list(luaL_checkstring(L, 1), &names, 4096);
    if (n < 0) return luaL_error(L, "ckpt.list: out of memory");
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        lua_pushstring(L, names[i]);
        lua_rawseti(L, -2, i + 1);
        sr_free(names[i]);
    }
    sr_free(names);
    return 1;
}

static int sr__prune(lua_State *L)
{
    lua_pushinteger(L, sr_checkpoint_prune(luaL_checkstring(L, 1), (int)luaL_checkinteger(L, 2)));
    return 1;
}

int luaopen_streamrun_ckpt(lua_State *L)
{
    static const luaL_Reg functions[] = {
        {"write", sr__write}, {"start", sr__start}, {"poll", sr__poll}, {"wait", sr__wait},
        {"load", sr__load}, {"verify", sr__verify}, {"list", sr__list}, {"prune", sr__prune},
        {NULL, NULL},
    };
    lua_newtable(L);
    luaL_register(L, NULL, functions);
    lua_pushinteger(L, SR_CKPT_VERSION);
    lua_setfield(L, -2, "version");
    lua_pushstring(L, SR_CKPT_SUFFIX);
    lua_setfield(L, -2, "suffix");
    return 1;
}
