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

local function assert_dead_letter(dl, stage, op, where, what)
  assert.equal(stage, dl.source)
  assert.matches(("stage %s (%s at %s): "):format(stage, op, where), dl.reason, 1, true)
  assert.matches(what, dl.reason, 1, true)
end

-- One failing user function per operation: build(stream) -> stream, where.
local CASES = {
  {
    op = "map", input = { 1, 2, 3, 4 }, out = { 10, 20, 40 }, record = "3",
    build = function(s) return s:map(function(x) boom_on(3)(x) return x * 10 end), here() end,
  },
  {
    op = "filter", input = { 1, 2, 3, 4 }, out = { 2, 4 }, record = "3",
    build = function(s) return s:filter(function(x) boom_on(3)(x) return x % 2 == 0 end), here() end,
  },
  {
    op = "flat_map", input = { "a b", "bad", "c" }, out = { "a", "b", "c" }, record = '"bad"',
    build = function(s) return s:flat_map(function(l) boom_on("bad")(l) return sr.words(l) end), here() end,
  },
  {
    op = "map_values", input = { "a", "b", "c" }, out = { { "a", "A" }, { "c", "C" } }, record = '"b"',
    build = function(s)
      local pairs_ = s:map(function(w) return w, w end)
      return pairs_:map_values(function(v) boom_on("b")(v) return v:upper() end), here()
    end,
  },
  {
    op = "flat_map_values", input = { "a", "b" }, out = { { "b", 1 }, { "b", 2 } }, record = '"a"',
    build = function(s)
      local pairs_ = s:map(function(w) return w, w end)
      return pairs_:flat_map_values(function(v) boom_on("a")(v) return { 1, 2 } end), here()
    end,
  },
  {
    op = "key_by", input = { 1, 2, 3 }, out = { { 1, 1 }, { 3, 3 } }, record = "2",
    build = function(s) return s:key_by(boom_on(2)), here() end,
  },
  {
    -- The value 99 fails the reducer; the key's other values still reduce.
    op = "reduce_by_key", input = { 1, 2, 99, 4, 5 }, out = { { "odd", 6 }, { "even", 6 } }, record = "99",
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
      assert_dead_letter(dl, case.op .. ".1", case.op, where, "boom")
      assert.equal(-1, dl.offset)
      assert.matches(case.record, dl.record, 1, true)
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
    assert_dead_letter(d.dead_letters[1], "filter.1", "filter", where, "no thirties")
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
    assert_dead_letter(d.dead_letters[1], "flat_map.1", "flat_map", where, "iterator broke")
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
    assert_dead_letter(d.dead_letters[1], "map_values.1", "map_values", where, "needs a (k, v) pair")
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
