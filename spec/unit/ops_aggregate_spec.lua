-- Per-batch aggregations (count, count_by_value, reduce, reduce_by_key,
-- group_by_key) against the cases of Spark's BasicOperationsSuite, with
-- its inputs and expected outputs, batch by batch.
--
-- Differences on purpose: Spark's keyed results come in hash-partition
-- order and its suite compares them as sets (useSet = true); we compare
-- them as multisets and, separately, check streamrun's own promise: keys
-- in the order of their first appearance in the batch. Spark's counts are
-- Longs, ours Lua numbers; a grouped value is an array, not an Iterable.
local spark = require "helpers.spark"
local compare = require "helpers.compare"
local sr = require "streamrun"

local range = spark.range

local function pair_of(x) return x, 1 end
local function add(a, b) return a + b end

describe("aggregations (Spark BasicOperationsSuite)", function()
  it("count (BasicOperationsSuite)", function()
    -- Seq(Seq(), 1 to 1, 1 to 2, 1 to 3, 1 to 4) => 0, 1, 2, 3, 4: an
    -- empty batch still counts 0.
    local out = spark.run({ {}, range(1, 1), range(1, 2), range(1, 3), range(1, 4) }, function(s)
      return s:count()
    end)
    assert.same({ { 0 }, { 1 }, { 2 }, { 3 }, { 4 } }, out)
  end)

  it("countByValue (BasicOperationsSuite)", function()
    local out = spark.run({ range(1, 1), { 1, 1, 1 }, range(1, 2), { 1, 1, 2, 2 } }, function(s)
      return s:count_by_value()
    end)
    compare.same_multisets({
      { { 1, 1 } },
      { { 1, 3 } },
      { { 1, 1 }, { 2, 1 } },
      { { 2, 2 }, { 1, 2 } },
    }, out)
  end)

  it("reduce (BasicOperationsSuite)", function()
    local out = spark.run({ range(1, 4), range(5, 8), range(9, 12) }, function(s)
      return s:reduce(add)
    end)
    assert.same({ { 10 }, { 26 }, { 42 } }, out)
  end)

  it("reduceByKey (BasicOperationsSuite)", function()
    -- s.map(x => (x, 1)).reduceByKey(_ + _), useSet
    local out = spark.run({ { "a", "a", "b" }, { "", "" }, {} }, function(s)
      return s:map(pair_of):reduce_by_key(add)
    end)
    compare.same_multisets({ { { "a", 2 }, { "b", 1 } }, { { "", 2 } }, {} }, out)
  end)

  it("groupByKey (BasicOperationsSuite)", function()
    -- s.map(x => (x, 1)).groupByKey().mapValues(_.toSeq), useSet
    local out = spark.run({ { "a", "a", "b" }, { "", "" }, {} }, function(s)
      return s:map(pair_of):group_by_key()
    end)
    compare.same_multisets({ { { "a", { 1, 1 } }, { "b", { 1 } } }, { { "", { 1, 1 } } }, {} }, out)
  end)

  it("reduceByKey with the built-in sr.add gives what the same function written in Lua gives", function()
    local input = { { "x", "y", "x", "x" }, { "y" } }
    local native = spark.run(input, function(s) return s:map(pair_of):reduce_by_key(sr.add) end)
    local plain = spark.run(input, function(s) return s:map(pair_of):reduce_by_key(add) end)
    assert.same({ { { "x", 3 }, { "y", 1 } }, { { "y", 1 } } }, native)
    assert.same(native, plain)
  end)

  it("sr.min and sr.max reduce per key", function()
    local input = { { 5, 3, 9, 4, 7 } }
    local parity = function(x) return x % 2 == 0 and "even" or "odd", x end
    local mins = spark.run(input, function(s) return s:map(parity):reduce_by_key(sr.min) end)
    local maxs = spark.run(input, function(s) return s:map(parity):reduce_by_key(sr.max) end)
    assert.same({ { { "odd", 3 }, { "even", 4 } } }, mins)
    assert.same({ { { "odd", 9 }, { "even", 4 } } }, maxs)
  end)

  it("emits keyed aggregations in the order of the keys' first appearance", function()
    local input = { { "b", "a", "c", "a", "b", "b" } }
    local reduced = spark.run(input, function(s) return s:map(pair_of):reduce_by_key(add) end)
    local grouped = spark.run(input, function(s)
      return s:map(function(w) return w, w:upper() end):group_by_key()
    end)
    local counted = spark.run(input, function(s) return s:count_by_value() end)
    assert.same({ { { "b", 3 }, { "a", 2 }, { "c", 1 } } }, reduced)
    assert.same({ { { "b", { "B", "B", "B" } }, { "a", { "A", "A" } }, { "c", { "C" } } } }, grouped)
    assert.same({ { { "b", 3 }, { "a", 2 }, { "c", 1 } } }, counted)
  end)

  it("group_by_key keeps each key's values in arrival order", function()
    local out = spark.run({ { 1, 2, 3, 4, 5, 6, 7 } }, function(s)
      return s:map(function(x) return x % 3, x end):group_by_key()
    end)
    assert.same({ { { 1, { 1, 4, 7 } }, { 2, { 2, 5 } }, { 0, { 3, 6 } } } }, out)
  end)

  it("reduce gives nothing for an empty batch, as Spark's reduce (a reduceByKey underneath) does", function()
    local out = spark.run({ { 1, 2 }, {}, { 3 } }, function(s) return s:reduce(add) end)
    assert.same({ { 3 }, {}, { 3 } }, out)
  end)

  it("reduce over a pair stream gives a pair", function()
    local out = spark.run({ { "a", "bb", "ccc" } }, function(s)
      return s:map(function(w) return w, #w end):reduce(function(x, y)
        return { x[1] .. y[1], x[2] + y[2] }
      end)
    end)
    assert.same({ { { "abbccc", 6 } } }, out)
  end)

  it("count_by_value counts pairs and tables by value", function()
    local out = spark.run({ { "a", "b", "a" } }, function(s)
      return s:map(function(w) return w, 1 end):count_by_value()
    end)
    assert.same({ { { { "a", 1 }, 2 }, { { "b", 1 }, 1 } } }, out)
    local tables = spark.run({ { { 1, 2 }, { 1, 2 }, { 2 } } }, function(s) return s:count_by_value() end)
    assert.same({ { { { 1, 2 }, 2 }, { { 2 }, 1 } } }, tables)
  end)

  it("count_by_value keeps apart values that JSON output would write alike", function()
    local inf, nan = math.huge, 0 / 0
    local out = spark.run({ { { "k", inf }, { "k", -inf }, { "k", "\255" }, { "k", "\254" }, { "k", inf },
                              { "k", 0.1 + 0.2 }, { "k", 0.3 } } }, function(s)
      return s:map(function(p) return p[1], p[2] end):count_by_value()
    end)
    assert.same({ { { { "k", inf }, 2 }, { { "k", -inf }, 1 }, { { "k", "\255" }, 1 }, { { "k", "\254" }, 1 },
                    { { "k", 0.1 + 0.2 }, 1 }, { { "k", 0.3 }, 1 } } }, out)
    local nans = spark.run({ { { nan }, { nan } } }, function(s) return s:count_by_value() end)
    assert.equal(1, #nans[1])
    assert.equal(2, nans[1][1][2])
    assert.is_true(nans[1][1][1][1] ~= nans[1][1][1][1], "the element is NaN again")
  end)
end)
