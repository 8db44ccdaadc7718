-- moving_average: per sensor, the average of its readings over the last
-- 30 s, every 10 s. Readings are JSON lines like {"sensor":"t1","value":21.5}.
--   streamrun run jobs/moving_average.lua                listen on 127.0.0.1:7079
--   streamrun run jobs/moving_average.lua --set window=1m --set every=15s
local sr = require "streamrun"

local job = sr.job { name = "moving_average", batch = sr.param("batch", "1s") }

local readings = job:listen_text(sr.param("host", "127.0.0.1"), sr.param("port", 7079),
                                 { name = "readings", format = "json" })

local function add(a, b) return { a[1] + b[1], a[2] + b[2] } end
local function subtract(a, b) return { a[1] - b[1], a[2] - b[2] } end

readings:filter(function(r)
           return type(r) == "table" and type(r.sensor) == "string" and type(r.value) == "number"
         end)
        :map(function(r) return r.sensor, { r.value, 1 } end)
        -- (sum, count) per sensor over the window, kept incrementally.
        :reduce_by_key_and_window(add, subtract, sr.param("window", "30s"), sr.param("every", "10s"),
                                  { name = "sums", filter = function(_, s) return s[2] > 0 end })
        :map_values(function(s) return s[1] / s[2] end)
        :print(sr.param("show", 20), { name = "averages" })

return job
