-- trending: the 10 most used hashtags of the last 60 s, every 10 s, from
-- JSON posts like {"user":"ann","text":"shipping #lua and #streams"}.
--   streamrun run jobs/trending.lua                      listen on 127.0.0.1:7078
--   streamrun run jobs/trending.lua --set window=30s --set every=5s
local sr = require "streamrun"

local job = sr.job { name = "trending", batch = sr.param("batch", "1s") }

local posts = job:listen_text(sr.param("host", "127.0.0.1"), sr.param("port", 7078),
                              { name = "posts", format = "json" })

local function hashtags(post)
  if type(post) ~= "table" or type(post.text) ~= "string" then return nil end
  local tags = {}
  for tag in post.text:gmatch("#([%w_]+)") do tags[#tags + 1] = tag:lower() end
  return tags
end

local function top(n)
  return function(counts)
    table.sort(counts, function(x, y) return x[2] > y[2] or (x[2] == y[2] and x[1] < y[1]) end)
    local best = {}
    for i = 1, math.min(n, #counts) do best[i] = counts[i] end
    return best
  end
end

posts:flat_map(hashtags)
     :map(function(tag) return tag, 1 end)
     -- Counts kept incrementally: add the 10 s that entered, subtract the
     -- 10 s that left; tags that fell to 0 are dropped.
     :reduce_by_key_and_window(sr.add, function(a, b) return a - b end,
                               sr.param("window", "60s"), sr.param("every", "10s"),
                               { name = "tag_counts", filter = function(_, n) return n > 0 end })
     :transform(top(10), { name = "top10" })
     :print(10, { name = "trending" })

return job
