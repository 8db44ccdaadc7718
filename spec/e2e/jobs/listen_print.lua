-- Prints the lines clients send to 127.0.0.1 (--set port=N).
local sr = require "streamrun"
local job = sr.job { name = "listen_print", batch = "100ms" }
job:listen_text("127.0.0.1", sr.param("port", 0), { name = "inbox" }):print(100000)
return job
