-- jobs/join.lua through the test driver.
local testing = require "streamrun.testing"

describe("jobs/join.lua", function()
  it("joins orders with their payments in the same batch and sums per user", function()
    local d = testing.driver("jobs/join.lua", { params = { source = "listen" } })
    d:push("orders", { '{"order":1,"user":"ann"}', '{"order":2,"user":"bob"}', '{"order":3,"user":"ann"}' })
    d:push("payments", { '{"order":3,"paid":10}', '{"order":1,"paid":2.5}', '{"order":9,"paid":1}' })
    local out = d:tick()
    assert.same({ { "ann", 12.5 } }, out.paid_by_user)
  end)

  it("does not join across batches (a per-batch join, as in Spark)", function()
    local d = testing.driver("jobs/join.lua", { params = { source = "listen" } })
    d:push("orders", { '{"order":1,"user":"ann"}' })
    assert.same({}, d:tick().paid_by_user)
    d:push("payments", { '{"order":1,"paid":5}' })
    assert.same({}, d:tick().paid_by_user)
  end)

  it("joins the built-in generators: every other order is paid", function()
    local d = testing.driver("jobs/join.lua", { generators = true })
    -- batch 1: orders 1..4 (users bob, cid, dee, ann), payments for orders 2 and 4
    local out = d:tick()
    table.sort(out.paid_by_user, function(x, y) return x[1] < y[1] end)
    assert.same({ { "ann", 6 }, { "cid", 3 } }, out.paid_by_user)
  end)
end)
