-- Prints the lines appended to a file (--set path=FILE; --set from_start=true
-- reads what it already holds first).
local sr = require "streamrun"
local job = sr.job { name = "tail_print", batch = "100ms" }
job:tail(sr.param("path", "log.txt"), { name = "log", from_start = sr.param("from_start", false) })
   :print(1000)
return job
