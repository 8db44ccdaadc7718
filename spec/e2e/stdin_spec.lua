-- streamrun run on stdin: pprint output batch by batch, exit at end of input.
local proc = require "helpers.proc"
local e2e = require "helpers.e2e"

describe("e2e stdin", function()
  after_each(function() proc.cleanup() end)

  it("prints the lines piped in, in Spark's pprint format, and exits 0 when stdin ends", function()
    local p = e2e.start("stdin_print")
    p:write("alpha\nbeta\n")
    e2e.wait_elements(p, { "alpha", "beta" })
    p:write("gamma\r\ndelta") -- \r\n is stripped; the last line needs no newline
    p:close_stdin()
    assert.equal(0, p:wait(5))

    assert.same({ "alpha", "beta", "gamma", "delta" }, e2e.elements(p.stdout))
    local batches = e2e.batches(p.stdout)
    assert.is_true(#batches >= 2, "one batch before and one after the second write")
    -- Batch times are wall-clock ms on the 100 ms grid, one interval apart.
    local now_ms = os.time() * 1000
    for i, b in ipairs(batches) do
      assert.equal(0, b.time % 100)
      assert.is_true(math.abs(b.time - now_ms) < 60000, "time is the wall clock in ms: " .. b.time)
      if i > 1 then assert.equal(100, b.time - batches[i - 1].time) end
    end
    -- The exact block of the batch that got alpha and beta (one read, one batch).
    local t
    for _, b in ipairs(batches) do if b.elements[1] == "alpha" then t = b.time end end
    assert.truthy(t, "a batch starts with alpha")
    local block = e2e.DASHES .. "\nTime: " .. t .. " ms\n" .. e2e.DASHES .. "\nalpha\nbeta\n\n"
    assert.truthy(p.stdout:find(block, 1, true), "pprint block:\n" .. block .. "\nin:\n" .. p.stdout)
    -- Status on stderr, not stdout, and a final summary.
    assert.truthy(p.stderr:find("streamrun: finished: %d+ batches, 4 records, 0 dead letters"))
  end)
end)
