-- The text_file job of the crash loop (spec/e2e/crash_spec.lua): every kind
-- of keyed state and a window with an inverse, each with a file output.
-- Lines are "<user> <session> <value>". --set input=PATH, out=DIR (outputs),
-- ckpt=DIR, every=DUR (checkpoint interval), max=N (max_batch_records),
-- workers=N (default 2: the first keyed segment, flat_map > map >
-- reduce_by_key > map_with_state "activity", runs on every worker, with
-- its exchange, state shards and their timeouts).
-- States and output values are arrays, whose JSON has one form (the keys of
-- a Lua table come in an order that changes from process to process).
local sr = require "streamrun"

local out = sr.param("out", ".")
local job = sr.job {
  name = "crash_file", batch = "100ms",
  max_batch_records = sr.param("max", 500),
  workers = sr.param("workers", 2),
  checkpoint = { dir = sr.param("ckpt", "ckpt"), every = sr.param("every", "300ms"), keep = 3 },
}

local records = job:text_file(sr.param("input", "input.txt"), { name = "input" })
  :map(function(line)
    local user, session, v = line:match("^(%S+) (%S+) (%d+)$")
    return { user, session, tonumber(v) }
  end)

-- Activity per name (users and sessions): records per batch summed by a
-- reducer of the job's own, then {records, batches with records} per name
-- in state, idle after 700 ms; a line for a name's 1st, 8th, ... busy batch
-- and one when it goes idle.
records:flat_map(function(r) return { r[1], r[2] } end)
  :map(function(name) return name, 1 end)
  :reduce_by_key(function(a, b) return a + b end)
  :map_with_state(sr.state_spec(function(name, n, state, time_ms)
    if state:is_timing_out() then return "idle", { name, state:get()[1], time_ms } end
    local s = state:exists() and state:get() or { 0, 0 }
    s[1], s[2] = s[1] + n, s[2] + 1
    state:update(s)
    if s[2] % 7 == 1 then return "busy", { name, s[1], s[2], time_ms } end
  end):timeout("700ms"):name("activity"))
  :to_json_lines(out .. "/activity.jsonl", { name = "activity_out" })

-- Totals per user: {n, sum, first time, last time}. A user's state starts
-- again after 37 records, so the final state depends on exactly which batch
-- held which record.
records:map(function(r) return r[1], r[3] end)
  :update_state_by_key(function(values, s, _, time_ms)
    if #values == 0 then return s end
    s = s or { 0, 0, time_ms, time_ms }
    for i = 1, #values do s[1], s[2] = s[1] + 1, s[2] + values[i] end
    s[4] = time_ms
    if s[1] >= 37 then return nil end
    return s
  end, { name = "totals" })
  :filter(function(_, s) return s[1] % 10 == 1 end)
  :to_json_lines(out .. "/totals.jsonl", { name = "totals_out" })

-- Sessions {n, sum, first time, last time} closed after 1 s (10 batches)
-- without a record; a line for a session's 1st, 26th, ... record and one
-- when it closes.
local function track(key, v, state, time_ms)
  if state:is_timing_out() then
    local s = state:get()
    return "closed", { key, s[1], s[2], s[3], s[4], time_ms }
  end
  local s = state:exists() and state:get() or { 0, 0, time_ms, time_ms }
  s[1], s[2], s[4] = s[1] + 1, s[2] + v, time_ms
  state:update(s)
  if s[1] % 25 == 1 then return "progress", { key, s[1], time_ms } end
end
records:map(function(r) return r[2], r[3] end)
  :map_with_state(sr.state_spec(track):timeout("1s"):name("sessions"))
  :to_json_lines(out .. "/sessions.jsonl", { name = "sessions_out" })

-- Sums per bucket over the last 2 s, every 500 ms, kept with the inverse.
records:map(function(r) return "b" .. (r[3] % 41), r[3] end)
  :reduce_by_key_and_window(sr.add, function(a, b) return a - b end, "2s", "500ms", { name = "buckets" })
  :save_as_text_files(out .. "/win/buckets", "txt", { name = "buckets_out" })

return job
