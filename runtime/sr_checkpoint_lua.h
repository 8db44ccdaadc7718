/* sr_checkpoint_lua: the Lua module streamrun.ckpt: writes checkpoints of
 * state and window handles (in a forked child, so batches go on while the
 * snapshot is written), and loads them back into new handles. */
#ifndef SR_CHECKPOINT_LUA_H
#define SR_CHECKPOINT_LUA_H
#include <lua.h>

int luaopen_streamrun_ckpt(lua_State *L);

#endif
