-- Running totals in a stateful stage left without a name (--set input=PATH),
-- for the warning a job with checkpoints gets about positional names.
local sr = require "streamrun"
local job = sr.job { name = "unnamed_state", batch = "100ms" }
job:text_file(sr.param("input", "input.txt"), { name = "input" })
   :map(function(w) return w, 1 end)
   :update_state_by_key(function(v, s) return (s or 0) + #v end)
   :print(100, { name = "out" })
return job
