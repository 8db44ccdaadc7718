-- Words of standard input counted over a window longer than any run, with
-- an inverse: the last batch prints every word's total.
local sr = require "streamrun"
local job = sr.job { name = "workers_window", batch = "100ms" }
job:stdin({ name = "lines" }):flat_map(sr.words):map(function(w) return w, 1 end)
  :reduce_by_key_and_window(sr.add, function(a, b) return a - b end, "60s", "100ms", { name = "counts" })
  :print(100000)
return job
