-- Failing user functions and bad data (SPEC sections 4, 5, 6): by default
-- the failing element becomes a dead letter whose reason names the stage,
-- its operation and the job file:line that made it, and the rest of the
-- batch goes on; with on_error = "fail" the batch raises, naming the stage.
local sr = require "streamrun"
local testing = require "streamrun.testing"

-- "file:line" of the caller's line, as the DSL records a stage's origin.
local function here()
  local info = debug.getinfo(2, "Sl")
  return info.source:sub(2) .. ":" .. info.currentline
end

local function boom_on(bad)
  return function(x)
    if x == bad then error("boom on " .. tostring(x)) end
    return x
  end
end

-- Runs one batch of input through build(stream) -> stream, where, with
-- on_error set; returns the driver, its output and where.
local function run(input, build, on_error)
  local where
  local d = testing.driver(function()
    local job = sr.job { name = "e", batch = "1s", on_error = on_error }
    local out
    out, where = build(job:queue({ input }, { name = "input" }))
    out:foreach_batch(function() end, { name = "output" })
    return job
  end)
  return d, where
end

-- source: the dead letter's source when not the stage (the source of the
-- record the element came from).
local function assert_dead_letter(dl, stage, op, where, what, source)
  assert.equal(source or stage, dl.source)
  assert.matches(("stage %s (%s at %s): "):format(stage, op, where), dl.reason, 1, true)
  assert.matches(what, dl.reason, 1, true)
end

-- One failing user function per operation: build(stream) -> stream, where.
local CASES = {
  {
    op = "map", input = { 1, 2, 3, 4 }, out = { 10, 20, 40 }, record = "3", offset = 3,
    build = function(s) return s:map(function(x) boom_on(3)(x) return x * 10 end), here() end,
  },
  {
    op = "filter", input = { 1, 2, 3, 4 }, out = { 2, 4 }, record = "3", offset = 3,
    build = function(s) return s:filter(function(x) boom_on(3)(x) return x % 2 == 0 end), here() end,
  },
  {
    op = "flat_map", input = { "a b", "bad", "c" }, out = { "a", "b", "c" }, record = '"bad"', offset = 2,
    build = function(s) return s:flat_map(function(l) boom_on("bad")(l) return sr.words(l) end), here() end,
  },
  {
    op = "map_values", input = { "a", "b", "c" }, out = { { "a", "A" }, { "c", "C" } }, record = '"b"', offset = 2,
    build = function(s)
      local pairs_ = s:map(function(w) return w, w end)
      return pairs_:map_values(function(v) boom_on("b")(v) return v:upper() end), here()
    end,
  },
  {
    op = "flat_map_values", input = { "a", "b" }, out = { { "b", 1 }, { "b", 2 } }, record = '"a"', offset = 1,
    build = function(s)
      local pairs_ = s:map(function(w) return w, w end)
      return pairs_:flat_map_values(function(v) boom_on("a")(v) return { 1, 2 } end), here()
    end,
  },
  {
    op = "key_by", input = { 1, 2, 3 }, out = { { 1, 1 }, { 3, 3 } }, record = "2", offset = 2,
    build = function(s) return s:key_by(boom_on(2)), here() end,
  },
  {
    -- The value 99 fails the reducer; the key's other values still reduce.
    op = "reduce_by_key", input = { 1, 2, 99, 4, 5 }, out = { { "odd", 6 }, { "even", 6 } }, record = '["odd",99]',
    key = '"odd"',
    build = function(s)
      local pairs_ = s:map(function(x) return x % 2 == 0 and "even" or "odd", x end)
      return pairs_:reduce_by_key(function(a, b) boom_on(99)(b) return a + b end), here()
    end,
  },
  {
    op = "reduce", input = { 1, 2, 3, 4 }, out = { 7 }, record = "3",
    build = function(s) return s:reduce(function(a, b) boom_on(3)(b) return a + b end), here() end,
  },
  {
    -- transform sees the whole batch: its failure loses the batch.
    op = "transform", input = { 1, 2 }, out = {}, record = "1000",
    build = function(s)
      return s:transform(function(es, t) if t == 1000 then error("boom in transform") end return es end), here()
    end,
  },
}

describe("a user function that raises", function()
  for _, case in ipairs(CASES) do
    it(("in %s makes the element a dead letter naming the stage, op and file:line; the rest comes out"):format(case.op), function()
      local d, where = run(case.input, case.build)
      local out = d:tick()
      assert.same(case.out, out.output)
      assert.equal(1, #d.dead_letters)
      local dl = d.dead_letters[1]
      -- An element from one record names its source and offset; an
      -- aggregate of many, the stage and -1.
      assert_dead_letter(dl, case.op .. ".1", case.op, where, "boom", case.offset and "input")
      assert.equal(case.offset or -1, dl.offset)
      assert.matches(case.record, dl.record, 1, true)
      if case.key then assert.matches("key " .. case.key .. ": ", dl.reason, 1, true) end
      -- the next batch runs as usual
      d:tick()
      assert.equal(1, #d.dead_letters)
    end)

    it(("in %s with on_error = \"fail\" makes tick raise, naming the stage"):format(case.op), function()
      local d, where = run(case.input, case.build, "fail")
      local ok, err = pcall(d.tick, d)
      assert.is_false(ok)
      assert.equal("string", type(err))
      assert.matches(("batch 1000 ms: stage %s.1 (%s at %s)"):format(case.op, case.op, where), err, 1, true)
      assert.matches("boom", err, 1, true)
      assert.same({}, d.dead_letters)
    end)
  end

  it("in foreach_batch is a dead letter naming the output; other outputs and later batches go on", function()
    local where
    local seen = {}
    local d = testing.driver(function()
      local job = sr.job { name = "e", batch = "1s" }
      local src = job:queue({ { 1, 2 }, { 3 } }, { name = "input" })
      where = here(); src:foreach_batch(function(elements, time_ms)
        if time_ms == 1000 then error("sink down") end
        seen[#seen + 1] = elements
      end, { name = "sink" })
      src:foreach_batch(function() end, { name = "other" })
      return job
    end)
    local out = d:tick()
    assert.same({ 1, 2 }, out.other)
    assert.equal(1, #d.dead_letters)
    assert_dead_letter(d.dead_letters[1], "sink", "foreach_batch", where, "sink down")
    d:tick()
    assert.same({ { 3 } }, seen)
    assert.equal(1, #d.dead_letters)
  end)

  it("in foreach_batch with on_error = \"fail\" makes tick raise, naming the output", function()
    local d = testing.driver(function()
      local job = sr.job { name = "e", batch = "1s", on_error = "fail" }
      job:queue({ { 1 } }):foreach_batch(function() error("sink down") end, { name = "sink" })
      return job
    end)
    local ok, err = pcall(d.tick, d)
    assert.is_false(ok)
    assert.matches("stage sink (foreach_batch at ", err, 1, true)
    assert.matches("sink down", err, 1, true)
  end)

  it("in the middle of a fused chain names that stage and keeps the chain's other elements", function()
    local where
    local d = testing.driver(function()
      local job = sr.job { name = "e", batch = "1s" }
      job:queue({ { 1, 2, 3, 4, 5 } })
        :map(function(x) return x * 10 end)
        :filter(function(x) if x == 30 then error("no thirties") end return true end); where = here()
      local last = job.nodes[#job.nodes].handle
      last:map(function(x) return x + 1 end):foreach_batch(function() end, { name = "output" })
      return job
    end)
    assert.same({ 11, 21, 41, 51 }, d:tick().output)
    assert.equal(1, #d.dead_letters)
    assert_dead_letter(d.dead_letters[1], "filter.1", "filter", where, "no thirties", "queue.1")
    assert.equal(3, d.dead_letters[1].offset)
    assert.equal("30", d.dead_letters[1].record)
  end)

  it("in an iterator flat_map returned names the flat_map stage and keeps what it yielded before", function()
    local where
    local d = testing.driver(function()
      local job = sr.job { name = "e", batch = "1s" }
      local s = job:queue({ { 2, 3, 1 } }):map(function(x) return x end)
      where = here(); s = s:flat_map(function(n)
        local i = 0
        return function()
          i = i + 1
          if n == 3 and i == 3 then error("iterator broke") end
          if i <= n then return n * 10 + i end
        end
      end)
      s:foreach_batch(function() end, { name = "output" })
      return job
    end)
    assert.same({ 21, 22, 31, 32, 11 }, d:tick().output)
    assert.equal(1, #d.dead_letters)
    assert_dead_letter(d.dead_letters[1], "flat_map.1", "flat_map", where, "iterator broke", "queue.1")
    assert.equal(2, d.dead_letters[1].offset)
  end)
end)

describe("bad data", function()
  it("invalid JSON on a json source is a dead letter with the source name and offset", function()
    local d = testing.driver(function()
      local job = sr.job { name = "j", batch = "1s" }
      job:queue({}, { name = "events", format = "json" }):foreach_batch(function() end, { name = "output" })
      return job
    end)
    d:push("events", { '{"n":1}', "{not json", "[1,2]" })
    assert.same({ { n = 1 }, { 1, 2 } }, d:tick().output)
    d:push("events", { "7", '"ok"', "nul" })
    assert.same({ 7, "ok" }, d:tick().output)
    assert.equal(2, #d.dead_letters)
    local a, b = d.dead_letters[1], d.dead_letters[2]
    assert.equal("events", a.source)
    assert.equal(2, a.offset)
    assert.equal("{not json", a.record)
    assert.matches("^invalid JSON", a.reason)
    -- offsets count records across batches
    assert.equal("events", b.source)
    assert.equal(6, b.offset)
    assert.equal("nul", b.record)
  end)

  it("a JSON null on a json source is a dead letter, not an element", function()
    local d = testing.driver(function()
      local job = sr.job { name = "j", batch = "1s" }
      job:queue({}, { name = "events", format = "json" }):foreach_batch(function() end, { name = "output" })
      return job
    end)
    d:push("events", { "null", "1" })
    assert.same({ 1 }, d:tick().output)
    assert.equal(1, #d.dead_letters)
    assert.equal(1, d.dead_letters[1].offset)
    assert.matches("null", d.dead_letters[1].reason, 1, true)
  end)

  it("a single element reaching reduce_by_key is a dead letter naming the stage", function()
    local where
    local d = testing.driver(function()
      local job = sr.job { name = "j", batch = "1s" }
      job:queue({ { "a", "skip", "a" } })
        :map(function(w) if w == "skip" then return w end return w, 1 end)
        :reduce_by_key(sr.add, { name = "counts" }):foreach_batch(function() end, { name = "output" }); where = here()
      return job
    end)
    assert.same({ { "a", 2 } }, d:tick().output)
    assert.equal(1, #d.dead_letters)
    assert_dead_letter(d.dead_letters[1], "counts", "reduce_by_key", where,
      "reduce_by_key needs (k, v) pairs; got the single element skip")
    assert.equal('"skip"', d.dead_letters[1].record)
  end)

  it("a single element and a failing reducer in one batch give one dead letter each", function()
    local d = testing.driver(function()
      local job = sr.job { name = "j", batch = "1s" }
      job:queue({ { 1, 2, 3, 99, 4 } })
        :map(function(x) if x == 3 then return x end return "k", x end)
        :reduce_by_key(function(a, b) if b == 99 then error("bad value") end return a + b end)
        :foreach_batch(function() end, { name = "output" })
      return job
    end)
    assert.same({ { "k", 7 } }, d:tick().output)
    assert.equal(2, #d.dead_letters)
    assert.matches("single element 3", d.dead_letters[1].reason, 1, true)
    assert.matches("bad value", d.dead_letters[2].reason, 1, true)
  end)

  it("a table as a key is a dead letter in keyed operations", function()
    for _, op in ipairs { "reduce_by_key", "group_by_key", "join" } do
      local where
      local d = testing.driver(function()
        local job = sr.job { name = "j", batch = "1s" }
        local s = job:queue({ { 1, 2 } }):map(function(x)
          if x == 2 then return { "table", "key" }, x end
          return x, x
        end)
        local out
        if op == "reduce_by_key" then out = s:reduce_by_key(sr.add); where = here()
        elseif op == "group_by_key" then out = s:group_by_key(); where = here()
        else out = s:join(s); where = here() end
        out:foreach_batch(function() end, { name = "output" })
        return job
      end)
      local expected = { reduce_by_key = { { 1, 1 } }, group_by_key = { { 1, { 1 } } }, join = { { 1, { 1, 1 } } } }
      assert.same(expected[op], d:tick().output)
      assert.is_true(#d.dead_letters >= 1)
      for _, dl in ipairs(d.dead_letters) do
        assert_dead_letter(dl, op .. ".1", op, where, "key must be a string, number or boolean, got table")
      end
    end
  end)

  it("a single element reaching map_values is a dead letter naming the stage", function()
    local where
    local d = testing.driver(function()
      local job = sr.job { name = "j", batch = "1s" }
      job:queue({ { "a", "b" } })
        :map(function(w) if w == "b" then return w end return w, 1 end)
        :map_values(function(v) return v + 1 end):foreach_batch(function() end, { name = "output" }); where = here()
      return job
    end)
    assert.same({ { "a", 2 } }, d:tick().output)
    assert.equal(1, #d.dead_letters)
    assert_dead_letter(d.dead_letters[1], "map_values.1", "map_values", where, "needs a (k, v) pair", "queue.1")
    assert.equal(2, d.dead_letters[1].offset)
  end)
end)

describe("os.exit in job code", function()
  it("is an error of its record, in the job file and in a module beside it; the job goes on", function()
    local d = testing.driver("spec/e2e/jobs/os_exit.lua")
    d:push("lines", { "a", "exit", "quit", "b" })
    assert.same({ "A", "B" }, d:tick()["print.1"])
    assert.equal(2, #d.dead_letters)
    local exit, quit = d.dead_letters[1], d.dead_letters[2]
    assert.matches("stage shout (map at ", exit.reason, 1, true)
    assert.matches("os_exit.lua:8: os.exit(7) called in job code", exit.reason, 1, true)
    assert.equal('"exit"', exit.record)
    assert.matches("quitter.lua:5: os.exit(8) called in job code", quit.reason, 1, true)
    assert.equal('"quit"', quit.record)
    -- the runtime's own os.exit is untouched
    assert.are_not.equal(os.exit, require("streamrun.loader").env.os.exit)
  end)
end)

describe("a failing record", function()
  -- Counts calls by name.
  local function counter()
    local calls = {}
    return calls, function(name) calls[name] = (calls[name] or 0) + 1 end
  end

  local function driver(build)
    return testing.driver(function()
      local job = sr.job { name = "once", batch = "1s" }
      build(job):foreach_batch(function() end, { name = "output" })
      return job
    end)
  end

  it("runs each function of a fused chain once per element, before and after the failing stage", function()
    local calls, count = counter()
    local d = driver(function(job)
      return job:queue({ { 1, 2, 3, 4, 5 } }, { name = "input" })
        :map(function(x) count("map") return x * 10 end)
        :filter(function(x) count("filter") if x == 30 then error("no thirties") end return true end)
        :map(function(x) count("after") return x + 1 end)
    end)
    assert.same({ 11, 21, 41, 51 }, d:tick().output)
    assert.same({ map = 5, filter = 5, after = 4 }, calls)
    assert.equal(1, #d.dead_letters)
  end)

  it("finishes the rest of a flat_map's array and iterator at every depth, calling each function once", function()
    local calls, count = counter()
    local d = driver(function(job)
      return job:queue({ { 1, 2, 3 } }, { name = "input" })
        :flat_map(function(x) count("outer") return { x * 10, x * 10 + 1, x * 10 + 2 } end)
        :flat_map(function(y)
          count("inner")
          local i = 0
          return function()
            i = i + 1
            if i <= 2 then return y * 10 + i end
          end
        end)
        :map(function(z) count("last") if z == 212 then error("bad " .. z) end return z end)
    end)
    assert.same({ 101, 102, 111, 112, 121, 122, 201, 202, 211, 221, 222, 301, 302, 311, 312, 321, 322 },
      d:tick().output)
    assert.same({ outer = 3, inner = 9, last = 18 }, calls)
    assert.equal(1, #d.dead_letters)
    local dl = d.dead_letters[1]
    assert.equal("input", dl.source)
    assert.equal(2, dl.offset)
    assert.equal("212", dl.record)
  end)

  it("calls reduce_by_key's and reduce's function once per merge and the stages before once", function()
    local calls, count = counter()
    local d = driver(function(job)
      local s = job:queue({ { 1, 2, 3, 99, 4, 5 } }, { name = "input" })
        :map(function(x) count("map") return x % 2 == 0 and "even" or "odd", x end)
      local sums = s:reduce_by_key(function(a, b)
        count("reduce_by_key")
        if b == 99 then error("bad value") end
        return a + b
      end)
      return sums:map(function(k, v) count("after") return k, v end)
    end)
    assert.same({ { "odd", 9 }, { "even", 6 } }, d:tick().output)
    -- odd: 1+3, (99 fails), +5; even: 2+4
    assert.same({ map = 6, reduce_by_key = 4, after = 2 }, calls)
    assert.equal(1, #d.dead_letters)

    calls = {}
    local d2 = driver(function(job)
      return job:queue({ { 1, 2, 3, 4 } }, { name = "input" })
        :reduce(function(a, b) calls[#calls + 1] = b if b == 3 then error("no 3") end return a + b end)
    end)
    assert.same({ 7 }, d2:tick().output)
    assert.same({ 2, 3, 4 }, calls)
  end)

  it("built-in reducers on a bad value are a dead letter of that value only", function()
    local d = driver(function(job)
      return job:queue({ { 1, 2, "x", 4 } }, { name = "input" })
        :map(function(x) return "k", x end):reduce_by_key(sr.add)
    end)
    assert.same({ { "k", 7 } }, d:tick().output)
    assert.equal(1, #d.dead_letters)
    assert.matches("arithmetic", d.dead_letters[1].reason, 1, true)
  end)
end)

describe("a dead letter of an element from one record", function()
  it("names the source and the record's offset through forks, unions and map_with_state", function()
    local d = testing.driver(function()
      local job = sr.job { name = "origin", batch = "1s" }
      local a = job:queue({}, { name = "a" }):map(function(x) return x end)
      local b = job:queue({}, { name = "b" }):filter(function(x) return x ~= "skip" end)
      a:map(function(x) return x end):foreach_batch(function() end, { name = "fork" })
      local both = a:union(b)
      both:map(function(x) if x == "bad" then error("bad " .. x) end return x, 1 end)
        :map_with_state(sr.state_spec(function(k, v, state)
          if k == "worse" then error("worse") end
          state:update(v)
          return k
        end):name("st"))
        :foreach_batch(function() end, { name = "output" })
      return job
    end)
    d:push("a", { "x", "bad", "y" })
    d:push("b", { "skip", "skip", "worse", "bad" })
    d:tick()
    d:push("b", { "bad" })
    d:tick()
    local got = {}
    for _, dl in ipairs(d.dead_letters) do
      got[#got + 1] = ("%s %d %s"):format(dl.source, dl.offset, dl.reason:match("^stage (%S+)"))
    end
    assert.same({ "a 2 map.3", "b 4 map.3", "b 3 st", "b 5 map.3" }, got)
  end)

  it("names the offset of a C source's record, after records a JSON source dropped", function()
    local d = testing.driver(function()
      local job = sr.job { name = "origin", batch = "1s" }
      job:queue({}, { name = "events", format = "json" })
        :map(function(e) if e.bad then error("bad event") end return e end)
        :foreach_batch(function() end, { name = "output" })
      return job
    end)
    d:push("events", { '{"n":1}', "{nope", "null", '{"bad":true}', '{"n":2}' })
    d:tick()
    assert.equal(3, #d.dead_letters)
    local dl = d.dead_letters[3]
    assert.equal("events", dl.source)
    assert.equal(4, dl.offset)
    assert.matches("bad event", dl.reason, 1, true)
  end)
end)

describe("a stack overflow in a user function", function()
  -- Too deep for the error handler to run: the failing element is still
  -- found and its dead letter written, in a chain and in the reducing loops.
  local function rec(n) return 1 + rec(n + 1) end

  it("is a dead letter of its element in a chain, in reduce_by_key and in reduce", function()
    local d = testing.driver(function()
      local job = sr.job { name = "so", batch = "1s" }
      local s = job:queue({ { 1, 2, 3, 4 } }, { name = "input" })
      s:flat_map(function(x) return { x, x } end)
        :map(function(x) if x == 2 then return rec(1) end return x end)
        :foreach_batch(function() end, { name = "chain" })
      s:map(function(x) return "k", x end)
        :reduce_by_key(function(a, b) if b == 3 then return rec(1) end return a + b end)
        :foreach_batch(function() end, { name = "by_key" })
      s:reduce(function(a, b) if b == 2 then return rec(1) end return a + b end)
        :foreach_batch(function() end, { name = "reduce" })
      return job
    end)
    local out = d:tick()
    assert.same({ 1, 1, 3, 3, 4, 4 }, out.chain)
    assert.same({ { "k", 7 } }, out.by_key)
    assert.same({ 8 }, out.reduce)
    assert.equal(4, #d.dead_letters)
    assert.matches("stack overflow", d.dead_letters[1].reason, 1, true)
    assert.equal(2, d.dead_letters[1].offset)
  end)
end)
