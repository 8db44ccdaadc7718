/* sr_window_lua: the Lua module streamrun.cwindow over window slices held
 * in C (sr_window). */
#ifndef SR_WINDOW_LUA_H
#define SR_WINDOW_LUA_H
#include <lua.h>

/* Opens the module: returns its table. */
int luaopen_streamrun_cwindow(lua_State *L);

#endif
