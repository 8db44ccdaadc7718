-- jobs/wordcount.lua through the test driver.
local testing = require "streamrun.testing"

local function sorted(pairs_list)
  table.sort(pairs_list, function(x, y) return x[1] < y[1] end)
  return pairs_list
end

describe("jobs/wordcount.lua", function()
  it("keeps running totals across batches in state (socket source replaced by the driver)", function()
    local d = testing.driver("jobs/wordcount.lua", { params = { source = "socket" } })
    d:push("lines", { "to be or not to be", "that is" })
    local out = d:tick()
    assert.same({ { "be", 2 }, { "is", 1 }, { "not", 1 }, { "or", 1 }, { "that", 1 }, { "to", 2 } },
      sorted(out.counts))
    d:push("lines", { "be  be\tbe" })
    out = d:tick()
    assert.same({ { "be", 5 }, { "is", 1 }, { "not", 1 }, { "or", 1 }, { "that", 1 }, { "to", 2 } },
      sorted(out.counts))
    -- An empty batch still lists every total, as updateStateByKey does.
    assert.equal(6, #d:tick().counts)
    assert.equal(5, d:state("totals", "be"))
    assert.same({ be = 5, is = 1, ["not"] = 1, ["or"] = 1, that = 1, to = 2 }, d:state("totals"))
  end)

  it("counts each batch on its own with mode=batch", function()
    local d = testing.driver("jobs/wordcount.lua", { params = { source = "socket", mode = "batch" } })
    d:push("lines", { "a b", "a" })
    assert.same({ { "a", 2 }, { "b", 1 } }, sorted(d:tick().counts))
    d:push("lines", { "b" })
    assert.same({ { "b", 1 } }, d:tick().counts)
    assert.same({}, d:tick().counts)
  end)

  it("runs the built-in generator deterministically", function()
    local params = { rate = "4", mode = "batch" }
    local d = testing.driver("jobs/wordcount.lua", { generators = true, params = params })
    local first = d:tick().counts
    local total = 0
    for _, p in ipairs(first) do total = total + p[2] end
    -- 4 lines per 1 s batch; line i has 3 + i % 5 words: i = 1..4 -> 4+5+6+7
    assert.equal(22, total)
    local again = testing.driver("jobs/wordcount.lua", { generators = true, params = params })
    assert.same(first, again:tick().counts)
  end)

  it("rejects an unknown source with file:line", function()
    local ok, err = pcall(testing.driver, "jobs/wordcount.lua", { params = { source = "carrier-pigeon" } })
    assert.is_false(ok)
    assert.matches("jobs/wordcount.lua:%d+: unknown source 'carrier%-pigeon'", err)
  end)
end)
