-- The command line: usage errors, invalid jobs (exit 2 with file:line),
-- runtime errors in user code, check, --batches, --duration, --version.
local proc = require "helpers.proc"
local e2e = require "helpers.e2e"

describe("e2e command line", function()
  after_each(function() proc.cleanup() end)

  it("rejects bad flags with the usage on stderr and exit 2", function()
    local job = e2e.job("stdin_print")
    local cases = {
      { { "run", job, "--bogus" }, "unknown option '--bogus'" },
      { { "run", job, "--batch", "soon" }, "--batch: bad duration 'soon'" },
      { { "run", job, "--duration", "-1s" }, "--duration: bad duration" },
      { { "run", job, "--batches", "many" }, "--batches: bad count 'many'" },
      { { "run", job, "--set", "novalue" }, "--set: want KEY=VALUE" },
      { { "run", job, "--stats" }, "--stats needs a value" },
      { { "run", job, "--duration", "1s", "--batches", "2" }, "exclude each other" },
      { { "run", job, "--batch", "1s", "--batch", "2s" }, "--batch given twice ('1s' and '2s')" },
      { { "run", job, "--set", "a=1", "--set", "a=2" }, "--set a given twice ('a=1' and 'a=2')" },
      { { "run" }, "missing JOB.lua" },
      { { "frobnicate" }, "unknown command 'frobnicate'" },
      { {}, "missing command" },
    }
    for _, c in ipairs(cases) do
      local code, stdout, stderr = e2e.exec(c[1])
      local what = table.concat(c[1], " ")
      assert.equal(2, code, what)
      assert.truthy(stderr:find(c[2], 1, true), what .. ": " .. stderr)
      assert.truthy(stderr:find("usage:", 1, true), what .. ": " .. stderr)
      assert.equal("", stdout, what)
    end
  end)

  it("prints the usage for COMMAND --help, exit 0", function()
    for _, cmd in ipairs { "run", "check" } do
      local code, stdout, stderr = e2e.exec({ cmd, "--help" })
      assert.equal(0, code, cmd .. ": " .. stderr)
      assert.truthy(stdout:find("usage:", 1, true), stdout)
    end
  end)

  it("warns of --set keys the job does not read, in run and in check", function()
    local dir = proc.tmpdir()
    local input = dir .. "/in.txt"
    proc.write_file(input, "a\n")
    local code, _, stderr = e2e.run("text_print", { input = input, colour = "red" }, { "--quiet" })
    assert.equal(0, code, stderr)
    assert.truthy(stderr:find("warning: --set colour: the job did not read it", 1, true), stderr)
    assert.falsy(stderr:find("--set input", 1, true), stderr)
    code, _, stderr = e2e.exec({ "check", e2e.job("text_print"), "--set", "input=" .. input, "--set", "colour=red" })
    assert.equal(0, code, stderr)
    assert.truthy(stderr:find("warning: --set colour: the job did not read it", 1, true), stderr)
  end)

  it("warns of stateful stages without a name when the job checkpoints, in run and in check", function()
    local dir = proc.tmpdir()
    local input = dir .. "/in.txt"
    proc.write_file(input, "a\nb\n")
    local want = "warning: stateful stages without a name: update_state_by_key.1 ("
    local code, _, stderr = e2e.run("unnamed_state", { input = input }, { "--quiet", "--checkpoint", dir .. "/ck" })
    assert.equal(0, code, stderr)
    assert.truthy(stderr:find(want, 1, true), stderr)
    code, _, stderr = e2e.exec({ "check", e2e.job("unnamed_state"), "--set", "input=" .. input, "--checkpoint", dir .. "/ck2" })
    assert.equal(0, code, stderr)
    assert.truthy(stderr:find(want, 1, true), stderr)
    -- Without checkpoints, positions name nothing that lasts; named stages are fine.
    code, _, stderr = e2e.run("unnamed_state", { input = input }, { "--quiet" })
    assert.equal(0, code, stderr)
    assert.falsy(stderr:find("warning", 1, true), stderr)
    code, _, stderr = e2e.run("ckpt_counts", { input = input }, { "--quiet", "--checkpoint", dir .. "/ck3" })
    assert.equal(0, code, stderr)
    assert.falsy(stderr:find("warning", 1, true), stderr)
  end)

  it("exits 2 naming file:line for a job with a syntax error", function()
    for _, cmd in ipairs { "run", "check" } do
      local code, _, stderr = e2e.exec({ cmd, e2e.job("syntax_error") })
      assert.equal(2, code, cmd)
      assert.truthy(stderr:find("syntax_error.lua:3:", 1, true), stderr)
    end
  end)

  it("exits 2 naming file:line for an error raised with no place of its own (a table, nil, level 2)", function()
    local dir = proc.tmpdir()
    for raise, says in pairs { ["error({ code = 1 })"] = "error object is a table value",
                               ["error()"] = "error object is a nil value", ['error("lvl2", 2)'] = "lvl2" } do
      local path = proc.write_file(dir .. "/raises.lua", table.concat({ 'local sr = require "streamrun"',
        'local job = sr.job { name = "raises", batch = "1s" }', raise, "return job" }, "\n") .. "\n")
      local code, _, stderr = e2e.exec({ "check", path })
      assert.equal(2, code, raise)
      assert.truthy(stderr:find(path .. ":3: " .. says, 1, true), stderr)
    end
  end)

  it("exits 2 with file:line and 'unknown operation' for an operation that does not exist", function()
    local code, _, stderr = e2e.exec({ "run", e2e.job("unknown_op") })
    assert.equal(2, code)
    assert.truthy(stderr:find("unknown_op.lua:4:", 1, true), stderr)
    assert.truthy(stderr:find("unknown operation 'frobnicate'", 1, true), stderr)
  end)

  it("exits 2 with file:line for a bad duration in sr.job", function()
    local code, _, stderr = e2e.exec({ "run", e2e.job("bad_duration") })
    assert.equal(2, code)
    assert.truthy(stderr:find("bad_duration.lua:3:", 1, true), stderr)
    assert.truthy(stderr:find("bad duration", 1, true), stderr)
  end)

  it("exits 2 with file:line for a keyed operation on an unkeyed stream", function()
    local code, _, stderr = e2e.exec({ "run", e2e.job("unkeyed_reduce") })
    assert.equal(2, code)
    assert.truthy(stderr:find("unkeyed_reduce.lua:5:", 1, true), stderr)
    assert.truthy(stderr:find("reduce_by_key needs a keyed stream", 1, true), stderr)
  end)

  it("exits 2 for a job file that does not exist", function()
    local path = proc.tmpdir() .. "/no-such-job.lua"
    local code, stdout, stderr = e2e.exec({ "run", path })
    assert.equal(2, code)
    assert.truthy(stderr:find(path, 1, true), stderr)
    assert.equal("", stdout)
  end)

  it("dead-letters an element whose user function fails, naming the stage and the element, and prints the others", function()
    local dir = proc.tmpdir()
    local code, stdout, stderr = e2e.run("user_error", {}, { "--checkpoint", dir }, { input = "a\nboom\nb\n" })
    assert.equal(0, code, stderr)
    assert.same({ "A", "B" }, e2e.elements(stdout))
    local dead = e2e.read_jsonl(dir .. "/dead_letters.jsonl")
    assert.equal(1, #dead)
    -- the record's source and byte offset ("a\n" before it)
    assert.equal("lines", dead[1].source)
    assert.equal(2, dead[1].offset)
    assert.truthy(dead[1].reason:find("stage shout", 1, true), dead[1].reason)
    assert.truthy(dead[1].reason:find("user_error.lua:7: cannot take boom", 1, true), dead[1].reason)
    assert.equal('"boom"', dead[1].record)
    assert.truthy(stderr:find("finished: %d+ batches, 3 records, 1 dead letters"), stderr)
  end)

  it("makes os.exit in job code a dead letter of its record and exits 0 at the end of input", function()
    local dir = proc.tmpdir()
    local code, stdout, stderr = e2e.run("os_exit", {}, { "--checkpoint", dir }, { input = "a\nexit\nquit\nb\n" })
    assert.equal(0, code, stderr)
    assert.same({ "A", "B" }, e2e.elements(stdout))
    local dead = e2e.read_jsonl(dir .. "/dead_letters.jsonl")
    assert.equal(2, #dead)
    assert.truthy(dead[1].reason:find("stage shout", 1, true), dead[1].reason)
    assert.truthy(dead[1].reason:find("os.exit(7) called in job code", 1, true), dead[1].reason)
    assert.truthy(dead[2].reason:find("quitter.lua:5: os.exit(8)", 1, true), dead[2].reason)
    assert.truthy(stderr:find("finished: %d+ batches, 4 records, 2 dead letters"), stderr)
  end)

  it("with on_error = \"fail\" stops at the failing element with exit 1, naming the stage", function()
    local code, stdout, stderr = e2e.run("user_error", { on_error = "fail" }, {}, { input = "a\nboom\nb\n" })
    assert.equal(1, code, stderr)
    assert.truthy(stderr:find("stage shout", 1, true), stderr)
    assert.truthy(stderr:find("cannot take boom", 1, true), stderr)
    assert.same({}, e2e.elements(stdout))
  end)

  it("check prints the stage graph and exits 0 without running the job", function()
    local code, stdout, stderr = e2e.exec({ "check", e2e.job("wordcount") })
    assert.equal(0, code, stderr)
    assert.truthy(stdout:find("job wordcount", 1, true), stdout)
    local order = {}
    for _, stage in ipairs { "lines", "words", "ones", "counts", "out" } do
      local at = stdout:find("\n  " .. stage .. " ", 1, true)
      assert.truthy(at, stage .. " in:\n" .. stdout)
      order[#order + 1] = at
    end
    for i = 2, #order do assert.is_true(order[i] > order[i - 1], "stages in graph order") end
    assert.truthy(stdout:find("reduce_by_key%s+<%- ones"), stdout)
    assert.falsy(stdout:find("Time:", 1, true))
  end)

  it("--batches N stops an unbounded job after N batches", function()
    local code, stdout, stderr = e2e.run("generator", {}, { "--batches", "3" })
    assert.equal(0, code, stderr)
    local batches = e2e.batches(stdout)
    assert.equal(3, #batches)
    assert.equal(100, batches[2].time - batches[1].time)
    assert.equal(100, batches[3].time - batches[2].time)
    assert.truthy(stderr:find("finished: 3 batches", 1, true), stderr)
  end)

  it("--duration stops an unbounded job after that long", function()
    local code, stdout, stderr, p = e2e.run("generator", {}, { "--duration", "500ms" })
    assert.equal(0, code, stderr)
    assert.is_true(p.elapsed >= 0.45, "ran " .. p.elapsed .. " s")
    assert.is_true(p.elapsed < 3, "ran " .. p.elapsed .. " s")
    local n = #e2e.batches(stdout)
    assert.is_true(n >= 4 and n <= 8, n .. " batches of 100 ms in 500 ms")
  end)

  it("--version prints the version, --help the usage", function()
    local code, stdout = e2e.exec({ "--version" })
    assert.equal(0, code)
    assert.matches("^streamrun %d+%.%d+%.%d+\n$", stdout)
    code, stdout = e2e.exec({ "--help" })
    assert.equal(0, code)
    assert.truthy(stdout:find("streamrun run JOB.lua", 1, true), stdout)
  end)

  it("test runs Busted specs inside the binary and exits with their status", function()
    local dir = proc.tmpdir()
    local passing, failing = dir .. "/pass_spec.lua", dir .. "/fail_spec.lua"
    local f = assert(io.open(passing, "w"))
    f:write('local sr = require "streamrun"\n',
            'describe("inside", function() it("has the runtime", function()\n',
            '  assert.equal(3, sr.add(1, 2)) end) end)\n')
    f:close()
    f = assert(io.open(failing, "w"))
    f:write('describe("x", function() it("fails", function() assert.equal(1, 2) end) end)\n')
    f:close()
    local code, stdout = e2e.exec({ "test", passing })
    assert.equal(0, code, stdout)
    assert.truthy(stdout:find("1 success", 1, true), stdout)
    code, stdout = e2e.exec({ "test", failing })
    assert.are_not.equal(0, code)
    assert.truthy(stdout:find("1 failure", 1, true), stdout)
  end)

  it("test removes the directories d:checkpoint() made when the run ends", function()
    local dir = proc.tmpdir()
    local spec, list = dir .. "/ckpt_spec.lua", dir .. "/paths.txt"
    proc.write_file(spec, table.concat({
      'local testing = require "streamrun.testing"',
      'describe("x", function() it("checkpoints", function()',
      '  local d = testing.driver(' .. ("%q"):format(proc.realpath("jobs/wordcount.lua")) .. ')',
      '  local f = assert(io.open(' .. ("%q"):format(list) .. ', "w"))',
      '  for _ = 1, 250 do',
      '    local path = d:checkpoint()',
      '    assert.truthy(io.open(path, "r"))',
      '    f:write(path, "\\n")',
      '  end',
      '  f:close()',
      'end) end)', "" }, "\n"))
    local code, stdout = e2e.exec({ "test", spec })
    assert.equal(0, code, stdout)
    local paths = proc.lines(proc.read_file(list))
    assert.equal(250, #paths)
    for _, path in ipairs(paths) do assert.is_false(proc.exists((path:gsub("/[^/]*$", ""))), path) end
  end)
end)
