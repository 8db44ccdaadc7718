-- Fusion of narrow stages (streamrun.compile + streamrun.fuse): consecutive
-- narrow stages whose input has no other consumer run as one generated loop
-- per batch; a fork ends the chain. And the narrow operations' element
-- rules: flat_map takes an array or an iterator (whose pairs are pairs),
-- nil from map drops the element.
local sr = require "streamrun"
local compile = require "streamrun.compile"
local testing = require "streamrun.testing"

local function id(x) return x end
local function pair(x) return x, 1 end
local function keep() return true end

-- The plan's steps as { kind, names } for a job.
local function steps_of(job)
  local plan = compile.compile(job, {
    on_error = "dead_letter",
    dead_letter = function() end,
    sink = { stdout = io.stdout, quiet_print = true },
  })
  local out = {}
  for _, step in ipairs(plan.steps) do
    local names = {}
    for _, node in ipairs(step.stages or { step.node }) do names[#names + 1] = node.stage_name end
    out[#out + 1] = { step.kind, table.concat(names, " > ") }
  end
  return out, plan
end

-- Runs batches through build(job) and returns the driver's outputs by name.
local function drive(batches, build)
  local d = testing.driver(function()
    local job = sr.job { name = "f", batch = "1s" }
    build(job:queue(batches, { name = "in" }))
    return job
  end)
  d:tick(#batches)
  return d
end

describe("fusion", function()
  it("fuses a chain of narrow stages with single consumers into one step", function()
    local job = sr.job { name = "f" }
    job:queue({})
      :map(pair):filter(keep):map_values(id):flat_map_values(function(v) return { v } end)
      :key_by(id):print()
    local steps, plan = steps_of(job)
    assert.same({
      { "source", "queue.1" },
      { "chain", "map.1 > filter.1 > map_values.1 > flat_map_values.1 > key_by.1" },
      { "output", "print.1" },
    }, steps)
    assert.equal("stages map.1 > filter.1 > map_values.1 > flat_map_values.1 > key_by.1", plan.steps[2].fused.name)
  end)

  it("ends a chain at a wide stage and starts a new one after it", function()
    local job = sr.job { name = "f" }
    local a = job:queue({}):flat_map(sr.words):map(pair)
    a:reduce_by_key(sr.add):map_values(id):filter(keep)
      :union(a:map(id)):map(id):print()
    assert.same({
      { "source", "queue.1" },
      { "chain", "flat_map.1 > map.1" },
      { "wide", "reduce_by_key.1" },
      { "chain", "map_values.1 > filter.1" },
      { "chain", "map.2" },
      { "wide", "union.1" },
      { "chain", "map.3" },
      { "output", "print.1" },
    }, steps_of(job))
  end)

  it("does not fuse past a stream consumed by two stages", function()
    local job = sr.job { name = "f" }
    local m = job:queue({}):map(id):filter(keep)
    m:print()
    m:map(id):map(id):print()
    local n = m:map(pair)
    n:filter(keep):print()
    n:map_values(id):print()
    assert.same({
      { "source", "queue.1" },
      { "chain", "map.1 > filter.1" },
      { "output", "print.1" },
      { "chain", "map.2 > map.3" },
      { "output", "print.2" },
      { "chain", "map.4" },
      { "chain", "filter.2" },
      { "output", "print.3" },
      { "chain", "map_values.1" },
      { "output", "print.4" },
    }, steps_of(job))
  end)

  it("gives both sides of a fork every element, each function called once per element", function()
    local calls = { m = 0, a = 0, b = 0 }
    local d = drive({ { 1, 2, 3 }, { 4 } }, function(s)
      local m = s:map(function(x) calls.m = calls.m + 1 return x * 10 end)
      m:map(function(x) calls.a = calls.a + 1 return x + 1 end):foreach_batch(id, { name = "a" })
      m:filter(function(x) calls.b = calls.b + 1 return x ~= 20 end):foreach_batch(id, { name = "b" })
      m:foreach_batch(id, { name = "m" })
    end)
    assert.same({ { 11, 21, 31 }, { 41 } }, d:outputs("a"))
    assert.same({ { 10, 30 }, { 40 } }, d:outputs("b"))
    assert.same({ { 10, 20, 30 }, { 40 } }, d:outputs("m"))
    assert.same({ m = 4, a = 4, b = 4 }, calls)
  end)

  it("runs a fused chain as the stages one after another would", function()
    local d = drive({ { "a b", "c", "" }, { "dd e" } }, function(s)
      s:flat_map(sr.words)
        :map(function(w) return w, #w end)
        :filter(function(k, v) return k ~= "c" end)
        :map_values(function(v) return v * 100 end)
        :flat_map_values(function(v) return { v, v + 1 } end)
        :foreach_batch(id, { name = "out" })
    end)
    assert.same({
      { { "a", 100 }, { "a", 101 }, { "b", 100 }, { "b", 101 } },
      { { "dd", 200 }, { "dd", 201 }, { "e", 100 }, { "e", 101 } },
    }, d:outputs("out"))
  end)
end)

describe("flat_map(sr.words) in the loop", function()
  it("cuts the words as sr.words does, with no array per line", function()
    local lines = { "a  b\tc\r\n", "", "   ", "\0x y\0", "\v\fend" }
    local want = {}
    for _, l in ipairs(lines) do for _, w in ipairs(sr.words(l)) do want[#want + 1] = w end end
    local d = drive({ lines }, function(s) s:flat_map(sr.words):foreach_batch(id, { name = "out" }) end)
    assert.same({ want }, d:outputs("out"))
    assert.same({ "a", "b", "c", "\0x", "y\0", "end" }, want)
  end)

  it("goes on with the rest of a line's words after a failing call, each word once", function()
    local seen = {}
    local d = drive({ { "a b boom c d", "e" } }, function(s)
      s:flat_map(sr.words)
        :map(function(w) seen[#seen + 1] = w if w == "boom" then error("no boom") end return w end)
        :foreach_batch(id, { name = "out" })
    end)
    assert.same({ { "a", "b", "c", "d", "e" } }, d:outputs("out"))
    assert.same({ "a", "b", "boom", "c", "d", "e" }, seen)
    assert.equal(1, #d.dead_letters)
    assert.matches("no boom", d.dead_letters[1].reason, 1, true)
    assert.equal('"boom"', d.dead_letters[1].record)
  end)

  it("hands what is not a string to sr.words, which fails on it as it would", function()
    local d = drive({ { "x y", 5, "z" } }, function(s)
      s:flat_map(sr.words):foreach_batch(id, { name = "out" })
    end)
    assert.same({ { "x", "y", "z" } }, d:outputs("out"))
    assert.equal(1, #d.dead_letters)
    assert.equal("5", d.dead_letters[1].record)
  end)
end)

describe("narrow element rules", function()
  it("flat_map takes an array", function()
    local d = drive({ { 1, 2, 0 } }, function(s)
      s:flat_map(function(n)
        local out = {}
        for i = 1, n do out[i] = n * 10 + i end
        return out
      end):foreach_batch(id, { name = "out" })
    end)
    assert.same({ { 11, 21, 22 } }, d:outputs("out"))
  end)

  it("flat_map takes an iterator", function()
    local d = drive({ { "a1b22", "", "c333" } }, function(s)
      s:flat_map(function(l) return l:gmatch("%d+") end):foreach_batch(id, { name = "out" })
    end)
    assert.same({ { "1", "22", "333" } }, d:outputs("out"))
  end)

  it("flat_map takes a coroutine as an iterator", function()
    local d = drive({ { 3, 1 } }, function(s)
      s:flat_map(function(n)
        return coroutine.wrap(function() for i = n, 1, -1 do coroutine.yield(i) end end)
      end):foreach_batch(id, { name = "out" })
    end)
    assert.same({ { 3, 2, 1, 1 } }, d:outputs("out"))
  end)

  it("flat_map's iterator yielding two values makes pairs that keyed operations take", function()
    local d = drive({ { "a=1 b=2", "a=5" }, { "c=7" } }, function(s)
      local kv = s:flat_map(function(l) return l:gmatch("(%w+)=(%d+)") end)
      kv:foreach_batch(id, { name = "pairs" })
      kv:map_values(tonumber):reduce_by_key(sr.add):foreach_batch(id, { name = "sums" })
    end)
    assert.same({ { { "a", "1" }, { "b", "2" }, { "a", "5" } }, { { "c", "7" } } }, d:outputs("pairs"))
    assert.same({ { { "a", 6 }, { "b", 2 } }, { { "c", 7 } } }, d:outputs("sums"))
  end)

  it("flat_map_values takes an array or an iterator and keeps the key", function()
    local d = drive({ { "x", "yy" } }, function(s)
      local kv = s:map(function(w) return w, w end)
      kv:flat_map_values(function(v) return { #v, v } end):foreach_batch(id, { name = "array" })
      kv:flat_map_values(function(v) return v:gmatch(".") end):foreach_batch(id, { name = "iter" })
    end)
    assert.same({ { { "x", 1 }, { "x", "x" }, { "yy", 2 }, { "yy", "yy" } } }, d:outputs("array"))
    assert.same({ { { "x", "x" }, { "yy", "y" }, { "yy", "y" } } }, d:outputs("iter"))
  end)

  it("flat_map returning nil or an empty array drops the element", function()
    local d = drive({ { 1, 2, 3 } }, function(s)
      s:flat_map(function(x)
        if x == 1 then return nil end
        if x == 2 then return {} end
        return { x }
      end):foreach_batch(id, { name = "out" })
    end)
    assert.same({ { 3 } }, d:outputs("out"))
  end)

  it("flat_map returning something that is neither an array nor an iterator is a dead letter", function()
    local d = drive({ { 1, 2 } }, function(s)
      s:flat_map(function(x) if x == 2 then return "oops" end return { x } end):foreach_batch(id, { name = "out" })
    end)
    assert.same({ { 1 } }, d:outputs("out"))
    assert.equal(1, #d.dead_letters)
    assert.equal("in", d.dead_letters[1].source)
    assert.equal(2, d.dead_letters[1].offset)
    assert.matches("stage flat_map.1 (flat_map at ", d.dead_letters[1].reason, 1, true)
    assert.matches("must return an array or an iterator, got string", d.dead_letters[1].reason, 1, true)
  end)

  it("nil from map drops the element; one value makes a single element, two a pair", function()
    local d = drive({ { 1, 2, 3, 4 } }, function(s)
      s:map(function(x)
        if x == 2 then return nil end
        if x == 3 then return "three" end
        return x, x * x
      end):foreach_batch(id, { name = "out" })
    end)
    assert.same({ { { 1, 1 }, "three", { 4, 16 } } }, d:outputs("out"))
  end)

  it("filter sees (k, v) on a keyed stream and keeps the pairs", function()
    local d = drive({ { "a", "bb", "ccc" } }, function(s)
      s:map(function(w) return w, #w end):filter(function(k, v) return v ~= 2 and k ~= "" end)
        :foreach_batch(id, { name = "out" })
    end)
    assert.same({ { { "a", 1 }, { "ccc", 3 } } }, d:outputs("out"))
  end)

  it("key_by returning nil drops the element", function()
    local d = drive({ { 1, 2, 3 } }, function(s)
      s:key_by(function(x) if x ~= 2 then return "k" .. x end end):foreach_batch(id, { name = "out" })
    end)
    assert.same({ { { "k1", 1 }, { "k3", 3 } } }, d:outputs("out"))
  end)
end)
