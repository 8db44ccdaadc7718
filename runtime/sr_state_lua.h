/* sr_state_lua: the Lua module streamrun.cstate, through which Lua reads and
 * writes keyed state held in C. Values cross as msgpack (msgpack-c), packed
 * straight from the Lua stack and unpacked straight onto it. */
#ifndef SR_STATE_LUA_H
#define SR_STATE_LUA_H
#include <lua.h>

/* Opens the module: returns its table. Registered in package.preload by the
 * binary; loaded with package.loadlib from libstreamrun.so elsewhere. */
int luaopen_streamrun_cstate(lua_State *L);

#endif
