-- --http: /metrics parsed and checked against what the job did (records in,
-- batches, dead letters, state keys), /api/status checked, the status page
-- loaded in headless Chromium with its charts drawn from live data (and a
-- screenshot in build/status-page.png), clients that connect in numbers or
-- never read do not slow batches, the server survives a reload, and bad or
-- taken addresses are refused.
local cjson = require "cjson"
local e2e = require "helpers.e2e"
local libc = require "helpers.libc"
local net = require "helpers.net"
local proc = require "helpers.proc"

local C, K = libc.C, libc.K

local COUNT, GOOD, BAD = 300, 40, 5

-- The events file: GOOD records of kinds a, b, c and BAD lines that are not
-- JSON, interleaved.
local function events_file(dir)
  local lines = {}
  for i = 1, GOOD do
    lines[#lines + 1] = ('{"kind":"%s","n":%d}'):format(({ "a", "b", "c" })[i % 3 + 1], i)
    if i % 8 == 0 then lines[#lines + 1] = "not json " .. i end
  end
  local path = dir .. "/events.jsonl"
  proc.write_file(path, table.concat(lines, "\n") .. "\n")
  return path
end

-- Starts http_job with --http on a port the server picks; returns the
-- process and the base URL.
local function start(dir, params, args)
  params = params or {}
  params.path = params.path or events_file(dir)
  -- Dead letters go to the checkpoint directory's file, not to a stderr
  -- nobody reads while batches are awaited.
  local argv = { "--http", "127.0.0.1:0", "--stats", dir .. "/stats.jsonl", "--quiet", "--checkpoint", dir .. "/ckpt" }
  for _, a in ipairs(args or {}) do argv[#argv + 1] = a end
  local p = e2e.start("http_job", params, argv)
  return p, e2e.http_base(p)
end

-- GET url with curl: the body (raises on a failure or a status >= 400).
local function fetch(url)
  local code, out, err = proc.run({ "curl", "-sS", "--fail", "--max-time", "10", url }, { timeout = 15 })
  assert(code == 0, ("curl %s: exit %s: %s"):format(url, tostring(code), err))
  return out
end

local function stats(dir)
  local f = io.open(dir .. "/stats.jsonl")
  if not f then return {} end
  local out = {}
  for line in f:lines() do
    local ok, v = pcall(cjson.decode, line)
    if ok then out[#out + 1] = v end
  end
  f:close()
  return out
end

local function total(list, field)
  local n = 0
  for _, s in ipairs(list) do n = n + s[field] end
  return n
end

-- Waits until the job has read every record of its bounded sources.
local function wait_all_read(dir, p)
  proc.wait_for(function() return total(stats(dir), "records") >= COUNT + GOOD + BAD end, 15,
    function() return "every record read\n" .. p:describe() end)
end

-- The exposition as { types = name -> type, helps = name -> true,
-- samples = { {name, labels, value} } }, checking each line's syntax.
local function parse_metrics(text)
  local m = { types = {}, helps = {}, samples = {} }
  for line in text:gmatch("[^\n]+") do
    local name, kind = line:match("^# TYPE ([%a_:][%w_:]*) (%a+)$")
    if name then
      m.types[name] = kind
    elseif line:match("^# HELP ") then
      m.helps[line:match("^# HELP ([%a_:][%w_:]*) ")] = true
    else
      local sname, labels, value = line:match("^([%a_:][%w_:]*)(%b{}) (%S+)$")
      if not sname then
        sname, value = line:match("^([%a_:][%w_:]*) (%S+)$")
        labels = "{}"
      end
      assert(sname, "not a sample line: " .. line)
      local l = {}
      for k, v in labels:gmatch('([%a_][%w_]*)="([^"]*)"') do l[k] = v end
      local num = value == "+Inf" and math.huge or tonumber(value)
      assert(num, "not a number in: " .. line)
      m.samples[#m.samples + 1] = { name = sname, labels = l, value = num }
    end
  end
  return m
end

-- The value of the sample name{labels}, or nil.
local function sample(m, name, labels)
  for _, s in ipairs(m.samples) do
    if s.name == name then
      local match = true
      for k, v in pairs(labels or {}) do if s.labels[k] ~= v then match = false end end
      if match then return s.value end
    end
  end
  return nil
end

-- The status once it shows every record read (it is rebuilt after
-- batches, at most every 250 ms).
local function status_all_read(base)
  return proc.wait_for(function()
    local st = cjson.decode(fetch(base .. "/api/status"))
    return st.totals.records == COUNT + GOOD + BAD and st
  end, 10, "a status with every record read")
end

local function median(list)
  table.sort(list)
  return list[math.floor((#list + 1) / 2)]
end

local function chromium(args)
  local argv = { "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--no-first-run", "--user-data-dir=" .. proc.tmpdir() }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  local code, out, err = proc.run(argv, { timeout = 90 })
  assert(code == 0, "chromium failed (exit " .. tostring(code) .. "): " .. tostring(err):sub(-2000))
  return out
end

describe("e2e --http", function()
  local dir
  before_each(function() dir = proc.tmpdir() end)
  after_each(function()
    proc.cleanup()
    net.cleanup()
  end)

  it("serves /metrics that agree with what the job did", function()
    local p, base = start(dir)
    wait_all_read(dir, p)
    -- The documents are rebuilt after batches: wait for one after every
    -- record was read.
    local before = #stats(dir)
    local m = proc.wait_for(function()
      local got = parse_metrics(fetch(base .. "/metrics"))
      return sample(got, "streamrun_batches_total") >= before and got
    end, 10, "the metrics of batch " .. before)
    local after = #stats(dir)

    -- Every sample's family has a TYPE and a HELP; counters end in _total,
    -- histograms have their three kinds of series.
    for _, s in ipairs(m.samples) do
      local family = s.name:gsub("_bucket$", ""):gsub("_sum$", ""):gsub("_count$", "")
      local kind = m.types[s.name] or m.types[family]
      assert.is_truthy(kind, "no TYPE for " .. s.name)
      assert.is_true(m.helps[s.name] or m.helps[family], "no HELP for " .. s.name)
      assert.truthy(s.name:match("^streamrun_"), s.name)
      if kind == "counter" then assert.truthy(s.name:match("_total$"), s.name) end
    end

    -- Records in, per source: what the sources had, bad lines too.
    assert.equal(COUNT, sample(m, "streamrun_records_in_total", { source = "numbers" }))
    assert.equal(GOOD + BAD, sample(m, "streamrun_records_in_total", { source = "events" }))
    assert.equal(0, sample(m, "streamrun_records_in_total", { source = "idle" }))
    -- Batches: between the --stats lines before and after the request.
    local batches = sample(m, "streamrun_batches_total")
    assert.is_true(batches >= before and batches <= after, ("%d batches, stats %d..%d"):format(batches, before, after))
    -- The histogram: cumulative buckets, +Inf = count = batches.
    local prev, buckets = -1, 0
    for _, s in ipairs(m.samples) do
      if s.name == "streamrun_batch_processing_seconds_bucket" then
        assert.is_true(s.value >= prev)
        prev, buckets = s.value, buckets + 1
      end
    end
    assert.is_true(buckets >= 5)
    assert.equal(batches, sample(m, "streamrun_batch_processing_seconds_bucket", { le = "+Inf" }))
    assert.equal(batches, sample(m, "streamrun_batch_processing_seconds_count"))
    local sum = sample(m, "streamrun_batch_processing_seconds_sum")
    local stats_ms = total({ unpack(stats(dir), 1, batches) }, "processing_ms")
    assert.is_true(sum > 0 and math.abs(sum * 1000 - stats_ms) < 0.01 * batches + 1, ("sum %g s, stats %g ms")
      :format(sum, stats_ms))
    -- Dead letters per source: every tenth number (rejected by the stage
    -- "check", counted for the source it came from) and the bad lines.
    assert.equal(COUNT / 10, sample(m, "streamrun_dead_letters_total", { source = "numbers" }))
    assert.equal(BAD, sample(m, "streamrun_dead_letters_total", { source = "events" }))
    -- State keys: the remainders of 7.
    assert.equal(7, sample(m, "streamrun_state_keys", { stage = "totals" }))
    assert.equal(1, sample(m, "streamrun_info", { job = "http_job" }))
    assert.equal(0, sample(m, "streamrun_reloads_total"))
    assert.equal("histogram", m.types.streamrun_batch_processing_seconds)
    assert.equal("gauge", m.types.streamrun_scheduling_delay_seconds)
    assert.is_true(sample(m, "streamrun_stage_seconds_total", { stage = "totals" }) > 0)

    p:kill("TERM")
    assert.equal(0, p:wait(10))
  end)

  it("serves /api/status: the job, its stages, the last batches, sources, dead letters", function()
    local path = events_file(dir)
    local p, base = start(dir, { path = path })
    wait_all_read(dir, p)
    local st = status_all_read(base)
    local after = #stats(dir)
    assert.equal("http_job", st.job.name)
    assert.equal(200, st.job.batch_ms)
    assert.equal(COUNT + GOOD + BAD, st.totals.records)
    assert.equal(COUNT / 10 + BAD, st.totals.dead_letters)
    assert.is_true(st.totals.batches >= 1 and st.totals.batches <= after)
    -- The last batches, in order, as --stats wrote them.
    local s = stats(dir)
    assert.is_true(#st.batches >= 1 and #st.batches <= 120)
    for i, b in ipairs(st.batches) do
      local want = s[b.batch]
      assert.equal(want.records, b.records)
      assert.equal(want.time_ms, b.time_ms)
      assert.equal(want.scheduling_delay_ms, b.scheduling_delay_ms)
      assert.is_true(math.abs(want.processing_ms - b.processing_ms) < 0.01)
      if i > 1 then assert.equal(st.batches[i - 1].batch + 1, b.batch) end
    end
    assert.equal(st.totals.batches, st.batches[#st.batches].batch)
    -- The stage graph: every stage, its inputs, time and keys.
    local by = {}
    for _, stage in ipairs(st.stages) do by[stage.name] = stage end
    for _, name in ipairs { "numbers", "check", "totals", "events", "idle" } do
      assert.is_truthy(by[name], "no stage " .. name)
    end
    assert.same({ "check" }, by.totals.inputs)
    assert.equal("update_state_by_key", by.totals.op)
    assert.equal(7, by.totals.state_keys)
    assert.is_true(by.totals.total_ms > 0)
    assert.same({ { stage = "totals", keys = 7 } }, st.state)
    -- Sources and where they stand: the file read to its end.
    local src = {}
    for _, x in ipairs(st.sources) do src[x.name] = x end
    assert.equal(GOOD + BAD, src.events.records_total)
    assert.equal(COUNT, src.numbers.records_total)
    proc.wait_for(function()
      local now = cjson.decode(fetch(base .. "/api/status"))
      for _, x in ipairs(now.sources) do
        if x.name == "events" then return x.position and x.position.offset == #proc.read_file(path) end
      end
    end, 10, "the events file's position at its end")
    -- Dead letters: counts per source, the last 20 newest first.
    local counts = {}
    for _, d in ipairs(st.dead_letters.by_source) do counts[d.source] = d.count end
    assert.same({ numbers = COUNT / 10, events = BAD }, counts)
    assert.equal(20, #st.dead_letters.recent)
    for i = 2, #st.dead_letters.recent do
      assert.equal(st.dead_letters.recent[i - 1].seq - 1, st.dead_letters.recent[i].seq)
    end
    local seen_json = false
    for _, d in ipairs(st.dead_letters.recent) do
      assert.is_false(d.cut) -- short records, shown whole
      if d.source == "events" then
        seen_json = true
        assert.truthy(d.reason:find("invalid JSON", 1, true))
        assert.truthy(d.record:match("^not json %d+$"))
      else
        assert.truthy(d.reason:find("stage check", 1, true))
        assert.equal(0, tonumber(d.record) % 10)
      end
    end
    assert.is_true(seen_json or st.dead_letters.recent[20].seq > BAD)
    -- Checkpoints: at least the first, written and timed.
    assert.is_true(st.checkpoint.written >= 1)
    assert.is_true(st.checkpoint.last_duration_ms >= 0)
    p:kill("TERM")
    assert.equal(0, p:wait(10))
  end)

  it("draws the live page in headless Chromium from the job's data", function()
    local p, base = start(dir)
    wait_all_read(dir, p)
    local before = status_all_read(base)
    local dom = chromium { "--virtual-time-budget=5000", "--dump-dom", base .. "/" }
    proc.write_file(e2e.ROOT .. "/build/status-page.dom.html", dom)
    local after = cjson.decode(fetch(base .. "/api/status"))
    -- The page rendered from /api/status at least once.
    assert.truthy(dom:match('data%-rendered="(%d+)"'), "the page never rendered:\n" .. dom:sub(1, 2000))
    local shown = tonumber(dom:match('<body[^>]-data%-batches="(%d+)"'))
    assert.is_true(shown >= before.totals.batches and shown <= after.totals.batches)
    -- Three charts, one point per recent batch of the status it drew.
    local points = {}
    for n in dom:gmatch('<polyline[^>]-data%-points="(%d+)"') do points[#points + 1] = tonumber(n) end
    assert.equal(3, #points)
    local want = math.min(shown, 120)
    for _, n in ipairs(points) do assert.equal(want, n) end
    local coords = dom:match('<polyline points="([^"]*)"')
    local _, ncoords = coords:gsub("[%d.]+,[%d.]+", "")
    assert.equal(want, ncoords)
    -- The figures shown are the job's.
    local function shown_text(id) return dom:match('id="' .. id:gsub("%-", "%%-") .. '">([^<]*)<') end
    assert.equal(tostring(COUNT + GOOD + BAD), shown_text("total-records"))
    assert.equal(tostring(COUNT / 10 + BAD), shown_text("total-dead"))
    assert.equal("http_job", shown_text("job-name"))
    assert.equal("7", shown_text("state-keys"))
    -- The stage graph: a box per stage, the stateful one with its keys.
    local _, boxes = dom:gsub('<g class="stage"', "")
    assert.equal(#after.stages, boxes)
    assert.truthy(dom:find('data%-stage="totals"'))
    assert.truthy(dom:match('data%-stage="totals".-7 keys'))
    -- Recent dead letters: 20 rows.
    local dead = dom:match('<table id="dead%-table">.-<tbody>(.-)</tbody>')
    local _, rows = dead:gsub("<tr>", "")
    assert.equal(20, rows)

    -- The screenshot for the README and the closing note.
    local shot = e2e.ROOT .. "/build/status-page.png"
    os.remove(shot)
    chromium { "--virtual-time-budget=5000", "--hide-scrollbars", "--window-size=1280,1100",
               "--screenshot=" .. shot, base .. "/" }
    local png = proc.read_file(shot)
    assert.equal("\137PNG\r\n\26\n", png:sub(1, 8))
    assert.is_true(#png > 20000, "a screenshot of " .. #png .. " bytes")
    p:kill("TERM")
    assert.equal(0, p:wait(10))
  end)

  it("keeps its batches on time while clients connect in numbers or never read", function()
    -- A steady load: 2000 records a second in 100 ms batches.
    local p, base = start(dir, { batch = "100ms", rate = 2000, count = 10000000 })
    local function window(n)
      local from = #stats(dir)
      proc.wait_for(function() return #stats(dir) >= from + n end, 30, n .. " batches")
      local s = stats(dir)
      local proc_ms, delay = {}, {}
      for i = from + 1, from + n do
        proc_ms[#proc_ms + 1] = s[i].processing_ms
        delay[#delay + 1] = s[i].scheduling_delay_ms
      end
      return median(proc_ms), math.max(unpack(delay)), median(delay)
    end
    window(10) -- warm-up
    local t0 = proc.now()
    local base_proc, base_max_delay, base_delay = window(30)
    local base_wall = proc.now() - t0

    -- Abuse: idle connections past the server's limit, clients that
    -- pipeline requests for the status and never read the answers, and a
    -- stream of connections opened and dropped while batches run.
    local idle = {}
    for _ = 1, 100 do idle[#idle + 1] = net.try_connect(tonumber(base:match(":(%d+)$"))) end
    local port = tonumber(base:match(":(%d+)$"))
    local req = ("GET /api/status HTTP/1.1\r\nHost: x\r\n\r\n"):rep(200)
    for _ = 1, 10 do
      local c = net.try_connect(port)
      if c then C.e2e_send(c.fd, req, #req, K.MSG_NOSIGNAL) end
    end
    local churn = 0
    t0 = proc.now()
    local from = #stats(dir)
    proc.wait_for(function()
      local c = net.try_connect(port)
      if c then
        C.e2e_send(c.fd, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 33, K.MSG_NOSIGNAL)
        c:close()
        churn = churn + 1
      end
      return #stats(dir) >= from + 30
    end, 30, "30 batches under abuse")
    local abused_wall = proc.now() - t0
    local s = stats(dir)
    local proc_ms, delay = {}, {}
    for i = from + 1, from + 30 do
      proc_ms[#proc_ms + 1] = s[i].processing_ms
      delay[#delay + 1] = s[i].scheduling_delay_ms
    end
    local ab_proc, ab_max_delay, ab_delay = median(proc_ms), math.max(unpack(delay)), median(delay)
    io.stderr:write(("\n[http abuse] median processing %.3f ms -> %.3f ms; median delay %d -> %d ms, max %d -> %d ms;"
      .. " 30 batches in %.2f s -> %.2f s; %d connections opened and dropped\n")
      :format(base_proc, ab_proc, base_delay, ab_delay, base_max_delay, ab_max_delay, base_wall, abused_wall, churn))
    -- Batch time as without them (generous bounds: a shared, loaded
    -- machine), and the cadence kept.
    assert.is_true(ab_proc <= 3 * base_proc + 5, ("median processing %.3f ms, was %.3f"):format(ab_proc, base_proc))
    assert.is_true(ab_delay <= base_delay + 50, ("median delay %d ms, was %d"):format(ab_delay, base_delay))
    assert.is_true(abused_wall <= 30 * 0.1 * 1.5 + 1, ("30 batches of 100 ms took %.2f s"):format(abused_wall))
    -- Once the abusers are gone, the server answers again.
    for _, c in ipairs(idle) do c:close() end
    net.cleanup()
    proc.wait_for(function()
      local code = proc.run({ "curl", "-sS", "--fail", "--max-time", "2", base .. "/metrics" }, { timeout = 5 })
      return code == 0
    end, 5, "the server to answer again")
    p:kill("TERM")
    assert.equal(0, p:wait(10))
  end)

  it("keeps serving across a reload and counts it", function()
    local p, base = start(dir)
    wait_all_read(dir, p)
    local m1
    proc.wait_for(function()
      m1 = parse_metrics(fetch(base .. "/metrics"))
      return (sample(m1, "streamrun_checkpoints_total") or 0) >= 1
    end, 15, "a checkpoint before the reload")
    p:kill("HUP")
    p:wait_stderr("reloaded", 15)
    local n = sample(m1, "streamrun_batches_total")
    proc.wait_for(function()
      return sample(parse_metrics(fetch(base .. "/metrics")), "streamrun_batches_total") > n
    end, 10, "a batch after the reload")
    local m2 = parse_metrics(fetch(base .. "/metrics"))
    assert.equal(1, sample(m2, "streamrun_reloads_total"))
    assert.equal(COUNT, sample(m2, "streamrun_records_in_total", { source = "numbers" }))
    assert.equal(7, sample(m2, "streamrun_state_keys", { stage = "totals" }))
    -- Counters go on across the reload: none is below what it was.
    assert.truthy(sample(m1, "streamrun_worker_busy_seconds_total", { worker = "0" }))
    for _, s in ipairs(m1.samples) do
      if m1.types[s.name] == "counter" then
        local now = sample(m2, s.name, s.labels)
        assert(now and now >= s.value, ("%s%s: %s before the reload, %s after"):format(s.name,
          cjson.encode(s.labels), s.value, tostring(now)))
      end
    end
    p:kill("TERM")
    assert.equal(0, p:wait(10))
  end)

  it("takes the job option http, warns on a wildcard address, refuses bad or taken ones", function()
    local path = events_file(dir)
    local p = e2e.start("http_job", { path = path, http = "127.0.0.1:0" }, { "--quiet" })
    p:wait_stderr("http: status page on http://127.0.0.1:", 10)
    p:kill("TERM")
    assert.equal(0, p:wait(10))

    p = e2e.start("http_job", { path = path }, { "--quiet", "--http", "0.0.0.0:0" })
    p:wait_stderr("warning: http on every interface (0.0.0.0:", 10)
    p:kill("TERM")
    assert.equal(0, p:wait(10))

    local code, _, err = e2e.run("http_job", { path = path }, { "--http", "localhost:port" }, { timeout = 20 })
    assert.equal(2, code)
    assert.truthy(err:find("want PORT or ADDR:PORT", 1, true))

    code, _, err = e2e.run("http_job", { path = path, http = "nope" }, {}, { timeout = 20 })
    assert.equal(2, code)
    assert.truthy(err:find("http_job.lua:%d+"), err)

    local taken = assert(net.server(0))
    -- Refused before any checkpoint is taken.
    code, _, err = e2e.run("http_job", { path = path },
      { "--http", "127.0.0.1:" .. taken.port, "--checkpoint", dir .. "/ckpt" }, { timeout = 20 })
    assert.equal(1, code)
    assert.truthy(err:find("cannot listen", 1, true), err)
    assert.is_false(proc.exists(dir .. "/ckpt"))
  end)
end)

