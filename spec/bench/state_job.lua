-- State benchmark job for `make bench`: one key per line of a text file,
-- mapped to (key, 1) and counted per key by map_with_state with a timeout.
--   streamrun run spec/bench/state_job.lua --quiet --set path=keys.txt
--       [--set stateful=0] [--set max_batch=5000] [--set batch=100ms] [--set timeout=60s]
-- stateful=0 is the same pipeline without the map_with_state stage (the
-- records are dropped where the state would have taken them): the baseline
-- for memory per key. The file is read fast-forward, one batch interval of
-- job time per batch; with the harness's input (every key once per round of
-- `keys` lines) and these defaults, no key ever reaches its timeout.
local sr = require "streamrun"

local job = sr.job {
  name = "state_bench",
  batch = sr.param("batch", "100ms"),
  max_batch_records = sr.param("max_batch", 5000),
}

local pairs_ = job:text_file(sr.param("path", "keys.txt"), { name = "keys" })
                  :map(function(key) return key, 1 end)

local counted
if sr.param("stateful", 1) == 1 then
  local function count(_, one, state)
    if state:is_timing_out() then return end
    state:update((state:exists() and state:get() or 0) + one)
  end
  counted = pairs_:map_with_state(sr.state_spec(count):timeout(sr.param("timeout", "60s")):name("counts"))
else
  counted = pairs_:map(function() end)
end
counted:foreach_batch(function() end, { name = "out" })

return job
