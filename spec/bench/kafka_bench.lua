-- The Kafka row of `make bench`: records/s from an 8-partition topic of the
-- mock cluster (`streamrun kafka-mock`) through a keyed count, one process
-- and three in one group, beside kcat consuming the same topic to
-- /dev/null, all in the same run. kcat reads the topic filled beforehand.
-- The streamrun processes start on an empty topic of their own; once the
-- group has settled (8 tasks held, no rebalance for 3 s) kcat fills it, and
-- the figure is the records over the time from the first batch with
-- records to the batch that completes the count (batch times of --stats):
-- joining the group is not in it. The count is checked in the tasks' state.
local lib = require "lib"

local q, fmt = lib.quote, string.format

local M = {}

local function wait(cond, timeout_s)
  local deadline = lib.now() + timeout_s
  while lib.now() < deadline do
    local v = cond()
    if v then return v end
    lib.sh("sleep 0.05")
  end
  return nil
end

-- Starts cmd in the background; returns its pid.
local function spawn(cmd)
  return tonumber(lib.capture(cmd .. " & echo $!"))
end

-- Batches of the --stats files: first time with records, last time, records.
local function stats(paths)
  local first, last, records = nil, nil, 0
  for _, path in ipairs(paths) do
    for l in (lib.read(path) or ""):gmatch("[^\n]+") do
      local t, r = l:match('"time_ms": (%d+), "records": (%d+)')
      t, r = tonumber(t), tonumber(r)
      if r and r > 0 then
        records = records + r
        first = math.min(first or t, t)
        last = math.max(last or t, t)
      end
    end
  end
  return first, last, records
end

-- cfg: { streamrun, tmp, records, quick }. Returns lines, data, notes (as
-- the other benchmarks of spec/bench/run.lua).
function M.run(cfg, line, rate)
  local n, tmp, bin = cfg.records, cfg.tmp .. "/kafka", cfg.streamrun
  lib.sh("rm -rf " .. q(tmp) .. " && mkdir -p " .. q(tmp))
  local mock_out = tmp .. "/mock.out"
  local mock = spawn(fmt("%s kafka-mock --topic bench:8 --topic bench1:8 --topic bench3:8 < /dev/null > %s 2>&1",
    bin, q(mock_out)))
  local pids = {}
  local function cleanup()
    for _, p in ipairs(pids) do lib.sh("kill " .. p .. " 2>/dev/null") end
    lib.sh("kill " .. mock .. " 2>/dev/null")
  end
  local ok, a, b, c = pcall(function()
    local bootstrap = wait(function() return (lib.read(mock_out) or ""):match("^bootstrap: ([^\n]+)\n") end, 10)
    assert(bootstrap, "the mock cluster printed no bootstrap line")
    local input = tmp .. "/input.txt"
    local f = assert(io.open(input, "w"))
    local buf = {}
    for i = 1, n do
      buf[#buf + 1] = fmt("k%d:v%d", i % 1000, i)
      if #buf == 10000 then f:write(table.concat(buf, "\n"), "\n") buf = {} end
    end
    if #buf > 0 then f:write(table.concat(buf, "\n"), "\n") end
    f:close()
    assert(lib.sh(fmt("kcat -b %s -t bench -P -K: -l %s", q(bootstrap), q(input))), "kcat could not produce")

    local kr = lib.run(fmt("kcat -b %s -t bench -C -e -q -o beginning -f '%%k %%s\\n' > /dev/null", q(bootstrap)),
      cfg.tmp)
    local kcat_rate = kr.ok and n / kr.wall or nil

    -- processes: how many `streamrun run` in one group.
    local function streamrun(procs)
      local dir, topic = tmp .. "/ckpt" .. procs, "bench" .. procs
      local files, errs = {}, {}
      for i = 1, procs do
        files[i] = fmt("%s/p%d-%d.stats", tmp, procs, i)
        errs[i] = fmt("%s/p%d-%d.err", tmp, procs, i)
        pids[#pids + 1] = spawn(fmt("%s run spec/bench/kafka_job.lua --quiet --set brokers=%s --set group=%s "
          .. "--set topic=%s --set dir=%s --stats %s > /dev/null 2> %s", bin, q(bootstrap), topic, topic, q(dir),
          q(files[i]), q(errs[i])))
      end
      -- Settled: 8 tasks held between them and no change for 3 s.
      local last_text, since = nil, lib.now()
      local settled = wait(function()
        local text, held = "", 0
        for _, e in ipairs(errs) do
          local t = lib.read(e) or ""
          text = text .. t
          local _, opened = t:gsub("task [%w%-]+: new", "")
          local _, restored = t:gsub("task [%w%-]+: restored", "")
          local _, released = t:gsub("and released", "")
          held = held + opened + restored - released
        end
        if text ~= last_text then last_text, since = text, lib.now() end
        return held == 8 and lib.now() - since >= 3
      end, 120)
      if not settled then return nil, fmt("%d process(es): the group did not settle", procs) end
      assert(lib.sh(fmt("kcat -b %s -t %s -P -K: -l %s", q(bootstrap), topic, q(input))), "kcat could not produce")
      local done = wait(function() local _, _, r = stats(files) return r >= n end, 600)
      for _, p in ipairs(pids) do lib.sh("kill " .. p .. " 2>/dev/null") end
      wait(function() return not lib.sh("kill -0 " .. table.concat(pids, " ") .. " 2>/dev/null") end, 30)
      pids = {}
      local first, last, records = stats(files)
      local sum = 0
      local pipe = io.popen(fmt("%s inspect %s --keys counts 2>/dev/null", bin, q(dir)))
      for l in pipe:lines() do sum = sum + (tonumber(l:match('"value":(%d+)')) or 0) end
      pipe:close()
      if not done or not first then return nil, fmt("%d process(es): %d of %d records", procs, records, n) end
      return n / ((last - first) / 1000 + 0.1), fmt("%d process(es): %d records, %d in state", procs, records, sum),
        sum == n
    end
    local one, note1, ok1 = streamrun(1)
    local three, note3, ok3 = streamrun(3)
    return { kcat = kcat_rate, one = one, three = three, ok = ok1 and ok3 }, { note1, note3 }
  end)
  cleanup()
  if not ok then
    return { line("kafka", "error: " .. tostring(a):sub(1, 80), "", "", "", "") }, { error = tostring(a) }, {}
  end
  local r, notes = a, b
  local what = fmt("kafka (%dk records, 8 partitions, mock cluster)", math.floor(n / 1000))
  local lines = {
    line(what, "1 process " .. rate(r.one, "rec/s"), "kcat to /dev/null " .. rate(r.kcat, "rec/s"),
      (r.one and r.kcat) and fmt("%.2fx", r.one / r.kcat) or "-", "-", r.ok and "counts exact" or "CHECK"),
    line("", "3 processes " .. rate(r.three, "rec/s"), "1 process " .. rate(r.one, "rec/s"),
      (r.one and r.three) and fmt("%.2fx", r.three / r.one) or "-", "-", ""),
  }
  local all = { "kafka: keyed count per message key (1000 keys), one task per partition; figures from the batch "
    .. "times of the first and last batch with records (group join excluded)" }
  for _, s in ipairs(notes) do all[#all + 1] = "kafka: " .. tostring(s) end
  return lines, { records = n, kcat_records_s = r.kcat, one_process_records_s = r.one,
                  three_processes_records_s = r.three, counts_exact = r.ok }, all
end

return M
