-- The native word count: the compiler runs flat_map(sr.words) ->
-- map(w -> (w, 1)) -> reduce_by_key(sr.add) in C, with exactly the output
-- of the Lua stages (keys in order of first appearance, their counts).
local sr = require "streamrun"
local testing = require "streamrun.testing"
local native = require "streamrun.native"

local function job_with(pair_fn, reducer)
  return function()
    local job = sr.job { name = "wc", batch = "1s" }
    job:queue({}, { name = "lines" })
       :flat_map(sr.words)
       :map(pair_fn)
       :reduce_by_key(reducer or sr.add)
       :foreach_batch(function() end, { name = "counts" })
    return job
  end
end

local function kinds(d)
  local k = {}
  for i, step in ipairs(d.plan.steps) do k[i] = step.kind end
  return table.concat(k, " ")
end

-- A line generator: words from a small vocabulary with every whitespace
-- byte sr.words splits on, and empty lines.
local function random_lines(seed, n)
  local x = seed
  local function rnd(m)
    x = (x * 1103515245 + 12345) % 2147483648
    return x % m
  end
  local vocab = { "a", "bb", "ccc", "A", "b-b", "ünï", "x1", "1", "true" }
  local spaces = { " ", "  ", "\t", "\r", "\v", "\f" }
  local lines = {}
  for i = 1, n do
    local parts = {}
    for j = 1, rnd(8) do parts[j] = vocab[rnd(#vocab) + 1] .. spaces[rnd(#spaces) + 1] end
    lines[i] = (rnd(3) == 0 and " " or "") .. table.concat(parts)
  end
  return lines
end

describe("native word count", function()
  it("is used for the word-count pattern and gives what the Lua stages give", function()
    local fast = testing.driver(job_with(function(w) return w, 1 end))
    local slow = testing.driver(job_with(function(w) return w, 1.0 * 1 end, function(a, b) return a + b end))
    assert.equal("source native output", kinds(fast))
    assert.equal("source chain wide output", kinds(slow))
    for seed = 1, 30 do
      local lines = random_lines(seed, 1 + seed * 7)
      fast:push("lines", lines)
      slow:push("lines", lines)
      assert.same(slow:tick().counts, fast:tick().counts, "seed " .. seed)
    end
  end)

  it("recognizes only `function(w) return w, 1 end` as the pairing map", function()
    local up = 1
    assert.is_true(native.pairs_with_one(function(w) return w, 1 end))
    assert.is_true(native.pairs_with_one(function(word) return word, 1 end))
    assert.is_false(native.pairs_with_one(function(w) return w, 2 end))
    assert.is_false(native.pairs_with_one(function(w) return w, up end))
    assert.is_false(native.pairs_with_one(function(w) return w:lower(), 1 end))
    assert.is_false(native.pairs_with_one(function(w, x) return w, 1 end))
    assert.is_false(native.pairs_with_one(function(w) return 1, w end))
    assert.is_false(native.pairs_with_one(print))
  end)

  it("is not used when the map's result is consumed twice or the source is JSON", function()
    local d = testing.driver(function()
      local job = sr.job { name = "wc", batch = "1s" }
      local pairs_ = job:queue({}, { name = "lines" }):flat_map(sr.words):map(function(w) return w, 1 end)
      pairs_:reduce_by_key(sr.add):foreach_batch(function() end)
      pairs_:foreach_batch(function() end)
      return job
    end)
    assert.is_nil(kinds(d):find("native"))
    local j = testing.driver(function()
      local job = sr.job { name = "wc", batch = "1s" }
      job:queue({}, { name = "lines", format = "json" }):flat_map(sr.words):map(function(w) return w, 1 end)
         :reduce_by_key(sr.add):foreach_batch(function() end)
      return job
    end)
    assert.is_nil(kinds(j):find("native"))
  end)
end)
