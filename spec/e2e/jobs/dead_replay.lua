-- Lines of standard input, upper-cased; a line "bad ..." raises (a dead
-- letter) and, as JSON, a line that is not JSON is one too when --set
-- json=1. One checkpoint at the start (every = 1h): every batch after it
-- is replayed from the write-ahead log after a kill -9 (the dead-letter
-- specs). --set ckpt=DIR.
local sr = require "streamrun"
local job = sr.job {
  name = "dead_replay", batch = "100ms",
  checkpoint = { dir = sr.param("ckpt", "ckpt"), every = "1h" },
}
job:stdin({ name = "lines" })
   :map(function(l)
     if l:find("^bad") then error("refused " .. l) end
     return l:upper()
   end, { name = "upper" })
   :print(1000, { name = "out" })
return job
