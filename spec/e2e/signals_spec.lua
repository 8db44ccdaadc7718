-- SIGTERM: the batch in progress finishes, then the job exits 0.
local proc = require "helpers.proc"
local e2e = require "helpers.e2e"

describe("e2e SIGTERM", function()
  after_each(function() proc.cleanup() end)

  it("processes the lines of the batch being collected, then exits 0", function()
    local p = e2e.start("stdin_print")
    e2e.wait_running(p)
    p:write("x1\nx2\nx3\n") -- stdin stays open: only the signal ends the job
    p:kill("TERM")
    assert.equal(0, p:wait(5))
    assert.same({ "x1", "x2", "x3" }, e2e.elements(p.stdout))
    assert.truthy(p.stderr:find("finished: %d+ batches, 3 records"), p.stderr)
  end)

  it("a text_file on a pipe fed a line at a time exits 0, without waiting for a batch the pipe may never fill",
    function()
    local fifo = proc.tmpdir() .. "/lines.fifo"
    assert.equal(0, proc.run({ "mkfifo", fifo }))
    -- A writer that keeps the pipe open, a line every 100 ms (a log being
    -- followed): far from a full batch.
    local writer = proc.spawn({ "sh", "-c", 'exec 3>"$1"; i=0; while :; do i=$((i+1)); echo "p$i" >&3; sleep 0.1; done',
                                "sh", fifo })
    local p = e2e.start("text_print", { input = fifo })
    p:wait_stderr("workers:", 10) -- (its batches wait to be full: no status line before)
    p:kill("TERM")
    local code = p:wait(5)
    writer:kill("KILL")
    assert.equal(0, code, p:describe())
    for i, line in ipairs(e2e.elements(p.stdout)) do assert.equal("p" .. i, line) end
  end)

  it("lets a batch being processed finish and print, then exits 0", function()
    local p = e2e.start("slow_stage", { busy_ms = 400 })
    e2e.wait_running(p)
    p:write("before\nslow\n")
    p:wait_stderr("slow stage: started")
    p:kill("TERM")
    assert.equal(0, p:wait(5))
    local elements = e2e.elements(p.stdout)
    assert.same({ "before", "slow" }, elements)
  end)
end)
