-- tail across kill -9: the file is resumed at the position the checkpoint
-- or the write-ahead log recorded (same inode), lines appended while the job
-- was down are read, and every line comes out exactly once; also under a
-- crash loop of STREAMRUN_CRASH_TAIL_KILLS kills (default 20) while lines
-- keep being appended (seed STREAMRUN_CRASH_SEED).
local proc = require "helpers.proc"
local e2e = require "helpers.e2e"
local crashloop = require "helpers.crashloop"

local KILLS = tonumber(os.getenv("STREAMRUN_CRASH_TAIL_KILLS") or "") or 20
local SEED = tonumber(os.getenv("STREAMRUN_CRASH_SEED") or "") or 20250605

local function numbers(from, to)
  local t = {}
  for i = from, to do t[#t + 1] = tostring(i) end
  return table.concat(t, "\n") .. "\n"
end

local function out_lines(path)
  local text = proc.exists(path) and proc.read_file(path) or ""
  return proc.lines(text)
end

-- The output holds the lines 1..n, each once.
local function each_once(out, n)
  local seen = {}
  for _, line in ipairs(out_lines(out)) do
    assert.is_nil(seen[line], "twice: " .. line)
    seen[line] = true
  end
  for i = 1, n do assert.is_true(seen['"' .. i .. '"'], "missing line " .. i) end
end

-- The paths of a run in a new directory, and its parameters.
local function new_run(extra)
  local dir = proc.tmpdir()
  local params = { path = dir .. "/log.txt", out = dir .. "/out.jsonl", ckpt = dir .. "/ckpt" }
  for k, v in pairs(extra or {}) do params[k] = v end
  return params.path, params.out, params.ckpt, params
end

-- Starts the job, waits until out holds n lines (or until until_fn(p) is
-- true), then stops it with signal (TERM: it must exit 0).
local function run_until(params, n, signal, until_fn)
  local p = e2e.start("tail_resume", params, { "--quiet" })
  if until_fn then
    until_fn(p)
  else
    proc.wait_for(function() return #out_lines(params.out) >= n end, 10, n .. " lines out")
  end
  p:kill(signal)
  if signal == "TERM" then assert.equal(0, p:wait(5), p:describe()) else p:wait(5) end
  return p
end

describe("e2e tail across kill -9", function()
  after_each(function() proc.cleanup() end)

  it("resumes at its recorded position: every line once, those appended while down too", function()
    local dir = proc.tmpdir()
    local log, out, ck = dir .. "/log.txt", dir .. "/out.jsonl", dir .. "/ckpt"
    local params = { path = log, out = out, ckpt = ck }
    proc.write_file(log, numbers(1, 1000))
    local p = e2e.start("tail_resume", params, { "--quiet" })
    proc.wait_for(function() return #out_lines(out) >= 1000 end, 10, "the first 1000 lines")
    proc.append_file(log, numbers(1001, 1500))
    proc.wait_for(function() return #out_lines(out) >= 1100 end, 10, "some appended lines")
    p:kill("KILL")
    p:wait(5)
    proc.append_file(log, numbers(1501, 2000)) -- while the job is down
    p = e2e.start("tail_resume", params, { "--quiet" })
    proc.wait_for(function() return #out_lines(out) >= 2000 end, 10, "all 2000 lines")
    proc.append_file(log, numbers(2001, 2100))
    proc.wait_for(function() return #out_lines(out) >= 2100 end, 10, "the last lines")
    p:kill("TERM")
    assert.equal(0, p:wait(5), p:describe())
    each_once(out, 2100)
    local code, stdout = e2e.exec({ "inspect", ck, "--keys", "count" })
    assert.equal(0, code)
    assert.equal('{"key":"lines","value":2100}\n', stdout)
  end)

  it("a file that did not exist at the last checkpoint is read from its start after a restart", function()
    local log, out, _, params = new_run { from_start = "no" }
    run_until(params, 0, "TERM", function(p) p:wait_stderr("waiting for " .. log, 10) end)
    proc.write_file(log, numbers(1, 100)) -- while the job is down
    run_until(params, 100, "KILL") -- killed after the file appeared
    proc.append_file(log, numbers(101, 200))
    run_until(params, 200, "TERM")
    each_once(out, 200)
  end)

  it("a file rotated while the job is down: the rest of the old one first, then the new one from its start", function()
    local log, out, _, params = new_run()
    proc.write_file(log, numbers(1, 100))
    run_until(params, 100, "KILL")
    proc.append_file(log, numbers(101, 150))
    assert(os.rename(log, log .. ".1"))
    proc.write_file(log, numbers(151, 200))
    local p = run_until(params, 200, "TERM")
    assert.matches("rotated while the job was down; reading the rest of " .. log .. ".1 first", p.stderr, 1, true)
    each_once(out, 200)
  end)

  it("rotated while down, then stopped again before a new file came: the old one's rest is still read", function()
    local log, out, _, params = new_run()
    proc.write_file(log, numbers(1, 100))
    run_until(params, 100, "TERM")
    proc.append_file(log, numbers(101, 150))
    assert(os.rename(log, log .. ".1")) -- no new file yet
    run_until(params, 0, "TERM", function(p) p:wait_stderr("waiting for " .. log, 10) end)
    proc.write_file(log, numbers(151, 200))
    run_until(params, 200, "TERM")
    each_once(out, 200)
  end)

  it("stopped while it skips an over-long line, resumes at that line: no part of it becomes a record", function()
    local log, out, ck, params = new_run { max_line = 100 }
    proc.write_file(log, "first\n" .. ("x"):rep(300)) -- its newline not written yet
    run_until(params, 0, "TERM", function()
      proc.wait_for(function()
        return #out_lines(out) >= 1 and (proc.read_file(ck .. "/dead_letters.jsonl") or ""):find("xxx", 1, true)
      end, 10, "the first line and the over-long one's dead letter")
    end)
    proc.append_file(log, "TAIL\nsecond\n")
    run_until(params, 2, "TERM")
    assert.same({ '"first"', '"second"' }, out_lines(out))
  end)

  it("every line once under a crash loop while lines keep being appended", function()
    local dir = proc.tmpdir()
    local params = { path = dir .. "/log.txt", out = dir .. "/out.jsonl", ckpt = dir .. "/ckpt" }
    local sent = {}
    proc.write_file(params.path, "")
    math.randomseed(SEED)
    local log = crashloop.run {
      job = "tail_resume", params = params, kills = KILLS, sent = sent,
      feed = function()
        local lines = {}
        for _ = 1, math.random(0, 3000) do
          lines[#lines + 1] = "n" .. (#sent + 1)
          sent[#sent + 1] = lines[#lines]
        end
        if #lines > 0 then proc.append_file(params.path, table.concat(lines, "\n") .. "\n") end
      end,
    }
    local ok, err = pcall(crashloop.check_output, params.out, sent)
    assert(ok, tostring(err) .. "\n" .. table.concat(log, "\n"))
    local code, stdout = e2e.exec({ "inspect", params.ckpt, "--keys", "count" })
    assert.equal(0, code)
    assert.equal(('{"key":"lines","value":%d}\n'):format(#sent), stdout)
    io.stderr:write(("tail crash loop (seed %d): %d kills, %d lines\n"):format(SEED, KILLS, #sent))
  end)
end)
