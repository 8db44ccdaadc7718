-- streamrun.windows: the window operations of SPEC section 7, with Spark's
-- semantics. Every batch adds a slice to the stage's window in C (raw
-- elements for window(), per-key partial aggregates for the reducing
-- forms); on the batches where a window is due (batch time - zero time a
-- multiple of the slide) the window (t - length, t] is produced:
-- - window(): the elements of its slices;
-- - without an inverse function: the slices' partials folded per key;
-- - with one (finv): the previous window's result, kept in a C state table,
--   minus the slices that left, plus those that entered, so the cost is the
--   keys of those slices and not the window's length; opts.filter drops keys.
--   Keys whose value fell back (a count of 0) stay, as in Spark.
-- User functions run through streamrun.guard. An element whose f fails is reported and
-- never enters its slice. With an inverse, a key whose update fails (f on
-- two partials, or finv) is folded again from its partials in the window,
-- so its value is what the form without an inverse gives; a key whose
-- fold left a partial out stays "dirty" and is folded again at every
-- window (else that partial would later be subtracted though never added),
-- and one with no partial left in the window is dropped. Restored windows
-- do not know their dirty keys: their first window folds again every key
-- that has partials in it.
local builtins = require "streamrun.builtins"
local core = require "streamrun.core"
local format = require "streamrun.format"
local guard = require "streamrun.guard"
local ops = require "streamrun.ops"

local tostring, next = tostring, next
local loop, try = guard.loop, guard.try

local M = {}

local function add(a, b) return a + b end
local function sub(a, b) return a - b end
local function nonzero(_, v) return v ~= 0 end

-- What each windowed op reduces with: fn, finv, filter, and how a batch's
-- element becomes a pair (to_pair) and a result pair becomes an element.
local KINDS = {
  reduce_by_key_and_window = function(node) return node.fn, node.finv, node.filter end,
  count_by_value_and_window = function() return add, sub, nonzero end,
  reduce_by_window = function(node) return node.fn, node.finv, nil end,
  count_by_window = function() return add, sub, nil end,
}

-- State a windowed stage keeps in C: its slices and, with an inverse, the
-- previous window's result.
function M.new_window(node)
  local w = { slices = core.cwindow.new(node.stage_name) }
  local _, finv = (KINDS[node.op] or function() end)(node)
  if finv then
    w.result = core.cstate.new(node.stage_name .. "#window", node.partitions, 0, 0)
    w.dirty = {}
  end
  return w
end

-- Folds pairs into per-key values, keys in order of first appearance; a
-- built-in reducer folds without a call.
local FOLDS = {
  add = function(acc, v) return acc + v end,
  min = function(acc, v) if v < acc then return v end return acc end,
  max = function(acc, v) if v > acc then return v end return acc end,
}

-- failed: when given, a failing call's key is noted there; quiet: a
-- failing call is not reported (its key will be folded again).
local function fold(node, g, f, A, B, n, failed, quiet)
  local quick = FOLDS[builtins.reducers[f] or false] or (f == add and FOLDS.add)
  local call = quick or f
  local keys, accs = {}, {}
  local at = { i = 0 }
  -- keys[1..nk] are the keys so far, also after a failure. (The loop's
  -- tables in locals: LuaJIT keeps them in registers, not upvalues.)
  local function run(i0)
    local A, B, keys, accs, call, at = A, B, keys, accs, call, at
    local nk = #keys
    for i = i0, n do
      local k, v = A[i], B[i]
      local acc = accs[k]
      if acc == nil then
        nk = nk + 1
        keys[nk] = k
        accs[k] = v
      else
        at.i = i
        accs[k] = call(acc, v) -- a failing call leaves the key's value as it was
      end
    end
  end
  loop(run, at, function(i, err)
    local k = A[i]
    if failed then failed[k] = true end
    if not quiet then g.report_key(node, k, err, B[i]) end
  end, quick)
  return keys, accs, #keys
end

-- The batch as (key, value) pairs to aggregate: the stream's pairs, or
-- (x, 1) for count_by_value_and_window, or (1, x) / (1, 1) for the
-- unkeyed reducing forms, whose one result is the window's value.
local function batch_pairs(node, g, input)
  local A, B, n = input.a, input.b, input.n
  local op = node.op
  local PA, PB, m = {}, {}, 0
  for i = 1, n do
    local a, b = A[i], B[i]
    local k, v
    if op == "reduce_by_key_and_window" then
      if ops.pair_check(node, g, a, b) then k, v = a, b end
    elseif op == "count_by_value_and_window" then
      k, v = ops.element_key(a, b), 1
    elseif op == "count_by_window" then
      k, v = 1, 1
    else
      k, v = 1, b == nil and a or { a, b }
    end
    if k ~= nil then
      m = m + 1
      PA[m], PB[m] = k, v
    end
  end
  return PA, PB, m
end

-- Adds a slice; elements that cannot be kept (functions, ...) are reported
-- and left out.
local function push(node, g, slices, time_ms, A, B, n)
  local bad, err = slices:push(time_ms, A, B, n)
  if bad then
    for _, i in ipairs(bad) do g.report(node, err, A[i], B[i]) end
  end
  return bad
end

-- Sets a key of the with-inverse result, or drops it when the filter says so.
local function set_result(node, g, result, filter, k, v)
  if filter then
    local ok, keep = g.call(node, filter, k, v)
    if ok and not keep then
      result:remove(k)
      return
    end
  end
  local ok, err = result:put(k, v)
  if not ok then g.report_key(node, k, err, v) end
end

-- Folds again from the window (t - length, t] the keys in redo (all keys
-- with partials there when redo is nil), sets their results and notes in
-- dirty the ones whose fold left a partial out.
local function refold(node, g, w, f, filter, t, redo, finv, left)
  local a, b, n = w.slices:read(t - node.length_ms, t)
  local PA, PB, m = {}, {}, 0
  for i = 1, n do
    if redo == nil or redo[a[i]] then
      m = m + 1
      PA[m], PB[m] = a[i], b[i]
    end
  end
  local failed = {}
  local keys, accs, nk = fold(node, g, f, PA, PB, m, failed, false)
  local dirty = {}
  for i = 1, nk do
    local k = keys[i]
    if failed[k] then dirty[k] = true end
    set_result(node, g, w.result, filter, k, accs[k])
  end
  -- A key with no partial left has no value to fold: it goes.
  if redo then
    for k in pairs(redo) do
      if accs[k] == nil then w.result:remove(k) end
    end
  else
    -- (Every key: a restored window's.) One with no partial in the window
    -- keeps its result less what left it, as the window it was restored
    -- from would have had it (left: the keys' partials that left, or
    -- false where their fold failed: then it goes, as a key folded again).
    local rk, _, rn = w.result:snapshot()
    for i = 1, rn do
      local k = rk[i]
      local old = left[k]
      if accs[k] == nil and old ~= nil then
        local ok, v = old ~= false, nil
        if ok then ok, v = try(finv, w.result:get(k), old) end
        if ok then
          set_result(node, g, w.result, filter, k, v)
        else
          if old ~= false then g.report(node, ("key %s: %s"):format(format.json(k), tostring(v)), w.result:get(k), old) end
          w.result:remove(k)
        end
      end
    end
  end
  w.dirty = dirty
end

local function incremental(node, g, w, f, finv, filter, t)
  local length, slide = node.length_ms, node.slide_ms
  local result = w.result
  -- Keys to fold again: dirty ones, and those whose update fails here.
  -- (A restored window knows none: it folds every key again.)
  local redo = w.dirty and {} or nil
  if redo then
    for k in pairs(w.dirty) do redo[k] = true end
  end
  -- Leaving: in the previous window (t - slide - length, t - slide] but not
  -- in this one; entering: in this one (t - length, t] but not the previous.
  local oa, ob, on = w.slices:read(t - slide - length, math.min(t - slide, t - length))
  local na, nb, nn = w.slices:read(math.max(t - slide, t - length), t)
  if redo then
    local ok_keys, olds, nok = fold(node, g, f, oa, ob, on, redo, true)
    local new_keys, news, nnew = fold(node, g, f, na, nb, nn, redo, true)
    for i = 1, nok do
      local k = ok_keys[i]
      local prev = result:get(k)
      if prev ~= nil and not redo[k] then
        local ok, v = try(finv, prev, olds[k])
        if not ok then
          g.report(node, ("key %s: %s"):format(format.json(k), tostring(v)), prev, olds[k])
          redo[k] = true
        else
          local nv = news[k]
          if nv ~= nil then
            news[k] = nil
            local ok2, r = try(f, v, nv)
            if ok2 then v = r else redo[k] = true end
          end
          if not redo[k] then set_result(node, g, result, filter, k, v) end
        end
      end
    end
    for i = 1, nnew do
      local k = new_keys[i]
      local nv = news[k]
      if nv ~= nil and not redo[k] then
        local prev = result:get(k)
        local v = nv
        local ok = true
        if prev ~= nil then ok, v = try(f, prev, nv) end
        if ok then set_result(node, g, result, filter, k, v) else redo[k] = true end
      end
    end
  end
  if redo == nil then
    -- A restored window knows no keys to fold again: every key with
    -- partials in the window is; the others lose what left.
    local failed = {}
    local _, olds = fold(node, g, f, oa, ob, on, failed, true)
    for k in pairs(failed) do olds[k] = false end
    refold(node, g, w, f, filter, t, nil, finv, olds)
  elseif next(redo) ~= nil then
    refold(node, g, w, f, filter, t, redo)
  else
    w.dirty = {}
  end
  local keys, values, n = result:snapshot()
  return keys, values, n
end

local function recomputed(node, g, w, f, filter, t)
  local a, b, n = w.slices:read(t - node.length_ms, t)
  local keys, accs, nk = fold(node, g, f, a, b, n)
  local OA, OB, m = {}, {}, 0
  for i = 1, nk do
    local k = keys[i]
    local v = accs[k]
    local keep = true
    if filter then
      local ok, r = g.call(node, filter, k, v)
      keep = not ok or r
    end
    if keep then m = m + 1; OA[m], OB[m] = k, v end
  end
  return OA, OB, m
end

-- A batch's slice of a reducing windowed stage: its pairs folded per key
-- (keys in order of first appearance), as keys, partials, count.
function M.slice_of(node, g, input)
  local f = KINDS[node.op](node)
  local PA, PB, np = batch_pairs(node, g, input)
  local keys, partials, nk = fold(node, g, f, PA, PB, np)
  local SB = {}
  for i = 1, nk do SB[i] = partials[keys[i]] end
  return keys, SB, nk
end

-- Folds pairs per key with the stage's function (keys in order of first
-- appearance): keys, key -> value, count. (Partials of several workers.)
function M.fold(node, g, A, B, n)
  return fold(node, g, (KINDS[node.op](node)), A, B, n)
end

-- Adds a reducing windowed stage's slice (keys, partials, nk) at time_ms
-- and, when the window is due, folds it: its keys, values and count
-- (empty when not due; the keys as the stage keys them), and the indices
-- of the partials the slice could not keep (nil: none).
function M.advance(node, g, w, keys, partials, nk, time_ms, zero_ms)
  local due = (time_ms - zero_ms) % node.slide_ms == 0
  local f, finv, filter = KINDS[node.op](node)
  local bad = push(node, g, w.slices, time_ms, keys, partials, nk)
  local OA, OB, m = {}, {}, 0
  if due then
    if finv then
      OA, OB, m = incremental(node, g, w, f, finv, filter, time_ms)
    else
      OA, OB, m = recomputed(node, g, w, f, filter, time_ms)
    end
  end
  w.slices:drop_until(M.kept_after(node, time_ms))
  return OA, OB, m, bad
end

-- Slices a window keeps: the with-inverse form needs those leaving the
-- next window too.
function M.kept_after(node, time_ms)
  local _, finv = KINDS[node.op](node)
  return time_ms - node.length_ms - (finv and node.slide_ms or 0)
end

-- A reducing windowed stage's output batch from what advance gave.
function M.finish(node, OA, OB, m)
  if node.op == "reduce_by_window" or node.op == "count_by_window" then
    -- One result, the value of the constant key.
    local v = OB[1]
    if v == nil then return { n = 0, a = {}, b = {} } end
    if node.op == "reduce_by_window" and type(v) == "table" and node.inputs[1].keyed ~= "no"
       and v[1] ~= nil and v[2] ~= nil then
      return { n = 1, a = { v[1] }, b = { v[2] } }
    end
    return { n = 1, a = { v }, b = {} }
  end
  if node.op == "count_by_value_and_window" then
    for i = 1, m do OA[i] = ops.element_of_key(OA[i]) end
  end
  return { n = m, a = OA, b = OB }
end

-- Runs one batch of a windowed stage; zero_ms is the time before the first
-- batch (windows are due when time - zero_ms is a multiple of the slide).
function M.run(node, g, w, input, time_ms, zero_ms)
  if node.op == "window" then
    local due = (time_ms - zero_ms) % node.slide_ms == 0
    local out
    push(node, g, w.slices, time_ms, input.a, input.b, input.n)
    if due then
      local a, b, n = w.slices:read(time_ms - node.length_ms, time_ms)
      out = { n = n, a = a, b = b }
    end
    w.slices:drop_until(time_ms - node.length_ms)
    return out or { n = 0, a = {}, b = {} }
  end
  local keys, SB, nk = M.slice_of(node, g, input)
  local OA, OB, m = M.advance(node, g, w, keys, SB, nk, time_ms, zero_ms)
  return M.finish(node, OA, OB, m)
end

return M
