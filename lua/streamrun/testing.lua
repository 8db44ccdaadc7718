-- streamrun.testing: the test driver of SPEC section 11. Runs a job's real
-- compiled stages in-process on a virtual clock: every source becomes a
-- queue fed by push (a queue source also yields its own batches), batch k
-- has time k * batch, and every output's elements are captured by name.
local core = require "streamrun.core"
local checkpoint = require "streamrun.checkpoint"
local compile = require "streamrun.compile"
local loader = require "streamrun.loader"
local sources = require "streamrun.sources"
local batch = require "streamrun.batch"

local M = {}

local Driver = {}
Driver.__index = Driver

-- Loads the job at path, or builds it by calling a function that returns
-- the job (handy for small jobs inside a spec). opts: params (--set values), generators (true to
-- let generator sources produce as they would when running), echo (true to
-- let print write to stdout too), history (false to keep only the last
-- batch's outputs, for long runs).
-- Compiles job into d: its sources' queues and positions, and its plan
-- (state and windows from restored when given).
local function attach(d, job, restored, opts)
  d.job, d.batch_ms = job, job.batch_ms
  d.pending, d.offsets, d.states = {}, {}, {}
  local positions = restored and restored.meta.sources or {}
  for _, node in ipairs(job.sources) do
    d.pending[node], d.offsets[node] = {}, 0
    local pos = positions[node.stage_name] or {}
    if node.op == "queue" then
      d.states[node] = sources.queue_state(node)
      if pos.next then d.states[node].next, d.states[node].done = pos.next, pos.done end
    end
    if node.op == "generator" and d.generators then
      d.states[node] = sources.generator_state(node)
      if pos.next_i then d.states[node].next_i, d.states[node].carry = pos.next_i, pos.carry end
    end
    d.offsets[node] = pos.pushed or 0
  end
  d.plan = compile.compile(job, {
    on_error = job.on_error,
    dead_letter = function(source, offset, reason, record) d.dead(source, offset, reason, record) end,
    sink = {
      stdout = io.stdout,
      quiet_print = not opts.echo,
      capture = function(node, elements) d.current[node.stage_name] = elements end,
    },
    states = restored and restored.states,
    windows = restored and restored.windows,
  })
  if restored then
    d.plan.zero_ms = restored.meta.zero_ms
    d.batches = restored.meta.batch
    d.clock_ms = restored.meta.time_ms
    d.last_time = restored.meta.time_ms
  end
end

-- Loads the job at path, or builds it by calling a function that returns
-- the job (handy for small jobs inside a spec). opts: params (--set
-- values), generators (true to let generator sources produce as they would
-- when running), echo (true to let print write to stdout too), history
-- (false to keep only the last batch's outputs, for long runs).
function M.driver(path, opts)
  opts = opts or {}
  local job, err = loader.load(path, { params = opts.params })
  if not job then error(err, 2) end
  local d = setmetatable({
    clock_ms = 0,         -- the virtual clock
    batches = 0,          -- batches run so far
    dead_letters = {},    -- { source, offset, reason, record } in order
    history = {},         -- outputs of every batch, in order
    generators = opts.generators,
    keep_history = opts.history ~= false,
    params = opts.params,
    echo = opts.echo,
  }, Driver)
  function d.dead(source, offset, reason, record)
    d.dead_letters[#d.dead_letters + 1] = { source = source, offset = offset, reason = reason, record = record }
  end
  attach(d, job, opts.restored, opts)
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
  local q = self.pending[node]
  for i = 1, #elements do q[#q + 1] = elements[i] end
  return self
end

local function run_batch(d)
  d.batches = d.batches + 1
  local time_ms = (d.last_time or 0) + d.batch_ms
  d.last_time = time_ms
  if d.clock_ms < time_ms then d.clock_ms = time_ms end
  local inputs = {}
  for _, node in ipairs(d.job.sources) do
    local parts = {}
    local st = d.states[node]
    if node.op == "queue" then
      parts[#parts + 1] = sources.dequeue(node, st, d.dead)
    elseif node.op == "generator" and st then
      parts[#parts + 1] = sources.generate(node, st, d.batch_ms, function(n, e, i)
        d.dead(n.stage_name, i, tostring(e), tostring(i))
      end)
    end
    local pushed = d.pending[node]
    d.pending[node] = {}
    parts[#parts + 1] = sources.read_values(node, pushed, d.offsets[node] + 1, d.dead)
    d.offsets[node] = d.offsets[node] + #pushed
    local b = parts[1]
    if parts[2] and parts[1].n == 0 then
      b = parts[2]
    elseif parts[2] and parts[2].n > 0 then
      local values = batch.to_elements(parts[1])
      local more = parts[2]
      for i = 1, more.n do values[#values + 1] = more.a[i] end
      b = batch.of_values(values)
      b.cat = { parts[1], more }
    end
    inputs[node] = b
  end
  d.current = {}
  for _, node in ipairs(d.job.outputs) do d.current[node.stage_name] = {} end
  local ok, err = pcall(d.plan.run, inputs, time_ms)
  if not ok then
    if type(err) == "table" and err.fatal then
      error(("batch %d ms: %s"):format(time_ms, err.fatal), 0)
    end
    error(err, 0)
  end
  -- The runner holds the job until a failing output writes; here the
  -- test sees it.
  local failing = d.plan.failing_outputs()
  if #failing > 0 then
    error(("batch %d ms: output %s: %s"):format(time_ms, failing[1].node.stage_name, failing[1].error), 0)
  end
  local out = d.current
  out.time_ms = nil
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
  if key ~= nil then return st:get(key) end
  local keys, values, n = st:snapshot()
  local t = {}
  for i = 1, n do t[keys[i]] = values[i] end
  return t
end

-- Writes a checkpoint of the job as it stands after the last batch, into
-- dir (default: a new temporary directory). Returns its path.
function Driver:checkpoint(dir)
  if not dir then
    dir = os.tmpname()
    os.remove(dir)
  end
  local ok, err = core.mkdir_p(dir)
  if not ok then error("checkpoint: " .. err, 2) end
  local positions = {}
  for _, node in ipairs(self.job.sources) do
    local st = self.states[node] or {}
    positions[node.stage_name] = { kind = node.op, pushed = self.offsets[node], next = st.next,
                                   next_i = st.next_i, carry = st.carry, done = st.done }
  end
  self.plan.zero_ms = self.plan.zero_ms or 0
  local meta = checkpoint.meta(self.job, self.plan, self.batches, self:time(), positions, {}, self.params)
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
  local meta, states, windows = found.meta, found.states, found.windows
  local job_path = opts.job or meta.script
  if not job_path then error(("restore %s: the checkpoint names no job script; pass opts.job"):format(path), 2) end
  local job, err = loader.load(job_path, { params = opts.params or meta.params })
  if not job then error(err, 2) end
  local kept, kwindows, how = checkpoint.adopt({ path = path, meta = meta, states = states, windows = windows }, job)
  if not kept then error(kwindows, 2) end
  local o = {}
  for k, v in pairs(opts) do o[k] = v end
  o.params = opts.params or meta.params
  o.restored = { meta = meta, states = kept, windows = kwindows }
  local d = M.driver(job_path, o)
  d.reload_log = how
  return d
end

-- Reloads the job's logic as `streamrun run` would (path, or a function
-- building the job): stateful stages keep their state by name, removed ones
-- drop it, new ones start empty (streamrun.reload); sources of the same
-- name keep what was pushed on them. Raises, keeping the old logic, when
-- the new job does not load or some state cannot be kept. Returns the log
-- line ("kept ...; dropped ...; new ...").
function Driver:reload(path, opts)
  opts = opts or {}
  local job, err = loader.load(path, { params = opts.params or self.params })
  if not job then error(err, 2) end
  if job.batch_ms ~= self.batch_ms and next(self.plan.windows) then
    error(("reload: the batch interval cannot change (%d ms to %d ms) while windows hold slices")
      :format(self.batch_ms, job.batch_ms), 2)
  end
  local reload = require "streamrun.reload"
  local r = reload.plan(reload.stages_of(self.job), job)
  if #r.conflicts > 0 then error("reload: " .. table.concat(r.conflicts, "; "), 2) end
  local states, windows = reload.carry(r, self.plan.states, self.plan.windows)
  local old_job, old_pending, old_offsets, old_states = self.job, self.pending, self.offsets, self.states
  -- A new interval puts windows on its grid from the last batch on (as
  -- streamrun run does).
  local zero_ms = self.plan.zero_ms
  if job.batch_ms ~= self.batch_ms and self.last_time then zero_ms = self.last_time end
  attach(self, job, {
    meta = { zero_ms = zero_ms, batch = self.batches, time_ms = self.clock_ms, sources = {} },
    states = states, windows = windows,
  }, { echo = opts.echo or self.echo })
  -- Sources keep their queued elements and positions by name.
  for _, node in ipairs(job.sources) do
    for _, old in ipairs(old_job.sources) do
      if old.stage_name == node.stage_name and old.op == node.op then
        self.pending[node], self.offsets[node] = old_pending[old], old_offsets[old]
        if old_states[old] then self.states[node] = old_states[old] end
      end
    end
  end
  self.reload_log = reload.describe(r)
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
