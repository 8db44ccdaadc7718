-- Corrupt checkpoints with the real binary: a corrupt newest checkpoint is
-- reported (file and reason) and the previous one used; with none valid the
-- job exits 1 with the report and touches nothing; `inspect --verify` says
-- which files are good.
local bit = require "bit"
local core = require "streamrun.core"
local proc = require "helpers.proc"
local e2e = require "helpers.e2e"

local INPUT = "a\nb\nc\nd\n" -- one line per batch: 100, 200, 300, 400 ms, then the end at 500
local OLDER = "checkpoint-000000000002.srck"
local NEWER = "checkpoint-000000000003.srck"

-- -- Corrupting files --

local function le32(n)
  local t = {}
  for i = 0, 3 do t[i + 1] = string.char(bit.band(bit.rshift(n, 8 * i), 0xff)) end
  return table.concat(t)
end

-- A checkpoint file of the given body with a valid trailer.
local function with_trailer(head_and_body)
  return head_and_body .. "SREN" .. le32(core.C.sr_crc32c(0, head_and_body, #head_and_body))
end

-- Each corruption rewrites the file at path and returns the start of the
-- reason the runtime must give.
local corruptions = {
  { "one byte flipped", function(path)
      local s = proc.read_file(path)
      proc.write_file(path, s:sub(1, 40) .. string.char(bit.bxor(s:byte(41), 0xff)) .. s:sub(42))
      return ("checksum mismatch over bytes 0..%d"):format(#s - 8)
    end },
  { "cut in half", function(path)
      local s = proc.read_file(path)
      local n = math.floor(#s / 2)
      proc.write_file(path, s:sub(1, n))
      return ("truncated: no trailer at offset %d"):format(n - 8)
    end },
  { "an unknown format version with a valid checksum", function(path)
      local s = proc.read_file(path)
      proc.write_file(path, with_trailer(s:sub(1, 4) .. "\2" .. s:sub(6, -9)))
      return "format version 2 is not supported"
    end },
  { "empty", function(path)
      proc.write_file(path, "")
      return "truncated: 0 bytes, too short for a checkpoint"
    end },
}

-- A checkpoint with a valid checksum and the given header object (msgpack).
local function crafted(header)
  return with_trailer("SRCK\1" .. header)
end
local HEADER_TAIL = "\167nstates\0\168nwindows\0"

-- -- Running the job --

local function run(input, ck, args)
  local all = { "--set", "input=" .. input, "--checkpoint", ck }
  for _, a in ipairs(args or {}) do all[#all + 1] = a end
  return e2e.run("ckpt_counts", nil, all)
end

-- The checkpoint files of a directory.
local function checkpoints(ck)
  local out = {}
  for _, name in ipairs(proc.list_dir(ck)) do
    if name:match("%.srck$") then out[#out + 1] = name end
  end
  return out
end

-- `streamrun inspect PATH --keys totals` as a table key -> value.
local function totals(path) return e2e.inspect_keys(path, "totals") end

-- The pprint batches of a stdout text from time_ms on, elements sorted.
local function batches_from(stdout, time_ms)
  local out = {}
  for _, b in ipairs(e2e.batches(stdout)) do
    if b.time >= time_ms then
      table.sort(b.elements)
      out[#out + 1] = b
    end
  end
  return out
end

-- A directory with two checkpoints of the job: after batch 2 (a, b) and
-- after batch 3 (a, b, c), each written as the run stopped (--batches).
local function two_checkpoints()
  local dir = proc.tmpdir()
  local input = proc.write_file(dir .. "/in.txt", INPUT)
  local ck = dir .. "/ckpt"
  local code, _, stderr = run(input, ck, { "--batches", "2" })
  assert.equal(0, code, stderr)
  code, _, stderr = run(input, ck, { "--batches", "1" })
  assert.equal(0, code, stderr)
  assert.truthy(stderr:find("resuming from " .. ck .. "/" .. OLDER, 1, true), stderr)
  -- The first run also wrote the checkpoint of the job's start (batch 0);
  -- these cases are about the two after it.
  assert.is_true(os.remove(ck .. "/checkpoint-000000000000.srck"))
  assert.same({ OLDER, NEWER }, checkpoints(ck))
  assert.same({ a = 1, b = 1 }, totals(ck .. "/" .. OLDER))
  assert.same({ a = 1, b = 1, c = 1 }, totals(ck .. "/" .. NEWER))
  return { dir = dir, input = input, ck = ck, older = ck .. "/" .. OLDER, newer = ck .. "/" .. NEWER }
end

-- What the job prints from 300 ms on when nothing goes wrong.
local function uninterrupted()
  local dir = proc.tmpdir()
  local input = proc.write_file(dir .. "/in.txt", INPUT)
  local code, stdout, stderr = run(input, dir .. "/ckpt")
  assert.equal(0, code, stderr)
  return batches_from(stdout, 300)
end

describe("e2e corrupt checkpoints", function()
  after_each(function() proc.cleanup() end)

  for _, c in ipairs(corruptions) do
    it("newest " .. c[1] .. ": reported with file and reason, the previous one resumed", function()
      local want = uninterrupted()
      local t = two_checkpoints()
      local reason = c[2](t.newer)
      local code, stdout, stderr, p = run(t.input, t.ck)
      assert.is_nil(p.signal, p:describe())
      assert.equal(0, code, p:describe())
      assert.truthy(stderr:find(("checkpoint %s is not valid: %s"):format(t.newer, reason), 1, true), stderr)
      assert.truthy(stderr:find("using an older one", 1, true), stderr)
      assert.truthy(stderr:find(("resuming from %s: batch 2 at 200 ms, 2 keys"):format(t.older), 1, true), stderr)
      -- The state resumed is the older checkpoint's: its first batch (300
      -- ms, line c) shows a, b and c once each, and from there on the
      -- output is the uninterrupted run's.
      local got = batches_from(stdout, 0)
      assert.equal(300, got[1] and got[1].time, stdout)
      assert.same({ "(a,1)", "(b,1)", "(c,1)" }, got[1].elements)
      assert.same(want, got)
      assert.same({ a = 1, b = 1, c = 1, d = 1 }, totals(t.ck))
    end)
  end

  it("all checkpoints corrupt: exit 1 naming each file and reason, nothing run, nothing written", function()
    local t = two_checkpoints()
    local newer_reason = corruptions[1][2](t.newer)
    local older_reason = corruptions[2][2](t.older)
    local before = { proc.read_file(t.newer), proc.read_file(t.older) }
    local listing = proc.list_dir(t.ck)
    -- Twice: the same answer every time, no crash loop.
    for _ = 1, 2 do
      local code, stdout, stderr, p = run(t.input, t.ck)
      assert.is_nil(p.signal, p:describe())
      assert.equal(1, code, p:describe())
      assert.truthy(stderr:find(("checkpoint %s is not valid: %s"):format(t.newer, newer_reason), 1, true), stderr)
      assert.truthy(stderr:find(("checkpoint %s is not valid: %s"):format(t.older, older_reason), 1, true), stderr)
      assert.truthy(stderr:find(("no valid checkpoint in %s: not starting from empty state"):format(t.ck), 1, true), stderr)
      assert.is_nil(stderr:find("traceback", 1, true), stderr)
      assert.is_nil(stderr:find("using an older one", 1, true), stderr)
      -- Not silently empty: no batch ran, no checkpoint replaced the bad ones.
      assert.equal("", stdout)
      assert.is_nil(stderr:find("streamrun: batch ", 1, true), stderr)
      assert.same(listing, proc.list_dir(t.ck))
      assert.equal(before[1], proc.read_file(t.newer))
      assert.equal(before[2], proc.read_file(t.older))
    end
  end)

  it("inspect --verify: 0 for a good checkpoint, 1 with the reason for each kind of corrupt one", function()
    local t = two_checkpoints()
    local code, stdout, stderr = e2e.exec({ "inspect", t.newer, "--verify" })
    assert.equal(0, code, stderr)
    assert.equal(("ok %s: batch 3 at 300 ms\n"):format(t.newer), stdout)
    for _, c in ipairs(corruptions) do
      local path = t.dir .. "/bad.srck"
      proc.write_file(path, proc.read_file(t.newer))
      local reason = c[2](path)
      code, stdout, stderr = e2e.exec({ "inspect", path, "--verify" })
      assert.equal(1, code, c[1] .. ": " .. stderr)
      assert.equal("", stdout, c[1])
      assert.truthy(stderr:find(("%s: %s"):format(path, reason), 1, true), c[1] .. ": " .. stderr)
      assert.is_nil(stderr:find("traceback", 1, true), stderr)
    end
    code, _, stderr = e2e.exec({ "inspect", t.dir .. "/missing.srck", "--verify" })
    assert.equal(1, code)
    assert.truthy(stderr:find("cannot open", 1, true), stderr)
    -- A directory: its newest valid checkpoint, the corrupt newer one named.
    corruptions[1][2](t.newer)
    code, stdout, stderr = e2e.exec({ "inspect", t.ck, "--verify" })
    assert.equal(0, code, stderr)
    assert.equal(("ok %s: batch 2 at 200 ms\n"):format(t.older), stdout)
    assert.truthy(stderr:find(t.newer .. " is not valid: checksum mismatch", 1, true), stderr)
  end)

  it("a FIFO named like the newest checkpoint: reported as not valid and skipped, the job starts", function()
    local t = two_checkpoints()
    local fifo = t.ck .. "/checkpoint-000000000004.srck"
    assert.is_true(os.execute("mkfifo '" .. fifo .. "'") == 0)
    -- Nothing ever writes to the FIFO: reading it would wait for good.
    local code, _, stderr, p = run(t.input, t.ck)
    assert.is_true(p.elapsed < 10, p:describe())
    assert.equal(0, code, p:describe())
    assert.truthy(stderr:find(("checkpoint %s is not valid: not a regular file; using an older one"):format(fifo), 1, true),
      stderr)
    assert.truthy(stderr:find(("resuming from %s: batch 3 at 300 ms"):format(t.newer), 1, true), stderr)
    assert.same({ a = 1, b = 1, c = 1, d = 1 }, totals(t.ck))
  end)

  -- Writes the newest checkpoint with the metadata meta (a valid checksum)
  -- and runs: it is reported and the previous one is resumed.
  local function falls_back_from_meta(meta)
    local t = two_checkpoints()
    proc.write_file(t.newer, crafted("\131\164meta" .. meta .. HEADER_TAIL))
    local code, _, stderr = run(t.input, t.ck)
    assert.equal(0, code, stderr)
    assert.truthy(stderr:find(("checkpoint %s is not valid: "):format(t.newer), 1, true), stderr)
    assert.truthy(stderr:find(("resuming from %s"):format(t.older), 1, true), stderr)
  end

  -- A newest checkpoint whose metadata cannot be read is reported; the previous one is used.
  it("newest with an extension-type or NaN key in its metadata (valid checksum): reported, the previous one resumed", function()
    for _, meta in ipairs { "\129\212\1\0\1", "\129\203\127\248\0\0\0\0\0\0\1" } do falls_back_from_meta(meta) end
  end)

  -- A newest checkpoint whose metadata lacks batch and time is reported; the previous one is used.
  it("newest with metadata lacking batch and time (valid checksum): reported, the previous one resumed", function()
    for _, meta in ipairs { "\128", "\5" } do falls_back_from_meta(meta) end
  end)
end)
