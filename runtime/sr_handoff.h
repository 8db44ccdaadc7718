/* sr_handoff: what one Lua VM hands the next when a job's logic is reloaded:
 * the C objects it owned (the loop, state tables, windows) as light
 * userdata, and its Lua-side context as msgpack. Lives in C so it outlives
 * the VM that put it there. The Lua module streamrun.handoff. */
#ifndef SR_HANDOFF_H
#define SR_HANDOFF_H
#include <lua.h>

int luaopen_streamrun_handoff(lua_State *L);

#endif
