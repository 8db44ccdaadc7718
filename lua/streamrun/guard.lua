-- streamrun.guard: every call into user code, and the one path its failures
-- are reported by. A plan's guard (new) turns a failure into a dead letter
-- naming the stage, its operation and file:line, the user's part of the
-- traceback, the element and, when it came from one record, that record's
-- source and offset (batch.origin); with on_error = "fail" it raises
-- { fatal = ... } instead, which every loop here passes up as it is.
--
-- How a call is guarded depends on how often it runs, so the hot path
-- pays no pcall and makes no closure per record:
-- - once per batch or per key (transform, foreach_batch, a filter of a
--   window, an initial state): call, call_key, under one xpcall each;
-- - a loop over records runs under one xpcall and resumes after the
--   failing item: each() (the loop's progress is an upvalue), loop() (the
--   loop notes its item in a table), resumed() and streamrun.resume (where
--   the loop stood is read from its locals: the fused chains of
--   streamrun.fuse, ops' reduce and reduce_by_key).
local batch = require "streamrun.batch"
local format = require "streamrun.format"
local resume = require "streamrun.resume"
local watchdog = require "streamrun.watchdog"

local xpcall, traceback, select, type, tostring, error = xpcall, debug.traceback, select, type, tostring, error
local concat = table.concat

local M = {}

-- Keeps the traceback's lines that are the user's code, not the runtime's
-- (the first line, the error itself, always).
local function trim_traceback(msg)
  local out = {}
  for line in tostring(msg):gmatch("[^\n]+") do
    if line:find("in function 'xpcall'", 1, true) or line:find("[C]: in function 'pcall'", 1, true) then break end
    if #out == 0 or (not line:find("streamrun/[%w_]+%.lua") and not line:find("^%s*%[string")
                     and not line:find("^%s*stages ")) then
      out[#out + 1] = line
    end
  end
  return concat(out, "\n")
end

-- What to write about the element a failing call received.
local function describe(...)
  local n = select("#", ...)
  if n == 0 then return "" end
  local a, b = ...
  if n >= 2 and b ~= nil then return format.json({ a, b }) end
  return format.json(a)
end

M.trim_traceback = trim_traceback
M.describe = describe

local function bare(e) return e end

-- Calls f(...) under xpcall: true and its results, or false and the error
-- with a traceback; reports nothing (the caller decides what a failure
-- means: a key to fold again).
function M.try(f, ...)
  return xpcall(f, traceback, ...)
end

-- Runs body(i) for i = 1..n with the user's calls in it unguarded, under
-- one xpcall: when a call raises, fail(i, err) reports it and the loop goes
-- on after i (a fatal error of the job goes up). progress: "record" (i is
-- an input record: the watchdog's progress is i), "item" (-i: a restart
-- that skips a stuck item skips the whole input) or nil (no progress per
-- item). plain: err is the error as raised, without a traceback.
local P = watchdog.P
function M.each(n, body, fail, progress, plain)
  local cur = 0
  local run
  if progress then
    local sign = progress == "record" and 1 or -1
    run = function(i0)
      for i = i0, n do
        cur = i
        P.rec = sign * i
        body(i)
      end
    end
  else
    run = function(i0)
      for i = i0, n do
        cur = i
        body(i)
      end
    end
  end
  local handler = plain and bare or traceback
  local i0 = 1
  while i0 <= n do
    local ok, err = xpcall(run, handler, i0)
    if ok then return end
    if type(err) == "table" and err.fatal then error(err, 0) end
    fail(cur, err)
    i0 = cur + 1
  end
end

-- Runs run(i0), a loop over items from i0 on that notes the item in hand
-- in at.i before each user call and keeps its results outside its locals,
-- under one xpcall: when a call raises, fail(at.i, err) reports it and the
-- loop runs again from the item after. For loops too hot for each()'s
-- call per item: the loop's own locals stay in registers. plain: as for
-- each().
function M.loop(run, at, fail, plain)
  local handler = plain and bare or traceback
  local i0 = 1
  while true do
    local ok, err = xpcall(run, handler, i0)
    if ok then return end
    if type(err) == "table" and err.fatal then error(err, 0) end
    fail(at.i, err)
    i0 = at.i + 1
  end
end

-- A plan's guard. handlers: { dead_letter(source, offset, reason, record),
-- on_error = "dead_letter"|"fail" }. Returns a table of functions (called
-- with a dot: they are handed to the operations as they are).
function M.new(handlers)
  local g = { fails = handlers.on_error == "fail" }

  -- The one way out: a dead letter, or the job's fatal error.
  function g.letter(source, offset, reason, record)
    if g.fails then error({ fatal = reason .. "\n  element: " .. record }, 0) end
    handlers.dead_letter(source, offset, reason, record)
  end

  local function emit(node, source, offset, err, ...)
    local reason = ("stage %s (%s at %s): %s"):format(node.stage_name, node.op, node.where, trim_traceback(err))
    g.letter(source, offset, reason, describe(...))
  end

  -- A failure of no one record: the dead letter's source is the stage,
  -- its offset -1. ...: the element the failing call received.
  function g.report(node, err, ...)
    emit(node, node.stage_name, -1, err, ...)
  end

  -- The same with the element already described (record: a string, as
  -- describe gives it).
  function g.report_as(node, err, record)
    local reason = ("stage %s (%s at %s): %s"):format(node.stage_name, node.op, node.where, trim_traceback(err))
    g.letter(node.stage_name, -1, reason, record)
  end

  -- A failure on element i of the stage's input batch: the dead letter has
  -- that element's source and record offset when it came from one record.
  function g.report_at(node, err, input, i, ...)
    local source, offset = batch.origin(input, i)
    if not source then source, offset = node.stage_name, -1 end
    emit(node, source, offset, err, ...)
  end

  -- Calls f(...) guarded: true and its two results, or false after
  -- reporting the error with (...) as the element.
  function g.call(node, f, ...)
    local ok, r1, r2 = xpcall(f, traceback, ...)
    if ok then return true, r1, r2 end
    g.report(node, r1, ...)
    return false
  end

  -- The same for element i of input (report_at).
  function g.call_at(node, input, i, f, ...)
    local ok, r1, r2 = xpcall(f, traceback, ...)
    if ok then return true, r1, r2 end
    g.report_at(node, r1, input, i, ...)
    return false
  end

  -- A failure of a call about one key: the error says the key, the
  -- element is the key and its record (value or values).
  function g.report_key(node, key, err, record)
    g.report(node, ("key %s: %s"):format(format.json(key), tostring(err)), key, record)
  end

  -- The same for a call about one key (report_key); no key: no element.
  function g.call_key(node, key, record, f, ...)
    local ok, r1, r2 = xpcall(f, traceback, ...)
    if ok then return true, r1, r2 end
    if key == nil then g.report(node, r1) else g.report_key(node, key, r1, record) end
    return false
  end

  -- Runs run(i0, x, y) (a loop over records i0..n returning its two
  -- accumulators, locals named xname and yname) to its end: a call that
  -- raises is reported with the values of the loop's locals named args1
  -- and args2, and the loop resumes after its record i with its
  -- accumulators as they were (the failing call changed nothing). Returns
  -- run's results. at: what run keeps of its loop for when the error
  -- handler cannot run (a stack overflow): at.i, and the locals named
  -- xname, yname, args1, args2 (and keyname). keyname: the loop's local
  -- holding the key of the call (a reducer's): the error names it, and
  -- the element is the key and the value (args2).
  function g.resumed(node, run, at, x, y, xname, yname, args1, args2, keyname)
    local i0 = 1
    while true do
      local ok, r1, r2 = resume.call(run, i0, x, y)
      if ok then return r1, r2 end
      if type(r1) == "table" and r1.fatal then error(r1, 0) end
      if not r2 or not r2.i then r2 = at end
      local key = keyname and r2[keyname]
      if key ~= nil then
        g.report_key(node, key, r1, r2[args2])
      else
        g.report(node, r1, r2[args1], r2[args2])
      end
      i0, x, y = r2.i + 1, r2[xname], r2[yname]
    end
  end

  -- Records the watchdog found stuck where it could not interrupt them
  -- (the job restarted): they go to dead letters instead of running, in
  -- the order found, each numbered after the skips before it. When the
  -- step's progress is not by input record (rec <= 0), the step's whole
  -- input does. name: the step's label; list: { {rec, stage}... }.
  -- Returns the input without them.
  function g.skip_poisoned(name, input, list, timeout_ms)
    for j = 1, #list do
      local p = list[j]
      local reason = ("stage %s: stage_timeout: stage %s ran longer than %d ms and could not be interrupted; the"
        .. " job restarted and skips this record"):format(p.stage, p.stage, timeout_ms)
      if g.fails then
        local whole = p.rec < 1 or p.rec > input.n
        g.letter(name, -1, reason, whole and "(the step's input)" or describe(input.a[p.rec], input.b[p.rec]))
      end
      local function letter(i)
        local source, offset = batch.origin(input, i)
        if not source then source, offset = name, -1 end
        g.letter(source, offset, reason, describe(input.a[i], input.b[i]))
      end
      if p.rec <= 0 or p.rec > input.n then
        for i = 1, input.n do letter(i) end
        input = batch.empty()
      else
        letter(p.rec)
        -- The rest keep saying which records they came from (o: index map).
        local OA, OB, O, m = {}, {}, {}, 0
        for i = 1, input.n do
          if i ~= p.rec then
            m = m + 1
            OA[m], OB[m], O[m] = input.a[i], input.b[i], i
          end
        end
        input = { n = m, a = OA, b = OB, o = O, from = input }
      end
      P.skipped = j
    end
    return input
  end

  return g
end

return M
