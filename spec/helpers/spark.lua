-- spec helper: Spark's TestSuiteBase in streamrun terms. An operation is
-- applied to one (or two) queue sources fed one array per batch, exactly as
-- TestInputStream feeds batch k the k-th Seq; the operation's output is
-- captured batch by batch through the test driver, on its virtual clock
-- (batch k at k * 1000 ms, as with Spark's ManualClock).
local sr = require "streamrun"
local testing = require "streamrun.testing"

local M = {}

-- {a, a+1, ..., b}: Scala's `a to b`.
function M.range(a, b)
  local out = {}
  for x = a, b do out[#out + 1] = x end
  return out
end

local function collect(build, nbatches)
  local d = testing.driver(function()
    local job = sr.job { name = "spark", batch = "1s" }
    build(job):foreach_batch(function() end, { name = "output" })
    return job
  end)
  d:tick(nbatches)
  return d:outputs("output"), d
end

-- testOperation(input, operation, expected): runs nbatches batches (Spark
-- runs as many as there are expected outputs); returns the output of every
-- batch ({k, v} for pairs) and the driver.
function M.run(input, operation, nbatches)
  return collect(function(job)
    return operation(job:queue(input, { name = "input" }))
  end, nbatches or #input)
end

-- The two-input form, for join, cogroup and the like.
function M.run2(input1, input2, operation, nbatches)
  return collect(function(job)
    return operation(job:queue(input1, { name = "input1" }), job:queue(input2, { name = "input2" }))
  end, nbatches or #input1)
end

return M
