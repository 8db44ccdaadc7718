-- Hot reload under stress (issue 6): 100 reloads in a row (SIGHUP, each
-- awaited through its "reloaded" log line) while a sender feeds the job
-- over listen_text the whole time. Every old VM must be closed: the
-- process's resident memory after 100 reloads may not exceed what it was
-- after 10 by more than RSS_BOUND_KB; every line must be counted exactly
-- once, by a running count in state that never resets.
--
-- The bound, 4 MB: a Lua VM with the streamrun library loaded and this job
-- compiled takes about 455 kB resident (50 such VMs kept open in one
-- process: +22.7 MB), so 90 VMs left open would add some 40 MB, and a leak
-- of a tenth of a VM per reload would pass 4 MB. Measured with old VMs
-- closed: 0 to 70 kB of growth (the process is about 4 MB in all); the
-- numbers are printed on stderr.
local cjson = require "cjson"
local proc = require "helpers.proc"
local net = require "helpers.net"
local e2e = require "helpers.e2e"

local RELOADS = 100
local RATE = 2000          -- lines per second
local RSS_BOUND_KB = 4 * 1024

local JOB = [[
local sr = require "streamrun"
local job = sr.job { name = "reload_stress", batch = "50ms" }
job:listen_text("127.0.0.1", sr.param("port", 0), { name = "inbox" })
  :map(function(l) return "all", l end)
  :map_with_state(sr.state_spec(function(_, line, st)
    local c = (st:exists() and st:get() or 0) + 1
    st:update(c)
    return { n = tonumber(line), c = c }
  end):name("count"))
  :to_json_lines(sr.param("out", "events.jsonl"), { name = "events" })
return job
]]

local function rss_kb(pid)
  local status = proc.read_file("/proc/" .. pid .. "/status") or ""
  return tonumber(status:match("VmRSS:%s*(%d+) kB"))
end

local function count_lines(path)
  local n = 0
  for _ in (proc.read_file(path) or ""):gmatch("\n") do n = n + 1 end
  return n
end

describe("e2e hot reload stress", function()
  after_each(function()
    proc.cleanup()
    net.cleanup()
  end)

  it(RELOADS .. " reloads in a row while lines flow: memory does not grow with them, every line counted once", function()
    local dir = proc.tmpdir()
    local path = proc.write_file(dir .. "/job.lua", JOB)
    local out = dir .. "/events.jsonl"
    local p, conn, port
    for _ = 1, 2 do
      port = net.free_port()
      p = proc.spawn({ e2e.BIN, "run", path, "--quiet", "--set", "port=" .. port, "--set", "out=" .. out })
      conn = proc.wait_for(function()
        local c = net.try_connect(port)
        if c then return c end
        if p:exited() then return "exited" end
      end, 5, function() return "the job to listen on port " .. port .. "\n" .. p:describe() end)
      if conn ~= "exited" then break end
      p:wait(5)
      assert(p.stderr:find("in use", 1, true), p:describe())
    end
    assert(conn ~= "exited", "the job could not listen")

    local sent, t0, sending = 0, proc.now(), true
    local function feed()
      if not sending then return end
      local due = math.floor((proc.now() - t0) * RATE)
      if due <= sent then return end
      local parts = {}
      for i = sent + 1, due do parts[#parts + 1] = i end
      conn:send(table.concat(parts, "\n") .. "\n")
      sent = due
    end
    local function wait(cond, timeout_s, what)
      return proc.wait_for(function()
        feed()
        p:pump()
        if p:exited() then error("the job exited while waiting for " .. what .. "\n" .. p:describe(), 0) end
        return cond()
      end, timeout_s or 5, function() return what .. "\n" .. p:describe() end)
    end
    local function reloads()
      local n = 0
      for _ in p.stderr:gmatch("streamrun: reloaded ") do n = n + 1 end
      return n
    end

    wait(function() return count_lines(out) >= 200 end, 5, "the first lines in the output")
    local rss = {}
    rss[0] = rss_kb(p.pid)
    local started = proc.now()
    for i = 1, RELOADS do
      p:kill("HUP")
      wait(function() return reloads() >= i end, 5, ("reload %d's log line"):format(i))
      if i == 10 or i == RELOADS then rss[i] = rss_kb(p.pid) end
    end
    local took = proc.now() - started
    assert.equal(0, select(2, p.stderr:gsub("reload of [^\n]* failed", "")), p.stderr)
    assert.equal(RELOADS, reloads())

    sending = false
    wait(function() return count_lines(out) >= sent end, 10, "every line sent in the output")
    conn:close()
    p:kill("TERM")
    assert.equal(0, p:wait(5), p:describe())

    local seen, n = {}, 0
    for line in (proc.read_file(out) or ""):gmatch("[^\n]+") do
      local rec = cjson.decode(line)
      n = n + 1
      assert.is_nil(seen[rec.n], "line " .. rec.n .. " output twice")
      seen[rec.n] = true
      assert.equal(n, rec.c, "the running count at output record " .. n)
    end
    assert.equal(sent, n)
    for i = 1, sent do assert.truthy(seen[i], "line " .. i .. " never output") end

    io.stderr:write(("reload stress: %d reloads in %.1f s (%.0f ms each), %d lines; VmRSS %d kB at the start,"
      .. " %d kB after 10 reloads, %d kB after %d (%+d kB)\n"):format(RELOADS, took, took * 1000 / RELOADS,
      sent, rss[0], rss[10], rss[RELOADS], RELOADS, rss[RELOADS] - rss[10]))
    assert.is_true(rss[RELOADS] - rss[10] <= RSS_BOUND_KB,
      ("VmRSS grew by %d kB from reload 10 to reload %d (bound %d kB)"):format(rss[RELOADS] - rss[10], RELOADS,
        RSS_BOUND_KB))
  end)
end)
