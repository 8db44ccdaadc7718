-- Prints stdin lines; the line "slow" keeps its stage busy for a while (and
-- says so on stderr first), so that a signal can arrive mid-batch.
local sr = require "streamrun"
local job = sr.job { name = "slow_stage", batch = sr.param("batch", "100ms") }
local busy_ms = sr.param("busy_ms", 400)
job:stdin({ name = "lines" })
   :map(function(line)
     if line == "slow" then
       io.stderr:write("slow stage: started\n")
       io.stderr:flush()
       local t0 = os.clock()
       while (os.clock() - t0) * 1000 < busy_ms do end
     end
     return line
   end)
   :print(1000)
return job
