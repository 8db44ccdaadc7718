-- streamrun.retrace: a VM's traces are flushed when a stateful stage's
-- batches turn from mostly new keys to mostly known ones (or back), at most
-- MAX_FLUSHES times a stage; the stage's outputs are the same either way.
local sr = require "streamrun"
local testing = require "streamrun.testing"

-- A fresh copy of the module (its counts are the VM's), with jit.flush
-- counted instead of run.
local function fresh()
  local shared = package.loaded["streamrun.retrace"]
  package.loaded["streamrun.retrace"] = nil
  local retrace = require "streamrun.retrace"
  package.loaded["streamrun.retrace"] = shared
  return retrace
end

describe("retrace.note", function()
  local real_flush, calls
  before_each(function()
    real_flush, calls = jit.flush, 0
    jit.flush = function() calls = calls + 1 end
  end)
  after_each(function() jit.flush = real_flush end)

  it("flushes when a stage's share of new keys crosses one half, not before", function()
    local retrace, node = fresh(), {}
    retrace.note(node, 5000, 5000) -- compiled while keys were new
    retrace.note(node, 5000, 2600)
    assert.equal(0, calls)
    retrace.note(node, 5000, 2500) -- half: no longer mostly new
    assert.equal(1, calls)
    retrace.note(node, 5000, 0)
    assert.equal(1, calls)
    retrace.note(node, 5000, 4000) -- and back
    assert.equal(2, calls)
    assert.equal(2, retrace.flushes())
  end)

  it("ignores small batches", function()
    local retrace, node = fresh(), {}
    retrace.note(node, 999, 999)
    retrace.note(node, 999, 0)
    retrace.note(node, 1000, 0)
    retrace.note(node, 999, 999)
    assert.equal(0, calls)
  end)

  it("takes each stage's phase again after a flush, and flushes at most MAX_FLUSHES times a stage", function()
    local retrace, a, b = fresh(), {}, {}
    retrace.note(a, 2000, 2000)
    retrace.note(b, 2000, 0)
    retrace.note(a, 2000, 0) -- a flips: flush
    assert.equal(1, calls)
    retrace.note(b, 2000, 2000) -- b's phase was of the flushed traces
    assert.equal(1, calls)
    for i = 1, 10 do retrace.note(b, 2000, i % 2 == 0 and 2000 or 0) end
    assert.equal(1 + retrace.MAX_FLUSHES, calls)
    retrace.note(a, 2000, 2000) -- a has flushes left
    retrace.note(a, 2000, 0)
    assert.equal(2 + retrace.MAX_FLUSHES, calls)
    assert.equal(calls, retrace.flushes())
  end)
end)

describe("retrace in a job", function()
  local function counts(state_stage)
    return function()
      local job = sr.job { name = "retrace", batch = "1s" }
      local keyed = job:queue({}, { name = "keys" }):map(function(k) return k, 1 end)
      if state_stage == "map_with_state" then
        keyed = keyed:map_with_state(sr.state_spec(function(k, one, state)
          local n = (state:exists() and state:get() or 0) + one
          state:update(n)
          return k, n
        end):name("counts"))
      else
        keyed = keyed:update_state_by_key(function(ones, n) return (n or 0) + #ones end)
      end
      keyed:foreach_batch(function() end, { name = "out" })
      return job
    end
  end

  for _, stage in ipairs({ "map_with_state", "update_state_by_key" }) do
    it(stage .. " flushes once its batches update keys it holds, and counts the same", function()
      local retrace = require "streamrun.retrace"
      local d = testing.driver(counts(stage))
      local keys = {}
      for i = 1, 3000 do keys[i] = "k" .. i end
      local before = retrace.flushes()
      d:push("keys", keys)
      d:tick()
      d:push("keys", keys)
      local out = d:tick().out
      assert.equal(before + 1, retrace.flushes())
      table.sort(out, function(x, y) return x[1] < y[1] end)
      assert.equal(3000, #out)
      for _, kv in ipairs(out) do assert.equal(2, kv[2]) end
    end)
  end
end)
