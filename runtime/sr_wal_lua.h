/* sr_wal_lua: the Lua module streamrun.cwal, which reads a job's
 * write-ahead log back for recovery. */
#ifndef SR_WAL_LUA_H
#define SR_WAL_LUA_H
#include <lua.h>

int luaopen_streamrun_cwal(lua_State *L);

#endif
