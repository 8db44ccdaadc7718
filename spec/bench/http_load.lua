-- What --http costs a job and what abusive clients do to it:
--   luajit spec/bench/http_load.lua [BATCHES] [RATE] [ROUNDS]
-- Runs spec/e2e/jobs/http_job.lua (100 ms batches, RATE records a second)
-- three times: without --http, with --http and no client, and with --http
-- while 100 idle connections, 10 clients that pipeline requests and never
-- read, and a stream of connections opened and dropped hit the server; a
-- fourth time with a scraper reading /metrics and /api/status in a loop.
-- Prints per run the median and 99th percentile of batch processing time
-- and scheduling delay from --stats, and the job thread's time building
-- the documents (streamrun_status_publish_seconds_total).
package.path = "./spec/?.lua;./lua/?.lua;" .. package.path
local cjson = require "cjson"
local e2e = require "helpers.e2e"
local libc = require "helpers.libc"
local net = require "helpers.net"
local proc = require "helpers.proc"

local C, K = libc.C, libc.K
local BATCHES = tonumber(arg[1]) or 100
local RATE = tonumber(arg[2]) or 20000

local function stats(path)
  local out = {}
  local f = io.open(path)
  if not f then return out end
  for line in f:lines() do
    local ok, v = pcall(cjson.decode, line)
    if ok then out[#out + 1] = v end
  end
  f:close()
  return out
end

local function pct(list, p)
  local s = {}
  for i, v in ipairs(list) do s[i] = v end
  table.sort(s)
  return s[math.max(1, math.ceil(#s * p))]
end

local function run(label, with_http, abuse)
  local dir = proc.tmpdir()
  proc.write_file(dir .. "/events.jsonl", '{"kind":"a","n":1}\n')
  local args = { "--stats", dir .. "/stats.jsonl", "--quiet", "--checkpoint", dir .. "/ckpt" }
  if with_http then args[#args + 1] = "--http"; args[#args + 1] = "127.0.0.1:0" end
  local p = e2e.start("http_job", { path = dir .. "/events.jsonl", batch = "100ms", rate = RATE, count = 1e9 }, args)
  local port
  if with_http then
    p:wait_stderr(function(t)
      port = t:match("http://127%.0%.0%.1:(%d+)/")
      return port
    end, 10)
    port = tonumber(port)
  end
  local path = dir .. "/stats.jsonl"
  proc.wait_for(function() return #stats(path) >= 20 end, 30, "warm-up")
  local from = #stats(path)
  local churn, scrapes = 0, 0
  if abuse == "abusive" then
    for _ = 1, 100 do net.try_connect(port) end
    local req = ("GET /api/status HTTP/1.1\r\nHost: x\r\n\r\n"):rep(200)
    for _ = 1, 10 do
      local c = net.try_connect(port)
      if c then C.e2e_send(c.fd, req, #req, K.MSG_NOSIGNAL) end
    end
  end
  proc.wait_for(function()
    if abuse == "abusive" then
      local c = net.try_connect(port)
      if c then
        C.e2e_send(c.fd, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 33, K.MSG_NOSIGNAL)
        c:close()
        churn = churn + 1
      end
    elseif abuse == "scraper" then
      proc.run({ "curl", "-s", "-o", "/dev/null", "http://127.0.0.1:" .. port .. "/metrics",
                 "-o", "/dev/null", "http://127.0.0.1:" .. port .. "/api/status" })
      scrapes = scrapes + 1
    end
    return #stats(path) >= from + BATCHES
  end, BATCHES, "batches")
  local publish
  if with_http then
    net.cleanup()
    local _, text = proc.run({ "curl", "-s", "--max-time", "10", "http://127.0.0.1:" .. port .. "/metrics" })
    publish = tonumber(text:match("\nstreamrun_status_publish_seconds_total (%S+)"))
    local n = tonumber(text:match("\nstreamrun_batches_total (%S+)"))
    publish = publish and n and publish * 1000 / n
  end
  p:kill("TERM")
  p:wait(10)
  local s = stats(path)
  local pm, dl = {}, {}
  for i = from + 1, from + BATCHES do
    pm[#pm + 1] = s[i].processing_ms
    dl[#dl + 1] = s[i].scheduling_delay_ms
  end
  print(("%-34s processing median %6.3f ms  p99 %7.3f ms | delay median %3d ms  p99 %3d ms | publish %s%s")
    :format(label, pct(pm, 0.5), pct(pm, 0.99), pct(dl, 0.5), pct(dl, 0.99),
      publish and ("%.3f ms/batch"):format(publish) or "-",
      churn > 0 and (" | %d connections dropped"):format(churn) or scrapes > 0 and (" | %d scrapes"):format(scrapes)
        or ""))
  proc.cleanup()
end

-- Rounds of the four runs in turn, so that a machine's changing load falls
-- on all of them alike.
local ROUNDS = tonumber(arg[3]) or 1
print(("%d batches of 100 ms at %d records/s each run, %d rounds"):format(BATCHES, RATE, ROUNDS))
for _ = 1, ROUNDS do
  run("without --http", false)
  run("--http, no client", true)
  run("--http, abusive clients", true, "abusive")
  run("--http, scraper in a loop", true, "scraper")
end
