/* sr_exchange: the buffers workers swap a batch's keyed elements through
 * (SPEC section 15). One msgpack buffer per (from worker, to worker), plus
 * one side buffer per worker (its dead letters). A worker packs a whole
 * batch's elements in one call, each into the buffer of the worker owning
 * its key's partition (partition p belongs to worker p mod N); the owner
 * unpacks its column once every worker is done. No lock and no queue per
 * element: the pool's one wake-up per phase orders the writes and reads.
 * Elements are triples (a, b, order): a pair or a single value (b nil),
 * and the position that orders the outputs whatever N. Lua module
 * streamrun.cexchange. */
#include "sr_exchange.h"
#include "sr_alloc.h"
#include "sr_mpbuf.h"
#include "sr_msgpack_lua.h"
#include "sr_handle.h"
#include "sr_shard.h"
#include "sr_state.h"
#include "sr_state_lua.h"
#include "sr_words.h"

#include <lauxlib.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define SR_EXCHANGE_MT "streamrun.exchange"
#define SR_EXCHANGE_ABSENT 0 /* the type of the empty extension put writes for no b */

typedef struct sr_exchange {
    int n;
    sr_mpbuf_t *buf;  /* n * n, then n side buffers */
    uint32_t *count;  /* elements in each */
} sr_exchange_t;

typedef struct sr__exchange_ud {
    sr_exchange_t *ex; /* owned */
} sr__exchange_ud_t;

static void sr__exchange_free(sr_exchange_t *ex)
{
    if (!ex) return;
    for (int i = 0; ex->buf && i < ex->n * ex->n + ex->n; i++) sr_free(ex->buf[i].data);
    sr_free(ex->buf);
    sr_free(ex->count);
    sr_free(ex);
}

/* The exchange at idx: the owning handle or its address (a number: other
 * VMs see it so). */
static sr_exchange_t *sr__check(lua_State *L, int idx)
{
    if (lua_type(L, idx) == LUA_TNUMBER) {
        sr_exchange_t *ex = (sr_exchange_t *)(uintptr_t)lua_tonumber(L, idx);
        if (!ex) luaL_error(L, "exchange: no such exchange");
        return ex;
    }
    sr__exchange_ud_t *u = luaL_checkudata(L, idx, SR_EXCHANGE_MT);
    if (!u->ex) luaL_error(L, "exchange: freed");
    return u->ex;
}

static int sr__slot(lua_State *L, sr_exchange_t *ex, int from, int to)
{
    if (from < 0 || from >= ex->n || to < -1 || to >= ex->n) luaL_error(L, "exchange: no worker %d or %d", from, to);
    return to < 0 ? ex->n * ex->n + from : from * ex->n + to;
}

/* cexchange.new(n) -> handle owning an exchange between n workers. */
static int sr__new(lua_State *L)
{
    int n = (int)luaL_checkinteger(L, 1);
    luaL_argcheck(L, n >= 1 && n <= 256, 1, "1 to 256 workers");
    sr__exchange_ud_t *u = lua_newuserdata(L, sizeof(*u));
    u->ex = NULL;
    luaL_getmetatable(L, SR_EXCHANGE_MT);
    lua_setmetatable(L, -2);
    sr_exchange_t *ex = sr_calloc(1, sizeof(*ex));
    if (!ex) goto fail;
    ex->n = n;
    ex->buf = sr_calloc((size_t)(n * n + n), sizeof(*ex->buf));
    ex->count = sr_calloc((size_t)(n * n + n), sizeof(*ex->count));
    if (!ex->buf || !ex->count) goto fail;
    u->ex = ex;
    return 1;
fail:
    sr__exchange_free(ex);
    return luaL_error(L, "exchange: out of memory");
}

static int sr__gc(lua_State *L)
{
    sr__exchange_ud_t *u = luaL_checkudata(L, 1, SR_EXCHANGE_MT);
    sr__exchange_free(u->ex);
    u->ex = NULL;
    return 0;
}

/* handle:address() -> the exchange's address as a number, for the other
 * workers' VMs (the handle keeps owning it). */
static int sr__address(lua_State *L)
{
    lua_pushnumber(L, (lua_Number)(uintptr_t)sr__check(L, 1));
    return 1;
}

/* cexchange.clear(ex, from): empties worker from's row and side buffer
 * (only worker from writes them). */
static int sr__clear(lua_State *L)
{
    sr_exchange_t *ex = sr__check(L, 1);
    int from = (int)luaL_checkinteger(L, 2);
    for (int to = -1; to < ex->n; to++) {
        int s = sr__slot(L, ex, from, to);
        ex->buf[s].len = 0;
        ex->count[s] = 0;
    }
    return 0;
}

static __thread sr_mpbuf_t key_scratch;

/* A merged key of take_folded: its bytes (in an exchange buffer), its
 * folded value and the order of its first element. */
typedef struct sr__folded {
    const char *key;
    uint32_t klen;
    double acc, order;
} sr__folded_t;

/* take_folded's scratch, reused from batch to batch: the merged keys in
 * order of first arrival, and an open-addressing index of them (slot ->
 * entry + 1, 0 empty). */
static __thread struct {
    sr__folded_t *e;
    size_t cap;
    uint32_t *slot;
    size_t nslots;
} fold_scratch;

/* An output's order in merge_outputs: a number, or packed key bytes
 * (at off in the own list's arena, or at key in a buffer). */
typedef struct sr__order {
    double num;
    const char *key;
    size_t off, klen;
    int is_key;
} sr__order_t;

static __thread struct {
    sr__order_t *o;
    size_t cap;
    sr_mpbuf_t arena;
} merge_scratch;

void sr_exchange_thread_free(void)
{
    sr_free(key_scratch.data);
    memset(&key_scratch, 0, sizeof(key_scratch));
    sr_free(fold_scratch.e);
    sr_free(fold_scratch.slot);
    memset(&fold_scratch, 0, sizeof(fold_scratch));
    sr_free(merge_scratch.o);
    sr_free(merge_scratch.arena.data);
    memset(&merge_scratch, 0, sizeof(merge_scratch));
}

/* Packs the order at idx: a number, or (given the key bytes of the key an
 * order {key} names) a string that sorts as the state orders its keys. */
static void sr__pack_order(lua_State *L, int idx, msgpack_packer *pk, const char *key, size_t klen)
{
    if (lua_type(L, idx) == LUA_TNUMBER) {
        msgpack_pack_double(pk, lua_tonumber(L, idx));
    } else {
        msgpack_pack_str(pk, klen);
        msgpack_pack_str_body(pk, key, klen);
    }
}

/* Sets b to the string s packed as msgpack-c's msgpack_pack_str and
 * _str_body pack it (what sr_mplua_pack_key gives for a string). Returns
 * 0, or -1 when out of memory. */
static int sr__str_key(sr_mpbuf_t *b, const char *s, size_t len)
{
    unsigned char h[5];
    size_t hl;
    if (len < 32) {
        h[0] = (unsigned char)(0xa0 | len);
        hl = 1;
    } else if (len < 256) {
        h[0] = 0xd9;
        h[1] = (unsigned char)len;
        hl = 2;
    } else if (len < 65536) {
        h[0] = 0xda;
        h[1] = (unsigned char)(len >> 8);
        h[2] = (unsigned char)len;
        hl = 3;
    } else {
        h[0] = 0xdb;
        for (int i = 0; i < 4; i++) h[1 + i] = (unsigned char)(len >> (24 - 8 * i));
        hl = 5;
    }
    b->len = 0;
    if (sr_mpbuf_write(b, (const char *)h, hl) != 0) return -1;
    return sr_mpbuf_write(b, s, len);
}

/* Notes element i as left out for why: in the tables at bad (indices) and
 * bad + 1 (reasons), made on the first. */
static void sr__left_out(lua_State *L, int *bad, lua_Integer i, const char *why)
{
    if (!*bad) {
        lua_newtable(L);
        lua_newtable(L);
        /* (below the element's three values on the stack) */
        lua_insert(L, -5);
        lua_insert(L, -5);
        *bad = lua_gettop(L) - 4;
    }
    int n = (int)lua_objlen(L, *bad) + 1;
    lua_pushinteger(L, i);
    lua_rawseti(L, *bad, n);
    lua_pushstring(L, why);
    lua_rawseti(L, *bad + 1, n);
}

/* Writes the msgpack header of a string of len bytes at q; returns its
 * bytes (at most 5). */
static size_t sr__put_str_head(unsigned char *q, size_t len)
{
    if (len < 32) { q[0] = (unsigned char)(0xa0 | len); return 1; }
    if (len < 256) { q[0] = 0xd9; q[1] = (unsigned char)len; return 2; }
    if (len < 65536) { q[0] = 0xda; q[1] = (unsigned char)(len >> 8); q[2] = (unsigned char)len; return 3; }
    q[0] = 0xdb;
    for (int i = 0; i < 4; i++) q[1 + i] = (unsigned char)(len >> (24 - 8 * i));
    return 5;
}

/* Writes the double d as msgpack float 64 at q; returns the bytes (9). */
static size_t sr__put_double(unsigned char *q, double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof(u));
    q[0] = 0xcb;
    for (int i = 0; i < 8; i++) q[1 + i] = (unsigned char)(u >> (56 - 8 * i));
    return 9;
}

/* Writes the number d at q as sr_mplua_pack packs a number (a whole one as
 * the smallest integer, else a float 64); returns the bytes (at most 9). */
static size_t sr__put_number(unsigned char *q, double d)
{
    if (!(d == floor(d) && d >= -9.2233720368547758e18 && d < 9.2233720368547758e18)) return sr__put_double(q, d);
    int64_t v = (int64_t)d;
    if (v >= 0 && v < 128) { q[0] = (unsigned char)v; return 1; }
    if (v < 0 && v >= -32) { q[0] = (unsigned char)(int8_t)v; return 1; }
    unsigned char tag;
    int bytes;
    if (v >= 0) {
        if (v < 256) tag = 0xcc, bytes = 1;
        else if (v < 65536) tag = 0xcd, bytes = 2;
        else if (v <= 0xffffffffLL) tag = 0xce, bytes = 4;
        else tag = 0xcf, bytes = 8;
    } else {
        if (v >= -128) tag = 0xd0, bytes = 1;
        else if (v >= -32768) tag = 0xd1, bytes = 2;
        else if (v >= -2147483648LL) tag = 0xd2, bytes = 4;
        else tag = 0xd3, bytes = 8;
    }
    uint64_t u = (uint64_t)v;
    q[0] = tag;
    for (int i = 0; i < bytes; i++) q[1 + i] = (unsigned char)(u >> (8 * (bytes - 1 - i)));
    return (size_t)bytes + 1;
}

/* Appends to buffer (from, to) the key packed in key_scratch with a number
 * value, its order and, when pos is given, a record offset, in one piece:
 * what msgpack-c's packer would write for them. Returns 0, or -1 when out
 * of memory. */
static int sr__put_keyed_number(sr_exchange_t *ex, int from, int to, double value, double order, const double *pos)
{
    sr_mpbuf_t *b = &ex->buf[from * ex->n + to];
    unsigned char *q = (unsigned char *)sr_mpbuf_reserve(b, key_scratch.len + 27);
    if (!q) return -1;
    memcpy(q, key_scratch.data, key_scratch.len);
    size_t w = key_scratch.len;
    w += sr__put_number(q + w, value);
    w += sr__put_double(q + w, order);
    if (pos) w += sr__put_double(q + w, *pos);
    b->len += w;
    ex->count[from * ex->n + to]++;
    return 0;
}

/* cexchange.scatter(ex, from, nparts, a, b, o, n [, p [, keep]]) -> nil, or
 * bad and whys: elements 1..n (key a[i], value b[i], order o[i], and with p
 * the record offset p[i]: take with width 4) each to the worker that owns
 * the partition of its key. An element whose value cannot be packed is
 * left out: bad lists the indices of those, whys what each value holds
 * (e.g. "a function"), for the caller's dead letters. A string key with a
 * number value and order (a word and its count) is written in one piece.
 * With keep (a table; p nil), an element with a number value and order,
 * of a partition worker from owns itself, is not written: its index goes
 * into keep (keep.n of them), for the caller to read from a, b and o. */
static int sr__scatter(lua_State *L)
{
    sr_exchange_t *ex = sr__check(L, 1);
    int from = (int)luaL_checkinteger(L, 2);
    int nparts = (int)luaL_checkinteger(L, 3);
    luaL_checktype(L, 4, LUA_TTABLE);
    luaL_checktype(L, 5, LUA_TTABLE);
    luaL_checktype(L, 6, LUA_TTABLE);
    lua_Integer n = luaL_checkinteger(L, 7);
    int with_pos = lua_istable(L, 8);
    int keep = !with_pos && lua_istable(L, 9);
    int nkeep = 0;
    luaL_argcheck(L, nparts >= 1, 3, "partitions");
    sr__slot(L, ex, from, -1);
    msgpack_packer kp, pk[256];
    for (int to = 0; to < ex->n; to++) msgpack_packer_init(&pk[to], &ex->buf[from * ex->n + to], sr_mpbuf_write);
    int bad = 0;
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, 4, (int)i);
        lua_rawgeti(L, 5, (int)i);
        lua_rawgeti(L, 6, (int)i);
        if (lua_type(L, -3) == LUA_TSTRING) {
            /* (A string key, the common case: its bytes as msgpack-c packs
             * them, written at once.) */
            size_t klen;
            const char *k = lua_tolstring(L, -3, &klen);
            if (sr__str_key(&key_scratch, k, klen) != 0) return luaL_error(L, "exchange: out of memory");
        } else {
            sr_mpbuf_packer(&key_scratch, &kp);
            sr_mplua_pack_key(L, -3, &kp);
        }
        int to = sr_state_partition(key_scratch.data, key_scratch.len, nparts) % ex->n;
        sr_mpbuf_t *b = &ex->buf[from * ex->n + to];
        if (lua_type(L, -2) == LUA_TNUMBER && lua_type(L, -1) == LUA_TNUMBER) {
            if (keep && to == from) {
                lua_pop(L, 3);
                lua_pushinteger(L, i);
                lua_rawseti(L, 9, ++nkeep);
                continue;
            }
            double pos = -1;
            if (with_pos) {
                lua_rawgeti(L, 8, (int)i);
                if (lua_isnumber(L, -1)) pos = lua_tonumber(L, -1);
                lua_pop(L, 1);
            }
            if (sr__put_keyed_number(ex, from, to, lua_tonumber(L, -2), lua_tonumber(L, -1), with_pos ? &pos : NULL) != 0)
                return luaL_error(L, "exchange: out of memory");
            lua_pop(L, 3);
            continue;
        }
        size_t mark = b->len;
        if (sr_mpbuf_write(b, key_scratch.data, key_scratch.len) != 0) return luaL_error(L, "exchange: out of memory");
        const char *why = sr_mplua_pack(L, -2, &pk[to], 1);
        if (why) {
            b->len = mark;
            sr__left_out(L, &bad, i, why);
            lua_pop(L, 3);
            continue;
        }
        sr__pack_order(L, -1, &pk[to], key_scratch.data, key_scratch.len);
        if (with_pos) {
            lua_rawgeti(L, 8, (int)i);
            msgpack_pack_double(&pk[to], lua_isnumber(L, -1) ? lua_tonumber(L, -1) : -1);
            lua_pop(L, 1);
        }
        ex->count[from * ex->n + to]++;
        lua_pop(L, 3);
    }
    if (keep) {
        lua_pushinteger(L, nkeep);
        lua_setfield(L, 9, "n");
    }
    if (!bad) return 0;
    lua_pushvalue(L, bad);
    lua_pushvalue(L, bad + 1);
    return 2;
}

/* cexchange.scatter_words(ex, from, nparts, wc, span): the distinct words
 * of a built-in word count (wc: the address of an sr_wordcount_t), as
 * scatter writes a string key with its count: word i (0-based, in order of
 * first appearance) with order from * span + i + 1. No Lua string is made
 * for a word. */
static int sr__scatter_words(lua_State *L)
{
    sr_exchange_t *ex = sr__check(L, 1);
    int from = (int)luaL_checkinteger(L, 2);
    int nparts = (int)luaL_checkinteger(L, 3);
    const sr_wordcount_t *wc = (const sr_wordcount_t *)(uintptr_t)luaL_checknumber(L, 4);
    double base = (double)from * luaL_checknumber(L, 5);
    luaL_argcheck(L, nparts >= 1, 3, "partitions");
    sr__slot(L, ex, from, -1);
    for (size_t i = 0; i < wc->n; i++) {
        const sr_wordcount_word_t *w = &wc->word[i];
        if (sr__str_key(&key_scratch, wc->data + w->off, w->len) != 0) return luaL_error(L, "exchange: out of memory");
        int to = sr_state_partition(key_scratch.data, key_scratch.len, nparts) % ex->n;
        if (sr__put_keyed_number(ex, from, to, w->count, base + (double)(i + 1), NULL) != 0)
            return luaL_error(L, "exchange: out of memory");
    }
    return 0;
}

/* cexchange.put(ex, from, to, a, b, o, n) -> nil, or bad and whys (as
 * scatter: the elements left out): elements 1..n (b[i] nil: a single
 * value; o[i] a number, or {key} or true (a[i] is the key): the key's
 * bytes, to order by as the state orders keys) to worker to (-1: from's
 * side buffer). */
static int sr__put(lua_State *L)
{
    sr_exchange_t *ex = sr__check(L, 1);
    int s = sr__slot(L, ex, (int)luaL_checkinteger(L, 2), (int)luaL_checkinteger(L, 3));
    luaL_checktype(L, 4, LUA_TTABLE);
    luaL_checktype(L, 5, LUA_TTABLE);
    luaL_checktype(L, 6, LUA_TTABLE);
    lua_Integer n = luaL_checkinteger(L, 7);
    sr_mpbuf_t *b = &ex->buf[s];
    msgpack_packer pk, kp;
    msgpack_packer_init(&pk, b, sr_mpbuf_write);
    int bad = 0;
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, 4, (int)i);
        lua_rawgeti(L, 5, (int)i);
        lua_rawgeti(L, 6, (int)i);
        int to = lua_type(L, -1);
        if (lua_type(L, -3) == LUA_TSTRING && lua_type(L, -2) == LUA_TNUMBER
            && (to == LUA_TNUMBER || to == LUA_TBOOLEAN)) {
            /* (A string key with a number, ordered by a number or by the
             * key itself -- a word and its total: written in one piece;
             * a string's packed bytes are its key's.) */
            size_t klen;
            const char *k = lua_tolstring(L, -3, &klen);
            if (sr__str_key(&key_scratch, k, klen) != 0) return luaL_error(L, "exchange: out of memory");
            size_t kl = key_scratch.len;
            unsigned char *q = (unsigned char *)sr_mpbuf_reserve(b, 2 * kl + 19);
            if (!q) return luaL_error(L, "exchange: out of memory");
            memcpy(q, key_scratch.data, kl);
            size_t w = kl;
            w += sr__put_number(q + w, lua_tonumber(L, -2));
            if (to == LUA_TNUMBER) {
                w += sr__put_double(q + w, lua_tonumber(L, -1));
            } else {
                /* (the order: a string of the key's packed bytes, as
                 * sr__pack_order writes it) */
                w += sr__put_str_head(q + w, kl);
                memcpy(q + w, key_scratch.data, kl);
                w += kl;
            }
            b->len += w;
            ex->count[s]++;
            lua_pop(L, 3);
            continue;
        }
        size_t mark = b->len;
        const char *why = sr_mplua_pack(L, -3, &pk, 1);
        if (!why) {
            if (lua_isnil(L, -2)) msgpack_pack_ext(&pk, 0, SR_EXCHANGE_ABSENT);
            else why = sr_mplua_pack(L, -2, &pk, 1);
        }
        if (why) {
            b->len = mark;
            sr__left_out(L, &bad, i, why);
            lua_pop(L, 3);
            continue;
        }
        const char *key = NULL;
        size_t klen = 0;
        if (lua_type(L, -1) == LUA_TTABLE || lua_type(L, -1) == LUA_TBOOLEAN) {
            /* ({key}, or true: a's own key) */
            if (lua_type(L, -1) == LUA_TTABLE) lua_rawgeti(L, -1, 1);
            else lua_pushvalue(L, -3);
            sr_mpbuf_packer(&key_scratch, &kp);
            sr_mplua_pack_key(L, -1, &kp);
            lua_pop(L, 1);
            key = key_scratch.data;
            klen = key_scratch.len;
        } else if (lua_type(L, -1) != LUA_TNUMBER) {
            return luaL_error(L, "exchange: order %d is neither a number, true nor {key}", (int)i);
        }
        sr__pack_order(L, -1, &pk, key, klen);
        ex->count[s]++;
        lua_pop(L, 3);
    }
    if (!bad) return 0;
    lua_pushvalue(L, bad);
    lua_pushvalue(L, bad + 1);
    return 2;
}

/* cexchange.take(ex, from, to [, width [, a, b, o [, p], m]]) -> a, b, o,
 * [p,] n: what worker from put for worker to (to -1: from's side buffer),
 * in the order put; width 4: what scatter put with offsets. Each value is
 * decoded straight from its bytes onto the stack (sr_mplua_push_next).
 * Given tables after width, the elements are appended to them, after the
 * m already there (p is 0-based: element i of the whole at p[i - 1]), and
 * n counts them all. */
static int sr__take(lua_State *L)
{
    sr_exchange_t *ex = sr__check(L, 1);
    int s = sr__slot(L, ex, (int)luaL_checkinteger(L, 2), (int)luaL_checkinteger(L, 3));
    int n = (int)ex->count[s];
    int width = (int)luaL_optinteger(L, 4, 3);
    luaL_argcheck(L, width == 3 || width == 4, 4, "3 or 4");
    int i = 0, into = lua_istable(L, 5);
    if (into) {
        for (int f = 0; f < width; f++) luaL_checktype(L, 5 + f, LUA_TTABLE);
        i = (int)luaL_checkinteger(L, 5 + width);
        lua_settop(L, 4 + width);
    } else {
        lua_settop(L, 4);
        for (int f = 0; f < width; f++) lua_createtable(L, n, 0);
    }
    const char *p = ex->buf[s].data, *end = p + ex->buf[s].len;
    int at = 0;
    while (p < end) {
        if (at == 0) i++;
        /* (nil stands for cjson.null, which a value may be: an empty
         * extension marks a single value's absent b, left nil.) */
        if ((unsigned char)p[0] == 0xc7 && end - p >= 3 && p[1] == 0) {
            p += 3;
        } else {
            size_t used = sr_mplua_push_next(L, p, (size_t)(end - p));
            if (!used) return luaL_error(L, "exchange: malformed buffer");
            p += used;
            lua_rawseti(L, 5 + at, into && at == 3 ? i - 1 : i);
        }
        at = (at + 1) % width;
    }
    lua_pushinteger(L, i);
    return width + 1;
}

static int sr__orders_room(size_t need)
{
    if (need <= merge_scratch.cap) return 0;
    size_t cap = merge_scratch.cap ? merge_scratch.cap : 1024;
    while (cap < need) cap *= 2;
    sr__order_t *o = sr_realloc(merge_scratch.o, cap * sizeof(*o));
    if (!o) return -1;
    merge_scratch.o = o;
    merge_scratch.cap = cap;
    return 0;
}

/* Whether order x comes before y: numbers (first arrival) and key bytes
 * each ascending (bytes, then length, as Lua compares strings); keys
 * before numbers when keys_first. */
static int sr__before(const sr__order_t *x, const sr__order_t *y, int keys_first)
{
    if (x->is_key != y->is_key) return x->is_key == keys_first;
    if (!x->is_key) return x->num < y->num;
    size_t m = x->klen < y->klen ? x->klen : y->klen;
    int c = memcmp(x->key, y->key, m);
    if (c != 0) return c < 0;
    return x->klen < y->klen;
}

static int sr__read_str(const unsigned char **p, const unsigned char *end, const char **s, uint32_t *n);
static int sr__read_number(const unsigned char **p, const unsigned char *end, double *out);

/* cexchange.merge_outputs(ex, n, keys_first, a, b, o, m) -> a, b, total:
 * the outputs of owners 0 .. n-1, each list in order, merged into one
 * batch by order (ties to the lower worker). Owner 0's are a, b, o, m
 * (o[i] a number, true: a[i] is its key, or {key}); the others' what
 * each put to worker 0 (orders as put writes them). Numbers are first
 * arrivals, keys order as the state orders its keys: update_state_by_key
 * puts its kept keys (keys_first) before the new ones, map_with_state its
 * timed-out keys after its records. */
static int sr__merge_outputs(lua_State *L)
{
    sr_exchange_t *ex = sr__check(L, 1);
    int n = (int)luaL_checkinteger(L, 2);
    int keys_first = lua_toboolean(L, 3);
    luaL_checktype(L, 4, LUA_TTABLE);
    luaL_checktype(L, 5, LUA_TTABLE);
    luaL_checktype(L, 6, LUA_TTABLE);
    int n0 = (int)luaL_checkinteger(L, 7);
    luaL_argcheck(L, n >= 1 && n <= ex->n, 2, "workers");
    size_t total = (size_t)(n0 > 0 ? n0 : 0);
    size_t start[257];
    start[0] = 0;
    for (int w = 1; w < n; w++) {
        start[w] = total;
        total += ex->count[sr__slot(L, ex, w, 0)];
    }
    start[n] = total;
    if (sr__orders_room(total + 1) != 0) return luaL_error(L, "exchange: out of memory");
    sr__order_t *O = merge_scratch.o;
    sr_mpbuf_t *arena = &merge_scratch.arena;
    arena->len = 0;
    msgpack_packer kp;
    msgpack_packer_init(&kp, arena, sr_mpbuf_write);
    /* Owner 0's orders (keys packed into the arena: pointers once it is
     * done growing). */
    for (int i = 1; i <= n0; i++) {
        sr__order_t *x = &O[i - 1];
        lua_rawgeti(L, 6, i);
        int t = lua_type(L, -1);
        if (t == LUA_TNUMBER) {
            x->is_key = 0;
            x->num = lua_tonumber(L, -1);
        } else if (t == LUA_TBOOLEAN || t == LUA_TTABLE) {
            if (t == LUA_TTABLE) lua_rawgeti(L, -1, 1);
            else lua_rawgeti(L, 4, i);
            x->is_key = 1;
            x->off = arena->len;
            sr_mplua_pack_key(L, -1, &kp);
            x->klen = arena->len - x->off;
            lua_pop(L, 1);
        } else {
            return luaL_error(L, "exchange: order %d is neither a number, true nor {key}", i);
        }
        lua_pop(L, 1);
    }
    for (int i = 0; i < n0; i++)
        if (O[i].is_key) O[i].key = arena->data + O[i].off;
    /* The others' elements: a and b onto tables of their own (at 8, 9, ...),
     * orders read where they lie. */
    int base = lua_gettop(L) + 1;
    luaL_checkstack(L, 2 * n + 8, "exchange");
    for (int w = 1; w < n; w++) {
        int s = sr__slot(L, ex, w, 0);
        int cnt = (int)ex->count[s];
        lua_createtable(L, cnt, 0);
        lua_createtable(L, cnt, 0);
        const unsigned char *p = (const unsigned char *)ex->buf[s].data, *end = p + ex->buf[s].len;
        int i = 0;
        while (p < end) {
            if (i >= cnt) return luaL_error(L, "exchange: malformed buffer");
            i++;
            size_t used = sr_mplua_push_next(L, (const char *)p, (size_t)(end - p));
            if (!used) return luaL_error(L, "exchange: malformed buffer");
            p += used;
            lua_rawseti(L, -3, i);
            if (p < end && p[0] == 0xc7 && end - p >= 3 && p[1] == 0) {
                p += 3; /* (no b) */
            } else {
                used = sr_mplua_push_next(L, (const char *)p, (size_t)(end - p));
                if (!used) return luaL_error(L, "exchange: malformed buffer");
                p += used;
                lua_rawseti(L, -2, i);
            }
            sr__order_t *x = &O[start[w] + (size_t)i - 1];
            uint32_t klen;
            if (p < end && ((p[0] & 0xe0) == 0xa0 || p[0] == 0xd9 || p[0] == 0xda || p[0] == 0xdb)) {
                if (sr__read_str(&p, end, &x->key, &klen) != 0) return luaL_error(L, "exchange: malformed buffer");
                x->is_key = 1;
                x->klen = klen;
            } else {
                if (sr__read_number(&p, end, &x->num) != 0) return luaL_error(L, "exchange: malformed buffer");
                x->is_key = 0;
            }
        }
        if (i != cnt) return luaL_error(L, "exchange: malformed buffer");
    }
    lua_createtable(L, (int)total, 0);
    lua_createtable(L, (int)total, 0);
    int oa = lua_gettop(L) - 1, ob = oa + 1;
    size_t at[256];
    for (int w = 0; w < n; w++) at[w] = start[w];
    for (size_t m = 1; m <= total; m++) {
        int best = -1;
        for (int w = 0; w < n; w++) {
            if (at[w] >= start[w + 1]) continue;
            if (best < 0 || sr__before(&O[at[w]], &O[at[best]], keys_first)) best = w;
        }
        int i = (int)(at[best] - start[best]) + 1;
        int ta = best == 0 ? 4 : base + 2 * (best - 1), tb = best == 0 ? 5 : ta + 1;
        lua_rawgeti(L, ta, i);
        lua_rawseti(L, oa, (int)m);
        lua_rawgeti(L, tb, i);
        lua_rawseti(L, ob, (int)m);
        at[best]++;
    }
    lua_pushinteger(L, (lua_Integer)total);
    return 3;
}

/* Reads the msgpack string at *p (end: the buffer's end): sets *s and *n
 * and advances *p. Returns 0, or -1 when it is no string. */
static int sr__read_str(const unsigned char **p, const unsigned char *end, const char **s, uint32_t *n)
{
    const unsigned char *q = *p;
    uint32_t len;
    if (q >= end) return -1;
    if ((q[0] & 0xe0) == 0xa0) {
        len = q[0] & 0x1f;
        q += 1;
    } else if (q[0] == 0xd9 && end - q >= 2) {
        len = q[1];
        q += 2;
    } else if (q[0] == 0xda && end - q >= 3) {
        len = (uint32_t)q[1] << 8 | q[2];
        q += 3;
    } else if (q[0] == 0xdb && end - q >= 5) {
        len = (uint32_t)q[1] << 24 | (uint32_t)q[2] << 16 | (uint32_t)q[3] << 8 | q[4];
        q += 5;
    } else {
        return -1;
    }
    if ((size_t)(end - q) < len) return -1;
    *s = (const char *)q;
    *n = len;
    *p = q + len;
    return 0;
}

static uint64_t sr__be(const unsigned char *q, int bytes)
{
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++) v = v << 8 | q[i];
    return v;
}

/* Reads the msgpack number at *p as sr_mplua_push_object would push it.
 * Returns 0, or -1 when it is no number. */
static int sr__read_number(const unsigned char **p, const unsigned char *end, double *out)
{
    const unsigned char *q = *p;
    if (q >= end) return -1;
    unsigned c = q[0];
    size_t left = (size_t)(end - q) - 1;
    if (c <= 0x7f) { *out = c; *p = q + 1; return 0; }
    if (c >= 0xe0) { *out = (int8_t)c; *p = q + 1; return 0; }
    int bytes;
    switch (c) {
    case 0xcc: case 0xd0: bytes = 1; break;
    case 0xcd: case 0xd1: bytes = 2; break;
    case 0xce: case 0xd2: case 0xca: bytes = 4; break;
    case 0xcf: case 0xd3: case 0xcb: bytes = 8; break;
    default: return -1;
    }
    if (left < (size_t)bytes) return -1;
    uint64_t v = sr__be(q + 1, bytes);
    if (c == 0xca) {
        uint32_t u = (uint32_t)v;
        float f;
        memcpy(&f, &u, sizeof(f));
        *out = f;
    } else if (c == 0xcb) {
        double d;
        memcpy(&d, &v, sizeof(d));
        *out = d;
    } else if (c >= 0xd0) { /* signed: sign-extend from its width */
        int shift = 64 - 8 * bytes;
        *out = (double)((int64_t)(v << shift) >> shift);
    } else {
        *out = (double)v;
    }
    *p = q + 1 + bytes;
    return 0;
}

/* Makes room for need keys; returns the index's slots to use (a power of
 * two, all empty), or 0 when out of memory. (Only those are cleared: a
 * batch far larger than the others leaves a large index behind.) */
static size_t sr__fold_grow(size_t need)
{
    if (need > fold_scratch.cap) {
        size_t cap = fold_scratch.cap ? fold_scratch.cap : 1024;
        while (cap < need) cap *= 2;
        sr__folded_t *e = sr_realloc(fold_scratch.e, cap * sizeof(*e));
        if (!e) return 0;
        fold_scratch.e = e;
        fold_scratch.cap = cap;
    }
    size_t nslots = 2048;
    while (nslots < need * 2) nslots *= 2;
    if (nslots > fold_scratch.nslots) {
        uint32_t *slot = sr_realloc(fold_scratch.slot, nslots * sizeof(*slot));
        if (!slot) return 0;
        fold_scratch.slot = slot;
        fold_scratch.nslots = nslots;
    }
    memset(fold_scratch.slot, 0, nslots * sizeof(*fold_scratch.slot));
    return nslots;
}

/* cexchange.take_folded(ex, to, fold) -> keys, values, orders, n; or nil
 * when an element is not a string key with a number value and a number
 * order (the caller then takes the elements as they are). What workers 0,
 * 1, ... scattered for worker to (width 3), merged by key as the Lua merge
 * does: keys in order of first arrival, each with the order of its first
 * element and its values folded in arrival order by fold ("add", "min" or
 * "max", as streamrun.ops' FOLDS). The exchange is only read. */
static int sr__take_folded(lua_State *L)
{
    sr_exchange_t *ex = sr__check(L, 1);
    int to = (int)luaL_checkinteger(L, 2);
    const char *fold = luaL_checkstring(L, 3);
    int op = strcmp(fold, "add") == 0 ? 0 : strcmp(fold, "min") == 0 ? 1 : strcmp(fold, "max") == 0 ? 2 : -1;
    luaL_argcheck(L, op >= 0, 3, "add, min or max");
    size_t total = 0;
    for (int from = 0; from < ex->n; from++) total += ex->count[sr__slot(L, ex, from, to)];
    size_t nslots = sr__fold_grow(total + 1);
    if (!nslots) return luaL_error(L, "exchange: out of memory");
    sr__folded_t *E = fold_scratch.e;
    uint32_t *slot = fold_scratch.slot;
    size_t mask = nslots - 1, nk = 0;
    for (int from = 0; from < ex->n; from++) {
        sr_mpbuf_t *b = &ex->buf[sr__slot(L, ex, from, to)];
        const unsigned char *p = (const unsigned char *)b->data, *end = p + b->len;
        while (p < end) {
            const char *key;
            uint32_t klen;
            double v, order;
            if (sr__read_str(&p, end, &key, &klen) != 0 || sr__read_number(&p, end, &v) != 0
                || sr__read_number(&p, end, &order) != 0) {
                lua_pushnil(L);
                return 1;
            }
            size_t h = (size_t)sr_state_hash(key, klen) & mask;
            for (;;) {
                uint32_t at = slot[h];
                if (at == 0) {
                    if (nk >= total) return luaL_error(L, "exchange: malformed buffer");
                    E[nk] = (sr__folded_t){ key, klen, v, order };
                    slot[h] = (uint32_t)++nk;
                    break;
                }
                sr__folded_t *x = &E[at - 1];
                if (x->klen == klen && memcmp(x->key, key, klen) == 0) {
                    if (op == 0) x->acc = x->acc + v;
                    else if (op == 1) x->acc = v < x->acc ? v : x->acc;
                    else x->acc = v > x->acc ? v : x->acc;
                    break;
                }
                h = (h + 1) & mask;
            }
        }
    }
    lua_createtable(L, (int)nk, 0);
    lua_createtable(L, (int)nk, 0);
    lua_createtable(L, (int)nk, 0);
    for (size_t i = 0; i < nk; i++) {
        lua_pushlstring(L, E[i].key, E[i].klen);
        lua_rawseti(L, -4, (int)i + 1);
        lua_pushnumber(L, E[i].acc);
        lua_rawseti(L, -3, (int)i + 1);
        lua_pushnumber(L, E[i].order);
        lua_rawseti(L, -2, (int)i + 1);
    }
    lua_pushinteger(L, (lua_Integer)nk);
    return 4;
}

/* cexchange.shard(state, n, k) -> a new state handle: worker k's shard of
 * state among n workers (its partitions p with p mod n == k). */
static int sr__shard(lua_State *L)
{
    sr_state_t *src = sr_state_lua_get(L, 1);
    int n = (int)luaL_checkinteger(L, 2), k = (int)luaL_checkinteger(L, 3);
    luaL_argcheck(L, src != NULL, 1, "a state handle");
    luaL_argcheck(L, n >= 1 && k >= 0 && k < n, 3, "a worker of n");
    sr_state_t *st = sr_shard_of(src, n, k);
    if (!st) return luaL_error(L, "state: out of memory");
    sr_state_lua_push(L, st);
    return 1;
}

/* cexchange.gather(shards) -> a new state handle holding copies of the
 * entries of the shards (an array of handles, one per worker), each from
 * its own partitions, with their timeouts: the stage's state as one. */
static int sr__gather(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    int n = (int)lua_objlen(L, 1);
    luaL_argcheck(L, n >= 1 && n <= 256, 1, "1 to 256 shards");
    sr_state_t *shards[256];
    int64_t now = 0;
    for (int k = 0; k < n; k++) {
        lua_rawgeti(L, 1, k + 1);
        shards[k] = sr_state_lua_get(L, -1);
        lua_pop(L, 1);
        if (!shards[k]) return luaL_error(L, "gather: shard %d is not a state handle", k + 1);
        if (shards[k]->wheel.now > now) now = shards[k]->wheel.now;
    }
    sr_state_lua_push(L, NULL); /* frees the state if the gathering raises */
    sr_state_t *dst = sr_state_new(shards[0]->name, shards[0]->nparts, shards[0]->timeout_ms, now);
    if (!dst) return luaL_error(L, "state: out of memory");
    ((sr_handle_t *)lua_touserdata(L, -1))->obj = dst;
    if (sr_shard_gather(dst, shards, n) < 0) return luaL_error(L, "state: out of memory");
    return 1;
}

/* cexchange.adopt_state(address) -> a handle owning the state at address
 * (a number: how a worker's VM is told of its shard). The VM detaches it
 * before it closes: the shard's owner is worker 0's handle. */
static int sr__adopt_state(lua_State *L)
{
    sr_state_t *st = (sr_state_t *)(uintptr_t)luaL_checknumber(L, 1);
    luaL_argcheck(L, st != NULL, 1, "a state's address");
    sr_state_lua_push(L, st);
    return 1;
}

/* cexchange.key_orders(o, n): each order o[i] that is {key} becomes the
 * string put() sends for it (the key's bytes), in one call per batch. */
static int sr__key_orders(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_Integer n = luaL_checkinteger(L, 2);
    msgpack_packer kp;
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, 1, (int)i);
        if (lua_type(L, -1) == LUA_TTABLE) {
            lua_rawgeti(L, -1, 1);
            sr_mpbuf_packer(&key_scratch, &kp);
            sr_mplua_pack_key(L, -1, &kp);
            lua_pushlstring(L, key_scratch.data, key_scratch.len);
            lua_rawseti(L, 1, (int)i);
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    return 0;
}

/* cexchange.partition(key, nparts) -> the partition (0-based) of a key. */
static int sr__partition(lua_State *L)
{
    msgpack_packer kp;
    sr_mpbuf_packer(&key_scratch, &kp);
    sr_mplua_pack_key(L, 1, &kp);
    lua_pushinteger(L, sr_state_partition(key_scratch.data, key_scratch.len, (int)luaL_checkinteger(L, 2)));
    return 1;
}

int luaopen_streamrun_cexchange(lua_State *L)
{
    static const luaL_Reg methods[] = { { "address", sr__address }, { NULL, NULL } };
    static const luaL_Reg fns[] = { { "new", sr__new }, { "clear", sr__clear }, { "scatter", sr__scatter },
                                    { "scatter_words", sr__scatter_words },
                                    { "put", sr__put }, { "take", sr__take },
                                    { "take_folded", sr__take_folded },
                                    { "shard", sr__shard }, { "gather", sr__gather },
                                    { "adopt_state", sr__adopt_state }, { "partition", sr__partition },
                                    { "key_orders", sr__key_orders }, { "merge_outputs", sr__merge_outputs },
                                    { NULL, NULL } };
    if (luaL_newmetatable(L, SR_EXCHANGE_MT)) {
        lua_pushcfunction(L, sr__gc);
        lua_setfield(L, -2, "__gc");
        lua_newtable(L);
        luaL_register(L, NULL, methods);
        lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 1);
    lua_newtable(L);
    luaL_register(L, NULL, fns);
    return 1;
}
