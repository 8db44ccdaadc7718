-- Checkpoints through the test driver: d:checkpoint() and testing.restore()
-- carry every kind of state, windows, the clock and source positions.
local sr = require "streamrun"
local testing = require "streamrun.testing"

local function job()
  local j = sr.job { name = "ck", batch = "1s" }
  local kv = j:queue({ { "q1" }, { "q2" }, { "q3" } }, { name = "q" })
              :union(j:queue({}, { name = "in" }))
              :map(function(w) return w, 1 end)
  kv:update_state_by_key(function(v, s) return (s or 0) + #v end, { name = "totals" })
    :foreach_batch(function() end, { name = "totals_out" })
  kv:map_with_state(sr.state_spec(function(k, v, st)
      if st:is_timing_out() then return k, "gone" end
      st:update((st:exists() and st:get() or 0) + 1)
    end):timeout("2s"):name("idle"))
    :foreach_batch(function() end, { name = "timeouts" })
  kv:reduce_by_key_and_window(sr.add, function(a, b) return a - b end, "3s", "1s", { name = "win" })
    :foreach_batch(function() end, { name = "win_out" })
  return j
end

local function sorted(list)
  table.sort(list, function(x, y) return tostring(x[1]) < tostring(y[1]) end)
  return list
end

describe("checkpoint and restore in the driver", function()
  it("a restored driver continues exactly as the original would", function()
    local a = testing.driver(job)
    a:push("in", { "x", "y" })
    a:tick()
    a:push("in", { "x" })
    a:tick()
    local path = a:checkpoint()
    local b = testing.restore(path, { job = job })
    assert.equal(2000, b:time())
    for _, d in ipairs { a, b } do
      d:push("in", { "z" })
      d:tick()
    end
    for _ = 1, 4 do
      local oa, ob = a:tick(), b:tick()
      assert.same(sorted(oa.totals_out), sorted(ob.totals_out))
      assert.same(sorted(oa.timeouts), sorted(ob.timeouts))
      assert.same(sorted(oa.win_out), sorted(ob.win_out))
    end
    assert.same(a:state("totals"), b:state("totals"))
    assert.same({ q1 = 1, q2 = 1, q3 = 1, x = 2, y = 1, z = 1 }, b:state("totals"))
    -- The timeouts fired after the restore, once each.
    local gone = {}
    for _, out in pairs(b:outputs("timeouts")) do
      for _, p in ipairs(out) do gone[#gone + 1] = p[1] end
    end
    table.sort(gone)
    assert.same({ "q1", "q2", "q3", "x", "y", "z" }, gone)
  end)

  it("a checkpoint that does not verify cannot be restored, and says why", function()
    local a = testing.driver(job)
    a:tick()
    local path = a:checkpoint()
    local f = assert(io.open(path, "r+b"))
    f:seek("set", 30)
    f:write("\255")
    f:close()
    local ok, err = pcall(testing.restore, path, { job = job })
    assert.is_false(ok)
    assert.matches("checksum mismatch", err)
  end)

  it("a checkpoint of another job is refused, as the binary refuses it", function()
    local a = testing.driver(job)
    a:tick()
    local path = a:checkpoint()
    local function other()
      local j = sr.job { name = "not_ck", batch = "1s" }
      j:queue({}, { name = "in" }):foreach_batch(function() end, { name = "out" })
      return j
    end
    local ok, err = pcall(testing.restore, path, { job = other })
    assert.is_false(ok)
    assert.matches("is a checkpoint of job ck, not of job not_ck", err)
  end)
end)
