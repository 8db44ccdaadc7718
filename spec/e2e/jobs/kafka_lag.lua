-- What spec/e2e/kafka_lag_spec.lua watches through --http: a Kafka topic
-- read slowly (a few records a batch), so the job stays behind for a while
-- and its lag per partition can be seen going down to 0
-- (--set brokers=HOST:PORT [topic=] [max=records per batch] [dir=checkpoints]).
local sr = require "streamrun"
local dir = sr.param("dir", nil) -- with a checkpoint directory the job runs as tasks
local job = sr.job { name = "kafka_lag", batch = "100ms", max_batch_records = tonumber(sr.param("max", 5)),
                     checkpoint = dir and { dir = dir, every = "200ms" } or nil }
job:kafka { brokers = sr.param("brokers", "127.0.0.1:9092"), topic = sr.param("topic", "events"),
            group = "lag", format = "text", name = "events",
            -- A member that left uncleanly is out of the group after 6 s.
            config = { ["session.timeout.ms"] = 6000, ["heartbeat.interval.ms"] = 500 } }
   :map(function(v) return v:match("^r%d+") or "other", 1 end) -- values "r<round>-<i>": a key per round
   :update_state_by_key(function(values, total) return (total or 0) + sr.sum(values) end, { name = "totals" })
   :foreach_batch(function() end)
return job
