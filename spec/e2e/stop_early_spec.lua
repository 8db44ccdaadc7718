-- SIGTERM before the job's loop exists (its script still loading): noted,
-- not the default action's death; the job starts stopping (one last batch
-- on one worker, its checkpoint, exit 0) and a restart reads everything.
-- A second signal ends it at once; a start that never ends is ended 5 s
-- after the signal. Time comes from waits on the process's output and exit.
local proc = require "helpers.proc"
local e2e = require "helpers.e2e"

local function setup()
  local dir = proc.tmpdir()
  return dir, { input = proc.write_file(dir .. "/in.txt", "a\nb\na\n"), out = dir .. "/out.jsonl",
                gate = dir .. "/gate" }
end

describe("e2e a stop signal while the job starts", function()
  after_each(function() proc.cleanup() end)

  it("is noted: the job stops after its first batch, exit 0, on one worker; a restart reads everything", function()
    local dir, params = setup()
    local ckpt = dir .. "/ckpt"
    local p = e2e.start("slow_start", params, { "--checkpoint", ckpt, "--workers", "2" })
    p:wait_stderr("slow_start: loading", 20)
    p:kill("TERM")
    p:wait_stderr("stopping once the job has started", 20)
    proc.write_file(params.gate, "")
    assert.equal(0, p:wait(20), p:describe())
    -- No other worker's VM was started to load the script again.
    assert.is_nil(p.stderr:find("workers:", 1, true), p.stderr)
    local _, loads = p.stderr:gsub("slow_start: loading", "")
    assert.equal(1, loads, p.stderr)
    -- Nothing was read before the stop; the restart reads it all.
    local code, _, err = e2e.run("slow_start", params, { "--checkpoint", ckpt, "--workers", "2" }, { timeout = 30 })
    assert.equal(0, code, err)
    assert.same({ a = 2, b = 1 }, e2e.inspect_keys(ckpt, "counts"))
  end)

  it("a second signal ends it at once", function()
    local _, params = setup()
    local p = e2e.start("slow_start", params)
    p:wait_stderr("slow_start: loading", 20)
    p:kill("TERM")
    p:wait_stderr("a second signal ends it now", 20)
    p:kill("TERM")
    local code, sig = p:wait(10)
    assert.is_nil(code, p:describe())
    assert.equal(15, sig)
  end)

  it("a start that does not end within 5 s of the signal is ended, exit 1", function()
    local _, params = setup()
    local p = e2e.start("slow_start", params)
    p:wait_stderr("slow_start: loading", 20)
    local t0 = proc.now()
    p:kill("INT")
    assert.equal(1, p:wait(15), p:describe())
    assert.is_true(proc.now() - t0 >= 4.5)
    assert.matches("stopped while starting", p.stderr)
  end)
end)
