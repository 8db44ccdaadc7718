/* sr_window_lua: the Lua module streamrun.cwindow over window slices held
 * in C (sr_window). */
#ifndef SR_WINDOW_LUA_H
#define SR_WINDOW_LUA_H
#include <lua.h>

#include "sr_window.h"

/* Opens the module: returns its table. */
int luaopen_streamrun_cwindow(lua_State *L);

/* Frees the calling thread's slice buffer (a pool thread's, as it
 * exits). */
void sr_window_lua_thread_free(void);

/* The window of the handle at idx, or NULL if it is not a live handle. */
sr_window_t *sr_window_lua_get(lua_State *L, int idx);
/* Pushes a new handle owning w (the module must have been opened). */
void sr_window_lua_push(lua_State *L, sr_window_t *w);

#endif
