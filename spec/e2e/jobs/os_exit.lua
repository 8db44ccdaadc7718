-- Job code that calls os.exit: in a map ("exit") and in a module required
-- from the job's directory ("quit"). Each is an error of its record.
local sr = require "streamrun"
local quitter = require "lib.quitter"
local job = sr.job { name = "os_exit", batch = "100ms" }
job:stdin({ name = "lines" })
   :map(function(line)
     if line == "exit" then os.exit(7) end
     if line == "quit" then quitter.quit(8) end
     return line:upper()
   end, { name = "shout" })
   :print(1000)
return job
