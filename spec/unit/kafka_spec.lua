-- streamrun.kafka without a cluster: the DSL's checks of job:kafka,
-- to_kafka and repartition (file:line), and the source's framed records
-- read into batches (values, pairs, JSON and its dead letters).
local sr = require "streamrun"
local loader = require "streamrun.loader"
local kafka = require "streamrun.kafka"
local core = require "streamrun.core"

local C, ffi = core.C, core.ffi

local function load_error(fn)
  local job, err = loader.load(fn)
  assert.is_nil(job, "the job loaded")
  return err
end

local function here()
  local info = debug.getinfo(2, "Sl")
  return info.source:sub(2) .. ":" .. info.currentline
end

-- A C batch of framed records: { partition index, key or false, value,
-- offset[, partition number (default: the index)] }.
local function framed(records)
  local b = ffi.gc(C.sr_batch_new(0, 0), C.sr_batch_free)
  for _, r in ipairs(records) do
    local key, value = r[2], r[3]
    local h = ffi.new("sr_kafka_record_t", r[1], r[5] or r[1], key and #key or -1)
    local bytes = ffi.string(h, ffi.sizeof(h)) .. (key or "") .. value
    assert(C.sr_batch_append(b, bytes, #bytes, r[4]) == 0)
  end
  return b
end

describe("kafka", function()
  describe("the DSL rejects, naming file:line", function()
    local cases = {
      { "no brokers", function(job) return job:kafka { topic = "t" } end, "kafka: brokers must be" },
      { "a bad topic", function(job) return job:kafka { brokers = "h:1", topic = "a b" } end, "not a valid topic name" },
      { "a bad start", function(job) return job:kafka { brokers = "h:1", topic = "t", start = "middle" } end,
        "start must be \"earliest\" or \"latest\"" },
      { "an unknown option", function(job) return job:kafka { brokers = "h:1", topic = "t", partiton = 1 } end,
        "unknown option 'partiton'" },
      { "a bad config value", function(job) return job:kafka { brokers = "h:1", topic = "t", config = { x = {} } } end,
        "config: x must be a string" },
      { "to_kafka without a topic", function(job) return job:queue({}):to_kafka { brokers = "h:1" } end,
        "to_kafka: topic must be" },
      { "repartition of single elements", function(job) return job:queue({}):repartition("t2") end,
        "repartition needs a keyed stream" },
    }
    for _, c in ipairs(cases) do
      it(c[1], function()
        local where
        local err = load_error(function()
          local job = sr.job { name = "j" }
          where = here(); c[2](job)
          return job
        end)
        assert.matches(c[3], err, 1, true)
        assert.equal(1, err:find(where, 1, true))
      end)
    end
  end)

  it("a with_key source is keyed; repartition adds a sink and a keyed source of the topic", function()
    local job = loader.load(function()
      local job = sr.job { name = "j" }
      job:kafka { brokers = "h:1", topic = { "a", "b" }, with_key = true, name = "in" }
         :repartition("re", { name = "re" })
         :print()
      return job
    end)
    assert.equal("yes", job.by_name["in"].keyed)
    assert.same({ "a", "b" }, job.by_name["in"].topics)
    assert.equal("streamrun-j", job.by_name["in"].group)
    assert.equal("to_kafka", job.by_name["re.out"].op)
    assert.equal("pairs", job.by_name["re"].format)
    assert.equal("streamrun-j", job.by_name["re"].group)
  end)

  describe("reads framed records", function()
    local dead
    local function collect(source, offset, reason, record, partition)
      dead[#dead + 1] = { source, offset, reason, record, partition }
    end
    before_each(function() dead = {} end)

    it("as values, with their partitions and offsets when asked", function()
      local cb = framed { { 0, "k", "one", 10 }, { 3, false, "two", 7 } }
      local b = kafka.read_batch({ stage_name = "in", format = "text" }, cb, collect, true)
      assert.equal(2, b.n)
      assert.same({ "one", "two" }, { b.a[1], b.a[2] })
      assert.same({ 0, 3 }, b.part)
      assert.same({ 10, 7 }, b.offs)
    end)

    it("as (key, value) pairs; a message without a key is a dead letter", function()
      local cb = framed { { 0, "k1", "v1", 1 }, { 0, false, "v2", 2 }, { 1, "", "v3", 3 } }
      local b = kafka.read_batch({ stage_name = "in", format = "text", with_key = true }, cb, collect)
      assert.equal(2, b.n)
      assert.same({ "k1", "" }, { b.a[1], b.a[2] })
      assert.same({ "v1", "v3" }, { b.b[1], b.b[2] })
      assert.equal(1, #dead)
      assert.same({ "in", 2 }, { dead[1][1], dead[1][2] })
      assert.matches("no key", dead[1][3])
      assert.same({ 2 }, b.skips)
    end)

    it("JSON values; invalid JSON is a dead letter with its offset, the rest goes on", function()
      local cb = framed { { 0, false, '{"a":1}', 5 }, { 1, false, "{nope", 6, 4 }, { 0, false, "[2]", 7 } }
      local b = kafka.read_batch({ stage_name = "in", format = "json" }, cb, collect)
      assert.equal(2, b.n)
      assert.same({ a = 1 }, b.a[1])
      assert.same({ 2 }, b.a[2])
      assert.equal(1, #dead)
      assert.same({ "in", 6, "{nope", 4 }, { dead[1][1], dead[1][2], dead[1][4], dead[1][5] })
      assert.matches("invalid JSON", dead[1][3])
    end)

    it("a repartition topic's [key, value] values as pairs", function()
      local cb = framed { { 0, "x", '["x",{"n":2}]', 1 }, { 0, "y", '[true,3]', 2 }, { 0, "z", '"bad"', 3 } }
      local b = kafka.read_batch({ stage_name = "re", format = "pairs" }, cb, collect)
      assert.equal(2, b.n)
      assert.same({ "x", { n = 2 } }, { b.a[1], b.b[1] })
      assert.same({ true, 3 }, { b.a[2], b.b[2] })
      assert.matches("not a %[key, value%] pair", dead[1][3])
    end)
  end)
end)
