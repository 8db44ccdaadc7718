-- Word counts into running totals, written three ways, for `make bench`
-- (SPEC section 13): each beside a plain LuaJIT script doing the same work.
--   --set form=lower    flat_map(sr.words):map(lowercase, 1):reduce_by_key(own add),
--                       running totals with the job's own sum
--   --set form=pairs    the README's word count as written: map(function(w)
--                       return w, 1 end):reduce_by_key(sr.add), totals with sr.sum
--   --set form=builtin  the built-ins flat_map(sr.words):count_by_value()
--   streamrun run spec/bench/wc_forms_job.lua --set form=F --set path=FILE [--set show=N]
local sr = require "streamrun"

local form = sr.param("form", "pairs")
local job = sr.job { name = "wc_" .. form, batch = "1s",
                     max_batch_records = sr.param("max_batch", 100000) }

local words = job:text_file(sr.param("path", "input.txt"), { name = "lines" }):flat_map(sr.words)
local counts, totals
if form == "lower" then
  counts = words:map(function(w) return w:lower(), 1 end):reduce_by_key(function(a, b) return a + b end)
  totals = function(values, total)
    local t = total or 0
    for i = 1, #values do t = t + values[i] end
    return t
  end
elseif form == "pairs" then
  counts = words:map(function(w) return w, 1 end):reduce_by_key(sr.add)
  totals = function(values, total) return (total or 0) + sr.sum(values) end
elseif form == "builtin" then
  counts = words:count_by_value()
  totals = function(values, total) return (total or 0) + sr.sum(values) end
else
  error("unknown form '" .. form .. "' (want lower, pairs or builtin)")
end
counts:update_state_by_key(totals, { name = "totals" }):print(sr.param("show", 0), { name = "totals_out" })

return job
