-- Baseline of spec/bench/wc_forms_job.lua --set form=lower for `make bench`:
-- the words of a file lowercased and counted, as plain LuaJIT.
--   luajit spec/bench/wc_lower_baseline.lua FILE   -> prints "TOTAL DISTINCT"
local lower = string.lower
local counts = {}
for line in io.lines(arg[1]) do
  for w in line:gmatch("%S+") do
    local k = lower(w)
    counts[k] = (counts[k] or 0) + 1
  end
end
local total, distinct = 0, 0
for _, n in pairs(counts) do
  total, distinct = total + n, distinct + 1
end
print(total, distinct)
