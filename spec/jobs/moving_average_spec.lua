-- jobs/moving_average.lua through the test driver: per-sensor averages over
-- the last 30 s, every 10 s.
local testing = require "streamrun.testing"
local cjson = require "cjson"

local function reading(sensor, value) return cjson.encode { sensor = sensor, value = value } end

local function by_sensor(list)
  local t = {}
  for _, p in ipairs(list) do t[p[1]] = p[2] end
  return t
end

describe("jobs/moving_average.lua", function()
  it("averages each sensor's readings of the last 30 s every 10 s", function()
    local d = testing.driver("jobs/moving_average.lua")
    d:push("readings", { reading("t1", 20), reading("t2", 10), reading("t1", 22) })
    d:advance("10s")                                           -- t = 10 s
    assert.same({ t1 = 21, t2 = 10 }, by_sensor(d:outputs("averages")[10]))
    d:push("readings", { reading("t1", 30) })
    d:advance("10s")                                           -- t = 20 s
    assert.same({ t1 = 24, t2 = 10 }, by_sensor(d:outputs("averages")[20]))
    d:advance("20s")                                           -- t = 40 s: window (10, 40]
    assert.same({ t1 = 30 }, by_sensor(d:outputs("averages")[40]))
    d:advance("10s")                                           -- t = 50 s: window (20, 50]
    assert.same({}, d:outputs("averages")[50])
  end)

  it("only produces output every 10 s and skips bad readings", function()
    local d = testing.driver("jobs/moving_average.lua")
    d:push("readings", { reading("t1", 1), '{"sensor":"t1","value":"hot"}', '{"value":3}' })
    d:tick(9)
    for t = 1, 9 do assert.same({}, d:outputs("averages")[t]) end
    assert.same({ { "t1", 1 } }, d:tick().averages)
  end)
end)
