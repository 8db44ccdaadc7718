-- Lines "<ms> <word>" counted per word in 5 s event-time windows. The
-- event_time function loops forever on "<ms> interp" in interpreted code
-- and on "<ms> jit" in a loop LuaJIT compiles. The source has a second
-- consumer, so its records are stamped before the stages run (not by a
-- chain of their own). --set input=PATH.
local sr = require "streamrun"
local job = sr.job { name = "stuck_event_time", batch = "100ms", stage_timeout = "300ms" }

local spin = require "lib.spin"

local lines = job:text_file(sr.param("input", "input.txt"), { name = "lines", event_time = function(line)
  if line:find("interp", 1, true) then spin.interpreted() end
  if line:find("jit", 1, true) then spin.compiled() end
  return tonumber(line:match("^(%d+)"))
end })
lines:map(function(l) return l:match("%a+$"), 1 end)
  :reduce_by_key_and_event_window(sr.add, "5s", { name = "counts" })
  :map(function(word, w) return ("%s %d %d"):format(word, w.start_ms, w.value) end)
  :print(100)
lines:filter(function() return false end):print(1, { name = "nothing" })
return job
