-- A user function that fails on one element ("boom"); on_error comes from
-- --set on_error=... (default: dead letters).
local sr = require "streamrun"
local job = sr.job { name = "user_error", batch = "100ms", on_error = sr.param("on_error", "dead_letter") }
job:stdin({ name = "lines" })
   :map(function(line)
     if line == "boom" then error("cannot take " .. line) end
     return line:upper()
   end, { name = "shout" })
   :print(1000)
return job
