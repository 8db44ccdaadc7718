-- Small probes for the pending cases of spec/e2e/crash_spec.lua: each line
-- of a file (--set input=PATH) alone in its batch, written to out (--set
-- out=PATH) as a pair of the line and an object with four named fields;
-- "skip" lines are dropped, the line "slow" keeps its batch busy for
-- busy_ms (saying so on stderr first), and every line for pace_ms.
-- Checkpoints every 2 batches.
local sr = require "streamrun"

local job = sr.job {
  name = "crash_probe", batch = "100ms", max_batch_records = 1,
  checkpoint = { dir = sr.param("ckpt", "ckpt"), every = "200ms", keep = 3 },
}
local busy_ms = sr.param("busy_ms", 0)
local pace_ms = sr.param("pace_ms", 0)

local function busy(ms)
  local t0 = os.clock()
  while (os.clock() - t0) * 1000 < ms do end
end

job:text_file(sr.param("input", "input.txt"), { name = "input" })
  :filter(function(line)
    if line == "slow" and busy_ms > 0 then
      io.stderr:write("probe: slow batch started\n")
      io.stderr:flush()
      busy(busy_ms)
    end
    busy(pace_ms)
    return line ~= "skip"
  end)
  :map(function(line) return line, { alpha = #line, beta = line, gamma = true, delta = 0 } end)
  :to_json_lines(sr.param("out", "out.jsonl"), { name = "out" })

return job
