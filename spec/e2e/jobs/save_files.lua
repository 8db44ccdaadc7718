-- Writes each batch of stdin lines as (line,length) pairs to text files
-- <prefix>-<time_ms>.txt (--set prefix=PATH).
local sr = require "streamrun"
local job = sr.job { name = "save_files", batch = "100ms" }
job:stdin({ name = "lines" })
   :map(function(line) return line, #line end)
   :save_as_text_files(sr.param("prefix", "out"), "txt")
return job
