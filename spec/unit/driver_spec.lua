-- The test driver itself: virtual clock, push/tick/advance, outputs by name.
local sr = require "streamrun"
local testing = require "streamrun.testing"

local function wordcount()
  local job = sr.job { name = "wc", batch = "1s" }
  job:queue({}, { name = "lines" })
     :flat_map(sr.words)
     :map(function(w) return w, 1 end)
     :reduce_by_key(sr.add)
     :foreach_batch(function() end, { name = "counts" })
  return job
end

describe("testing.driver", function()
  it("runs batch k at time k * batch on a virtual clock", function()
    local d = testing.driver(wordcount)
    d:push("lines", { "a b", "a" })
    local out = d:tick()
    assert.same({ { "a", 2 }, { "b", 1 } }, out.counts)
    assert.equal(1000, d:time())
    d:tick(2)
    assert.equal(3000, d:time())
    assert.same({}, d:outputs("counts")[3])
  end)

  it("advance runs every batch that falls due", function()
    local d = testing.driver(wordcount)
    d:push("lines", { "x" })
    local out = d:advance("2.5s")
    assert.equal(2, d.batches)
    assert.same({}, out.counts)
    assert.same({ { "x", 1 } }, d:outputs("counts")[1])
    d:advance("500ms")
    assert.equal(3, d.batches)
  end)

  it("rejects an unknown source name", function()
    local d = testing.driver(wordcount)
    assert.has_error(function() d:push("nope", { "a" }) end, 'no source named "nope" (sources: lines)')
  end)

  it("interrupts a user function that runs past stage_timeout: its element is a dead letter, the batch goes on",
    function()
    local function spin() -- interpreted: the watchdog's debug hook runs in it
      local x = 0
      while true do x = x + 1 end
    end
    jit.off(spin)
    local d = testing.driver(function()
      local job = sr.job { name = "stuck", batch = "1s", stage_timeout = "200ms" }
      job:queue({}, { name = "lines" })
         :map(function(l)
           if l == "stuck" then spin() end
           return l:upper()
         end, { name = "upper" })
         :foreach_batch(function() end, { name = "out" })
      return job
    end)
    -- (a driver made later, of another stage_timeout, takes no turn here)
    local other = testing.driver(function()
      local job = sr.job { name = "other", batch = "1s", stage_timeout = "5s" }
      job:queue({}, { name = "in" }):foreach_batch(function() end, { name = "out" })
      return job
    end)
    d:push("lines", { "a", "stuck", "b" })
    assert.same({ "A", "B" }, d:tick().out)
    assert.equal(1, #d.dead_letters)
    assert.equal("lines", d.dead_letters[1].source)
    assert.equal(2, d.dead_letters[1].offset)
    assert.matches("stage_timeout: stage upper ran longer than 200ms", d.dead_letters[1].reason, 1, true)
    other:tick()
    d:push("lines", { "c" })
    assert.same({ "C" }, d:tick().out)
  end)

  it("reports a job that does not load", function()
    assert.has_error(function()
      testing.driver(function()
        local job = sr.job { name = "x" }
        job:queue({}):reduce_by_key(sr.add)
        return job
      end)
    end)
  end)
end)
