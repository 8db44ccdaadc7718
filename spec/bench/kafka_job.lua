-- The Kafka benchmark's job: messages keyed "k<n>" counted per key, from
-- an 8-partition topic (--set brokers= topic= group=).
local sr = require "streamrun"
local job = sr.job { name = "kafka_bench", batch = "100ms", max_batch_records = 200000,
                     checkpoint = { dir = sr.param("dir", "ckpt"), every = "1s" } }
job:kafka { brokers = sr.param("brokers", "127.0.0.1:9092"), topic = sr.param("topic", "bench"), group = sr.param("group", "bench"),
            with_key = true, name = "in",
            config = { ["session.timeout.ms"] = 6000, ["heartbeat.interval.ms"] = 500 } }
   :map_values(function() return 1 end)
   :update_state_by_key(function(values, total) return (total or 0) + sr.sum(values) end, { name = "counts" })
   :print(0)
return job
