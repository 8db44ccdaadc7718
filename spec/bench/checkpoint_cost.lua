-- Checkpoint write and restore times for N keys of state, and the stall a
-- running job sees: the time ckpt.start takes to fork the writer.
--   luajit spec/bench/checkpoint_cost.lua [keys ...]
package.path = "./lua/?.lua;./lua/?/init.lua;" .. package.path
local core = require "streamrun.core"

local ckpt, cstate = core.ckpt, core.cstate
local clock = core.clock_ms

local function run(n)
  local dir = os.tmpname()
  os.remove(dir)
  core.mkdir_p(dir)
  local st = cstate.new("counts", 16, 60000, 0)
  for i = 1, n do st:put("key" .. i, i, 1000) end
  local t0 = clock()
  assert(ckpt.write(dir, "checkpoint-1.srck", { batch = 1, time_ms = 1000 }, { st }, {}))
  local write_ms = clock() - t0
  t0 = clock()
  local pid, fd = ckpt.start(dir, "checkpoint-2.srck", { batch = 2, time_ms = 2000 }, { st }, {})
  local fork_ms = clock() - t0
  assert(ckpt.wait(pid, fd))
  local size = io.open(dir .. "/checkpoint-1.srck"):seek("end")
  t0 = clock()
  local meta, states = ckpt.load(dir .. "/checkpoint-1.srck")
  local load_ms = clock() - t0
  assert(meta and states.counts:count() == n)
  os.execute("rm -rf " .. dir)
  print(("%9d keys: write %7.0f ms, restore %7.0f ms, batch stall (fork) %5.1f ms, file %6.1f MB")
    :format(n, write_ms, load_ms, fork_ms, size / 1e6))
  print(("RESULT %d %.1f %.1f %.2f %d"):format(n, write_ms, load_ms, fork_ms, size))
end

for i = 1, math.max(1, #arg) do run(tonumber(arg[i]) or 1000000) end
