-- Baseline of spec/bench/avg_job.lua for `make bench`: per sensor the
-- running average of its readings, as a plain LuaJIT script; prints the
-- number of averages computed and their sum.
--   luajit spec/bench/avg_baseline.lua FILE   -> prints "N SUM"
local sums = {}
local n, total = 0, 0
for line in io.lines(arg[1]) do
  local sensor, value = line:match("^(%S+) (%S+)$")
  value = tonumber(value)
  local s = sums[sensor]
  if not s then
    s = { 0, 0 }
    sums[sensor] = s
  end
  s[1], s[2] = s[1] + value, s[2] + 1
  n, total = n + 1, total + s[1] / s[2]
end
io.write(("%d %.17g\n"):format(n, total))
