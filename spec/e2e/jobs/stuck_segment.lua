-- stage_timeout in the keyed segments of a group, a window and a join on
-- several workers: the map "parse" spins on the line "stuck" (put it late
-- in a batch larger than a small batch run alone: the last worker's
-- share), interpreted (the debug hook interrupts it) or compiled with
-- --set loop=jit (only a restart that skips the record gets past).
-- --set into=group|window|join (a join's other side reads the file
-- --set right=PATH, one line a key); --set input=PATH, workers=N. Per
-- batch with output, the number of its elements goes to stdout.
local sr = require "streamrun"
local job = sr.job { name = "stuck_segment", batch = "100ms", stage_timeout = "300ms",
                     workers = sr.param("workers", 2), max_batch_records = 100000 }

local function spin()
  local x = 0
  while true do x = x + 1 end
end
if sr.param("loop", "interp") ~= "jit" then jit.off(spin) end

local input = sr.param("input", "input.txt")
local pairs_ = job:text_file(input, { name = "lines" }):map(function(l)
  if l == "stuck" then spin() end
  return l, 1
end, { name = "parse" })
local into, out = sr.param("into", "group"), nil
if into == "group" then
  out = pairs_:group_by_key({ name = "grouped" })
elseif into == "window" then
  out = pairs_:reduce_by_key_and_window(sr.add, "1s", "100ms", { name = "counts" })
elseif into == "join" then
  local right = job:text_file(sr.param("right", "right.txt"), { name = "right" }):map(function(l) return l, 2 end, { name = "tag" })
  out = pairs_:join(right, { name = "joined" })
else
  error("into: group, window or join, not " .. into)
end
out:foreach_batch(function(elements) if #elements > 0 then print(#elements) end end, { name = "sizes" })
return job
