-- Counts the lowercased words of a file (--set input=PATH) with the job's
-- own functions; a word "boom" makes the map fail. --set fork=1 gives the
-- source a second consumer, so the chain reads Lua strings of the lines
-- instead of the C batch.
local sr = require "streamrun"
local job = sr.job { name = "words_file", batch = "100ms", max_batch_records = sr.param("max_batch", 3) }
local lines = job:text_file(sr.param("input", "words.txt"), { name = "lines" })
if sr.param("fork", 0) == 1 then lines:count():print(0, { name = "lines_seen" }) end
lines:flat_map(sr.words)
   :map(function(w)
     if w == "boom" then error("boom word") end
     return w:lower(), 1
   end)
   :reduce_by_key(function(a, b) return a + b end)
   :print(1000, { name = "counts" })
return job
