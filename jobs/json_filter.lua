-- json_filter: JSON events in, the large purchases out as JSON lines.
-- Each input line is an event like {"user":"ann","action":"purchase","amount":42.5}.
--   streamrun run jobs/json_filter.lua < events.jsonl
--   streamrun run jobs/json_filter.lua --set source=listen --set port=7070
--   streamrun run jobs/json_filter.lua --set min=100 --set out=big.jsonl < events.jsonl
local sr = require "streamrun"

-- Small batches keep few decoded records alive, so LuaJIT's collector has
-- little to traverse (--set max_batch=N).
local job = sr.job { name = "json_filter", batch = sr.param("batch", "1s"),
                     max_batch_records = sr.param("max_batch", 500) }

local events
if sr.param("source", "stdin") == "listen" then
  events = job:listen_text(sr.param("host", "127.0.0.1"), sr.param("port", 7070),
                           { name = "events", format = "json" })
else
  events = job:stdin { name = "events", format = "json" }
end

local min_amount = sr.param("min", 50)

events:filter(function(e)
         return e.action == "purchase" and type(e.amount) == "number" and e.amount >= min_amount
       end)
      :map(function(e) return { user = e.user, amount = e.amount } end)
      :to_json_lines(sr.param("out", "-"), { name = "purchases" })

return job
