-- streamrun.ops: the per-batch operations that need the whole batch (SPEC
-- section 6): union, count, count_by_value, reduce, reduce_by_key,
-- group_by_key, the joins, cogroup, transform. Each takes the stage, its
-- input batches, the batch time and the plan's guard (streamrun.guard), and
-- returns the output batch. A user function called once per batch goes
-- through g.call; the loops calling one per record run unguarded and resume
-- after a failing call (g.resumed), which is reported and its element
-- skipped: each call is made once.
local batch = require "streamrun.batch"
local builtins = require "streamrun.builtins"
local format = require "streamrun.format"
local watchdog = require "streamrun.watchdog"

local tnew = batch.new_table
local type, tostring = type, tostring
local W = watchdog.P -- the watchdog's progress: one store per record

local M = {}

local KEY_TYPES = { string = true, number = true, boolean = true }

-- nil when k can key a table of state; else why not.
local function bad_key(k)
  if not KEY_TYPES[type(k)] then return "key must be a string, number or boolean, got " .. type(k) end
  if k ~= k then return "key must not be NaN" end
  return nil
end

local function pair_check(node, g, a, b)
  if b == nil then
    g.report(node, node.op .. " needs (k, v) pairs; got the single element " .. format.value(a), a)
    return false
  end
  local why = bad_key(a)
  if why then
    g.report(node, why, a, b)
    return false
  end
  return true
end

-- Groups a keyed batch: keys in order of first appearance and, per key, the
-- array of its values.
local function group(node, g, input)
  local keys, lists, nk = {}, {}, 0
  local A, B = input.a, input.b
  for i = 1, input.n do
    local k, v = A[i], B[i]
    if pair_check(node, g, k, v) then
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
  return keys, lists, nk
end

function M.union(node, g, left, right)
  local n = left.n + right.n
  local A, B = tnew(n, 0), tnew(n, 0)
  local la, lb, ra, rb = left.a, left.b, right.a, right.b
  for i = 1, left.n do A[i], B[i] = la[i], lb[i] end
  local off = left.n
  for i = 1, right.n do A[off + i], B[off + i] = ra[i], rb[i] end
  local out = { n = n, a = A, b = B, cat = { left, right } }
  -- Event times go along when both sides have them.
  local lt, rt = left.t, right.t
  if (lt or left.n == 0) and (rt or right.n == 0) then
    local T = batch.new_times(n)
    for i = 1, left.n do T[i] = lt[i] end
    for i = 1, right.n do T[off + i] = rt[i] end
    out.t = T
  end
  return out
end

function M.count(node, g, input)
  return batch.of_values({ input.n }, 1)
end

-- A key standing for a whole element (count_by_value*): the element itself
-- when it can key a table, else a tagged string no element can collide
-- with: "\0s"..s for a string starting with NUL, "\0j"..JSON otherwise
-- (tables, pairs, NaN). element_of_key turns it back.
function M.element_key(a, b)
  if b == nil then
    local t = type(a)
    if t == "string" then
      if a:byte(1) == 0 then return "\0s" .. a end
      return a
    end
    if (t == "number" and a == a) or t == "boolean" then return a end
    return "\0j" .. format.exact_json(a)
  end
  return "\0j" .. format.exact_json({ a, b })
end

function M.element_of_key(k)
  if type(k) == "string" and k:byte(1) == 0 then
    if k:byte(2) == 115 then return k:sub(3) end -- "s"
    return require("cjson").decode(k:sub(3))
  end
  return k
end

function M.count_by_value(node, g, input)
  local keys, counts, nk = {}, {}, 0
  local reps = {}
  local A, B = input.a, input.b
  for i = 1, input.n do
    local a, b = A[i], B[i]
    local k, rep = a, a
    if b ~= nil or not KEY_TYPES[type(a)] or a ~= a or (type(a) == "string" and a:byte(1) == 0) then
      rep = b == nil and a or { a, b }
      k = M.element_key(a, b)
    end
    local c = counts[k]
    if c == nil then
      nk = nk + 1
      keys[nk] = k
      reps[nk] = rep
      counts[k] = 1
    else
      counts[k] = c + 1
    end
  end
  local OB = tnew(nk, 0)
  for i = 1, nk do OB[i] = counts[keys[i]] end
  return { n = nk, a = reps, b = OB }
end

local function elements_of(input)
  return batch.to_elements(input)
end

-- A result element of a function over whole elements: a {k, v} table
-- becomes a pair again when the stage's input was keyed.
local function unpack_result(node, input, r)
  if node.keyed ~= "no" and batch.has_pairs(input) and type(r) == "table" and r[1] ~= nil and r[2] ~= nil then
    return r[1], r[2]
  end
  return r, nil
end

function M.reduce(node, g, input)
  if input.n == 0 then return batch.empty() end
  local f = node.fn
  local A, B, n = input.a, input.b, input.n
  local pairs_in = batch.has_pairs(input)
  local at = {}
  local function run(i0, acc, have)
    for i = i0, n do
      W.rec = i
      local e = A[i]
      if pairs_in then e = B[i] == nil and A[i] or { A[i], B[i] } end
      if not have then
        acc, have = e, true
      else
        at.i, at.acc, at.have, at.e = i, acc, have, e
        acc = f(acc, e)
      end
    end
    return acc, have
  end
  local acc = g.resumed(node, run, at, nil, false, "acc", "have", "acc", "e")
  local a, b = unpack_result(node, input, acc)
  return { n = 1, a = { a }, b = { b } }
end

-- Specialized folds for the arithmetic built-ins: no call per record.
local FOLDS = {
  add = function(acc, v) return acc + v end,
  min = function(acc, v) if v < acc then return v end return acc end,
  max = function(acc, v) if v > acc then return v end return acc end,
}

function M.reduce_by_key(node, g, input)
  local f = node.fn
  f = FOLDS[builtins.reducers[f] or false] or f
  local keys, accs = {}, {}
  local A, B, n = input.a, input.b, input.n
  local at = {}
  local function run(i0, acc, nk)
    for i = i0, n do
      at.i = i
      W.rec = i
      local k, v = A[i], B[i]
      if pair_check(node, g, k, v) then
        acc = accs[k]
        if acc == nil then
          nk = nk + 1
          keys[nk] = k
          accs[k] = v
        else
          accs[k] = f(acc, v)
        end
      end
    end
    return nil, nk
  end
  -- (Without the handler: nk is #keys, acc and v are read again.)
  setmetatable(at, { __index = function(t, name)
    local i = rawget(t, "i")
    if name == "nk" then return #keys elseif name == "v" then return B[i] elseif name == "acc" then return accs[A[i]]
    elseif name == "k" then return A[i] end
  end })
  local _, nk = g.resumed(node, run, at, nil, 0, "acc", "nk", "acc", "v", "k")
  local OB = tnew(nk, 0)
  for i = 1, nk do OB[i] = accs[keys[i]] end
  return { n = nk, a = keys, b = OB }
end

function M.group_by_key(node, g, input)
  local keys, lists, nk = group(node, g, input)
  local OB = tnew(nk, 0)
  for i = 1, nk do OB[i] = lists[keys[i]] end
  return { n = nk, a = keys, b = OB }
end

-- Emits the joined pairs of both sides' groups. inner: keys on both sides;
-- left/right/full: also keys of that side alone, with nil for the missing
-- value (so {v} or {nil, w}).
local function join(node, g, left, right, keep_left, keep_right)
  local lk, lv, nl = group(node, g, left)
  local rk, rv, nr = group(node, g, right)
  local A, B, m = {}, {}, 0
  for i = 1, nl do
    local k = lk[i]
    local vs, ws = lv[k], rv[k]
    if ws then
      for x = 1, #vs do
        for y = 1, #ws do m = m + 1; A[m], B[m] = k, { vs[x], ws[y] } end
      end
    elseif keep_left then
      for x = 1, #vs do m = m + 1; A[m], B[m] = k, { vs[x], nil } end
    end
  end
  if keep_right then
    for i = 1, nr do
      local k = rk[i]
      if lv[k] == nil then
        local ws = rv[k]
        for y = 1, #ws do m = m + 1; A[m], B[m] = k, { nil, ws[y] } end
      end
    end
  end
  return { n = m, a = A, b = B }
end

function M.join(node, g, l, r) return join(node, g, l, r, false, false) end
function M.left_outer_join(node, g, l, r) return join(node, g, l, r, true, false) end
function M.full_outer_join(node, g, l, r) return join(node, g, l, r, true, true) end

function M.right_outer_join(node, g, l, r)
  -- Right side's keys in its order, as Spark lists them.
  local out = join(node, g, r, l, true, false)
  for i = 1, out.n do
    local p = out.b[i]
    out.b[i] = { p[2], p[1] }
  end
  return out
end

function M.cogroup(node, g, left, right)
  local lk, lv, nl = group(node, g, left)
  local rk, rv, nr = group(node, g, right)
  local A, B, m = {}, {}, 0
  for i = 1, nl do
    local k = lk[i]
    m = m + 1
    A[m], B[m] = k, { lv[k], rv[k] or {} }
  end
  for i = 1, nr do
    local k = rk[i]
    if lv[k] == nil then
      m = m + 1
      A[m], B[m] = k, { {}, rv[k] }
    end
  end
  return { n = m, a = A, b = B }
end

function M.transform(node, g, input, time_ms)
  local elements = elements_of(input)
  local ok, r = g.call(node, node.fn, elements, time_ms)
  if not ok then return batch.empty() end
  if type(r) ~= "table" then
    g.report(node, "transform must return an array of elements, got " .. type(r), "(batch at " .. time_ms .. " ms)")
    return batch.empty()
  end
  local keyed = node.keyed == "yes" or (node.keyed == "maybe" and batch.has_pairs(input))
  local out, bad = batch.from_elements(r, keyed)
  if not out and node.keyed == "maybe" then
    -- The stream was not declared keyed: a function may turn pairs into
    -- single elements, as rdd => rdd.map(_._1) does in Spark.
    out = batch.from_elements(r, false)
  elseif not out then
    g.report(node, "transform on a keyed stream must return {k, v} pairs; element " .. bad .. " is not one", r[bad])
    local keep = {}
    for i = 1, #r do
      local e = r[i]
      if type(e) == "table" and e[1] ~= nil and e[2] ~= nil then keep[#keep + 1] = e end
    end
    out = batch.from_elements(keep, true)
  end
  return out
end

M.bad_key = bad_key
M.KEY_TYPES = KEY_TYPES
M.FOLDS = FOLDS
M.pair_check = pair_check

return M
