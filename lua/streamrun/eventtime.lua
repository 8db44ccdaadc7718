-- streamrun.eventtime: event time (SPEC section 14). A source's event_time
-- option stamps each element of its batches with a time (epoch ms) kept in
-- the batch beside the elements (batch.t[i]); the job's watermark follows
-- the largest time each event-time source has shown, less its bounded
-- out-of-orderness, never moving back. The watermark's data is a plain
-- table the session keeps (checkpoint metadata, reloads); a plan reads and
-- moves it once per batch through a tracker.
local format = require "streamrun.format"
local trim_traceback = require("streamrun.guard").trim_traceback
local origin = require("streamrun.batch").origin
local new_times = require("streamrun.batch").new_times
local reuse_times = require("streamrun.batch").reuse_times
local WP = require("streamrun.watchdog").P

local type, tostring, floor, pcall = type, tostring, math.floor, pcall
local tonumber, match, pairs, ipairs = tonumber, string.match, pairs, ipairs

local M = {}

-- The watermark of the end of bounded input: past every event time (and
-- inside the timing wheel's 48 bits of milliseconds).
M.FINAL = 2 ^ 46

-- -- Reading event times --

-- Days from 1970-01-01 to a civil date (Howard Hinnant's days_from_civil).
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = floor(y / 400)
  local yoe = y - era * 400
  local mp = (m + 9) % 12
  local doy = floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + floor(yoe / 4) - floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

-- Epoch ms of an RFC 3339 date-time ("2024-05-01T12:00:00.250Z",
-- "...+02:00"; a space for the T is taken too), or nil and why.
function M.parse_rfc3339(s)
  local y, mo, d, h, mi, sec, rest = match(s, "^(%d%d%d%d)%-(%d%d)%-(%d%d)[Tt ](%d%d):(%d%d):(%d%d)(.*)$")
  if not y then return nil, "not an RFC 3339 date-time" end
  y, mo, d, h, mi, sec = tonumber(y), tonumber(mo), tonumber(d), tonumber(h), tonumber(mi), tonumber(sec)
  if mo < 1 or mo > 12 or d < 1 or d > 31 or h > 23 or mi > 59 or sec > 60 then
    return nil, "not an RFC 3339 date-time"
  end
  local ms = 0
  local frac, zone = match(rest, "^%.(%d+)(.*)$")
  if frac then
    ms = floor(tonumber("0." .. frac) * 1000 + 0.5)
    rest = zone
  end
  local offset = 0
  if rest == "Z" or rest == "z" then
    offset = 0
  else
    local sign, oh, om = match(rest, "^([+-])(%d%d):(%d%d)$")
    if not sign then return nil, "an RFC 3339 date-time needs a zone (Z or +hh:mm)" end
    offset = (tonumber(oh) * 60 + tonumber(om)) * 60000
    if sign == "-" then offset = -offset end
  end
  local days = days_from_civil(y, mo, d)
  return ((days * 24 + h) * 60 + mi) * 60000 + sec * 1000 + ms - offset
end
local parse_rfc3339 = M.parse_rfc3339

-- An event time as the runtime keeps it (whole ms), or nil and why.
local function as_time(v)
  local t = type(v)
  if t == "number" then
    if v ~= v or v == 1 / 0 or v == -1 / 0 then return nil, "event time is not a finite number" end
    if v < 0 or v >= M.FINAL then return nil, "event time " .. tostring(v) .. " ms is out of range" end
    return floor(v)
  end
  if t == "string" then
    local ms, err = parse_rfc3339(v)
    if not ms then return nil, ("event time %q: %s"):format(v, err) end
    return as_time(ms)
  end
  return nil, "event time must be epoch ms or an RFC 3339 string, got " .. t
end

-- v as an event time, or raises why not.
local function checked(v)
  local ms, err = as_time(v)
  if not ms then error("event_time: " .. err, 0) end
  return ms
end

-- The event time of element a (a pair: (a, b)) by the source's option:
-- a field name (JSON objects) or a function. Raises when there is none.
local function time_of(how, a, b)
  local v
  if type(how) == "string" then
    if type(a) ~= "table" then error("event_time: field " .. how .. " of a " .. type(a) .. " element", 0) end
    v = a[how]
    if v == nil then error("event_time: no field " .. how, 0) end
  else
    v = how(a, b)
  end
  return checked(v)
end

-- -- Source options --

-- Fills a source node's event-time fields from its options (event_time,
-- watermark, idle); fail(fmt, ...) raises a job-definition error, dur(op,
-- what, d) parses a duration.
function M.source_opts(op, fields, opts, fail, dur)
  local how = opts.event_time
  if how == nil then
    if opts.watermark ~= nil or opts.idle ~= nil then
      fail("%s: watermark and idle need an event_time option", op)
    end
    return
  end
  if type(how) ~= "string" and type(how) ~= "function" then
    fail("%s: event_time must be a JSON field name or a function of the element, got %s", op, type(how))
  end
  if type(how) == "string" and fields.format ~= "json" and op ~= "queue" and op ~= "generator" then
    fail("%s: event_time = %q names a field: the source needs format = \"json\"", op, how)
  end
  fields.event_time = how
  fields.timed = true
  fields.watermark_ms = 0
  if opts.watermark ~= nil then
    if opts.watermark == 0 or opts.watermark == "0s" or opts.watermark == "0ms" then
      fields.watermark_ms = 0
    else
      fields.watermark_ms = dur(op, "watermark", opts.watermark)
    end
  end
  if opts.idle ~= nil then fields.idle_ms = dur(op, "idle", opts.idle) end
end

-- -- The watermark --

-- The watermark's data, empty: wm (nil until every event-time source has
-- shown a time), and per source name its largest time (max) and the time
-- of the last batch it had records in (active); per event-time stage, the
-- late records dropped (on_late = "drop").
function M.new_data()
  return { max = {}, active = {}, dropped = {} }
end

-- A copy of data fit for a checkpoint's metadata or a reload's context.
function M.export(data)
  local out = { wm = data.wm, max = {}, active = {}, dropped = {} }
  for _, f in ipairs { "max", "active", "dropped" } do
    for k, v in pairs(data[f] or {}) do out[f][k] = v end
  end
  return out
end

-- Data taken from a checkpoint or a reload (nil: empty), checked.
function M.import(t)
  local d = M.new_data()
  if type(t) ~= "table" then return d end
  if type(t.wm) == "number" then d.wm = t.wm end
  for _, f in ipairs { "max", "active", "dropped" } do
    if type(t[f]) == "table" then
      for k, v in pairs(t[f]) do
        if type(k) == "string" and type(v) == "number" then d[f][k] = v end
      end
    end
  end
  return d
end

local Tracker = {}
Tracker.__index = Tracker

-- The tracker of a plan: job's event-time sources over data (from
-- new_data or import; kept by the session). dead(source, offset, reason,
-- record) takes elements with no event time and late records.
function M.tracker(job, data, dead)
  local list = {}
  for _, node in ipairs(job.sources) do
    if node.event_time ~= nil then list[#list + 1] = node end
  end
  if #list == 0 then return nil end
  local buffers = {}
  for _, node in ipairs(list) do buffers[node] = {} end
  return setmetatable({ sources = list, data = data, dead = dead, before = data.wm, fire = data.wm, final = false,
                        buffers = buffers, chained = nil, waiting = nil, fails = job.on_error == "fail" }, Tracker)
end

-- The common test of an event time in hand: a number in range, which
-- becomes whole ms; anything else goes to checked, which raises why not.
M.checked = checked

-- A record whose event time could not be read: its dead letter, at its
-- origin in batch b (element i), with reason err and the record. A time
-- that is no time ("event_time: ...") is bad input; an error the source's
-- event_time function raised is its user code's, named as a stage's is,
-- and with on_error = "fail" the job's end.
function Tracker:dead_record(node, b, i, err, record)
  local source, offset = origin(b, i)
  local reason = tostring(err)
  if reason:sub(1, 12) ~= "event_time: " then
    reason = ("stage %s (event_time of %s at %s): %s"):format(node.stage_name, node.op, node.where,
      trim_traceback(reason))
    if self.fails then error({ fatal = reason .. "\n  element: " .. format.value(record) }, 0) end
  end
  self.dead(source or node.stage_name, offset or -1, reason, format.value(record))
end

-- The loop of stamp(), one function for every batch: a closure made per
-- batch would hold the batch's tables as upvalues, and LuaJIT would
-- compile (and keep, with those tables) a trace per closure. Its state is
-- in S: a (elements), b (second values), t (times out), how, n, and what
-- the loop leaves: top (largest time), cur (the element in hand).
local S = {}
local FINAL = M.FINAL

-- The common case (a number of ms from a function) inline; anything else
-- through time_of, which says what is wrong.
local function stamp_run(i0)
  local A, B, T, how, n = S.a, S.b, S.t, S.how, S.n
  local top = S.top
  local fn = type(how) == "function"
  for i = i0, n do
    S.cur = i
    WP.rec = i
    local t
    if fn then
      t = how(A[i], B[i])
      if type(t) == "number" and t >= 0 and t < FINAL then
        t = t - t % 1
      else
        t = checked(t)
      end
    else
      t = time_of(how, A[i], B[i])
    end
    T[i] = t
    if top == nil or t > top then
      top = t
      S.top = t
    end
  end
end

-- Stamps a source's batch: b.t[i] is element i's event time. Elements
-- with none go to dead letters (the source's, at their record's offset)
-- and leave the batch. Returns the batch (a new one when some left) and
-- the largest time in it (nil when empty).
local function stamp(self, node, b)
  local n = b.n
  local A, B = b.a, b.b
  local T = reuse_times(self.buffers[node], n)
  S.a, S.b, S.t, S.how, S.n, S.top, S.cur = A, B, T, node.event_time, n, nil, 0
  local bad
  -- A record with no time is bad input, as an undecodable line is: its
  -- dead letter says what is wrong with it (no traceback), and the loop
  -- resumes after it.
  local i0 = 1
  while i0 <= n do
    local ok, err = pcall(stamp_run, i0)
    if ok then break end
    if type(err) == "table" and err.fatal then
      S.a, S.b, S.t, S.how = nil, nil, nil, nil
      error(err, 0)
    end
    local cur = S.cur
    bad = bad or {}
    bad[#bad + 1] = cur
    self:dead_record(node, b, cur, err, A[cur])
    i0 = cur + 1
  end
  local top = S.top
  S.a, S.b, S.t, S.how = nil, nil, nil, nil
  if not bad then
    b.t = T
    return b, top
  end
  -- Without the elements that have no time; origins go through o.
  local OA, OB, OT, O, m, k = {}, {}, new_times(n), {}, 0, 1
  for i = 1, n do
    if bad[k] == i then
      k = k + 1
    else
      m = m + 1
      OA[m], OB[m], OT[m], O[m] = A[i], B[i], T[i], i
    end
  end
  return { n = m, a = OA, b = OB, t = OT, o = O, from = b }, top
end

-- Before a batch's stages run: stamps the event-time sources' batches in
-- inputs (by node), then moves the watermark: the minimum over sources
-- of (largest time - watermark), leaving out sources idle for longer than
-- their idle option; never back. final: the end of bounded input (every
-- window and timer fires). Sets self.before (the watermark lateness is
-- judged against) and self.fire (the one windows fire at).
--
-- The source a chain stamps itself (self.chained: the job's one
-- event-time source, whose only consumer is that chain): its records are
-- stamped in the chain's own loop (from a C batch read where it is, each
-- line is made once, for the event_time call and the chain's first
-- stage). Then the watermark moves when that chain calls stamped(),
-- before any stage that reads it runs (every such stage is downstream of
-- the job's one event-time source, so of its chain).
function Tracker:batch(inputs, time_ms, final)
  local data = self.data
  self.before = data.wm
  self.waiting = nil
  for j, node in ipairs(self.sources) do
    local b = inputs[node]
    local name = node.stage_name
    if b and b.n > 0 then
      if node == self.chained then
        self.waiting = node
      else
        if self.watch then b = self.watch(j, node, b, time_ms) end
        local nb, top = stamp(self, node, b)
        inputs[node] = nb
        self:seen(node, top, time_ms)
      end
    elseif data.active[name] == nil then
      data.active[name] = time_ms
    end
  end
  self.time_ms, self.final_batch = time_ms, final
  if not self.waiting then self:move(time_ms, final) end
end

-- Nothing reads the watermark while a source waits for its chain.
function Tracker:check()
  if self.waiting then
    error("eventtime: the watermark is read before " .. self.waiting.stage_name .. " is stamped", 0)
  end
end

-- A source's batch showed times up to top (nil: none, its records all
-- went to the dead letters) at time_ms. A source idles from its first
-- batch until it shows a time.
function Tracker:seen(node, top, time_ms)
  local data, name = self.data, node.stage_name
  if top then
    local was = data.max[name]
    if was == nil or top > was then data.max[name] = top end
    data.active[name] = time_ms
  elseif data.active[name] == nil then
    data.active[name] = time_ms
  end
end

-- The chain of the waiting source has stamped its batch (largest time
-- top, nil when none): the watermark moves.
function Tracker:stamped(node, top)
  self:seen(node, top, self.time_ms)
  self.waiting = nil
  self:move(self.time_ms, self.final_batch)
end

-- Moves the watermark after the sources' batches are stamped.
function Tracker:move(time_ms, final)
  local data = self.data
  local low
  local any = false
  for _, node in ipairs(self.sources) do
    local name = node.stage_name
    local idle = node.idle_ms and time_ms - data.active[name] >= node.idle_ms
    if not idle then
      any = true
      local top = data.max[name]
      if top == nil then
        low = nil
        break
      end
      local w = top - node.watermark_ms
      if low == nil or w < low then low = w end
    end
  end
  if any and low ~= nil and (data.wm == nil or low > data.wm) then data.wm = low end
  self.fire = final and M.FINAL or data.wm
  self.final = final or false
end

M.time_of = time_of

return M
