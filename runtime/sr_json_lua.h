/* sr_json_lua: the Lua module streamrun.json: Lua values as JSON text with
 * object members sorted by key, so a value is written the same way in every
 * run (lua-cjson writes members in the table's order, which this LuaJIT
 * seeds per process). */
#ifndef SR_JSON_LUA_H
#define SR_JSON_LUA_H
#include <lua.h>

int luaopen_streamrun_json(lua_State *L);

/* Frees the calling thread's output buffer (a pool thread's, as it
 * exits). */
void sr_json_lua_thread_free(void);

#endif
