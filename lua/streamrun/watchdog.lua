-- streamrun.watchdog: the Lua side of the user-code watchdog (runtime/
-- sr_watchdog.c). The batch loop marks its progress in one C struct with
-- plain stores: per step that runs user code, which step and stage; per
-- record, its index. A C thread interrupts a record that runs longer than
-- the job's stage_timeout (a debug hook), or, when the hook cannot run (a
-- compiled loop, a blocking C call), writes the record to DIR/poison and
-- restarts the process; the restarted job dead-letters that record instead
-- of running it again (skip below). Each worker's VM marks a progress
-- record of its own (streamrun.worker) and is interrupted on its thread.
local core = require "streamrun.core"

local C, ffi = core.C, core.ffi

ffi.cdef [[
typedef struct sr_progress {
  volatile int64_t batch_ms;
  volatile int32_t step;
  volatile int32_t rec;
  volatile uint32_t gen;
  volatile int32_t skipped;
  volatile int32_t rec_base;
  volatile int32_t waiting;
  char stage[64];
} sr_progress_t;
sr_progress_t *sr_watchdog_progress(void);
]]

local M = {}

-- The progress record the loops write into (ffi cdata pointer).
M.P = C.sr_watchdog_progress()

-- Records to skip: poison[batch_ms][step] = list of { rec = i, stage =
-- name }, in the order they were found: each numbers the records of the
-- step's input after the skips before it.
M.poison = nil

-- Stage functions by the stage that runs them: the hook names the stage
-- of the innermost one on the stack (weak: a reload drops the old ones).
local registry = debug.getregistry()
local fns = registry["streamrun.stage_fns"]
if not fns then
  fns = setmetatable({}, { __mode = "k" })
  registry["streamrun.stage_fns"] = fns
end

function M.register(fn, stage_name)
  if type(fn) == "function" then fns[fn] = stage_name end
end

-- The records DIR/poison names (written by the C thread before a restart).
local function read_poison(dir)
  local f = io.open(dir .. "/poison", "r")
  if not f then return nil end
  local poison
  for line in f:lines() do
    local b, step, rec, skipped, stage = line:match("^(%-?%d+) (%d+) (%-?%d+) (%d+) (.*)$")
    if b then
      poison = poison or {}
      b, step = tonumber(b), tonumber(step)
      poison[b] = poison[b] or {}
      local list = poison[b][step] or {}
      poison[b][step] = list
      list[tonumber(skipped) + 1] = { rec = tonumber(rec), stage = stage }
    end
  end
  f:close()
  return poison
end

-- Drops from DIR/poison the records of batches at or before after_ms (the
-- checkpoint a job resumes from: they are never run again; a later
-- fallback to an older checkpoint that runs one again gets stuck once
-- more and restarts, as the first time). Called before any batch runs,
-- so the C thread appends nothing meanwhile. Returns true, or nil and why.
function M.prune(dir, after_ms)
  local path = dir .. "/poison"
  local f = io.open(path, "r")
  if not f then return true end
  local keep, dropped = {}, 0
  for line in f:lines() do
    local b = tonumber(line:match("^(%-?%d+) "))
    if b and b <= after_ms then dropped = dropped + 1 else keep[#keep + 1] = line end
  end
  f:close()
  if dropped == 0 then return true end
  if #keep == 0 then return os.remove(path) end
  local tmp = path .. ".tmp"
  local out, err = io.open(tmp, "w")
  if not out then return nil, err end
  local ok, werr = out:write(table.concat(keep, "\n"), "\n")
  out:close()
  if not ok then
    os.remove(tmp)
    return nil, werr
  end
  return os.rename(tmp, path)
end

-- Starts (or reconfigures) the watchdog for a job. dir: its checkpoint
-- directory or nil; no_restart: nil, or why a record stuck where the hook
-- cannot run ends the process instead of restarting it (the test driver's).
-- Returns true, or nil and why.
function M.start(job, dir, no_restart)
  M.poison = dir and read_poison(dir) or nil
  if not core.cwatchdog.start(job.stage_timeout_ms, dir, nil, nil, no_restart) then
    return nil, "cannot start the watchdog thread"
  end
  return true
end

-- The watchdog, started already, watches with job's stage_timeout from
-- now on (a process running several jobs in turn: the test driver's).
function M.retime(job, no_restart)
  core.cwatchdog.start(job.stage_timeout_ms, nil, nil, nil, no_restart)
end

-- Step number step of a batch begins; label: its stage names when it runs
-- user code, else nil.
local copy = ffi.copy
function M.enter(step, label)
  local P = M.P
  P.gen = P.gen + 1
  P.rec = 0
  P.skipped = 0
  if label then
    copy(P.stage, label, #label < 63 and #label + 1 or 63)
    P.step = step
  else
    P.step = 0
  end
end

-- A source's function (a generator's) runs for the batch at time_ms:
-- watched as a step of its own (step -1, which a restart cannot skip: a
-- source stuck again ends the job), so stage_timeout and a stop signal
-- reach it too. Returns what fn returns.
function M.source(time_ms, name, fn, ...)
  local P = M.P
  P.batch_ms = time_ms
  M.enter(-1, name)
  local b = fn(...)
  P.step = 0
  P.batch_ms = 0
  return b
end

return M
