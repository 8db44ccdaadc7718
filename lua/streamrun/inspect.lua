-- streamrun.inspect: `streamrun inspect PATH`: a checkpoint's metadata and
-- per-stage sizes as JSON; --keys STAGE dumps a stage's state as JSON lines
-- {"key": k, "value": v}; --verify checks it, exit 0 or 1. PATH is a
-- checkpoint file, or a directory (its newest valid checkpoint).
local checkpoint = require "streamrun.checkpoint"
local format = require "streamrun.format"
local evwindows = require "streamrun.evwindows"

local M = {}

local function fail(fmt, ...)
  io.stderr:write("streamrun: ", fmt:format(...), "\n")
  return 1
end

local function is_dir(path)
  local f = io.open(path .. "/.", "r")
  if f then f:close() return true end
  return false
end

-- The checkpoint at path: { path, meta, states, windows }, or nil and why.
local function open_checkpoint(path)
  if is_dir(path) then
    local found, faults = checkpoint.latest(path)
    for _, f in ipairs(faults) do io.stderr:write(("streamrun: %s is not valid: %s\n"):format(f.path, f.reason)) end
    if not found then return nil, ("no valid checkpoint in %s"):format(path) end
    return found
  end
  local found, why = checkpoint.load(path)
  if not found then return nil, ("%s: %s"):format(path, why) end
  return found
end

local function dump_keys(c, stage)
  local st = c.states[stage] or (c.windows[stage] and c.windows[stage].result)
  if not st then
    local names = {}
    for name in pairs(c.states) do names[#names + 1] = name end
    for name, w in pairs(c.windows) do if w.result then names[#names + 1] = name end end
    table.sort(names)
    return fail("%s has no keyed state named %q (stages: %s)", c.path, stage,
      #names > 0 and table.concat(names, ", ") or "none")
  end
  local keys, values, n = st:snapshot()
  local kind = c.meta.stages and c.meta.stages[stage] or ""
  local lines = {}
  for i = 1, n do lines[i] = format.json_element(keys[i], evwindows.shown(kind, values[i])) end
  table.sort(lines)
  if n > 0 then io.stdout:write(table.concat(lines, "\n"), "\n") end
  return 0
end

local function summary(c)
  local m = c.meta
  local stages = {}
  for name, st in pairs(c.states) do
    stages[name] = { kind = m.stages and m.stages[name], keys = st:count(), bytes = st:memory() }
  end
  for name, w in pairs(c.windows) do
    local times = w.slices:times()
    stages[name] = {
      kind = m.stages and m.stages[name], slices = #times, bytes = w.slices:memory(),
      keys = w.result and w.result:count() or nil,
      first_slice_ms = times[1], last_slice_ms = times[#times],
    }
  end
  return {
    path = c.path, format = m.format, job = m.job, script = m.script, script_hash = m.script_hash,
    batch = m.batch, time_ms = m.time_ms, zero_ms = m.zero_ms, batch_ms = m.batch_ms,
    finished = m.finished or false, params = m.params, sources = m.sources, outputs = m.outputs,
    stages = stages,
  }
end

-- A Kafka job's directory (DIR/tasks/<topic>-<partition>/): every task's
-- keys, or its tasks' summaries.
local function main_tasks(cli, dirs)
  local found = {}
  for _, dir in ipairs(dirs) do
    local c = open_checkpoint(dir)
    if c then found[#found + 1] = c end
  end
  if cli.verify then
    for _, c in ipairs(found) do io.stdout:write(("ok %s: batch %d at %d ms\n"):format(c.path, c.meta.batch, c.meta.time_ms)) end
    return #found == #dirs and 0 or 1
  end
  if cli.keys then
    for _, c in ipairs(found) do
      local code = dump_keys(c, cli.keys)
      if code ~= 0 then return code end
    end
    return 0
  end
  local tasks = {}
  for _, c in ipairs(found) do tasks[c.path:match("([^/]+)/[^/]+$")] = summary(c) end
  io.stdout:write(format.json({ tasks = tasks }), "\n")
  return 0
end

function M.main(cli)
  if is_dir(cli.job) and not checkpoint.latest(cli.job) then
    local dirs = require("streamrun.kafka_tasks").task_dirs(cli.job)
    if #dirs > 0 then return main_tasks(cli, dirs) end
  end
  local c, err = open_checkpoint(cli.job)
  if cli.verify then
    if not c then return fail("%s", err) end
    io.stdout:write(("ok %s: batch %d at %d ms\n"):format(c.path, c.meta.batch, c.meta.time_ms))
    return 0
  end
  if not c then return fail("%s", err) end
  if cli.keys then return dump_keys(c, cli.keys) end
  io.stdout:write(format.json(summary(c)), "\n")
  return 0
end

return M
