-- A job whose script takes its time to load: it says "slow_start: loading"
-- on stderr, then waits until the file --set gate=PATH exists (up to
-- 60 s), so a test can signal it before its loop exists. Counts per word
-- of --set input=PATH (a keyed segment: it runs on every worker), written
-- to --set out=PATH.
local sr = require "streamrun"

local gate = sr.param("gate", nil)
if gate then
  io.stderr:write("slow_start: loading\n")
  io.stderr:flush()
  local deadline = os.time() + 60
  while os.time() < deadline do
    local f = io.open(gate, "r")
    if f then f:close() break end
  end
end

local job = sr.job { name = "slow_start", batch = "100ms" }
job:text_file(sr.param("input", "input.txt"), { name = "lines" })
   :map(function(l) return l, 1 end)
   :reduce_by_key(function(a, b) return a + b end)
   :update_state_by_key(function(values, n) return (n or 0) + sr.sum(values) end, { name = "counts" })
   :to_json_lines(sr.param("out", "out.jsonl"), { name = "out" })
return job
