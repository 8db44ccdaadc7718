-- The event-time job of the crash loop (spec/e2e/event_crash_spec.lua):
-- JSON click events {user, page, ts} from a text_file, out of order within
-- the watermark delay, with a few far behind it (late: dead letters);
-- tumbling windows with allowed lateness and sessions, each to a JSON-lines
-- file. --set input=PATH, out=DIR, ckpt=DIR, max=N (max_batch_records).
local sr = require "streamrun"

local out = sr.param("out", ".")
local job = sr.job {
  name = "event_crash", batch = "50ms",
  max_batch_records = sr.param("max", 150),
  checkpoint = { dir = sr.param("ckpt", "ckpt"), every = "100ms", keep = 3 },
}

local clicks = job:text_file(sr.param("input", "clicks.jsonl"),
  { name = "clicks", format = "json", event_time = "ts", watermark = "3s" })

-- Clicks per page and 5 s window; a late click within 2 s updates it again.
clicks:map(function(c) return c.page, 1 end)
  :reduce_by_key_and_event_window(sr.add, "5s", { allowed_lateness = "2s", name = "pages" })
  :map(function(k, w) return { k, w.start_ms, w.end_ms, w.value } end)
  :to_json_lines(out .. "/pages.jsonl", { name = "pages_out" })

-- Sessions per user (gap 4 s): clicks and the pages seen, in the order
-- folded (time order within a batch, so the same for the same cuts).
clicks:map(function(c) return c.user, { 1, c.page } end)
  :session_by_key("4s", function(a, b) return { a[1] + b[1], a[2] .. "," .. b[2] } end, { name = "sessions" })
  :map(function(k, s) return { k, s.start_ms, s.end_ms, s.value[1] } end)
  :to_json_lines(out .. "/sessions.jsonl", { name = "sessions_out" })

return job
