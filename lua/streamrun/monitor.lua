-- streamrun.monitor: what the job's HTTP server shows (SPEC section 12),
-- gathered once per batch on the loop's thread: totals, the histogram of
-- batch processing time, the last batches, time per stage, records in per
-- source. After each batch it renders /metrics (streamrun.metrics) and
-- /api/status (streamrun.status) and publishes them to the server
-- (streamrun.http), whose own thread answers every request from that copy.
-- Its figures cross a reload (export / import); they start again at zero
-- with the process, as Prometheus counters do.
local core = require "streamrun.core"
local metrics = require "streamrun.metrics"
local status = require "streamrun.status"

local C = core.C
local clock_ms = core.clock_ms

local M = {}

-- Batches the status keeps (the page's charts).
M.RECENT = 120
-- Upper bounds of the processing-time histogram, in seconds.
M.BUCKETS = { 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10 }
-- Source positions are read at most this often (a text_dir lists its files).
M.POSITIONS_EVERY_MS = 1000
-- The documents are rebuilt at most this often (batches may be faster).
M.PUBLISH_EVERY_MS = 250

local Monitor = {}
Monitor.__index = Monitor

-- A monitor publishing through publish(path, content_type, body) (nil:
-- gathering only, for tests). from: an exported monitor's figures; log(fmt,
-- ...) reports a fault in building the documents.
function M.new(publish, from, log)
  local m = setmetatable({
    publish = publish, log = log,
    batches = 0, records = 0, processing_s = 0, delay_s = 0,
    buckets = {}, -- counts per bound of M.BUCKETS (not cumulative)
    recent = {},  -- the last M.RECENT batches, oldest first
    records_in = {}, -- source name -> records
    stage_ms = {}, -- stage label -> milliseconds, all batches
    reloads = 0, started_unix = os.time(), started_ms = clock_ms(),
    collectors = {}, -- more metric families: fn(monitor, session, out)
    source_details = {}, -- more of each source in the status: fn(monitor, session, name)
    bounds = M.BUCKETS,
  }, Monitor)
  for i = 1, #M.BUCKETS + 1 do m.buckets[i] = 0 end
  if from then
    for k, v in pairs(from) do m[k] = v end
    m.started_ms = clock_ms() - (from.uptime_ms or 0)
  end
  m.recent_json = {}
  for i, b in ipairs(m.recent) do m.recent_json[i] = status.batch_json(b) end
  return m
end

-- What a reload hands the next VM's monitor.
function Monitor:export()
  return {
    batches = self.batches, records = self.records, processing_s = self.processing_s, delay_s = self.delay_s,
    buckets = self.buckets, recent = self.recent, records_in = self.records_in, stage_ms = self.stage_ms,
    reloads = self.reloads, started_unix = self.started_unix, uptime_ms = clock_ms() - self.started_ms,
    publish_ms = self.publish_ms,
  }
end

-- Adds a metric family: fn(monitor, session, out) appends lines to out
-- (metrics.family helps). For later subsystems (workers, Kafka lag).
function Monitor:add_collector(fn)
  self.collectors[#self.collectors + 1] = fn
end

-- Adds to each source of /api/status: fn(monitor, session, name) returns
-- a table of fields for the source named name, or nil (Kafka partitions).
function Monitor:add_source_details(fn)
  self.source_details[#self.source_details + 1] = fn
end

-- The records each source brought to the batch (inputs: node -> batch),
-- as the status line counts them: a C source's lines, bad ones too.
function Monitor:inputs(S, inputs)
  local per, loop = self.records_in, S.loop
  for _, node in ipairs(S.job.sources) do
    local n
    if node.c_index and loop then
      n = tonumber(C.sr_loop_batch(loop, node.c_index).n)
    else
      local b = inputs[node]
      n = b and b.n or 0
    end
    local name = node.stage_name
    per[name] = (per[name] or 0) + n
  end
end

-- The time of each step of the batch just run, by its label; the list of
-- {stages, ms} for the status.
function Monitor:step_times(plan)
  local ms, names = plan.step_ms, plan.step_stages
  local prev = self.prev_step_ms
  if not prev or prev.plan ~= plan then prev = { plan = plan } end
  local out = {}
  for k = 1, #ms do
    local d = ms[k] - (prev[k] or 0)
    prev[k] = ms[k]
    local label = table.concat(names[k], " > ")
    self.stage_ms[label] = (self.stage_ms[label] or 0) + d
    out[k] = { stages = names[k], label = label, ms = d }
  end
  self.prev_step_ms = prev
  return out
end

-- Keys in each stateful stage and window: { {stage, keys} ... } by name.
function M.state_sizes(plan)
  local out = {}
  for name, st in pairs(plan.states) do out[#out + 1] = { stage = name, keys = st:count() } end
  for name, w in pairs(plan.windows) do
    if w.result then out[#out + 1] = { stage = name, keys = w.result:count() } end
  end
  table.sort(out, function(a, b) return a.stage < b.stage end)
  return out
end

-- The batch just run, as session.report_batch saw it (s: batch, time_ms,
-- records, processing_ms, scheduling_delay_ms, state_keys, dead_letters):
-- counted, and the documents published.
function Monitor:batch(S, s)
  local sec = s.processing_ms / 1000
  self.batches = self.batches + 1
  self.records = self.records + s.records
  self.processing_s = self.processing_s + sec
  self.delay_s = s.scheduling_delay_ms / 1000
  local i = 1
  while M.BUCKETS[i] and sec > M.BUCKETS[i] do i = i + 1 end
  self.buckets[i] = self.buckets[i] + 1
  local recent = self.recent
  recent[#recent + 1] = {
    batch = s.batch, time_ms = s.time_ms, records = s.records, processing_ms = s.processing_ms,
    scheduling_delay_ms = s.scheduling_delay_ms, state_keys = s.state_keys, dead_letters = s.dead_letters,
    unix_ms = core.unix_ms(),
  }
  -- Each batch's JSON is made once, not once per batch it stays listed.
  local texts = self.recent_json
  texts[#texts + 1] = status.batch_json(recent[#recent])
  if #recent > M.RECENT then table.remove(recent, 1) end
  if #texts > M.RECENT then table.remove(texts, 1) end
  self:refresh(S)
end

-- Reads what the session holds now (stage times every batch; state sizes,
-- dead letters, positions when publishing) and publishes the documents: at
-- most every M.PUBLISH_EVERY_MS unless forced, since building them costs
-- the job's thread some tenths of a millisecond (they are run once a
-- batch, so mostly by LuaJIT's interpreter).
local function build(self, S, force)
  local now = clock_ms()
  -- (A Kafka job run as tasks has a plan per task: no stage times, its
  -- keys summed over the tasks.)
  local plan = S.plan
  if plan then self.steps = self:step_times(plan) end
  if not force and self.published_ms and now - self.published_ms < M.PUBLISH_EVERY_MS then return end
  self.published_ms = now
  self.states = plan and M.state_sizes(plan) or S:state_sizes()
  self.dead = M.dead_letters(S.loop)
  if not self.positions or now - self.positions_ms >= M.POSITIONS_EVERY_MS then
    self.positions, self.positions_ms = S:positions(), now
  end
  if self.publish then
    self.publish("/metrics", "text/plain; version=0.0.4; charset=utf-8", metrics.render(self, S))
    self.publish("/api/status", "application/json", status.render(self, S))
  end
  -- What this costs the job's thread (in the next exposition).
  self.publish_ms = (self.publish_ms or 0) + (clock_ms() - now)
end

-- (build, guarded: a fault in showing the job never stops it; it is said
-- once and the documents stay as they were.)
function Monitor:refresh(S, force)
  local ok, err = xpcall(build, debug.traceback, self, S, force)
  if not ok and not self.failed then
    self.failed = true
    if self.log then self.log("http: the status cannot be built (the job goes on): %s", tostring(err)) end
  end
end

-- Dead letters so far: { total, by_source = { {source, count} }, recent =
-- { {seq, source, offset, reason, record, record_len, cut, unix_ms} } } from the
-- loop's tally (no loop: none).
function M.dead_letters(loop)
  local out = { total = 0, by_source = {}, recent = {} }
  if not loop then return out end
  local t = C.sr_deadletter_tally(C.sr_loop_deadletter(loop))
  out.total = tonumber(t.seq)
  local count = core.ffi.new("uint64_t[1]")
  for i = 0, tonumber(t.ncounts) - 1 do
    local name = C.sr_dltally_source(t, i, count)
    out.by_source[#out.by_source + 1] = { source = core.ffi.string(name), count = tonumber(count[0]) }
  end
  table.sort(out.by_source, function(a, b) return a.source < b.source end)
  local ffi = core.ffi
  for i = 0, 19 do
    local e = C.sr_dltally_recent(t, i)
    if e == nil then break end
    out.recent[#out.recent + 1] = {
      seq = tonumber(e.seq), source = ffi.string(e.source), offset = tonumber(e.offset),
      reason = ffi.string(e.reason), record = ffi.string(e.record), record_len = tonumber(e.record_len),
      cut = e.record_shown < e.record_len,
      unix_ms = e.unix_ms,
    }
  end
  return out
end

-- Seconds since the monitor (the job's process) started.
function Monitor:uptime_s()
  return (clock_ms() - self.started_ms) / 1000
end

return M
