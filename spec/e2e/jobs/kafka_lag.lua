-- What spec/e2e/kafka_lag_spec.lua watches through --http: a Kafka topic
-- read slowly (a few records a batch), so the job stays behind for a while
-- and its lag per partition can be seen going down to 0
-- (--set brokers=HOST:PORT [topic=] [max=records per batch]).
local sr = require "streamrun"
local job = sr.job { name = "kafka_lag", batch = "100ms", max_batch_records = tonumber(sr.param("max", 5)) }
job:kafka { brokers = sr.param("brokers", "127.0.0.1:9092"), topic = sr.param("topic", "events"),
            group = "lag", format = "text", name = "events" }
   :map(function(v) return v, 1 end)
   :reduce_by_key(sr.add)
   :foreach_batch(function() end)
return job
