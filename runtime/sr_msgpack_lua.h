/* sr_msgpack_lua: Lua values to msgpack and back, with msgpack-c: packed
 * straight from the Lua stack, unpacked straight onto it. Shared by the Lua
 * bindings of state tables and window slices. */
#ifndef SR_MSGPACK_LUA_H
#define SR_MSGPACK_LUA_H
#include <lua.h>
#include <msgpack.h>
#include <stddef.h>

#include "sr_mpbuf.h"

/* Packs the Lua value at idx: numbers (whole ones as integers), strings,
 * booleans, tables (arrays when the keys are exactly 1..n, else maps) and
 * cjson.null, at a nesting depth (0 for a top-level value; 1 inside a
 * container the caller packs). Returns NULL, or a static description of
 * what cannot be packed ("a function", a table nested deeper than
 * SR_MP_MAX_DEPTH levels, ...); the packer's output is then incomplete. */
const char *sr_mplua_pack(lua_State *L, int idx, msgpack_packer *pk, int depth);
/* Packs a state key: a string, number (not NaN) or boolean; raises a Lua
 * error for anything else. */
void sr_mplua_pack_key(lua_State *L, int idx, msgpack_packer *pk);
/* Pushes the value of a decoded object (nil inside tables as cjson.null). */
void sr_mplua_push_object(lua_State *L, const msgpack_object *o);
/* Pushes the value of msgpack bytes; nil if they do not decode. */
void sr_mplua_push(lua_State *L, const char *p, size_t n);
/* Pushes the value of the first msgpack object in p[0..n) (as
 * sr_mplua_push_object would; the caller leaves room on the stack for
 * one value, containers check their own); returns the bytes it took, or
 * 0 (nothing pushed) when they do not decode. */
size_t sr_mplua_push_next(lua_State *L, const char *p, size_t n);
/* Decodes the objects of msgpack bytes one after another: calls fn for each
 * with ud. Returns the number decoded, or -1 if the bytes are malformed. */
long sr_mplua_each(const char *p, size_t n, void (*fn)(void *ud, const msgpack_object *o), void *ud);

/* Frees the calling thread's unpacking zone (a pool thread's, as it
 * exits). */
void sr_mplua_thread_free(void);

#endif
