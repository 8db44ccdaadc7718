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
    assert.matches(" upper > stuck\n", proc.read_file(dir .. "/ckpt/poison"))

    -- Run again on the same directory: done, nothing hangs.
    local code2, _, stderr2 = e2e.run("stuck_stage", { input = input }, { "--checkpoint", dir .. "/ckpt" },
      { timeout = 10 })
    assert.equal(0, code2, stderr2)
    -- Resumed after the poisoned batch: its record is dropped from the file.
    assert.is_false(proc.exists(dir .. "/ckpt/poison"))
  end)

  it("interrupts a source's event_time function stamped before the stages; a restart skips a compiled loop there", function()
    local dir = proc.tmpdir()
    local input = proc.write_file(dir .. "/in.txt", "1000 a\n2000 interp\n3000 b\n4000 jit\n9000 c\n")
    local code, stdout, stderr = e2e.run("stuck_event_time", { input = input }, { "--checkpoint", dir .. "/ckpt" },
      { timeout = 30 })
    assert.equal(0, code, stderr)
    local got = e2e.elements(stdout)
    table.sort(got)
    assert.same({ "a 0 1", "b 0 1", "c 5000 1" }, got)
    local dead = dead_of(dir .. "/ckpt/dead_letters.jsonl")
    local records = {}
    for _, d in ipairs(dead) do
      assert.matches("stage_timeout", d.reason)
      assert.equal("lines", d.source)
      records[#records + 1] = d.record:gsub('"', "")
    end
    table.sort(records)
    assert.same({ "2000 interp", "4000 jit" }, records)
    assert.matches("restarting from the checkpoint", stderr)
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

  it("under the test driver, a compiled loop past stage_timeout ends the test run with exit 1, never hangs it",
    function()
    local dir = proc.tmpdir()
    local spec = proc.write_file(dir .. "/stuck_spec.lua", table.concat({
      'local testing = require "streamrun.testing"',
      'describe("x", function() it("spins", function()',
      '  local d = testing.driver(' .. ("%q"):format(proc.realpath("spec/e2e/jobs/stuck_stage.lua"))
        .. ', { params = { input = "/dev/null" } })',
      '  d:push("lines", { "a", "jit" })',
      '  d:tick()',
      'end) end)', "" }, "\n"))
    local code, stdout, stderr = e2e.exec({ "test", spec }, { timeout = 30 })
    assert.equal(1, code, stdout .. stderr)
    assert.matches("stage upper > stuck ran longer than 300ms and did not stop", stderr, 1, true)
    assert.matches("the test driver cannot restart the job: exiting", stderr, 1, true)
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

  it("a stop signal that came while a compiled loop was stuck ends the job instead of its restart", function()
    local dir = proc.tmpdir()
    -- (a stage_timeout long enough for the signal to come first)
    local p = e2e.start("stuck_elsewhere", { what = "generator", timeout = "2s" }, { "--checkpoint", dir .. "/ckpt" })
    p:wait_stderr("stuck: started")
    p:kill("TERM")
    assert.equal(1, p:wait(5), p:describe())
    assert.matches("stage numbers ran longer than 2s and did not stop", p.stderr)
    assert.matches("a stop signal came: exiting", p.stderr)
    assert.is_nil(p.stderr:find("restarting", 1, true), p:describe())
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

-- stage_timeout with 2 workers (SPEC section 15): a user function stuck on
-- worker 1's VM is interrupted there, as on worker 0; one that no hook
-- reaches restarts the job, which skips that record alone.
describe("e2e stage_timeout with 2 workers", function()
  after_each(function() proc.cleanup() end)

  local core = require "streamrun.core"

  -- 300 lines k0..k19, "stuck" near the end (in worker 1's share of the
  -- batch: shares are cut by bytes), then three more.
  local function stuck_input(dir)
    local lines = {}
    for i = 1, 300 do lines[i] = "k" .. (i % 20) end
    lines[#lines + 1] = "stuck"
    for _ = 1, 3 do lines[#lines + 1] = "k1" end
    local text = table.concat(lines, "\n") .. "\n"
    assert.is_true(text:find("stuck", 1, true) > #text / 2)
    return proc.write_file(dir .. "/in.txt", text)
  end

  -- A key whose partition worker 1 owns (partition mod 2).
  local function key_of_worker_1()
    for i = 0, 19 do
      if core.cexchange.partition("k" .. i, 16) % 2 == 1 then return "k" .. i end
    end
  end

  local function run(dir, params, workers)
    params.workers = workers
    local ckpt = ("%s/ckpt-%d-%s"):format(dir, workers, params.loop or "interp")
    local code, _, err = e2e.run("stuck_worker", params, { "--checkpoint", ckpt }, { timeout = 30 })
    assert.equal(0, code, err)
    return { err = err, dead = dead_of(ckpt .. "/dead_letters.jsonl"), totals = e2e.inspect_keys(ckpt, "totals") }
  end

  it("interrupts a map on worker 1's share and update_state_by_key for worker 1's key: the same dead letters as one worker", function()
    local dir = proc.tmpdir()
    local params = { input = stuck_input(dir), key = key_of_worker_1() }
    local one, two = run(dir, params, 1), run(dir, params, 2)
    assert.matches("parse > totals run on 2 workers", two.err)
    for _, r in ipairs { one, two } do
      assert.is_nil(r.err:find("restarting", 1, true), r.err)
      assert.equal(2, #r.dead, r.err)
      assert.equal("lines", r.dead[1].source)
      assert.equal('"stuck"', r.dead[1].record)
      assert.matches("^stage parse .*stage_timeout: stage parse ran longer than 300ms", r.dead[1].reason)
      assert.matches(('^stage totals .*key "%s": .*stage_timeout: stage totals ran longer than 300ms'):format(params.key),
        r.dead[2].reason)
      assert.is_nil(r.totals[params.key])
      assert.equal(18, r.totals.k1)
    end
    assert.same(one.dead, two.dead)
    assert.same(one.totals, two.totals)
  end)

  it("a compiled loop on worker 1: one restart that skips that record alone (shares read or dealt)", function()
    for _, dealt in ipairs { "0", "1" } do
      local dir = proc.tmpdir()
      local r = run(dir, { input = stuck_input(dir), loop = "jit", dealt = dealt }, 2)
      local _, restarts = r.err:gsub("restarting from the checkpoint", "")
      assert.equal(1, restarts, r.err)
      assert.matches("stage parse ran longer than 300ms and did not stop %(.* record 301%)", r.err)
      assert.equal(1, #r.dead, r.err)
      assert.equal('"stuck"', r.dead[1].record)
      assert.matches("could not be interrupted; the job restarted and skips this record", r.dead[1].reason)
      assert.equal(15, r.totals.k4)
      assert.equal(18, r.totals.k1)
    end
  end)

  -- 20,000 lines, "stuck" in worker 1's share: a batch too large to run
  -- on worker 0 alone (streamrun.splitcost's MAX_ALONE), so it splits.
  local function large_stuck_input(dir)
    local lines = {}
    for i = 1, 20000 do lines[i] = "k" .. (i % 20) end
    lines[#lines + 1] = "stuck"
    for _ = 1, 3 do lines[#lines + 1] = "k1" end
    assert.is_true(#lines > require("streamrun.splitcost").MAX_ALONE)
    proc.write_file(dir .. "/right.txt", "k1\nk2\n")
    return proc.write_file(dir .. "/in.txt", table.concat(lines, "\n") .. "\n"), dir .. "/right.txt"
  end

  -- A compiled loop in a window's reducer or map_with_state's function on
  -- a worker is at no record of the step's input a restart could skip
  -- alone (the partials, the owner's merged pairs): the restart skips the
  -- batch's whole input, once, and the job goes on.
  for _, into in ipairs { "window", "mws" } do
    it(("restarts once for a compiled loop in a %s's function on worker 1, skipping the batch's input"):format(into),
      function()
        local dir = proc.tmpdir()
        local lines = {}
        for i = 1, 20000 do lines[i] = "k" .. (i % 20) end
        lines[#lines + 1] = "spin"
        lines[#lines + 1] = "k1"
        local input = proc.write_file(dir .. "/in.txt", table.concat(lines, "\n") .. "\n")
        local ckpt = dir .. "/ckpt"
        local code, _, err = e2e.run("stuck_worker", { input = input, into = into, loop = "jit" },
          { "--checkpoint", ckpt }, { timeout = 30 })
        assert.equal(0, code, err)
        local _, restarts = err:gsub("restarting from the checkpoint", "")
        assert.equal(1, restarts, err)
        assert.matches("stage counts ran longer than 300ms and did not stop", err)
        local dead = dead_of(ckpt .. "/dead_letters.jsonl")
        assert.equal(#lines, #dead, err)
        for _, d in ipairs(dead) do
          assert.matches("could not be interrupted; the job restarted and skips this record", d.reason)
        end
      end)
  end

  for _, into in ipairs { "group", "window", "join" } do
    it(("interrupts a map on worker 1's share before a %s, and a restart skips a compiled loop there"):format(into),
      function()
        local dir = proc.tmpdir()
        local input, right = large_stuck_input(dir)
        local sizes = {}
        for _, loop in ipairs { "interp", "jit" } do
          local ckpt = ("%s/ckpt-%s"):format(dir, loop)
          local code, out, err = e2e.run("stuck_worker", { input = input, right = right, into = into, loop = loop },
            { "--checkpoint", ckpt }, { timeout = 30 })
          assert.equal(0, code, err)
          sizes[loop] = out
          assert.matches("parse.*run on 2 workers", err)
          local dead = dead_of(ckpt .. "/dead_letters.jsonl")
          assert.equal(1, #dead, err)
          assert.equal("lines", dead[1].source)
          assert.equal('"stuck"', dead[1].record)
          if loop == "interp" then
            assert.is_nil(err:find("restarting", 1, true), err)
            assert.matches("stage_timeout: stage parse ran longer than 300ms", dead[1].reason)
          else
            local _, restarts = err:gsub("restarting from the checkpoint", "")
            assert.equal(1, restarts, err)
            assert.matches("could not be interrupted; the job restarted and skips this record", dead[1].reason)
          end
        end
        -- (the same output both ways: only the stuck record is left out)
        assert.not_equal("", sizes.interp)
        assert.equal(sizes.interp, sizes.jit)
      end)
  end
end)
