-- streamrun.resume: runs a loop over records with no per-record pcall and,
-- when a call in it raises, tells where the loop stood: the error handler
-- runs before the stack unwinds and reads the loop function's locals (its
-- index, counters, the values in hand) and its current line. The caller
-- reports the failing call and resumes after it, so no call is run twice.
local getinfo, getlocal, traceback, xpcall, type = debug.getinfo, debug.getlocal, debug.traceback, xpcall, type
local floor = math.floor

local M = {}

local target, captured, raised = nil, nil, nil

-- The deepest level of the caller's stack (found in O(log depth) probes).
local function depth()
  local lo, hi = 1, 2
  while getinfo(hi, "l") do lo, hi = hi, hi * 2 end
  while hi - lo > 1 do
    local mid = floor((lo + hi) / 2)
    if getinfo(mid, "l") then lo = mid else hi = mid end
  end
  return lo - 1
end

-- Keeps the locals of target's frame (inner names hide outer ones) and
-- its line in captured; returns the error with a traceback.
local function handler(e)
  captured, raised = nil, e
  -- From the bottom: the loop is a few frames above it, while a user
  -- function may have recursed thousands deep (a stack overflow).
  for level = depth(), 2, -1 do
    local info = getinfo(level, "fl")
    if info and info.func == target then
      local cap = { line = info.currentline }
      local idx = 1
      while true do
        local name, v = getlocal(level, idx)
        if not name then break end
        cap[name] = v
        idx = idx + 1
      end
      captured = cap
      break
    end
  end
  if type(e) ~= "string" then return e end
  return traceback(e, 2)
end

-- Calls fn(...) under one xpcall. Returns true and fn's two results, or
-- false, the error (a string with a traceback, or the raised value), and
-- fn's locals by name at the failure with `line` its current line (nil
-- when fn was not on the stack), and the value raised as it was (nil when
-- the handler could not run).
function M.call(fn, ...)
  local prev = target
  target = fn
  raised = nil
  local ok, r1, r2 = xpcall(fn, handler, ...)
  target = prev
  if ok then return true, r1, r2 end
  local cap, e = captured, raised
  captured, raised = nil, nil
  return false, r1, cap, e
end

return M
