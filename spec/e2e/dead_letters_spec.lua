-- Dead letters across a kill -9: the batches a restart runs again (from
-- the write-ahead log, or by reading the file again) letter their records
-- again, and each dead letter is in the file once.
local proc = require "helpers.proc"
local e2e = require "helpers.e2e"

-- The dead letters' records ("bad N" lines, or lines that are not JSON),
-- sorted.
local function letters(ck)
  local out = {}
  for _, l in ipairs(proc.lines(proc.read_file(ck .. "/dead_letters.jsonl") or "")) do
    out[#out + 1] = l:match('"record":"\\"(bad[^\\]*)\\""') or l:match('"record":"(not json[^"]*)"') or l
  end
  table.sort(out)
  return out
end

describe("e2e dead letters across kill -9", function()
  after_each(function() proc.cleanup() end)

  it("replayed from the write-ahead log: each written once, later ones still written", function()
    local ck = proc.tmpdir() .. "/ckpt"
    local p = e2e.start("dead_replay", { ckpt = ck })
    p:write("a\nbad 1\nb\nbad 2\nbad 1\n")
    e2e.wait_elements(p, { "A", "B" })
    proc.wait_for(function() return #letters(ck) == 3 end, 10, function() return "3 dead letters\n" .. p:describe() end)
    p:kill("KILL")
    p:wait(5)
    -- Replays the batches after the checkpoint of the start, then reads on.
    local code, stdout, stderr = e2e.run("dead_replay", { ckpt = ck }, nil, { input = "c\nbad 3\n" })
    assert.equal(0, code, stderr)
    assert.matches("replayed %d+ logged batches", stderr)
    assert.same({ "A", "B", "C" }, e2e.elements(stdout))
    assert.same({ "bad 1", "bad 1", "bad 2", "bad 3" }, letters(ck))
  end)

  it("over kills in a row, some while the log replays: each letter once, JSON ones of the source too", function()
    local ck = proc.tmpdir() .. "/ckpt"
    local params = { ckpt = ck, json = 1 }
    local want, elements = {}, {}
    for round = 1, 6 do
      local p = e2e.start("dead_replay", params)
      if round % 3 == 0 then
        -- killed while it replays the rounds before (or just after)
        p:kill("KILL")
        p:wait(5)
        p = e2e.start("dead_replay", params)
      end
      local ok_a, ok_b = ("a%d"):format(round), ("b%d"):format(round)
      p:write(('"%s"\n"bad %d"\nnot json %d\n"%s"\n'):format(ok_a, round, round, ok_b))
      want[#want + 1] = "bad " .. round
      want[#want + 1] = "not json " .. round
      table.sort(want)
      elements[#elements + 1] = ok_a:upper()
      elements[#elements + 1] = ok_b:upper()
      e2e.wait_elements(p, { ok_a:upper(), ok_b:upper() })
      proc.wait_for(function() return #letters(ck) >= #want end, 10,
        function() return #want .. " dead letters\n" .. p:describe() end)
      p:kill("KILL")
      p:wait(5)
      assert.same(want, letters(ck), "after round " .. round)
    end
    local code, stdout, stderr = e2e.run("dead_replay", params, nil, { input = "" })
    assert.equal(0, code, stderr)
    local got = e2e.elements(stdout)
    table.sort(got)
    table.sort(elements)
    assert.same(elements, got)
    assert.same(want, letters(ck))
  end)
end)
