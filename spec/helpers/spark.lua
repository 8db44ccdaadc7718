-- spec helper: Spark's TestSuiteBase in streamrun terms. An operation is
-- applied to one (or two) queue sources fed one array per batch, exactly as
-- TestInputStream feeds batch k the k-th Seq; the operation's output is
-- captured batch by batch through the test driver, on its virtual clock
-- (batch k at k * 1000 ms, as with Spark's ManualClock).
local sr = require "streamrun"
local jobscript = require "helpers.jobscript"
local testing = require "streamrun.testing"

local M = {}

-- {a, a+1, ..., b}: Scala's `a to b`.
function M.range(a, b)
  local out = {}
  for x = a, b do out[#out + 1] = x end
  return out
end

-- opts: split (false when the job is not expected to run on several
-- workers; see helpers.jobscript), in_process (true to build the job by a
-- function, on one worker: for an operation that records its calls in the
-- spec's tables).
local function collect(build, nbatches, opts)
  local function builder()
    local job = sr.job { name = "spark", batch = "1s" }
    build(job):foreach_batch(function() end, { name = "output" })
    return job
  end
  local d
  if opts and opts.in_process then
    d = testing.driver(builder)
  else
    d = jobscript.driver(builder, opts)
  end
  d:tick(nbatches)
  return d:outputs("output"), d
end

-- testOperation(input, operation, expected): runs nbatches batches (Spark
-- runs as many as there are expected outputs); returns the output of every
-- batch ({k, v} for pairs) and the driver. The job is a script (so it runs
-- on every worker when the specs run with several): operation's upvalues
-- must be what helpers.jobscript can write.
function M.run(input, operation, nbatches, opts)
  return collect(function(job)
    return operation(job:queue(input, { name = "input" }))
  end, nbatches or #input, opts)
end

-- The two-input form, for join, cogroup and the like.
function M.run2(input1, input2, operation, nbatches, opts)
  return collect(function(job)
    return operation(job:queue(input1, { name = "input1" }), job:queue(input2, { name = "input2" }))
  end, nbatches or #input1, opts)
end

return M
