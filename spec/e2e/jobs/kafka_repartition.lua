-- Counts page views per page from messages "user,page" keyed by user:
-- re-keyed by page through a repartition topic, so each page's count lives
-- in one task (--set brokers=HOST:PORT dir=DIR).
local sr = require "streamrun"
local job = sr.job { name = "kafka_pages", batch = "100ms",
                     checkpoint = { dir = sr.param("dir", "ckpt"), every = "200ms" } }
job:kafka { brokers = sr.param("brokers", "127.0.0.1:9092"), topic = "clicks", group = "pages", name = "clicks",
            config = { ["session.timeout.ms"] = 6000, ["heartbeat.interval.ms"] = 500 } }
   :map(function(line) local page = line:match(",(.*)$") return page, 1 end)
   :repartition("clicks-by-page", { config = { ["session.timeout.ms"] = 6000, ["heartbeat.interval.ms"] = 500 } })
   :update_state_by_key(function(values, total) return (total or 0) + sr.sum(values) end, { name = "pages" })
   :print(3)
return job
