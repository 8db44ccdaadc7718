-- streamrun.stateful: the keyed-state operations of SPEC section 8 over
-- state held in C (streamrun.cstate). update_state_by_key calls its function
-- once per batch for every key with new values or state; map_with_state
-- calls its function once per record, in arrival order, then once more for
-- every key whose idle time passed its timeout at this batch's time.
-- User functions here run in guard.each's loops: state is committed after
-- each call, so a failing call is reported and its key keeps its state
-- (map_with_state commits a value that is not a number to the batch's
-- held values, written to C after the batch's records).
local core = require "streamrun.core"
local format = require "streamrun.format"
local ops = require "streamrun.ops"
local guard = require "streamrun.guard"
local eventtime = require "streamrun.eventtime"
local statevalue = require "streamrun.statevalue"
local retrace = require "streamrun.retrace"

local cstate = core.cstate
local C, ffi = core.C, core.ffi
local type, error, tostring, min = type, error, tostring, math.min
local tnew = require "table.new"
local each, loop = guard.each, guard.loop
local WP = require("streamrun.watchdog").P
local pair_check = ops.pair_check

local M = {}

-- -- Numbers through the FFI --
-- State values that are numbers (counters, sums) are read and written with
-- FFI calls LuaJIT compiles into the batch loop; anything else goes through
-- the Lua binding. Both encode keys alike, so they see the same entries.

local number_out = ffi.new("double[1]")
local vlen_out, hold_out = ffi.new("size_t[1]"), ffi.new("long[1]")
local BYTES = ffi.typeof("const uint8_t *")
local encode, decode = statevalue.encode, statevalue.decode

-- The FFI form of a key: type, string, length, number.
local function key_args(k)
  local t = type(k)
  if t == "string" then return 1, k, #k, 0 end
  if t == "number" then return 2, nil, 0, k end
  return 3, nil, 0, k and 1 or 0
end

local function key_error(node, g, k, record, err)
  g.report_key(node, k, err, record)
end

local EMPTY = setmetatable({}, { __newindex = function() error("the values array is read-only", 2) end })

-- A new state table for a stateful stage.
function M.new_state(node)
  return cstate.new(node.stage_name, node.partitions, node.timeout_ms, 0)
end

-- The states (or a split stage's shards) of stages with opts.initial made
-- and not seeded yet: a reload before their first batch keeps them, and
-- the new plan seeds them then. (Kept state otherwise was seeded, or
-- restored from a checkpoint that holds its seeds.)
M.unseeded = setmetatable({}, { __mode = "k" })

-- Whether a stage's state must still be seeded: it has opts.initial, and
-- its state is new or kept unseeded.
function M.needs_seed(node, state, kept)
  if not node.initial then return false end
  if kept ~= nil and not M.unseeded[kept] then return false end
  M.unseeded[state] = true
  return true
end

-- The order the keys of an initial table are put in: numbers, strings
-- (by their bytes), false, true. Not pairs(): its order follows when each
-- string was made (LuaJIT's string ids), and the order of the puts decides
-- the order of a partition's table, so a checkpoint's bytes, and the order
-- of the dead letters.
local SEED_RANK = { number = 1, string = 2, boolean = 3 }
local function seed_before(a, b)
  local ra, rb = SEED_RANK[type(a)], SEED_RANK[type(b)]
  if ra ~= rb then return ra < rb end
  if ra == 3 then return b and not a end
  return a < b
end

-- The keys of t, in the order of seed_before, then those that cannot be
-- keys (each a dead letter) in pairs() order.
local function seed_keys(t)
  local keys, others = {}, {}
  for k in pairs(t) do
    if SEED_RANK[type(k)] then keys[#keys + 1] = k else others[#others + 1] = k end
  end
  table.sort(keys, seed_before)
  for i = 1, #others do keys[#keys + 1] = others[i] end
  return keys
end

-- Seeds the state from opts.initial (a table, or a function returning one)
-- at the first batch's time, so seeded keys start their idle clocks then.
-- state: the stage's state, or on several workers its shards
-- (streamrun.exchange: each key goes to its owner's shard).
local function seed(node, g, state, time_ms)
  local initial = node.initial
  if type(initial) == "function" then
    local ok, t = g.call_key(node, nil, nil, initial)
    if not ok then return end
    initial = t
  end
  if type(initial) ~= "table" then
    g.report(node, "initial state must be a table {key = state}, got " .. type(initial))
    return
  end
  for _, k in ipairs(seed_keys(initial)) do
    local v = initial[k]
    local bad = ops.bad_key(k)
    local ok, err = false, bad
    if not bad then ok, err = state:put(k, v, node.timeout_ms > 0 and time_ms or nil) end
    if not ok then g.report(node, ("initial state, key %s: %s"):format(format.json(k), err), k, v) end
  end
end

-- sp: the state's pointer for the FFI (ffi.cast of state:pointer()).
local function put_or_report(node, g, state, sp, k, v, now)
  local ok, err
  if type(v) == "number" then
    local kt, ks, kl, kn = key_args(k)
    local rc = C.sr_state_put_number(sp, kt, ks, kl, kn, v, now or -1)
    ok, err = rc == 0, rc ~= 0 and ffi.string(C.sr_strerror(rc)) or nil
  else
    ok, err = state:put(k, v, now)
  end
  if ok then return true end
  g.report(node, ("key %s: %s; the key keeps its previous state"):format(format.json(k), err), k)
  return false
end

-- As put_or_report, for a value that may be a small flat table: encoded
-- in Lua (streamrun.statevalue) and stored through the FFI when it is one.
-- h: the key's entry as held by sr_state_found_value, or nil.
local function put_value(node, g, state, sp, k, v, now, h)
  local bytes, n = encode(v)
  if not bytes then return put_or_report(node, g, state, sp, k, v, now) end
  local kt, ks, kl, kn = key_args(k)
  local rc = C.sr_state_held_put_bytes(sp, h or -1, kt, ks, kl, kn, bytes, n, now or -1)
  if rc == 0 then return true end
  -- (a key too long, out of memory: the binding says why, as for any value)
  return put_or_report(node, g, state, sp, k, v, now)
end

-- Keys looked up at a time by one C call (sr_state_find_batch).
local FOUND_RUN = 256

-- The batch's keys as the C lookup takes them, in the state's buffer
-- (the strings are borrowed from the batch).
local function batch_keys(sp, A, n, what)
  local K = C.sr_state_keys(sp, n)
  if K == nil then error((what or "map_with_state") .. ": out of memory for a batch of " .. n .. " keys", 0) end
  for i = 1, n do
    local k, e = A[i], K[i - 1]
    local t = type(k)
    if t == "string" then
      e.type, e.s, e.len = 1, k, #k
    elseif t == "number" then
      e.type, e.num = 2, k
    elseif t == "boolean" then
      e.type, e.num = 3, k and 1 or 0
    else
      e.type = 0
    end
  end
  return K
end

-- -- update_state_by_key --
-- Every key with state is called each batch, in the order of its key's
-- bytes. That order is the C snapshot's, sorted each time; while the set of
-- keys stays the same from one batch to the next (running totals over a
-- steady vocabulary), the order of the batch before is kept (its key
-- strings, not a copy of the state) and the values are read through the FFI
-- by a lookup of every key in one C pass, instead of a sort and a table of
-- every value. Any batch that adds or removes a key, or fails a call, drops
-- the kept order.

-- state handle -> { keys = the state's keys in order, n = how many }
local ordered = setmetatable({}, { __mode = "k" })
-- Past this many keys the order is not kept: a Lua table of every key
-- would weigh on the collector more than the sort it saves.
local ORDER_MAX = 2 ^ 20
local tclear = require "table.clear"

-- Groups a keyed batch into the stage's reused tables (the keys of the
-- batch before are the same words, again and again): keys in order of
-- first appearance and, per key, the array of its values. With the kept
-- order's rank (key -> its index in the order), the values of keys with
-- state go straight to V[rank] (V holds EMPTY for each); only new keys are
-- grouped in the tables.
local function group(node, g, input, rank, V)
  local keys, lists = node.usk_keys, node.usk_lists
  if keys then
    tclear(keys)
    tclear(lists)
  else
    keys, lists = tnew(input.n, 0), tnew(0, input.n)
    node.usk_keys, node.usk_lists = keys, lists
  end
  local nk = 0
  local A, B = input.a, input.b
  local pair_check = ops.pair_check
  for i = 1, input.n do
    local k, v = A[i], B[i]
    if pair_check(node, g, k, v) then
      local r = rank and rank[k]
      if r then
        local l = V[r]
        if l == EMPTY then V[r] = { v } else l[#l + 1] = v end
      else
        local l = lists[k]
        if l == nil then
          nk = nk + 1
          keys[nk] = k
          lists[k] = { v }
        else
          l[#l + 1] = v
        end
      end
    end
  end
  return keys, lists, nk
end

-- update_state_by_key's calls, one per key in hand (K[1..total], its values
-- V[i]; 1..ns have state, read from svalues[i] or, in the kept order,
-- looked up in C), as records_run runs map_with_state's: one loop function
-- for every batch and stage, its batch read from keys_frame (a closure
-- made per batch would be a new function to the traces compiled for the
-- last one), under guard.loop (at.i: the key in hand; R.old its state, for
-- the output of a failing call).
local keys_frame = {}

-- The output of a failing call: the key's state before it (v, if any).
local function emit_old(R, k, v, i)
  if v ~= nil then
    local m = R.m + 1
    R.m = m
    R.OA[m], R.OB[m] = k, v
    if R.OI then R.OI[m] = i end
  end
end

local function keys_run(i0)
  local R = keys_frame
  local node, g, state, sp, f, time_ms = R.node, R.g, R.state, R.sp, R.f, R.time_ms
  local K, V, ns, total, svalues, SK, at = R.K, R.V, R.ns, R.total, R.svalues, R.SK, R.at
  local OA, OB, OI, m, base, top = R.OA, R.OB, R.OI, R.m, R.base, R.top
  for i = i0, total do
    at.i = i
    WP.rec = -i
    local k = K[i]
    local old, j, kt, ks, kl, kn = nil, -1, 0, nil, 0, 0
    R.old = nil
    if svalues then
      if i <= ns then old = svalues[i] end
    else
      kt, ks, kl, kn = key_args(k)
      if i <= ns then
        if i > top or i <= base then
          base, top = i - 1, min(ns, i - 1 + FOUND_RUN)
          R.base, R.top = base, top
          C.sr_state_find_batch(sp, SK + base, top - base)
        end
        j = i - 1 - base
        local rc = C.sr_state_found_number(sp, j, kt, ks, kl, kn, number_out)
        if rc == 1 then
          old = number_out[0]
        elseif rc ~= 0 then
          old = state:get_found(j, k)
        end
      end
    end
    R.old = old
    local new = f(V[i], old, k, time_ms)
    if new == nil then
      if old ~= nil then R.changed = true end
      state:remove(k)
    elseif j >= 0 and type(new) == "number" then
      local rc = C.sr_state_found_put_number(sp, j, kt, ks, kl, kn, new, -1)
      if rc ~= 0 then
        g.report(node, ("key %s: %s; the key keeps its previous state"):format(format.json(k),
          ffi.string(C.sr_strerror(rc))), k)
        new = old
      end
    elseif not put_or_report(node, g, state, sp, k, new) then
      new = old
    end
    if new ~= nil then
      m = m + 1
      R.m = m
      OA[m], OB[m] = k, new
      if OI then OI[m] = i end
    end
  end
end

function M.update_state_by_key(node, g, state, input, time_ms)
  local f = node.fn
  local sp = ffi.cast("sr_state_t *", state:pointer())
  local kept = ordered[state]
  local count = state:count()
  local skeys, svalues, ns, V, keys, lists, nk
  if kept and kept.n == count then
    skeys, ns = kept.keys, count
    local rank = kept.rank
    if not rank then
      rank = tnew(0, ns)
      for i = 1, ns do rank[skeys[i]] = i end
      kept.rank = rank
    end
    V = tnew(ns, 0)
    for i = 1, ns do V[i] = EMPTY end
    keys, lists, nk = group(node, g, input, rank, V)
  else
    ordered[state] = nil
    keys, lists, nk = group(node, g, input)
    skeys, svalues, ns = state:snapshot()
    -- The keys with state take their lists out of the table; what is left
    -- belongs to new keys.
    V = tnew(ns, 0)
    for i = 1, ns do
      local k = skeys[i]
      local l = lists[k]
      if l then
        V[i] = l
        lists[k] = nil
      else
        V[i] = EMPTY
      end
    end
  end
  -- Every key with state (ordered by key), then the new ones in arrival
  -- order, each with its values.
  local K, total = skeys, ns
  for i = 1, nk do
    local k = keys[i]
    local l = lists[k]
    if l then
      if K == skeys then
        -- (skeys may be the kept order: the new keys go on a copy)
        K = tnew(ns + nk, 0)
        for j = 1, ns do K[j] = skeys[j] end
      end
      total = total + 1
      K[total], V[total] = k, l
    end
  end
  retrace.note(node, total, total - ns)
  local OA, OB = tnew(total, 0), tnew(total, 0)
  -- (streamrun.exchange: which key each output is of, 1..ns the kept ones)
  local OI = node.keep_order and tnew(total, 0) or nil
  -- The kept order: the keys with state are looked up FOUND_RUN at a
  -- time (see map_with_state), their values read by index in the run.
  local SK = not svalues and ns > 0 and batch_keys(sp, skeys, ns, "update_state_by_key") or nil
  local R = keys_frame
  R.node, R.g, R.state, R.sp, R.f, R.time_ms = node, g, state, sp, f, time_ms
  R.K, R.V, R.ns, R.total, R.svalues, R.SK = K, V, ns, total, svalues, SK
  R.OA, R.OB, R.OI, R.m, R.base, R.top, R.changed = OA, OB, OI, 0, 0, 0, total > ns
  local at = node.keys_at
  if not at then
    at = { i = 0 }
    node.keys_at = at
  end
  R.at = at
  local ok, err = pcall(loop, keys_run, at, function(i, e)
    -- (a failing call: the key keeps its state, and outputs it)
    R.changed = true
    key_error(node, g, K[i], V[i], e)
    emit_old(R, K[i], R.old, i)
  end)
  local m, changed = R.m, R.changed
  -- (R holds no batch past its loop)
  R.node, R.g, R.state, R.sp, R.f, R.K, R.V, R.svalues, R.SK, R.OA, R.OB, R.OI, R.at, R.old =
    nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil
  if not svalues then C.sr_state_release(sp) end
  if not ok then error(err, 0) end
  if not changed and ns <= ORDER_MAX then
    if not (kept and kept.keys == skeys) then ordered[state] = { keys = skeys, n = ns } end
  else
    ordered[state] = nil
  end
  return { n = m, a = OA, b = OB, order = OI, kept = ns }
end

-- -- map_with_state --

-- The state a mapping function sees for one key; one object per stage,
-- reused for every call (valid only during the call).
local State = {}
State.__index = State

function State:exists() return self.value ~= nil end

function State:get()
  if self.value == nil then error(("state of key %s is not set"):format(format.json(self.key)), 2) end
  return self.value
end

function State:update(v)
  if self.timing_out then
    error(("cannot update the state of key %s: it is timing out"):format(format.json(self.key)), 2)
  end
  if self.removed then error(("cannot update the state of key %s after removing it"):format(format.json(self.key)), 2) end
  if v == nil then error("state:update needs a value (use state:remove() to drop the key)", 2) end
  self.value, self.changed = v, true
end

function State:remove()
  if self.timing_out then
    error(("cannot remove the state of key %s: it is timing out"):format(format.json(self.key)), 2)
  end
  if self.removed then error(("the state of key %s is already removed"):format(format.json(self.key)), 2) end
  self.value, self.removed, self.changed = nil, true, false
end

function State:is_timing_out() return self.timing_out end

local function reset(s, k, v, timing_out)
  s.key, s.value, s.timing_out, s.changed, s.removed = k, v, timing_out, false, false
end

-- Timed-out keys handed from C at a time.
local DUE_CHUNK = 4096

-- The records of map_with_state's batch in hand, and where its loop
-- stands (R.m outputs, R.ns slots, R.nd slots updated, R.base and R.top
-- the run of keys looked up, R.now the idle clock's time): one loop
-- function for every batch and stage, reading its batch from R into
-- locals. (A closure made per batch would be a new function to the
-- traces LuaJIT compiled for the last one: each batch's records would
-- leave the loop's trace at its first guard, and run in side traces
-- that reload every upvalue, for every record.) The loop runs under
-- guard.loop: at.i is the record in hand, and what the loop keeps past
-- a failing call is stored in R as it changes.
--
-- Values that are not numbers are decoded once per key and batch, and
-- held in the stage's slots (reused from batch to batch: tables grown
-- once, no hash table made and collected per batch): slot_of[k] the
-- key's slot, HK its key, HV its value (read by the key's later records),
-- HH its entry as sr_state_found_value held it (written back with no
-- lookup; -1: none), HA the time its idle clock restarts at when written
-- back (true without a timeout), false while not updated. Slots updated
-- are written back once, in the order first updated (D), after the
-- records.
local records_frame = {}

local function records_run(i0)
  local R = records_frame
  local node, g, state, sp, s, f, time_ms = R.node, R.g, R.state, R.sp, R.s, R.f, R.time_ms
  local A, B, n, K, T, now = R.a, R.b, R.n, R.K, R.T, R.now
  local OA, OB, OI, m = R.OA, R.OB, R.OI, R.m
  local slots = R.slots
  local slot_of, HK, HV, HH, HA, D, at = slots.slot_of, slots.HK, slots.HV, slots.HH, slots.HA, slots.D, slots.at
  local ns, nd, base, top, sign = R.ns, R.nd, R.base, R.top, R.rec_sign
  for i = i0, n do
    at.i = i
    WP.rec = sign * i
    if i > top or i <= base then
      base, top = i - 1, min(n, i - 1 + FOUND_RUN)
      R.base, R.top = base, top
      C.sr_state_find_batch(sp, K + base, top - base)
    end
    local j = i - 1 - base
    local k, v = A[i], B[i]
    if T then
      now = T[i]
      R.now = now
    end
    if pair_check(node, g, k, v) then
      local kt, ks, kl, kn = key_args(k)
      local sl = slot_of[k]
      local old
      if sl then
        old = HV[sl]
      else
        local rc = C.sr_state_found_number(sp, j, kt, ks, kl, kn, number_out)
        if rc == 1 then
          old = number_out[0]
        elseif rc ~= 0 then
          local vp = C.sr_state_found_value(sp, j, kt, ks, kl, kn, vlen_out, hold_out)
          old = vp ~= nil and decode(ffi.cast(BYTES, vp), tonumber(vlen_out[0])) or nil
          if old == nil then old = state:get_found(j, k) end
          ns = ns + 1
          R.ns = ns
          sl = ns
          slot_of[k], HK[sl], HV[sl], HH[sl], HA[sl] = sl, k, old, tonumber(hold_out[0]), false
        end
      end
      reset(s, k, old, false)
      local r1, r2 = f(k, v, s, time_ms)
      if s.removed then
        state:remove(k)
        if sl then slot_of[k], HV[sl], HA[sl] = nil, nil, false end
      elseif s.changed then
        local nv = s.value
        if type(nv) == "number" then
          if sl then slot_of[k], HV[sl], HA[sl] = nil, nil, false end
          local rc = C.sr_state_found_put_number(sp, j, kt, ks, kl, kn, nv, now or -1)
          if rc ~= 0 then
            key_error(node, g, k, v, ffi.string(C.sr_strerror(rc)) .. "; the key keeps its previous state")
          end
        else
          if not sl then
            ns = ns + 1
            R.ns = ns
            sl = ns
            slot_of[k], HK[sl], HH[sl], HA[sl] = sl, k, -1, false
          end
          HV[sl] = nv
          if not HA[sl] then
            nd = nd + 1
            R.nd = nd
            D[nd] = sl
          end
          HA[sl] = now or true
        end
      elseif old ~= nil and now then
        C.sr_state_found_touch(sp, j, kt, ks, kl, kn, now)
      end
      if r1 ~= nil then
        m = m + 1
        R.m = m
        OA[m], OB[m] = r1, r2
        if OI then OI[m] = i end
      end
    end
  end
end

-- plan: the running plan (its event-time tracker, and whether the batch is
-- the last of bounded input: then every key times out).
function M.map_with_state(node, g, state, input, time_ms, plan)
  local s = node.state_object
  if not s then
    s = setmetatable({}, State)
    node.state_object = s
  end
  local f = node.fn
  local now = node.timeout_ms > 0 and time_ms or nil
  local sp = ffi.cast("sr_state_t *", state:pointer())
  local A, B, n = input.a, input.b, input.n
  -- With clock = "event", a key's idle clock restarts at its records' event
  -- times and runs against the watermark.
  local T = now and node.timeout_clock == "event" and input.t
  -- Sized as the last batch's were (up to this one's records): a table
  -- grown element by element copies itself again and again.
  local size = min(n, node.last_out or 0)
  local OA, OB, m = tnew(size, 0), tnew(size, 0), 0
  -- (streamrun.exchange: the record each output is of, or false and the
  -- key that timed out)
  local OI, OK = node.keep_order and tnew(size, 0) or nil, nil
  if OI then OK = tnew(size, 0) end
  -- The keys are looked up FOUND_RUN at a time by one C call (their
  -- cache misses overlap, and the entries are still in cache when the
  -- records use them); each record then reads and writes its entry by its
  -- index in the run.
  local K = batch_keys(sp, A, n)
  local keys_before = state:count()
  local slots = node.held_slots
  if not slots then
    slots = { slot_of = {}, HK = {}, HV = {}, HH = {}, HA = {}, D = {}, at = { i = 0 } }
    node.held_slots = slots
  end
  -- (a batch that raised out of the loop, a fatal error, left them full)
  if slots.busy then
    tclear(slots.slot_of)
    tclear(slots.HK)
    tclear(slots.HV)
  end
  slots.busy = true
  local R = records_frame
  R.node, R.g, R.state, R.sp, R.s, R.f, R.time_ms = node, g, state, sp, s, f, time_ms
  R.a, R.b, R.n, R.K, R.T, R.now = A, B, n, K, T, now
  -- The watchdog's progress: the record in hand, or on a worker (the
  -- owner's merged input: keep_order) an item, no record of the step's
  -- input (a restart that skips a stuck one skips the whole input).
  R.rec_sign = node.keep_order and -1 or 1
  R.OA, R.OB, R.OI, R.m, R.ns, R.nd, R.base, R.top = OA, OB, OI, 0, 0, 0, 0, 0
  R.slots = slots
  local at = slots.at
  local ok, err = pcall(loop, records_run, at, function(i, e)
    -- A failing call changes nothing: the key keeps its state.
    local k = A[i]
    if R.now then state:touch(k, R.now) end
    g.report_at(node, ("key %s: %s"):format(format.json(k), tostring(e)), input, i, k, B[i])
  end)
  m = R.m
  local ns, nd = R.ns, R.nd
  -- (R holds no batch past its loop)
  R.node, R.g, R.state, R.sp, R.s, R.f, R.a, R.b, R.K, R.T, R.OA, R.OB, R.OI, R.slots =
    nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil
  if not ok then error(err, 0) end
  -- The values that are not numbers, encoded once per key and batch.
  local HK, HV, HH, HA, D = slots.HK, slots.HV, slots.HH, slots.HA, slots.D
  for i = 1, nd do
    local sl = D[i]
    local at_ms = HA[sl]
    if at_ms then
      at_ms = at_ms ~= true and at_ms or nil
      local k = HK[sl]
      if not put_value(node, g, state, sp, k, HV[sl], at_ms, HH[sl]) and at_ms then state:touch(k, at_ms) end
    end
  end
  -- (the slots keep no key or value past the batch)
  tclear(slots.slot_of)
  for i = 1, ns do HK[i], HV[i] = nil, nil end
  slots.busy = false
  retrace.note(node, n, state:count() - keys_before)
  local expire_at = time_ms
  if plan and plan.final then
    expire_at = eventtime.FINAL
  elseif node.timeout_clock == "event" then
    if plan and plan.event then plan.event:check() end
    expire_at = plan and plan.event and plan.event.fire
  end
  if node.timeout_ms > 0 and expire_at then
    -- The keys that timed out (at the end of bounded input, every key),
    -- taken from C a chunk at a time: never a table of them all.
    local due = state:expire_sorted(expire_at)
    local tk, tv = node.due_keys, node.due_values
    if due > 0 and not tk then
      tk, tv = tnew(DUE_CHUNK, 0), tnew(DUE_CHUNK, 0)
      node.due_keys, node.due_values = tk, tv
    end
    for from = 1, due, DUE_CHUNK do
      local tn = state:due(from, DUE_CHUNK, tk, tv)
      each(tn, function(i)
        reset(s, tk[i], tv[i], true)
        local r1, r2 = f(tk[i], nil, s, time_ms)
        if r1 ~= nil then
          m = m + 1
          OA[m], OB[m] = r1, r2
          if OI then OI[m], OK[m] = false, tk[i] end
        end
      end, function(i, err)
        key_error(node, g, tk[i], tv[i], err)
      end, "item")
      state:remove_due(from, tn)
      for i = 1, tn do tk[i], tv[i] = nil, nil end
    end
  end
  C.sr_state_release(sp)
  node.last_out = m
  return { n = m, a = OA, b = OB, order = OI, due_keys = OK }
end

-- Every (k, state) of the stage, after its batch.
function M.state_snapshots(node, g, state)
  local keys, values, n = state:snapshot()
  return { n = n, a = keys, b = values }
end

M.seed = seed

return M
