/* sr_worker_vm: the Lua VMs of workers 1 .. N - 1 (worker 0 is the loop
 * thread's VM). Each is a VM of its own (sr_lua_new) that loads
 * streamrun.worker and calls its init(k, n, init) with the same job
 * description, so it compiles the same stages; per phase of a batch, the
 * pool (sr_workers) wakes every thread once and thread k calls its VM's
 * phase(p). Only thread k ever runs VM k while a phase runs, and only the
 * loop thread between phases (close). Each VM is watched by stage_timeout
 * on the thread that runs its phase (sr_watchdog_attach). Every call has a traceback
 * handler; a failure is kept per worker and returned by wait. */
#include "sr_worker_vm.h"
#include "sr_alloc.h"
#include "sr_lua.h"
#include "sr_watchdog.h"
#include "sr_workers.h"

#include <lauxlib.h>
#include <stdint.h>
#include <string.h>

#define SR_WVM_MT "streamrun.workervms"

typedef struct sr_wvm {
    int n;
    lua_State **L; /* [1 .. n - 1], owned */
    int *mod;      /* registry reference of each VM's streamrun.worker */
    char **err;    /* the last phase's failure of each worker (owned), or NULL */
    int phase;
    char *arg;          /* the phase's argument (owned) */
    size_t arg_len;
    sr_workers_t *pool; /* borrowed, during a phase */
} sr_wvm_t;

/* Calls worker.<fn>(args...) in VM k with nargs pushed above; leaves nres
 * results. Returns 0, or non-zero with the message (traceback included)
 * on top. */
static int sr__call(sr_wvm_t *w, int k, const char *fn, int nargs, int nres)
{
    lua_State *L = w->L[k];
    int base = lua_gettop(L) - nargs;
    lua_pushcfunction(L, sr_lua_traceback);
    lua_rawgeti(L, LUA_REGISTRYINDEX, w->mod[k]);
    lua_getfield(L, -1, fn);
    lua_remove(L, -2);
    lua_insert(L, base + 1);
    lua_insert(L, base + 1);
    int rc = lua_pcall(L, nargs, nres, base + 1);
    lua_remove(L, base + 1);
    return rc;
}

static void sr__close(sr_wvm_t *w)
{
    if (!w) return;
    for (int k = 1; w->L && k < w->n; k++) {
        if (!w->L[k]) continue;
        /* Hands back what the VM borrowed (state shards) before it goes. */
        if (w->mod[k] != LUA_NOREF && sr__call(w, k, "shutdown", 0, 0) != 0) lua_pop(w->L[k], 1);
        sr_lua_free(w->L[k]);
        w->L[k] = NULL;
    }
    for (int k = 0; w->err && k < w->n; k++) sr_free(w->err[k]);
    sr_free(w->err);
    sr_free(w->arg);
    sr_free(w->mod);
    sr_free(w->L);
    sr_free(w);
}

static sr_wvm_t **sr__slot(lua_State *L)
{
    sr_wvm_t **u = luaL_checkudata(L, 1, SR_WVM_MT);
    if (!*u) luaL_error(L, "worker VMs: closed");
    return u;
}

/* cworkervm.new(n, init [, lua_dir]) -> handle, or nil and why: VMs for
 * workers 1 .. n - 1 (the streamrun library from lua_dir, else
 * sr_lua_dir's), each having run
 * streamrun.worker.init(k, n, init). */
static int sr__new(lua_State *L)
{
    int n = (int)luaL_checkinteger(L, 1);
    size_t ilen;
    const char *init = luaL_checklstring(L, 2, &ilen);
    char dirbuf[4096];
    const char *dir = lua_isstring(L, 3) ? lua_tostring(L, 3) : sr_lua_dir(dirbuf, sizeof(dirbuf));
    luaL_argcheck(L, n >= 2 && n <= 256, 1, "2 to 256 workers");
    sr_wvm_t **u = lua_newuserdata(L, sizeof(*u));
    *u = NULL;
    luaL_getmetatable(L, SR_WVM_MT);
    lua_setmetatable(L, -2);
    sr_wvm_t *w = sr_calloc(1, sizeof(*w));
    if (!w) goto oom;
    w->n = n;
    w->L = sr_calloc((size_t)n, sizeof(*w->L));
    w->mod = sr_calloc((size_t)n, sizeof(*w->mod));
    w->err = sr_calloc((size_t)n, sizeof(*w->err));
    if (!w->L || !w->mod || !w->err) goto oom;
    for (int k = 0; k < n; k++) w->mod[k] = LUA_NOREF;
    *u = w; /* the handle frees what is made so far if a VM fails */
    for (int k = 1; k < n; k++) {
        lua_State *V = sr_lua_new(dir);
        if (!V) goto oom;
        w->L[k] = V;
        /* Watched by stage_timeout on its own (streamrun.worker takes its
         * progress record); sr_lua_free lets it go. */
        if (!sr_watchdog_attach(V)) {
            lua_pushfstring(L, "worker %d: the watchdog watches at most %d VMs", k, SR_WATCHDOG_MAX_VMS);
            goto failed;
        }
        lua_pushcfunction(V, sr_lua_traceback);
        lua_getglobal(V, "require");
        lua_pushstring(V, "streamrun.worker");
        if (lua_pcall(V, 1, 1, -3) != 0) {
            lua_pushfstring(L, "worker %d: %s", k, lua_tostring(V, -1));
            goto failed;
        }
        w->mod[k] = luaL_ref(V, LUA_REGISTRYINDEX);
        lua_pop(V, 1);
        lua_pushinteger(V, k);
        lua_pushinteger(V, n);
        lua_pushlstring(V, init, ilen);
        if (sr__call(w, k, "init", 3, 0) != 0) {
            lua_pushfstring(L, "worker %d: %s", k, lua_tostring(V, -1));
            goto failed;
        }
    }
    return 1;
failed:
    sr__close(w);
    *u = NULL;
    lua_pushnil(L);
    lua_insert(L, -2);
    return 2;
oom:
    if (!*u) sr__close(w);
    else { sr__close(*u); *u = NULL; }
    return luaL_error(L, "worker VMs: out of memory");
}

static void sr__phase(void *arg, int k, int n)
{
    (void)n;
    sr_wvm_t *w = arg;
    lua_State *L = w->L[k];
    sr_watchdog_enter_thread(L);
    lua_pushinteger(L, w->phase);
    lua_pushlstring(L, w->arg ? w->arg : "", w->arg_len);
    if (sr__call(w, k, "phase", 2, 0) != 0) {
        const char *msg = lua_tostring(L, -1);
        w->err[k] = sr_strdup(msg ? msg : "(error object is not a string)");
        lua_pop(L, 1);
    }
}

/* handle:run(pool_address, phase, arg): workers 1 .. n - 1 start
 * phase(phase, arg) in their VMs; returns at once (the caller runs worker
 * 0's, then wait). */
static int sr__run(lua_State *L)
{
    sr_wvm_t *w = *sr__slot(L);
    sr_workers_t *pool = (sr_workers_t *)(uintptr_t)luaL_checknumber(L, 2);
    if (!pool || sr_workers_count(pool) != w->n) return luaL_error(L, "worker VMs: the pool has %d workers, not %d",
                                                                    pool ? sr_workers_count(pool) : 0, w->n);
    w->phase = (int)luaL_checkinteger(L, 3);
    size_t alen;
    const char *arg = luaL_optlstring(L, 4, "", &alen);
    char *copy = sr_malloc(alen + 1);
    if (!copy) return luaL_error(L, "worker VMs: out of memory");
    memcpy(copy, arg, alen + 1);
    sr_free(w->arg);
    w->arg = copy;
    w->arg_len = alen;
    w->pool = pool;
    for (int k = 0; k < w->n; k++) {
        sr_free(w->err[k]);
        w->err[k] = NULL;
    }
    sr_workers_start(pool, sr__phase, w);
    return 0;
}

/* handle:wait() -> nil, or the first failing worker's error ("worker k:
 * message and traceback"): returns when every worker's phase is done. */
static int sr__wait(lua_State *L)
{
    sr_wvm_t *w = *sr__slot(L);
    if (w->pool) sr_workers_wait(w->pool);
    w->pool = NULL;
    for (int k = 1; k < w->n; k++) {
        if (w->err[k]) {
            lua_pushfstring(L, "worker %d: %s", k, w->err[k]);
            return 1;
        }
    }
    return 0;
}

/* handle:close(): shuts every VM down (each hands back what it borrowed). */
static int sr__close_lua(lua_State *L)
{
    sr_wvm_t **u = luaL_checkudata(L, 1, SR_WVM_MT);
    sr__close(*u);
    *u = NULL;
    return 0;
}

int luaopen_streamrun_cworkervm(lua_State *L)
{
    static const luaL_Reg methods[] = { { "run", sr__run }, { "wait", sr__wait },
                                        { "close", sr__close_lua }, { NULL, NULL } };
    if (luaL_newmetatable(L, SR_WVM_MT)) {
        lua_pushcfunction(L, sr__close_lua);
        lua_setfield(L, -2, "__gc");
        lua_newtable(L);
        luaL_register(L, NULL, methods);
        lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushcfunction(L, sr__new);
    lua_setfield(L, -2, "new");
    return 1;
}
