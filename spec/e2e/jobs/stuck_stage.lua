-- Upper-cases lines; the line "interp" loops forever in interpreted code,
-- "jit" in a loop LuaJIT compiles (no debug hook runs there), "say" writes
-- "stuck: started" on stderr first. --set timeout=off turns stage_timeout
-- off; --set source=stdin reads stdin instead of --set input=PATH.
local sr = require "streamrun"
local timeout = sr.param("timeout", "300ms")
local job = sr.job { name = "stuck_stage", batch = "100ms", stage_timeout = timeout ~= "off" and timeout or false }
local lines
if sr.param("source", "file") == "stdin" then
  lines = job:stdin { name = "lines" }
else
  lines = job:text_file(sr.param("input", "input.txt"), { name = "lines" })
end

local spin = require "lib.spin"

lines:map(function(l) return l:upper() end, { name = "upper" })
     :map(function(l)
       if l == "SAY" then
         io.stderr:write("stuck: started\n")
         io.stderr:flush()
         spin.compiled()
       end
       if l == "INTERP" then spin.interpreted() end
       if l == "JIT" then spin.compiled() end
       return l
     end, { name = "stuck" })
     :print(1000)
return job
