-- wordcount: running totals of the words of a stream of lines, kept in state
-- (update_state_by_key); --set mode=batch counts each batch on its own.
--   streamrun run jobs/wordcount.lua                       built-in generator
--   streamrun run jobs/wordcount.lua --set source=socket   lines from 127.0.0.1:9999
--   streamrun run jobs/wordcount.lua --set source=file --set path=big.txt
--   streamrun run jobs/wordcount.lua --set source=stdin < big.txt
local sr = require "streamrun"

-- Large batches suit a file (fewer passes over the running totals, which
-- update_state_by_key makes for every key each batch); --set max_batch=N.
local job = sr.job { name = "wordcount", batch = sr.param("batch", "1s"),
                     max_batch_records = sr.param("max_batch", 1000000) }

local source = sr.param("source", "generator")
local lines
if source == "generator" then
  local vocabulary = { "to", "be", "or", "not", "that", "is", "the", "question", "whether", "tis",
                       "nobler", "in", "mind", "suffer" }
  lines = job:generator(function(i)
    local words = {}
    for k = 1, 3 + i % 5 do words[k] = vocabulary[(i * 7 + k * k) % #vocabulary + 1] end
    return table.concat(words, " ")
  end, { name = "lines", rate = sr.param("rate", 20) })
elseif source == "socket" then
  lines = job:socket_text(sr.param("host", "127.0.0.1"), sr.param("port", 9999), { name = "lines" })
elseif source == "file" then
  lines = job:text_file(sr.param("path", "input.txt"), { name = "lines" })
elseif source == "stdin" then
  lines = job:stdin { name = "lines" }
else
  error("unknown source '" .. source .. "' (want generator, socket, file or stdin)")
end

-- Counted per batch first with built-ins named here (the runtime runs
-- flat_map(sr.words) -> count_by_value() in C), then added to the running
-- totals.
local counts = lines:flat_map(sr.words):count_by_value()
if sr.param("mode", "totals") ~= "batch" then
  counts = counts:update_state_by_key(function(values, total)
    return (total or 0) + sr.sum(values)
  end, { name = "totals" })
end
counts:print(sr.param("show", 10), { name = "counts" })

return job
