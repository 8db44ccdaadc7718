/* sr_lua: LuaJIT VM creation, library path, protected calls with traceback. */
#include "sr_lua.h"
#include "sr_checkpoint_lua.h"
#include "sr_exchange.h"
#include "sr_worker_vm.h"
#include "sr_handoff.h"
#include "sr_json_lua.h"
#include "sr_state_lua.h"
#include "sr_wal_lua.h"
#include "sr_watchdog.h"
#include "sr_window_lua.h"

#include <lauxlib.h>
#include <libgen.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int sr_lua_traceback(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (!msg) msg = lua_isnoneornil(L, 1) ? "(error object is nil)" : "(error object is not a string)";
    luaL_traceback(L, L, msg, 1);
    return 1;
}

int sr_lua_call(lua_State *L, int nargs, int nresults)
{
    int base = lua_gettop(L) - nargs;
    lua_pushcfunction(L, sr_lua_traceback);
    lua_insert(L, base);
    int rc = lua_pcall(L, nargs, nresults, base);
    lua_remove(L, base);
    if (rc != 0) {
        fprintf(stderr, "streamrun: %s\n", lua_tostring(L, -1));
        lua_pop(L, 1);
    }
    return rc;
}

const char *sr_lua_dir(char *buf, size_t size)
{
    const char *env = getenv("STREAMRUN_LUA_DIR");
    if (env && *env) {
        snprintf(buf, size, "%s", env);
        return buf;
    }
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n <= 0) {
        snprintf(buf, size, "lua");
        return buf;
    }
    exe[n] = '\0';
    snprintf(buf, size, "%s/../lua", dirname(exe));
    return buf;
}

lua_State *sr_lua_new(const char *lua_dir)
{
    lua_State *L = luaL_newstate();
    if (!L) return NULL;
    luaL_openlibs(L);
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "path");
    lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;%s", lua_dir, lua_dir, lua_tostring(L, -1));
    lua_setfield(L, -3, "path");
    lua_pop(L, 1);
    /* The C modules of the runtime, for require. */
    static const luaL_Reg modules[] = {
        {"streamrun.cstate", luaopen_streamrun_cstate}, {"streamrun.cwindow", luaopen_streamrun_cwindow},
        {"streamrun.ckpt", luaopen_streamrun_ckpt},     {"streamrun.cwal", luaopen_streamrun_cwal},
        {"streamrun.handoff", luaopen_streamrun_handoff}, {"streamrun.json", luaopen_streamrun_json},
        {"streamrun.cwatchdog", luaopen_streamrun_cwatchdog},
        {"streamrun.cexchange", luaopen_streamrun_cexchange}, {"streamrun.cworkervm", luaopen_streamrun_cworkervm},
    };
    lua_getfield(L, -1, "preload");
    for (size_t i = 0; i < sizeof(modules) / sizeof(modules[0]); i++) {
        lua_pushcfunction(L, modules[i].func);
        lua_setfield(L, -2, modules[i].name);
    }
    lua_pop(L, 2);
    return L;
}

void sr_lua_free(lua_State *L)
{
    if (!L) return;
    sr_watchdog_forget(L);
    lua_close(L);
}
