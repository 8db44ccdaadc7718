-- spec helper: compares a batch's output elements with Spark's expected
-- output. Spark's keyed operations emit in hash-partition order, which says
-- nothing about ours (first appearance of the key), so such batches are
-- compared as multisets: both sides sorted by a canonical text first.
local assert = require "luassert"

local type, pairs, ipairs, tostring, sort, concat = type, pairs, ipairs, tostring, table.sort, table.concat

local M = {}

-- A canonical text for a value: tables as [..] over their integer indexes
-- 1..max (so a hole, as in an outer join's {nil, w}, stays visible) and
-- their other keys in sorted order; strings quoted, so "1" and 1 differ.
local function canon(v)
  local t = type(v)
  if t == "string" then return ("%q"):format(v) end
  if t ~= "table" then return tostring(v) end
  local max, others = 0, {}
  for k in pairs(v) do
    if type(k) == "number" and k >= 1 and k % 1 == 0 then
      if k > max then max = k end
    else
      others[#others + 1] = canon(k)
    end
  end
  local parts = {}
  for i = 1, max do parts[i] = v[i] == nil and "nil" or canon(v[i]) end
  sort(others)
  for _, k in ipairs(others) do parts[#parts + 1] = k end
  return "[" .. concat(parts, ",") .. "]"
end
M.canon = canon

-- A sorted copy of a batch's elements (the input is left alone).
function M.sorted(elements)
  local keyed = {}
  for i = 1, #elements do keyed[i] = { canon(elements[i]), elements[i] } end
  sort(keyed, function(x, y) return x[1] < y[1] end)
  local out = {}
  for i = 1, #keyed do out[i] = keyed[i][2] end
  return out
end

-- Every batch of a list of batches, sorted.
function M.sorted_batches(batches)
  local out = {}
  for i = 1, #batches do out[i] = M.sorted(batches[i]) end
  return out
end

-- Asserts that two lists of batches hold the same elements batch by batch,
-- in any order within a batch (Spark's useSet = true, but counting
-- duplicates too).
function M.same_multisets(expected, actual)
  assert.same(M.sorted_batches(expected), M.sorted_batches(actual))
end

return M
