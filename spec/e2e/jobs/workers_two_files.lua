-- Two text files into one keyed count, for the workers spec: each batch's
-- counts per file must not depend on the number of workers.
local sr = require "streamrun"
local job = sr.job { name = "workers_two_files", batch = "1s", max_batch_records = 200000 }
local a = job:text_file(sr.param("a", "a.txt"), { name = "a" })
local b = job:text_file(sr.param("b", "b.txt"), { name = "b" })
a:union(b):map(function(line) return line:sub(1, 1) end):count_by_value():print(10)
return job
