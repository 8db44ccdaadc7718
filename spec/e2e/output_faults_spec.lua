-- Output write errors through the real binary (SPEC section 17): a full
-- device, a closed pipe, a torn write, an output that fails then recovers.
-- None is silent; a failing output holds the job (sources read nothing)
-- and is retried; a closed standard output ends the job with exit 1.
local proc = require "helpers.proc"
local e2e = require "helpers.e2e"

local q = proc.shell_quote

-- The lines "line0001"... as input and as to_json_lines writes them.
local function numbered(from, to)
  local input, json = {}, {}
  for i = from, to do
    input[#input + 1] = ("line%04d\n"):format(i)
    json[#json + 1] = ('"line%04d"\n'):format(i)
  end
  return table.concat(input), table.concat(json)
end

-- argv running `streamrun run <job> args... suffix` through sh, exec'd
-- (after `setup`, shell commands) so that signals reach streamrun itself.
local function sh_run(job, args, setup, suffix)
  local words = { setup or "", "exec", q(e2e.BIN), "run", q(e2e.job(job)) }
  for _, a in ipairs(args) do words[#words + 1] = q(a) end
  words[#words + 1] = suffix or ""
  return { "sh", "-c", table.concat(words, " ") }
end

describe("e2e output faults", function()
  after_each(function() proc.cleanup() end)

  it("ends with exit 1 when standard output is closed (| head -1), naming the output", function()
    local dir = proc.tmpdir()
    local events = {}
    for i = 1, 100000 do
      events[i] = ('{"user":"u%d","action":"purchase","amount":%d}'):format(i, 100 + i % 50)
    end
    proc.write_file(dir .. "/events.jsonl", table.concat(events, "\n") .. "\n")
    local script = ("{ %s run %s --set batch=100ms < %s 2> %s; echo $? > %s; } | head -1 > %s"):format(
      q(e2e.BIN), q(e2e.ROOT .. "/jobs/json_filter.lua"), q(dir .. "/events.jsonl"), q(dir .. "/err"),
      q(dir .. "/status"), q(dir .. "/first"))
    local code = proc.run({ "sh", "-c", script }, { timeout = 30 })
    assert.equal(0, code)
    local err = proc.read_file(dir .. "/err")
    assert.equal("1\n", proc.read_file(dir .. "/status"), err)
    assert.equal('{"amount":101,"user":"u1"}\n', proc.read_file(dir .. "/first"))
    assert.matches("output purchases: standard output: Broken pipe (closed)", err, 1, true)
    assert.matches("stopping: output purchases cannot be written any more", err, 1, true)
  end)

  it("ends with exit 1 when standard output is a full device and on_error = \"fail\"", function()
    local code, _, err = proc.run(sh_run("json_out", { "--set", "on_error=fail" }, "", "> /dev/full"),
      { input = "a\nb\n" })
    assert.equal(1, code, err)
    assert.matches("output out: standard output: No space left on device", err, 1, true)
    assert.matches('stopping: on_error = "fail"', err, 1, true)
  end)

  for _, case in ipairs {
    { what = "standard output on a full device", args = {}, suffix = "> /dev/full",
      says = "output out: standard output: No space left on device" },
    { what = "to_json_lines onto /dev/full", args = { "--set", "out=/dev/full" },
      says = "output out: cannot write /dev/full: No space left on device" },
  } do
    it("holds the job with " .. case.what .. ", reading nothing, and a stop signal ends it with exit 1", function()
      local p = proc.spawn(sh_run("json_out", case.args, "", case.suffix))
      p:write("a\nb\n")
      p:wait_stderr(case.says .. "; sources wait, retried every batch interval")
      -- Held: what comes now is not read, so no batch with records is run.
      p:write("c\n")
      p:close_stdin()
      assert.is_nil(p.stderr:find("batch %d+ ms: [1-9]"))
      p:kill("TERM")
      assert.equal(1, p:wait(5))
      assert.matches("stopping: an output is still failing; nothing was read meanwhile", p.stderr, 1, true)
      assert.is_nil(p.stderr:find("batch %d+ ms: [1-9]"), p.stderr)
    end)
  end

  it("holds while an output's directory is missing, retries, and writes every line once when it appears", function()
    local dir = proc.tmpdir()
    local out = dir .. "/later/out.jsonl"
    local p = e2e.start("json_out", { out = out, ckpt = dir .. "/ckpt" })
    p:write("l1\nl2\n")
    p:wait_stderr("output out: cannot open " .. out .. ": No such file or directory; sources wait")
    p:write("l3\n")
    proc.mkdir(dir .. "/later")
    p:wait_stderr("outputs written again after")
    p:write("l4\n")
    p:close_stdin()
    assert.equal(0, p:wait(5))
    assert.equal('"l1"\n"l2"\n"l3"\n"l4"\n', proc.read_file(out))
  end)

  it("rotates the dead-letter file at the job's dead_letters.max_bytes, keeping 2", function()
    local dir = proc.tmpdir()
    local bad = {}
    for i = 1, 40 do bad[i] = ("not json %02d\n"):format(i) end
    local code, _, err = e2e.run("json_out", { format = "json", ckpt = dir .. "/ckpt", dl_max = 1000 }, {},
      { input = table.concat(bad) })
    assert.equal(0, code, err)
    local files, lines = {}, 0
    for _, name in ipairs { "dead_letters.jsonl", "dead_letters.jsonl.1", "dead_letters.jsonl.2" } do
      local text = proc.read_file(dir .. "/ckpt/" .. name)
      assert.truthy(text, name)
      assert.is_true(#text < 1000 + 200, name)
      files[#files + 1] = text
      for _ in text:gmatch("\n") do lines = lines + 1 end
    end
    assert.is_nil(proc.read_file(dir .. "/ckpt/dead_letters.jsonl.3"))
    assert.is_true(lines < 40)
    -- The newest dead letter is in the current file, the one before it in .1.
    assert.matches("not json 40", files[1], 1, true)
  end)

  it("cuts a torn write back to whole lines, holds, and a restart completes the file exactly", function()
    local dir = proc.tmpdir()
    local input, want = numbered(1, 1000)
    proc.write_file(dir .. "/in.txt", input)
    local out = dir .. "/out.jsonl"
    local args = { "--set", "input=" .. dir .. "/in.txt", "--set", "out=" .. out, "--set", "ckpt=" .. dir .. "/ckpt",
      "--set", "max=100" }
    -- Files of at most 7 blocks of 512 bytes: the fourth batch of 1100
    -- bytes tears.
    local p = proc.spawn(sh_run("json_out", args, "trap '' XFSZ; ulimit -f 7;"))
    p:wait_stderr("output out: cannot write " .. out .. ": File too large; sources wait")
    local held = proc.read_file(out)
    assert.is_true(#held > 0 and #held <= 7 * 512, #held .. " bytes\n" .. p.stderr)
    assert.equal(want:sub(1, #held), held)
    assert.equal("\n", held:sub(-1))
    p:kill("TERM")
    assert.equal(1, p:wait(5))
    assert.equal(held, proc.read_file(out))

    local code, _, err = proc.run(sh_run("json_out", args), { timeout = 20 })
    assert.equal(0, code, err)
    assert.equal(want, proc.read_file(out))
  end)
end)
