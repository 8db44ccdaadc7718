-- Line 4 calls an operation that does not exist.
local sr = require "streamrun"
local job = sr.job { name = "unknown_op", batch = "100ms" }
job:stdin():frobnicate(function(x) return x end):print()
return job
