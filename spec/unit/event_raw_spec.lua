-- Event times read in the chain's own loop (streamrun.eventtime,
-- streamrun.fuse): the chain that is the only consumer of the job's one
-- event-time source stamps its records as it takes each one, from a text
-- source's C batch handed as it is (each line made once) or from an array
-- of lines. Both must give what the source's batch gives stamped before
-- the stages run (the way of a source with a second consumer): the same
-- window and session results with their times, the same watermark and
-- per-source figures, the same state, and the same dead letters (records
-- with no event time, failing stages, late records: each with its source,
-- offset, reason and record; in record order in the chain's loop, so only
-- as a set against the other way). Random jobs and inputs from a seed.
local sr = require "streamrun"
local compile = require "streamrun.compile"
local eventtime = require "streamrun.eventtime"
local sources = require "streamrun.sources"
local node_of = require("streamrun.dsl").node_of
local lcg = require "helpers.lcg"
local rawplan = require "helpers.rawplan"

local byte, sub, find = string.byte, string.sub, string.find

-- "<key> <ms>": the time after the first space, digit by digit; anything
-- else in a line raises or gives what is no event time.
local function time_of(line)
  local sp = find(line, " ", 1, true)
  if not sp then error("no time in " .. line) end
  local c = byte(line, sp + 1)
  if c == 120 then return "x" end -- "x...": not a time
  if c == 110 then return nil end -- "n...": nothing
  if c == 45 then return -5 end -- "-...": out of range
  local t = 0
  for i = sp + 1, #line do
    local d = byte(line, i) - 48
    if d < 0 or d > 9 then error("bad digit in " .. line, 0) end
    t = t * 10 + d
  end
  return t + 0.25 -- (whole ms kept)
end

local function key_of(line)
  local k = sub(line, 1, (find(line, " ", 1, true) or 2) - 1)
  if k == "boom" then error("map failed on " .. line) end
  return k, 1
end

-- The job of a case: its source and the stage whose results are compared.
-- fork: the source has a second consumer (that drops every line), so it
-- is stamped before the stages run.
local function build(shape, fork)
  local job = sr.job { name = "raw" }
  local lines = job:text_file("/dev/null", { name = "in", event_time = time_of, watermark = "1s" })
  if fork then lines:filter(function() return false end):foreach_batch(function() end) end
  local s
  if shape.flat then
    s = lines:flat_map(function(line) return { line, line } end):map(key_of)
  else
    s = lines:map(key_of)
  end
  if shape.filter then s = s:filter(function(k) return k ~= "k3" end) end
  local last
  if shape.sink then
    -- (The chain folds into it: no elements, no times, the watermark moves.)
    last = s:reduce_by_key(sr.add, { name = "w" })
  elseif shape.session then
    last = s:session_by_key("2s", sr.add, { name = "w" })
  else
    last = s:reduce_by_key_and_event_window(sr.add, "4s", { name = "w", slide = shape.slide, allowed_lateness =
      shape.lateness })
  end
  return job, node_of(last)
end

local c_batch = rawplan.c_batch

-- Runs the batches through a plan of the job; how: "raw" (each C batch
-- handed to the chain as it is), "lines" (read as an array of lines) or
-- "before" (the job with a fork: stamped before the stages). Returns per
-- batch the stage's results, then the dead letters, the state's entries
-- and the watermark's data.
local function run(shape, batches, how)
  local job, last = build(shape, how == "before")
  local raw = how == "raw"
  local data = eventtime.new_data()
  local plan, dead = rawplan.compile(job, data)
  local src = job.sources[1]
  assert.equal(how ~= "before", plan.raw_sources[src] == true)
  assert.equal(how ~= "before" and src or nil, plan.event.chained)
  local out, base = {}, 1000
  for bi, lines in ipairs(batches) do
    local cb = c_batch(lines, base)
    base = base + 10 * #lines + 10
    local input
    if raw then
      input = sources.raw_c_batch(src, cb)
    else
      input = sources.read_c_batch(src, cb, function() error("not JSON") end)
    end
    local results = plan.run({ [src] = input }, 1000 * bi, bi == #batches)
    local r = results[last]
    local rows = {}
    for i = 1, r.n do
      local v = r.b[i]
      if shape.sink then
        rows[i] = { r.a[i], v }
      else
        rows[i] = { r.a[i], v.start_ms, v.end_ms, v.value, r.t[i] }
      end
    end
    out[bi] = { rows = rows, wm = data.wm, max = data.max["in"] }
  end
  local entries = {}
  if not shape.sink then
    local keys, values, n = plan.states.w:snapshot()
    for i = 1, n do entries[i] = { keys[i], values[i] } end
  end
  return out, dead, entries, data
end

local function lines_of(r, n, t0)
  local out = {}
  local keys = { "k1", "k2", "k3", "k4", "boom" }
  for i = 1, n do
    local t = t0 + r.int(0, 3000) - r.int(0, 2500)
    if r.chance(0.02) then t = t0 - 20000 end -- late
    local k = r.pick(keys)
    local line = ("%s %d"):format(k, t)
    if r.chance(0.02) then line = r.pick { "k1", "k2 x1", "k3 n", "k4 -1", "k1 12a", "" } end
    out[i] = line
  end
  return out
end

describe("event times stamped in the chain's loop", function()
  it("plans the chain of a text source with event times to read its C batch", function()
    local job = build({})
    local plan = compile.compile(job, { on_error = "dead_letter", dead_letter = function() end,
                                        sink = { stdout = io.stdout, quiet_print = true } })
    assert.is_true(plan.raw_sources[job.sources[1]])
    assert.equal(job.sources[1], plan.event.chained)
  end)

  it("leaves a job with two event-time sources stamping before its stages", function()
    local job = sr.job { name = "two" }
    local a = job:text_file("/dev/null", { name = "a", event_time = time_of })
    local b = job:text_file("/dev/null", { name = "b", event_time = time_of })
    a:map(key_of):union(b:map(key_of)):reduce_by_key_and_event_window(sr.add, "4s", { name = "w" })
    local plan = compile.compile(job, { on_error = "dead_letter", dead_letter = function() end,
                                        sink = { stdout = io.stdout, quiet_print = true } })
    assert.is_nil(plan.raw_sources[job.sources[1]])
    assert.is_nil(plan.event.chained)
  end)

  it("names event_time, not the chain's loop, in an error raised at its caller's level", function()
    local job = sr.job { name = "caller" }
    job:text_file("/dev/null", { name = "in", event_time = function(line)
      return assert(tonumber(line:match(" (%d+)$")), "no time in line")
    end }):map(key_of):reduce_by_key_and_event_window(sr.add, "4s", { name = "w" })
    local dead = {}
    local plan = compile.compile(job, {
      on_error = "dead_letter",
      dead_letter = function(source, offset, reason, record) dead[#dead + 1] = { source, offset, reason, record } end,
      sink = { stdout = io.stdout, quiet_print = true },
    })
    assert.equal(job.sources[1], plan.event.chained)
    local src = job.sources[1]
    plan.run({ [src] = sources.raw_c_batch(src, c_batch({ "k1 1700000000000", "k2 zz" }, 0)) }, 1000, false)
    assert.same({ { "in", 20, "event_time: no time in line", "k2 zz" } }, dead)
  end)

  it("letters a record with no time in record order among the chain's failures", function()
    local job = build({})
    local dead = {}
    local plan = compile.compile(job, {
      on_error = "dead_letter",
      dead_letter = function(source, offset, reason, record)
        dead[#dead + 1] = { source, offset, reason:match("^[^\n]*"), record }
      end,
      sink = { stdout = io.stdout, quiet_print = true },
    })
    local src = job.sources[1]
    local cb = c_batch({ "boom 1700000000000", "k1 x", "k2 1700000000001", "boom 1700000000002", "k3 1" }, 0)
    plan.run({ [src] = sources.raw_c_batch(src, cb) }, 1000, false)
    assert.equal(3, #dead)
    assert.same({ "in", 10 }, { dead[1][1], dead[1][2] })
    assert.matches("map failed on boom 1700000000000", dead[1][3], 1, true)
    assert.same({ "in", 20, "event_time: event time \"x\": not an RFC 3339 date-time", "k1 x" }, dead[2])
    assert.same({ "in", 40 }, { dead[3][1], dead[3][2] })
    assert.equal(1700000000002 - 1000, plan.event.data.wm)
    -- The next batch's records are judged against that watermark: k3 at
    -- 1 ms is late.
    cb = c_batch({ "k3 1", "k4 1700000000003" }, 100)
    plan.run({ [src] = sources.raw_c_batch(src, cb) }, 2000, false)
    assert.same({ "in", 110, "late: event time 1 ms, watermark 1699999999002 ms (stage w)", "(k3,1)" }, dead[4])
    assert.equal(4, #dead)
  end)

  for seed = 1, 32 do
    it("gives the results, watermark, state and dead letters of the line arrays (seed " .. seed .. ")", function()
      local r = lcg(seed * 7919)
      local shape = {
        flat = r.chance(0.3), filter = r.chance(0.5), session = r.chance(0.3), sink = r.chance(0.15),
        slide = r.chance(0.3) and "2s" or nil, lateness = r.chance(0.3) and "3s" or nil,
      }
      local batches, t0 = {}, 1700000000000
      for b = 1, r.int(2, 6) do
        batches[b] = lines_of(r, r.chance(0.2) and 0 or r.int(1, 300), t0)
        t0 = t0 + r.int(500, 4000)
      end
      local out0, dead0, st0, data0 = run(shape, batches, "before")
      local out1, dead1, st1, data1 = run(shape, batches, "raw")
      local out2, dead2, st2, data2 = run(shape, batches, "lines")
      assert.same(dead2, dead1)
      assert.is_true(#dead1 > 0)
      table.sort(dead0)
      table.sort(dead1)
      for _, x in ipairs { { out1, dead1, st1, data1 }, { out2, dead1, st2, data2 } } do
        assert.same(out0, x[1])
        assert.same(dead0, x[2])
        assert.same(st0, x[3])
        assert.same(eventtime.export(data0), eventtime.export(x[4]))
      end
    end)
  end
end)
