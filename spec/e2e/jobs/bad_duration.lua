-- Line 3 gives a batch interval that is not a duration.
local sr = require "streamrun"
local job = sr.job { name = "bad_duration", batch = "fast" }
job:stdin():print()
return job
