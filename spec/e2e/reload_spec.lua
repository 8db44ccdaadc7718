-- Hot reload with the real binary (issue 6, SPEC section 10): a job fed
-- continuously over listen_text by a sender that sends numbered lines at a
-- steady rate the whole time, its script rewritten in place while it runs
-- (a logic change, a new stage, a syntax error, then a fix), each rewrite
-- awaited through its log line on stderr. Every line must come out exactly
-- once and a running count kept in state must never reset. Also: SIGHUP
-- reloads without a change, --no-reload ignores changes but not SIGHUP, a
-- module next to the job reloads it when edited, refused reloads (a stage
-- whose kind changed, the batch interval of a windowed job) leave the old
-- logic running, and `streamrun check NEW.lua --against CKPT`.
--
-- The job scripts are written by the specs into temp dirs (they are edited
-- while the job runs). Rules first found as bugs are at the end.
local cjson = require "cjson"
local proc = require "helpers.proc"
local net = require "helpers.net"
local e2e = require "helpers.e2e"

local RATE = 1000 -- lines per second from the sender

-- -- The job's script, by version --

-- Every script written gets a different size (a comment after its last
-- line), so that each case reads plainly; same-size saves within a second
-- are seen too (checked at the end).
local saves = 0

-- The script of the main job. o.tag: the value its records carry (the
-- logic that changes); o.extra: a new stateful stage per_mod (lines
-- counted by number modulo 10); o.broken: a syntax error on line 5;
-- o.kind_change: count as update_state_by_key (a stage whose kind
-- changed); o.drop: drop_state = { "count" }; o.batch: the interval;
-- o.window: a windowed stage; o.module: the tag comes from the module
-- `tagger` next to the script; o.bare: no stateful stage; o.second: a
-- second listen_text source on that port; o.ckpt: checkpoints every 60 s
-- into --set ckpt=DIR; o.extra_out: a second output, out/extra.jsonl;
-- o.timeout: the count stage's timeout; o.slow: the top level notes in
-- out/loading that it runs, then takes half a second (a reload that
-- takes a while); o.top: a line of Lua at the top level, after `tag`.
local function script(o)
  local L = {
    'local sr = require "streamrun"',
    'local out = sr.param("out", ".")',
    ('local job = sr.job { name = "reload_e2e", batch = %q%s%s }'):format(o.batch or "100ms",
      o.drop and ', drop_state = { "count" }' or "",
      o.ckpt and ', checkpoint = { dir = sr.param("ckpt", "ckpt"), every = "60s" }' or ""),
    'local lines = job:listen_text("127.0.0.1", sr.param("port", 0), { name = "inbox" })',
    o.broken and 'local broken = = 1' or '-- line 5',
    o.module and 'local tag = require("tagger").tag' or ('local tag = %q'):format(o.tag or "v0"),
    o.top or '-- line 7',
  }
  local function add(s) L[#L + 1] = s end
  if o.bare then
    add 'lines:map(function(l) return { n = tonumber(l), v = tag } end)'
    add '  :to_json_lines(out .. "/events.jsonl", { name = "events" })'
  elseif o.kind_change then
    add 'lines:map(function(l) return "all", 1 end)'
    add '  :update_state_by_key(function(v, n) return (n or 0) + #v end, { name = "count" })'
    add '  :foreach_batch(function() end, { name = "count_out" })'
    add 'lines:map(function(l) return { n = tonumber(l), c = -1, v = tag } end)'
    add '  :to_json_lines(out .. "/events.jsonl", { name = "events" })'
  else
    -- One key: the state is a running count of every line ever seen.
    add 'local function count(_, line, st)'
    add '  if st:is_timing_out() then return { timed_out = st:get() } end'
    add '  local c = (st:exists() and st:get() or 0) + 1'
    add '  st:update(c)'
    add '  return { n = tonumber(line), c = c, v = tag }'
    add 'end'
    add 'lines:map(function(l) return "all", l end)'
    add(('  :map_with_state(sr.state_spec(count)%s:name("count"))'):format(
      o.timeout and (':timeout(%q)'):format(o.timeout) or ""))
    add '  :to_json_lines(out .. "/events.jsonl", { name = "events" })'
  end
  if o.extra then
    add 'lines:map(function(l) return tonumber(l) % 10, 1 end)'
    add '  :update_state_by_key(function(v, n) return (n or 0) + #v end, { name = "per_mod" })'
  end
  if o.extra_out then
    add 'lines:map(function(l) return { n = tonumber(l) } end):to_json_lines(out .. "/extra.jsonl", { name = "extra" })'
  end
  if o.second then
    add(('job:listen_text("127.0.0.1", %d, { name = "second" }):to_json_lines(out .. "/second.jsonl")'):format(o.second))
  end
  if o.window then
    add 'lines:count_by_window("2s", "400ms", { name = "win" }):foreach_batch(function() end, { name = "win_out" })'
  end
  if o.slow then
    add 'local marker = assert(io.open(out .. "/loading", "a")) marker:write("loading\\n") marker:close()'
    add 'local t0 = os.clock() while os.clock() - t0 < 0.5 do end'
  end
  add 'return job'
  saves = saves + 1
  add('-- save ' .. saves .. " " .. ("x"):rep(saves))
  return table.concat(L, "\n") .. "\n"
end

-- Rewrites a file in place (same inode: truncated and written), as an
-- editor that saves in place does.
local function rewrite(path, text)
  local f = assert(io.open(path, "wb"))
  assert(f:write(text))
  assert(f:close())
end

-- Replaces a file by renaming a new one over it, as most editors save.
local function replace(path, text)
  proc.write_file(path .. ".tmp", text)
  assert(os.rename(path .. ".tmp", path))
end

-- -- A running job and its sender --

-- A job run: its dir (script at dir/job.lua, outputs in dir/out), process
-- and sender. opts.args: more arguments; opts.script: the first script
-- (default script{}); opts.files: other files to write next to it.
local function start_job(opts)
  opts = opts or {}
  local r = { dir = proc.tmpdir() }
  r.path = r.dir .. "/job.lua"
  r.out = proc.mkdir(r.dir .. "/out")
  for name, text in pairs(opts.files or {}) do proc.write_file(r.dir .. "/" .. name, text) end
  proc.write_file(r.path, opts.script or script {})
  local last
  for _ = 1, 2 do
    local port = net.free_port()
    local argv = { e2e.BIN, "run", r.path, "--set", "port=" .. port, "--set", "out=" .. r.out }
    for _, a in ipairs(opts.args or {}) do argv[#argv + 1] = a end
    local p = proc.spawn(argv)
    local conn = proc.wait_for(function()
      local c = net.try_connect(port)
      if c then return c end
      if p:exited() then return "exited" end
    end, 5, function() return "the job to listen on port " .. port .. "\n" .. p:describe() end)
    if conn ~= "exited" then
      r.p, r.port, r.conn = p, port, conn
      break
    end
    p:wait(5)
    last = p:describe()
    if not p.stderr:find("in use", 1, true) then error("the job did not start:\n" .. last, 2) end
  end
  assert(r.p, "the job could not listen:\n" .. tostring(last))
  r.p.shorten = function(which, text)
    if which == "stderr" then return (text:gsub("streamrun: batch %d+ ms: [^\n]*\n", "")) end
    return text
  end
  r.sent, r.t0, r.sending = 0, proc.now(), true
  return r
end

-- Sends the lines due at RATE lines/s since the start ("1\n", "2\n", ...).
local function feed(r)
  if not r.sending then return end
  local due = math.floor((proc.now() - r.t0) * RATE)
  if due <= r.sent then return end
  local parts = {}
  for i = r.sent + 1, due do parts[#parts + 1] = i end
  local ok, err = pcall(r.conn.send, r.conn, table.concat(parts, "\n") .. "\n")
  if not ok then error(("sending line %d: %s\n%s"):format(r.sent + 1, tostring(err), r.p:describe()), 0) end
  r.sent = due
end

local function events_text(r) return proc.read_file(r.out .. "/events.jsonl") or "" end

local function records_of(text)
  local records = {}
  for line in text:gmatch("[^\n]+") do records[#records + 1] = cjson.decode(line) end
  return records
end

-- Waits for cond() with the sender sending and the job's output read
-- meanwhile; what describes the wait in the failure message.
local function wait(r, cond, timeout_s, what)
  return proc.wait_for(function()
    feed(r)
    r.p:pump()
    if r.p:exited() then error("the job exited while waiting for " .. what .. "\n" .. r.p:describe(), 0) end
    return cond()
  end, timeout_s or 5, function() return what .. "\n" .. r.p:describe() end)
end

local function count_of(text, plain)
  local n, i = 0, 1
  while true do
    local s, e = text:find(plain, i, true)
    if not s then return n end
    n, i = n + 1, e + 1
  end
end

-- Waits for one more line starting with prefix on stderr than `before`
-- (the count of such lines when the rewrite was made). Returns the line.
local function wait_log(r, prefix, before, timeout_s)
  local line
  wait(r, function()
    local n = 0
    for l in r.p.stderr:gmatch("[^\n]+") do
      if l:sub(1, #prefix) == prefix then
        n = n + 1
        if n == before + 1 then line = l end
      end
    end
    return n > before
  end, timeout_s or 5, ("a log line %q (the %d. one)"):format(prefix, before + 1))
  return line
end

-- Waits until a record tagged tag is in the output.
local function wait_tag(r, tag, timeout_s)
  wait(r, function() return events_text(r):find('"v":"' .. tag .. '"', 1, true) end, timeout_s or 5,
    "a record tagged " .. tag .. " in events.jsonl")
end

-- Waits until n more lines than now were sent and are in the output (the
-- job has run a while with the logic it has now).
local function wait_more(r, n)
  local target = r.sent + n
  wait(r, function() return r.sent >= target and count_of(events_text(r), "\n") >= target end, 5,
    ("%d lines in events.jsonl"):format(target))
end

-- Stops the sender, waits until every line sent is in the output, then
-- SIGTERM: the job must exit 0. Returns the output records in order.
local function finish(r)
  r.sending = false
  wait(r, function() return count_of(events_text(r), "\n") >= r.sent end, 10,
    ("all %d lines sent in events.jsonl"):format(r.sent))
  r.conn:close()
  r.p:kill("TERM")
  assert.equal(0, r.p:wait(5), r.p:describe())
  return records_of(events_text(r))
end

-- Every line 1..sent exactly once, and (when counted) the running count
-- 1..sent in output order: the state never reset and no line counted twice.
local function assert_every_line_once(r, records, counted)
  local seen, dups, strange = {}, {}, {}
  local lines_n = 0
  for i, rec in ipairs(records) do
    if rec.n then
      lines_n = lines_n + 1
      if seen[rec.n] then dups[#dups + 1] = rec.n end
      seen[rec.n] = true
      if rec.n < 1 or rec.n > r.sent then strange[#strange + 1] = rec.n end
      if counted and rec.c ~= lines_n then
        error(("record %d (line %d) has count %s, expected %d: the count did not go on"):format(
          i, rec.n, tostring(rec.c), lines_n), 2)
      end
    end
  end
  local missing = {}
  for i = 1, r.sent do if not seen[i] then missing[#missing + 1] = i end end
  assert.same({}, dups, "lines output twice")
  assert.same({}, strange, "lines never sent")
  assert.same({}, missing, "lines never output")
  assert.equal(r.sent, lines_n)
end

-- The tags of the records in output order, runs collapsed: { "v0", "v1", ... }.
local function tag_runs(records)
  local runs = {}
  for _, rec in ipairs(records) do
    if rec.v and rec.v ~= runs[#runs] then runs[#runs + 1] = rec.v end
  end
  return runs
end

local inspect_keys = e2e.inspect_keys

local RELOADED = "streamrun: reloaded "
local FAILED = "streamrun: reload of "

describe("e2e hot reload", function()
  after_each(function()
    proc.cleanup()
    net.cleanup()
  end)

  it("a job fed the whole time, its script rewritten four times: every line once, the count never resets", function()
    local ckpt = proc.tmpdir()
    local r = start_job { args = { "--checkpoint", ckpt } }
    wait_more(r, 200)

    -- (a) A logic change: the records' tag.
    rewrite(r.path, script { tag = "v1" })
    local line = wait_log(r, RELOADED, 0)
    assert.equal(RELOADED .. r.path .. ": kept count; dropped none; new none", line)
    wait_tag(r, "v1")
    wait_more(r, 200)

    -- (b) A new stateful stage.
    rewrite(r.path, script { tag = "v2", extra = true })
    line = wait_log(r, RELOADED, 1)
    assert.equal(RELOADED .. r.path .. ": kept count; dropped none; new per_mod", line)
    wait_tag(r, "v2")
    wait_more(r, 200)

    -- (c) A syntax error: refused with file:line, the v2 logic goes on.
    rewrite(r.path, script { tag = "v3", extra = true, broken = true })
    line = wait_log(r, FAILED, 0)
    assert.equal(FAILED .. r.path .. " failed (1 so far): " .. r.path
      .. ":5: unexpected symbol near '='; the job goes on with the logic it had", line)
    local at_failure = count_of(events_text(r), "\n")
    wait_more(r, 200)
    local after = {}
    local i = 0
    for l in events_text(r):gmatch("[^\n]+") do
      i = i + 1
      if i > at_failure then after[#after + 1] = cjson.decode(l).v end
    end
    assert.is_true(#after >= 200)
    for _, v in ipairs(after) do assert.equal("v2", v) end

    -- (d) The fix.
    rewrite(r.path, script { tag = "v3", extra = true })
    line = wait_log(r, RELOADED, 2)
    assert.equal(RELOADED .. r.path .. ": kept count, per_mod; dropped none; new none", line)
    wait_tag(r, "v3")
    wait_more(r, 200)

    local records = finish(r)
    assert_every_line_once(r, records, true)
    assert.same({ "v0", "v1", "v2", "v3" }, tag_runs(records))
    assert.equal(3, count_of(r.p.stderr, RELOADED))
    assert.equal(1, count_of(r.p.stderr, FAILED))

    -- The last checkpoint (at SIGTERM) was taken with the fixed script...
    local code, meta_json, err = e2e.exec({ "inspect", ckpt })
    assert.equal(0, code, err)
    local meta = cjson.decode(meta_json)
    assert.equal(r.path, meta.script)
    assert.equal(require("streamrun.core").file_hash(r.path), meta.script_hash)
    assert.same({ "count", "per_mod" }, (function()
      local names = {}
      for name in pairs(meta.stages) do names[#names + 1] = name end
      table.sort(names)
      return names
    end)())
    -- ... and holds the state: the count is every line; per_mod started
    -- empty at (b) and counted every line since.
    assert.same({ all = r.sent }, inspect_keys(ckpt, "count"))
    local since_b = 0
    for _, rec in ipairs(records) do
      if rec.v == "v2" or rec.v == "v3" then since_b = since_b + 1 end
    end
    local per_mod, total = inspect_keys(ckpt, "per_mod"), 0
    for k, n in pairs(per_mod) do
      assert.is_true(k >= 0 and k <= 9)
      total = total + n
    end
    assert.equal(since_b, total)
  end)

  it("a script saved again while its reload runs is reloaded again", function()
    local r = start_job {}
    wait_more(r, 200)
    rewrite(r.path, script { tag = "v1", slow = true })
    wait(r, function() return proc.read_file(r.out .. "/loading") ~= nil end, 5, "the reload to v1 to run the script")
    rewrite(r.path, script { tag = "v2" })
    wait_log(r, RELOADED, 0)
    wait_log(r, RELOADED, 1, 10)
    wait_tag(r, "v2")
    local records = finish(r)
    assert_every_line_once(r, records, true)
    local runs = tag_runs(records)
    assert.equal("v2", runs[#runs])
  end)

  it("SIGHUP reloads the unchanged script, state kept", function()
    local r = start_job()
    wait_more(r, 100)
    for n = 0, 2 do
      r.p:kill("HUP")
      local line = wait_log(r, RELOADED, n)
      assert.equal(RELOADED .. r.path .. ": kept count; dropped none; new none", line)
      wait_more(r, 100)
    end
    local records = finish(r)
    assert_every_line_once(r, records, true)
    assert.same({ "v0" }, tag_runs(records))
  end)

  it("--no-reload: a changed script is not loaded, until SIGHUP", function()
    local r = start_job { args = { "--no-reload" } }
    wait_more(r, 100)
    rewrite(r.path, script { tag = "v1" })
    -- Long past the watcher's latency (inotify, or 250 ms polling): ten
    -- more batches, lines still tagged v0, no reload.
    local function batches() return #e2e.status_lines(r.p.stderr) end
    local target = batches() + 10
    wait(r, function() return batches() >= target end, 5, "ten more batches")
    wait_more(r, 50)
    assert.equal(0, count_of(r.p.stderr, RELOADED), r.p.stderr)
    assert.is_nil(events_text(r):find('"v":"v1"', 1, true))

    r.p:kill("HUP")
    assert.equal(RELOADED .. r.path .. ": kept count; dropped none; new none", wait_log(r, RELOADED, 0))
    wait_tag(r, "v1")
    wait_more(r, 100)
    local records = finish(r)
    assert_every_line_once(r, records, true)
    assert.same({ "v0", "v1" }, tag_runs(records))
  end)

  it("editing a module the job requires from its directory reloads the job, again after each edit", function()
    local r = start_job {
      script = script { module = true },
      files = { ["tagger.lua"] = 'return { tag = "m0" }\n' },
    }
    wait_tag(r, "m0")
    wait_more(r, 100)
    -- Saved in place, then as editors that rename a new file over it do.
    rewrite(r.dir .. "/tagger.lua", 'return { tag = "m01" }\n')
    assert.equal(RELOADED .. r.path .. ": kept count; dropped none; new none", wait_log(r, RELOADED, 0))
    wait_tag(r, "m01")
    wait_more(r, 100)
    replace(r.dir .. "/tagger.lua", 'return { tag = "m22" }\n')
    wait_log(r, RELOADED, 1)
    wait_tag(r, "m22")
    -- A module that does not load: refused, the m22 logic goes on (its
    -- file:line is checked at the end).
    rewrite(r.dir .. "/tagger.lua", 'return { tag = "m3" \n')
    local line = wait_log(r, FAILED, 0)
    assert.truthy(line:find("tagger", 1, true), line)
    assert.truthy(line:find("the job goes on with the logic it had", 1, true), line)
    wait_more(r, 100)
    local records = finish(r)
    assert_every_line_once(r, records, true)
    assert.same({ "m0", "m01", "m22" }, tag_runs(records))
  end)

  it("a stage whose kind changed is refused (the old logic and its state go on) unless drop_state lists it", function()
    local r = start_job()
    wait_more(r, 100)
    rewrite(r.path, script { tag = "v1", kind_change = true })
    local line = wait_log(r, FAILED, 0)
    assert.equal(FAILED .. r.path .. " failed (1 so far): count: was map_with_state, now update_state_by_key"
      .. " (list it in sr.job{ drop_state = {...} } to start it afresh); the job goes on with the logic it had", line)
    wait_more(r, 100)
    -- A new script with drop_state: the count starts afresh.
    rewrite(r.path, script { tag = "v2", drop = true })
    assert.equal(RELOADED .. r.path .. ": kept none; dropped count; new count", wait_log(r, RELOADED, 0))
    wait_tag(r, "v2")
    wait_more(r, 100)
    local records = finish(r)
    assert_every_line_once(r, records, false)
    assert.same({ "v0", "v2" }, tag_runs(records))
    -- v0 counted on from 1 across the refused reload; v2 from 1 again.
    local c0, c2 = 0, 0
    for _, rec in ipairs(records) do
      if rec.v == "v0" then
        c0 = c0 + 1
        assert.equal(c0, rec.c)
      else
        c2 = c2 + 1
        assert.equal(c2, rec.c)
      end
    end
  end)

  it("the batch interval may change without windows, not while a window holds slices", function()
    local r = start_job()
    wait_more(r, 100)
    rewrite(r.path, script { tag = "v1", batch = "200ms" })
    assert.equal(RELOADED .. r.path .. ": kept count; dropped none; new none", wait_log(r, RELOADED, 0))
    wait_tag(r, "v1")
    -- Batches now 200 ms apart.
    local n0 = #e2e.status_lines(r.p.stderr)
    wait(r, function() return #e2e.status_lines(r.p.stderr) >= n0 + 4 end, 5, "four more batches")
    local st = e2e.status_lines(r.p.stderr)
    for i = #st - 2, #st do assert.equal(200, st[i].time_ms - st[i - 1].time_ms) end

    rewrite(r.path, script { tag = "v2", batch = "200ms", window = true })
    assert.equal(RELOADED .. r.path .. ": kept count; dropped none; new win", wait_log(r, RELOADED, 1))
    wait_tag(r, "v2")
    rewrite(r.path, script { tag = "v3", batch = "100ms", window = true })
    assert.equal(FAILED .. r.path .. " failed (1 so far): the batch interval cannot change (200 ms to 100 ms)"
      .. " while windows hold slices; the job goes on with the logic it had", wait_log(r, FAILED, 0))
    wait_more(r, 100)
    local records = finish(r)
    assert_every_line_once(r, records, true)
    assert.same({ "v0", "v1", "v2" }, tag_runs(records))
  end)

  it("a timeout changed by a reload applies to the keys touched after it", function()
    local r = start_job { script = script { timeout = "1h" } }
    wait_more(r, 100)
    rewrite(r.path, script { tag = "v1", timeout = "300ms" })
    wait_log(r, RELOADED, 0)
    wait_tag(r, "v1")
    -- The one key is touched by every line: once the sender stops, it
    -- times out 300 ms after its last line, with the count of every line.
    r.sending = false
    local rec
    wait(r, function()
      for l in events_text(r):gmatch("[^\n]+") do
        local o = cjson.decode(l)
        if o.timed_out then rec = o return true end
      end
    end, 5, "the key to time out")
    assert.equal(r.sent, rec.timed_out)
  end)

  describe("streamrun check NEW.lua --against CKPT", function()
    local dir, ckpt
    before_each(function()
      -- A checkpoint of the v0 job (count), written by a short run.
      dir = proc.tmpdir()
      ckpt = dir .. "/ckpt"
      proc.write_file(dir .. "/job.lua", script {})
      local code, _, err = e2e.exec({ "run", dir .. "/job.lua", "--set", "port=" .. net.free_port(),
        "--set", "out=" .. dir, "--checkpoint", ckpt, "--batches", "2", "--quiet" })
      assert.equal(0, code, err)
    end)

    local function check(o, against)
      local path = dir .. "/new.lua"
      proc.write_file(path, script(o))
      return e2e.exec({ "check", path, "--against", against or ckpt })
    end

    it("reports kept, dropped and new stages and exits 0", function()
      local code, out, err = check { tag = "v1", extra = true }
      assert.equal(0, code, err)
      local ck = out:match("against (%S+) %(batch 2%): kept count; dropped none; new per_mod\n$")
      assert.truthy(ck, out)
      assert.truthy(ck:find("checkpoint%-0+2%.srck$"), ck)
      -- Against the checkpoint file itself, the same.
      code, out = check({ tag = "v1", extra = true }, ck)
      assert.equal(0, code)
      assert.truthy(out:find("kept count; dropped none; new per_mod\n", 1, true), out)
      -- A stage removed is dropped; drop_state drops and starts afresh.
      code, out = check { bare = true }
      assert.equal(0, code)
      assert.truthy(out:find("kept none; dropped count; new none\n", 1, true), out)
      code, out = check { tag = "v1", kind_change = true, drop = true }
      assert.equal(0, code)
      assert.truthy(out:find("kept none; dropped count; new count\n", 1, true), out)
    end)

    it("exits 2 on a stage whose kind changed, naming it", function()
      local code, out = check { kind_change = true }
      assert.equal(2, code, out)
      assert.truthy(out:find("kept none; dropped none; new none\ncannot keep count: was map_with_state, "
        .. "now update_state_by_key (list it in sr.job{ drop_state = {...} } to start it afresh)\n", 1, true), out)
    end)

    it("exits 2 on a script that does not load, 1 without a checkpoint", function()
      local code, _, err = check { broken = true }
      assert.equal(2, code)
      assert.truthy(err:find("new.lua:5: unexpected symbol near '='", 1, true), err)
      code, _, err = check({}, proc.tmpdir())
      assert.equal(1, code)
      assert.truthy(err:find("no valid checkpoint in", 1, true), err)
    end)
  end)

  -- -- Known bugs --

  describe("rules found by these specs", function()
    local REALTIME = 0 -- CLOCK_REALTIME
    local ffi = require "ffi"
    local libc = require "helpers.libc"
    local function wall()
      local ts = ffi.new("e2e_timespec_t")
      libc.C.e2e_clock_gettime(REALTIME, ts)
      return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
    end

    -- A new source that cannot start refuses the reload; the old logic goes on.
    it("a reload adding a source that cannot start is refused; the job goes on", function()
      local busy = assert(net.server(0))
      local r = start_job()
      wait_more(r, 100)
      rewrite(r.path, script { tag = "v1", second = busy.port })
      local line = wait_log(r, FAILED, 0)
      assert.truthy(line:find("source second", 1, true), line)
      assert.truthy(line:find("in use", 1, true), line)
      wait_more(r, 100)
      local records = finish(r)
      assert_every_line_once(r, records, true)
      assert.same({ "v0" }, tag_runs(records))
    end)

    -- Watched files are compared to the nanosecond of their modification time.
    it("a rewrite of the same size within the same second is picked up", function()
      -- Just after a second starts: the script written, the job started and
      -- rewritten in place (not truncated) well within that second.
      proc.wait_for(function() return wall() % 1 < 0.05 end, 2, "the start of a second")
      local r = start_job()
      wait_more(r, 20)
      local text = proc.read_file(r.path)
      local f = assert(io.open(r.path, "r+b"))
      f:write((text:gsub('"v0"', '"v1"')))
      f:close()
      assert.is_true(wall() % 1 < 0.9, "the rewrite was made in the second the script was written")
      wait_log(r, RELOADED, 0, 3)
      wait_tag(r, "v1")
    end)

    -- A module that does not load is reported at its own file:line.
    it("a module that does not load is reported at its file:line", function()
      local r = start_job {
        script = script { module = true },
        files = { ["tagger.lua"] = 'return { tag = "m0" }\n' },
      }
      wait_more(r, 50)
      rewrite(r.dir .. "/tagger.lua", 'return { tag = "m1" \n')
      local line = wait_log(r, FAILED, 0)
      assert.truthy(line:find(r.dir .. "/tagger.lua:2: '}' expected", 1, true), line)
    end)

    -- A reload writes a checkpoint, so a restart resumes with the new logic.
    it("a kill -9 after a reload: the restart leaves the outputs as they were", function()
      local ckpt = proc.tmpdir()
      local r = start_job { script = script { ckpt = true }, args = { "--set", "ckpt=" .. ckpt } }
      wait_more(r, 200)
      rewrite(r.path, script { tag = "v1", ckpt = true, extra_out = true })
      wait_log(r, RELOADED, 0)
      wait_tag(r, "v1")
      wait_more(r, 200)
      r.sending = false
      wait(r, function() return count_of(events_text(r), "\n") >= r.sent end, 10, "every line in events.jsonl")
      -- (A batch writes extra.jsonl after events.jsonl: wait for its last line too.)
      local last = ('{"n":%d}\n'):format(r.sent)
      wait(r, function()
        local t = proc.read_file(r.out .. "/extra.jsonl") or ""
        return t:sub(-#last) == last
      end, 10, "the last line in extra.jsonl")
      local events, extra = events_text(r), proc.read_file(r.out .. "/extra.jsonl")
      r.p:kill("KILL")
      r.p:wait(5)
      -- Only the checkpoint of the job's start is there: the restart replays
      -- every logged batch.
      local p = proc.spawn(r.p.argv)
      r.p = p
      p:wait_stderr("replayed", 10)
      wait(r, function() return count_of(events_text(r), "\n") >= r.sent end, 10, "every line in events.jsonl")
      p:kill("TERM")
      assert.equal(0, p:wait(5))
      local after_extra = proc.read_file(r.out .. "/extra.jsonl")
      assert.equal(count_of(extra, "\n"), count_of(after_extra, "\n"), "lines in extra.jsonl")
      assert.same(tag_runs(records_of(events)), tag_runs(records_of(events_text(r))))
      assert.equal(events, events_text(r))
      assert.equal(extra, after_extra)
    end)

    -- The other workers' VMs load the new script too: one that fails there
    -- refuses the reload before the old logic is let go.
    it("a script that loads but fails in another worker's VM is refused; the job goes on", function()
      local r = start_job { args = { "--workers", "2" } }
      wait_more(r, 100)
      -- (v1 fails the second time it is loaded: the first load is the new
      -- VM's, the second worker 1's.)
      rewrite(r.path, script { tag = "v1", top = table.concat({
        'local seen = out .. "/loaded.v1"',
        'local f = io.open(seen)',
        'if f then f:close() error("loaded twice") end',
        'assert(io.open(seen, "w")):close()' }, " ") })
      local line = wait_log(r, FAILED, 0)
      assert.truthy(line:find("worker 1: " .. r.path .. ":7: loaded twice", 1, true), line)
      assert.falsy(line:find("traceback", 1, true), line)
      wait_more(r, 100)
      local records = finish(r)
      assert_every_line_once(r, records, true)
      assert.same({ "v0" }, tag_runs(records))
    end)

    -- A file source whose options change goes on where the old one stood,
    -- as a restart from a checkpoint does, whether it read from the start
    -- (it read every line again) or from the end (it lost those written
    -- while the reload ran).
    for _, from_start in ipairs { true, false } do
      it(("tail (from_start = %s) whose max_line a reload changes: every line once"):format(tostring(from_start)),
        function()
        local dir = proc.tmpdir()
        local input, out = dir .. "/input.txt", proc.mkdir(dir .. "/out")
        local path = dir .. "/job.lua"
        local function tail_script(tag, opts)
          return table.concat({
            'local sr = require "streamrun"',
            'local job = sr.job { name = "reload_tail", batch = "100ms" }',
            ('job:tail(%q, { name = "in", from_start = %s%s })'):format(input, tostring(from_start), opts),
            ('  :map(function(l) return { n = tonumber(l), v = %q } end)'):format(tag),
            ('  :to_json_lines(%q, { name = "events" })'):format(out .. "/events.jsonl"),
            'return job',
          }, "\n") .. "\n"
        end
        proc.write_file(input, "")
        proc.write_file(path, tail_script("v0", ""))
        local r = { out = out, sent = 0, t0 = proc.now(), sending = true }
        r.p = proc.spawn { e2e.BIN, "run", path, "--workers", "2" }
        r.p:wait_stderr("workers:", 5)
        -- Lines appended at RATE lines/s the whole time, the reload included.
        local function append()
          local due = math.floor((proc.now() - r.t0) * RATE)
          if not r.sending or due <= r.sent then return end
          local parts = {}
          for i = r.sent + 1, due do parts[#parts + 1] = i .. "\n" end
          proc.append_file(input, table.concat(parts))
          r.sent = due
        end
        local function until_(cond, what)
          proc.wait_for(function()
            append()
            r.p:pump()
            if r.p:exited() then error("the job exited while waiting for " .. what .. "\n" .. r.p:describe(), 0) end
            return cond()
          end, 10, function() return what .. "\n" .. r.p:describe() end)
        end
        local function output() return count_of(events_text(r), "\n") end
        until_(function() return output() >= 200 end, "200 lines out")
        rewrite(path, tail_script("v1", ", max_line = 4096"))
        r.p:kill("HUP")
        until_(function() return r.p.stderr:find(RELOADED, 1, true) end, "the reload")
        local target = r.sent + 200
        until_(function() return output() >= target end, "200 lines more")
        r.sending = false
        until_(function() return output() >= r.sent end, "every line appended")
        r.p:kill("TERM")
        assert.equal(0, r.p:wait(5), r.p:describe())
        local records = records_of(events_text(r))
        assert_every_line_once(r, records, false)
        assert.same({ "v0", "v1" }, tag_runs(records))
      end)
    end

    -- Restored state times out as the new script says.
    it("a restart from a checkpoint applies the new script's timeout to keys touched after", function()
      local ckpt = proc.tmpdir()
      local r = start_job { script = script { timeout = "1h" }, args = { "--checkpoint", ckpt } }
      wait_more(r, 100)
      local records = finish(r)
      assert.equal(r.sent, records[#records].c)
      proc.write_file(r.path, script { tag = "v1", timeout = "300ms" })
      local p = proc.spawn(r.p.argv)
      r.p = p
      r.conn = net.connect(r.port)
      r.t0, r.sent, r.sending = proc.now() - r.sent / RATE, r.sent, true
      wait_tag(r, "v1")
      wait_more(r, 50)
      r.sending = false
      wait(r, function() return events_text(r):find('"timed_out"', 1, true) end, 5, "the key to time out")
    end)

    -- A job started without a checkpoint seeds its initial state.
    it("a job started without a checkpoint seeds its initial state", function()
      local dir = proc.tmpdir()
      local path = proc.write_file(dir .. "/job.lua", table.concat({
        'local sr = require "streamrun"',
        'local job = sr.job { name = "init", batch = "100ms" }',
        'job:queue({ { "x" } }, { name = "in" }):map(function(w) return w, 1 end)',
        '  :update_state_by_key(function(v, n) return (n or 0) + #v end, { name = "t", initial = { x = 41 } })',
        '  :print()',
        'return job',
      }, "\n") .. "\n")
      local code, out, err = e2e.exec({ "run", path, "--quiet" })
      assert.equal(0, code, err)
      assert.same({ "(x,42)" }, e2e.elements(out))
    end)
  end)
end)
