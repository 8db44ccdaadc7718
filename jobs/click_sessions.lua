-- click_sessions: user sessions in event time from a file of click events.
-- A session is a user's clicks until 5 minutes of event time pass without
-- one (the clicks' own times, not when they are read); clicks may come up
-- to 2 minutes out of order. Every session comes out once, when the
-- watermark passes its end, and the end of the file closes the rest. Clicks
-- are JSON lines like {"user":"ann","page":"/home","ts":"2026-03-01T09:00:05Z"}
-- (ts: RFC 3339, or epoch ms); one with no usable time is a dead letter.
--   streamrun run jobs/click_sessions.lua                      jobs/clicks.jsonl
--   streamrun run jobs/click_sessions.lua --set path=clicks.jsonl --set gap=30m
local sr = require "streamrun"

local job = sr.job { name = "click_sessions", batch = "1s", max_batch_records = sr.param("max", 100000) }

local clicks = job:text_file(sr.param("path", "jobs/clicks.jsonl"),
  { name = "clicks", format = "json", event_time = "ts", watermark = sr.param("delay", "2m") })

-- A session's value: its clicks and how many times each page was seen,
-- merged as sessions merge (in any order: counts add up).
local function merge(a, b)
  local pages = {}
  for p, n in pairs(a.pages) do pages[p] = n end
  for p, n in pairs(b.pages) do pages[p] = (pages[p] or 0) + n end
  return { clicks = a.clicks + b.clicks, pages = pages }
end

local function clock(ms) return os.date("!%H:%M:%S", math.floor(ms / 1000)) end

clicks:filter(function(c) return type(c.user) == "string" end)
      :map(function(c) return c.user, { clicks = 1, pages = { [tostring(c.page)] = 1 } } end)
      :session_by_key(sr.param("gap", "5m"), merge, { name = "sessions" })
      :map(function(user, s)
        local distinct = 0
        for _ in pairs(s.value.pages) do distinct = distinct + 1 end
        return user, { from = clock(s.start_ms), to = clock(s.end_ms), clicks = s.value.clicks,
                       pages = distinct }
      end)
      :print(sr.param("show", 20), { name = "closed_sessions" })

return job
