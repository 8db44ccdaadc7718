-- streamrun.evwindows: windows and sessions in event time (SPEC section
-- 14). Their state lives in a C state table (streamrun.cstate) keyed by the
-- stream's key; a key's value lists its open windows or sessions, and its
-- entry's timer on the table's timing wheel is armed, in event time, at
-- the next thing the watermark will do to them (a window or session to
-- emit, a window to drop). So the wheel, advanced to the watermark, hands
-- back exactly the keys with something due; closed windows and sessions
-- leave the table, and checkpoints and reloads keep it as any state.
--
-- Per batch: the records are folded per (window, key) in Lua (records too
-- late for every window they belong to go to dead letters or are counted
-- and dropped), each partial is merged into its key's list (f(old,
-- partial): f is a reduce function, associative), then the keys the
-- watermark reached emit. Results are (k, { start_ms, end_ms, value })
-- ordered by end, start and key; they carry the event time end_ms - 1.
local batch = require "streamrun.batch"
local builtins = require "streamrun.builtins"
local core = require "streamrun.core"
local format = require "streamrun.format"
local guard = require "streamrun.guard"
local ops = require "streamrun.ops"

local type, tostring, sort = type, tostring, table.sort
local loop, pair_check = guard.loop, ops.pair_check

local M = {}

-- A new state table for an event-time stage (no timeout: its timers are
-- armed by hand).
function M.new_state(node)
  return core.cstate.new(node.stage_name, node.partitions, 0, 0)
end

-- What identifies the stage's kind of state across reloads and restores:
-- its lists are only right for the geometry they were built with.
function M.kind_of(node)
  if node.op == "session_by_key" then return ("%s/%d"):format(node.op, node.gap_ms) end
  return ("%s/%d/%d"):format(node.op, node.ev_size_ms, node.ev_slide_ms)
end

-- Orders keys of any of the key types: by type, then value.
local TYPE_RANK = { boolean = 1, number = 2, string = 3 }
local function key_less(a, b)
  local ta, tb = type(a), type(b)
  if ta ~= tb then return TYPE_RANK[ta] < TYPE_RANK[tb] end
  if ta == "boolean" then return (not a) and b end
  return a < b
end

-- A record too late for every window it belongs to: a dead letter at its
-- origin, or counted (tr.data.dropped) with on_late = "drop".
local function late(node, tr, input, i, k, v, t)
  if node.on_late == "drop" then
    local dropped = tr.data.dropped
    dropped[node.stage_name] = (dropped[node.stage_name] or 0) + 1
    return
  end
  local source, offset = batch.origin(input, i)
  tr.dead(source or node.stage_name, offset or -1,
    ("late: event time %d ms, watermark %d ms (stage %s)"):format(t, tr.before, node.stage_name),
    format.element(k, v))
end

-- The results of a batch, ordered, as an output batch.
local function results(emitted, m)
  sort(emitted, function(x, y)
    if x[3] ~= y[3] then return x[3] < y[3] end
    if x[2] ~= y[2] then return x[2] < y[2] end
    return key_less(x[1], y[1])
  end)
  local OA, OB, OT = {}, {}, {}
  for i = 1, m do
    local e = emitted[i]
    OA[i], OB[i], OT[i] = e[1], { start_ms = e[2], end_ms = e[3], value = e[4] }, e[3] - 1
  end
  return { n = m, a = OA, b = OB, t = OT }
end

local function store(node, g, state, k, list, at)
  if #list == 0 then
    state:remove(k)
    return
  end
  local ok, err = state:put(k, list)
  if not ok then
    g.report_key(node, k, err)
    return
  end
  state:arm(k, at)
end

-- -- Windows --

-- A key's list is flat: start, value, fired (0 or 1), ... by start. Its
-- timer: the earliest end of a window not emitted yet, or end + allowed
-- lateness of one emitted (when it is dropped).
local function window_timer(list, size, lateness)
  local at
  for j = 1, #list, 3 do
    local e = list[j] + size
    local x = list[j + 2] == 0 and e or e + lateness
    if at == nil or x < at then at = x end
  end
  return at
end

local QUICK = {
  add = function(acc, v) return acc + v end,
  min = function(acc, v) if v < acc then return v end return acc end,
  max = function(acc, v) if v > acc then return v end return acc end,
}

-- The fold of a batch's records into partials per window and key, one
-- function for every batch (a closure per batch would hold the batch's
-- tables as upvalues, and LuaJIT would compile and keep a trace per
-- closure). Its state is in W: the input's columns, the window geometry,
-- the panes it fills (panes[start] = { keys, accs, nk }, starts in order of
-- first appearance, np of them), at.i (the record in hand, for guard.loop).
local W = {}

local function fold_run(i0)
  local A, B, T, n = W.a, W.b, W.t, W.n
  local panes, starts, call, at = W.panes, W.starts, W.call, W.at
  local size, slide, lateness, before = W.size, W.slide, W.lateness, W.before
  local node, g = W.node, W.g
  -- Out-of-order records mostly fall in the window of the one before.
  local last_s, last_p
  for i = i0, n do
    local k, v = A[i], B[i]
    local tk = type(k)
    if v ~= nil and (tk == "string" or (tk == "number" and k == k) or tk == "boolean")
       or pair_check(node, g, k, v) then
      at.i = i
      local t = T[i]
      local s = t - t % slide
      local any = false
      while s > t - size do
        if before == nil or s + size + lateness > before then
          any = true
          local p = last_p
          if s ~= last_s then
            p = panes[s]
            if p == nil then
              p = { keys = {}, accs = {}, nk = 0 }
              panes[s] = p
              local np = W.np + 1
              W.np = np
              starts[np] = s
            end
            last_s, last_p = s, p
          end
          local accs = p.accs
          local acc = accs[k]
          if acc == nil then
            local nk = p.nk + 1
            p.nk = nk
            p.keys[nk] = k
            accs[k] = v
          else
            accs[k] = call(acc, v)
          end
        end
        s = s - slide
      end
      if not any then late(node, W.tr, W.input, i, k, v, t) end
    end
  end
end

-- reduce_by_key_and_event_window: state (cstate), input (a timed batch),
-- tr (the plan's streamrun.eventtime tracker). Returns the output batch.
function M.reduce_by_key_and_event_window(node, g, state, input, tr)
  tr:check()
  local size, slide, lateness = node.ev_size_ms, node.ev_slide_ms, node.lateness_ms
  local f = node.fn
  local call = QUICK[builtins.reducers[f] or false] or f
  local A, B = input.a, input.b
  -- One loop under one xpcall, resuming after a record whose f raised
  -- (guard.loop); the common pair checked inline.
  local panes, starts, at = {}, {}, { i = 0 }
  W.a, W.b, W.t, W.n, W.panes, W.starts, W.np, W.call, W.at = A, B, input.t, input.n, panes, starts, 0, call, at
  W.size, W.slide, W.lateness, W.before, W.node, W.g, W.tr, W.input = size, slide, lateness, tr.before, node, g, tr,
    input
  local ok, err = pcall(loop, fold_run, at, function(i, e)
    g.report_at(node, ("key %s: %s"):format(format.json(A[i]), tostring(e)), input, i, A[i], B[i])
  end, call ~= f)
  local np = W.np
  for k in pairs(W) do W[k] = nil end
  if not ok then error(err, 0) end
  sort(starts)
  local emitted, m = {}, 0
  -- Into each key's list; a window emitted already is emitted again,
  -- updated (it is still within its allowed lateness).
  for si = 1, np do
    local s = starts[si]
    local p = panes[s]
    local keys, accs = p.keys, p.accs
    for j = 1, p.nk do
      local k = keys[j]
      local partial = accs[k]
      local list = state:get(k)
      local value
      if list == nil then
        list = { s, partial, 0 }
        value = partial
      else
        local at = #list + 1
        for x = 1, #list, 3 do
          if list[x] >= s then at = x break end
        end
        if list[at] == s then
          local ok, r = g.call_key(node, k, partial, f, list[at + 1], partial)
          if ok then
            list[at + 1] = r
            value = r
            if list[at + 2] == 1 then
              m = m + 1
              emitted[m] = { k, s, s + size, r }
            end
          end
        else
          table.insert(list, at, 0)
          table.insert(list, at, partial)
          table.insert(list, at, s)
          value = partial
        end
      end
      if value ~= nil then store(node, g, state, k, list, window_timer(list, size, lateness)) end
    end
  end
  -- What the watermark reached: windows to emit, windows to drop.
  local fire = tr.fire
  if fire ~= nil then
    local dk, dv, dn = state:expire(fire)
    for i = 1, dn do
      local k, list = dk[i], dv[i]
      local keep, nkeep = {}, 0
      for x = 1, #list, 3 do
        local s, v, fired = list[x], list[x + 1], list[x + 2]
        local e = s + size
        if fired == 0 and e <= fire then
          m = m + 1
          emitted[m] = { k, s, e, v }
          fired = 1
        end
        if e + lateness > fire then
          keep[nkeep + 1], keep[nkeep + 2], keep[nkeep + 3] = s, v, fired
          nkeep = nkeep + 3
        end
      end
      store(node, g, state, k, keep, window_timer(keep, size, lateness))
    end
  end
  return results(emitted, m)
end

-- -- Sessions --

-- A key's list is flat: start, last event, value, ... by start; sessions
-- are apart by more than gap. A session emitted and kept for its allowed
-- lateness has its start stored as -(start + 1) (event times are >= 0, so
-- the lists of older checkpoints read as they were). Its timer: the
-- earliest last + gap of a session not emitted, or last + gap + lateness of
-- one emitted (when it is dropped).
local function session_start(x)
  if x < 0 then return -x - 1 end
  return x
end

-- A key's state as users see it (`inspect --keys`, the driver's state):
-- sessions with their true starts. kind: the stage's (M.kind_of).
function M.shown(kind, value)
  if type(value) ~= "table" or not kind:find("^session_by_key/") then return value end
  local list = {}
  for j = 1, #value do list[j] = value[j] end
  for j = 1, #list, 3 do list[j] = session_start(list[j]) end
  return list
end

local function session_timer(list, gap, lateness)
  local at
  for j = 1, #list, 3 do
    local x = list[j + 1] + gap
    if list[j] < 0 then x = x + lateness end
    if at == nil or x < at then at = x end
  end
  return at
end

-- acc folded with x (x when there is no acc yet), and true; a failing f
-- is reported: acc as it was, and false.
local function combine(node, g, f, k, acc, x)
  if acc == nil then return x, true end
  local ok, r = g.call_key(node, k, x, f, acc, x)
  if ok then return r, true end
  return acc, false
end

-- Adds the event (t, v) to a key's sessions, merging those it bridges
-- (an emitted one too: the merged session is emitted again, updated, once
-- the watermark has passed its end). Returns false when it is too late (it
-- would make a session whose end plus the allowed lateness the watermark
-- before the batch has passed), else true.
local function add_event(node, g, k, list, t, v, before)
  local gap, f = node.gap_ms, node.fn
  -- The sessions it touches: start - gap <= t <= last + gap (contiguous;
  -- as Spark and Flink, sessions that meet merge).
  local first, last
  for x = 1, #list, 3 do
    if session_start(list[x]) - gap <= t and t <= list[x + 1] + gap then
      first = first or x
      last = x
    end
  end
  if first == nil then
    if before ~= nil and t + gap + node.lateness_ms <= before then return false end
    local at = #list + 1
    for x = 1, #list, 3 do
      if session_start(list[x]) > t then at = x break end
    end
    table.insert(list, at, v)
    table.insert(list, at, t)
    table.insert(list, at, t)
    return true
  end
  -- Merged in time order: sessions before t, the event, sessions after.
  -- A fold that fails keeps the event out: the sessions stay as they
  -- were, neither stretched nor joined by it.
  local acc, start, top
  local placed, ok = false, true
  for x = first, last, 3 do
    local s, l = session_start(list[x]), list[x + 1]
    if not placed and t < s then
      acc, ok = combine(node, g, f, k, acc, v)
      if not ok then return true end
      placed = true
    end
    acc, ok = combine(node, g, f, k, acc, list[x + 2])
    if not ok then return true end
    if start == nil or s < start then start = s end
    if top == nil or l > top then top = l end
  end
  if not placed then
    acc, ok = combine(node, g, f, k, acc, v)
    if not ok then return true end
  end
  if t < start then start = t end
  if t > top then top = t end
  for _ = first, last + 2 do table.remove(list, first) end
  table.insert(list, first, acc)
  table.insert(list, first, top)
  table.insert(list, first, start)
  return true
end

-- session_by_key: as reduce_by_key_and_event_window.
function M.session_by_key(node, g, state, input, tr)
  tr:check()
  local gap, lateness = node.gap_ms, node.lateness_ms
  local before = tr.before
  local A, B, T = input.a, input.b, input.t
  -- Records by key, keys in order of first appearance.
  local keys, idx, nk = {}, {}, 0
  for i = 1, input.n do
    local k, v = A[i], B[i]
    if pair_check(node, g, k, v) then
      local l = idx[k]
      if l == nil then
        nk = nk + 1
        keys[nk] = k
        idx[k] = { i }
      else
        l[#l + 1] = i
      end
    end
  end
  local function by_time(x, y)
    if T[x] ~= T[y] then return T[x] < T[y] end
    return x < y
  end
  for j = 1, nk do
    local k = keys[j]
    local l = idx[k]
    sort(l, by_time)
    local list = state:get(k) or {}
    local changed = false
    for x = 1, #l do
      local i = l[x]
      if add_event(node, g, k, list, T[i], B[i], before) then
        changed = true
      else
        late(node, tr, input, i, k, B[i], T[i])
      end
    end
    if changed then store(node, g, state, k, list, session_timer(list, gap, lateness)) end
  end
  local emitted, m = {}, 0
  local fire = tr.fire
  if fire ~= nil then
    local dk, dv, dn = state:expire(fire)
    for i = 1, dn do
      local k, list = dk[i], dv[i]
      local keep, nkeep = {}, 0
      for x = 1, #list, 3 do
        local s, l, v = list[x], list[x + 1], list[x + 2]
        local e = l + gap
        if s >= 0 and e <= fire then
          m = m + 1
          emitted[m] = { k, s, e, v }
          s = -s - 1
        end
        if s >= 0 or e + lateness > fire then
          keep[nkeep + 1], keep[nkeep + 2], keep[nkeep + 3] = s, l, v
          nkeep = nkeep + 3
        end
      end
      store(node, g, state, k, keep, session_timer(keep, gap, lateness))
    end
  end
  return results(emitted, m)
end

return M
