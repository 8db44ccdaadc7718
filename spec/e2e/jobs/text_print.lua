-- Prints the lines of a file (--set input=PATH).
local sr = require "streamrun"
local job = sr.job { name = "text_print", batch = "100ms" }
job:text_file(sr.param("input", "input.txt"), { name = "input" }):print(1000)
return job
