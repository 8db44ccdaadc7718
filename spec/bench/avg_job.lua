-- Running-average benchmark job for `make bench`: lines "<sensor> <value>"
-- of a text file, and per sensor the average of its readings so far, kept
-- by the job's own map_with_state function ({sum, count} in state) and
-- emitted with every reading. Its baseline is spec/bench/avg_baseline.lua,
-- the same work as a plain LuaJIT script; both end with the number of
-- averages emitted and their sum, which must be equal.
--   streamrun run spec/bench/avg_job.lua --quiet --set path=readings.txt [--set max_batch=N]
-- The count and sum so far are printed on stdout after every batch (the
-- last line is the job's result): a line into stdout's buffer, where
-- rewriting a file after each batch cost a quarter of a millisecond of
-- CPU a batch (4% of the job's time), which the baseline, printing once,
-- does not spend.
-- The file is read in batches of 10,000 lines (max_batch_records; the
-- default is 100,000): a batch's strings, pairs and element tables then
-- stay in the caches from stage to stage, and LuaJIT's collector marks
-- far fewer live objects per cycle (at 100,000 the job takes about 1.4x
-- the CPU time).
local sr = require "streamrun"

local job = sr.job {
  name = "avg_bench",
  batch = sr.param("batch", "1s"),
  max_batch_records = sr.param("max_batch", 10000),
}

local function average(sensor, value, state)
  local s = state:exists() and state:get() or { 0, 0 }
  s[1], s[2] = s[1] + value, s[2] + 1
  state:update(s)
  return sensor, s[1] / s[2]
end

local n, total = 0, 0
job:text_file(sr.param("path", "readings.txt"), { name = "readings" })
   :map(function(line)
     local sensor, value = line:match("^(%S+) (%S+)$")
     return sensor, tonumber(value)
   end)
   :map_with_state(sr.state_spec(average):name("averages"))
   :foreach_batch(function(averages)
     for i = 1, #averages do
       n, total = n + 1, total + averages[i][2]
     end
     io.write(("%d %.17g\n"):format(n, total))
   end, { name = "sums" })

return job
