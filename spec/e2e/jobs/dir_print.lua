-- Prints the lines of the files that appear in a directory (--set dir=PATH).
local sr = require "streamrun"
local job = sr.job { name = "dir_print", batch = "100ms" }
job:text_dir(sr.param("dir", "incoming"), { name = "incoming" }):print(1000)
return job
