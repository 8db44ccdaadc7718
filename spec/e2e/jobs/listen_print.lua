-- Prints the lines clients send (--set port=N; host, default 127.0.0.1;
-- max_connections, default the source's).
local sr = require "streamrun"
local job = sr.job { name = "listen_print", batch = "100ms" }
job:listen_text(sr.param("host", "127.0.0.1"), sr.param("port", 0),
                { name = "inbox", max_connections = sr.param("max_connections", 1024) })
   :print(100000)
return job
