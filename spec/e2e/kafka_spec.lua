-- Kafka (SPEC section 16) against librdkafka's mock cluster, started here
-- through `streamrun kafka-mock`: the source, offsets in checkpoints and in
-- the group, kill -9, the sink, a broker down and back.
local proc = require "helpers.proc"
local e2e = require "helpers.e2e"
local kafka = require "helpers.kafka"

-- n messages "k<i % keys>:v<i>" (from first), and the count per key they make.
local function messages(first, n, keys, counts)
  local lines = {}
  for i = first, first + n - 1 do
    local k = "k" .. (i % keys)
    lines[#lines + 1] = k .. ":v" .. i
    if counts then counts[k] = (counts[k] or 0) + 1 end
  end
  return lines
end

-- SIGTERM to every process of procs at once: each exits with 0 within the
-- stop's bound (README: after its last batch, 5 s per Kafka source; its
-- stderr says what it gave up), with room for a loaded machine. sources:
-- the job's Kafka sources (a repartition reads one more).
local STOP_S, ROOM_S = 5, 4
local function stop_all(procs, sources)
  local bound = (sources or 1) * STOP_S + ROOM_S
  local t0 = proc.now()
  for _, p in ipairs(procs) do p:kill("TERM") end
  for _, p in ipairs(procs) do
    local code = p:wait(bound + 10)
    local took = proc.now() - t0
    if code ~= 0 or took > bound then
      p:pump()
      error(("pid %d: exit code %s %.1f s after SIGTERM (bound %g s)\n%s"):format(p.pid, tostring(code), took, bound,
        p.stderr:gsub("streamrun: batch [^\n]*\n", "")), 0)
    end
  end
end

-- Every checkpoint of every task of dir: its batch, offsets and keys of
-- stage (for a failure's message: which task counted what, and when).
local function task_history(dir, stage)
  local out = {}
  for _, d in ipairs(require("streamrun.kafka_tasks").task_dirs(dir)) do
    for _, name in ipairs(proc.list_dir(d)) do
      if name:match("^checkpoint%-%d+%.srck$") then
        local _, meta = e2e.exec({ "inspect", d .. "/" .. name })
        local _, keys = e2e.exec({ "inspect", d .. "/" .. name, "--keys", stage })
        out[#out + 1] = ("%s/%s %s %s"):format(d:match("[^/]+$"), name,
          (meta or ""):match('"sources":(%b{})') or "?", (keys or ""):gsub("\n", " "))
      end
    end
  end
  return table.concat(out, "\n")
end

local function exact(expected)
  return function(keys)
    for k, v in pairs(expected) do if keys[k] ~= v then return false end end
    for k in pairs(keys) do if expected[k] == nil then return false end end
    return true
  end
end

describe("e2e kafka", function()
  after_each(function() proc.cleanup() end)

  it("counts per key from an 8-partition topic, checkpoints its offsets and commits them to the group", function()
    local mock = kafka.mock { topics = { "events:8" } }
    local dir = proc.tmpdir() .. "/ckpt"
    local expected = {}
    kafka.produce(mock.bootstrap, "events", messages(1, 2000, 13, expected))
    local p = e2e.start("kafka_count", { brokers = mock.bootstrap, dir = dir })
    kafka.wait_state(dir, "totals", exact(expected), 40, "counts of the first 2000 messages", p)
    kafka.produce(mock.bootstrap, "events", messages(2001, 1000, 13, expected))
    kafka.wait_state(dir, "totals", exact(expected), 40, "counts of all 3000 messages", p)
    assert.equal(3000, kafka.sum(expected))
    -- The group sees every message consumed: committed offsets add up to it.
    proc.wait_for(function()
      local offs = kafka.committed(mock.bootstrap, "counters", "events", 8)
      local n = 0
      for i = 1, 8 do n = n + math.max(offs[i] or 0, 0) end
      return n == 3000
    end, 30, "committed offsets adding up to 3000")
    p:kill("TERM")
    assert.equal(0, p:wait(15))
    assert.matches("assigned 8 partitions", p.stderr)
    -- Each partition is a task with its own checkpoints, holding its offset.
    local code, out = e2e.exec({ "inspect", dir })
    assert.equal(0, code)
    local tasks = require("cjson").decode(out).tasks
    local n, ntasks = 0, 0
    for name, t in pairs(tasks) do
      ntasks = ntasks + 1
      for tp, off in pairs(t.sources.events.offsets) do
        assert.equal(name, tp:gsub(":", "-"))
        n = n + off
      end
    end
    assert.equal(8, ntasks)
    assert.equal(3000, n)
  end)

  it("killed with kill -9 and restarted, counts every message once", function()
    local mock = kafka.mock { topics = { "events:8" } }
    local dir = proc.tmpdir() .. "/ckpt"
    local expected = {}
    kafka.produce(mock.bootstrap, "events", messages(1, 3000, 7, expected))
    local p = e2e.start("kafka_count", { brokers = mock.bootstrap, dir = dir })
    kafka.wait_state(dir, "totals", function(keys) return kafka.sum(keys) > 0 end, 40, "a first count", p)
    kafka.produce(mock.bootstrap, "events", messages(3001, 2000, 7, expected))
    p:kill("KILL")
    p:wait(10)
    local p2 = e2e.start("kafka_count", { brokers = mock.bootstrap, dir = dir })
    kafka.produce(mock.bootstrap, "events", messages(5001, 1000, 7, expected))
    kafka.wait_state(dir, "totals", exact(expected), 60, "exact counts of 6000 messages after kill -9", p2)
    p2:kill("TERM")
    assert.equal(0, p2:wait(15))
    assert.matches("task events%-%d: restored from", p2.stderr)
  end)

  it("three processes in one group split the partitions; kill -9 of one, one added: every message counted once",
    function()
    local mock = kafka.mock { topics = { "events:8" } }
    local dir = proc.tmpdir() .. "/ckpt"
    local expected = {}
    local params = { brokers = mock.bootstrap, dir = dir }
    kafka.produce(mock.bootstrap, "events", messages(1, 3000, 13, expected))
    local p1 = e2e.start("kafka_count", params)
    local p2 = e2e.start("kafka_count", params)
    kafka.wait_state(dir, "totals", exact(expected), 60, "two processes counting 3000 messages", p2)
    kafka.produce(mock.bootstrap, "events", messages(3001, 2000, 13, expected))
    p1:kill("KILL")
    p1:wait(10)
    local p3 = e2e.start("kafka_count", params) -- added mid-run
    local p1b = e2e.start("kafka_count", params) -- the killed one, restarted
    kafka.produce(mock.bootstrap, "events", messages(5001, 1000, 13, expected))
    local ok, err = pcall(kafka.wait_state, dir, "totals", exact(expected), 90, "three processes counting 6000 messages",
      p3)
    if not ok then
      for name, p in pairs { p1 = p1, p2 = p2, p1b = p1b } do err = err .. "\n=== " .. name .. " (pid " .. p.pid .. ")\n" .. p:describe() end
      local _, out = e2e.exec({ "inspect", dir })
      err = err .. "\n=== inspect\n" .. out:gsub('"stages":{[^}]*}', ""):gsub('"params":{[^}]*}', "")
      err = err .. "\n=== committed " .. table.concat(kafka.committed(mock.bootstrap, "counters", "events", 8), " ")
      err = err .. "\n=== checkpoints\n" .. task_history(dir, "totals")
      error(err, 0)
    end
    -- The group splits the partitions: some process is assigned a part of
    -- them. (The counts can be complete before the late joiners' first
    -- assignment: one process may have read everything.)
    proc.wait_for(function()
      for _, p in ipairs { p2, p3, p1b } do
        p:pump()
        for n in p.stderr:gmatch("assigned (%d+) partitions: [^\n]*%]\n") do
          if tonumber(n) > 0 and tonumber(n) < 8 then return true end
        end
      end
    end, 60, "a process assigned a part of the partitions")
    stop_all { p2, p3, p1b }
    assert.same(expected, kafka.wait_state(dir, "totals", exact(expected), 10, "the final counts"))
  end)

  -- A topic of 4 partitions holding 1000 messages (counted in the
  -- returned expected), and two processes counting them in one group.
  -- Returns the mock, the checkpoint directory, expected, and the two.
  local function two_members()
    local mock = kafka.mock { topics = { "events:4" } }
    local dir = proc.tmpdir() .. "/ckpt"
    local expected = {}
    local params = { brokers = mock.bootstrap, dir = dir }
    kafka.produce(mock.bootstrap, "events", messages(1, 1000, 13, expected))
    return mock, dir, expected, e2e.start("kafka_count", params), e2e.start("kafka_count", params)
  end

  -- Waits until p1 and p2 each hold some of the 4 partitions (their last
  -- assignment, as they log it).
  local function wait_split(p1, p2)
    local function held(p)
      p:pump()
      local last
      for n in p.stderr:gmatch("assigned (%d+) partitions") do last = tonumber(n) end
      return last and last > 0 and last < 4
    end
    proc.wait_for(function() return held(p1) and held(p2) end, 60, "the two processes splitting the partitions")
  end

  -- Two members that counted 1000 messages; then p1 stopped (SIGSTOP)
  -- until the group gives p2 all four partitions, two still locked by p1.
  local function one_stopped()
    local mock, dir, expected, p1, p2 = two_members()
    wait_split(p1, p2)
    kafka.wait_state(dir, "totals", exact(expected), 60, "two processes counting 1000 messages", p2)
    p1:kill("STOP")
    p2:wait_stderr("waiting for pid " .. p1.pid, 60)
    return mock, dir, expected, p1, p2
  end

  it("lost assignment: a stopped member's partitions go to the other, which reads its own meanwhile; "
    .. "the stopped one, continued, drops them without a checkpoint: every message counted once", function()
    local mock, dir, expected, p1, p2 = two_members()
    kafka.wait_state(dir, "totals", exact(expected), 60, "two processes counting 1000 messages", p2)
    -- Both hold partitions: p1 stopped past its session timeout (6 s) is
    -- dropped from the group, which gives p2 all four while p1 still holds
    -- its tasks' locks.
    wait_split(p1, p2)
    p1:kill("STOP")
    p2:wait_stderr("waiting for pid " .. p1.pid, 60)
    -- p2 counts its own partitions while it waits.
    kafka.produce(mock.bootstrap, "events", messages(1001, 1000, 13, expected))
    p2:wait_stderr("batch", 10)
    local before = #p2.stderr
    p2:wait_output("stderr", function(text) return text:find(" [1-9]%d* records", before) end, 30,
      "p2 reading records while it waits for p1's tasks")
    p1:kill("CONT")
    p1:wait_stderr("partition lost; released without a checkpoint", 60)
    local ok, err = pcall(kafka.wait_state, dir, "totals", exact(expected), 90, "2000 messages counted once", p2)
    if not ok then
      for name, p in pairs { p1 = p1, p2 = p2 } do
        p:pump()
        err = err .. "\n=== " .. name .. " stderr, batches left out\n" .. p.stderr:gsub("streamrun: batch [^\n]*\n", "")
      end
      error(err, 0)
    end
    -- The member whose assignment was lost stops within the bound too.
    stop_all { p1, p2 }
    assert.same(expected, kafka.wait_state(dir, "totals", exact(expected), 10, "the final counts"))
  end)

  it("a member terminated while it waits for tasks another still locks leaves the group at once; "
    .. "every message counted once", function()
    -- p2 is given all four partitions and waits for p1's two: it never
    -- assigned those, so its unassign at the stop must leave them out.
    local mock, dir, expected, p1, p2 = one_stopped()
    stop_all { p2 }
    assert.is_nil(p2.stderr:find("can't be unassigned", 1, true), p2.stderr)
    assert.is_nil(p2.stderr:find("not waiting longer", 1, true), p2.stderr)
    p1:kill("CONT")
    kafka.produce(mock.bootstrap, "events", messages(1001, 1000, 13, expected))
    kafka.wait_state(dir, "totals", exact(expected), 90, "2000 messages counted once", p1)
    stop_all { p1 }
  end)

  it("a member stopped past its session timeout, then terminated, exits within the bound; "
    .. "every message counted once", function()
    -- The group moves on without p1 while it is stopped (p2 is fenced at
    -- times too and takes everything over); continued with SIGTERM
    -- pending, p1 stops while it learns that its assignment is lost.
    local mock, dir, expected, p1, p2 = one_stopped()
    p1:kill("TERM")
    p1:kill("CONT")
    stop_all { p1 }
    kafka.produce(mock.bootstrap, "events", messages(1001, 1000, 13, expected))
    kafka.wait_state(dir, "totals", exact(expected), 90, "2000 messages counted once", p2)
    stop_all { p2 }
  end)

  it("repartition: state keyed by something else than the message key, split over two processes", function()
    local mock = kafka.mock { topics = { "clicks:4", "clicks-by-page:4" } }
    local dir = proc.tmpdir() .. "/ckpt"
    local expected, lines = {}, {}
    for i = 1, 1200 do
      local page = "/p" .. (i * 7 % 11)
      lines[i] = "u" .. (i % 17) .. ":u" .. (i % 17) .. "," .. page
      expected[page] = (expected[page] or 0) + 1
    end
    kafka.produce(mock.bootstrap, "clicks", lines)
    local p1 = e2e.start("kafka_repartition", { brokers = mock.bootstrap, dir = dir })
    local p2 = e2e.start("kafka_repartition", { brokers = mock.bootstrap, dir = dir })
    local ok, err = pcall(kafka.wait_state, dir, "pages", exact(expected), 90, "page counts", p1)
    if not ok then
      err = err .. "\n=== p2 (pid " .. p2.pid .. ")\n" .. p2:describe()
      for name, p in pairs { p1 = p1, p2 = p2 } do
        p:pump()
        err = err .. "\n=== " .. name .. " stderr, batches left out\n" .. p.stderr:gsub("streamrun: batch [^\n]*\n", "")
      end
      local _, out = e2e.exec({ "inspect", dir })
      err = err .. "\n=== inspect\n" .. out:gsub('"stages":{[^}]*}', ""):gsub('"params":{[^}]*}', "")
      for _, topic in ipairs { "clicks", "clicks-by-page" } do
        err = err .. "\n=== committed " .. topic .. " " .. table.concat(kafka.committed(mock.bootstrap, "pages", topic, 4), " ")
      end
      error(err, 0)
    end
    -- Each page is counted in one task, of the repartition topic.
    for _, d in ipairs(require("streamrun.kafka_tasks").task_dirs(dir)) do
      local code, out = e2e.exec({ "inspect", d, "--keys", "pages" })
      assert.equal(0, code)
      if not d:find("clicks%-by%-page%-%d$") then assert.equal("", out) end
    end
    stop_all({ p1, p2 }, 2)
  end)

  it("refuses an output to a file in a job run as tasks, before connecting", function()
    local dir = proc.tmpdir()
    local code, _, err = e2e.run("kafka_file_out", { dir = dir .. "/ckpt", out = dir .. "/out.jsonl" })
    assert.equal(2, code)
    assert.matches("kafka_file_out.lua:6: output to_json_lines.1 writes files", err, 1, true)
  end)

  it("two topics whose records meet, checkpointed: run as one process, not as tasks; each key sees both", function()
    local mock = kafka.mock { topics = { "orders:2", "payments:2" } }
    local dir = proc.tmpdir() .. "/ckpt"
    local orders, payments, want = {}, {}, {}
    for i = 1, 6 do
      orders[i], payments[i] = ("o%d:order%d"):format(i, i), ("o%d:paid%d"):format(i, i)
      want["o" .. i] = ("order%d+paid%d"):format(i, i)
    end
    kafka.produce(mock.bootstrap, "orders", orders)
    kafka.produce(mock.bootstrap, "payments", payments)
    local p = e2e.start("kafka_union", { brokers = mock.bootstrap, dir = dir })
    kafka.wait_state(dir, "seen", exact(want), 40, "each key's order and payment in one state", p)
    p:kill("TERM")
    assert.equal(0, p:wait(20))
    assert.matches("job kafka_union runs as one process, not as tasks: its Kafka sources orders and payments meet at "
      .. "union.1", p.stderr, 1, true)
  end)

  it("reads JSON values; a value that is not JSON goes to dead letters", function()
    local mock = kafka.mock { topics = { "events:2" } }
    local dir = proc.tmpdir() .. "/ckpt"
    kafka.produce(mock.bootstrap, "events", { 'a:{"n":1}', "b:not json", 'a:[1,2]', 'c:"x"' })
    local p = e2e.start("kafka_count", { brokers = mock.bootstrap, dir = dir, format = "json" })
    kafka.wait_state(dir, "totals", exact { a = 2, c = 1 }, 40, "counts of the JSON messages", p)
    proc.wait_for(function() return proc.exists(dir .. "/dead_letters.jsonl")
      and proc.read_file(dir .. "/dead_letters.jsonl"):find("not json", 1, true) end, 10, "the dead letter")
    local dl = require("cjson").decode(proc.read_file(dir .. "/dead_letters.jsonl"):match("[^\n]+"))
    assert.equal("events", dl.source)
    assert.matches("invalid JSON", dl.reason)
    -- Offsets are per partition: the letter names its partition.
    assert.is_true(dl.partition == 0 or dl.partition == 1, tostring(dl.partition))
    local at, seen = nil, {}
    for _, m in ipairs(kafka.consume(mock.bootstrap, "events")) do
      seen[m.partition] = (seen[m.partition] or -1) + 1
      if m.value == "not json" then at = { m.partition, seen[m.partition] } end
    end
    assert.same(at, { dl.partition, dl.offset })
    p:kill("TERM")
    assert.equal(0, p:wait(15))
  end)

  it("to_kafka produces every element, keyed, as JSON", function()
    local mock = kafka.mock { topics = { "words:4", "upper:4" } }
    kafka.produce(mock.bootstrap, "words", { "apple", "avocado", "banana", "cherry" }, { keyed = false })
    local p = e2e.start("kafka_relay", { brokers = mock.bootstrap })
    local got
    proc.wait_for(function()
      p:pump()
      got = kafka.consume(mock.bootstrap, "upper")
      return #got >= 4
    end, 40, function() return "4 messages on topic upper\n" .. p:describe() end)
    p:kill("TERM")
    assert.equal(0, p:wait(15))
    local seen = {}
    for _, m in ipairs(got) do seen[#seen + 1] = m.key .. " " .. m.value end
    table.sort(seen)
    assert.same({ 'A {"length":5,"word":"APPLE"}', 'A {"length":7,"word":"AVOCADO"}',
                  'B {"length":6,"word":"BANANA"}', 'C {"length":6,"word":"CHERRY"}' }, seen)
  end)

  it("waits while the broker is down, says so, and goes on when it is back", function()
    local mock = kafka.mock { topics = { "events:4" } }
    local dir = proc.tmpdir() .. "/ckpt"
    local expected = {}
    kafka.produce(mock.bootstrap, "events", messages(1, 500, 5, expected))
    local p = e2e.start("kafka_count", { brokers = mock.bootstrap, dir = dir })
    kafka.wait_state(dir, "totals", exact(expected), 40, "counts before the broker goes down", p)
    mock:down(1)
    p:wait_output("stderr", "kafka:", 30, "a kafka error on stderr")
    e2e.wait_running(p) -- batches go on
    mock:up(1)
    kafka.produce(mock.bootstrap, "events", messages(501, 500, 5, expected))
    kafka.wait_state(dir, "totals", exact(expected), 60, "counts after the broker is back", p)
    p:kill("TERM")
    assert.equal(0, p:wait(15))
  end)

  it("stopped while its broker is down, exits within the bound; restarted, counts every message once", function()
    local mock = kafka.mock { topics = { "events:4" } }
    local dir = proc.tmpdir() .. "/ckpt"
    local expected = {}
    kafka.produce(mock.bootstrap, "events", messages(1, 500, 5, expected))
    local p = e2e.start("kafka_count", { brokers = mock.bootstrap, dir = dir })
    kafka.wait_state(dir, "totals", exact(expected), 40, "counts before the broker goes down", p)
    mock:down(1)
    p:wait_output("stderr", "kafka:", 30, "a kafka error on stderr")
    -- Its group's coordinator is gone: leaving the group cannot finish.
    stop_all { p }
    mock:up(1)
    kafka.produce(mock.bootstrap, "events", messages(501, 500, 5, expected))
    local p2 = e2e.start("kafka_count", { brokers = mock.bootstrap, dir = dir })
    kafka.wait_state(dir, "totals", exact(expected), 60, "exact counts of 1000 messages after the restart", p2)
    stop_all { p2 }
  end)
end)
