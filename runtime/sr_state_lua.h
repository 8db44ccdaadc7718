/* sr_state_lua: the Lua module streamrun.cstate, through which Lua reads and
 * writes keyed state held in C. Values cross as msgpack (msgpack-c), packed
 * straight from the Lua stack and unpacked straight onto it. */
#ifndef SR_STATE_LUA_H
#define SR_STATE_LUA_H
#include <lua.h>

#include "sr_state.h"

/* Opens the module: returns its table. Registered in package.preload by the
 * binary; loaded with package.loadlib from libstreamrun.so elsewhere. */
int luaopen_streamrun_cstate(lua_State *L);

/* Frees the calling thread's scratch buffers (a pool thread's, as it
 * exits). */
void sr_state_lua_thread_free(void);

/* The state of the handle at idx, or NULL if it is not a live state handle. */
sr_state_t *sr_state_lua_get(lua_State *L, int idx);
/* Pushes a new handle owning st (the module must have been opened). */
void sr_state_lua_push(lua_State *L, sr_state_t *st);

#endif
