-- Counts the messages of a Kafka topic per message key, checkpointed
-- (--set brokers=HOST:PORT dir=DIR [topic= group= format=text|json]).
local sr = require "streamrun"
local job = sr.job { name = "kafka_count", batch = "100ms",
                     checkpoint = { dir = sr.param("dir", "ckpt"), every = "200ms" } }
job:kafka { brokers = sr.param("brokers", "127.0.0.1:9092"), topic = sr.param("topic", "events"),
            group = sr.param("group", "counters"), format = sr.param("format", "text"), with_key = true,
            name = "events",
            -- A member killed with kill -9 is out of the group after 6 s.
            config = { ["session.timeout.ms"] = 6000, ["heartbeat.interval.ms"] = 500 } }
   :map_values(function() return 1 end)
   :update_state_by_key(function(values, total) return (total or 0) + sr.sum(values) end, { name = "totals" })
   :print(3)
return job
