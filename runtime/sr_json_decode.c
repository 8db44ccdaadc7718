/* sr_json_decode: the records of a sealed batch of a `format = "json"`
 * source decoded into Lua values in one call, as lua-cjson's decode would
 * make them: objects and arrays as tables, strings as they are (escapes
 * resolved, UTF-16 surrogate pairs joined), numbers as strtod reads them,
 * true/false as booleans, null as a NULL light userdata (cjson.null).
 *
 * It is the fast path only: it reads strict JSON and stops at the first
 * record that is anything else (a syntax error, lua-cjson's extensions such
 * as hex numbers, inf, nan or leading zeros, a NUL byte, nesting deeper than
 * SR_JSON_FAST_DEPTH, a bare null) and hands it back, so that the caller
 * decodes that record with lua-cjson, whose value or error message stays
 * the reference. Every record it does decode is one lua-cjson decodes to the
 * same value.
 *
 * What makes it cheaper than a lua-cjson call per record: no Lua string per
 * record, tables created at the size the previous record's tables at the
 * same depth had (instead of growing 1, 2, 4, 8 members), member names from
 * a cache, numbers of up to 19 digits and a small exponent computed exactly
 * without strtod, strings without escapes pushed straight from the record. */
#include "sr_json_decode.h"
#include "sr_alloc.h"

#include <lauxlib.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define SR_JSON_FAST_DEPTH 64
#define SR_JSON_HINTS 8         /* depths whose table sizes are remembered */
#define SR_JSON_MAX_HINT 64     /* a remembered size is capped at this */
#define SR_LUA_TCDATA 10        /* LuaJIT's type tag of FFI cdata */

/* Member names: the same few recur in every record, and are pushed from a
 * cache (a table read) instead of being looked up in LuaJIT's string table
 * each time (a hash of the whole name and a walk of a chain in a table of
 * every string); they also stay alive, where a name no constant holds would
 * be collected and made again every cycle. Direct mapped by a hash of the
 * name's bytes; a slot's count says how often it was hit lately, and a name
 * seen once (a map keyed by ids) takes a slot only once the count has worn
 * down to 0. Values are not cached: most are seen once (ids, times), and a
 * cache that misses costs more than it saves. One cache per VM (in sr__vm_t;
 * its strings in a table beside it in the registry). */
#define SR_JSON_CACHE_SLOTS 1024
#define SR_JSON_CACHE_LEN 24
#define SR_JSON_CACHE_HOT 15
#define SR_JSON_SLACK 32        /* zero bytes kept after a scratch buffer's text */

typedef struct sr__cached {
    uint64_t w[3]; /* the bytes, zero after len */
    uint8_t len, count;
} sr__cached_t;

/* What a VM's decoder keeps from call to call (a userdata in its registry,
 * so VMs on other threads have their own): the name cache, scratch memory
 * (the record with its sentinel, the bytes of a string whose escapes are
 * being resolved; freed with the userdata) and the table sizes seen. */
typedef struct sr__vm {
    sr__cached_t cache[SR_JSON_CACHE_SLOTS];
    char *rec, *str;
    size_t rec_cap, str_cap;
    int obj_hint[SR_JSON_HINTS], arr_hint[SR_JSON_HINTS];
} sr__vm_t;

typedef struct sr__dec {
    lua_State *L;
    sr__vm_t *vm;
    sr__cached_t *cache; /* vm->cache */
    int strings;         /* stack index of the cache's strings (slot + 1 -> string) */
    const char *p;  /* the next byte; the record ends with a NUL sentinel */
    const char *end; /* the sentinel's place: a NUL before it is a byte of the record */
    int depth;
} sr__dec_t;

/* 1 for the bytes that end the fast scan of a string: '"', '\\', NUL. */
static const unsigned char str_stop[256] = { [0] = 1, ['"'] = 1, ['\\'] = 1 };

static const double pow10_exact[] = { 1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                      1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                      1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22 };

static int sr__grow(char **buf, size_t *cap, size_t need)
{
    if (need <= *cap) return 0;
    size_t c = *cap ? *cap : 1024;
    while (c < need) c *= 2;
    char *p = sr_realloc(*buf, c);
    if (!p) return -1;
    *buf = p;
    *cap = c;
    return 0;
}

static inline void sr__ws(sr__dec_t *d)
{
    const char *p = d->p;
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
    d->p = p;
}

static int sr__value(sr__dec_t *d);

/* -- Numbers -- */

/* A number of the strict grammar -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
 * Few digits and a small exponent: the digits as an integer (exact below
 * 2^53) times or divided by an exact power of ten, one rounding, which is
 * what a correctly rounding strtod gives; otherwise strtod itself. */
static int sr__number(sr__dec_t *d)
{
    const char *s = d->p, *p = s;
    int neg = 0;
    if (*p == '-') {
        neg = 1;
        p++;
    }
    uint64_t m = 0;
    int digits = 0, e = 0;
    if (*p == '0') {
        p++;
    } else if (*p >= '1' && *p <= '9') {
        while (*p >= '0' && *p <= '9') {
            m = m * 10 + (uint64_t)(*p - '0');
            digits++;
            p++;
        }
    } else {
        return -1;
    }
    if (*p == '.') {
        p++;
        if (!(*p >= '0' && *p <= '9')) return -1;
        while (*p >= '0' && *p <= '9') {
            m = m * 10 + (uint64_t)(*p - '0');
            if (m) digits++;
            e--;
            p++;
        }
    }
    if (*p == 'e' || *p == 'E') {
        p++;
        int eneg = 0, x = 0;
        if (*p == '+' || *p == '-') eneg = *p++ == '-';
        if (!(*p >= '0' && *p <= '9')) return -1;
        while (*p >= '0' && *p <= '9') {
            if (x < 100000) x = x * 10 + (*p - '0');
            p++;
        }
        e += eneg ? -x : x;
    }
    double v;
    if (digits <= 19 && m <= ((uint64_t)1 << 53) && e >= -22 && e <= 22) {
        v = (double)m;
        if (e > 0) v *= pow10_exact[e];
        else if (e < 0) v /= pow10_exact[-e];
        if (neg) v = -v;
    } else if (m == 0 && digits == 0) {
        v = neg ? -0.0 : 0.0;
    } else {
        char *endp;
        v = strtod(s, &endp);
        if (endp != p) return -1;
    }
    d->p = p;
    lua_pushnumber(d->L, v);
    return 0;
}

/* -- Strings -- */

/* k (0..8) bytes at p as a little-endian word, the others zero. Reads 8
 * bytes: the scratch buffers keep SR_JSON_SLACK bytes after their text. */
static inline uint64_t sr__word(const char *p, size_t k)
{
    uint64_t x;
    memcpy(&x, p, 8);
#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
    x = __builtin_bswap64(x);
#endif
    return k >= 8 ? x : k == 0 ? 0 : x & (((uint64_t)1 << (8 * k)) - 1);
}

/* Pushes a member name, from the cache when it is there. */
static void sr__push_name(sr__dec_t *d, const char *s, size_t len)
{
    if (len > SR_JSON_CACHE_LEN) {
        lua_pushlstring(d->L, s, len);
        return;
    }
    uint64_t w0 = sr__word(s, len), w1 = len > 8 ? sr__word(s + 8, len - 8) : 0,
             w2 = len > 16 ? sr__word(s + 16, len - 16) : 0;
    uint64_t h = (w0 * 0x9E3779B97F4A7C15u) ^ (w1 * 0xC2B2AE3D27D4EB4Fu) ^ (w2 * 0x165667B19E3779F9u) ^ len;
    h ^= h >> 29;
    int slot = (int)((h * 0xFF51AFD7ED558CCDu) >> 54); /* 10 bits: SR_JSON_CACHE_SLOTS */
    sr__cached_t *c = &d->cache[slot];
    if (c->w[0] == w0 && c->w[1] == w1 && c->w[2] == w2 && c->len == len && c->count) {
        if (c->count < SR_JSON_CACHE_HOT) c->count++;
        lua_rawgeti(d->L, d->strings, slot + 1);
        return;
    }
    lua_pushlstring(d->L, s, len);
    if (c->count > 0) {
        c->count--;
        return;
    }
    c->w[0] = w0;
    c->w[1] = w1;
    c->w[2] = w2;
    c->len = (uint8_t)len;
    c->count = 1;
    lua_pushvalue(d->L, -1);
    lua_rawseti(d->L, d->strings, slot + 1);
}

static int sr__hex4(const char *p)
{
    int v = 0;
    for (int i = 0; i < 4; i++) {
        int c = (unsigned char)p[i], x;
        if (c >= '0' && c <= '9') x = c - '0';
        else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f') x = (c | 0x20) - 'a' + 10;
        else return -1;
        v = v << 4 | x;
    }
    return v;
}

/* Resolves a \uXXXX escape (two for a surrogate pair) at p into out as
 * UTF-8, as lua-cjson does. Returns the bytes written, or -1 for an escape
 * lua-cjson refuses; *next: after the escape. */
static int sr__unicode(const char *p, char *out, const char **next)
{
    int cp = sr__hex4(p + 2), len = 6;
    if (cp < 0) return -1;
    if ((cp & 0xF800) == 0xD800) {
        if (cp & 0x400) return -1; /* a low surrogate first */
        if (p[6] != '\\' || p[7] != 'u') return -1;
        int lo = sr__hex4(p + 8);
        if (lo < 0 || (lo & 0xFC00) != 0xDC00) return -1;
        cp = (((cp & 0x3FF) << 10) | (lo & 0x3FF)) + 0x10000;
        len = 12;
    }
    *next = p + len;
    if (cp <= 0x7F) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp <= 0x7FF) {
        out[0] = (char)(0xC0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp <= 0xFFFF) {
        out[0] = (char)(0xE0 | cp >> 12);
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | cp >> 18);
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* The string at d->p (its opening quote) pushed (a member name when key).
 * Bytes other than '"', '\\' and NUL are taken as they are (lua-cjson takes
 * control characters and bytes that are not UTF-8 too). */
static int sr__string(sr__dec_t *d, int key)
{
    const char *s = d->p + 1, *p = s;
    while (!str_stop[(unsigned char)*p]) p++;
    if (*p == '"') {
        if (key) sr__push_name(d, s, (size_t)(p - s));
        else lua_pushlstring(d->L, s, (size_t)(p - s));
        d->p = p + 1;
        return 0;
    }
    if (*p != '\\') return -1;
    /* Escapes: the decoded string is never longer than its text. */
    if (sr__grow(&d->vm->str, &d->vm->str_cap, (size_t)(d->end - s) + SR_JSON_SLACK) < 0) return -1;
    char *str_buf = d->vm->str;
    size_t n = (size_t)(p - s);
    memcpy(str_buf, s, n);
    for (;;) {
        unsigned char c = (unsigned char)*p;
        if (c == '"') break;
        if (c == 0) return -1;
        if (c != '\\') {
            str_buf[n++] = (char)c;
            p++;
            continue;
        }
        char x;
        switch (p[1]) {
        case '"': x = '"'; break;
        case '\\': x = '\\'; break;
        case '/': x = '/'; break;
        case 'b': x = '\b'; break;
        case 'f': x = '\f'; break;
        case 'n': x = '\n'; break;
        case 'r': x = '\r'; break;
        case 't': x = '\t'; break;
        case 'u': {
            int len = sr__unicode(p, str_buf + n, &p);
            if (len < 0) return -1;
            n += (size_t)len;
            continue;
        }
        default: return -1;
        }
        str_buf[n++] = x;
        p += 2;
    }
    if (key) sr__push_name(d, str_buf, n);
    else lua_pushlstring(d->L, str_buf, n);
    d->p = p + 1;
    return 0;
}

/* -- Objects and arrays -- */

static int sr__object(sr__dec_t *d)
{
    lua_State *L = d->L;
    int depth = d->depth++;
    if (depth >= SR_JSON_FAST_DEPTH) return -1;
    int *hint = depth < SR_JSON_HINTS ? &d->vm->obj_hint[depth] : NULL;
    lua_createtable(L, 0, hint ? *hint : 0);
    d->p++;
    sr__ws(d);
    int n = 0;
    if (*d->p == '}') {
        d->p++;
    } else {
        for (;;) {
            if (*d->p != '"' || sr__string(d, 1) < 0) return -1;
            sr__ws(d);
            if (*d->p != ':') return -1;
            d->p++;
            if (sr__value(d) < 0) return -1;
            lua_rawset(L, -3);
            n++;
            sr__ws(d);
            if (*d->p == ',') {
                d->p++;
                sr__ws(d);
                continue;
            }
            if (*d->p != '}') return -1;
            d->p++;
            break;
        }
    }
    if (hint) *hint = n < SR_JSON_MAX_HINT ? n : SR_JSON_MAX_HINT;
    d->depth--;
    return 0;
}

static int sr__array(sr__dec_t *d)
{
    lua_State *L = d->L;
    int depth = d->depth++;
    if (depth >= SR_JSON_FAST_DEPTH) return -1;
    int *hint = depth < SR_JSON_HINTS ? &d->vm->arr_hint[depth] : NULL;
    lua_createtable(L, hint ? *hint : 0, 0);
    d->p++;
    sr__ws(d);
    int n = 0;
    if (*d->p == ']') {
        d->p++;
    } else {
        for (;;) {
            if (sr__value(d) < 0) return -1;
            lua_rawseti(L, -2, ++n);
            sr__ws(d);
            if (*d->p == ',') {
                d->p++;
                continue;
            }
            if (*d->p != ']') return -1;
            d->p++;
            break;
        }
    }
    if (hint) *hint = n < SR_JSON_MAX_HINT ? n : SR_JSON_MAX_HINT;
    d->depth--;
    return 0;
}

/* One value (after optional whitespace) pushed, or -1 and the stack left
 * for the caller to reset. */
static int sr__value(sr__dec_t *d)
{
    sr__ws(d);
    const char *p = d->p;
    switch (*p) {
    case '{': return sr__object(d);
    case '[': return sr__array(d);
    case '"': return sr__string(d, 0);
    case 't':
        if (memcmp(p, "true", 4) != 0) return -1;
        lua_pushboolean(d->L, 1);
        d->p = p + 4;
        return 0;
    case 'f':
        if (memcmp(p, "false", 5) != 0) return -1;
        lua_pushboolean(d->L, 0);
        d->p = p + 5;
        return 0;
    case 'n':
        if (memcmp(p, "null", 4) != 0) return -1;
        lua_pushlightuserdata(d->L, NULL);
        d->p = p + 4;
        return 0;
    default:
        if (*p == '-' || (*p >= '0' && *p <= '9')) return sr__number(d);
        return -1;
    }
}

/* -- The batch -- */

static char vm_key, strings_key; /* their addresses key the registry */

static int sr__vm_gc(lua_State *L)
{
    sr__vm_t *vm = lua_touserdata(L, 1);
    sr_free(vm->rec);
    sr_free(vm->str);
    vm->rec = vm->str = NULL;
    return 0;
}

/* Pushes the VM's decoder state (made on first use) and its cache's
 * strings table. */
static void sr__vm(lua_State *L, sr__dec_t *d)
{
    lua_pushlightuserdata(L, &vm_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        sr__vm_t *vm = lua_newuserdata(L, sizeof(sr__vm_t));
        memset(vm, 0, sizeof(*vm));
        lua_createtable(L, 0, 1);
        lua_pushcfunction(L, sr__vm_gc);
        lua_setfield(L, -2, "__gc");
        lua_setmetatable(L, -2);
        lua_pushlightuserdata(L, &vm_key);
        lua_pushvalue(L, -2);
        lua_rawset(L, LUA_REGISTRYINDEX);
        lua_pushlightuserdata(L, &strings_key);
        lua_createtable(L, SR_JSON_CACHE_SLOTS, 0);
        lua_rawset(L, LUA_REGISTRYINDEX);
    }
    d->vm = lua_touserdata(L, -1);
    d->cache = d->vm->cache;
    lua_pushlightuserdata(L, &strings_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    d->strings = lua_gettop(L);
}

/* decode_batch(cbatch, out, m, i): decodes records i, i+1, ... (0-based) of
 * the sealed batch cbatch (an sr_batch_t * cdata, borrowed) into out[m+1],
 * out[m+2], ...; stops at the first record it leaves to lua-cjson (see the
 * top of the file). Returns the new m and the index of that record (the
 * batch's n when every record was decoded). Raises only for misuse or when
 * Lua is out of memory. (memcmp of "true"/"false"/"null" and the cache's
 * word loads may read past a record's end into the scratch buffer's
 * slack.) */
int sr_json_decode_batch_lua(lua_State *L)
{
    if (lua_type(L, 1) != SR_LUA_TCDATA) return luaL_argerror(L, 1, "sr_batch_t * expected");
    const sr_batch_t *b = *(sr_batch_t *const *)lua_topointer(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    int m = (int)luaL_checkinteger(L, 3);
    size_t i = (size_t)luaL_checkinteger(L, 4);
    if (!b) return luaL_argerror(L, 1, "NULL batch");
    luaL_checkstack(L, 3 * SR_JSON_FAST_DEPTH + 8, "json");
    int base = lua_gettop(L);
    sr__dec_t d = { .L = L };
    sr__vm(L, &d);
    for (; i < b->n; i++) {
        size_t len = b->off[i + 1] - b->off[i];
        if (sr__grow(&d.vm->rec, &d.vm->rec_cap, len + SR_JSON_SLACK) < 0) break;
        char *rec = d.vm->rec;
        memcpy(rec, b->data + b->off[i], len);
        memset(rec + len, 0, SR_JSON_SLACK);
        d.p = rec;
        d.end = rec + len;
        d.depth = 0;
        if (sr__value(&d) < 0) break;
        sr__ws(&d);
        if (d.p != d.end || lua_type(L, -1) == LUA_TLIGHTUSERDATA) break; /* more after it; a bare null */
        lua_rawseti(L, 2, ++m);
    }
    lua_settop(L, base);
    lua_pushinteger(L, m);
    lua_pushinteger(L, (lua_Integer)i);
    return 2;
}
