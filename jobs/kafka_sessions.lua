-- kafka_sessions: user sessions from click messages of a Kafka topic, keyed
-- by user, values JSON like {"page":"/home","ts":1700000000.5} (ts in
-- seconds). A session is a user's clicks until `gap` passes without one;
-- each closed session comes out once, printed and produced as JSON to the
-- topic `out` (keyed by user). Keyed by the message key, the state needs no
-- repartition: each user's session lives in the task of their partition.
--   streamrun kafka-mock --topic clicks:8 --topic sessions:8
--   streamrun run jobs/kafka_sessions.lua --set brokers=HOST:PORT --checkpoint ckpt/ks
local sr = require "streamrun"

local job = sr.job { name = "kafka_sessions", batch = sr.param("batch", "1s") }
local brokers = sr.param("brokers", "127.0.0.1:9092")

local function track(user, click, session, time_ms)
  if session:is_timing_out() then
    local s = session:get()
    return user, { pages = s.pages, duration_s = s.last - s.first, first_ts = s.first, last_ts = s.last }
  end
  local ts = type(click.ts) == "number" and click.ts or time_ms / 1000
  local s = session:exists() and session:get() or { first = ts, last = ts, pages = 0 }
  s.pages = s.pages + 1
  if ts < s.first then s.first = ts end
  if ts > s.last then s.last = ts end
  session:update(s)
end

local closed = job:kafka { brokers = brokers, topic = sr.param("topic", "clicks"), group = sr.param("group", "sessions"),
                           format = "json", with_key = true, name = "clicks" }
   :filter(function(_, c) return type(c) == "table" end)
   :map_with_state(sr.state_spec(track):timeout(sr.param("gap", "30s")):name("open_sessions"))

closed:print(sr.param("show", 20), { name = "closed_sessions" })
closed:to_kafka { brokers = brokers, topic = sr.param("out", "sessions"), name = "sessions_out" }

return job
