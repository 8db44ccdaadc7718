-- JSON filter baseline for `make bench`: what jobs/json_filter.lua does,
-- as a plain LuaJIT + lua-cjson script: JSON events on stdin, purchases of
-- at least MIN kept, projected to {user, amount}, written as JSON lines.
--   luajit spec/bench/json_baseline.lua OUT [MIN] < events.jsonl
local cjson = require "cjson.safe"
local decode, encode = cjson.decode, cjson.encode

local out = assert(io.open(assert(arg[1], "usage: json_baseline.lua OUT [MIN]"), "wb"))
local min_amount = tonumber(arg[2]) or 50

for line in io.stdin:lines() do
  local e = decode(line)
  if type(e) == "table" and e.action == "purchase" and type(e.amount) == "number"
     and e.amount >= min_amount then
    out:write(encode({ user = e.user, amount = e.amount }), "\n")
  end
end
out:close()
