-- jobs/json_filter.lua through the test driver.
local testing = require "streamrun.testing"

describe("jobs/json_filter.lua", function()
  it("keeps purchases of at least min and projects user and amount", function()
    local d = testing.driver("jobs/json_filter.lua", { params = { min = "50" } })
    d:push("events", {
      '{"user":"ann","action":"purchase","amount":42.5}',
      '{"user":"bob","action":"purchase","amount":50}',
      '{"user":"cid","action":"view","amount":500}',
      '{"user":"dee","action":"purchase","amount":"lots"}',
      '{"user":"eve","action":"purchase","amount":99.5,"extra":true}',
    })
    local out = d:tick()
    assert.same({ { user = "bob", amount = 50 }, { user = "eve", amount = 99.5 } }, out.purchases)
  end)

  it("sends invalid JSON to the dead-letter output and goes on", function()
    local d = testing.driver("jobs/json_filter.lua")
    d:push("events", { '{"user":"ann","action":"purchase","amount":60}', '{"user": oops', "null",
                       '{"user":"bob","action":"purchase","amount":70}' })
    local out = d:tick()
    assert.same({ { user = "ann", amount = 60 }, { user = "bob", amount = 70 } }, out.purchases)
    assert.equal(2, #d.dead_letters)
    assert.equal("events", d.dead_letters[1].source)
    assert.equal(2, d.dead_letters[1].offset)
    assert.matches("^invalid JSON: ", d.dead_letters[1].reason)
    assert.equal('{"user": oops', d.dead_letters[1].record)
    assert.equal("JSON null is not an element", d.dead_letters[2].reason)
  end)
end)
