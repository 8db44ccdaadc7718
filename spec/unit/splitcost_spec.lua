-- streamrun.splitcost: the model deciding whether a batch of a keyed
-- segment without state runs on worker 0 alone or splits across workers,
-- fed with given timings.
local splitcost = require "streamrun.splitcost"

describe("splitcost", function()
  -- A model past the runs that compile each way's traces (not counted).
  local function warmed(n)
    local c = splitcost.new(n)
    c:ran(true, 1000, 50)
    c:ran(false, 1000, 50)
    return c
  end

  it("runs the first small batches alone, the next split, then what the model says", function()
    local c = splitcost.new(2)
    assert.is_true(c:alone(1000))
    c:ran(true, 1000, 30) -- (compiling: not counted)
    assert.is_true(c:alone(1000))
    c:ran(true, 1000, 1.0) -- 1 us a record alone
    assert.is_false(c:alone(1000))
    c:ran(false, 1000, 30) -- (compiling)
    assert.is_nil(c.F)
    assert.is_false(c:alone(1000))
    c:ran(false, 1000, 2.0) -- split: 0.5 ms of records, 1.5 ms more
    assert.near(1.5, c.F, 1e-9)
    -- alone when a * n / 2 < F: n < 3000
    assert.is_true(c:alone(2999))
    assert.is_false(c:alone(3001))
    assert.is_false(c:alone(splitcost.MAX_ALONE + 1))
  end)

  it("splits every batch over MAX_ALONE records, learning nothing from them alone", function()
    local c = warmed(4)
    assert.is_false(c:alone(splitcost.MAX_ALONE + 1))
    c:ran(false, splitcost.MAX_ALONE + 1, 5) -- (no time per record yet: no F)
    assert.is_nil(c.F)
    assert.is_true(c:alone(0))
  end)

  it("weighs the time per record by records, so a tiny batch does not set it", function()
    local c = warmed(2)
    c:ran(true, 10000, 10) -- 1 us a record
    c:ran(true, 1, 0.05)   -- 50 us for one record: fixed costs
    assert.near(0.001, c:per_record(), 0.0001)
  end)

  it("goes the other way every EXPLORE-th small batch, so neither figure goes stale", function()
    local c = warmed(2)
    c:ran(true, 1000, 1.0)
    c:ran(false, 1000, 2.0)
    local other = 0
    for _ = 1, 3 * splitcost.EXPLORE do
      if not c:alone(100) then other = other + 1 end
    end
    assert.equal(3, other)
  end)

  it("follows a change in costs", function()
    local c = warmed(2)
    c:ran(true, 1000, 1.0)
    c:ran(false, 1000, 2.0)
    assert.is_true(c:alone(1000))
    -- The records grow costly (a slow user function): 100 us each alone.
    local runs = 0
    while c:alone(1000) do
      c:ran(true, 1000, 100)
      runs = runs + 1
    end
    assert.is_true(runs <= 10, runs)
    -- Splitting grows costly too: 10 ms more a batch.
    runs = 0
    while not c:alone(1000) do
      c:ran(false, 1000, 60)
      runs = runs + 1
    end
    assert.is_true(runs <= 20, runs)
  end)

  it("learns from a figure of 0: the cap does not hold it there", function()
    local c = warmed(2)
    c:ran(true, 1000, 1.0)
    c:ran(false, 1000, 0.2) -- split faster than its records alone: F = 0
    assert.equal(0, c.F)
    assert.is_false(c:alone(1000))
    for _ = 1, 20 do c:ran(false, 1000, 3.0) end
    assert.is_true(c.F > 2, c.F)
    assert.is_true(c:alone(1000))
  end)

  it("lets one run caught by a pause move neither figure far", function()
    local c = warmed(2)
    for _ = 1, 8 do c:ran(true, 1000, 1.0) end
    c:ran(false, 1000, 2.0)
    -- A second, for 1,000 records alone: counted as 4 times the usual.
    c:ran(true, 1000, 1000)
    assert.is_true(c:per_record() < 0.002, c:per_record())
    assert.is_true(c:alone(1000))
    -- A second, split.
    c:ran(false, 1000, 1000)
    assert.is_true(c.F < 1.5 * 1.5, c.F)
  end)
end)
