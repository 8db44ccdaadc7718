-- Event-time benchmark job for `make bench`: "<key> <epoch ms>" lines (1M
-- records per second of event time, out of order) counted per key in
-- 10 s tumbling windows, in event time (clock=event: the time from the
-- line, a 2 s watermark delay, results when the watermark passes a window
-- and at the end of the file) or in processing time (clock=processing:
-- reduce_by_key_and_window over 10 batches of 1 s). A batch holds 1M
-- records: one second of input.
--   streamrun run spec/bench/event_job.lua --quiet --set path=events.txt --set clock=event
--       [--set total=FILE: the sum of every window's count, written after each batch]
local sr = require "streamrun"

local job = sr.job { name = "event_bench", batch = "1s", max_batch_records = sr.param("max_batch", 1000000) }

local event = sr.param("clock", "event") == "event"
local sub, byte = string.sub, string.byte

-- The time after the 9 bytes of "<key> ", digit by digit (no substring
-- made per record).
local function time_of(line)
  local t = 0
  for i = 10, #line do t = t * 10 + byte(line, i) - 48 end
  return t
end

local lines = job:text_file(sr.param("path", "events.txt"), {
  name = "events",
  event_time = event and time_of or nil,
  watermark = event and "2s" or nil,
})
local ones = lines:map(function(line) return sub(line, 1, 8), 1 end)
local windows
if event then
  windows = ones:reduce_by_key_and_event_window(sr.add, "10s", { name = "counts" })
else
  windows = ones:reduce_by_key_and_window(sr.add, "10s", "10s", { name = "counts" })
end

local total_path = sr.param("total", "")
local total = 0
windows:foreach_batch(function(elements)
  for i = 1, #elements do
    local v = elements[i][2]
    total = total + (event and v.value or v)
  end
  if total_path ~= "" then
    local f = assert(io.open(total_path, "w"))
    f:write(total, "\n")
    f:close()
  end
end, { name = "out" })

return job
