-- streamrun.monitor, streamrun.metrics, streamrun.status and the address
-- rules of streamrun.http, on the test driver's session: the documents
-- published after each batch say what the batches did.
local cjson = require "cjson"
local testing = require "streamrun.testing"
local monitor = require "streamrun.monitor"
local http = require "streamrun.http"

local JOB = [[
local sr = require "streamrun"
local job = sr.job { name = "mon", batch = "1s" }
job:queue({}, { name = "words" })
   :map(function(w) return w, 1 end)
   :update_state_by_key(function(v, t) return (t or 0) + sr.sum(v) end, { name = "totals" })
   :foreach_batch(function() end)
return job
]]

local function driver()
  local path = os.tmpname() .. ".lua"
  local f = assert(io.open(path, "w"))
  f:write(JOB)
  f:close()
  return testing.driver(path)
end

-- Runs the batches, each pushed with its words, through a monitor whose
-- documents are captured. (The driver has no status line: the figures
-- session.report_batch would give the monitor are given here.)
local function run(batches)
  local d = driver()
  local docs = {}
  local mon = monitor.new(function(path, _, body) docs[path] = body end)
  d.session.monitor = mon
  for _, words in ipairs(batches) do
    d:push("words", words)
    d:tick()
    local S = d.session
    mon:batch(S, { batch = S.nbatches, time_ms = S.last_time, records = #words, processing_ms = 0.5,
                   scheduling_delay_ms = 0, state_keys = S.plan.state_keys(), dead_letters = 0 })
  end
  return docs, mon, d
end

describe("monitor", function()
  -- Every batch publishes here (the binary's rate limit is for fast batches).
  local every
  before_each(function() every, monitor.PUBLISH_EVERY_MS = monitor.PUBLISH_EVERY_MS, 0 end)
  after_each(function() monitor.PUBLISH_EVERY_MS = every end)

  it("publishes metrics and status after each batch, counting what ran", function()
    local docs, mon = run { { "a", "b" }, { "a" }, {} }
    assert.equal(3, mon.batches)
    local text = docs["/metrics"]
    assert.truthy(text:find("\nstreamrun_batches_total 3\n", 1, true))
    assert.truthy(text:find('\nstreamrun_records_in_total{source="words"} 3\n', 1, true))
    assert.truthy(text:find('\nstreamrun_state_keys{stage="totals"} 2\n', 1, true))
    assert.truthy(text:find('\nstreamrun_batch_processing_seconds_bucket{le="+Inf"} 3\n', 1, true))
    assert.truthy(text:find("\nstreamrun_batch_processing_seconds_count 3\n", 1, true))
    assert.truthy(text:find("# TYPE streamrun_batch_processing_seconds histogram\n", 1, true))
    local st = cjson.decode(docs["/api/status"])
    assert.equal("mon", st.job.name)
    assert.equal(3, #st.batches)
    assert.same({ 2, 1, 0 }, { st.batches[1].records, st.batches[2].records, st.batches[3].records })
    assert.same({ 1000, 2000, 3000 }, { st.batches[1].time_ms, st.batches[2].time_ms, st.batches[3].time_ms })
    for _, b in ipairs(st.batches) do
      assert.is_true(math.abs(b.unix_ms - os.time() * 1000) < 5000, tostring(b.unix_ms))
    end
    local names = {}
    for _, s in ipairs(st.stages) do names[#names + 1] = s.name end
    assert.same({ "words", "map.1", "totals", "foreach_batch.1" }, names)
    assert.equal(2, st.stages[3].state_keys)
  end)

  -- When each batch ran, by the wall clock to the millisecond.
  it("dates each batch to the millisecond", function()
    local core = require "streamrun.core"
    local a = core.unix_ms()
    local b = a
    while b == a do b = core.unix_ms() end
    assert.is_true(b - a < 1000, ("%.0f then %.0f"):format(a, b))
    local real = core.unix_ms
    core.unix_ms = function() return 1796700000123 end
    local ok, docs = pcall(run, { { "a" } })
    core.unix_ms = real
    assert(ok, docs)
    assert.equal(1796700000123, cjson.decode(docs["/api/status"]).batches[1].unix_ms)
  end)

  it("keeps the last batches only, and crosses a reload with its figures", function()
    local many = {}
    for i = 1, monitor.RECENT + 5 do many[i] = { "w" .. i } end
    local docs, mon = run(many)
    local st = cjson.decode(docs["/api/status"])
    assert.equal(monitor.RECENT, #st.batches)
    assert.equal(6, st.batches[1].batch)
    local again = monitor.new(nil, mon:export())
    assert.equal(mon.batches, again.batches)
    assert.equal(monitor.RECENT, #again.recent_json)
  end)

  it("never stops the job when the documents cannot be built: says so once", function()
    local d = driver()
    local said = {}
    local mon = monitor.new(function() error("disk on fire") end, nil,
      function(fmt, ...) said[#said + 1] = fmt:format(...) end)
    d.session.monitor = mon
    for i = 1, 3 do
      d:push("words", { "x" })
      d:tick()
      mon:batch(d.session, { batch = i, time_ms = i * 1000, records = 1, processing_ms = 0.1,
                             scheduling_delay_ms = 0, state_keys = 1, dead_letters = 0 })
    end
    assert.equal(3, mon.batches)
    assert.equal(1, #said)
    assert.truthy(said[1]:find("the status cannot be built (the job goes on): ", 1, true))
    assert.truthy(said[1]:find("disk on fire", 1, true))
  end)

  it("escapes label values as the text format wants", function()
    local metrics = require "streamrun.metrics"
    local out = {}
    metrics.family(out, "x_total", "counter", "h", { { 1, labels = { { "stage", 'a"b\\c\nd' } } } })
    assert.equal('x_total{stage="a\\"b\\\\c\\nd"} 1', out[3])
    assert.equal("+Inf", metrics.number(math.huge))
    assert.equal("0.25", metrics.number(0.25))
  end)

  it("counts a window's running result in the keys held, as its stage's figure does", function()
    local d = testing.driver(function()
      local sr = require "streamrun"
      local job = sr.job { name = "win_keys", batch = "1s" }
      job:queue({}, { name = "words" })
         :map(function(w) return w, 1 end)
         :reduce_by_key_and_window(sr.add, function(a, b) return a - b end, "10s", "1s", { name = "counts" })
         :foreach_batch(function() end)
      return job
    end)
    d:push("words", { "a", "b", "a", "c" })
    d:tick()
    local sizes = monitor.state_sizes(d.session.plan)
    assert.same({ { stage = "counts", keys = 3 } }, sizes)
    assert.equal(3, d.session.plan.state_keys())
  end)

  it("writes numbers that read back as they are (a batch time in epoch seconds too)", function()
    local metrics = require "streamrun.metrics"
    for _, v in ipairs { 1796687694.6, 123456.789012, 0.1, 1 / 3, 2 ^ 60 + 0.5, -0.000123 } do
      assert.equal(v, tonumber(metrics.number(v)))
    end
    assert.equal("1796687694.6", metrics.number(1796687694.6))
    assert.equal("0.1", metrics.number(0.1))
  end)
end)

describe("http addresses", function()
  it("are loopback unless an address says otherwise", function()
    assert.same({ "127.0.0.1", 9090 }, { http.parse_address(9090) })
    assert.same({ "127.0.0.1", 9090 }, { http.parse_address("9090") })
    assert.same({ "127.0.0.1", 9090 }, { http.parse_address(":9090") })
    assert.same({ "0.0.0.0", 80 }, { http.parse_address("0.0.0.0:80") })
    assert.same({ "[::1]", 8080 }, { http.parse_address("[::1]:8080") })
    assert.is_nil((http.parse_address("host:port")))
    assert.is_nil((http.parse_address("1:70000")))
    assert.is_nil((http.parse_address({})))
  end)
end)
