-- An unbounded generator: runs until --batches, --duration or a signal.
local sr = require "streamrun"
local job = sr.job { name = "generator", batch = "100ms" }
job:generator(function(i) return i end, { name = "numbers", rate = 100 }):print(3)
return job
