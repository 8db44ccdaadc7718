-- text_file with JSON records: bad lines become dead letters, the job goes
-- on; status lines and --stats count them.
local proc = require "helpers.proc"
local e2e = require "helpers.e2e"

local STATS_FIELDS = { "batch", "time_ms", "records", "processing_ms", "scheduling_delay_ms", "state_keys", "dead_letters",
                       "workers_busy_ms" }

describe("e2e text_file", function()
  after_each(function() proc.cleanup() end)

  it("processes good JSON records, sends invalid JSON and over-long lines to the dead-letter file, and counts them", function()
    local dir = proc.tmpdir()
    local long = '{"id":"' .. ("x"):rep(100) .. '"}' -- over the job's max_line = 64
    local input = proc.write_file(dir .. "/events.jsonl",
      '{"id":1}\n' .. "not json\n" .. '{"id":2}\n' .. long .. "\n" .. '{"id":3}\n')
    local code, stdout, stderr = e2e.run("json_file", { input = input },
      { "--checkpoint", dir .. "/ckpt", "--stats", dir .. "/stats.jsonl" })
    assert.equal(0, code)
    assert.same({ "1", "2", "3" }, e2e.elements(stdout))

    -- Dead letters: one JSON line each, with source name, offset and reason.
    local dead = e2e.read_jsonl(dir .. "/ckpt/dead_letters.jsonl")
    table.sort(dead, function(a, b) return a.offset < b.offset end)
    assert.equal(2, #dead)
    assert.equal("events", dead[1].source)
    assert.equal(9, dead[1].offset)           -- after '{"id":1}\n'
    assert.matches("invalid JSON", dead[1].reason)
    assert.equal("not json", dead[1].record)
    assert.equal("events", dead[2].source)
    assert.equal(27, dead[2].offset)          -- after three 9-byte lines
    assert.matches("max_line", dead[2].reason)

    -- stderr: the summary and the per-batch status lines both count 2.
    assert.truthy(stderr:find("finished: %d+ batches, %d+ records, 2 dead letters"), stderr)
    local status = e2e.status_lines(stderr)
    assert.is_true(#status >= 1)
    local status_dead = 0
    for _, s in ipairs(status) do status_dead = status_dead + s.dead_letters end
    assert.equal(2, status_dead, "dead letters over the status lines:\n" .. stderr)

    -- --stats: one JSON line per batch with the fields of SPEC section 12.
    local stats = e2e.read_jsonl(dir .. "/stats.jsonl")
    assert.equal(#status, #stats)
    local stats_dead, records = 0, 0
    for i, s in ipairs(stats) do
      local keys = {}
      for k, v in pairs(s) do
        keys[#keys + 1] = k
        if k == "workers_busy_ms" then -- one figure per worker (SPEC section 15)
          assert.equal("table", type(v))
          assert.equal(#status[i].workers_busy_ms, #v)
          for _, ms in ipairs(v) do assert.equal("number", type(ms)) end
        else
          assert.equal("number", type(v), k)
        end
      end
      table.sort(keys)
      local want = { unpack(STATS_FIELDS) }
      table.sort(want)
      assert.same(want, keys)
      assert.equal(i, s.batch)
      assert.equal(status[i].time_ms, s.time_ms)
      assert.equal(0, s.time_ms % 100)
      assert.is_true(s.processing_ms >= 0 and s.scheduling_delay_ms >= 0 and s.state_keys >= 0)
      stats_dead = stats_dead + s.dead_letters
      records = records + s.records
    end
    assert.is_true(records >= 3, "records in: " .. records)
    assert.equal(2, stats_dead, "dead letters over the --stats lines")
  end)

  it("does not start when the file is missing: exit 1 naming the file and the reason", function()
    local dir = proc.tmpdir()
    local missing = dir .. "/no-such-file.txt"
    local code, stdout, stderr = e2e.run("text_print", { input = missing }, { "--checkpoint", dir .. "/ckpt" })
    assert.equal(1, code, stderr)
    assert.same({}, e2e.elements(stdout))
    assert.truthy(stderr:find("text_file " .. missing .. ": No such file or directory", 1, true), stderr)
    -- check warns, and still exits 0: the file may be there when the job runs.
    local ccode, _, cerr = e2e.exec({ "check", "spec/e2e/jobs/text_print.lua", "--set", "input=" .. missing })
    assert.equal(0, ccode, cerr)
    assert.truthy(cerr:find("warning: source input: text_file " .. missing .. ": No such file or directory", 1, true), cerr)
  end)
end)
