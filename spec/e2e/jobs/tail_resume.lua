-- tail with checkpoints: each line to a JSON-lines file, and a count (on
-- every worker: --set workers=N, default 2). --set from_start=no starts
-- at the end of the file (from its start once it appears); --set
-- max_line=N.
local sr = require "streamrun"
local job = sr.job { name = "tail_resume", batch = "100ms", workers = sr.param("workers", 2),
                     checkpoint = { dir = sr.param("ckpt", "ckpt"), every = "300ms" } }
local lines = job:tail(sr.param("path", "log.txt"), { name = "log", from_start = sr.param("from_start", "yes") == "yes",
                                                   max_line = sr.param("max_line", 1048576) })
lines:to_json_lines(sr.param("out", "out.jsonl"), { name = "out" })
lines:map(function() return "lines", 1 end)
     :update_state_by_key(function(v, s) return (s or 0) + #v end, { name = "count" })
     :foreach_batch(function() end)
return job
