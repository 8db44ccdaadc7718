-- streamrun's own rules for keyed state (SPEC section 8) through the test
-- driver: keys, values through msgpack, bad values and failing functions,
-- initial state, snapshots, mapped output shapes, timeouts exact to the
-- batch (also across d:advance jumps), partitions, on_error = "fail".
local sr = require "streamrun"
local testing = require "streamrun.testing"
local compare = require "helpers.compare"
local cjson = require "cjson"
local cstate = require("streamrun.core").cstate

local function pair_of(e) return e[1], e[2] end

-- Every batch's elements of each captured output, per driver:
-- CAPTURED[d][name][k] is batch k's. Kept by the job's own foreach_batch
-- rather than read back with d:outputs, which walks the driver's history
-- with pairs(): the installed LuaJIT (2.1.0-beta3, git 2022-03-20) has bug
-- #827, where a hot pairs() loop may stop early once the JIT blacklists it,
-- and the longest specs here run 100000 batches.
local CAPTURED = setmetatable({}, { __mode = "k" })
local building -- the capture lists of the job being built

local function capture(stream, name)
  local list = {}
  building[name] = list
  stream:foreach_batch(function(elements, time_ms) list[time_ms / 1000] = elements end, { name = name })
end

local function outputs(d, name) return CAPTURED[d][name] end

-- A driver for a job (batch 1 s) with one queue source "input" fed {k, v}
-- tables, which become pairs; build(pairs, job) adds the stages under test.
local function driver(build, job_opts)
  local lists = {}
  building = lists
  local d = testing.driver(function()
    local opts = { name = "state", batch = "1s" }
    for k, v in pairs(job_opts or {}) do opts[k] = v end
    local job = sr.job(opts)
    local input = job:queue({}, { name = "input" }):map(pair_of)
    build(input, job)
    -- A job needs an output; this one also shows what the stages received.
    capture(input, "input_pairs")
    return job
  end)
  building = nil
  CAPTURED[d] = lists
  return d
end

-- update_state_by_key that keeps the last value received (else the state);
-- "output" captures its stream.
local function last_value_job(opts)
  return driver(function(s)
    capture(s:update_state_by_key(function(values, state)
      if #values > 0 then return values[#values] end
      return state
    end, opts or { name = "last" }), "output")
  end)
end

-- map_with_state counting records per key; output (k, count) per record and
-- (k, "timeout", count) when timing out; snapshots captured as "snapshots".
local function counter_spec(timeout)
  local spec = sr.state_spec(function(k, v, state)
    if v == nil then return k, { "timeout", state:get() } end
    local n = (state:exists() and state:get() or 0) + 1
    state:update(n)
    return k, n
  end):name("counts")
  if timeout then spec:timeout(timeout) end
  return spec
end

local function counter_job(timeout, extra)
  return driver(function(s)
    local m = s:map_with_state(extra and extra(counter_spec(timeout)) or counter_spec(timeout))
    capture(m, "output")
    capture(m:state_snapshots(), "snapshots")
  end)
end

-- A snapshot batch ({k, v} elements) as a table {[k] = v}; fails on a key
-- seen twice.
local function as_map(elements)
  local t = {}
  for _, e in ipairs(elements) do
    assert.is_nil(t[e[1]], "key in a snapshot twice: " .. tostring(e[1]))
    t[e[1]] = e[2]
  end
  return t
end

-- The batches (by time) in which each key was reported timing out.
local function timeouts_of(d, name)
  local seen = {}
  for i, batch in ipairs(outputs(d, name or "output")) do
    for _, e in ipairs(batch) do
      if type(e[2]) == "table" and e[2][1] == "timeout" then
        seen[#seen + 1] = { e[1], i * d.batch_ms }
      end
    end
  end
  return seen
end

describe("keyed state", function()
  describe("keys", function()
    it("1, \"1\" and true are different keys in update_state_by_key", function()
      local d = driver(function(s)
        capture(s:update_state_by_key(function(values, state)
          local n = state or 0
          for _, v in ipairs(values) do n = n + v end
          return n
        end, { name = "sums" }), "output")
      end)
      d:push("input", { { 1, 1 }, { "1", 10 }, { true, 100 }, { 1, 2 }, { false, 1000 }, { 1.5, 7 } })
      local out = d:tick()
      compare.same_multisets({ { { 1, 3 }, { "1", 10 }, { true, 100 }, { false, 1000 }, { 1.5, 7 } } }, { out.output })
      assert.same({ [1] = 3, ["1"] = 10, [true] = 100, [false] = 1000, [1.5] = 7 }, d:state("sums"))
      assert.equal(3, d:state("sums", 1))
      assert.equal(10, d:state("sums", "1"))
      assert.equal(100, d:state("sums", true))
      assert.equal(1000, d:state("sums", false))
      assert.is_nil(d:state("sums", "true"))
      assert.is_nil(d:state("sums", 2))
      d:push("input", { { "1", 1 } })
      d:tick()
      assert.same({ [1] = 3, ["1"] = 11, [true] = 100, [false] = 1000, [1.5] = 7 }, d:state("sums"))
    end)

    it("1, \"1\" and true are different keys in map_with_state", function()
      local d = counter_job()
      d:push("input", { { 1, "x" }, { "1", "x" }, { true, "x" }, { "1", "x" } })
      local out = d:tick()
      assert.same({ { 1, 1 }, { "1", 1 }, { true, 1 }, { "1", 2 } }, out.output)
      assert.same({ [1] = 1, ["1"] = 2, [true] = 1 }, d:state("counts"))
      assert.same({ [1] = 1, ["1"] = 2, [true] = 1 }, as_map(out.snapshots))
    end)

    it("a key that is not a string, number or boolean is a dead letter", function()
      local d = counter_job()
      d:push("input", { { { 1 }, "x" }, { "ok", "x" } })
      local out = d:tick()
      assert.same({ { "ok", 1 } }, out.output)
      assert.equal(1, #d.dead_letters)
      assert.equal("counts", d.dead_letters[1].source)
      assert.matches("key must be a string, number or boolean, got table", d.dead_letters[1].reason, 1, true)
    end)
  end)

  describe("values through msgpack", function()
    local VALUES = {
      int = 42,
      zero = 0,
      negative = -7,
      big = 2 ^ 53,
      min_int64 = -2 ^ 63,
      float = 0.1,
      negative_float = -2.5,
      tiny = 1e-300,
      huge = 1.5e300,
      inf = math.huge,
      negative_inf = -math.huge,
      empty_string = "",
      nul_string = "a\0b\0\0c",
      all_bytes = (function()
        local t = {}
        for i = 0, 255 do t[#t + 1] = string.char(i) end
        return table.concat(t)
      end)(),
      long_string = ("xyz\0"):rep(25000),
      yes = true,
      no = false,
      empty_table = {},
      array = { 1, "two", 3.5, false, { 5 } },
      map = { a = 1, b = "two", c = { d = { e = true } } },
      mixed = { 10, 20, x = "y" },
      sparse = { [1] = "a", [3] = "c" },
      number_keys = { [-1] = "m", [0] = "z", [1.5] = "f", [2 ^ 40] = "big" },
      bool_keys = { [true] = 1, [false] = 0 },
      null_inside = { 1, cjson.null, 3 },
      nested_arrays = { { {}, { {} } }, { 1, { 2, { 3 } } } },
    }

    -- A table nested n levels deep: {{{...{"bottom"}...}}}.
    local function deep(n)
      local t = { "bottom" }
      for _ = 2, n do t = { t } end
      return t
    end
    VALUES.deep_31 = deep(31)

    it("every kind round-trips through d:state and the next call's state", function()
      local next_states = {}
      local d = driver(function(s)
        capture(s:update_state_by_key(function(values, state, key)
          if #values == 0 then
            next_states[key] = state
            return state
          end
          return values[1]
        end, { name = "values" }), "output")
      end)
      local input = {}
      for k, v in pairs(VALUES) do input[#input + 1] = { k, v } end
      d:push("input", input)
      d:tick()
      d:tick()
      local all = d:state("values")
      for k, v in pairs(VALUES) do
        assert.same(v, d:state("values", k), k)
        assert.same(v, all[k], k)
        assert.same(v, next_states[k], k)
      end
      assert.equal(0.1, d:state("values", "float"))
      assert.equal(1e-300, d:state("values", "tiny"))
      assert.equal(#VALUES.long_string, #d:state("values", "long_string"))
      assert.equal(cjson.null, d:state("values", "null_inside")[2])
      -- NaN is a double too; it comes back as NaN.
      d:push("input", { { "nan", 0 / 0 } })
      d:tick()
      local nan = d:state("values", "nan")
      assert.is_true(nan ~= nan)
    end)

    -- A value nests at most 31 tables, the most a checkpoint restores
    -- (spec/unit/checkpoint_corrupt_spec.lua); deeper values must be refused
    -- when stored, never stored and lost.
    it("a value nested 31 tables deep round-trips", function()
      local d = last_value_job()
      d:push("input", { { "deep", deep(31) } })
      d:tick()
      assert.same(deep(31), d:state("last", "deep"))
      assert.same({}, d.dead_letters)
    end)

    it("a value nested 40 tables deep round-trips (or is refused with a dead letter)", function()
      local d = last_value_job()
      d:push("input", { { "deep", deep(40) } })
      d:tick()
      local v = d:state("last", "deep")
      if v == nil then
        assert.equal(1, #d.dead_letters, "the value was accepted and then lost")
      else
        assert.same(deep(40), v)
      end
    end)

    it("a value nested 32 tables deep is refused with a dead letter", function()
      local d = last_value_job()
      d:push("input", { { "deep", "shallow" } })
      d:tick()
      d:push("input", { { "deep", deep(32) } })
      d:tick()
      assert.equal("shallow", d:state("last", "deep"))
      assert.equal(1, #d.dead_letters)
      assert.matches('key "deep": cannot store a table nested deeper than 31 levels', d.dead_letters[1].reason, 1, true)
    end)

    it("arrays stay arrays and maps stay maps", function()
      local d = last_value_job()
      d:push("input", {
        { "array", { 1, 2, 3 } }, { "map", { a = 1 } }, { "empty", {} },
        { "sparse", { [1] = 1, [3] = 3 } }, { "zero_key", { [0] = 1 } },
      })
      d:tick()
      -- msgpack's first byte: 0x9N a fixarray of N, 0x8N a fixmap of N.
      local function head(v) return cstate.encode(v):byte(1) end
      assert.equal(0x93, head(d:state("last", "array")))
      assert.equal(0x81, head(d:state("last", "map")))
      assert.equal(0x90, head(d:state("last", "empty")))
      assert.equal(0x82, head(d:state("last", "sparse")))
      assert.equal(0x81, head(d:state("last", "zero_key")))
    end)

    it("map_with_state state values round-trip into the next call", function()
      local got = {}
      local d = driver(function(s)
        s:map_with_state(sr.state_spec(function(k, v, state)
          if state:exists() then got[k] = state:get() end
          state:update(v)
        end):name("mws"))
      end)
      d:push("input", { { "a", { x = { 1, 2, "\0" } } }, { "b", -0.25 }, { "c", false }, { "d", {} } })
      d:tick()
      d:push("input", { { "a", 0 }, { "b", 0 }, { "c", 0 }, { "d", 0 } })
      d:tick()
      assert.same({ a = { x = { 1, 2, "\0" } }, b = -0.25, c = false, d = {} }, got)
      assert.same({ a = 0, b = 0, c = 0, d = 0 }, d:state("mws"))
    end)
  end)

  describe("values that cannot be state", function()
    -- key -> { value, what the dead letter says after "cannot store " }
    local BAD = {
      fn = { function() end, "a function" },
      ud = { io.stdout, "a userdata" },
      cycle = { (function() local t = {}; t.self = t; return t end)(), "a table nested deeper than 31 levels (a cycle?)" },
      nested_fn = { { ok = 1, f = print }, "a function" },
      coroutine = { coroutine.create(function() end), "a coroutine" },
    }

    it("returned from update_state_by_key: dead letter naming the stage and key; previous state kept", function()
      local d = driver(function(s)
        capture(s:update_state_by_key(function(values, state, key)
          if values[1] == "bad" then return BAD[key][1] end
          return values[1] or state
        end, { name = "totals" }), "output")
      end)
      local first, second = {}, {}
      for k in pairs(BAD) do
        first[#first + 1] = { k, "good " .. k }
        second[#second + 1] = { k, "bad" }
      end
      second[#second + 1] = { "new", "good" }
      d:push("input", first)
      d:tick()
      d:push("input", second)
      local out = d:tick()
      -- The output still has every key, with its previous state.
      local expected = { { "new", "good" } }
      for k in pairs(BAD) do expected[#expected + 1] = { k, "good " .. k } end
      compare.same_multisets({ expected }, { out.output })
      local state = { new = "good" }
      for k in pairs(BAD) do state[k] = "good " .. k end
      assert.same(state, d:state("totals"))
      assert.equal(5, #d.dead_letters)
      local reported = {}
      for _, dl in ipairs(d.dead_letters) do
        assert.equal("totals", dl.source)
        local key = dl.reason:match('key "([%w_]+)": cannot store ')
        assert.truthy(BAD[key], dl.reason)
        reported[key] = true
        assert.matches("^stage totals %(update_state_by_key at ", dl.reason)
        assert.matches(('key "%s": cannot store %s in state; the key keeps its previous state'):format(key, BAD[key][2]),
          dl.reason, 1, true)
        assert.equal('"' .. key .. '"', dl.record)
      end
      assert.same({ fn = true, ud = true, cycle = true, nested_fn = true, coroutine = true }, reported)
    end)

    it("returned for a key without state: dead letter, and the key stays absent", function()
      local d = driver(function(s)
        capture(s:update_state_by_key(function() return print end, { name = "totals" }), "output")
      end)
      d:push("input", { { 7, 1 } })
      local out = d:tick()
      assert.same({}, out.output)
      assert.same({}, d:state("totals"))
      assert.equal(1, #d.dead_letters)
      assert.matches('^stage totals .*: key 7: cannot store a function in state', d.dead_letters[1].reason)
    end)

    it("passed to state:update: dead letter naming the stage and key; previous state kept", function()
      local d = driver(function(s)
        local m = s:map_with_state(sr.state_spec(function(k, v, state)
          if v == nil then return end
          if v == "bad" then
            state:update(BAD[k][1])
            return k, "tried"
          end
          state:update(v)
          return k, v
        end):name("mws"):timeout("3s"))
        capture(m, "output")
      end)
      d:push("input", { { "fn", 1 }, { "ud", 2 }, { "cycle", 3 } })
      d:tick()
      d:push("input", { { "fn", "bad" }, { "ud", "bad" }, { "cycle", "bad" }, { "nested_fn", "bad" } })
      local out = d:tick()
      -- The mapped elements are still emitted; only the state write failed.
      assert.same({ { "fn", "tried" }, { "ud", "tried" }, { "cycle", "tried" }, { "nested_fn", "tried" } }, out.output)
      assert.same({ fn = 1, ud = 2, cycle = 3 }, d:state("mws"))
      assert.equal(4, #d.dead_letters)
      local keys = {}
      for i, dl in ipairs(d.dead_letters) do
        assert.equal("mws", dl.source)
        assert.matches("^stage mws %(map_with_state at ", dl.reason)
        keys[i] = dl.reason:match('key "([%w_]+)": cannot store ' .. (i == 3 and "a table nested" or "a "))
      end
      assert.same({ "fn", "ud", "cycle", "nested_fn" }, keys)
      -- The failed write still counts as a record: the idle clocks of fn,
      -- ud and cycle restarted at 2000, so they time out at 6000, not 5000.
      d:tick(2)
      assert.same({ fn = 1, ud = 2, cycle = 3 }, d:state("mws"))
      d:tick()
      assert.same({ fn = 1, ud = 2, cycle = 3 }, d:state("mws"))
      d:tick()
      assert.same({}, d:state("mws"))
    end)
  end)

  describe("errors in state functions", function()
    it("state:update and state:remove on a timing-out state raise an error naming the key", function()
      local d = driver(function(s)
        capture(s:map_with_state(sr.state_spec(function(k, v, state)
          if v ~= nil then state:update(v) return end
          if k == "u" then state:update(99) end
          if k == "r" then state:remove() end
          return k, "timed out"
        end):name("mws"):timeout("1s")), "output")
      end)
      d:push("input", { { "u", 1 }, { "r", 2 }, { "ok", 3 } })
      d:tick(3)
      -- At 3000 all three time out; only "ok" gets through its last call.
      assert.same({ {}, {}, { { "ok", "timed out" } } }, outputs(d, "output"))
      assert.same({}, d:state("mws"))
      assert.equal(2, #d.dead_letters)
      local reasons = d.dead_letters[1].reason .. "\n" .. d.dead_letters[2].reason
      assert.matches('stage mws %(map_with_state at [^\n]*cannot remove the state of key "r": it is timing out', reasons)
      assert.matches('stage mws %(map_with_state at [^\n]*cannot update the state of key "u": it is timing out', reasons)
    end)

    it("state:get() with no state raises an error naming the key", function()
      local d = driver(function(s)
        capture(s:map_with_state(sr.state_spec(function(k, v, state)
          local n = state:get() + v
          state:update(n)
          return k, n
        end):name("mws"):initial_state { seeded = 10 }), "output")
      end)
      d:push("input", { { "seeded", 1 }, { "fresh", 1 }, { 5, 1 } })
      local out = d:tick()
      assert.same({ { "seeded", 11 } }, out.output)
      assert.same({ seeded = 11 }, d:state("mws"))
      assert.equal(2, #d.dead_letters)
      assert.matches('^stage mws .*state of key "fresh" is not set', d.dead_letters[1].reason)
      assert.equal('["fresh",1]', d.dead_letters[1].record)
      assert.matches('^stage mws .*state of key 5 is not set', d.dead_letters[2].reason)
    end)

    it("a raising update_state_by_key function: dead letter, the key keeps its state", function()
      local d = driver(function(s)
        capture(s:update_state_by_key(function(values, state)
          if values[1] == "boom" then error("boom!") end
          return values[1] or state
        end, { name = "totals" }), "output")
      end)
      d:push("input", { { "a", "x" }, { "b", "y" } })
      d:tick()
      d:push("input", { { "a", "boom" }, { "b", "z" }, { "c", "boom" } })
      local out = d:tick()
      compare.same_multisets({ { { "a", "x" }, { "b", "z" } } }, { out.output })
      assert.same({ a = "x", b = "z" }, d:state("totals"))
      assert.equal(2, #d.dead_letters)
      for _, dl in ipairs(d.dead_letters) do
        assert.equal("totals", dl.source)
        assert.matches("^stage totals %(update_state_by_key at .*boom!", dl.reason)
      end
    end)

    -- Errors name the stage, the key and the element (STYLE).
    it("a raising update_state_by_key function's dead letter names the key", function()
      local d = driver(function(s)
        s:update_state_by_key(function() error("boom!") end, { name = "totals" })
      end)
      d:push("input", { { "the_key", 1 } })
      d:tick()
      assert.equal(1, #d.dead_letters)
      local dl = d.dead_letters[1]
      assert.matches('^stage totals %(update_state_by_key at [^)]+%): key "the_key": .*boom!', dl.reason)
      -- The record is the key and its values.
      assert.equal('["the_key",[1]]', dl.record)
    end)

    -- A failing call changes nothing, whatever it did to the state first.
    it("a mapping function that raises keeps the key's previous state", function()
      local d = driver(function(s)
        s:map_with_state(sr.state_spec(function(_, v, state)
          if v == "update" then state:update(99) error("after update") end
          if v == "remove" then state:remove() error("after remove") end
          state:update(v)
        end):name("mws"))
      end)
      d:push("input", { { "a", 1 }, { "b", 2 } })
      d:tick()
      d:push("input", { { "a", "update" }, { "b", "remove" }, { "c", "update" } })
      d:tick()
      assert.equal(3, #d.dead_letters)
      assert.same({ a = 1, b = 2 }, d:state("mws"))
    end)

    -- A key that cannot be a state key in the initial state is a dead letter
    -- naming the stage and the key; the other seeds are kept.
    it("an initial state with a table as a key is reported naming the stage", function()
      local d = driver(function(s)
        s:update_state_by_key(function(_, state) return state end,
          { name = "seeded", initial = { [{}] = 1, ok = 2 } })
      end)
      d:tick()
      assert.same({ ok = 2 }, d:state("seeded"))
      assert.equal(1, #d.dead_letters)
      assert.equal("seeded", d.dead_letters[1].source)
      assert.matches("^stage seeded %(update_state_by_key at [^)]+%): initial state, key {}: key must be a string, number or boolean, got table",
        d.dead_letters[1].reason)
    end)

    -- The seeds are put in a fixed order, not pairs()'s (which follows
    -- when each string was made): numbers, strings by their bytes, false,
    -- true, then what cannot be a key. Values that cannot be kept (int64
    -- cdata) show the order in their dead letters.
    it("puts the initial keys in a fixed order, whatever pairs() gives", function()
      local initial = { [{}] = 0 }
      for _, k in ipairs { "zeta", "b", true, "alpha", 10, "ab", false, -2.5, "c", "b2", 3 } do initial[k] = 1LL end
      local d = driver(function(s)
        s:update_state_by_key(function(_, state) return state end, { name = "seeded", initial = initial })
      end)
      d:tick()
      local keys = {}
      for i, l in ipairs(d.dead_letters) do keys[i] = l.reason:match("initial state, key (.-):") end
      assert.same({ "-2.5", "3", "10", '"ab"', '"alpha"', '"b"', '"b2"', '"c"', '"zeta"', "false", "true", "{}" }, keys)
    end)

    it("on_error = \"fail\" stops at a failing update_state_by_key function, naming the stage", function()
      local calls = 0
      local d = driver(function(s)
        s:update_state_by_key(function(values, state)
          calls = calls + 1
          if values[1] == "boom" then error("boom!") end
          return values[1] or state
        end, { name = "totals" })
      end, { on_error = "fail" })
      d:push("input", { { "a", 1 } })
      d:tick()
      d:push("input", { { "a", "boom" } })
      local ok, err = pcall(d.tick, d)
      assert.is_false(ok)
      assert.matches("^batch 2000 ms: stage totals %(update_state_by_key at [^)]+%): .*boom!", err)
      assert.same({}, d.dead_letters)
    end)

    it("on_error = \"fail\" stops at a failing mapping function, naming the stage", function()
      local d = driver(function(s)
        s:map_with_state(sr.state_spec(function(_, v, state)
          state:update(state:get() + v)
        end):name("sums"))
      end, { on_error = "fail" })
      d:push("input", { { "a", 1 } })
      local ok, err = pcall(d.tick, d)
      assert.is_false(ok)
      assert.matches("^batch 1000 ms: stage sums %(map_with_state at [^)]+%): .*state of key \"a\" is not set", err)
    end)

    it("on_error = \"fail\" stops at a value that cannot be state, naming the stage and key", function()
      local d = driver(function(s)
        s:update_state_by_key(function() return print end, { name = "totals" })
      end, { on_error = "fail" })
      d:push("input", { { "k", 1 } })
      local ok, err = pcall(d.tick, d)
      assert.is_false(ok)
      assert.matches('^batch 1000 ms: stage totals %(update_state_by_key at [^)]+%): key "k": cannot store a function', err)
    end)
  end)

  describe("update_state_by_key", function()
    it("gets (values, state, key, time_ms) every batch for keys with values or state; nil removes", function()
      local calls = {}
      local d = driver(function(s)
        capture(s:update_state_by_key(function(values, state, key, time_ms)
          calls[#calls + 1] = { key, values, state or false, time_ms }
          if values[1] == "drop" then return nil end
          return (state or 0) + #values
        end, { name = "n" }), "output")
      end)
      d:push("input", { { "a", 1 }, { "b", 2 }, { "a", 3 } })
      d:tick()
      assert.same({ { "a", { 1, 3 }, false, 1000 }, { "b", { 2 }, false, 1000 } }, calls)
      calls = {}
      d:tick()
      table.sort(calls, function(x, y) return x[1] < y[1] end)
      assert.same({ { "a", {}, 2, 2000 }, { "b", {}, 1, 2000 } }, calls)
      d:push("input", { { "b", "drop" } })
      local out = d:tick()
      assert.same({ { "a", 2 } }, out.output)
      assert.same({ a = 2 }, d:state("n"))
      calls = {}
      d:tick()
      assert.same({ { "a", {}, 2, 4000 } }, calls)
    end)

    -- From one batch to the next with the same keys the order of the batch
    -- before is kept (no sort, values read by key); any batch that adds,
    -- removes or swaps keys, or fails a call, sorts again. Against a model:
    -- every call in key-bytes order, with the state the model holds.
    it("calls every key with state in key order with its state, batch after batch, as keys come and go", function()
      local calls, model = {}, {}
      local d = driver(function(s)
        capture(s:update_state_by_key(function(values, state, key)
          calls[#calls + 1] = { key, state }
          local last = values[#values]
          if last == "drop" then return nil end
          if last == "boom" then error("boom") end
          if #values == 0 then
            if type(state) == "number" then return state + 1 end
            return state
          end
          return last
        end, { name = "kept" }), "output")
      end)
      local pool = { "a", "bb", "c", "ab", "zz", "abcdefghijklmnopqrstuvwxyz", 1, 2, 2.5, -3, true, false, "1" }
      local kinds = { 7, "seven", false, { 1, 2 }, { x = "y" } }
      local seed = 7
      local function rand(n)
        seed = (seed * 1103515245 + 12345) % 2147483648
        return seed % n + 1
      end
      for batch = 1, 40 do
        -- Quiet batches (no values: the kept order) between busy ones.
        local push = {}
        if batch % 3 == 1 then
          for _ = 1, rand(5) do
            local k, v = pool[rand(#pool)], kinds[rand(#kinds)]
            if rand(6) == 1 then v = "drop" elseif rand(15) == 1 then v = "boom" end
            push[#push + 1] = { k, v }
          end
        end
        if #push > 0 then d:push("input", push) end
        calls = {}
        d:tick()
        -- The model after the batch, and the calls it expects.
        local got_values = {}
        for _, e in ipairs(push) do got_values[e[1]] = e[2] end
        local order = {}
        for k in pairs(model) do order[#order + 1] = k end
        table.sort(order, function(x, y) return cstate.encode(x) < cstate.encode(y) end)
        local want = {}
        for _, k in ipairs(order) do want[#want + 1] = { k, model[k] } end
        local new = {}
        for _, e in ipairs(push) do
          if model[e[1]] == nil and not new[e[1]] then
            new[e[1]] = true
            want[#want + 1] = { e[1], nil }
          end
        end
        assert.same(want, calls, "batch " .. batch)
        for _, w in ipairs(want) do
          local k, v = w[1], got_values[w[1]]
          if v == "drop" then model[k] = nil
          elseif v == "boom" then -- (keeps its state)
          elseif v ~= nil then model[k] = v
          elseif type(model[k]) == "number" then model[k] = model[k] + 1 end
        end
        assert.same(model, d:state("kept"), "batch " .. batch)
      end
    end)

    it("opts.initial as a table seeds the state at the first batch", function()
      local d = driver(function(s)
        capture(s:update_state_by_key(function(values, state)
          return state + #values
        end, { name = "n", initial = { a = 10, [1] = 20, ["1"] = 30 } }), "output")
      end)
      d:push("input", { { 1, "x" } })
      local out = d:tick()
      compare.same_multisets({ { { "a", 10 }, { 1, 21 }, { "1", 30 } } }, { out.output })
      assert.same({ a = 10, [1] = 21, ["1"] = 30 }, d:state("n"))
    end)

    it("opts.initial as a function is called once, at the first batch", function()
      local called = 0
      local d = driver(function(s)
        capture(s:update_state_by_key(function(values, state)
          return (state or 0) + #values
        end, { name = "n", initial = function()
          called = called + 1
          return { a = { 1, 2 }, b = 5 }
        end }), "output")
      end)
      assert.equal(0, called)
      d:tick(3)
      assert.equal(1, called)
      -- a's state is a table: adding to it fails, and a keeps its seed.
      assert.same({ a = { 1, 2 }, b = 5 }, d:state("n"))
      assert.equal(3, #d.dead_letters)
      assert.matches("attempt to perform arithmetic", d.dead_letters[1].reason)
    end)

    it("an initial function that fails or returns no table is a dead letter", function()
      for _, case in ipairs {
        { function() error("no seeds") end, "no seeds" },
        { function() return 42 end, "initial state must be a table {key = state}, got number" },
      } do
        local d = driver(function(s)
          s:update_state_by_key(function(values, state) return (state or 0) + #values end,
            { name = "n", initial = case[1] })
        end)
        d:push("input", { { "a", 1 } })
        d:tick()
        assert.same({ a = 1 }, d:state("n"))
        assert.equal(1, #d.dead_letters)
        assert.equal("n", d.dead_letters[1].source)
        assert.matches(case[2], d.dead_letters[1].reason, 1, true)
      end
    end)
  end)

  describe("map_with_state", function()
    it("outputs nothing, one value or a (k, v) pair per call", function()
      local d = driver(function(s)
        capture(s:map_with_state(sr.state_spec(function(k, v)
          if v == "none" then return end
          if v == "nil" then return nil end
          if v == "one" then return k .. "!" end
          if v == "table" then return { k, "as one value" } end
          if v == "false" then return false end
          return k, v
        end)), "output")
      end)
      d:push("input", {
        { "a", "none" }, { "b", "one" }, { "c", "pair" }, { "d", "nil" }, { "e", "false" }, { "f", "table" },
      })
      local out = d:tick()
      assert.same({ "b!", { "c", "pair" }, false, { "f", "as one value" } }, out.output)
    end)

    it("calls the function once per record in arrival order", function()
      local seen = {}
      local d = driver(function(s)
        s:map_with_state(sr.state_spec(function(k, v, state)
          seen[#seen + 1] = { k, v, state:exists() and state:get() or false }
          state:update(v)
        end))
      end)
      d:push("input", { { "a", 1 }, { "b", 2 }, { "a", 3 }, { 1, 4 }, { "a", 5 } })
      d:tick()
      assert.same({ { "a", 1, false }, { "b", 2, false }, { "a", 3, 1 }, { 1, 4, false }, { "a", 5, 3 } }, seen)
    end)

    it("a key's later records in a batch see its state as the earlier ones left it, of any type", function()
      local seen = {}
      local d = driver(function(s)
        s:map_with_state(sr.state_spec(function(k, v, state)
          local old = state:exists() and state:get() or false
          seen[#seen + 1] = { k, v, type(old) == "table" and { old[1], old[2] } or old }
          if v == "rm" then state:remove() return end
          if v == "boom" then
            state:update({ "never", "stored" })
            error("boom")
          end
          if type(v) == "number" then
            local t = type(old) == "table" and old or { 0, 0 }
            t[1], t[2] = t[1] + v, t[2] + 1
            state:update(t)
          else
            state:update(v) -- a string, or the number tag below
          end
        end):name("mws"):timeout("5s"))
      end)
      d:push("input", { { "a", 1 }, { "a", 2 }, { "b", "x" }, { "a", "boom" }, { "a", 3 }, { "b", "rm" },
                        { "b", 4 }, { "c", 5 }, { "c", "s" } })
      d:tick()
      assert.same({ { "a", 1, false }, { "a", 2, { 1, 1 } }, { "b", "x", false }, { "a", "boom", { 3, 2 } },
                    { "a", 3, { 3, 2 } }, { "b", "rm", "x" }, { "b", 4, false }, { "c", 5, false },
                    { "c", "s", { 5, 1 } } }, seen)
      assert.same({ a = { 6, 3 }, b = { 4, 1 }, c = "s" }, d:state("mws"))
      assert.equal(1, #d.dead_letters)
      -- The next batch reads what the last one wrote back.
      seen = {}
      d:push("input", { { "a", 4 }, { "c", 1 } })
      d:tick()
      assert.same({ { "a", 4, { 6, 3 } }, { "c", 1, "s" } }, seen)
      assert.same({ a = { 10, 4 }, b = { 4, 1 }, c = { 1, 1 } }, d:state("mws"))
    end)

    -- The loop over a batch's records resumes after a failing call with
    -- the keys held so far: the keys after it keep their own values.
    it("a failing call mid-batch leaves the table values of the keys before and after it their own", function()
      local d = driver(function(s)
        s:map_with_state(sr.state_spec(function(k, v, state)
          local t = state:exists() and state:get() or { 0, k }
          if v == "boom" then error("boom") end
          t[1] = t[1] + v
          state:update(t)
          return k, t[1]
        end):name("mws"))
      end)
      d:push("input", { { "a", 1 }, { "b", 2 }, { "c", 3 }, { "d", 4 }, { "e", 5 } })
      d:tick()
      d:push("input", { { "a", 10 }, { "b", 20 }, { "c", "boom" }, { "d", 40 }, { "e", 50 }, { "a", 100 },
                        { "e", "boom" }, { "b", 200 }, { "f", 6 } })
      d:tick()
      assert.equal(2, #d.dead_letters)
      assert.same({ a = { 111, "a" }, b = { 222, "b" }, c = { 3, "c" }, d = { 44, "d" }, e = { 55, "e" },
                    f = { 6, "f" } }, d:state("mws"))
      d:push("input", { { "a", 1000 }, { "c", 30 }, { "f", 60 } })
      d:tick()
      assert.same({ a = { 1111, "a" }, b = { 222, "b" }, c = { 33, "c" }, d = { 44, "d" }, e = { 55, "e" },
                    f = { 66, "f" } }, d:state("mws"))
    end)

    -- A batch stopped by a fatal error writes none of its held values
    -- back: the next batch reads the keys' values from the state.
    it("after a batch stopped by on_error = \"fail\", the next batch reads each key's stored value", function()
      local d = driver(function(s)
        s:map_with_state(sr.state_spec(function(k, v, state)
          if v == "boom" then error("boom") end
          local t = state:exists() and state:get() or { 0 }
          t[1] = t[1] + v
          state:update(t)
          return k, t[1]
        end):name("mws"))
      end, { on_error = "fail" })
      d:push("input", { { "a", 1 }, { "b", 2 } })
      d:tick()
      d:push("input", { { "a", 10 }, { "b", 20 }, { "b", "boom" } })
      assert.is_false(pcall(d.tick, d))
      assert.same({ a = { 1 }, b = { 2 } }, d:state("mws"))
      d:push("input", { { "a", 100 }, { "b", 200 } })
      d:tick()
      assert.same({ a = { 101 }, b = { 202 } }, d:state("mws"))
    end)

    it("state_snapshots gives every (k, state) after each batch", function()
      local d = counter_job("2s")
      local expected = {
        { push = { { "a", 1 }, { "b", 1 } }, state = { a = 1, b = 1 } },
        { push = { { "a", 1 } }, state = { a = 2, b = 1 } },
        { push = { { 1, 1 } }, state = { a = 2, b = 1, [1] = 1 } },
        { push = {}, state = { a = 2, [1] = 1 } },      -- b (last 1000) out at 4000
        { push = { { "c", 1 } }, state = { [1] = 1, c = 1 } }, -- a (last 2000) out at 5000
        { push = {}, state = { c = 1 } },
        { push = {}, state = { c = 1 } },
        { push = {}, state = {} },
        { push = {}, state = {} },
      }
      for i, step in ipairs(expected) do
        d:push("input", step.push)
        local out = d:tick()
        assert.same(step.state, as_map(out.snapshots), "batch " .. i)
        assert.same(step.state, d:state("counts"), "batch " .. i)
      end
      assert.same({ { "b", 4000 }, { "a", 5000 }, { 1, 6000 }, { "c", 8000 } }, timeouts_of(d))
    end)

    it("the timing-out call gets v = nil, the state, is_timing_out() and the batch time", function()
      local calls = {}
      local d = driver(function(s)
        s:map_with_state(sr.state_spec(function(k, v, state, time_ms)
          calls[#calls + 1] = { k, v == nil and "nil" or v, state:exists(), state:exists() and state:get() or "none",
            state:is_timing_out(), time_ms }
          if v ~= nil then state:update(v * 10) end
        end):timeout("1500ms"))
      end)
      d:push("input", { { "a", 1 } })
      d:tick(3)
      -- 1000 + 1500 < 3000: due at the batch of 3000.
      assert.same({ "a", 1, false, "none", false, 1000 }, calls[1])
      assert.same({ "a", "nil", true, 10, true, 3000 }, calls[2])
      assert.equal(2, #calls)
    end)

    it("a key that gets a record in the batch it would time out does not time out", function()
      local d = counter_job("2s")
      d:push("input", { { "a", 1 }, { "b", 1 } })
      d:tick(3) -- a and b: last record at 1000, due at 4000
      d:push("input", { { "a", 1 } })
      local out = d:tick()
      assert.same({ { "a", 2 }, { "b", { "timeout", 1 } } }, out.output)
      assert.same({ a = 2 }, d:state("counts"))
      d:tick(2)
      assert.same({ a = 2 }, d:state("counts")) -- 6000 - 4000 is not > 2000
      out = d:tick()
      assert.same({ { "a", { "timeout", 2 } } }, out.output)
      assert.same({ { "b", 4000 }, { "a", 7000 } }, timeouts_of(d))
    end)

    it("every record resets the idle clock, also when the function leaves the state alone", function()
      local d = driver(function(s)
        capture(s:map_with_state(sr.state_spec(function(k, v, state)
          if v == nil then return k, "timeout" end
          if not state:exists() then state:update(v) end
        end):timeout("2s")), "output")
      end)
      d:push("input", { { "a", 1 } })
      d:tick(2)
      d:push("input", { { "a", 2 } })
      d:tick() -- 3000: a record, no update
      d:tick(2)
      assert.same({ {}, {}, {}, {}, {} }, outputs(d, "output"))
      local out = d:tick() -- 6000 - 3000 > 2000
      assert.same({ { "a", "timeout" } }, out.output)
    end)

    it("a key removed and set again starts a new idle clock", function()
      local d = driver(function(s)
        capture(s:map_with_state(sr.state_spec(function(k, v, state)
          if v == nil then return k, "timeout" end
          if v == "rm" then state:remove() else state:update(v) end
        end):timeout("2s"):name("mws")), "output")
      end)
      d:push("input", { { "a", 1 } })
      d:tick()
      d:push("input", { { "a", "rm" } })
      d:tick()
      d:tick(3)
      assert.same({}, d:state("mws"))
      d:push("input", { { "a", 2 } })
      d:tick() -- 6000
      d:tick(2)
      assert.same({ a = 2 }, d:state("mws"))
      local out = d:tick() -- 9000
      assert.same({ { "a", "timeout" } }, out.output)
      for i = 1, 8 do assert.same({}, outputs(d, "output")[i]) end
    end)

    it("initial_state seeds keys at the first batch; unused seeds time out", function()
      local d = counter_job("2s", function(spec) return spec:initial_state { a = 10, b = 20, [1] = 30 } end)
      local out = d:tick()
      assert.same({ a = 10, b = 20, [1] = 30 }, as_map(out.snapshots))
      d:push("input", { { "a", 1 } })
      d:tick() -- 2000: a gets a record
      d:tick() -- 3000: 3000 - 1000 is not > 2000
      assert.same({ a = 11, b = 20, [1] = 30 }, d:state("counts"))
      out = d:tick() -- 4000: b and 1 time out
      compare.same_multisets({ { { "b", { "timeout", 20 } }, { 1, { "timeout", 30 } } } }, { out.output })
      assert.same({ a = 11 }, d:state("counts"))
      out = d:tick() -- 5000: a (last record at 2000) times out
      assert.same({ { "a", { "timeout", 11 } } }, out.output)
      assert.same({}, d:state("counts"))
    end)

    it("initial_state as a function", function()
      local d = counter_job(nil, function(spec)
        return spec:initial_state(function() return { x = 5, ["5"] = 6 } end)
      end)
      d:push("input", { { "x", 1 }, { 5, 1 } })
      local out = d:tick()
      assert.same({ { "x", 6 }, { 5, 1 } }, out.output)
      assert.same({ x = 6, ["5"] = 6, [5] = 1 }, d:state("counts"))
    end)

    it("without a timeout keys never time out", function()
      local d = counter_job()
      d:push("input", { { "a", 1 } })
      d:tick()
      d:advance("2h")
      assert.same({ a = 1 }, d:state("counts"))
      assert.same({}, timeouts_of(d))
    end)
  end)

  describe("timeouts across d:advance jumps", function()
    it("are exact to the batch for short, long and uneven timeouts", function()
      local d = driver(function(s)
        for _, t in ipairs { { "short", "10m" }, { "long", "2h" }, { "uneven", "90500ms" }, { "day", "24h" } } do
          capture(s:map_with_state(sr.state_spec(function(k, v, state)
            if v == nil then return k, { "timeout", state:get() } end
            state:update(v)
          end):timeout(t[2]):name(t[1])), t[1] .. "_out")
        end
      end)
      d:push("input", { { "a", 1 } })
      d:tick() -- a at 1000
      d:push("input", { { "b", 1 } })
      d:advance("1s") -- b at 2000
      d:push("input", { { "c", 1 } })
      d:advance("30m") -- c at 3000; ends at 1802000
      assert.equal(1802, d.batches)
      d:push("input", { { "d", 1 } })
      d:advance("3h") -- d at 1803000
      d:advance("25h")
      local function at(name)
        local r = {}
        for _, e in ipairs(timeouts_of(d, name .. "_out")) do r[#r + 1] = e[1] .. "@" .. e[2] end
        return r
      end
      assert.same({ "a@602000", "b@603000", "c@604000", "d@2404000" }, at("short"))
      assert.same({ "a@7202000", "b@7203000", "c@7204000", "d@9004000" }, at("long"))
      assert.same({ "a@92000", "b@93000", "c@94000", "d@1894000" }, at("uneven"))
      assert.same({ "a@86402000", "b@86403000", "c@86404000", "d@88204000" }, at("day"))
    end)

    it("a jump with a fractional batch left over runs only the batches due", function()
      local d = counter_job("2s")
      d:push("input", { { "a", 1 } })
      d:advance("3.5s")
      assert.equal(3, d.batches)
      assert.same({ a = 1 }, d:state("counts"))
      d:advance("0.5s") -- 4000
      assert.same({}, d:state("counts"))
      assert.same({ { "a", 4000 } }, timeouts_of(d))
    end)

    it("keys touched at many different times during long jumps time out in order", function()
      -- Key i gets records at batches i and 3 * i; timeout 50 s.
      local d = counter_job("50s")
      local expected = {}
      for b = 1, 400 do
        local push = {}
        for i = 1, 100 do
          if b == i or b == 3 * i then push[#push + 1] = { i, 1 } end
        end
        d:push("input", push)
        if b % 7 == 0 then d:advance("1s") else d:tick() end
      end
      d:advance("1h")
      -- Keys whose two records are more than 50 s apart (i >= 26) also time
      -- out after the first one, at (i + 51) s.
      for i = 1, 100 do
        if i + 51 < 3 * i then expected[#expected + 1] = { i, (i + 51) * 1000 } end
        expected[#expected + 1] = { i, (3 * i + 51) * 1000 }
      end
      local function by_time(x, y) return x[2] < y[2] or (x[2] == y[2] and x[1] < y[1]) end
      table.sort(expected, by_time)
      local got = timeouts_of(d)
      table.sort(got, by_time)
      assert.same(expected, got)
    end)
  end)

  describe("partitions", function()
    -- The same stream of records through stages with 1 and 64 partitions
    -- (set on the job, on update_state_by_key and on the state_spec).
    local function run(partitions, where)
      local job_opts = where == "job" and { partitions = partitions } or nil
      local d = driver(function(s)
        capture(s:update_state_by_key(function(values, state)
          local n = (state or 0) + #values
          if n > 6 then return nil end
          return n
        end, { name = "totals", partitions = where ~= "job" and partitions or nil }), "totals_out")
        local spec = counter_spec("3s")
        if where ~= "job" then spec:partitions(partitions) end
        local m = s:map_with_state(spec)
        capture(m, "output")
        capture(m:state_snapshots(), "snapshots")
      end, job_opts)
      local x = 12345
      for _ = 1, 60 do
        local push = {}
        for _ = 1, 40 do
          x = (x * 1103515245 + 12345) % 2147483648
          local k = x % 300
          push[#push + 1] = { (k % 2 == 0) and k or tostring(k), 1 }
        end
        if x % 5 == 0 then push = {} end
        d:push("input", push)
        d:tick()
      end
      assert.matches("state, " .. partitions .. " partitions", d.job:describe(), 1, true)
      return {
        totals = compare.sorted_batches(outputs(d, "totals_out")),
        output = compare.sorted_batches(outputs(d, "output")),
        snapshots = compare.sorted_batches(outputs(d, "snapshots")),
        state_totals = d:state("totals"),
        state_counts = d:state("counts"),
      }
    end

    it("1 and 64 partitions give the same results", function()
      local one, many = run(1, "stage"), run(64, "stage")
      assert.same(one, many)
      assert.is_true(next(one.state_totals) ~= nil)
      assert.same(one, run(1, "job"))
      assert.same(one, run(64, "job"))
    end)
  end)
end)
