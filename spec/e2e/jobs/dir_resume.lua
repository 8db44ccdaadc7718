-- text_dir with checkpoints (spec/e2e/text_dir_resume_spec.lua): lines
-- "<key> <id>" from the files of a directory; each line to a JSON-lines
-- file, counts per key in state. --set dir=DIR, out=FILE, ckpt=DIR,
-- workers=N (default 2: the counts run on every worker).
local sr = require "streamrun"
local job = sr.job { name = "dir_resume", batch = "100ms", max_batch_records = 500,
                     workers = sr.param("workers", 2),
                     checkpoint = { dir = sr.param("ckpt", "ckpt"), every = "300ms" } }
local lines = job:text_dir(sr.param("dir", "in"), { name = "incoming" })
lines:to_json_lines(sr.param("out", "out.jsonl"), { name = "out" })
lines:map(function(line) return line:match("^(%S+)"), 1 end)
     :update_state_by_key(function(v, n) return (n or 0) + #v end, { name = "counts" })
return job
