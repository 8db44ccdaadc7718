/* test_exchange: cexchange.take_folded, the owners' merge of partials in C,
 * gives what take() and the Lua merge give -- keys in order of first
 * arrival over workers 0, 1, ..., values folded in arrival order, the
 * order of each key's first element -- for every encoding scatter writes
 * (string headers of each length class, integers of each width, doubles),
 * and nil when an element is not a string key with a number. scatter's
 * packing of string keys sends each to the owner of its partition.
 * merge_outputs merges the owners' outputs as the Lua merge by order
 * did (numbers, then keys by their packed bytes, or keys first), and take
 * gives back every kind of value put. scatter_words sends a word count's
 * words as scatter sends the same strings with their counts. With keep,
 * scatter leaves the sender's own elements with numbers out of its buffer
 * and lists their indices. */
#include "sr_test.h"

#include "sr_exchange.h"
#include "sr_words.h"

#include <stdio.h>
#include <string.h>

#include <lauxlib.h>
#include <lualib.h>

/* The Lua side of the test: returns nothing, or raises what differs. */
static const char *CHECK =
    "local cx = ...\n"
    "local function merge(ex, to, n, fold)\n"
    "  local K, V, O, first, nk = {}, {}, {}, {}, 0\n"
    "  for from = 0, n - 1 do\n"
    "    local A, B, OO, c = cx.take(ex, from, to)\n"
    "    for j = 1, c do\n"
    "      local k, v = A[j], B[j]\n"
    "      local at = first[k]\n"
    "      if not at then\n"
    "        nk = nk + 1; K[nk], V[nk], O[nk], first[k] = k, v, OO[j], nk\n"
    "      elseif fold == 'add' then V[at] = V[at] + v\n"
    "      elseif fold == 'min' then if v < V[at] then V[at] = v end\n"
    "      else if v > V[at] then V[at] = v end end\n"
    "    end\n"
    "  end\n"
    "  return K, V, O, nk\n"
    "end\n"
    "local function same(x, y, what)\n"
    "  if x ~= y and not (x ~= x and y ~= y) then error(what .. ': ' .. tostring(x) .. ' ~= ' .. tostring(y), 0) end\n"
    "end\n"
    "local keys = { 'a', ('b'):rep(31), ('c'):rep(32), ('d'):rep(255), ('e'):rep(256), ('f'):rep(65536), '', '\\0z' }\n"
    "local values = { 0, 1, 127, 128, 255, 256, 65535, 65536, 2^32, 2^53, -1, -32, -33, -128, -129, -32768,\n"
    "                 -32769, -2^31, -2^31 - 1, -2^53, 0.5, -0.25, 1e300, -1e-300, 1/0, -1/0 }\n"
    "for n = 1, 3 do\n"
    "  local ex = cx.new(n)\n"
    "  local m = 0\n"
    "  for from = 0, n - 1 do\n"
    "    local A, B, O = {}, {}, {}\n"
    "    for i = 1, 40 do\n"
    "      m = m + 1\n"
    "      A[i], B[i], O[i] = keys[(i * 7 + from) % #keys + 1], values[(i * 5 + from * 3) % #values + 1], from * 2^32 + i\n"
    "    end\n"
    "    cx.clear(ex, from)\n"
    "    assert(cx.scatter(ex, from, 8, A, B, O, #A) == nil)\n"
    "  end\n"
    "  for _, fold in ipairs { 'add', 'min', 'max' } do\n"
    "    for to = 0, n - 1 do\n"
    "      local K, V, O, nk = cx.take_folded(ex, to, fold)\n"
    "      local RK, RV, RO, rn = merge(ex, to, n, fold)\n"
    "      same(nk, rn, 'count')\n"
    "      for i = 1, rn do\n"
    "        same(K[i], RK[i], 'key'); same(V[i], RV[i], fold .. ' of ' .. #RK[i]); same(O[i], RO[i], 'order')\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "end\n"
    "-- A string key goes to the owner of its partition (scatter packs it\n"
    "-- as pack_key does) and comes back the same.\n"
    "for _, k in ipairs(keys) do\n"
    "  local ex = cx.new(3)\n"
    "  for from = 0, 2 do cx.clear(ex, from) end\n"
    "  assert(cx.scatter(ex, 1, 16, { k }, { 1 }, { 1 }, 1) == nil)\n"
    "  for to = 0, 2 do\n"
    "    local A, _, _, c = cx.take(ex, 1, to)\n"
    "    same(c, to == cx.partition(k, 16) % 3 and 1 or 0, 'owner of ' .. #k)\n"
    "    if c == 1 then same(A[1], k, 'key') end\n"
    "  end\n"
    "end\n"
    "-- Not a string key with a number: nil, the exchange as it was.\n"
    "for _, case in ipairs { { 'k', 'text' }, { 7, 1 }, { 'k', { 1 } }, { true, 2 } } do\n"
    "  local ex = cx.new(2)\n"
    "  cx.clear(ex, 0); cx.clear(ex, 1)\n"
    "  assert(cx.scatter(ex, 0, 4, { 'x', case[1] }, { 1, case[2] }, { 1, 2 }, 2) == nil)\n"
    "  local owner = cx.partition(case[1], 4) % 2\n"
    "  assert(cx.take_folded(ex, owner, 'add') == nil, 'a fallback')\n"
    "  local A, B, O, c = cx.take(ex, 0, owner)\n"
    "  assert(c >= 1)\n"
    "end\n"
    "-- With keep, the sender's own elements with numbers stay out of its\n"
    "-- buffer (their indices in keep, in order); the rest go as without it.\n"
    "do\n"
    "  local ex = cx.new(3)\n"
    "  for from = 0, 2 do cx.clear(ex, from) end\n"
    "  local A, B, O = {}, {}, {}\n"
    "  for i = 1, 60 do A[i], B[i], O[i] = keys[i % #keys + 1] .. i, i % 4 == 0 and 'text' or i, i end\n"
    "  local keep = {}\n"
    "  assert(cx.scatter(ex, 1, 16, A, B, O, #A, nil, keep) == nil)\n"
    "  local want, seen = {}, 0\n"
    "  for i = 1, #A do\n"
    "    if cx.partition(A[i], 16) % 3 == 1 and type(B[i]) == 'number' then want[#want + 1] = i end\n"
    "  end\n"
    "  assert(#want > 0)\n"
    "  same(keep.n, #want, 'kept')\n"
    "  for j = 1, #want do same(keep[j], want[j], 'kept index') end\n"
    "  for to = 0, 2 do\n"
    "    local TA, TB, _, c = cx.take(ex, 1, to)\n"
    "    for j = 1, c do\n"
    "      same(cx.partition(TA[j], 16) % 3, to, 'owner')\n"
    "      if to == 1 then same(TB[j], 'text', 'only what is not kept') end\n"
    "      seen = seen + 1\n"
    "    end\n"
    "  end\n"
    "  same(seen + #want, #A, 'every element once')\n"
    "end\n"
    "assert(not pcall(cx.take_folded, cx.new(1), 0, 'mul'))\n";

/* merge_outputs against a merge in Lua over what take gives. */
static const char *MERGE =
    "local cx = ...\n"
    "local function same(x, y, what)\n"
    "  if x ~= y and not (x ~= x and y ~= y) then error(what .. ': ' .. tostring(x) .. ' ~= ' .. tostring(y), 0) end\n"
    "end\n"
    "local function deep(x, y, what)\n"
    "  if type(x) == 'table' and type(y) == 'table' then\n"
    "    for k, v in pairs(x) do deep(v, y[k], what) end\n"
    "    for k in pairs(y) do if x[k] == nil then error(what .. ': key ' .. tostring(k), 0) end end\n"
    "  else same(x, y, what) end\n"
    "end\n"
    "-- A key's packed bytes as the state orders keys (what put sends).\n"
    "local function packed(ex, k)\n"
    "  cx.clear(ex, 0)\n"
    "  assert(cx.put(ex, 0, -1, { 0 }, { 0 }, { { k } }, 1) == nil)\n"
    "  local _, _, O = cx.take(ex, 0, -1)\n"
    "  return O[1]\n"
    "end\n"
    "local keys = { 'a', 'ab', 'b', ('b'):rep(31), ('c'):rep(32), ('d'):rep(300), '', 7, -3, 2.5, true, false }\n"
    "local values = { 1, 'text', { 1, 2, 3 }, { x = 1, y = { 'z' } }, false, 0.5, -1e300 }\n"
    "local seed = 1\n"
    "local function rnd(n) seed = (seed * 1103515245 + 12345) % 2147483648; return seed % n + 1 end\n"
    "for _, keys_first in ipairs { true, false } do\n"
    "  for n = 1, 3 do\n"
    "    local ex, scratch = cx.new(n), cx.new(1)\n"
    "    local lists = {}\n"
    "    for w = 0, n - 1 do\n"
    "      -- Each owner's outputs in its own order: numbers ascending,\n"
    "      -- keys by their bytes, keys first or last.\n"
    "      local items = {}\n"
    "      for i = 1, 3 + rnd(12) do\n"
    "        local kind = rnd(3)\n"
    "        local a = keys[rnd(#keys)]\n"
    "        local b = rnd(4) == 1 and nil or values[rnd(#values)]\n"
    "        local o\n"
    "        if kind == 1 then o = rnd(50) * 1.5\n"
    "        elseif kind == 2 then o = true\n"
    "        else o = { keys[rnd(#keys)] } end\n"
    "        local key = o == true and a or type(o) == 'table' and o[1] or nil\n"
    "        items[#items + 1] = { a = a, b = b, o = o, s = key ~= nil and packed(scratch, key) or o }\n"
    "      end\n"
    "      table.sort(items, function(x, y)\n"
    "        local tx, ty = type(x.s), type(y.s)\n"
    "        if tx ~= ty then return (tx == 'string') == keys_first end\n"
    "        return x.s < y.s\n"
    "      end)\n"
    "      lists[w + 1] = items\n"
    "    end\n"
    "    local A0, B0, O0 = {}, {}, {}\n"
    "    for i, it in ipairs(lists[1]) do A0[i], B0[i], O0[i] = it.a, it.b, it.o end\n"
    "    for w = 1, n - 1 do\n"
    "      local A, B, O = {}, {}, {}\n"
    "      for i, it in ipairs(lists[w + 1]) do A[i], B[i], O[i] = it.a, it.b, it.o end\n"
    "      cx.clear(ex, w)\n"
    "      assert(cx.put(ex, w, 0, A, B, O, #A) == nil)\n"
    "      -- take gives back what was put (orders as their keys' bytes).\n"
    "      local TA, TB, TO, c = cx.take(ex, w, 0)\n"
    "      same(c, #A, 'taken')\n"
    "      for i = 1, c do\n"
    "        deep(TA[i], A[i], 'a'); deep(TB[i], B[i], 'b'); same(TO[i], lists[w + 1][i].s, 'order')\n"
    "      end\n"
    "    end\n"
    "    -- The reference: the merge by order, ties to the lower worker.\n"
    "    local at, want = {}, {}\n"
    "    for w = 1, n do at[w] = 1 end\n"
    "    while true do\n"
    "      local best\n"
    "      for w = 1, n do\n"
    "        local it = lists[w][at[w]]\n"
    "        if it then\n"
    "          local bo = best and lists[best][at[best]].s\n"
    "          local x = it.s\n"
    "          local before = best == nil\n"
    "          if not before then\n"
    "            if type(x) ~= type(bo) then before = (type(x) == 'string') == keys_first else before = x < bo end\n"
    "          end\n"
    "          if before then best = w end\n"
    "        end\n"
    "      end\n"
    "      if not best then break end\n"
    "      want[#want + 1] = lists[best][at[best]]\n"
    "      at[best] = at[best] + 1\n"
    "    end\n"
    "    local OA, OB, total = cx.merge_outputs(ex, n, keys_first, A0, B0, O0, #A0)\n"
    "    same(total, #want, 'total')\n"
    "    for i = 1, total do deep(OA[i], want[i].a, 'merged a ' .. i); deep(OB[i], want[i].b, 'merged b ' .. i) end\n"
    "  end\n"
    "end\n"
    "assert(not pcall(cx.merge_outputs, cx.new(2), 2, false, { 1 }, { 1 }, { 'x' }, 1), 'an order that is no number, true or {key}')\n";

/* scatter_words against scatter of the same words, counts and orders:
 * the same elements in every buffer. ... is the module, the word count's
 * address, its words and their counts. */
static const char *WORDS =
    "local cx, wc, W, N = ...\n"
    "for n = 1, 3 do\n"
    "  for from = 0, n - 1 do\n"
    "    local a, b = cx.new(n), cx.new(n)\n"
    "    cx.clear(a, from); cx.clear(b, from)\n"
    "    cx.scatter_words(a, from, 16, wc, 2^32)\n"
    "    local O = {}\n"
    "    for i = 1, #W do O[i] = from * 2^32 + i end\n"
    "    assert(cx.scatter(b, from, 16, W, N, O, #W) == nil)\n"
    "    for to = 0, n - 1 do\n"
    "      local A1, B1, O1, c1 = cx.take(a, from, to)\n"
    "      local A2, B2, O2, c2 = cx.take(b, from, to)\n"
    "      assert(c1 == c2, 'count')\n"
    "      for i = 1, c1 do\n"
    "        assert(A1[i] == A2[i] and B1[i] == B2[i] and O1[i] == O2[i], 'element ' .. i)\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "end\n";

/* A Lua state with the chunk src loaded and the module pushed as its
 * first argument (the caller pushes any others). */
static lua_State *load_check(const char *src)
{
    lua_State *L = luaL_newstate();
    assert_non_null(L);
    luaL_openlibs(L);
    if (luaL_loadstring(L, src) != 0) fail_msg("%s", lua_tostring(L, -1));
    lua_pushcfunction(L, luaopen_streamrun_cexchange);
    lua_call(L, 0, 1);
    return L;
}

/* Runs the chunk load_check loaded with its nargs arguments: it returns
 * nothing, or raises what differs. */
static void finish_check(lua_State *L, int nargs)
{
    if (lua_pcall(L, nargs, 0, 0) != 0) fail_msg("%s", lua_tostring(L, -1));
    lua_close(L);
    sr_exchange_thread_free();
}

static void run_check(const char *src) { finish_check(load_check(src), 1); }

static void test_scatter_words_as_scatter(void **state)
{
    (void)state;
    /* Words of every string header length class, repeated. */
    sr_batch_t *b = sr_batch_new(0, 0);
    assert_non_null(b);
    static char big[70000];
    memset(big, 'w', sizeof(big) - 1);
    const size_t lens[] = { 1, 31, 32, 255, 256, 65535, 65536 };
    for (int r = 0; r < 3; r++) {
        for (size_t k = 0; k < sizeof(lens) / sizeof(lens[0]); k++) {
            char line[70100];
            int n = snprintf(line, sizeof(line), "x%d %.*s common\t\303\251t\303\251", r, (int)lens[k], big);
            assert_int_equal(0, sr_batch_append(b, line, (size_t)n, 0));
        }
    }
    sr_wordcount_t *wc = sr_wordcount_new();
    assert_non_null(wc);
    assert_int_equal(0, sr_wordcount_batch(wc, b));
    assert_true(wc->n > 8);
    lua_State *L = load_check(WORDS);
    lua_pushnumber(L, (lua_Number)(uintptr_t)wc);
    lua_createtable(L, (int)wc->n, 0);
    lua_createtable(L, (int)wc->n, 0);
    for (size_t i = 0; i < wc->n; i++) {
        lua_pushlstring(L, wc->data + wc->word[i].off, wc->word[i].len);
        lua_rawseti(L, -3, (int)i + 1);
        lua_pushnumber(L, wc->word[i].count);
        lua_rawseti(L, -2, (int)i + 1);
    }
    finish_check(L, 4);
    sr_wordcount_free(wc);
    sr_batch_free(b);
}

static void test_merge_outputs_as_lua_merges(void **state)
{
    (void)state;
    run_check(MERGE);
}

static void test_take_folded_as_lua_merges(void **state)
{
    (void)state;
    run_check(CHECK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_take_folded_as_lua_merges),
        cmocka_unit_test(test_merge_outputs_as_lua_merges),
        cmocka_unit_test(test_scatter_words_as_scatter),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
