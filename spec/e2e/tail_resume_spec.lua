-- tail across kill -9: the file is resumed at the position the checkpoint
-- or the write-ahead log recorded (same inode), lines appended while the job
-- was down are read, and every line comes out exactly once.
local proc = require "helpers.proc"
local e2e = require "helpers.e2e"

local function numbers(from, to)
  local t = {}
  for i = from, to do t[#t + 1] = tostring(i) end
  return table.concat(t, "\n") .. "\n"
end

local function out_lines(path)
  local text = proc.exists(path) and proc.read_file(path) or ""
  return proc.lines(text)
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
    local seen = {}
    for _, line in ipairs(out_lines(out)) do
      assert.is_nil(seen[line], "twice: " .. line)
      seen[line] = true
    end
    for i = 1, 2100 do assert.is_true(seen['"' .. i .. '"'], "missing line " .. i) end
    local code, stdout = e2e.exec({ "inspect", ck, "--keys", "count" })
    assert.equal(0, code)
    assert.equal('{"key":"lines","value":2100}\n', stdout)
  end)
end)
