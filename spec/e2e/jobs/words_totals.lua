-- Running totals of the words of a file (--set input=PATH) by the
-- built-ins flat_map(sr.words) -> count_by_value() into the job's own
-- update_state_by_key, every total printed. With several workers each
-- counts its share in C and owns the totals of its partitions. --set
-- fork=1 gives the source a second consumer, so the lines reach the
-- workers as Lua strings instead of the C batch.
local sr = require "streamrun"
local job = sr.job { name = "words_totals", batch = "100ms", max_batch_records = sr.param("max_batch", 500) }
local lines = job:text_file(sr.param("input", "words.txt"), { name = "lines" })
if sr.param("fork", 0) == 1 then lines:count():print(0, { name = "lines_seen" }) end
lines:flat_map(sr.words)
   :count_by_value()
   :update_state_by_key(function(counts, total)
     local t = total or 0
     for i = 1, #counts do t = t + counts[i] end
     return t
   end, { name = "totals" })
   :print(100000, { name = "totals_out" })
return job
