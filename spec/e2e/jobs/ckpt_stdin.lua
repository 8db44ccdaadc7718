-- Counts the words of standard input per key, printing every key's count
-- after each batch, with a checkpoint every batch (the last three kept):
-- the checkpoint directory specs. --set ckpt=DIR.
local sr = require "streamrun"
local job = sr.job {
  name = "ckpt_stdin", batch = "100ms",
  checkpoint = { dir = sr.param("ckpt", "ckpt"), every = "100ms", keep = 3 },
}
job:stdin({ name = "lines" })
   :map(function(w) return w, 1 end, { name = "ones" })
   :update_state_by_key(function(v, s)
     if #v == 0 then return s end
     return (s or 0) + #v
   end, { name = "counts" })
   :print(1000, { name = "out" })
return job
