-- transform(fn(elements, time_ms) -> elements) against Spark's
-- BasicOperationsSuite, plus what our form of it promises: the function
-- sees the whole batch (pairs as {k, v}) and the batch time, and what it
-- returns on a keyed stream becomes pairs again.
--
-- Not reproduced: "transformWith" and "StreamingContext.transform" combine
-- two or three streams in one function, and streamrun's transform takes one
-- stream (SPEC section 6); the "input stream return None" cases need a
-- batch that does not exist, and here every batch exists (an empty one
-- still runs).
local spark = require "helpers.spark"
local sr = require "streamrun"
local testing = require "streamrun.testing"

local range = spark.range

local function map_all(elements, f)
  local out = {}
  for i = 1, #elements do out[i] = f(elements[i]) end
  return out
end

describe("transform (Spark BasicOperationsSuite)", function()
  it("transform (BasicOperationsSuite)", function()
    -- r.transform(rdd => rdd.map(_.toString))
    local out = spark.run({ range(1, 4), range(5, 8), range(9, 12) }, function(s)
      return s:transform(function(elements) return map_all(elements, tostring) end)
    end)
    assert.same({
      { "1", "2", "3", "4" },
      { "5", "6", "7", "8" },
      { "9", "10", "11", "12" },
    }, out)
  end)

  it("transform with NULL (BasicOperationsSuite)", function()
    -- Spark fails the job with a SparkException. With on_error = "fail"
    -- so do we; by default the batch's result is a dead letter instead.
    local function job(on_error)
      return function()
        local j = sr.job { name = "t", batch = "1s", on_error = on_error }
        j:queue({ range(1, 4) }, { name = "input" })
          :transform(function() return nil end, { name = "null_rdd" })
          :foreach_batch(function() end, { name = "output" })
        return j
      end
    end
    local d = testing.driver(job("fail"))
    local ok, err = pcall(d.tick, d)
    assert.is_false(ok)
    assert.matches("null_rdd", err, 1, true)
    assert.matches("must return an array of elements, got nil", err, 1, true)

    d = testing.driver(job(nil))
    assert.same({}, d:tick().output)
    assert.equal(1, #d.dead_letters)
    assert.equal("null_rdd", d.dead_letters[1].source)
    assert.matches("transform must return an array of elements, got nil", d.dead_letters[1].reason, 1, true)
  end)

  it("passes the batch time and the whole batch, pairs as {k, v}", function()
    local seen = {}
    local out = spark.run({ { "a", "bb" }, {}, { "c" } }, function(s)
      return s:map(function(w) return w, #w end):transform(function(elements, time_ms)
        seen[#seen + 1] = { time_ms, #elements }
        local out = {}
        for i = #elements, 1, -1 do out[#out + 1] = { elements[i][1] .. "!", elements[i][2] * time_ms } end
        return out
      end)
    end)
    assert.same({ { 1000, 2 }, { 2000, 0 }, { 3000, 1 } }, seen)
    assert.same({ { { "bb!", 2000 }, { "a!", 1000 } }, {}, { { "c!", 3000 } } }, out)
  end)

  it("gives a keyed stream that keyed operations accept", function()
    local out = spark.run({ { "a", "b", "a" } }, function(s)
      return s:map(function(w) return w, 1 end)
        :transform(function(elements)
          local doubled = {}
          for _, e in ipairs(elements) do
            doubled[#doubled + 1] = e
            doubled[#doubled + 1] = e
          end
          return doubled
        end)
        :reduce_by_key(function(x, y) return x + y end)
    end)
    assert.same({ { { "a", 4 }, { "b", 2 } } }, out)
  end)

  it("may change the batch's size and element type, as rdd => rdd.flatMap(...) may", function()
    local out = spark.run({ { 1, 2, 3 } }, function(s)
      return s:transform(function(elements)
        local out = {}
        for _, x in ipairs(elements) do
          if x ~= 2 then out[#out + 1] = { n = x } end
        end
        return out
      end)
    end)
    assert.same({ { { n = 1 }, { n = 3 } } }, out)
  end)

  it("may turn a stream of pairs into single elements (like rdd => rdd.map(_._1))", function()
    local out, d = spark.run({ { "a", "b" } }, function(s)
      return s:map(function(w) return w, 1 end):transform(function(elements)
        return map_all(elements, function(e) return e[1] end)
      end)
    end)
    assert.same({ { "a", "b" } }, out)
    assert.same({}, d.dead_letters)
  end)

  it("on a stream that is keyed for sure, needs pairs back unless told keyed = false", function()
    local function keys_only(elements) return map_all(elements, function(e) return e[1] end) end
    local out, d = spark.run({ { "a", "b" } }, function(s)
      return s:map(function(w) return w, 1 end):map_values(function(v) return v end)
        :transform(keys_only, { name = "keys" })
    end)
    assert.same({ {} }, out)
    assert.equal(1, #d.dead_letters)
    assert.equal("keys", d.dead_letters[1].source)
    assert.matches("must return {k, v} pairs; element 1 is not one", d.dead_letters[1].reason, 1, true)

    out, d = spark.run({ { "a", "b" } }, function(s)
      return s:map(function(w) return w, 1 end):map_values(function(v) return v end)
        :transform(keys_only, { keyed = false })
    end)
    assert.same({ { "a", "b" } }, out)
    assert.same({}, d.dead_letters)
  end)
end)
