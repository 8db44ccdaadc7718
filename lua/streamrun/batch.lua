-- streamrun.batch: the per-batch data of one stage as columns, so a pair
-- costs no table: { n = count, a = {...}, b = {...} } where element i is the
-- single value a[i] when b[i] is nil, else the pair (a[i], b[i]).
local tnew = require "table.new"
local ffi = require "ffi"

local DOUBLES = ffi.typeof("double[?]")

local M = {}

M.new_table = tnew
local EMPTY_B = setmetatable({}, { __newindex = function() error("batch.EMPTY_B is read-only", 2) end })

-- A batch of n single elements from an array (not copied).
function M.of_values(a, n)
  return { n = n or #a, a = a, b = EMPTY_B }
end

function M.empty()
  return { n = 0, a = {}, b = EMPTY_B }
end

-- Elements as one Lua value each, pairs as {k, v}: what user functions that
-- see a whole batch (transform, foreach_batch, the test driver) receive.
function M.to_elements(batch)
  local n, a, b = batch.n, batch.a, batch.b
  local out = tnew(n, 0)
  for i = 1, n do
    local v = b[i]
    if v == nil then out[i] = a[i] else out[i] = { a[i], v } end
  end
  return out
end

-- The inverse of to_elements: with keyed, each element must be a {k, v}
-- table and becomes a pair. Returns the batch, or nil and the position of
-- the first element that is not a pair.
function M.from_elements(list, keyed)
  local n = #list
  if not keyed then return { n = n, a = list, b = EMPTY_B } end
  local a, b = tnew(n, 0), tnew(n, 0)
  for i = 1, n do
    local e = list[i]
    if type(e) ~= "table" or e[1] == nil or e[2] == nil then return nil, i end
    a[i], b[i] = e[1], e[2]
  end
  return { n = n, a = a, b = b }
end

-- Where element i of a batch came from: the source's name and the record's
-- offset, or nil (an aggregate of many records). Batches say it at no cost
-- per record: a source batch has src and the offsets (pos, 0-based FFI
-- array of a C batch's record positions, else first: the offset of record
-- 1) and skips (records that made no element, ascending); a chain's output
-- has o (o[m]: the index in its input) and from (that input); a union's
-- output has cat (its two inputs, in order).
function M.origin(b, i)
  while b do
    if b.src then
      local rec = i
      local skips = b.skips
      if skips then
        for s = 1, #skips do
          if skips[s] <= rec then rec = rec + 1 end
        end
      end
      if b.pos then return b.src, tonumber(b.pos[rec - 1]) end
      return b.src, (b.first or 1) + rec - 1
    elseif b.o then
      i = b.o[i]
      b = b.from
    elseif b.cat then
      local left = b.cat[1]
      if i <= left.n then b = left else i, b = i - left.n, b.cat[2] end
    else
      return nil
    end
    if i == nil then return nil end
  end
  return nil
end

-- An array for the event times of n elements (t[1..n], 0 until set), as
-- an FFI array of doubles: times are whole ms below 2^53, and the garbage
-- collector does not walk an FFI array as it walks a table's slots (a
-- batch of a million records has one per stage that keeps times).
function M.new_times(n)
  return DOUBLES(n + 1)
end

-- owner[field] as an array of ctype with room for n + 1 elements (index 0
-- unused), reallocated (at least doubling) only when too small.
local function reuse(owner, field, ctype, n)
  local buf, cap_field = owner[field], field .. "_cap"
  if buf == nil or owner[cap_field] < n + 1 then
    local cap = n + 1
    if buf ~= nil and cap < 2 * owner[cap_field] then cap = 2 * owner[cap_field] end
    buf = ctype(cap)
    owner[field], owner[cap_field] = buf, cap
  end
  return buf
end

-- The same as new_times, from owner's buffer, reused from batch to batch
-- (the times of a batch are only read while it runs): no fresh pages for
-- each batch. owner: a table of the stage that keeps times; its field
-- `times` holds the buffer.
function M.reuse_times(owner, n)
  return reuse(owner, "times", DOUBLES, n)
end

-- An array for the input indexes of n elements (o[1..n], see origin), as
-- an FFI array of int32 from owner's buffer, reused from batch to batch as
-- reuse_times's (field `indexes`): for a chain that makes at most one
-- element of each, and whose output is only read while its batch runs.
local INT32S = ffi.typeof("int32_t[?]")
function M.reuse_indexes(owner, n)
  return reuse(owner, "indexes", INT32S, n)
end

-- 1 when any element of the batch is a pair.
function M.has_pairs(batch)
  return next(batch.b) ~= nil
end

return M
