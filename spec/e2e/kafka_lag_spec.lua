-- Kafka consumer lag on /metrics and /api/status (SPEC section 12): a job
-- reading an 8-partition topic of the mock cluster a few records a batch,
-- so it stays behind; its lag per partition is the partition's high
-- watermark minus the job's position, and goes down to 0 once it read all.
local cjson = require "cjson"
local e2e = require "helpers.e2e"
local kafka = require "helpers.kafka"
local proc = require "helpers.proc"

local PARTS = 8

local function fetch(url)
  local code, out, err = proc.run({ "curl", "-sS", "--fail", "--max-time", "10", url }, { timeout = 15 })
  assert(code == 0, ("curl %s: exit %s: %s"):format(url, tostring(code), err))
  return out
end

-- The body, or "" before the job published it (404).
local function poll(url)
  local code, out = proc.run({ "curl", "-sS", "--fail", "--max-time", "10", url }, { timeout = 15 })
  return code == 0 and out or ""
end

-- The samples of family name in an exposition, by partition:
-- partition -> value (labels source and topic checked), and whether the
-- family has its TYPE line as a gauge.
local function by_partition(text, name)
  local out = {}
  for labels, value in text:gmatch("\n" .. name .. "(%b{}) (%S+)") do
    local l = {}
    for k, v in labels:gmatch('([%a_][%w_]*)="([^"]*)"') do l[k] = v end
    assert.equal("events", l.source)
    assert.equal("events", l.topic)
    local q = tonumber(l.partition)
    assert.is_nil(out[q], "partition " .. l.partition .. " listed twice in " .. name)
    out[q] = assert(tonumber(value), value)
  end
  return out, text:find("\n# TYPE " .. name .. " gauge\n", 1, true) ~= nil
end

local function count(t)
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n
end

describe("e2e kafka lag", function()
  after_each(function() proc.cleanup() end)

  -- Starts the job on mock's topic; returns the process and the base URL.
  local function start(mock, dir)
    local p = e2e.start("kafka_lag", { brokers = mock.bootstrap, max = 5, dir = dir },
      { "--http", "127.0.0.1:0", "--quiet" })
    return p, e2e.http_base(p)
  end

  -- The whole scenario; dir: a checkpoint directory (the job runs as
  -- tasks, one per partition). Returns the last /metrics text.
  local function scenario(dir)
    local mock = kafka.mock { topics = { "events:" .. PARTS } }
    -- Partition p gets 30 + 5 p messages a round: figures that differ per
    -- partition, read 5 a batch (the job is behind for seconds).
    local produced = {}
    local function produce(round)
      for q = 0, PARTS - 1 do
        local n = 30 + 5 * q
        local lines = {}
        for i = 1, n do lines[i] = "k" .. q .. ":r" .. round .. "-" .. i end
        kafka.produce(mock.bootstrap, "events", lines, { partition = q })
        produced[q] = (produced[q] or 0) + n
      end
    end
    produce(1)
    local p, base = start(mock, dir)

    local function caught_up(what)
      local text
      proc.wait_for(function()
        text = poll(base .. "/metrics")
        local lag = by_partition(text, "streamrun_kafka_consumer_lag")
        if count(lag) ~= PARTS then return false end
        for _, v in pairs(lag) do if v ~= 0 then return false end end
        return true
      end, 30, function() return what .. ": lag 0 on all 8 partitions\n" .. p:describe() end)
      local pos, is_gauge = by_partition(text, "streamrun_kafka_consumer_position")
      assert.is_true(is_gauge)
      for q = 0, PARTS - 1 do assert.equal(produced[q], pos[q]) end
      local _, lag_gauge = by_partition(text, "streamrun_kafka_consumer_lag")
      assert.is_true(lag_gauge)
      return text
    end

    -- While behind, every partition's lag is shown (also of one not read
    -- from yet: it starts at the group's committed offset, else at `start`)
    -- and is its high watermark - the job's position.
    local function behind(what)
      local total = 0
      for q = 0, PARTS - 1 do total = total + produced[q] end
      local lag, pos, high
      proc.wait_for(function()
        local text = poll(base .. "/metrics")
        lag = by_partition(text, "streamrun_kafka_consumer_lag")
        pos = by_partition(text, "streamrun_kafka_consumer_position")
        high = by_partition(text, "streamrun_kafka_high_watermark")
        local sum = 0
        for _, v in pairs(lag) do sum = sum + v end
        -- Some read already (a loaded machine can show the watermarks
        -- before the first batch has read anything), some still to read.
        if count(lag) ~= PARTS or count(pos) ~= PARTS or sum == 0 or sum >= total then return false end
        -- The watermarks of every partition fetched since the round.
        for q = 0, PARTS - 1 do if high[q] ~= produced[q] then return false end end
        return true
      end, 30, function() return what .. ": lag of all 8 partitions while behind\n" .. p:describe() end)
      local sum = 0
      for q = 0, PARTS - 1 do
        assert.equal(high[q] - pos[q], lag[q])
        sum = sum + lag[q]
      end
      assert.is_true(sum > 0 and sum < total, "some read, some to read: " .. sum)
    end

    behind("the first round")
    caught_up("the first round")
    produce(2)
    behind("the second round")
    caught_up("the second round")

    -- Three more to partition 2: its watermark and position follow them.
    kafka.produce(mock.bootstrap, "events", { "k:r3-1", "k:r3-2", "k:r3-3" }, { partition = 2 })
    proc.wait_for(function()
      local t = fetch(base .. "/metrics")
      return by_partition(t, "streamrun_kafka_high_watermark")[2] == produced[2] + 3
        and by_partition(t, "streamrun_kafka_consumer_position")[2] == produced[2] + 3
        and by_partition(t, "streamrun_kafka_consumer_lag")[2] == 0
    end, 30, function() return "the late messages of partition 2 read\n" .. p:describe() end)

    -- The status lists the partitions under the source, with the same figures.
    local st = cjson.decode(fetch(base .. "/api/status"))
    local src
    for _, s in ipairs(st.sources) do if s.name == "events" then src = s end end
    assert.is_table(src)
    assert.equal(PARTS, #src.partitions)
    for i, part in ipairs(src.partitions) do
      local q = i - 1
      assert.equal("events", part.topic)
      assert.equal(q, part.partition)
      local want = produced[q] + (q == 2 and 3 or 0)
      assert.equal(want, part.high_watermark)
      assert.equal(want, part.position)
      assert.equal(0, part.lag)
    end

    return p, base, produced, mock
  end

  local function stop(p)
    p:kill("TERM")
    assert.equal(0, p:wait(15))
  end

  it("shows the lag of every partition, high watermark - position, down to 0 once all is read", function()
    local p, base = scenario(nil)
    local text = fetch(base .. "/metrics")
    -- Nothing committed without checkpoints; keys r1, r2, r3 in the state.
    assert.same({}, by_partition(text, "streamrun_kafka_committed_offset"))
    assert.matches('\nstreamrun_state_keys{stage="totals"} 3\n', text)
    stop(p)
  end)

  it("as tasks (one per partition), lists each partition once and the offsets committed after checkpoints",
    function()
    local p, base, produced, mock = scenario(proc.tmpdir() .. "/ckpt")
    -- The tasks' checkpoints commit every offset read to the group.
    local text
    proc.wait_for(function()
      text = fetch(base .. "/metrics")
      local committed = by_partition(text, "streamrun_kafka_committed_offset")
      for q = 0, PARTS - 1 do
        if committed[q] ~= produced[q] + (q == 2 and 3 or 0) then return false end
      end
      return true
    end, 30, function() return "every offset committed\n" .. p:describe() end)
    -- Keys summed over the 8 tasks: r1 and r2 in each, r3 in partition 2's.
    assert.matches('\nstreamrun_state_keys{stage="totals"} 17\n', text)
    stop(p)
  end)
end)
