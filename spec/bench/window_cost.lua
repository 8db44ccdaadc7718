-- Cost of one produced window for a 1-hour window with 1 s slides over 100k
-- keys (each 1 s batch brings 1000 of them), with and without an inverse
-- function. Runs the real stages through the test driver's virtual clock.
--   luajit spec/bench/window_cost.lua [keys] [keys_per_batch]
package.path = "./lua/?.lua;./lua/?/init.lua;" .. package.path
local sr = require "streamrun"
local testing = require "streamrun.testing"
local core = require "streamrun.core"

local KEYS = tonumber(arg[1]) or 100000
local PER_BATCH = tonumber(arg[2]) or 1000
local WINDOW_S = 3600

local function job_for(with_inverse, slide)
  return function()
    local job = sr.job { name = "window_cost", batch = "1s", max_batch_records = 10 * PER_BATCH }
    local finv = with_inverse and function(a, b) return a - b end or nil
    job:queue({}, { name = "in" })
       :map(function(key) return key, 1 end)
       :reduce_by_key_and_window(sr.add, finv, "1h", slide, { name = "counts" })
       :foreach_batch(function() end, { name = "out" })
    return job
  end
end

-- Batch i touches keys (i * PER_BATCH .. + PER_BATCH) mod KEYS: all keys
-- are in the window once it is full.
local function batch(i)
  local b = {}
  for j = 1, PER_BATCH do b[j] = "key" .. ((i * PER_BATCH + j) % KEYS) end
  return b
end

local function fill(d, n)
  for i = 1, n do
    d:push("in", batch(i))
    d:tick()
  end
end

local function measure(d, first, n)
  local times = {}
  for i = first, first + n - 1 do
    d:push("in", batch(i))
    local t0 = core.clock_ms()
    d:tick()
    times[#times + 1] = core.clock_ms() - t0
  end
  table.sort(times)
  return times[math.ceil(#times / 2)]
end

-- With the inverse: window full after 3600 batches of 1 s slides.
local d = testing.driver(job_for(true, "1s"), { history = false })
fill(d, WINDOW_S)
local with_inverse = measure(d, WINDOW_S + 1, 5)
local out_keys = #d:outputs("out")[d.batches]

-- Without: fold every slice of the window. Fill it with a 1 h slide (no
-- windows produced on the way), then time the produced window at 2 h.
local d2 = testing.driver(job_for(false, "1h"), { history = false })
fill(d2, 2 * WINDOW_S - 1)
local without_inverse = measure(d2, 2 * WINDOW_S, 1)

print(("1 h window, 1 s slides, %d keys (%d per batch), %d keys out:"):format(KEYS, PER_BATCH, out_keys))
print(("  with finv:    %8.1f ms per produced window (median of 5)"):format(with_inverse))
print(("  without finv: %8.1f ms per produced window"):format(without_inverse))
