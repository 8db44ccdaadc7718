-- What spec/e2e/http_spec.lua watches through --http: a generator of
-- `count` numbers, every tenth rejected by the stage "check" (a dead
-- letter), kept as running counts per remainder of 7 in "totals"; a JSON
-- file whose bad lines are dead letters of the source "events"; and a
-- listen_text nobody writes to, so the job runs until it is stopped.
local sr = require "streamrun"
local job = sr.job { name = "http_job", batch = sr.param("batch", "200ms"), http = sr.param("http", nil) }

job:generator(function(i) return i end, { name = "numbers", rate = tonumber(sr.param("rate", 1000)),
                                          count = tonumber(sr.param("count", 300)) })
   :map(function(i)
     if i % 10 == 0 then error("a tenth") end
     return i % 7, 1
   end, { name = "check" })
   :update_state_by_key(function(values, total) return (total or 0) + sr.sum(values) end, { name = "totals" })
   :foreach_batch(function() end)

job:text_file(sr.param("path", "events.jsonl"), { name = "events", format = "json" })
   :map(function(e) return e.kind, e.n end)
   :reduce_by_key(sr.add)
   :foreach_batch(function() end)

job:listen_text("127.0.0.1", 0, { name = "idle" }):foreach_batch(function() end)

return job
