-- Event-time windows and sessions against the cases of Flink's
-- WindowOperatorTest (flink-streaming-java), with their elements,
-- timestamps, watermarks, snapshots and expected outputs, step by step
-- through the test driver.
--
-- How the cases map: Flink's harness takes elements and explicit
-- watermarks; streamrun derives its watermark from the largest event time
-- less the source's delay. A Flink Watermark(W) says every time <= W was
-- seen and fires the windows whose last ms (end - 1) is <= W; streamrun's
-- watermark W + 1 fires the windows with end <= W + 1, the same ones. So
-- the source's delay is 1 h, each processWatermark(W) is a marker element
-- with event time W + 1 + 1 h, filtered out right after the source, at
-- the end of the batch holding the elements Flink processed before it;
-- the elements (all within 1 h of 0) never move the watermark themselves. Flink's output
-- (key, sum) at timestamp end - 1 is our (key, { end_ms = ..., value }),
-- and its snapshot / restore is d:checkpoint() / testing.restore().
-- Flink compares the output sorted; so do we (outputs are ordered by end,
-- start and key).
--
-- The late-data cases (testSideOutputDueToLateness*) are Flink's with a
-- late output tag: what Flink sends to the side output is our dead letter
-- with reason "late"; testEndOfStreamTrigger's MAX_WATERMARK is the end of
-- input, d:finish(), over a window longer than the input (a GlobalWindow
-- of these elements).
--
-- Left out, and why: the Apply variants (an iterable window function over
-- the window's elements: the same expected outputs as the Reduce ones
-- checked here), the processing-time windows (streamrun's processing-time
-- windows are section 7's), GlobalWindows with count or continuous
-- triggers, evictors and custom assigners (testPointSessions): streamrun
-- has tumbling and sliding event windows and gap sessions only, fired when
-- the watermark passes them. The sessions' cases with a purging trigger
-- (testDropDueToLatenessSession*PurgingTrigger): a session's value here
-- accumulates, as with Flink's EventTimeTrigger.
local testing = require "streamrun.testing"
local sr = require "streamrun"
local proc = require "helpers.proc"

local function sum(a, b) return a + b end

-- A job of one window or session stage over (key, value) elements with
-- event times; marker elements only move the watermark.
local function job_of(stage)
  return function()
    local job = sr.job { name = "flink", batch = "1s" }
    local s = job:queue({}, { name = "in", event_time = function(e) return e.ts end, watermark = "1h" })
       :filter(function(e) return not e.mark end)
       :map(function(e) return e.k, e.v end)
    stage(s):foreach_batch(function() end, { name = "out" })
    return job
  end
end

local function el(k, v, ts) return { k = k, v = v, ts = ts } end
local function watermark(w) return { mark = true, ts = w + 1 + 3600000 } end

-- A batch's output as { key, value, timestamp (end - 1) }.
local function rows(out)
  local r = {}
  for i, e in ipairs(out.out) do r[i] = { e[1], e[2].value, e[2].end_ms - 1 } end
  return r
end

-- The same elements (Flink's testSlidingEventTimeWindows and
-- testTumblingEventTimeWindows), added out of order.
local ELEMENTS = {
  el("key2", 1, 3999), el("key2", 1, 3000),
  el("key1", 1, 20), el("key1", 1, 0), el("key1", 1, 999),
  el("key2", 1, 1998), el("key2", 1, 1999), el("key2", 1, 1000),
}

describe("Flink WindowOperatorTest", function()
  it("testSlidingEventTimeWindowsReduce: size 3 s, slide 1 s", function()
    local job = job_of(function(s)
      return s:reduce_by_key_and_event_window(sum, "3s", { slide = "1s", name = "w" })
    end)
    local d = testing.driver(job)
    d:push("in", ELEMENTS)
    d:push("in", { watermark(999) })
    assert.same({ { "key1", 3, 999 } }, rows(d:tick()))
    d:push("in", { watermark(1999) })
    assert.same({ { "key1", 3, 1999 }, { "key2", 3, 1999 } }, rows(d:tick()))
    d:push("in", { watermark(2999) })
    assert.same({ { "key1", 3, 2999 }, { "key2", 3, 2999 } }, rows(d:tick()))
    -- do a snapshot, close and restore again
    d = testing.restore(d:checkpoint(), { job = job })
    d:push("in", { watermark(3999) })
    assert.same({ { "key2", 5, 3999 } }, rows(d:tick()))
    d:push("in", { watermark(4999) })
    assert.same({ { "key2", 2, 4999 } }, rows(d:tick()))
    d:push("in", { watermark(5999) })
    assert.same({ { "key2", 2, 5999 } }, rows(d:tick()))
    -- those don't have any effect...
    d:push("in", { watermark(6999) })
    assert.same({}, rows(d:tick()))
    d:push("in", { watermark(7999) })
    assert.same({}, rows(d:tick()))
    -- Every window is closed and freed.
    assert.same({}, d:state("w"))
  end)

  it("testTumblingEventTimeWindowsReduce: size 3 s", function()
    local job = job_of(function(s) return s:reduce_by_key_and_event_window(sum, "3s", { name = "w" }) end)
    local d = testing.driver(job)
    d:push("in", ELEMENTS)
    d:push("in", { watermark(999) })
    assert.same({}, rows(d:tick()))
    d:push("in", { watermark(1999) })
    assert.same({}, rows(d:tick()))
    d = testing.restore(d:checkpoint(), { job = job })
    d:push("in", { watermark(2999) })
    assert.same({ { "key1", 3, 2999 }, { "key2", 3, 2999 } }, rows(d:tick()))
    d:push("in", { watermark(3999) })
    assert.same({}, rows(d:tick()))
    d:push("in", { watermark(4999) })
    assert.same({}, rows(d:tick()))
    d:push("in", { watermark(5999) })
    assert.same({ { "key2", 2, 5999 } }, rows(d:tick()))
    d:push("in", { watermark(6999) })
    assert.same({}, rows(d:tick()))
    d:push("in", { watermark(7999) })
    assert.same({}, rows(d:tick()))
    assert.same({}, d:state("w"))
  end)

  -- (key-sum, start, end) as Flink's SessionWindowFunction writes it.
  local function session_rows(out)
    local r = {}
    for i, e in ipairs(out.out) do
      r[i] = { ("%s-%d"):format(e[1], e[2].value), e[2].start_ms, e[2].end_ms, e[2].end_ms - 1 }
    end
    table.sort(r, function(a, b) return a[1] < b[1] end)
    return r
  end

  local session_job = job_of(function(s) return s:session_by_key("3s", sum, { name = "s" }) end)

  it("testSessionWindows: gap 3 s, merging, a snapshot in between", function()
    local d = testing.driver(session_job)
    d:push("in", { el("key2", 1, 0), el("key2", 2, 1000), el("key2", 3, 2500),
                   el("key1", 1, 10), el("key1", 2, 1000) })
    assert.same({}, session_rows(d:tick()))
    d = testing.restore(d:checkpoint(), { job = session_job })
    d:push("in", { el("key1", 3, 2500),
                   el("key2", 4, 5501), el("key2", 5, 6000), el("key2", 5, 6000), el("key2", 6, 6050),
                   watermark(12000) })
    assert.same({ { "key1-6", 10, 5500, 5499 }, { "key2-20", 5501, 9050, 9049 }, { "key2-6", 0, 5500, 5499 } },
      session_rows(d:tick()))
    d:push("in", { el("key2", 10, 15000), el("key2", 20, 15000), watermark(17999) })
    assert.same({ { "key2-30", 15000, 18000, 17999 } }, session_rows(d:tick()))
    assert.same({}, d:state("s"))
  end)

  it("testReduceSessionWindows: the snapshot earlier", function()
    local d = testing.driver(session_job)
    d:push("in", { el("key2", 1, 0), el("key2", 2, 1000), el("key2", 3, 2500) })
    assert.same({}, session_rows(d:tick()))
    d = testing.restore(d:checkpoint(), { job = session_job })
    d:push("in", { el("key1", 1, 10), el("key1", 2, 1000), el("key1", 3, 2500),
                   el("key2", 4, 5501), el("key2", 5, 6000), el("key2", 5, 6000), el("key2", 6, 6050),
                   watermark(12000) })
    assert.same({ { "key1-6", 10, 5500, 5499 }, { "key2-20", 5501, 9050, 9049 }, { "key2-6", 0, 5500, 5499 } },
      session_rows(d:tick()))
    d:push("in", { el("key2", 10, 15000), el("key2", 20, 15000), watermark(17999) })
    assert.same({ { "key2-30", 15000, 18000, 17999 } }, session_rows(d:tick()))
  end)

  it("testSessionWindowsWithCountTrigger's merge: an element bridging two sessions", function()
    -- Flink fires this case on a count trigger; here the watermark fires
    -- the merged session: key1's (10..2500) and (6000..7000) are bridged
    -- by 4500 into one session [10, 10000) of sum 22, as Flink's key1-22.
    local d = testing.driver(session_job)
    d:push("in", { el("key1", 1, 10), el("key1", 2, 1000), el("key1", 3, 2500),
                   el("key1", 1, 6000), el("key1", 2, 6500), el("key1", 3, 7000) })
    assert.same({}, session_rows(d:tick()))
    local kept = d:state("s", "key1")
    assert.equal(6, #kept) -- two sessions
    d:push("in", { el("key1", 10, 4500), watermark(12000) })
    assert.same({ { "key1-22", 10, 10000, 9999 } }, session_rows(d:tick()))
  end)

  -- Flink's session cases with allowed lateness and an accumulating
  -- trigger: the same elements and watermarks, a late element within the
  -- lateness merged into an emitted session, which fires again at once.
  local function session_lateness_case(lateness)
    local job = job_of(function(s)
      return s:session_by_key("3s", sum, { name = "s", allowed_lateness = lateness })
    end)
    local d = testing.driver(job)
    local function step(elements) d:push("in", elements) return session_rows(d:tick()) end
    assert.same({}, step({ el("key2", 1, 1000), watermark(1999) }))
    assert.same({}, step({ el("key2", 1, 2000), watermark(4998) }))
    -- not late: the session it joins ends after the watermark
    assert.same({}, step({ el("key2", 1, 4500), el("key2", 1, 8500), watermark(7400) }))
    -- bridges the two sessions
    assert.same({ { "key2-5", 1000, 11500, 11499 } }, step({ el("key2", 1, 7000), watermark(11501) }))
    assert.same({ { "key2-1", 11600, 14600, 14599 } }, step({ el("key2", 1, 11600), watermark(14600) }))
    return d, step, job
  end

  it("testDropDueToLatenessSessionWithLateness: lateness 10 ms", function()
    local d, step = session_lateness_case("10ms")
    -- merged into the session 11600..14600 (still kept), which fires again
    assert.same({ { "key2-2", 10000, 14600, 14599 } }, step({ el("key2", 1, 10000) }))
    assert.same({ { "key2-3", 10000, 17500, 17499 } }, step({ el("key2", 1, 14500), watermark(20000) }))
    assert.same({}, step({ watermark(100000) }))
    assert.same({}, d.dead_letters)
    assert.same({}, d:state("s"))
  end)

  it("testDropDueToLatenessSessionWithHugeLateness: lateness 10 s", function()
    local d, step, job = session_lateness_case("10s")
    -- bridges both sessions, the first still kept: 5 + 1 + 1
    assert.same({ { "key2-7", 1000, 14600, 14599 } }, step({ el("key2", 1, 10000) }))
    -- (a snapshot between: the emitted sessions are kept as they were)
    d = testing.restore(d:checkpoint(), { job = job })
    d:push("in", { el("key2", 1, 14500), watermark(20000) })
    assert.same({ { "key2-8", 1000, 17500, 17499 } }, session_rows(d:tick()))
    -- kept until 17500 + 10 s, shown with its start (here, and by inspect)
    assert.same({ 1000, 14500, 8 }, d:state("s", "key2"))
    assert.same({ key2 = { 1000, 14500, 8 } }, d:state("s"))
    local code, out = proc.run({ proc.ROOT .. "/build/streamrun", "inspect", d:checkpoint(), "--keys", "s" })
    assert.equal(0, code)
    assert.equal('{"key":"key2","value":[1000,14500,8]}\n', out)
    d:push("in", { watermark(100000) })
    assert.same({}, session_rows(d:tick()))
    assert.same({}, d.dead_letters)
    assert.same({}, d:state("s"))
  end)

  it("testDropDueToLatenessSessionZeroLateness: late elements are not merged into emitted sessions", function()
    local d, step = session_lateness_case(nil)
    -- late (Flink drops them; ours are dead letters), and not merged
    assert.same({}, step({ el("key2", 1, 10000), el("key2", 1, 10100) }))
    assert.same({ { "key2-1", 14500, 17500, 17499 } }, step({ el("key2", 1, 14500), watermark(20000) }))
    assert.same({}, step({ watermark(100000) }))
    assert.equal(2, #d.dead_letters)
    assert.same({}, d:state("s"))
  end)

  local function late_records(d)
    local r = {}
    for _, l in ipairs(d.dead_letters) do
      assert.matches("^late: ", l.reason)
      r[#r + 1] = l.record
    end
    return r
  end

  it("testSideOutputDueToLatenessTumbling: size 2 s, lateness 0", function()
    local d = testing.driver(job_of(function(s) return s:reduce_by_key_and_event_window(sum, "2s", { name = "w" }) end))
    d:push("in", { el("key2", 1, 1000), watermark(1985) })
    assert.same({}, rows(d:tick()))
    -- not dropped: window.maxTimestamp() + allowedLateness > currentWatermark
    d:push("in", { el("key2", 1, 1980), watermark(1999) })
    assert.same({ { "key2", 2, 1999 } }, rows(d:tick()))
    -- late (Flink's side output)
    d:push("in", { el("key2", 1, 1998), el("key2", 1, 2001), watermark(2999) })
    assert.same({}, rows(d:tick()))
    d:push("in", { watermark(3999) })
    assert.same({ { "key2", 1, 3999 } }, rows(d:tick()))
    assert.same({ "(key2,1)" }, late_records(d))
  end)

  it("testSideOutputDueToLatenessSliding: size 3 s, slide 1 s, lateness 0", function()
    local d = testing.driver(job_of(function(s)
      return s:reduce_by_key_and_event_window(sum, "3s", { slide = "1s", name = "w" })
    end))
    d:push("in", { el("key2", 1, 1000), watermark(1999) })
    assert.same({ { "key2", 1, 1999 } }, rows(d:tick()))
    d:push("in", { el("key2", 1, 2000), watermark(3000) })
    assert.same({ { "key2", 2, 2999 } }, rows(d:tick()))
    -- 2400 is in the windows ending at 2999 (closed), 3999 and 4999: kept
    -- in the last two.
    d:push("in", { el("key1", 1, 3001), el("key2", 1, 2400), el("key2", 1, 2400), el("key1", 1, 3001),
                   el("key2", 1, 3900), watermark(6000) })
    assert.same({
      { "key1", 2, 3999 }, { "key2", 5, 3999 },
      { "key1", 2, 4999 }, { "key2", 4, 4999 },
      { "key1", 2, 5999 }, { "key2", 1, 5999 },
    }, rows(d:tick()))
    assert.same({}, late_records(d))
    d:push("in", { el("key1", 1, 3001), watermark(25000) })
    assert.same({}, rows(d:tick()))
    assert.same({ "(key1,1)" }, late_records(d))
  end)

  it("testSideOutputDueToLatenessSessionZeroLatenessPurgingTrigger: gap 3 s", function()
    local d = testing.driver(session_job)
    d:push("in", { el("key2", 1, 1000), watermark(1999) })
    assert.same({}, session_rows(d:tick()))
    d:push("in", { el("key2", 1, 2000), watermark(4998) })
    assert.same({}, session_rows(d:tick()))
    -- 4500 joins the open session; 8500 starts another
    d:push("in", { el("key2", 1, 4500), el("key2", 1, 8500), watermark(7400) })
    assert.same({}, session_rows(d:tick()))
    -- 7000 merges the two sessions into one
    d:push("in", { el("key2", 1, 7000), watermark(11501) })
    assert.same({ { "key2-5", 1000, 11500, 11499 } }, session_rows(d:tick()))
    d:push("in", { el("key2", 1, 11600), watermark(14600) })
    assert.same({ { "key2-1", 11600, 14600, 14599 } }, session_rows(d:tick()))
    -- 10000 and 10100 are late (and not merged with each other); 14500
    -- starts a new session
    d:push("in", { el("key2", 1, 10000), el("key2", 1, 10100), el("key2", 1, 14500), watermark(20000) })
    assert.same({ { "key2-1", 14500, 17500, 17499 } }, session_rows(d:tick()))
    d:push("in", { watermark(100000) })
    assert.same({}, session_rows(d:tick()))
    assert.same({ "(key2,1)", "(key2,1)" }, late_records(d))
  end)

  it("testEndOfStreamTrigger: the end of input fires what is open", function()
    local d = testing.driver(job_of(function(s) return s:reduce_by_key_and_event_window(sum, "1h", { name = "w" }) end))
    d:push("in", ELEMENTS)
    assert.same({}, rows(d:tick()))
    local out = d:finish()
    assert.same({ { "key1", 3 }, { "key2", 5 } }, { { out.out[1][1], out.out[1][2].value },
                                                  { out.out[2][1], out.out[2][2].value } })
  end)
end)
