-- streamrun.metrics: a monitor's figures (streamrun.monitor) in the
-- Prometheus text exposition format 0.0.4: names prefixed streamrun_,
-- counters ending _total, times in seconds, one HELP and TYPE per family.
local core = require "streamrun.core"

local concat, format, tostring, ipairs, pairs = table.concat, string.format, tostring, ipairs, pairs

local M = {}

-- A label value escaped as the format wants (backslash, quote, newline).
local ESCAPES = { ["\\"] = "\\\\", ['"'] = '\\"', ["\n"] = "\\n" }
local function label_value(s)
  s = tostring(s)
  if not s:find('[\\"\n]') then return s end
  return (s:gsub('[\\"\n]', ESCAPES))
end

local function number(v)
  if v ~= v then return "NaN" end
  if v == math.huge then return "+Inf" end
  if v == -math.huge then return "-Inf" end
  if v == math.floor(v) and math.abs(v) < 2 ^ 53 then return format("%d", v) end
  -- The shortest of these that reads back as v (a batch time in epoch
  -- seconds has 10 digits before the point).
  local s = format("%.15g", v)
  if tonumber(s) == v then return s end
  return format("%.17g", v)
end
M.number = number

-- Appends one family to out: its HELP and TYPE lines and its samples, each
-- { value } or { value, labels = { {name, value}... }, suffix = "_bucket" }.
function M.family(out, name, kind, help, samples)
  out[#out + 1] = format("# HELP %s %s", name, help)
  out[#out + 1] = format("# TYPE %s %s", name, kind)
  for _, s in ipairs(samples) do
    local labels = ""
    if s.labels and #s.labels > 0 then
      local parts = {}
      for i, l in ipairs(s.labels) do parts[i] = format('%s="%s"', l[1], label_value(l[2])) end
      labels = "{" .. concat(parts, ",") .. "}"
    end
    out[#out + 1] = format("%s%s%s %s", name, s.suffix or "", labels, number(s[1]))
  end
end
local family = M.family

-- Samples of a table name -> value, one label, sorted by name.
local function by_label(label, t)
  local names = {}
  for k in pairs(t) do names[#names + 1] = k end
  table.sort(names)
  local samples = {}
  for i, k in ipairs(names) do samples[i] = { t[k], labels = { { label, k } } } end
  return samples
end

-- The whole exposition of monitor mon over session S.
function M.render(mon, S)
  local out = {}
  local job = S.job
  family(out, "streamrun_info", "gauge", "The job this process runs (value 1).",
    { { 1, labels = { { "job", job.name }, { "version", core.ffi.string(core.C.sr_version()) } } } })
  family(out, "streamrun_uptime_seconds", "gauge", "Seconds since the process started.", { { mon:uptime_s() } })
  family(out, "streamrun_batch_interval_seconds", "gauge", "The batch interval.", { { job.batch_ms / 1000 } })
  family(out, "streamrun_batches_total", "counter", "Batches run.", { { mon.batches } })
  family(out, "streamrun_records_in_total", "counter", "Records read, per source.", by_label("source", mon.records_in))
  -- The histogram: cumulative buckets, then _sum and _count.
  local samples, cum = {}, 0
  local buckets = mon.bounds
  for i, le in ipairs(buckets) do
    cum = cum + mon.buckets[i]
    samples[i] = { cum, suffix = "_bucket", labels = { { "le", number(le) } } }
  end
  cum = cum + mon.buckets[#buckets + 1]
  samples[#samples + 1] = { cum, suffix = "_bucket", labels = { { "le", "+Inf" } } }
  samples[#samples + 1] = { mon.processing_s, suffix = "_sum" }
  samples[#samples + 1] = { mon.batches, suffix = "_count" }
  family(out, "streamrun_batch_processing_seconds", "histogram", "Time to run a batch through the job's stages.",
    samples)
  family(out, "streamrun_scheduling_delay_seconds", "gauge",
    "How late the last batch started after its scheduled time.", { { mon.delay_s } })
  local last = mon.recent[#mon.recent]
  family(out, "streamrun_last_batch_time_seconds", "gauge", "The batch time of the last batch run (job time).",
    { { last and last.time_ms / 1000 or 0 } })
  family(out, "streamrun_stage_seconds_total", "counter",
    "Time spent in each stage (stages fused into one loop share one series).", by_label("stage", (function()
      local t = {}
      for label, ms in pairs(mon.stage_ms) do t[label] = ms / 1000 end
      return t
    end)()))
  local keys = {}
  for _, st in ipairs(mon.states or {}) do keys[st.stage] = st.keys end
  family(out, "streamrun_state_keys", "gauge", "Keys held by each stateful stage and window.",
    by_label("stage", keys))
  local dl = mon.dead
  local dsamples = {}
  for i, d in ipairs(dl.by_source) do dsamples[i] = { d.count, labels = { { "source", d.source } } } end
  family(out, "streamrun_dead_letters_total", "counter",
    "Records sent to the dead letters, per source (or stage that rejected them).", dsamples)
  local w = S.writer
  if w then
    local lw = w.last_written
    family(out, "streamrun_checkpoints_total", "counter", "Checkpoints written.", { { w.written or 0 } })
    family(out, "streamrun_checkpoint_failures", "gauge", "Checkpoints failed in a row.", { { w.failures } })
    if lw then
      family(out, "streamrun_checkpoint_duration_seconds", "gauge",
        "How long the last checkpoint took (a forked one: until a batch boundary saw it done).",
        { { lw.duration_ms / 1000 } })
      family(out, "streamrun_checkpoint_age_seconds", "gauge", "Seconds since the last checkpoint was written.",
        { { os.time() - lw.unix_s } })
      family(out, "streamrun_last_checkpoint_timestamp_seconds", "gauge",
        "When the last checkpoint was written (Unix time).", { { lw.unix_s } })
    end
  end
  family(out, "streamrun_reloads_total", "counter", "Hot reloads of the job's logic.", { { mon.reloads } })
  family(out, "streamrun_reload_failures_total", "counter", "Reloads refused (the old logic went on).",
    { { S.reload_failures or 0 } })
  family(out, "streamrun_status_publish_seconds_total", "counter",
    "Time the job's thread spent reading its figures and building these documents, after its batches.",
    { { (mon.publish_ms or 0) / 1000 } })
  for _, collect in ipairs(mon.collectors) do collect(mon, S, out) end
  out[#out + 1] = ""
  return concat(out, "\n")
end

return M
