-- Running totals of a file's lines, one line per batch (--set input=PATH),
-- seeded by opts.initial, for the checkpoint specs: a restart from the
-- checkpoint of the job's start must seed the state as the first run did.
local sr = require "streamrun"
local job = sr.job { name = "ckpt_seeded", batch = "100ms", max_batch_records = 1 }
job:text_file(sr.param("input", "input.txt"), { name = "input" })
   :map(function(w) return w, 1 end, { name = "ones" })
   :update_state_by_key(function(v, s) return (s or 0) + #v end,
     { name = "totals", initial = { seed = 10, z = 1 } })
   :print(100, { name = "out" })
return job
