-- The built-in word count of standard input, every count printed.
local sr = require "streamrun"
local job = sr.job { name = "workers_wc", batch = "100ms" }
job:stdin({ name = "lines" }):flat_map(sr.words):count_by_value():print(100000)
return job
