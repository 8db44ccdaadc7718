-- Line 5 uses a keyed operation on a stream of single elements.
local sr = require "streamrun"
local job = sr.job { name = "unkeyed_reduce", batch = "100ms" }
job:stdin({ name = "lines" })
   :reduce_by_key(sr.add)
   :print()
return job
