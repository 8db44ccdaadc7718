-- An ordinary keyed job for `make bench`'s workers rows (SPEC section 15):
-- user functions before a reduce_by_key and a map_with_state, over the
-- words of a text file.
--   streamrun run spec/bench/workers_job.lua --set path=FILE [--workers N]
local sr = require "streamrun"

local job = sr.job { name = "workers_keyed", batch = "1s", max_batch_records = sr.param("max_batch", 100000) }

job:text_file(sr.param("path", "input.txt"), { name = "lines" })
  :flat_map(sr.words)
  :map(function(w) return w:lower(), 1 end)
  :reduce_by_key(function(a, b) return a + b end)
  :map_with_state(sr.state_spec(function(word, count, state)
    local total = (state:exists() and state:get() or 0) + count
    state:update(total)
    return word, total
  end):name("totals"))
  :print(sr.param("show", 0), { name = "totals_out" })

return job
