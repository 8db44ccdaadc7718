-- Line 3 has a syntax error.
local sr = require "streamrun"
local job = sr.job { name = "syntax_error" batch = "100ms" }
return job
