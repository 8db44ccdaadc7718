-- streamrun.testing: the test driver of SPEC section 11. Runs a job's real
-- compiled stages in-process on a virtual clock: every source becomes a
-- queue fed by push (a queue source also yields its own batches), batch k
-- has time k * batch, and every output's elements are captured by name.
local core = require "streamrun.core"
local checkpoint = require "streamrun.checkpoint"
local loader = require "streamrun.loader"
local reload = require "streamrun.reload"
local session = require "streamrun.session"
local sources = require "streamrun.sources"
local batch = require "streamrun.batch"
local watchdog = require "streamrun.watchdog"
local evwindows = require "streamrun.evwindows"

local M = {}

local Driver = {}
Driver.__index = Driver

-- Why a driver's job is never restarted (a stuck record, a watchdog's
-- timeout): it runs in the test's own process.
local NO_RESTART = "the test driver cannot restart the job"

-- The session options of a driver: no C loop (every source is fed by
-- push), errors that would end the job raised, outputs captured by name.
local function options(d, echo)
  return {
    params = d.params, feed = d.feed, dead = d.dead, raises = true,
    -- Every batch of a keyed segment splits across the workers (what the
    -- exchange is tested on), unless adaptive_split.
    split_always = not d.adaptive_split,
    -- stage_timeout as in a running job; a record stuck in a compiled loop
    -- ends the process (Busted's), which cannot be restarted.
    watch = true, no_restart = NO_RESTART,
    generators = d.generators and true or false, log = function() end,
    sink = {
      stdout = io.stdout,
      quiet_print = not echo,
      capture = function(node, elements) d.current[node.stage_name] = elements end,
    },
  }
end

-- The clock's feed: what was pushed on each source, by name, goes into its
-- next batch after what the source yields itself; positions count it.
local function new_feed(d)
  local feed = {}
  function feed.take(node, own)
    local name = node.stage_name
    local pushed = d.pending[name] or {}
    d.pending[name] = {}
    local offset = d.offsets[name] or 0
    local more = sources.read_values(node, pushed, offset + 1, d.dead)
    d.offsets[name] = offset + #pushed
    if not own or own.n == 0 then return more end
    if more.n == 0 then return own end
    local values = batch.to_elements(own)
    for i = 1, more.n do values[#values + 1] = more.a[i] end
    local b = batch.of_values(values)
    b.cat = { own, more }
    return b
  end
  function feed.position(node, p) p.pushed = d.offsets[node.stage_name] or 0 end
  function feed.restore(positions)
    for name, p in pairs(positions) do d.offsets[name] = p.pushed or 0 end
  end
  return feed
end

-- Makes S the driver's session: its job and plan, and the sources' kinds
-- (pushes stay queued on a source of the same name and kind).
local function attach(d, S)
  d.session, d.job, d.plan, d.batch_ms = S, S.job, S.plan, S.job.batch_ms
  local kinds = {}
  for _, node in ipairs(S.job.sources) do kinds[node.stage_name] = node.op end
  for name in pairs(d.pending) do
    if kinds[name] ~= d.kinds[name] then d.pending[name], d.offsets[name] = nil, nil end
  end
  d.kinds = kinds
end

-- Loads the job at path, or builds it by calling a function that returns
-- the job (handy for small jobs inside a spec). opts: params (--set
-- values), generators (true to let generator sources produce as they would
-- when running), echo (true to let print write to stdout too), workers
-- (N or "auto", over the job's own option), adaptive_split (true: a small
-- batch of a keyed segment without state may run on worker 0 alone, as
-- in a running job; by default every batch splits), history
-- (false to keep only the last batch's outputs, for long runs).
function M.driver(path, opts)
  opts = opts or {}
  local job, err = loader.load(path, { params = opts.params })
  if not job then error(err, 2) end
  -- workers (SPEC section 15): N or "auto"; default $STREAMRUN_WORKERS,
  -- then the job's own (so whole suites run with any N).
  local werr = require("streamrun.workers").override(job, opts.workers or os.getenv("STREAMRUN_WORKERS"))
  if werr then error(werr, 2) end
  local workers_opt = opts.workers or os.getenv("STREAMRUN_WORKERS")
  local d = setmetatable({
    clock_ms = 0,         -- the virtual clock
    batches = 0,          -- batches run so far
    dead_letters = {},    -- { source, offset, reason, record } in order
    history = {},         -- outputs of every batch, in order
    generators = opts.generators,
    keep_history = opts.history ~= false,
    params = opts.params,
    echo = opts.echo,
    adaptive_split = opts.adaptive_split,
    workers_opt = workers_opt, -- (a reload keeps it)
    pending = {}, offsets = {}, kinds = {}, -- pushes by source name
  }, Driver)
  function d.dead(source, offset, reason, record)
    d.dead_letters[#d.dead_letters + 1] = { source = source, offset = offset, reason = reason, record = record }
  end
  d.feed = new_feed(d)
  local o = options(d, opts.echo)
  o.restored = opts.restored
  local S = session.open(job, o)
  attach(d, S)
  if opts.restored then
    d.batches, d.last_time = S.nbatches, S.time_ms or 0
    d.clock_ms = d.last_time
    d.reload_log = S.adopted
  end
  return d
end

local function source_node(d, name)
  local node = d.job.by_name[name]
  if not node or node.kind ~= "source" then
    local names = {}
    for _, s in ipairs(d.job.sources) do names[#names + 1] = s.stage_name end
    error(("no source named %q (sources: %s)"):format(tostring(name), table.concat(names, ", ")), 3)
  end
  return node
end

-- Queues elements on a named source for the next batch. Strings are records
-- as the source would receive them (JSON sources decode them); other values
-- are elements as they are.
function Driver:push(name, elements)
  local node = source_node(self, name)
  if type(elements) ~= "table" then error("push: elements must be an array", 2) end
  local q = self.pending[node.stage_name] or {}
  self.pending[node.stage_name] = q
  for i = 1, #elements do q[#q + 1] = elements[i] end
  return self
end

-- The next batch on the virtual clock, run by the session as the binary
-- runs it (a failing output or a fatal error raises here).
local function run_batch(d)
  d.batches = d.batches + 1
  local time_ms = (d.last_time or 0) + d.batch_ms
  d.last_time = time_ms
  if d.clock_ms < time_ms then d.clock_ms = time_ms end
  d.current = {}
  for _, node in ipairs(d.job.outputs) do d.current[node.stage_name] = {} end
  -- (Drivers take turns on the process's one watchdog: this job's timeout.)
  watchdog.retime(d.job, NO_RESTART)
  d.session:run_batch(time_ms)
  local out = d.current
  if not d.keep_history then d.history = {} end
  d.history[d.batches] = { time_ms = time_ms, outputs = out }
  return out
end

-- Runs n batches (default 1); returns the outputs of the last, by output name.
function Driver:tick(n)
  local out
  for _ = 1, n or 1 do out = run_batch(self) end
  return out
end

-- Advances the virtual clock by a duration, running every batch that falls
-- due; returns the outputs of the last batch run (nil if none).
function Driver:advance(dur)
  local ms, err = core.duration_ms(dur)
  if not ms then error("advance: " .. err, 2) end
  self.clock_ms = self.clock_ms + ms
  local out
  while (self.last_time or 0) + self.batch_ms <= self.clock_ms do out = run_batch(self) end
  return out
end

-- The job's watermark in event time (epoch ms), or nil while it has none
-- (no event-time source, or one has shown no time yet).
function Driver:watermark()
  return self.session.event.wm
end

-- Ends the input as a bounded job's does: runs one last batch with what was
-- pushed, at the final watermark (every event window, session and timeout
-- fires; every map_with_state key with a timeout times out). Returns its
-- outputs, by output name.
function Driver:finish()
  self.session.ending = true
  local ok, out = pcall(run_batch, self)
  self.session.ending = nil
  if not ok then error(out, 0) end
  return out
end

-- Late records an event-time stage counted and dropped (on_late = "drop").
function Driver:late_dropped(name)
  return self.session.event.dropped[name] or 0
end

-- How many keyed segments of the plan run split across workers (0 when
-- the job runs on one: one worker, or a shape that does not split).
function Driver:parallel_segments()
  return self.plan.parallels and #self.plan.parallels or 0
end

-- How many batches of the plan's keyed segments ran on worker 0 alone
-- (adaptive_split: streamrun.splitcost).
function Driver:batches_alone()
  local n = 0
  for _, par in ipairs(self.plan.parallels or {}) do n = n + (par.alone_batches or 0) end
  return n
end

-- The time of the last batch run, in virtual milliseconds.
function Driver:time() return self.last_time or 0 end

local function state_of(d, name)
  local st = d.plan.states[name]
  if not st then
    local names = {}
    for n in pairs(d.plan.states) do names[#names + 1] = n end
    table.sort(names)
    error(("no stateful stage named %q (stateful stages: %s)"):format(tostring(name),
      #names > 0 and table.concat(names, ", ") or "none"), 3)
  end
  return st
end

-- The state of a stateful stage: { [key] = state, ... }, or with a key, that
-- key's state (nil when it has none).
function Driver:state(name, key)
  local st = state_of(self, name)
  local node = self.job.by_name[name]
  local kind = node and reload.kind_of(node) or ""
  if key ~= nil then return evwindows.shown(kind, st:get(key)) end
  local keys, values, n = st:snapshot()
  local t = {}
  for i = 1, n do t[keys[i]] = evwindows.shown(kind, values[i]) end
  return t
end

-- The temporary directories Driver:checkpoint made, removed when the Lua
-- state closes (a test run's end: the sentinel lives as long as M).
local made_dirs = {}
M.made_dirs_sentinel = newproxy(true)
getmetatable(M.made_dirs_sentinel).__gc = function()
  for i = 1, #made_dirs, 200 do
    os.execute("rm -rf '" .. table.concat(made_dirs, "' '", i, math.min(#made_dirs, i + 199)) .. "'")
  end
end

-- Writes a checkpoint of the job as it stands after the last batch, into
-- dir (default: a new temporary directory, removed at the end of the test
-- run). Returns its path.
function Driver:checkpoint(dir)
  if not dir then
    dir = os.tmpname()
    os.remove(dir)
    made_dirs[#made_dirs + 1] = dir
  end
  local ok, err = core.mkdir_p(dir)
  if not ok then error("checkpoint: " .. err, 2) end
  self.plan.zero_ms = self.plan.zero_ms or 0
  local meta = checkpoint.meta(self.job, self.plan, self.batches, self:time(), self.session:positions(), {},
    self.params)
  -- (Before any batch: the job's start, as the binary marks it.)
  meta.initial = self.batches == 0 or nil
  local states, windows = checkpoint.content(self.plan)
  local name = checkpoint.file_name(self.batches)
  ok, err = core.ckpt.write(dir, name, meta, states, windows)
  if not ok then error("checkpoint: " .. err, 2) end
  return dir .. "/" .. name
end

-- A new driver resumed from a checkpoint: the job (the checkpoint's script,
-- or opts.job: a path or a function building it) with its state, windows,
-- clock and source positions. opts: as for driver().
function M.restore(path, opts)
  opts = opts or {}
  local found, why = checkpoint.load(path)
  if not found then error(("restore %s: %s"):format(path, why), 2) end
  local meta = found.meta
  local job_path = opts.job or meta.script
  if not job_path then error(("restore %s: the checkpoint names no job script; pass opts.job"):format(path), 2) end
  local o = {}
  for k, v in pairs(opts) do o[k] = v end
  o.params = opts.params or meta.params
  o.restored = found
  return M.driver(job_path, o)
end

-- Reloads the job's logic as `streamrun run` would (path, or a function
-- building the job): the session is exported and imported again, so
-- stateful stages keep their state by name, removed ones drop it, new ones
-- start empty (streamrun.reload); sources of the same name keep their
-- positions and what was pushed on them. Raises, keeping the old logic,
-- when the new job does not load or some state cannot be kept. Returns the
-- log line ("kept ...; dropped ...; new ...").
function Driver:reload(path, opts)
  opts = opts or {}
  local job, err = loader.load(path, { params = opts.params or self.params })
  if not job then error(err, 2) end
  err = require("streamrun.workers").override(job, self.workers_opt)
  if err then error(err, 2) end
  local r, why = session.check_reload(self.session:describe(), job, nil)
  if not r then error("reload: " .. why, 2) end
  local S = session.import(job, options(self, opts.echo or self.echo), self.session:export(), r, nil)
  attach(self, S)
  self.reload_log = reload.describe(r, job)
  return self.reload_log
end

-- Every batch's outputs for one output name: { [k] = elements of batch k }
-- (only the last batch's with history = false).
function Driver:outputs(name)
  local list = {}
  for i = 1, self.batches do
    local h = self.history[i]
    if h then list[i] = h.outputs[name] end
  end
  return list
end

return M
