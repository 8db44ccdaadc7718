-- text_dir across kill -9: each line of each file exactly once. A restart
-- skips the files the job was done with, resumes the one it was reading at
-- its recorded offset, and reads the files that came while it was down.
-- The crash loop kills the job STREAMRUN_CRASH_DIR_KILLS times (default 20)
-- at random moments while files keep arriving (seed STREAMRUN_CRASH_SEED).
local cjson = require "cjson"
local proc = require "helpers.proc"
local e2e = require "helpers.e2e"
local crashloop = require "helpers.crashloop"

local KILLS = tonumber(os.getenv("STREAMRUN_CRASH_DIR_KILLS") or "") or 20
local SEED = tonumber(os.getenv("STREAMRUN_CRASH_SEED") or "") or 20250605

-- A file of n lines "k<i mod 37> <name>-<i>", written under a staging name
-- and renamed into dir (as producers do); its lines are added to sent.
local function drop_file(dir, name, n, sent)
  local lines = {}
  for i = 1, n do
    lines[i] = ("k%d %s-%d"):format(i % 37, name, i)
    sent[#sent + 1] = lines[i]
  end
  proc.write_file(dir .. "/_" .. name, table.concat(lines, "\n") .. "\n")
  assert(os.rename(dir .. "/_" .. name, dir .. "/" .. name))
end

-- Each line in the output once, counted once per key, no dead letters.
local function check_exactly_once(params, sent)
  crashloop.check_output(params.out, sent)
  local counts = {}
  for _, l in ipairs(sent) do
    local k = l:match("^(%S+)")
    counts[k] = (counts[k] or 0) + 1
  end
  assert.same(counts, e2e.inspect_keys(params.ckpt, "counts"))
  assert.equal("", proc.read_file(params.ckpt .. "/dead_letters.jsonl") or "", "no dead letters")
end

local function new_run()
  local dir = proc.tmpdir()
  local params = { dir = dir .. "/in", out = dir .. "/out.jsonl", ckpt = dir .. "/ckpt" }
  proc.mkdir(params.dir)
  return params
end

local function source_position(ckpt)
  local code, meta = e2e.exec({ "inspect", ckpt })
  assert.equal(0, code)
  return cjson.decode(meta).sources.incoming
end

describe("e2e text_dir across kill -9", function()
  after_each(function() proc.cleanup() end)

  it("skips the files done with, resumes the one being read, reads those that came while down", function()
    local params, sent = new_run(), {}
    for i = 1, 6 do drop_file(params.dir, ("f%02d.txt"):format(i), 8000, sent) end
    local p = e2e.start("dir_resume", params, { "--quiet" })
    -- Killed in the middle of the third file (files are read in name order).
    proc.wait_for(function() return crashloop.count_lines(params.out) >= 20000 end, 20, "20000 lines out")
    p:kill("KILL")
    p:wait(5)
    local pos = source_position(params.ckpt)
    assert.equal("text_dir", pos.kind)
    assert.truthy(pos.file, "the checkpoint names the file being read")
    drop_file(params.dir, "f07.txt", 3000, sent) -- while the job is down
    p = e2e.start("dir_resume", params, { "--quiet" })
    proc.wait_for(function() return crashloop.count_lines(params.out) >= #sent end, 20, "every line out")
    drop_file(params.dir, "f08.txt", 3000, sent)
    proc.wait_for(function() return crashloop.count_lines(params.out) >= #sent end, 20, "the last file")
    p:kill("TERM")
    assert.equal(0, p:wait(10), p:describe())
    check_exactly_once(params, sent)
    -- The last checkpoint: every file done with, the last one taken up
    -- named (and done with too once the source saw its end: it may not
    -- have read again after its last lines before the stop).
    pos = source_position(params.ckpt)
    assert.equal("f08.txt", pos.file)
    local done = { "f01.txt", "f02.txt", "f03.txt", "f04.txt", "f05.txt", "f06.txt", "f07.txt" }
    if #pos.done == 8 then done[8] = "f08.txt" end
    assert.same(done, pos.done)
  end)

  it("a file read to its end and deleted while the job is down is not looked for after a restart", function()
    local params, sent = new_run(), {}
    drop_file(params.dir, "a.txt", 10, sent)
    local p = e2e.start("dir_resume", params, { "--quiet" })
    proc.wait_for(function()
      if crashloop.count_lines(params.out) < #sent or not proc.exists(params.ckpt) then return false end
      local code, meta = e2e.exec({ "inspect", params.ckpt })
      return code == 0 and (cjson.decode(meta).sources.incoming.done or {})[1] == "a.txt"
    end, 20, "a checkpoint with a.txt read to its end")
    p:kill("TERM")
    assert.equal(0, p:wait(10), p:describe())
    os.remove(params.dir .. "/a.txt")
    drop_file(params.dir, "b.txt", 10, sent)
    p = e2e.start("dir_resume", params, { "--quiet" })
    proc.wait_for(function() return crashloop.count_lines(params.out) >= #sent end, 20, "b.txt's lines out")
    p:kill("TERM")
    assert.equal(0, p:wait(10), p:describe())
    check_exactly_once(params, sent)
  end)

  it("every line once under a crash loop while files keep arriving", function()
    local params, sent, nfiles = new_run(), {}, 0
    math.randomseed(SEED)
    local log = crashloop.run {
      job = "dir_resume", params = params, kills = KILLS, sent = sent,
      feed = function()
        for _ = 1, math.random(0, 3) do
          nfiles = nfiles + 1
          drop_file(params.dir, ("f%04d.txt"):format(nfiles), math.random(1, 6000), sent)
        end
      end,
    }
    local ok, err = pcall(check_exactly_once, params, sent)
    assert(ok, tostring(err) .. "\n" .. table.concat(log, "\n"))
    io.stderr:write(("text_dir crash loop (seed %d): %d kills, %d files, %d lines\n"):format(SEED, KILLS, nfiles, #sent))
  end)
end)
