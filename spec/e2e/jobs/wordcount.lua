-- Word counts per batch, with named stages (for `streamrun check`).
local sr = require "streamrun"
local job = sr.job { name = "wordcount", batch = "100ms" }
job:stdin({ name = "lines" })
   :flat_map(sr.words, { name = "words" })
   :map(function(w) return w, 1 end, { name = "ones" })
   :reduce_by_key(sr.add, { name = "counts" })
   :print(100, { name = "out" })
return job
