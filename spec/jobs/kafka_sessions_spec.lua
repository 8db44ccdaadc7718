-- jobs/kafka_sessions.lua through the test driver: messages pushed as
-- { user, JSON value }; a session closes once, after the gap.
local testing = require "streamrun.testing"

describe("jobs/kafka_sessions.lua", function()
  it("emits each user's session once, after the gap, to print and to Kafka", function()
    local d = testing.driver("jobs/kafka_sessions.lua", { params = { gap = "3s" } })
    d:push("clicks", { { "ann", '{"page":"/a","ts":10}' }, { "bob", '{"page":"/a","ts":10.5}' },
                       { "ann", '{"page":"/b","ts":12}' } })
    d:tick()                                    -- t = 1 s
    d:push("clicks", { { "ann", '{"page":"/c","ts":13}' } })
    d:tick()                                    -- t = 2 s
    d:tick(3)                                   -- t = 5 s: bob idle 4 s
    local bob = d:outputs("closed_sessions")[5]
    assert.same({ { "bob", { pages = 1, duration_s = 0, first_ts = 10.5, last_ts = 10.5 } } }, bob)
    d:tick()                                    -- t = 6 s: ann idle 4 s
    local out = d:outputs("closed_sessions")[6]
    assert.same({ { "ann", { pages = 3, duration_s = 3, first_ts = 10, last_ts = 13 } } }, out)
    assert.same(out, d:outputs("sessions_out")[6])
    assert.same({}, d:state("open_sessions"))
  end)

  it("sends a message without a JSON value to dead letters", function()
    local d = testing.driver("jobs/kafka_sessions.lua")
    d:push("clicks", { { "ann", "not json" }, { "bob", '{"page":"/a","ts":1}' } })
    d:tick()
    assert.equal(1, #d.dead_letters)
    assert.matches("invalid JSON", d.dead_letters[1].reason)
  end)
end)
