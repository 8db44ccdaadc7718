-- User functions stuck in loops wherever a keyed segment runs them, for
-- stage_timeout with several workers: the map "parse" on the line "stuck"
-- (put it late in a batch: the last worker's share), update_state_by_key
-- "totals" on the key --set key=K (the worker owning K's partition runs
-- it). The loops are interpreted (the debug hook interrupts them), or
-- compiled with --set loop=jit (only a restart that skips the record gets
-- past). Lines are keys; counts per key. --set input=PATH, key=K,
-- workers=N; dealt=1: the lines are read by another stage too, so worker
-- 0 deals them to the workers (else each reads its share of the batch).
-- --set into=group|window|join|mws: "parse" into a group_by_key, a
-- window, a join (its other side reads --set right=PATH, one line a key)
-- or a map_with_state instead of "totals"; per batch with output, the
-- number of its elements goes to stdout. The line "spin" is the key k1
-- with the value -1, on which the window's reducer and map_with_state's
-- function spin.
local sr = require "streamrun"
local job = sr.job { name = "stuck_worker", batch = "100ms", stage_timeout = "300ms",
                     workers = sr.param("workers", 2), max_batch_records = 100000 }

local function spin()
  local x = 0
  while true do x = x + 1 end
end
if sr.param("loop", "interp") ~= "jit" then jit.off(spin) end

local bad = sr.param("key", "none")
local lines = job:text_file(sr.param("input", "input.txt"), { name = "lines" })
if sr.param("dealt", "0") == "1" then lines:count():foreach_batch(function() end) end
local pairs_ = lines:map(function(l)
  if l == "stuck" then spin() end
  if l == "spin" then return "k1", -1 end
  return l, 1
end, { name = "parse" })
local into, out = sr.param("into", "state"), nil
if into == "state" then
  out = pairs_:update_state_by_key(function(values, total, key)
    if key == bad and total == nil then spin() end
    return (total or 0) + #values
  end, { name = "totals" })
elseif into == "group" then
  out = pairs_:group_by_key({ name = "grouped" })
elseif into == "window" then
  out = pairs_:reduce_by_key_and_window(function(a, b)
    if a == -1 or b == -1 then spin() end
    return a + b
  end, "1s", "100ms", { name = "counts" })
elseif into == "mws" then
  out = pairs_:map_with_state(sr.state_spec(function(k, v, st)
    if v == -1 then spin() end
    st:update((st:exists() and st:get() or 0) + v)
    return k, st:get()
  end):name("counts"))
elseif into == "join" then
  local right = job:text_file(sr.param("right", "right.txt"), { name = "right" })
    :map(function(l) return l, 2 end, { name = "tag" })
  out = pairs_:join(right, { name = "joined" })
else
  error("into: state, group, window, join or mws, not " .. into)
end
out:foreach_batch(function(elements) if into ~= "state" and #elements > 0 then print(#elements) end end)
return job
