-- jobs/trending.lua through the test driver: top hashtags of the last 60 s,
-- produced every 10 s.
local testing = require "streamrun.testing"
local cjson = require "cjson"

local function post(text) return cjson.encode { user = "u", text = text } end

describe("jobs/trending.lua", function()
  it("ranks the last 60 s of hashtags every 10 s, forgetting what left the window", function()
    local d = testing.driver("jobs/trending.lua") -- 1 s batches
    d:push("posts", { post("#lua is neat #LUA"), post("#c and #lua"), post("no tags"), "not json" })
    d:tick(9)
    -- Nothing before the first slide.
    for t = 1, 9 do assert.same({}, d:outputs("trending")[t]) end
    local out = d:tick() -- t = 10 s
    assert.same({ { "lua", 3 }, { "c", 1 } }, out.trending)
    d:push("posts", { post("#streams #c"), post("#c") })
    d:advance("10s") -- t = 20 s
    assert.same({ { "c", 3 }, { "lua", 3 }, { "streams", 1 } }, d:outputs("trending")[20])
    d:advance("40s") -- t = 60 s: the first posts (t = 1 s) are still in (0, 60]
    assert.same({ { "c", 3 }, { "lua", 3 }, { "streams", 1 } }, d:outputs("trending")[60])
    d:advance("10s") -- t = 70 s: window (10, 70] holds only the posts of t = 11 s
    assert.same({ { "c", 2 }, { "streams", 1 } }, d:outputs("trending")[70])
    d:advance("10s") -- t = 80 s: everything left; counts that fell to 0 are dropped
    assert.same({}, d:outputs("trending")[80])
    assert.equal(1, #d.dead_letters)
  end)

  it("keeps only the 10 best, ties by name", function()
    local d = testing.driver("jobs/trending.lua", { params = { window = "10s", every = "5s" } })
    local texts = {}
    for i = 1, 12 do
      local tag = ("#t%02d"):format(i)
      for _ = 1, (i <= 2) and 2 or 1 do texts[#texts + 1] = post(tag) end
    end
    d:push("posts", texts)
    local out = d:advance("5s")
    assert.equal(10, #out.trending)
    assert.same({ "t01", 2 }, out.trending[1])
    assert.same({ "t02", 2 }, out.trending[2])
    assert.same({ "t03", 1 }, out.trending[3])
    assert.same({ "t10", 1 }, out.trending[10])
  end)
end)
