-- The checkpoint directory belongs to one process and one job (SPEC section
-- 17): a second instance on it exits 1 naming the holder's pid, the lock
-- survives a reload and goes with a killed holder; a checkpoint of another
-- job is refused, and restore cuts back only files that are outputs of the
-- current job; falling back to the oldest kept checkpoint loses nothing (the
-- write-ahead log goes back to it); the checkpoint of the job's start seeds
-- opts.initial again.
local bit = require "bit"
local core = require "streamrun.core"
local proc = require "helpers.proc"
local e2e = require "helpers.e2e"

local ckpt = core.ckpt

-- The checkpoint files of a directory, oldest first.
local function checkpoints(ck)
  local out = {}
  for _, name in ipairs(proc.list_dir(ck)) do
    if name:match("%.srck$") then out[#out + 1] = name end
  end
  table.sort(out)
  return out
end

describe("e2e checkpoint directory", function()
  after_each(function() proc.cleanup() end)

  it("a second instance exits 1 naming the holder's pid; the first finishes correctly", function()
    local ck = proc.tmpdir() .. "/ckpt"
    local first = e2e.start("ckpt_stdin", { ckpt = ck })
    first:write("a\n")
    e2e.wait_elements(first, { "(a,1)" })
    local code, stdout, stderr = e2e.run("ckpt_stdin", { ckpt = ck }, nil, { input = "b\n" })
    assert.equal(1, code, stderr)
    assert.equal("", stdout)
    assert.truthy(stderr:find(("checkpoint directory %s is in use by another streamrun process (pid %d)")
      :format(ck, first.pid), 1, true), stderr)
    -- A reload swaps the Lua VM: the lock stays.
    first:kill("HUP")
    first:wait_stderr("reloaded ")
    code, _, stderr = e2e.run("ckpt_stdin", { ckpt = ck }, nil, { input = "b\n" })
    assert.equal(1, code, stderr)
    assert.truthy(stderr:find(("(pid %d)"):format(first.pid), 1, true), stderr)
    first:write("a\nc\n")
    first:close_stdin()
    assert.equal(0, first:wait(10), first:describe())
    assert.same({ a = 2, c = 1 }, e2e.inspect_keys(ck, "counts"))
  end)

  it("kill -9 of the holder releases the directory", function()
    local ck = proc.tmpdir() .. "/ckpt"
    local first = e2e.start("ckpt_stdin", { ckpt = ck })
    first:write("a\n")
    e2e.wait_elements(first, { "(a,1)" })
    first:kill("KILL")
    first:wait(5)
    local code, _, stderr = e2e.run("ckpt_stdin", { ckpt = ck }, nil, { input = "a\n" })
    assert.equal(0, code, stderr)
    assert.same({ a = 2 }, e2e.inspect_keys(ck, "counts"))
  end)

  it("a checkpoint of another job is refused: exit 1 naming both jobs and the file", function()
    local dir = proc.tmpdir()
    local input = proc.write_file(dir .. "/in.txt", "a\nb\n")
    local ck = dir .. "/ckpt"
    local code, _, stderr = e2e.run("ckpt_counts", { input = input }, { "--checkpoint", ck })
    assert.equal(0, code, stderr)
    local files = checkpoints(ck)
    local newest = ck .. "/" .. files[#files]
    local listing = proc.list_dir(ck)
    local out = dir .. "/out.jsonl"
    code, _, stderr = e2e.run("ckpt_owner", { input = input, out = out }, { "--checkpoint", ck })
    assert.equal(1, code, stderr)
    assert.truthy(stderr:find(("%s is a checkpoint of job ckpt_counts, not of job ckpt_owner"):format(newest), 1, true),
      stderr)
    assert.is_nil(stderr:find("traceback", 1, true), stderr)
    assert.is_false(proc.exists(out))
    assert.same(listing, proc.list_dir(ck))
  end)

  it("restore cuts back only the job's own outputs: files a checkpoint names otherwise stay intact", function()
    local dir = proc.tmpdir()
    local input = proc.write_file(dir .. "/in.txt", "a\nb\nc\n")
    local ck = dir .. "/ckpt"
    local out = dir .. "/out.jsonl"
    local code, _, stderr = e2e.run("ckpt_owner", { input = input, out = out }, { "--checkpoint", ck, "--batches", "1" })
    assert.equal(0, code, stderr)
    local files = checkpoints(ck)
    local newest = ck .. "/" .. files[#files]
    -- The checkpoint rewritten (valid checksum) to name files that are not
    -- outputs of the job: under another stage's name, and under its output's
    -- name with another path.
    local meta, states = ckpt.load(newest)
    assert.truthy(meta, states)
    local victim = proc.write_file(dir .. "/precious.txt", "keep me\n")
    local other = proc.write_file(dir .. "/other.txt", "me too\n")
    local recorded = meta.outputs.out
    meta.outputs = { out = { path = victim, bytes = 0 }, ones = { path = other, bytes = 1 } }
    assert.truthy(ckpt.write(ck, files[#files], meta, { states.totals }, {}))
    code, _, stderr = e2e.run("ckpt_owner", { input = input, out = out }, { "--checkpoint", ck })
    assert.equal(0, code, stderr)
    assert.equal("keep me\n", proc.read_file(victim))
    assert.equal("me too\n", proc.read_file(other))
    assert.truthy(stderr:find(("%s records output out (%s), which is not an output of this job: left alone")
      :format(newest, victim), 1, true), stderr)
    assert.truthy(stderr:find(("%s records output ones (%s), which is not an output of this job"):format(newest, other),
      1, true), stderr)
    assert.truthy(recorded and recorded.path == out, "the checkpoint recorded the real output")
  end)

  it("falling back to the oldest kept checkpoint (the newer ones corrupt) replays every batch after it", function()
    local ck = proc.tmpdir() .. "/ckpt"
    local p = e2e.start("ckpt_stdin", { ckpt = ck })
    local want = {}
    for i = 1, 10 do
      p:write(("w%d\n"):format(i))
      e2e.wait_elements(p, { ("(w%d,1)"):format(i) })
      want["w" .. i] = 1
    end
    p:kill("KILL")
    p:wait(5)
    -- keep = 3; a fourth may be there when the kill came between a new
    -- checkpoint's rename and the pruning of the oldest.
    local files = checkpoints(ck)
    assert.is_true(#files == 3 or #files == 4, table.concat(files, " "))
    local n = #files
    local oldest = ck .. "/" .. files[n - 2]
    local before = e2e.inspect_keys(oldest, "counts")
    assert.is_nil(before.w10, "the oldest kept checkpoint must miss the last lines for this test to mean anything")
    for i = n - 1, n do
      local path = ck .. "/" .. files[i]
      local s = proc.read_file(path)
      proc.write_file(path, s:sub(1, 40) .. string.char(bit.bxor(s:byte(41), 0xff)) .. s:sub(42))
    end
    local code, _, stderr = e2e.run("ckpt_stdin", { ckpt = ck }, nil, { input = "" })
    assert.equal(0, code, stderr)
    assert.truthy(stderr:find("resuming from " .. oldest, 1, true), stderr)
    assert.same(want, e2e.inspect_keys(ck, "counts"))
  end)

  -- The checkpoint of the job's start is written before any batch: a
  -- restart from it (a kill before the next one; here the newer ones are
  -- removed) seeds opts.initial at its first batch, as the first run did,
  -- on one worker or split on two.
  -- A restart with another batch interval: checkpoints fall due on the new
  -- interval's grid (they never did: the old grid's origin was kept); a
  -- window holding slices refuses it, as a reload does.
  it("a restart with another batch interval checkpoints every `every`; a window refuses it", function()
    local dir = proc.tmpdir()
    local input = dir .. "/in.txt"
    local lines = {}
    for i = 1, 100 do lines[i] = "w" .. (i % 7) end
    proc.write_file(input, table.concat(lines, "\n") .. "\n")
    local function job(window)
      local ck = dir .. (window and "/ck_window" or "/ck")
      return proc.write_file(dir .. "/job.lua", table.concat({
        'local sr = require "streamrun"',
        'local job = sr.job { name = "interval", batch = "100ms", max_batch_records = 2,',
        ('  checkpoint = { dir = %q, every = "600ms", keep = 50 } }'):format(ck),
        ('local w = job:text_file(%q, { name = "lines" }):map(function(l) return l, 1 end)'):format(input),
        window and 'w = w:reduce_by_key_and_window(sr.add, "1200ms", "600ms", { name = "win" })'
          or 'w = w:update_state_by_key(function(v, n) return (n or 0) + #v end, { name = "counts" })',
        'w:foreach_batch(function() end, { name = "out" })',
        'return job',
      }, "\n") .. "\n")
    end
    local function batches_written()
      local list = {}
      for _, name in ipairs(checkpoints(dir .. "/ck")) do list[#list + 1] = tonumber(name:match("(%d+)%.srck$")) end
      return list
    end
    local path = job(false)
    local code, _, err = e2e.exec({ "run", path, "--quiet", "--batches", "8" })
    assert.equal(0, code, err)
    code, _, err = e2e.exec({ "run", path, "--quiet", "--batch", "300ms", "--batches", "8" })
    assert.equal(0, code, err)
    -- Batches 9.. at 300 ms: every second one is due (600 ms), the last one
    -- written as the run ends.
    local after = {}
    for _, b in ipairs(batches_written()) do if b > 8 then after[#after + 1] = b end end
    assert.same({ 10, 12, 14, 16 }, after)

    path = job(true)
    code, _, err = e2e.exec({ "run", path, "--quiet", "--batches", "8" })
    assert.equal(0, code, err)
    code, _, err = e2e.exec({ "run", path, "--quiet", "--batch", "300ms" })
    assert.equal(2, code, err)
    assert.truthy(err:find("the batch interval cannot change (100 ms to 300 ms) while windows hold slices", 1, true), err)
  end)

  it("resuming from the checkpoint of the job's start seeds opts.initial", function()
    for _, workers in ipairs { "1", "2" } do
      local dir = proc.tmpdir()
      local input = proc.write_file(dir .. "/in.txt", "a\nb\nseed\n")
      local ck = dir .. "/ckpt"
      local args = { "--set", "input=" .. input, "--checkpoint", ck, "--workers", workers }
      local code, _, stderr = e2e.run("ckpt_seeded", nil, { "--batches", "2", unpack(args) })
      assert.equal(0, code, stderr)
      local start = "checkpoint-000000000000.srck"
      for _, name in ipairs(checkpoints(ck)) do
        if name ~= start then assert.is_true(os.remove(ck .. "/" .. name)) end
      end
      code, _, stderr = e2e.run("ckpt_seeded", nil, args)
      assert.equal(0, code, stderr)
      assert.truthy(stderr:find(("resuming from %s/%s: the job's start"):format(ck, start), 1, true), stderr)
      assert.truthy(workers == "1" or stderr:find("totals run on 2 workers", 1, true), stderr)
      assert.same({ a = 1, b = 1, seed = 11, z = 1 }, e2e.inspect_keys(ck, "totals"))
    end
  end)
end)
