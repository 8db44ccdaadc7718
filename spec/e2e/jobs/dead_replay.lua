-- Lines of standard input, upper-cased; a line "bad ..." raises (a dead
-- letter). With --set json=1 the lines are JSON strings, and a line that is
-- not JSON is a dead letter of the source. One checkpoint, at the start
-- (every = 1h): a restart after kill -9 replays every batch from the
-- write-ahead log (the dead-letter specs). --set ckpt=DIR.
local sr = require "streamrun"
local job = sr.job {
  name = "dead_replay", batch = "100ms",
  checkpoint = { dir = sr.param("ckpt", "ckpt"), every = "1h" },
}
job:stdin({ name = "lines", format = sr.param("json", 0) == 1 and "json" or nil })
   :map(function(l)
     if l:find("^bad") then error("refused " .. l) end
     return l:upper()
   end, { name = "upper" })
   :print(1000, { name = "out" })
return job
