-- Event time (SPEC section 14) through the test driver: reading event
-- times, the watermark, times through stateless stages, lateness,
-- allowed_lateness, on_late, the final watermark, map_with_state timeouts
-- in event time, checkpoints and reloads.
local testing = require "streamrun.testing"
local eventtime = require "streamrun.eventtime"
local sr = require "streamrun"

local function add(a, b) return a + b end

local function rows(els)
  local r = {}
  for i, e in ipairs(els or {}) do r[i] = { e[1], e[2].start_ms, e[2].end_ms, e[2].value } end
  return r
end

-- A job counting each element's e[1] in 5 s event-time windows of source
-- "a" (its time by time_of; a_opts: more of its options), alone or, when
-- not chained, beside a source "b" through a union (then records are
-- stamped before the stages, not by a chain of their own).
local function windowed(job_opts, chained, time_of, a_opts)
  return function()
    local j = sr.job(job_opts)
    local o = { name = "a", event_time = time_of }
    for k, v in pairs(a_opts or {}) do o[k] = v end
    local s = j:queue({}, o)
    if not chained then s = s:union(j:queue({}, { name = "b", event_time = function(e) return e[2] end })) end
    s:map(function(e) return e[1], 1 end)
     :reduce_by_key_and_event_window(add, "5s", { name = "w" })
     :foreach_batch(function() end, { name = "out" })
    return j
  end
end

describe("event time", function()
  describe("reading times", function()
    it("parses RFC 3339 with zones and fractions", function()
      assert.equal(0, eventtime.parse_rfc3339("1970-01-01T00:00:00Z"))
      assert.equal(1714564800250, eventtime.parse_rfc3339("2024-05-01T12:00:00.250Z"))
      assert.equal(1714564800000, eventtime.parse_rfc3339("2024-05-01T14:00:00+02:00"))
      assert.equal(951782400000, eventtime.parse_rfc3339("2000-02-29T00:00:00Z"))
      assert.is_nil(eventtime.parse_rfc3339("2024-05-01"))
      assert.is_nil(eventtime.parse_rfc3339("2024-05-01T12:00:00"))
      assert.is_nil(eventtime.parse_rfc3339("2024-13-01T12:00:00Z"))
    end)

    local function json_job()
      local job = sr.job { name = "json_ev", batch = "1s" }
      job:queue({}, { name = "in", format = "json", event_time = "ts" })
         :map(function(e) return e.user, 1 end)
         :reduce_by_key_and_event_window(add, "1m", { name = "w" })
         :foreach_batch(function() end, { name = "out" })
      return job
    end

    it("takes a JSON field: epoch ms or an RFC 3339 string; no time is a dead letter", function()
      local d = testing.driver(json_job)
      d:push("in", {
        '{"user":"a","ts":1714564800000}',
        '{"user":"a","ts":"2024-05-01T12:00:30Z"}',
        '{"user":"b"}',
        '{"user":"c","ts":"yesterday"}',
        '{"user":"d","ts":true}',
      })
      d:tick()
      assert.equal(1714564830000, d:watermark())
      assert.equal(3, #d.dead_letters)
      assert.equal("in", d.dead_letters[1].source)
      assert.equal(3, d.dead_letters[1].offset)
      assert.matches("no field ts", d.dead_letters[1].reason)
      assert.matches("yesterday", d.dead_letters[2].reason)
      assert.equal(4, d.dead_letters[2].offset)
      assert.matches("epoch ms or an RFC 3339", d.dead_letters[3].reason)
      assert.same({ { "a", 1714564800000, 1714564860000, 2 } }, rows(d:finish().out))
    end)

    it("refuses a field name on a text source, and options without event_time", function()
      assert.has_error(function()
        local job = sr.job { name = "x" }
        job:text_file("/dev/null", { event_time = "ts" })
      end)
      assert.has_error(function()
        local job = sr.job { name = "x" }
        job:queue({}, { watermark = "5s" })
      end)
    end)

    it("refuses event windows on a stream without times", function()
      local ok, err = pcall(function()
        local job = sr.job { name = "x" }
        job:queue({}):map(function(x) return x, 1 end):reduce_by_key_and_event_window(add, "1s")
      end)
      assert.is_false(ok)
      assert.matches("needs elements with an event time", err)
      assert.matches("eventtime_spec.lua:%d+", err)
    end)
  end)

  describe("times through stages", function()
    it("map, flat_map, filter and union keep each element's time", function()
      local d = testing.driver(function()
        local job = sr.job { name = "through", batch = "1s" }
        local a = job:queue({}, { name = "a", event_time = function(e) return e.t end })
        local b = job:queue({}, { name = "b", event_time = function(e) return e.t end })
        a:flat_map(function(e) return { e, e } end)
         :filter(function(e) return e.k ~= "skip" end)
         :union(b)
         :map(function(e) return e.k, 1 end)
         :reduce_by_key_and_event_window(add, "10s", { name = "w" })
         :foreach_batch(function() end, { name = "out" })
        return job
      end)
      d:push("a", { { k = "x", t = 1000 }, { k = "skip", t = 2000 }, { k = "x", t = 12000 } })
      d:push("b", { { k = "x", t = 9000 }, { k = "y", t = 25000 } })
      local out = d:tick()
      -- Watermark: min(12000, 25000); [0, 10 s) closed: x twice from a
      -- (flat_map), once from b.
      assert.equal(12000, d:watermark())
      assert.same({ { "x", 0, 10000, 3 } }, rows(out.out))
      assert.same({ { "x", 10000, 20000, 2 }, { "y", 20000, 30000, 1 } }, rows(d:finish().out))
    end)

    it("a timed chain folding into a processing-time reduce_by_key counts per batch", function()
      local d = testing.driver(function()
        local job = sr.job { name = "folded", batch = "1s" }
        job:queue({}, { name = "in", event_time = function(e) return e.t end })
           :flat_map(function(e) return { e.k, e.k } end)
           :map(function(k) return k, 1 end)
           :reduce_by_key(add, { name = "counts" })
           :foreach_batch(function() end, { name = "out" })
        return job
      end)
      d:push("in", { { k = "x", t = 1000 }, { k = "y", t = 2000 }, { k = "x", t = 500 } })
      local got = {}
      for _, e in ipairs(d:tick().out) do got[e[1]] = e[2] end
      assert.same({ x = 4, y = 2 }, got)
      assert.equal(2000, d:watermark())
    end)
  end)

  local function window_job(opts)
    return function()
      local job = sr.job { name = "late", batch = "1s" }
      job:queue({}, { name = "in", event_time = function(e) return e[2] end, watermark = "2s" })
         :map(function(e) return e[1], 1 end)
         :reduce_by_key_and_event_window(add, "10s", opts)
         :foreach_batch(function() end, { name = "out" })
      return job
    end
  end

  describe("lateness", function()
    it("judges a batch against the watermark before it, and emits what the new one closes", function()
      local d = testing.driver(window_job({ name = "w" }))
      d:push("in", { { "a", 5000 }, { "a", 9000 } })
      assert.same({}, rows(d:tick().out))
      assert.equal(7000, d:watermark())
      -- 11000 moves the watermark to 9000: not yet 10000. 8000 is behind
      -- the watermark but its window is open: it counts.
      d:push("in", { { "a", 11000 }, { "a", 8000 } })
      assert.same({}, rows(d:tick().out))
      -- 12000 moves it to 10000; 9500 was read before that: it counts.
      d:push("in", { { "a", 9500 }, { "a", 12000 } })
      assert.same({ { "a", 0, 10000, 4 } }, rows(d:tick().out))
      d:push("in", { { "a", 9999 } })
      assert.same({}, rows(d:tick().out))
      assert.equal(1, #d.dead_letters)
      assert.equal("late: event time 9999 ms, watermark 10000 ms (stage w)", d.dead_letters[1].reason)
      assert.equal("(a,1)", d.dead_letters[1].record)
    end)

    it("on_late = \"drop\" counts instead", function()
      local d = testing.driver(window_job({ name = "w", on_late = "drop" }))
      d:push("in", { { "a", 15000 } })
      d:tick()
      d:push("in", { { "a", 1000 }, { "a", 2000 } })
      d:tick()
      assert.equal(0, #d.dead_letters)
      assert.equal(2, d:late_dropped("w"))
    end)

    it("allowed_lateness keeps a window and emits it again, updated", function()
      local d = testing.driver(window_job({ name = "w", allowed_lateness = "5s" }))
      d:push("in", { { "a", 1000 }, { "b", 2000 }, { "a", 12000 } })
      assert.same({ { "a", 0, 10000, 1 }, { "b", 0, 10000, 1 } }, rows(d:tick().out))
      d:push("in", { { "a", 3000 }, { "a", 4000 } })
      assert.same({ { "a", 0, 10000, 3 } }, rows(d:tick().out))
      -- The watermark reaches 15000 = end + lateness: the window goes.
      d:push("in", { { "c", 17000 } })
      assert.same({}, rows(d:tick().out))
      assert.is_nil(d:state("w", "b"))
      d:push("in", { { "a", 5000 } })
      assert.same({}, rows(d:tick().out))
      assert.equal(1, #d.dead_letters)
      assert.matches("^late: event time 5000 ms, watermark 15000 ms", d.dead_letters[1].reason)
    end)

    it("sliding windows: a record is late only when every window it is in closed", function()
      local d = testing.driver(window_job({ name = "w", slide = "5s" }))
      d:push("in", { { "a", 7000 }, { "a", 12000 } })
      -- watermark 10000: [0,10) closes with 7000 in it.
      assert.same({ { "a", 0, 10000, 1 } }, rows(d:tick().out))
      -- 8000 belongs to [0,10) (closed) and [5,15) (open): it counts there.
      d:push("in", { { "a", 8000 } })
      d:tick()
      assert.equal(0, #d.dead_letters)
      assert.same({ { "a", 5000, 15000, 3 }, { "a", 10000, 20000, 1 } }, rows(d:finish().out))
    end)
  end)

  describe("sessions", function()
    local function session_job()
      local job = sr.job { name = "sess", batch = "1s" }
      job:queue({}, { name = "in", event_time = function(e) return e[2] end, watermark = "5s" })
         :map(function(e) return e[1], 1 end)
         :session_by_key("3s", add, { name = "s" })
         :foreach_batch(function() end, { name = "out" })
      return job
    end

    it("merges sessions an event bridges, emits when the watermark passes the end", function()
      local d = testing.driver(session_job)
      d:push("in", { { "u", 1000 }, { "u", 7000 } })
      assert.same({}, rows(d:tick().out))
      assert.equal(6, #d:state("s", "u")) -- two sessions
      d:push("in", { { "u", 4000 } }) -- within 3 s of both: one session
      assert.same({}, rows(d:tick().out))
      assert.equal(3, #d:state("s", "u"))
      d:push("in", { { "v", 20000 } })
      assert.same({ { "u", 1000, 10000, 3 } }, rows(d:tick().out))
      d:push("in", { { "u", 2000 } }) -- its session would end at 5000: late
      assert.same({}, rows(d:tick().out))
      assert.equal(1, #d.dead_letters)
      assert.matches("^late: event time 2000 ms, watermark 15000 ms %(stage s%)", d.dead_letters[1].reason)
      assert.same({ { "v", 20000, 23000, 1 } }, rows(d:finish().out))
      assert.same({}, d:state("s"))
    end)
  end)

  describe("the end of bounded input", function()
    it("fires every window, session and timeout, processing-time ones too", function()
      local d = testing.driver(function()
        local job = sr.job { name = "end", batch = "1s" }
        local s = job:queue({}, { name = "in", event_time = function(e) return e[2] end, watermark = "1h" })
           :map(function(e) return e[1], e[2] end)
        s:reduce_by_key_and_event_window(function(a) return a end, "1s", { name = "w" })
         :foreach_batch(function() end, { name = "wout" })
        s:map_with_state(sr.state_spec(function(k, v, st)
          if st:is_timing_out() then return k, "timeout" end
          st:update(v)
        end):timeout("1h"):name("proc")):foreach_batch(function() end, { name = "pout" })
        s:map_with_state(sr.state_spec(function(k, v, st)
          if st:is_timing_out() then return k, "event timeout" end
          st:update(v)
        end):timeout("1h", { clock = "event" }):name("evt")):foreach_batch(function() end, { name = "eout" })
        return job
      end)
      d:push("in", { { "a", 1000 }, { "b", 2000 } })
      local out = d:tick()
      assert.same({}, out.wout)
      assert.same({}, out.pout)
      out = d:finish()
      assert.same({ { "a", 1000, 2000, 1000 }, { "b", 2000, 3000, 2000 } }, rows(out.wout))
      assert.same({ { "a", "timeout" }, { "b", "timeout" } }, out.pout)
      assert.same({ { "a", "event timeout" }, { "b", "event timeout" } }, out.eout)
      assert.same({}, d:state("w"))
      assert.same({}, d:state("proc"))
    end)

    it("gives every key its timing-out call, in key order, beyond one chunk of keys", function()
      local d = testing.driver(function()
        local job = sr.job { name = "many", batch = "1s" }
        job:queue({}, { name = "in" })
           :map(function(k) return k, 1 end)
           :map_with_state(sr.state_spec(function(k, v, st)
             if st:is_timing_out() then
               if k == "k05000" then error("no farewell for " .. k) end
               return k, st:get()
             end
             st:update((st:exists() and st:get() or 0) + v)
           end):timeout("1h"):name("m"))
           :foreach_batch(function() end, { name = "out" })
        return job
      end)
      local keys = {}
      for i = 10000, 1, -1 do keys[#keys + 1] = ("k%05d"):format(i) end
      keys[#keys + 1] = "k00007"
      d:push("in", keys)
      assert.same({}, d:tick().out)
      local out = d:finish().out
      assert.equal(9999, #out)
      assert.same({ "k00001", 1 }, out[1])
      assert.same({ "k00007", 2 }, out[7])
      assert.same({ "k05001", 1 }, out[5000])
      assert.same({ "k10000", 1 }, out[9999])
      for i = 2, #out do assert.is_true(out[i - 1][1] < out[i][1]) end
      assert.same({}, d:state("m"))
    end)
  end)

  describe("map_with_state in event time", function()
    it("times a key out when the watermark passes its last event time + timeout", function()
      local d = testing.driver(function()
        local job = sr.job { name = "evto", batch = "1s" }
        job:queue({}, { name = "in", event_time = function(e) return e[2] end })
           :map(function(e) return e[1], e[2] end)
           :map_with_state(sr.state_spec(function(k, v, st)
             if st:is_timing_out() then return k, st:get() end
             st:update((st:exists() and st:get() or 0) + 1)
           end):timeout("10s", { clock = "event" }):name("m"))
           :foreach_batch(function() end, { name = "out" })
        return job
      end)
      d:push("in", { { "a", 1000 }, { "b", 5000 } })
      assert.same({}, d:tick().out)
      -- Batch time moves, event time does not: nothing times out.
      d:tick(30)
      assert.same({}, d.history[d.batches].outputs.out)
      d:push("in", { { "c", 11000 } })
      assert.same({}, d:tick().out)
      d:push("in", { { "c", 11001 } })
      assert.same({ { "a", 1 } }, d:tick().out)
      d:push("in", { { "c", 15001 } })
      assert.same({ { "b", 1 } }, d:tick().out)
    end)

    it("needs a stream with times", function()
      assert.has_error(function()
        local job = sr.job { name = "x" }
        job:queue({}):map(function(x) return x, 1 end)
           :map_with_state(sr.state_spec(function() end):timeout("1s", { clock = "event" }))
      end)
    end)
  end)

  describe("idle sources", function()
    it("a source idle past its idle option stops holding the watermark back", function()
      local d = testing.driver(function()
        local job = sr.job { name = "idle", batch = "1s" }
        local a = job:queue({}, { name = "a", event_time = function(e) return e end })
        local b = job:queue({}, { name = "b", event_time = function(e) return e end, idle = "3s" })
        a:union(b):map(function(e) return "k", 1 end)
         :reduce_by_key_and_event_window(add, "1s", { name = "w" })
         :foreach_batch(function() end, { name = "out" })
        return job
      end)
      d:push("a", { 5000 })
      d:push("b", { 1000 })
      d:tick()
      assert.equal(1000, d:watermark())
      d:push("a", { 6000 })
      d:tick()
      assert.equal(1000, d:watermark())
      d:push("a", { 7000 })
      d:tick(2)
      assert.equal(7000, d:watermark())
    end)
    it("a source whose first records all lack a time idles from its first batch", function()
      for _, chained in ipairs { true, false } do
        local d = testing.driver(windowed({ name = "idle_first", batch = "1s" }, chained, function(e) return e[2] end,
          { idle = "2s" }))
        d:push("a", { { "x", "yesterday" }, { "y" } })
        if not chained then d:push("b", { { "z", 1000 } }) end
        d:tick()
        assert.equal(2, #d.dead_letters)
        assert.is_nil(d:watermark())
        d:tick(2)
        if not chained then assert.equal(1000, d:watermark()) end
        d:push("a", { { "x", 7000 } })
        d:tick()
        assert.equal(chained and 7000 or 1000, d:watermark())
      end
    end)
  end)

  -- An event_time function that raises is user code: its dead letter
  -- names the source as a stage's does, and on_error = "fail" ends the
  -- job; a value that is no time is bad input (a dead letter either way).
  it("an event_time function that raises is named as a stage; on_error = \"fail\" stops the job", function()
    local function job(on_error, chained)
      return windowed({ name = "raising", batch = "1s", on_error = on_error }, chained, function(e)
        if e[2] == 66 then error("no time for 66") end
        return e[2]
      end)
    end
    for _, chained in ipairs { true, false } do
      local d = testing.driver(job("dead_letter", chained))
      d:push("a", { { "x", 1000 }, { "y", 66 }, { "z", "never" } })
      d:tick()
      assert.equal(2, #d.dead_letters)
      local raised, bad = d.dead_letters[1], d.dead_letters[2]
      assert.matches("^stage a %(event_time of queue at .-%): .-no time for 66", raised.reason)
      assert.matches("^event_time: ", bad.reason)
      local f = testing.driver(job("fail", chained))
      f:push("a", { { "z", "never" } })
      f:tick()
      assert.equal(1, #f.dead_letters)
      f:push("a", { { "y", 66 } })
      local ok, err = pcall(f.tick, f)
      assert.is_false(ok)
      assert.matches("stage a (event_time of queue at ", tostring(err), 1, true)
      assert.matches("no time for 66", tostring(err), 1, true)
    end
  end)

  -- A session's fold that fails on an event keeps the event out: the
  -- sessions are neither stretched nor joined by it (as without it).
  it("session_by_key: an event whose fold fails neither stretches nor joins sessions", function()
    local d = testing.driver(function()
      local j = sr.job { name = "sessions", batch = "1s" }
      j:queue({}, { name = "in", event_time = function(e) return e[2] end })
       :map(function(e) return e[1], e[3] end)
       :session_by_key("1s", function(a, b) if b == 3 then error("no 3") end return a + b end, { name = "s" })
       :foreach_batch(function() end, { name = "out" })
      return j
    end)
    local got = {}
    local function emitted(out)
      for _, e in ipairs(out) do got[#got + 1] = ("%s %d-%d %d"):format(e[1], e[2].start_ms, e[2].end_ms, e[2].value) end
    end
    d:push("in", { { "a", 1000, 1 }, { "a", 1900, 3 }, { "a", 2700, 5 } })
    emitted(d:tick().out)
    assert.equal(1, #d.dead_letters)
    assert.matches('key "a": .-no 3', d.dead_letters[1].reason)
    d:push("in", { { "b", 9000, 1 } })
    emitted(d:tick().out)
    table.sort(got)
    assert.same({ "a 1000-2000 1", "a 2700-3700 5" }, got)
  end)

  describe("checkpoints and reloads", function()
    local function job()
      local j = sr.job { name = "keep", batch = "1s" }
      j:queue({}, { name = "in", event_time = function(e) return e[2] end, watermark = "5s" })
       :map(function(e) return e[1], 1 end)
       :reduce_by_key_and_event_window(add, "10s", { name = "w" })
       :foreach_batch(function() end, { name = "out" })
      return j
    end

    it("a restore keeps the watermark, each source's largest time and the open windows", function()
      local d = testing.driver(job)
      d:push("in", { { "a", 3000 }, { "a", 9000 }, { "b", 12000 } })
      d:tick()
      assert.equal(7000, d:watermark())
      local d2 = testing.restore(d:checkpoint(), { job = job })
      assert.equal(7000, d2:watermark())
      d2:push("in", { { "a", 1000 }, { "a", 14000 } })
      assert.same({}, rows(d2:tick().out))
      d2:push("in", { { "a", 15000 } })
      assert.same({ { "a", 0, 10000, 3 } }, rows(d2:tick().out))
    end)

    it("a reload keeps them, and refuses to keep windows of another size", function()
      local d = testing.driver(job)
      d:push("in", { { "a", 3000 }, { "a", 11000 } })
      d:tick()
      d:reload(job)
      assert.equal(6000, d:watermark())
      d:push("in", { { "a", 15000 } })
      assert.same({ { "a", 0, 10000, 1 } }, rows(d:tick().out))
      assert.has_error(function()
        d:reload(function()
          local j = sr.job { name = "keep", batch = "1s" }
          j:queue({}, { name = "in", event_time = function(e) return e[2] end, watermark = "5s" })
           :map(function(e) return e[1], 1 end)
           :reduce_by_key_and_event_window(add, "20s", { name = "w" })
           :foreach_batch(function() end, { name = "out" })
          return j
        end)
      end)
    end)
  end)
end)
