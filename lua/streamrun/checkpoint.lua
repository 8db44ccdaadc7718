-- streamrun.checkpoint: when a running job writes checkpoints, what their
-- metadata holds (job, script hash, batch, time, source offsets, output
-- progress), and finding the newest valid one to resume from. The writing
-- itself is C's (streamrun.ckpt): a forked child writes the snapshot while
-- batches go on; a failed checkpoint is reported and retried, and after
-- three failures in a row the job reads nothing until one succeeds.
local core = require "streamrun.core"
local reload = require "streamrun.reload"

local ckpt = core.ckpt

local M = {}

M.MAX_FAILURES = 3

function M.file_name(batch)
  return ("checkpoint-%012d%s"):format(batch, ckpt.suffix)
end

-- {dir, every_ms, keep} from the job's checkpoint option and --checkpoint,
-- or nil when the job checkpoints nowhere.
function M.settings(job, cli_dir)
  local c = job.checkpoint or {}
  local dir = cli_dir or c.dir
  if not dir then return nil end
  return {
    dir = dir,
    every_ms = c.every and core.duration_ms(c.every) or 10 * job.batch_ms,
    keep = c.keep or 3,
  }
end

-- The metadata of a checkpoint after batch `batch` at time_ms.
-- positions: source name -> position; progress: output name -> bytes.
function M.meta(job, plan, batch, time_ms, positions, progress, params)
  local stages = reload.stages_of(job)
  return {
    format = ckpt.version, job = job.name, script = job.path,
    script_hash = type(job.path) == "string" and core.file_hash(job.path) or nil,
    params = params or {}, batch = batch, time_ms = time_ms, zero_ms = plan.zero_ms,
    batch_ms = job.batch_ms, sources = positions, outputs = progress, stages = stages,
    window_lengths = reload.lengths_of(job),
    -- The watermark (streamrun.eventtime); older checkpoints have none and
    -- start without one.
    event = plan.event and plan.event.data or nil,
  }
end

-- The state and window handles of a plan, as streamrun.ckpt takes them.
function M.content(plan)
  local states, windows = {}, {}
  local names = {}
  for name in pairs(plan.states) do names[#names + 1] = name end
  table.sort(names)
  -- (A state split among workers is its shards: written as one.)
  for _, name in ipairs(names) do states[#states + 1] = plan.states[name].shards or plan.states[name] end
  names = {}
  for name in pairs(plan.windows) do names[#names + 1] = name end
  table.sort(names)
  -- (A window split among workers is its parts: the writer merges them.)
  for _, name in ipairs(names) do
    local w = plan.windows[name]
    windows[#windows + 1] = w.parts and w:parts() or w
  end
  return states, windows
end

-- Loads the checkpoint at path: { path, meta, states, windows }, or nil and
-- why.
function M.load(path)
  local meta, states, windows = ckpt.load(path)
  if not meta then return nil, states end
  return { path = path, meta = meta, states = states, windows = windows }
end

-- The newest valid checkpoint of dir: { path, meta, states, windows }, and
-- the list of { path, reason } of newer ones that are not valid. No
-- checkpoint at all: nil and an empty list.
function M.latest(dir)
  local names = ckpt.list(dir)
  local faults = {}
  for i = #names, 1, -1 do
    local path = dir .. "/" .. names[i]
    local found, why = M.load(path)
    if found then return found, faults end
    faults[#faults + 1] = { path = path, reason = why }
  end
  return nil, faults
end

-- The state of a checkpoint a job resumes from, by the rules of
-- streamrun.reload: returns states, windows and the log line, or nil, why
-- and the exit code (1: the checkpoint of another job; 2: state this
-- script cannot keep).
function M.adopt(found, job)
  if found.meta.job ~= job.name then
    return nil, ("%s is a checkpoint of job %s, not of job %s: refusing it (give this job its own checkpoint "
      .. "directory)"):format(found.path, tostring(found.meta.job), job.name), 1
  end
  local r = reload.plan(found.meta.stages or {}, job, found.meta.window_lengths)
  if #r.conflicts > 0 then
    return nil, ("%s cannot be resumed by this script: %s"):format(found.path, table.concat(r.conflicts, "; ")), 2
  end
  local states, windows = reload.carry(r, found.states, found.windows)
  local was = found.meta.batch_ms
  if was and was ~= job.batch_ms and next(windows) ~= nil then
    reload.carry({ keep = {} }, states, windows) -- (freed)
    return nil, ("%s cannot be resumed by this script: the batch interval cannot change (%d ms to %d ms) while "
      .. "windows hold slices"):format(found.path, was, job.batch_ms), 2
  end
  return states, windows, reload.describe(r, job)
end

-- -- A running job's writer --

local Writer = {}
Writer.__index = Writer

-- log(fmt, ...) reports; the writer's methods say what happened.
function M.writer(settings, log)
  local ok, err = core.mkdir_p(settings.dir)
  if not ok then return nil, err end
  return setmetatable({ settings = settings, log = log, failures = 0 }, Writer)
end

-- Whether a checkpoint is due after the batch at time_ms (every `every`
-- since the time before the first batch), or a failed one is to be retried.
function Writer:due(time_ms, zero_ms)
  return self.failures > 0 or (time_ms - zero_ms) % self.settings.every_ms == 0
end

-- True while sources must wait: the last MAX_FAILURES checkpoints failed.
function Writer:blocked()
  return self.failures >= M.MAX_FAILURES
end

local function finished(self, ok, msg, batch, started_ms)
  if ok then
    -- For the metrics: how long it took (an asynchronous one, until a batch
    -- boundary saw it done) and when it was written.
    self.written = (self.written or 0) + 1
    self.last_written = { batch = batch, duration_ms = core.clock_ms() - started_ms, unix_s = os.time() }
    if self.failures > 0 then self.log("checkpoint after batch %d written; %d failures before it", batch, self.failures) end
    self.failures = 0
    self.last_batch = batch
    if self.on_written then self.on_written(batch) end
  else
    self.failures = self.failures + 1
    self.log("checkpoint after batch %d failed: %s (%d in a row%s)", batch, msg, self.failures,
      self.failures >= M.MAX_FAILURES and "; sources wait until one succeeds" or ", retried next batch")
  end
end

-- Checks on a checkpoint being written; returns true when none is.
function Writer:poll()
  local f = self.flight
  if not f then return true end
  local ok, msg = ckpt.poll(f.pid, f.fd)
  if ok == nil then return false end
  self.flight = nil
  finished(self, ok, msg, f.batch, f.started_ms)
  return true
end

-- Waits for a checkpoint being written, if any.
function Writer:wait()
  local f = self.flight
  if not f then return end
  self.flight = nil
  local ok, msg = ckpt.wait(f.pid, f.fd)
  finished(self, ok, msg, f.batch, f.started_ms)
end

-- Starts writing the checkpoint after `batch` (in a forked child) unless
-- one is being written. sync = true writes it here and now.
function Writer:write(batch, meta, plan, sync)
  if not self:poll() then
    if not sync then return end
    self:wait()
  end
  local states, windows = M.content(plan)
  local name = M.file_name(batch)
  local started_ms = core.clock_ms()
  if sync then
    local ok, err = ckpt.write(self.settings.dir, name, meta, states, windows, self.settings.keep)
    finished(self, ok, err, batch, started_ms)
    return
  end
  local pid, fd = ckpt.start(self.settings.dir, name, meta, states, windows, self.settings.keep)
  if not pid then
    finished(self, false, fd, batch, started_ms)
    return
  end
  self.flight = { pid = pid, fd = fd, batch = batch, started_ms = started_ms }
end

return M
