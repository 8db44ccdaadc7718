-- The listen_text job of the crash loop (spec/e2e/crash_spec.lua). Lines
-- are "<key> <id>": counts per key in state, and sessions per key closed
-- after `timeout` without a line; every line and every closed session goes
-- to out/events.jsonl. --set port=N, out=DIR, ckpt=DIR, batch=DUR,
-- every=DUR (checkpoint interval), timeout=DUR, workers=N (default 2: the
-- counts run on every worker).
local sr = require "streamrun"

local out = sr.param("out", ".")
local job = sr.job {
  name = "crash_listen", batch = sr.param("batch", "100ms"), workers = sr.param("workers", 2),
  checkpoint = { dir = sr.param("ckpt", "ckpt"), every = sr.param("every", "1s"), keep = 3 },
}

local keyed = job:listen_text("127.0.0.1", sr.param("port", 0), { name = "inbox" })
  :map(function(line) return line:match("^(%S+)"), line end)

keyed:map_values(function() return 1 end)
  :update_state_by_key(function(values, n)
    if #values == 0 then return n end
    return (n or 0) + #values
  end, { name = "counts" })

-- A session's state is its number of lines; closing, it gives {key, n}.
local function track(key, line, state)
  if state:is_timing_out() then return "closed", { key, state:get() } end
  state:update((state:exists() and state:get() or 0) + 1)
  return "line", line
end
keyed:map_with_state(sr.state_spec(track):timeout(sr.param("timeout", "400ms")):name("sessions"))
  :to_json_lines(out .. "/events.jsonl", { name = "events" })

return job
