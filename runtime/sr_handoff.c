/* sr_handoff: a small process-wide store of named values: light userdata,
 * strings, numbers and booleans. put(key, value), take(key) -> value (and
 * forgets it), keys() -> the keys held. */
#include "sr_handoff.h"
#include "sr_alloc.h"

#include <lauxlib.h>
#include <string.h>

typedef struct sr__item {
    char *key;
    int type;      /* LUA_TLIGHTUSERDATA, LUA_TSTRING, LUA_TNUMBER, LUA_TBOOLEAN */
    void *ptr;
    char *str;
    size_t len;
    lua_Number num;
    struct sr__item *next;
} sr__item_t;

static sr__item_t *items;

static sr__item_t **sr__find(const char *key)
{
    sr__item_t **p = &items;
    while (*p && strcmp((*p)->key, key) != 0) p = &(*p)->next;
    return p;
}

static void sr__free_item(sr__item_t *it)
{
    sr_free(it->key);
    sr_free(it->str);
    sr_free(it);
}

static int sr__put(lua_State *L)
{
    const char *key = luaL_checkstring(L, 1);
    int t = lua_type(L, 2);
    if (t != LUA_TLIGHTUSERDATA && t != LUA_TSTRING && t != LUA_TNUMBER && t != LUA_TBOOLEAN)
        return luaL_error(L, "handoff: cannot hand over a %s", luaL_typename(L, 2));
    sr__item_t **p = sr__find(key);
    if (*p) {
        sr__item_t *old = *p;
        *p = old->next;
        sr__free_item(old);
    }
    sr__item_t *it = sr_calloc(1, sizeof(*it));
    if (!it || !(it->key = sr_strdup(key))) {
        sr_free(it);
        return luaL_error(L, "handoff: out of memory");
    }
    it->type = t;
    if (t == LUA_TLIGHTUSERDATA) it->ptr = lua_touserdata(L, 2);
    else if (t == LUA_TNUMBER) it->num = lua_tonumber(L, 2);
    else if (t == LUA_TBOOLEAN) it->num = lua_toboolean(L, 2);
    else {
        const char *s = lua_tolstring(L, 2, &it->len);
        it->str = sr_malloc(it->len ? it->len : 1);
        if (!it->str) { sr__free_item(it); return luaL_error(L, "handoff: out of memory"); }
        memcpy(it->str, s, it->len);
    }
    it->next = items;
    items = it;
    return 0;
}

static int sr__take(lua_State *L)
{
    sr__item_t **p = sr__find(luaL_checkstring(L, 1));
    sr__item_t *it = *p;
    if (!it) return 0;
    *p = it->next;
    switch (it->type) {
    case LUA_TLIGHTUSERDATA: lua_pushlightuserdata(L, it->ptr); break;
    case LUA_TNUMBER: lua_pushnumber(L, it->num); break;
    case LUA_TBOOLEAN: lua_pushboolean(L, (int)it->num); break;
    default: lua_pushlstring(L, it->str, it->len); break;
    }
    sr__free_item(it);
    return 1;
}

static int sr__keys(lua_State *L)
{
    lua_newtable(L);
    int n = 0;
    for (sr__item_t *it = items; it; it = it->next) {
        lua_pushstring(L, it->key);
        lua_rawseti(L, -2, ++n);
    }
    return 1;
}

int luaopen_streamrun_handoff(lua_State *L)
{
    static const luaL_Reg functions[] = {{"put", sr__put}, {"take", sr__take}, {"keys", sr__keys}, {NULL, NULL}};
    lua_newtable(L);
    luaL_register(L, NULL, functions);
    return 1;
}
