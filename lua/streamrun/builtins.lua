-- streamrun.builtins: the helper functions of SPEC section 6 (sr.words,
-- sr.sum, sr.add, sr.min, sr.max). The stage compiler recognizes them by
-- identity and runs specialized loops instead of calling them per record.
local type, byte, sub = type, string.byte, string.sub

local M = {}

-- The whitespace-separated words of s, as an array.
function M.words(s)
  local out, n = {}, 0
  local i, len = 1, #s
  while i <= len do
    local c = byte(s, i)
    if c == 32 or (c >= 9 and c <= 13) then
      i = i + 1
    else
      local j = i + 1
      while j <= len do
        c = byte(s, j)
        if c == 32 or (c >= 9 and c <= 13) then break end
        j = j + 1
      end
      n = n + 1
      out[n] = sub(s, i, j - 1)
      i = j + 1
    end
  end
  return out
end

function M.add(a, b) return a + b end

-- sr.sum(array) sums an array; sr.sum(a, b, ...) sums its arguments, so it
-- also serves as a reducer.
function M.sum(x, ...)
  local total = 0
  if type(x) == "table" then
    for i = 1, #x do total = total + x[i] end
    return total
  end
  total = x or 0
  for i = 1, select("#", ...) do total = total + select(i, ...) end
  return total
end

function M.min(a, b) if b < a then return b end return a end
function M.max(a, b) if b > a then return b end return a end

-- The arithmetic built-ins usable as reducers: f(acc, v) for numbers.
M.reducers = { [M.add] = "add", [M.sum] = "add", [M.min] = "min", [M.max] = "max" }

return M
