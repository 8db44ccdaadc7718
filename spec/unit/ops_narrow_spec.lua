-- Narrow operations (map, flat_map, filter, map_values, flat_map_values,
-- key_by, union) against Spark's own expectations: the cases of
-- streaming/src/test/scala/org/apache/spark/streaming/BasicOperationsSuite.scala
-- with the same inputs and expected outputs, batch by batch.
--
-- Where streamrun differs on purpose: a Scala tuple (k, v) is a pair here,
-- captured by the driver as {k, v}; Spark compares useSet = true cases as
-- sets because its order follows hash partitions, we compare them as
-- multisets (compare.same_multisets). Cases Spark compares as lists are
-- compared in order: narrow operations keep the batch's order, and union is
-- the left batch then the right, as Spark's UnionRDD lists its partitions.
local spark = require "helpers.spark"
local compare = require "helpers.compare"

local range = spark.range

local function pair_of(x) return x, 1 end
local function add(a, b) return a + b end

describe("narrow operations (Spark BasicOperationsSuite)", function()
  it("map (BasicOperationsSuite)", function()
    -- r.map(_.toString)
    local out = spark.run({ range(1, 4), range(5, 8), range(9, 12) }, function(s)
      return s:map(tostring)
    end)
    assert.same({
      { "1", "2", "3", "4" },
      { "5", "6", "7", "8" },
      { "9", "10", "11", "12" },
    }, out)
  end)

  it("flatMap (BasicOperationsSuite)", function()
    -- r.flatMap(x => Seq(x, x * 2))
    local input = { range(1, 4), range(5, 8), range(9, 12) }
    local out = spark.run(input, function(s)
      return s:flat_map(function(x) return { x, x * 2 } end)
    end)
    assert.same({
      { 1, 2, 2, 4, 3, 6, 4, 8 },
      { 5, 10, 6, 12, 7, 14, 8, 16 },
      { 9, 18, 10, 20, 11, 22, 12, 24 },
    }, out)
  end)

  it("filter (BasicOperationsSuite)", function()
    -- r.filter(x => x % 2 == 0)
    local out = spark.run({ range(1, 4), range(5, 8), range(9, 12) }, function(s)
      return s:filter(function(x) return x % 2 == 0 end)
    end)
    assert.same({ { 2, 4 }, { 6, 8 }, { 10, 12 } }, out)
  end)

  it("mapValues (BasicOperationsSuite)", function()
    -- s.map(x => (x, 1)).reduceByKey(_ + _).mapValues(_ + 10), useSet
    local out = spark.run({ { "a", "a", "b" }, { "", "" }, {} }, function(s)
      return s:map(pair_of):reduce_by_key(add):map_values(function(v) return v + 10 end)
    end)
    compare.same_multisets({
      { { "a", 12 }, { "b", 11 } },
      { { "", 12 } },
      {},
    }, out)
  end)

  it("flatMapValues (BasicOperationsSuite)", function()
    -- s.map(x => (x, 1)).reduceByKey(_ + _).flatMapValues(x => Seq(x, x + 10)), useSet
    local out = spark.run({ { "a", "a", "b" }, { "", "" }, {} }, function(s)
      return s:map(pair_of):reduce_by_key(add):flat_map_values(function(v) return { v, v + 10 } end)
    end)
    compare.same_multisets({
      { { "a", 2 }, { "a", 12 }, { "b", 1 }, { "b", 11 } },
      { { "", 2 }, { "", 12 } },
      {},
    }, out)
  end)

  it("union (BasicOperationsSuite)", function()
    -- s.union(s.map(_ + 4)): 1 to 8, 101 to 108, 201 to 208, in that order
    local out = spark.run({ range(1, 4), range(101, 104), range(201, 204) }, function(s)
      return s:union(s:map(function(x) return x + 4 end))
    end)
    assert.same({ range(1, 8), range(101, 108), range(201, 208) }, out)
  end)

  it("StreamingContext.union (BasicOperationsSuite)", function()
    -- ssc.union(Seq(s, s.map(_ + 4), s.map(_ + 8))): streamrun's union is
    -- binary, so a union of three streams is two unions; same output.
    local out = spark.run({ range(1, 4), range(101, 104), range(201, 204) }, function(s)
      return s:union(s:map(function(x) return x + 4 end)):union(s:map(function(x) return x + 8 end))
    end)
    assert.same({ range(1, 12), range(101, 112), range(201, 212) }, out)
  end)

  it("keeps mapValues and flatMapValues in the order of the keys' first appearance", function()
    local out = spark.run({ { "b", "a", "b", "c" } }, function(s)
      return s:map(pair_of):reduce_by_key(add):flat_map_values(function(v) return { v, -v } end)
    end)
    assert.same({ { { "b", 2 }, { "b", -2 }, { "a", 1 }, { "a", -1 }, { "c", 1 }, { "c", -1 } } }, out)
  end)

  -- keyBy is not in BasicOperationsSuite; Spark's RDD docs define it:
  -- "Creates tuples of the elements in this RDD by applying f": (f(x), x).
  it("keyBy (Spark RDD docs: parallelize(1, 2, 3).keyBy(x * x))", function()
    local out = spark.run({ { 1, 2, 3 } }, function(s)
      return s:key_by(function(x) return x * x end)
    end)
    assert.same({ { { 1, 1 }, { 4, 2 }, { 9, 3 } } }, out)
  end)

  it("keyBy then cogroup (Spark RDD docs: range(0, 3).keyBy(x * x).cogroup(zip(range(0, 5), range(0, 5))))", function()
    local out = spark.run2({ range(0, 2) }, { range(0, 4) }, function(x, y)
      return x:key_by(function(v) return v * v end):cogroup(y:map(function(v) return v, v end))
    end)
    -- Spark prints them sorted by key: [(0, [[0], [0]]), (1, [[1], [1]]),
    -- (2, [[], [2]]), (3, [[], [3]]), (4, [[2], [4]])]
    compare.same_multisets({ {
      { 0, { { 0 }, { 0 } } },
      { 1, { { 1 }, { 1 } } },
      { 2, { {}, { 2 } } },
      { 3, { {}, { 3 } } },
      { 4, { { 2 }, { 4 } } },
    } }, out)
  end)

  it("keyBy on a pair stream keeps the whole pair as the value, as Spark's keyBy on an RDD of tuples", function()
    local out = spark.run({ { "a", "bb" } }, function(s)
      return s:map(function(w) return w, #w end):key_by(function(k, v) return v * 10 end)
    end)
    assert.same({ { { 10, { "a", 1 } }, { 20, { "bb", 2 } } } }, out)
  end)
end)
