-- Prints the lines a TCP server on 127.0.0.1 (--set port=N) sends.
local sr = require "streamrun"
local job = sr.job { name = "socket_print", batch = "100ms" }
job:socket_text("127.0.0.1", sr.param("port", 0), { name = "feed" }):print(1000)
return job
