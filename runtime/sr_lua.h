/* sr_lua: the embedded LuaJIT VM. The one place C calls into Lua: every call
 * goes through sr_lua_call, which installs a traceback handler. */
#ifndef SR_LUA_H
#define SR_LUA_H
#include <lua.h>

/* Creates a VM with the standard libraries and package.path set to find the
 * streamrun library in lua_dir. NULL when out of memory. */
lua_State *sr_lua_new(const char *lua_dir);
void sr_lua_free(lua_State *L);

/* Calls the function below nargs arguments on the stack, like lua_pcall, with
 * a handler that appends a traceback. On error prints "streamrun: <message
 * and traceback>" on stderr and returns non-zero with nothing pushed. */
int sr_lua_call(lua_State *L, int nargs, int nresults);

/* A lua_pcall error handler: the message (or what the error object is)
 * with a traceback. Returns 1. */
int sr_lua_traceback(lua_State *L);

/* Finds the directory of the streamrun Lua library: $STREAMRUN_LUA_DIR, else
 * ../lua beside the executable. Writes it to buf; returns buf. */
const char *sr_lua_dir(char *buf, size_t size);

#endif
