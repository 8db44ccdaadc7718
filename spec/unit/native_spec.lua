-- The native word count: the compiler runs the built-ins
-- flat_map(sr.words) -> count_by_value(), asked for by name, in C, with
-- exactly the output of the Lua stages (words in order of first appearance,
-- their counts). A user's own function is never recognized: written with
-- one, a job runs on the generic path.
local sr = require "streamrun"
local testing = require "streamrun.testing"

-- lines -> flat_map(sr.words) -> [between] -> count_by_value -> "counts".
local function job_with(between, opts)
  return function()
    local job = sr.job { name = "wc", batch = "1s" }
    local s = job:queue({}, { name = "lines", format = opts and opts.format }):flat_map(sr.words)
    if between then s = between(s) end
    s:count_by_value():foreach_batch(function() end, { name = "counts" })
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
  it("runs flat_map(sr.words):count_by_value() in C, as the Lua stages would", function()
    local fast = testing.driver(job_with())
    -- An identity map between them: the same result, on the generic path.
    local slow = testing.driver(job_with(function(s) return s:map(function(w) return w end) end))
    assert.equal("source native output", kinds(fast))
    assert.equal("source chain output", kinds(slow)) -- the chain folds into count_by_value
    for seed = 1, 30 do
      local lines = random_lines(seed, 1 + seed * 7)
      fast:push("lines", lines)
      slow:push("lines", lines)
      local want, got = slow:tick().counts, fast:tick().counts
      assert.same(want, got, "seed " .. seed)
    end
  end)

  it("keeps a word starting with NUL and counts past the C counter's first table", function()
    local fast = testing.driver(job_with())
    local slow = testing.driver(job_with(function(s) return s:map(function(w) return w end) end))
    local lines = { "\0a \0a b\0 b\0 \0" }
    for i = 1, 3000 do lines[#lines + 1] = ("w%d w%d x"):format(i, i % 97) end
    fast:push("lines", lines)
    slow:push("lines", lines)
    local want, got = slow:tick().counts, fast:tick().counts
    assert.equal(3000 + 1 + 1 + 3, #want) -- w1..w3000, w0, x, the NUL words
    assert.same(want, got)
  end)

  it("never recognizes a user's pairing map, however it is written", function()
    local up = 1
    local forms = {
      function(w) return w, 1 end,
      function(word) return word, 1 end,
      function(w) return w, up end,
      function(w) return w, 1.0 * 1 end,
    }
    for i, pair in ipairs(forms) do
      local d = testing.driver(function()
        local job = sr.job { name = "wc", batch = "1s" }
        job:queue({}, { name = "lines" }):flat_map(sr.words):map(pair):reduce_by_key(sr.add)
           :foreach_batch(function() end, { name = "counts" })
        return job
      end)
      assert.equal("source chain output", kinds(d), "form " .. i) -- the user's map, folded into reduce_by_key
      d:push("lines", { "a b a", "b a" })
      assert.same({ { "a", 3 }, { "b", 2 } }, d:tick().counts, "form " .. i)
    end
  end)

  it("is not used when the words have another consumer or the source is JSON", function()
    local d = testing.driver(function()
      local job = sr.job { name = "wc", batch = "1s" }
      local words = job:queue({}, { name = "lines" }):flat_map(sr.words)
      words:count_by_value():foreach_batch(function() end)
      words:foreach_batch(function() end)
      return job
    end)
    assert.is_nil(kinds(d):find("native"))
    local j = testing.driver(job_with(nil, { format = "json" }))
    assert.is_nil(kinds(j):find("native"))
    -- A user's flat_map that splits the same way is not sr.words.
    local own = testing.driver(function()
      local job = sr.job { name = "wc", batch = "1s" }
      job:queue({}, { name = "lines" }):flat_map(function(s) return sr.words(s) end):count_by_value()
         :foreach_batch(function() end)
      return job
    end)
    assert.is_nil(kinds(own):find("native"))
  end)

  it("leaves a pushed value that is not a line to the Lua stages, which report it", function()
    local fast = testing.driver(job_with())
    local slow = testing.driver(job_with(function(s) return s:map(function(w) return w end) end))
    assert.equal("source native output", kinds(fast))
    for _, d in ipairs({ fast, slow }) do d:push("lines", { "a b", { 1 }, "b" }) end
    local want, got = slow:tick().counts, fast:tick().counts
    assert.same({ { "a", 1 }, { "b", 2 } }, got)
    assert.same(want, got)
    assert.equal(#slow.dead_letters, #fast.dead_letters)
    assert.equal(1, #fast.dead_letters)
  end)
end)
