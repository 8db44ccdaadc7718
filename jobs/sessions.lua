-- sessions: user sessions from click events. A session is a user's clicks
-- until 30 s pass without one; each session that closes comes out once, with
-- its page count and how long it lasted. Clicks are JSON lines like
-- {"user":"ann","page":"/home","ts":1700000000.5} (ts in seconds).
--   streamrun run jobs/sessions.lua                       listen on 127.0.0.1:7077
--   streamrun run jobs/sessions.lua --set gap=10s --set port=9000
local sr = require "streamrun"

local job = sr.job { name = "sessions", batch = sr.param("batch", "1s") }

local clicks = job:listen_text(sr.param("host", "127.0.0.1"), sr.param("port", 7077),
                               { name = "clicks", format = "json" })

-- Called once per click of a user, and once more when the user's session
-- times out. The open session lives in the state; only closed ones are
-- emitted.
local function track(user, click, session, time_ms)
  if session:is_timing_out() then
    local s = session:get()
    return user, { pages = s.pages, distinct_pages = s.distinct, duration_s = s.last - s.first,
                   first_ts = s.first, last_ts = s.last }
  end
  local ts = type(click.ts) == "number" and click.ts or time_ms / 1000
  local s = session:exists() and session:get()
            or { first = ts, last = ts, pages = 0, distinct = 0, seen = {} }
  s.pages = s.pages + 1
  if click.page ~= nil and not s.seen[click.page] then
    s.seen[click.page] = true
    s.distinct = s.distinct + 1
  end
  if ts < s.first then s.first = ts end
  if ts > s.last then s.last = ts end
  session:update(s)
end

clicks:filter(function(c) return type(c) == "table" and type(c.user) == "string" end)
      :map(function(c) return c.user, c end)
      :map_with_state(sr.state_spec(track):timeout(sr.param("gap", "30s")):name("open_sessions"))
      :print(sr.param("show", 20), { name = "closed_sessions" })

return job
