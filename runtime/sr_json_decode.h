/* sr_json_decode: a sealed batch's records decoded from JSON into Lua
 * values in one call (the fast path of `format = "json"` sources; lua-cjson
 * decodes what it leaves). */
#ifndef SR_JSON_DECODE_H
#define SR_JSON_DECODE_H
#include "sr_batch.h"

#include <lua.h>

/* The Lua function decode_batch(cbatch, out, m, i) -> m, i of
 * streamrun.json (see sr_json_decode.c). */
int sr_json_decode_batch_lua(lua_State *L);

#endif
