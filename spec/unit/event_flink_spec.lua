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
-- Left out, and why: the Apply variants (an iterable window function over
-- the window's elements: the same expected outputs as the Reduce ones
-- checked here), the processing-time windows (streamrun's processing-time
-- windows are section 7's), GlobalWindows with count or continuous
-- triggers, evictors and custom assigners (testPointSessions): streamrun
-- has tumbling and sliding event windows and gap sessions only, fired when
-- the watermark passes them.
local testing = require "streamrun.testing"
local sr = require "streamrun"

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
end)
