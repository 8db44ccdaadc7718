-- Word count baseline for `make bench`: plain LuaJIT as one would write it.
--   luajit spec/bench/wc_baseline.lua FILE   -> prints "TOTAL DISTINCT"
local counts = {}
for line in io.lines(arg[1]) do
  for w in line:gmatch("%S+") do
    counts[w] = (counts[w] or 0) + 1
  end
end
local total, distinct = 0, 0
for _, n in pairs(counts) do
  total, distinct = total + n, distinct + 1
end
print(total, distinct)
