-- Prints the lines of standard input, batch by batch.
local sr = require "streamrun"
local job = sr.job { name = "stdin_print", batch = "100ms" }
job:stdin({ name = "lines" }):print(1000)
return job
