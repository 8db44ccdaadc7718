-- User code stuck in a compiled loop away from any one input record:
-- --set what=state: update_state_by_key's function, for the key "bad" in
-- the batch after its record (no new values); --set what=generator: a
-- generator's function at element 5. --set timeout=off turns
-- stage_timeout off.
local sr = require "streamrun"
local timeout = sr.param("timeout", "300ms")
local job = sr.job { name = "stuck_elsewhere", batch = "100ms", stage_timeout = timeout ~= "off" and timeout or false }

local function spin()
  local n = 0
  while true do n = n + 1 end
end

if sr.param("what", "state") == "generator" then
  job:generator(function(i)
    if i == 5 then
      io.stderr:write("stuck: started\n")
      spin()
    end
    return i
  end, { name = "numbers", rate = 100 }):print(100)
else
  job:stdin { name = "lines" }
     :map(function(l) return l, 1 end, { name = "pairs" })
     :update_state_by_key(function(values, total, key)
       if key == "bad" and #values == 0 then spin() end
       return (total or 0) + #values
     end, { name = "totals" })
     :print(100)
end
return job
