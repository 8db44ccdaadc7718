-- The batch stall of a checkpoint of a keyed window, with 1 and with N
-- workers: the loop thread's time from the checkpoint's content to the
-- forked writer started (checkpoint.content, then ckpt.start), for a
-- window of SLICES slices of KEYS keys each, with an inverse function (a
-- result state too) and without. The writer's own time (in the child) is
-- printed apart, and the part of the stall before the fork (content).
-- Runs the real stages through the test driver.
--   luajit spec/bench/window_ckpt_cost.lua [slices] [keys] [workers]
package.path = "./lua/?.lua;./lua/?/init.lua;" .. package.path
local testing = require "streamrun.testing"
local checkpoint = require "streamrun.checkpoint"
local core = require "streamrun.core"

local SLICES = tonumber(arg[1]) or 250
local KEYS = tonumber(arg[2]) or 1000
local N = tonumber(arg[3]) or 2
local REPS = 5

local dir = os.tmpname()
os.remove(dir)
assert(core.mkdir_p(dir))

-- Each worker's VM loads the job from its script.
local function script(with_inverse)
  local path = ("%s/job_%s.lua"):format(dir, with_inverse and "inv" or "plain")
  local f = assert(io.open(path, "w"))
  f:write(([[local sr = require "streamrun"
local job = sr.job { name = "window_ckpt_cost", batch = "1s", max_batch_records = 100000 }
job:queue({}, { name = "in" })
  :map(function(key) return key, 1 end)
  :reduce_by_key_and_window(sr.add, %s, "%ds", "1s", { name = "counts" })
  :foreach_batch(function() end, { name = "out" })
return job
]]):format(with_inverse and "function(a, b) return a - b end" or "nil", SLICES + 10))
  f:close()
  return path
end

-- Batch i brings KEYS keys, a new set each batch.
local function batch(i)
  local b = {}
  for j = 1, KEYS do b[j] = ("key%d"):format(i * KEYS + j) end
  return b
end

local function median(t)
  table.sort(t)
  return t[math.ceil(#t / 2)]
end

local function measure(with_inverse, n)
  local d = testing.driver(script(with_inverse), { workers = n, history = false })
  for i = 1, SLICES do
    d:push("in", batch(i))
    d:tick()
  end
  local meta = checkpoint.meta(d.job, d.plan, d.batches, d:time(), d.session:positions(), {}, {})
  local stalls, contents, writes, bytes = {}, {}, {}, nil
  for r = 1, REPS do
    local t0 = core.clock_ms()
    local states, windows = checkpoint.content(d.plan)
    local tc = core.clock_ms()
    local name = ("checkpoint-%d-%d-%d.srck"):format(n, with_inverse and 1 or 0, r)
    local pid, fd = core.ckpt.start(dir, name, meta, states, windows)
    local t1 = core.clock_ms()
    assert(pid, fd)
    assert(core.ckpt.wait(pid, fd))
    stalls[r], contents[r], writes[r] = t1 - t0, tc - t0, core.clock_ms() - t1
    local f = assert(io.open(dir .. "/" .. name, "rb"))
    local b = f:read("*a")
    f:close()
    assert(not bytes or bytes == b, "the checkpoints of one window differ")
    bytes = b
  end
  return median(stalls), median(contents), median(writes), bytes
end

print(("keyed window of %d slices x %d keys: loop-thread stall of a checkpoint (content + fork), median of %d")
  :format(SLICES, KEYS, REPS))
for _, inv in ipairs { true, false } do
  local s1, c1, w1, b1 = measure(inv, 1)
  collectgarbage()
  local sn, cn, wn, bn = measure(inv, N)
  collectgarbage()
  assert(b1 == bn, "the checkpoint of N workers differs from one worker's")
  print(("  %-13s 1 worker: stall %6.1f ms (content %5.1f ms; writer %6.1f ms)   %d workers: stall %6.1f ms "
    .. "(content %5.1f ms; writer %6.1f ms)   %.1f MB")
    :format(inv and "with finv:" or "without finv:", s1, c1, w1, N, sn, cn, wn, #b1 / 1e6))
  print(("RESULT %s %.2f %.2f %.2f %.2f %.2f %.2f %d"):format(inv and "inv" or "plain", s1, sn, c1, cn, w1, wn, #b1))
end
os.execute("rm -rf " .. dir)
