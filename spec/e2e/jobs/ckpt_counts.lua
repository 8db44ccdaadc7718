-- Running totals of a file's lines, one line per batch (--set input=PATH),
-- for the checkpoint specs: update_state_by_key prints every key after each
-- batch, so the first batch after a restart shows the state it resumed from.
local sr = require "streamrun"
local job = sr.job { name = "ckpt_counts", batch = "100ms", max_batch_records = 1 }
job:text_file(sr.param("input", "input.txt"), { name = "input" })
   :map(function(w) return w, 1 end, { name = "ones" })
   :update_state_by_key(function(v, s) return (s or 0) + #v end, { name = "totals" })
   :print(100, { name = "out" })
return job
