-- Two Kafka topics whose records meet per key (a union into keyed state),
-- checkpointed: the job runs as one process, not as tasks (a task holds
-- one partition of one topic). State per key: its values, sorted, joined
-- by "+". --set brokers=HOST:PORT dir=DIR.
local sr = require "streamrun"
local job = sr.job { name = "kafka_union", batch = "100ms",
                     checkpoint = { dir = sr.param("dir", "ckpt"), every = "200ms" } }
local function topic(name)
  return job:kafka { brokers = sr.param("brokers", "127.0.0.1:9092"), topic = name, group = "meet",
                     with_key = true, name = name,
                     config = { ["session.timeout.ms"] = 6000, ["heartbeat.interval.ms"] = 500 } }
end
topic("orders"):union(topic("payments"))
  :update_state_by_key(function(values, seen)
    local all = {}
    for v in (seen or ""):gmatch("[^+]+") do all[#all + 1] = v end
    for _, v in ipairs(values) do all[#all + 1] = v end
    table.sort(all)
    return table.concat(all, "+")
  end, { name = "seen" })
  :print(1)
return job
