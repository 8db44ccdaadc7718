/* sr_handle: a Lua userdata that owns one C object (a state table, a
 * window), shared by the Lua bindings: push, check, get, and take the
 * object out (detach or free, leaving the handle empty). */
#ifndef SR_HANDLE_H
#define SR_HANDLE_H
#include <lauxlib.h>
#include <lua.h>

typedef struct sr_handle {
    void *obj; /* owned; NULL once taken out */
} sr_handle_t;

/* Pushes a new handle with metatable mt owning obj (may be NULL, to be set
 * once created: the handle then frees it if the creation raises). */
static inline sr_handle_t *sr_handle_push(lua_State *L, void *obj, const char *mt)
{
    sr_handle_t *h = lua_newuserdata(L, sizeof(*h));
    h->obj = obj;
    luaL_getmetatable(L, mt);
    lua_setmetatable(L, -2);
    return h;
}

/* The object of the handle at idx, or NULL if idx is not such a handle or
 * it is empty. */
static inline void *sr_handle_get(lua_State *L, int idx, const char *mt)
{
    sr_handle_t *h = luaL_testudata(L, idx, mt);
    return h ? h->obj : NULL;
}

/* The object of the handle at idx; raises if it is not one or is empty
 * ("<what> has been freed"). */
static inline void *sr_handle_check(lua_State *L, int idx, const char *mt, const char *what)
{
    sr_handle_t *h = luaL_checkudata(L, idx, mt);
    if (!h->obj) luaL_error(L, "%s has been freed", what);
    return h->obj;
}

/* Takes the object out of the handle at idx (raises if it is not one):
 * the caller owns it now; the handle is left empty. */
static inline void *sr_handle_take(lua_State *L, int idx, const char *mt)
{
    sr_handle_t *h = luaL_checkudata(L, idx, mt);
    void *obj = h->obj;
    h->obj = NULL;
    return obj;
}

#endif
