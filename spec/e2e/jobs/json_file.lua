-- Reads JSON records from a file (--set input=PATH) and prints their ids;
-- max_line is small so that a long record is a dead letter.
local sr = require "streamrun"
local job = sr.job { name = "json_file", batch = "100ms" }
job:text_file(sr.param("input", "events.jsonl"), { name = "events", format = "json", max_line = 64 })
   :map(function(r) return r.id end)
   :print(1000)
return job
