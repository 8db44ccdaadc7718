-- jobs/click_sessions.lua through the test driver, over its own sample
-- file jobs/clicks.jsonl: sessions in event time, whatever the batches,
-- closed when the watermark passes them and all of them at the end.
local testing = require "streamrun.testing"

local function sample()
  local lines = {}
  for l in io.lines("jobs/clicks.jsonl") do lines[#lines + 1] = l end
  return lines
end

local function s(from, to, clicks, pages) return { from = from, to = to, clicks = clicks, pages = pages } end

describe("jobs/click_sessions.lua", function()
  it("one batch: every session at the end of the file, the record without a time a dead letter", function()
    local d = testing.driver("jobs/click_sessions.lua")
    d:push("clicks", sample())
    local out = d:finish()
    assert.same({
      { "cid", s("09:03:00", "09:08:40", 2, 2) },
      { "ann", s("09:00:05", "09:10:00", 5, 5) },
      { "bob", s("09:00:40", "09:11:10", 5, 3) },
      { "bob", s("09:16:20", "09:23:40", 3, 3) },
      { "cid", s("09:15:00", "09:24:30", 3, 3) },
      { "ann", s("09:21:30", "09:28:00", 3, 3) },
      { "dee", s("09:30:00", "09:36:15", 2, 2) },
    }, out.closed_sessions)
    assert.equal(1, #d.dead_letters)
    assert.matches("not an RFC 3339 date%-time", d.dead_letters[1].reason)
  end)

  it("batches of 6 clicks: sessions as the watermark passes them, a click behind the watermark is a dead letter", function()
    local d = testing.driver("jobs/click_sessions.lua")
    local lines = sample()
    local outs = {}
    for i = 1, #lines, 6 do
      d:push("clicks", { unpack(lines, i, math.min(#lines, i + 5)) })
      outs[#outs + 1] = d:tick().closed_sessions
    end
    outs[#outs + 1] = d:finish().closed_sessions
    assert.same({
      {},
      { { "cid", s("09:03:00", "09:08:40", 2, 2) }, { "ann", s("09:00:05", "09:10:00", 5, 5) },
        { "bob", s("09:00:40", "09:11:10", 4, 3) } },
      {},
      { { "bob", s("09:16:20", "09:23:40", 3, 3) }, { "cid", s("09:15:00", "09:24:30", 3, 3) },
        { "ann", s("09:21:30", "09:28:00", 3, 3) } },
      { { "dee", s("09:30:00", "09:36:15", 2, 2) } },
    }, outs)
    assert.equal(2, #d.dead_letters)
    assert.matches("^late: event time %d+ ms, watermark %d+ ms %(stage sessions%)", d.dead_letters[1].reason)
    assert.equal(18, d.dead_letters[1].offset)
  end)
end)
