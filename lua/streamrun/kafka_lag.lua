-- streamrun.kafka_lag: Kafka consumer lag per partition (SPEC section 12)
-- for the job's HTTP server: a collector of /metrics families and the
-- partitions listed under each kafka source in /api/status. Figures come
-- from librdkafka's cached watermarks and the source's own offsets
-- (sr_kafka_source_lag): no request to a broker, so the loop never waits.
-- They are read at most every M.EVERY_MS. In task mode the partitions are
-- read from the one consumer of each source, so each is listed once,
-- whichever task holds it.
local core = require "streamrun.core"
local metrics = require "streamrun.metrics"
require "streamrun.kafka" -- its declarations of sr_kafka_*

local C, ffi = core.C, core.ffi
local ffi_string, ipairs, pairs, tostring, tonumber, type = ffi.string, ipairs, pairs, tostring, tonumber, type
local clock_ms = core.clock_ms

ffi.cdef [[
typedef struct sr_kafka_lag { int64_t position, committed, low, high, lag; } sr_kafka_lag_t;
int sr_kafka_source_lag(sr_source_t *s, size_t i, sr_kafka_lag_t *out);
]]

local M = {}

-- The figures are read again at most this often.
M.EVERY_MS = 1000

local tp_topic, tp_part = ffi.new("const char *[1]"), ffi.new("int32_t[1]")
local tp_next, tp_assigned = ffi.new("int64_t[1]"), ffi.new("int[1]")
local lag = ffi.new("sr_kafka_lag_t")

-- The kafka sources of S as { node, src }: a session's (from its loop), or
-- a task-mode job's inputs (streamrun.kafka_tasks).
local function kafka_sources(S)
  local out = {}
  if type(S.inputs) == "table" then -- streamrun.kafka_tasks (a session has a method of that name)
    for _, input in ipairs(S.inputs) do
      if input.node.op == "kafka" and input.src ~= nil then out[#out + 1] = { input.node, input.src } end
    end
  elseif S.loop then
    for _, node in ipairs(S.job.sources) do
      if node.op == "kafka" and node.c_index then
        out[#out + 1] = { node, C.sr_loop_source(S.loop, node.c_index) }
      end
    end
  end
  return out
end

local function known(v)
  v = tonumber(v)
  if v < 0 then return nil end
  return v
end

-- The partitions the group assigns to this process now, per source name:
-- { {topic, partition, position, committed, low_watermark,
-- high_watermark, lag} } sorted by topic and partition; a figure not known
-- yet is nil (a partition nothing was read from has no position).
function M.read(S)
  local out = {}
  for _, s in ipairs(kafka_sources(S)) do
    local node, src = s[1], s[2]
    local list = {}
    local i = 0
    while C.sr_kafka_source_partition(src, i, tp_topic, tp_part, tp_next, tp_assigned) == 0 do
      if tp_assigned[0] ~= 0 and C.sr_kafka_source_lag(src, i, lag) == 0 then
        list[#list + 1] = {
          topic = ffi_string(tp_topic[0]), partition = tp_part[0], position = known(lag.position),
          committed = known(lag.committed), low_watermark = known(lag.low), high_watermark = known(lag.high),
          lag = known(lag.lag),
        }
      end
      i = i + 1
    end
    table.sort(list, function(a, b)
      if a.topic ~= b.topic then return a.topic < b.topic end
      return a.partition < b.partition
    end)
    out[node.stage_name] = list
  end
  return out
end

-- M.read(S), kept on the monitor and read again after M.EVERY_MS.
function M.snapshot(mon, S)
  local now = clock_ms()
  if not mon.kafka_lag or now - mon.kafka_lag_ms >= M.EVERY_MS then
    mon.kafka_lag, mon.kafka_lag_ms = M.read(S), now
  end
  return mon.kafka_lag
end

-- The families, one sample per partition and figure known (a monitor's
-- collector: streamrun.monitor).
local FAMILIES = {
  { "lag", "streamrun_kafka_consumer_lag",
    "Messages in each partition after the job's position (high watermark - position), per Kafka source." },
  { "position", "streamrun_kafka_consumer_position",
    "The next offset the job reads in each partition (after the last record it took into a batch)." },
  { "committed", "streamrun_kafka_committed_offset",
    "The last offset committed to the consumer group for each partition (after a checkpoint)." },
  { "high_watermark", "streamrun_kafka_high_watermark",
    "The offset after the last message of each partition, as last fetched." },
}

function M.collect(mon, S, out)
  local snap = M.snapshot(mon, S)
  local names = {}
  for name in pairs(snap) do names[#names + 1] = name end
  if #names == 0 then return end
  table.sort(names)
  for _, f in ipairs(FAMILIES) do
    local field, samples = f[1], {}
    for _, name in ipairs(names) do
      for _, p in ipairs(snap[name]) do
        if p[field] then
          samples[#samples + 1] = { p[field], labels = { { "source", name }, { "topic", p.topic },
                                                          { "partition", tostring(p.partition) } } }
        end
      end
    end
    metrics.family(out, f[2], "gauge", f[3], samples)
  end
end

-- What /api/status adds to the source named name: its partitions.
function M.details(mon, S, name)
  local parts = M.snapshot(mon, S)[name]
  if parts and #parts > 0 then return { partitions = parts } end
end

-- Shows the lag of the job's kafka sources on monitor mon.
function M.attach(mon)
  mon:add_collector(M.collect)
  mon:add_source_details(M.details)
end

return M
