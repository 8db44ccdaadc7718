-- Joins and cogroup of two keyed streams, batch by batch, against the
-- cases of Spark's BasicOperationsSuite with its inputs and expected
-- outputs.
--
-- Differences on purpose: a joined value (v, w) is the table {v, w}; an
-- outer join's Option is the value or nil, so Spark's (1, None) is {1, nil}
-- and (None, "x") is {nil, "x"}; a cogroup value (Iterable, Iterable) is
-- {{vs...}, {ws...}}. Spark compares these cases as sets (hash-partition
-- order); we compare them as multisets, and check our own order (left
-- side's keys first, in order of first appearance) separately.
local spark = require "helpers.spark"
local compare = require "helpers.compare"

local left_in = { { "a", "b" }, { "a", "" }, { "" }, {} }
local right_in = { { "a", "b" }, { "b", "" }, {}, { "" } }

local function ones(s) return s:map(function(x) return x, 1 end) end
local function xs(s) return s:map(function(x) return x, "x" end) end

local function run_join(op, l, r)
  return spark.run2(l or left_in, r or right_in, function(s1, s2)
    local left = ones(s1)
    return left[op](left, xs(s2))
  end)
end

describe("joins (Spark BasicOperationsSuite)", function()
  it("join (BasicOperationsSuite)", function()
    compare.same_multisets({
      { { "a", { 1, "x" } }, { "b", { 1, "x" } } },
      { { "", { 1, "x" } } },
      {},
      {},
    }, run_join("join"))
  end)

  it("leftOuterJoin (BasicOperationsSuite)", function()
    compare.same_multisets({
      { { "a", { 1, "x" } }, { "b", { 1, "x" } } },
      { { "", { 1, "x" } }, { "a", { 1, nil } } },
      { { "", { 1, nil } } },
      {},
    }, run_join("left_outer_join"))
  end)

  it("rightOuterJoin (BasicOperationsSuite)", function()
    compare.same_multisets({
      { { "a", { 1, "x" } }, { "b", { 1, "x" } } },
      { { "", { 1, "x" } }, { "b", { nil, "x" } } },
      {},
      { { "", { nil, "x" } } },
    }, run_join("right_outer_join"))
  end)

  it("fullOuterJoin (BasicOperationsSuite)", function()
    compare.same_multisets({
      { { "a", { 1, "x" } }, { "b", { 1, "x" } } },
      { { "", { 1, "x" } }, { "a", { 1, nil } }, { "b", { nil, "x" } } },
      { { "", { 1, nil } } },
      { { "", { nil, "x" } } },
    }, run_join("full_outer_join"))
  end)

  it("cogroup (BasicOperationsSuite)", function()
    local out = spark.run2(
      { { "a", "a", "b" }, { "a", "" }, { "" }, {} },
      { { "a", "a", "b" }, { "b", "" }, {}, {} },
      function(s1, s2) return ones(s1):cogroup(xs(s2)) end)
    compare.same_multisets({
      { { "a", { { 1, 1 }, { "x", "x" } } }, { "b", { { 1 }, { "x" } } } },
      { { "a", { { 1 }, {} } }, { "b", { {}, { "x" } } }, { "", { { 1 }, { "x" } } } },
      { { "", { { 1 }, {} } } },
      {},
    }, out)
  end)

  it("join pairs every value of a key on the left with every value on the right", function()
    local out = spark.run2({ { "k", "k", "j" } }, { { "k", "k", "k" } }, function(s1, s2)
      local n = 0
      return s1:map(function(x) n = n + 1; return x, n end)
        :join(s2:map(function(x) n = n + 1; return x, "w" .. n end))
    end, nil, { in_process = true }) -- (n counts every record: one VM's, so one worker)
    compare.same_multisets({ {
      { "k", { 1, "w4" } }, { "k", { 1, "w5" } }, { "k", { 1, "w6" } },
      { "k", { 2, "w4" } }, { "k", { 2, "w5" } }, { "k", { 2, "w6" } },
    } }, out)
  end)

  it("lists the left side's keys first, then keys only on the right, in order of first appearance", function()
    local l, r = { { "c", "a", "b" } }, { { "d", "b", "a", "e" } }
    assert.same({ { { "c", { 1, nil } }, { "a", { 1, "x" } }, { "b", { 1, "x" } },
      { "d", { nil, "x" } }, { "e", { nil, "x" } } } }, run_join("full_outer_join", l, r))
    assert.same({ { { "a", { 1, "x" } }, { "b", { 1, "x" } } } }, run_join("join", l, r))
    -- right_outer_join follows the right side's order
    assert.same({ { { "d", { nil, "x" } }, { "b", { 1, "x" } }, { "a", { 1, "x" } },
      { "e", { nil, "x" } } } }, run_join("right_outer_join", l, r))
    assert.same({ { { "c", { { 1 }, {} } }, { "a", { { 1 }, { "x" } } }, { "b", { { 1 }, { "x" } } },
      { "d", { {}, { "x" } } }, { "e", { {}, { "x" } } } } }, run_join("cogroup", l, r))
  end)
end)
