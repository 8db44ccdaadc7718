-- How long a hot reload takes for a job holding N keys of state (issue 6:
-- it must not depend on N). Not part of make test.
--
-- The job: a generator of 1M records over N distinct keys into
-- map_with_state with a 1 h timeout, so the state table and its timing
-- wheel hold N entries, and an idle listen_text that keeps the job going
-- once the generator is done. (Not initial_state: `streamrun run` ignores
-- it, see spec/e2e/reload_spec.lua.) Once the status line shows N keys,
-- SIGHUP is sent RELOADS times, two batches apart; each stderr line is
-- timestamped as it arrives (poll(2) on the pipe). Reported per N:
--   reload   the batch's status line -> the "reloaded" line: the reload
--            itself (fresh VM, script loaded and validated, C objects
--            handed over, old VM closed, new plan compiled), since drive()
--            returns RELOAD right after the status line. The first reload
--            is shown apart: it closes the VM that ran the 1M records, and
--            lua_close frees that VM's heap (its string table grew with
--            the distinct strings it saw), which costs 50-150 ms; the
--            others close VMs that ran two idle batches (median of 14).
--   SIGHUP   SIGHUP -> the "reloaded" line: what a user sees, with the wait
--            for the batch boundary (SIGHUP is sent just after one, so
--            about one batch, 200 ms).
-- --checkpoint: also runs with a checkpoint every batch: a reload waits for
-- the checkpoint being written (a reload and a checkpoint never
-- interleave), and that wait grows with N.
-- --distinct: also runs with 1M distinct records whatever N (keys made
-- from them): the first reload then costs about as much for 1k keys.
-- --settle=S: the job idles S seconds before the first reload.
--   luajit spec/bench/reload_time.lua [--checkpoint] [--distinct] [--settle=S] [keys ...]
--   (default 1000 1000000)
package.path = "./lua/?.lua;./lua/?/init.lua;./spec/?.lua;" .. package.path
local proc = require "helpers.proc"
local e2e = require "helpers.e2e"
local libc = require "helpers.libc"

local RELOADS = 15
local SETTLE = 0 -- seconds to let the job idle before the first reload (--settle S)

local JOB = [[
local sr = require "streamrun"
local n = tonumber(sr.param("keys", "1000"))
local ckpt = sr.param("ckpt", "")
local job = sr.job { name = "reload_time", batch = "200ms",
                     checkpoint = ckpt ~= "" and { dir = ckpt, every = "200ms" } or nil }
-- 1M records over N distinct keys from a generator (1M/s), whatever N, so
-- the VM that runs them has as much garbage; listen_text keeps the job going.
-- With --set distinct=1 the records are 1M distinct strings and the key is
-- made from them, so the old VM holds the same garbage as with 1M keys.
local distinct = sr.param("distinct", "0") == "1"
job:generator(function(i) return distinct and ("r" .. i) or ("k" .. (i % n)) end,
              { name = "keys", rate = 1000000, count = 1000000 })
  :map(function(r) return distinct and "k" .. (tonumber(r:sub(2)) % n) or r, 1 end)
  :map_with_state(sr.state_spec(function(_, _, st)
    st:update((st:exists() and st:get() or 0) + 1)
  end):timeout("1h"):name("counts"))
  :foreach_batch(function() end, { name = "out" })
job:listen_text("127.0.0.1", 0, { name = "idle" }):foreach_batch(function() end, { name = "idle_out" })
return job
]]

local function median(list)
  local t = {}
  for i, x in ipairs(list) do t[i] = x end
  table.sort(t)
  return t[math.floor((#t + 1) / 2)]
end

local function rss_kb(pid)
  return tonumber(((proc.read_file("/proc/" .. pid .. "/status") or ""):match("VmRSS:%s*(%d+) kB")))
end

local function run(n, with_ckpt, distinct)
  local dir = proc.tmpdir()
  local path = proc.write_file(dir .. "/job.lua", JOB)
  local argv = { e2e.BIN, "run", path, "--set", "keys=" .. n, "--set", "distinct=" .. (distinct and 1 or 0) }
  if with_ckpt then
    argv[#argv + 1] = "--set"
    argv[#argv + 1] = "ckpt=" .. dir .. "/ckpt"
  end
  local p = proc.spawn(argv)
  -- Every stderr line with the time it was read.
  local lines, consumed = {}, 0
  local function poll()
    p:pump()
    while true do
      local nl = p.stderr:find("\n", consumed + 1, true)
      if not nl then break end
      lines[#lines + 1] = { text = p.stderr:sub(consumed + 1, nl - 1), t = proc.now() }
      consumed = nl
    end
    if p:exited() then error("the job exited\n" .. p:describe(), 0) end
  end
  local pfd = libc.ffi.new("e2e_pollfd_t[1]")
  local function wait(cond, timeout_s, what)
    local deadline = proc.now() + timeout_s
    while true do
      poll()
      local v = cond()
      if v then return v end
      if proc.now() > deadline then error("timed out waiting for " .. what .. "\n" .. p:describe(), 0) end
      -- Until stderr has more (the line's time is when it arrives).
      pfd[0].fd, pfd[0].events, pfd[0].revents = p.fds.stderr or -1, 1, 0
      libc.C.e2e_poll(pfd, 1, 20)
    end
  end
  local keys_pattern = ", " .. n .. " keys,"
  wait(function()
    for i = #lines, math.max(1, #lines - 3), -1 do
      if lines[i].text:find(keys_pattern, 1, true) then return true end
    end
  end, 120, n .. " keys in the status line")
  if SETTLE > 0 then
    local until_t = proc.now() + SETTLE
    wait(function() return proc.now() >= until_t end, SETTLE + 5, "the settling time")
  end
  local rss_before = rss_kb(p.pid)
  local reload_ms, sighup_ms = {}, {}
  for r = 1, RELOADS do
    -- Let a couple of batches go by between reloads.
    local base = #lines
    wait(function() return #lines >= base + 2 end, 10, "two more status lines")
    local from = #lines
    local t_hup = proc.now()
    p:kill("HUP")
    local at = wait(function()
      for i = from + 1, #lines do
        if lines[i].text:find("streamrun: reloaded ", 1, true) then return i end
      end
    end, 60, "the reloaded line")
    local status
    for i = at - 1, 1, -1 do
      if lines[i].text:find("^streamrun: batch ") then status = lines[i] break end
    end
    reload_ms[r] = (lines[at].t - status.t) * 1000
    sighup_ms[r] = (lines[at].t - t_hup) * 1000
    -- The keys are all there after the reload.
    wait(function()
      for i = at + 1, #lines do
        if lines[i].text:find("^streamrun: batch ") then
          assert(lines[i].text:find(keys_pattern, 1, true), lines[i].text)
          return true
        end
      end
    end, 60, "a status line after the reload")
  end
  local rss_after = rss_kb(p.pid)
  p:kill("TERM")
  p:wait(120)
  proc.cleanup()
  local label = (with_ckpt and "checkpoint every batch" or "no checkpoint")
    .. (distinct and ", 1M distinct records" or "")
  local first = table.remove(reload_ms, 1)
  table.remove(sighup_ms, 1)
  print(("%8d keys, %-44s: first reload %7.2f ms; then median %6.2f ms (min %.2f, max %.2f); SIGHUP to log"
    .. " line %6.1f ms; VmRSS %d -> %d kB")
    :format(n, label, first, median(reload_ms), math.min(unpack(reload_ms)), math.max(unpack(reload_ms)),
      median(sighup_ms), rss_before, rss_after))
  local each = {}
  for i, x in ipairs(reload_ms) do each[i] = ("%.2f"):format(x) end
  print("  the others, in order (ms): " .. table.concat(each, " "))
  print(("RESULT %d %s %.2f %.1f"):format(n, with_ckpt and "ckpt" or "plain", median(reload_ms), median(sighup_ms)))
end

local with_ckpt, distinct, sizes = false, false, {}
for _, a in ipairs(arg) do
  if a == "--checkpoint" then with_ckpt = true
  elseif a == "--distinct" then distinct = true
  elseif a:match("^%-%-settle=") then SETTLE = tonumber(a:match("=(.*)"))
  else sizes[#sizes + 1] = tonumber(a) end
end
if #sizes == 0 then sizes = { 1000, 1000000 } end
-- The job and its temp dir go whatever happens.
local function measure(...)
  local ok, err = pcall(run, ...)
  proc.cleanup()
  if not ok then error(err, 0) end
end
for _, n in ipairs(sizes) do measure(n, false) end
if distinct then
  for _, n in ipairs(sizes) do measure(n, false, true) end
end
if with_ckpt then
  for _, n in ipairs(sizes) do measure(n, true) end
end
