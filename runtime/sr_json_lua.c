/* sr_json_lua: json.encode(value) -> text, or nil and why. Numbers as
 * lua-cjson writes them (%.14g, integers without a fraction), NaN and
 * infinities as null (JSON has no such numbers); strings escaped per RFC
 * 8259, bytes that are not valid UTF-8 replaced by U+FFFD; tables with
 * integer keys 1..n (holes as null) as arrays, others as objects with
 * members sorted by key; cjson.null (a NULL light userdata) as null.
 * Nesting deeper than 32 levels is refused. json.encode(value, true) is
 * the exact form, for keys that stand for values (count_by_value): bytes
 * as they are, NaN and infinities as nan/inf/-inf, numbers to 17 digits,
 * so that different values never give the same text (lua-cjson reads it
 * back). */
#include "sr_json_lua.h"
#include "sr_alloc.h"
#include "sr_json_decode.h"
#include "sr_utf8.h"

#include <lauxlib.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SR_JSON_MAX_DEPTH 32

typedef struct sr__out {
    char *p;
    size_t len, cap;
} sr__out_t;

static __thread sr__out_t out; /* per thread: each worker runs its own VM */
static __thread int exact; /* the exact form (see above); per thread as out is */

void sr_json_lua_thread_free(void)
{
    sr_free(out.p);
    memset(&out, 0, sizeof(out));
}

static int sr__put(const char *s, size_t n)
{
    if (out.len + n > out.cap) {
        size_t cap = out.cap ? out.cap : 4096;
        while (cap < out.len + n) cap *= 2;
        char *p = sr_realloc(out.p, cap);
        if (!p) return -1;
        out.p = p;
        out.cap = cap;
    }
    memcpy(out.p + out.len, s, n);
    out.len += n;
    return 0;
}

static int sr__string(const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    if (sr__put("\"", 1) < 0) return -1;
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = NULL;
        char u[7];
        switch (c) {
        case '"': esc = "\\\""; break;
        case '\\': esc = "\\\\"; break;
        case '\n': esc = "\\n"; break;
        case '\r': esc = "\\r"; break;
        case '\t': esc = "\\t"; break;
        case '\b': esc = "\\b"; break;
        case '\f': esc = "\\f"; break;
        default:
            if (c >= 0x80 && !exact) {
                int valid;
                size_t len = sr_utf8_next(s + i, n - i, &valid);
                if (valid) {
                    i += len - 1;
                    continue;
                }
                if (sr__put(s + run, i - run) < 0 || sr__put(SR_UTF8_REPLACEMENT, 3) < 0) return -1;
                i += len - 1;
                run = i + 1;
                continue;
            }
            if (c < 0x20 || c == 0x7f) {
                memcpy(u, "\\u00", 4);
                u[4] = hex[c >> 4];
                u[5] = hex[c & 15];
                u[6] = '\0';
                esc = u;
            }
        }
        if (!esc) continue;
        if (sr__put(s + run, i - run) < 0 || sr__put(esc, strlen(esc)) < 0) return -1;
        run = i + 1;
    }
    if (sr__put(s + run, n - run) < 0) return -1;
    return sr__put("\"", 1);
}

static int sr__number(lua_Number x)
{
    char buf[64];
    if (isnan(x) || isinf(x)) {
        if (!exact) return sr__put("null", 4);
        return isnan(x) ? sr__put("nan", 3) : x > 0 ? sr__put("inf", 3) : sr__put("-inf", 4);
    }
    if (x == floor(x) && fabs(x) < 9007199254740992.0) {
        /* What "%.0f" writes, without printf's float formatting. */
        char *e = buf + sizeof(buf), *p = e;
        uint64_t u = (uint64_t)fabs(x);
        do {
            *--p = (char)('0' + u % 10);
            u /= 10;
        } while (u);
        if (signbit(x)) *--p = '-';
        return sr__put(p, (size_t)(e - p));
    }
    int n = snprintf(buf, sizeof(buf), exact ? "%.17g" : "%.14g", x);
    return sr__put(buf, (size_t)n);
}

typedef struct sr__key {
    const char *s;   /* the member name, or NULL when it is in buf */
    size_t len;
    char buf[32];
    int ref;         /* stack index of the key */
} sr__key_t;

/* buf moves with the struct when sorted: names are read through this. */
static const char *sr__name(const sr__key_t *k) { return k->s ? k->s : k->buf; }

static int sr__cmp_keys(const void *a, const void *b)
{
    const sr__key_t *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(sr__name(x), sr__name(y), n);
    return c ? c : (x->len > y->len) - (x->len < y->len);
}

static const char *sr__value(lua_State *L, int idx, int depth);

static const char *sr__table(lua_State *L, int idx, int depth)
{
    if (depth >= SR_JSON_MAX_DEPTH) return "a table nested deeper than 32 levels (a cycle?)";
    luaL_checkstack(L, 6, "json");
    size_t count = 0;
    lua_Number max = 0;
    int ints = 1;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        count++;
        if (ints) {
            if (lua_type(L, -2) == LUA_TNUMBER) {
                lua_Number k = lua_tonumber(L, -2);
                if (k >= 1 && k == floor(k)) { if (k > max) max = k; }
                else ints = 0;
            } else {
                ints = 0;
            }
        }
        lua_pop(L, 1);
    }
    if (count == 0) return sr__put("{}", 2) < 0 ? "out of memory" : NULL;
    if (ints && max <= 2.0 * (lua_Number)count + 8) {
        if (sr__put("[", 1) < 0) return "out of memory";
        for (int i = 1; i <= (int)max; i++) {
            if (i > 1 && sr__put(",", 1) < 0) return "out of memory";
            lua_rawgeti(L, idx, i);
            const char *err = lua_isnil(L, -1) ? (sr__put("null", 4) < 0 ? "out of memory" : NULL)
                                               : sr__value(L, lua_gettop(L), depth + 1);
            lua_pop(L, 1);
            if (err) return err;
        }
        return sr__put("]", 1) < 0 ? "out of memory" : NULL;
    }
    sr__key_t *keys = sr_malloc(count * sizeof(*keys));
    if (!keys) return "out of memory";
    /* The keys stay on the stack (as copies) while they are sorted. */
    luaL_checkstack(L, (int)count + 4, "json");
    int base = lua_gettop(L);
    size_t n = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        int t = lua_type(L, -1);
        if (t != LUA_TSTRING && t != LUA_TNUMBER && t != LUA_TBOOLEAN) {
            lua_settop(L, base);
            sr_free(keys);
            return "a table with a key JSON cannot name";
        }
        lua_pushvalue(L, -1);
        lua_insert(L, base + 1 + (int)n); /* keep a copy below the iteration key */
        sr__key_t *k = &keys[n++];
        k->ref = base + (int)n;
        if (t == LUA_TSTRING) {
            k->s = lua_tolstring(L, k->ref, &k->len);
        } else if (t == LUA_TNUMBER) {
            lua_Number x = lua_tonumber(L, k->ref);
            k->len = (size_t)snprintf(k->buf, sizeof(k->buf), x == floor(x) && fabs(x) < 1e15 ? "%.0f" : "%.14g", x);
            k->s = NULL;
        } else {
            k->s = lua_toboolean(L, k->ref) ? "true" : "false";
            k->len = strlen(k->s);
        }
    }
    qsort(keys, n, sizeof(*keys), sr__cmp_keys);
    const char *err = sr__put("{", 1) < 0 ? "out of memory" : NULL;
    for (size_t i = 0; i < n && !err; i++) {
        if (i && sr__put(",", 1) < 0) { err = "out of memory"; break; }
        if (sr__string(sr__name(&keys[i]), keys[i].len) < 0 || sr__put(":", 1) < 0) { err = "out of memory"; break; }
        lua_pushvalue(L, keys[i].ref);
        lua_rawget(L, idx);
        err = sr__value(L, lua_gettop(L), depth + 1);
        lua_pop(L, 1);
    }
    if (!err && sr__put("}", 1) < 0) err = "out of memory";
    lua_settop(L, base);
    sr_free(keys);
    return err;
}

static const char *sr__value(lua_State *L, int idx, int depth)
{
    switch (lua_type(L, idx)) {
    case LUA_TNIL: return sr__put("null", 4) < 0 ? "out of memory" : NULL;
    case LUA_TBOOLEAN:
        return (lua_toboolean(L, idx) ? sr__put("true", 4) : sr__put("false", 5)) < 0 ? "out of memory" : NULL;
    case LUA_TNUMBER: return sr__number(lua_tonumber(L, idx)) < 0 ? "out of memory" : NULL;
    case LUA_TSTRING: {
        size_t n;
        const char *s = lua_tolstring(L, idx, &n);
        return sr__string(s, n) < 0 ? "out of memory" : NULL;
    }
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, idx) == NULL) return sr__put("null", 4) < 0 ? "out of memory" : NULL;
        return "a light userdata";
    case LUA_TTABLE: return sr__table(L, idx, depth);
    default: return lua_typename(L, lua_type(L, idx));
    }
}

/* encode_lines(A, B, n, i) -> text, next[, err]: elements i..n of a
 * batch's columns (element j is A[j], or the pair A[j], B[j] written as
 * {"key":..,"value":..} when B[j] is not nil) as JSON lines, each ending
 * with a newline, in one string. It stops before the first element that
 * cannot be JSON: next is that element's index and err says why (as
 * encode's); otherwise next is n + 1. */
static int sr__encode_lines(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_checktype(L, 2, LUA_TTABLE);
    int n = luaL_checkint(L, 3), i = luaL_checkint(L, 4);
    exact = 0;
    lua_settop(L, 4);
    out.len = 0;
    const char *err = NULL;
    for (; i <= n; i++) {
        size_t mark = out.len;
        lua_rawgeti(L, 1, i);
        lua_rawgeti(L, 2, i);
        if (lua_isnil(L, 6)) {
            err = sr__value(L, 5, 0);
        } else {
            err = sr__put("{\"key\":", 7) < 0 ? "out of memory" : sr__value(L, 5, 0);
            if (!err) err = sr__put(",\"value\":", 9) < 0 ? "out of memory" : sr__value(L, 6, 0);
            if (!err && sr__put("}", 1) < 0) err = "out of memory";
        }
        if (!err && sr__put("\n", 1) < 0) err = "out of memory";
        lua_settop(L, 4);
        if (err) {
            out.len = mark;
            break;
        }
    }
    lua_pushlstring(L, out.p ? out.p : "", out.len);
    lua_pushinteger(L, i);
    if (!err) return 2;
    lua_pushfstring(L, "cannot write %s as JSON", err);
    return 3;
}

static int sr__encode(lua_State *L)
{
    luaL_checkany(L, 1);
    exact = lua_toboolean(L, 2);
    lua_settop(L, 1);
    out.len = 0;
    const char *err = sr__value(L, 1, 0);
    if (err) {
        lua_pushnil(L);
        lua_pushfstring(L, "cannot write %s as JSON", err);
        return 2;
    }
    lua_pushlstring(L, out.p, out.len);
    return 1;
}

int luaopen_streamrun_json(lua_State *L)
{
    lua_newtable(L);
    lua_pushcfunction(L, sr__encode);
    lua_setfield(L, -2, "encode");
    lua_pushcfunction(L, sr__encode_lines);
    lua_setfield(L, -2, "encode_lines");
    lua_pushcfunction(L, sr_json_decode_batch_lua);
    lua_setfield(L, -2, "decode_batch");
    return 1;
}
