-- stage_timeout: a user function that never returns is interrupted, its
-- record goes to dead letters naming the stage, the job goes on; a restart
-- does not run into it again; SIGTERM ends a job stuck in user code.
local proc = require "helpers.proc"
local e2e = require "helpers.e2e"

local INPUT = "a\nb\ninterp\nc\njit\nd\n"

local function dead_of(path)
  local f = io.open(path)
  if not f then return {} end
  f:close()
  return e2e.read_jsonl(path)
end

describe("e2e stage_timeout", function()
  after_each(function() proc.cleanup() end)

  it("interrupts interpreted and compiled loops: the records go to dead letters, the job finishes", function()
    local dir = proc.tmpdir()
    local input = proc.write_file(dir .. "/in.txt", INPUT)
    local code, stdout, stderr = e2e.run("stuck_stage", { input = input }, { "--checkpoint", dir .. "/ckpt" },
      { timeout = 20 })
    assert.equal(0, code, stderr)
    assert.same({ "A", "B", "C", "D" }, e2e.elements(stdout))
    local dead = dead_of(dir .. "/ckpt/dead_letters.jsonl")
    local interp, jit = 0, 0
    for _, d in ipairs(dead) do
      assert.matches("stage_timeout", d.reason)
      assert.matches("stuck", d.reason)
      if d.record == '"interp"' or d.record == '"INTERP"' then interp = interp + 1 end
      if d.record == '"jit"' or d.record == '"JIT"' then jit = jit + 1 end
    end
    assert.is_true(interp >= 1, stderr)
    assert.is_true(jit >= 1, stderr)
    -- The compiled loop could only be stopped by a restart that skips it.
    assert.matches("restarting from the checkpoint", stderr)

    -- Run again on the same directory: done, nothing hangs.
    local code2, _, stderr2 = e2e.run("stuck_stage", { input = input }, { "--checkpoint", dir .. "/ckpt" },
      { timeout = 10 })
    assert.equal(0, code2, stderr2)
  end)

  it("without a checkpoint directory: interrupts an interpreted loop; a compiled one ends the job with exit 1", function()
    local dir = proc.tmpdir()
    local input = proc.write_file(dir .. "/in.txt", "a\ninterp\nb\n")
    local code, stdout, stderr = e2e.run("stuck_stage", { input = input }, {}, { timeout = 20 })
    assert.equal(0, code, stderr)
    assert.same({ "A", "B" }, e2e.elements(stdout))
    assert.matches("stage_timeout: stage stuck ran longer than 300ms", stderr)

    input = proc.write_file(dir .. "/in2.txt", "a\njit\nb\n")
    code, _, stderr = e2e.run("stuck_stage", { input = input }, {}, { timeout = 20 })
    assert.equal(1, code, stderr)
    assert.matches("stage upper > stuck ran longer than 300ms and did not stop", stderr)
    assert.matches("nothing to resume from", stderr)
  end)

  it("stops on SIGTERM within 5 s while a user function never returns (stage_timeout off)", function()
    local p = e2e.start("stuck_stage", { source = "stdin", timeout = "off" })
    e2e.wait_running(p)
    p:write("a\nsay\n")
    p:wait_stderr("stuck: started")
    local t0 = proc.now()
    p:kill("TERM")
    assert.equal(1, p:wait(5))
    assert.is_true(proc.now() - t0 < 5)
    assert.matches("stopped while stage upper > stuck ran", p.stderr)
    assert.matches("replayed at the next start", p.stderr)
  end)

  it("a stall a restart cannot skip (not at one input record) ends the job after one restart", function()
    local dir = proc.tmpdir()
    local p = e2e.start("stuck_elsewhere", { what = "state" }, { "--checkpoint", dir .. "/ckpt" })
    e2e.wait_running(p)
    p:write("bad\n")
    assert.equal(1, p:wait(20), p:describe())
    local _, restarts = p.stderr:gsub("restarting from the checkpoint", "")
    assert.equal(1, restarts, p:describe())
    assert.matches("stage totals ran longer than 300ms and did not stop", p.stderr)
    assert.matches("it was skipped once already and is stuck again: exiting", p.stderr)
  end)

  it("stops on SIGTERM within 5 s while a generator's function never returns", function()
    local p = e2e.start("stuck_elsewhere", { what = "generator", timeout = "off" })
    p:wait_stderr("stuck: started")
    local t0 = proc.now()
    p:kill("TERM")
    assert.equal(1, p:wait(5), p:describe())
    assert.is_true(proc.now() - t0 < 5)
    assert.matches("stopped while stage numbers ran", p.stderr)
  end)
end)
