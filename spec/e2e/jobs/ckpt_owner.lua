-- Running totals of a file's lines (--set input=PATH) written to a JSON-lines
-- file (--set out=PATH), one line per batch: whose checkpoint a restart may
-- take, and which files it may cut back.
local sr = require "streamrun"
local job = sr.job { name = "ckpt_owner", batch = "100ms", max_batch_records = 1 }
job:text_file(sr.param("input", "input.txt"), { name = "input" })
   :map(function(w) return w, 1 end, { name = "ones" })
   :update_state_by_key(function(v, s) return (s or 0) + #v end, { name = "totals" })
   :to_json_lines(sr.param("out", "out.jsonl"), { name = "out" })
return job
