-- A fused chain folding into its only consumer, reduce_by_key or
-- count_by_value (streamrun.fuse's sink): the same output, dead letters and
-- calls as the chain's batch handed to the stage, which is what runs when
-- the chain has another consumer.
local sr = require "streamrun"
local testing = require "streamrun.testing"

local function kinds(d)
  local k = {}
  for i, step in ipairs(d.plan.steps) do k[i] = step.kind end
  return table.concat(k, " ")
end

-- Two drivers over the same job: folded (the chain's only consumer is the
-- stage) and not (a second consumer of the chain's last stage).
local function pair_of(build)
  local function make(fork)
    return testing.driver(function()
      local job = sr.job { name = "s", batch = "1s" }
      local out = build(job:queue({}, { name = "in" }), fork)
      out:foreach_batch(function() end, { name = "out" })
      return job
    end)
  end
  return make(false), make(true)
end

local function same_run(build, batches)
  local folded, plain = pair_of(build)
  assert.equal("source chain output", kinds(folded))
  assert.is_not_nil(kinds(plain):find("wide"))
  for _, b in ipairs(batches) do
    folded:push("in", b)
    plain:push("in", b)
    local got, want = folded:tick().out, plain:tick().out
    assert.same(want, got)
  end
  assert.equal(#plain.dead_letters, #folded.dead_letters)
  for i, dl in ipairs(plain.dead_letters) do
    assert.equal(dl.reason:match("[^\n]*"), folded.dead_letters[i].reason:match("[^\n]*"))
    assert.equal(dl.record, folded.dead_letters[i].record)
    assert.equal(dl.source, folded.dead_letters[i].source)
  end
  return folded
end

local function tap(s, fork)
  if fork then s:foreach_batch(function() end) end
  return s
end

describe("a chain folded into reduce_by_key", function()
  it("gives the stage's keys in order of first appearance, with the user's reducer", function()
    local calls = 0
    local d = same_run(function(s, fork)
      return tap(s:flat_map(sr.words):map(function(w) return w:lower(), 1 end), fork)
        :reduce_by_key(function(a, b) calls = calls + 1 return a + b end)
    end, { { "b A a", "B c" }, {}, { "c" } })
    assert.same({}, d:tick().out)
    -- Each reducer call made once per run: 2 runs x (a, b) folds.
    assert.equal(4, calls)
  end)

  it("reports single elements, bad keys and a failing reducer as the stage does", function()
    same_run(function(s, fork)
      return tap(s:flat_map(function(x) return { x, x } end):map(function(x)
        if x == 3 then return x end
        if x == 4 then return 0 / 0, 1 end
        if x == 5 then return { "t" }, 1 end
        return x % 2, x
      end), fork):reduce_by_key(function(a, b) if b == 6 then error("six") end return a + b end, { name = "r" })
    end, { { 1, 2, 3, 4, 5, 6, 7, 8 } })
  end)

  it("goes on after a failing reducer with the rest of the element's outputs", function()
    local d = same_run(function(s, fork)
      return tap(s:flat_map(sr.words):map(function(w) return "k", tonumber(w) end), fork)
        :reduce_by_key(function(a, b) if b == 2 then error("two") end return a + b end)
    end, { { "1 2 3", "4" } })
    assert.equal(1, #d.dead_letters)
  end)

  it("uses the built-in reducers' folds", function()
    same_run(function(s, fork)
      return tap(s:map(function(x) return x % 3, x end), fork):reduce_by_key(sr.max)
    end, { { 5, 1, 9, 3, 2 } })
  end)
end)

describe("a chain folded into count_by_value", function()
  it("counts strings, numbers, booleans, pairs, tables and NUL-led strings as the stage does", function()
    local vals = { "a", "\0s", "\0sx", 1, 1.5, true, false, "a", 1, "\0" }
    same_run(function(s, fork)
      return tap(s:flat_map(function(i)
        if i == 1 then return vals end
        if i == 2 then return function(_, c) c = (c or 0) + 1 if c <= 3 then return c, "v" end end end
        return { { x = 1 }, { x = 1 }, { 1, 2 } }
      end), fork):count_by_value()
    end, { { 1, 2, 3 }, { 3, 1 } })
  end)
end)
