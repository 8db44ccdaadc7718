-- jobs/sessions.lua through the test driver: sessions close after the gap
-- without clicks, exactly at the first batch past it.
local testing = require "streamrun.testing"
local cjson = require "cjson"

local function click(user, page, ts)
  return cjson.encode { user = user, page = page, ts = ts }
end

describe("jobs/sessions.lua", function()
  it("emits each session once, when it has been idle longer than the gap", function()
    local d = testing.driver("jobs/sessions.lua") -- 1 s batches, 30 s gap
    d:push("clicks", { click("ann", "/home", 100), click("bob", "/home", 100.5), click("ann", "/cart", 101) })
    assert.same({}, d:tick().closed_sessions)                  -- t = 1 s
    d:push("clicks", { click("ann", "/home", 110) })
    d:tick()                                                   -- t = 2 s: ann active again
    assert.same({}, d:advance("29s").closed_sessions)          -- t = 31 s: bob idle exactly 30 s
    local out = d:tick()                                       -- t = 32 s: bob idle 31 s
    assert.same({ { "bob", { pages = 1, distinct_pages = 1, duration_s = 0, first_ts = 100.5, last_ts = 100.5 } } },
      out.closed_sessions)
    out = d:tick()                                             -- t = 33 s: ann idle 31 s
    assert.same({ { "ann", { pages = 3, distinct_pages = 2, duration_s = 10, first_ts = 100, last_ts = 110 } } },
      out.closed_sessions)
    assert.same({}, d:tick().closed_sessions)                  -- each session comes out once
    assert.is_nil(d:state("open_sessions", "ann"))
    assert.same({}, d:state("open_sessions"))
  end)

  it("keeps a session open while clicks keep coming, even in the batch it would close", function()
    local d = testing.driver("jobs/sessions.lua", { params = { gap = "3s" } })
    d:push("clicks", { click("cid", "/a", 1) })
    d:tick()                                     -- t = 1 s
    d:tick(2)                                    -- t = 3 s
    d:push("clicks", { click("cid", "/b", 5) })
    assert.same({}, d:tick().closed_sessions)    -- t = 4 s would close it (idle 3 s is not > 3 s anyway)
    d:tick(3)                                    -- t = 7 s: idle 3 s
    assert.same({}, d:outputs("closed_sessions")[7])
    local out = d:tick()                         -- t = 8 s: idle 4 s > 3 s
    assert.same("cid", out.closed_sessions[1][1])
    assert.equal(2, out.closed_sessions[1][2].pages)
    assert.equal(4, out.closed_sessions[1][2].duration_s)
  end)

  it("ignores clicks without a user and sends invalid JSON to the dead-letter output", function()
    local d = testing.driver("jobs/sessions.lua", { params = { gap = "1s" } })
    d:push("clicks", { '{"page":"/x"}', "{oops", click("dee", "/y", 1) })
    d:tick(3)
    assert.equal(1, #d.dead_letters)
    assert.equal("clicks", d.dead_letters[1].source)
    local closed = d:outputs("closed_sessions")
    assert.same("dee", closed[3][1][1])
  end)
end)
