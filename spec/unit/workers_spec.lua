-- Workers (SPEC section 15): the option and its checks, "auto", and the
-- promise that a batch's outputs, state and checkpoints do not depend on
-- the number of workers: random jobs and random input run with 1, 2, 3 and
-- 8 workers give the same results.
local sr = require "streamrun"
local testing = require "streamrun.testing"
local workers = require "streamrun.workers"

local function rng(seed)
  local x = seed
  return function(m)
    x = (x * 1103515245 + 12345) % 2147483648
    return x % m
  end
end

local VOCAB = { "a", "bb", "ccc", "a-word-longer-than-sixteen-bytes", "ünï", "x1", "1" }

local function random_lines(rnd, n)
  local lines = {}
  for i = 1, n do
    local parts = {}
    for j = 1, rnd(9) do parts[j] = VOCAB[rnd(#VOCAB) + 1] end
    lines[i] = table.concat(parts, rnd(2) == 0 and " " or "\t")
  end
  return lines
end

-- A random job over lines: the built-in word count, or user functions
-- before reduce_by_key, or a map_with_state, or a windowed count.
local function random_job(shape)
  return function()
    local job = sr.job { name = "w", batch = "1s", partitions = 4 }
    local lines = job:queue({}, { name = "lines" })
    local words = lines:flat_map(sr.words)
    local out
    if shape == 1 then
      out = words:count_by_value()
    elseif shape == 2 then
      out = words:filter(function(w) return #w > 1 end):map(function(w) return { w:sub(1, 2), #w } end)
        :reduce_by_key(function(a, b) return a + b end)
    elseif shape == 3 then
      out = words:map(function(w) return { w, 1 } end):map_with_state(sr.state_spec(function(k, v, state)
        local n = (state:get() or 0) + (v or 0)
        if v == nil then return { k, "gone" } end
        state:update(n)
        return { k, n }
      end):timeout("3s"):name("running"))
    else
      out = words:count_by_value_and_window("3s", "1s")
    end
    out:foreach_batch(function() end, { name = "out" })
    return job
  end
end

describe("workers", function()
  it("checks the option", function()
    assert.equal("auto", workers.check(nil, "x"))
    assert.equal(2, workers.check("2", "x"))
    for _, bad in ipairs { 0, -1, 1.5, "two", 257 } do
      local v, why = workers.check(bad, "sr.job")
      assert.is_nil(v)
      assert.matches("workers must be", why)
    end
    assert.has_error(function() sr.job { workers = 0 } end)
    assert.equal(3, sr.job { workers = 3 }.workers)
    assert.has_error(function() testing.driver(random_job(1), { workers = "many" }) end)
  end)

  it("auto: the online CPUs, at most the partitions", function()
    local cpus = require("streamrun.core").C.sr_workers_online_cpus()
    assert.is_true(cpus >= 1)
    assert.equal(math.min(cpus, 16), workers.count({ partitions = 16 }))
    assert.equal(1, workers.count({ partitions = 1, workers = "auto" }))
    assert.equal(5, workers.count({ partitions = 1, workers = 5 }))
  end)

  it("runs the built-in word count on a pool of that many workers", function()
    for _, n in ipairs { 1, 2, 8 } do
      local d = testing.driver(random_job(1), { workers = n })
      d:push("lines", { "a b a" })
      assert.same({ { "a", 2 }, { "b", 1 } }, d:tick().out)
      assert.equal(n, d.session.workers.n)
      assert.equal(n > 1, d.session.workers.pool ~= nil)
    end
  end)

  it("counts each worker's busy time for the status line, --stats and /metrics", function()
    local w = workers.open({ partitions = 16, workers = 2 }, function() end)
    local first = workers.batch_busy(w, 5)
    assert.equal(2, #first)
    assert.equal(5, first[1]) -- worker 0 runs the whole batch
    assert.equal(0, first[2])
    local d = testing.driver(random_job(1), { workers = 2 })
    d:push("lines", random_lines(rng(1), 5000))
    d:tick()
    local busy = workers.batch_busy(d.session.workers, 1)
    assert.is_true(busy[2] > 0) -- worker 1 counted its share
    assert.equal("5.0/0.0", workers.describe(first))
    local one = workers.open({ partitions = 16, workers = 1 }, function() end)
    assert.same({ 7 }, workers.batch_busy(one, 7))
    assert.same({ 7 }, workers.totals(one))
    assert.equal("[5.000, 0.000]", workers.json(first))
    local out = {}
    workers.collector(require "streamrun.metrics")(nil, d.session, out)
    local text = table.concat(out, "\n")
    assert.matches("streamrun_workers 2", text, 1, true)
    assert.matches('streamrun_worker_busy_seconds_total{worker="1"} ', text, 1, true)
  end)

  it("gives the same outputs, state and checkpoints with 1, 2, 3 and 8 workers", function()
    for shape = 1, 4 do
      for seed = 1, 6 do
        local drivers = {}
        for i, n in ipairs { 1, 2, 3, 8 } do drivers[i] = testing.driver(random_job(shape), { workers = n }) end
        local rnd = rng(seed * 31 + shape)
        for b = 1, 8 do
          local lines = random_lines(rnd, rnd(4) == 0 and 0 or rnd(200))
          local outs = {}
          for i, d in ipairs(drivers) do
            d:push("lines", lines)
            outs[i] = d:tick().out
          end
          for i = 2, #drivers do assert.same(outs[1], outs[i], ("shape %d seed %d batch %d"):format(shape, seed, b)) end
        end
        local stage = shape == 3 and "running" or nil
        if stage then
          for i = 2, #drivers do assert.same(drivers[1]:state(stage), drivers[i]:state(stage)) end
        end
        -- A checkpoint written with N workers restores with M.
        local path = drivers[4]:checkpoint()
        local again = testing.restore(path, { job = random_job(shape), workers = 2 })
        local lines = random_lines(rnd, 50)
        again:push("lines", lines)
        drivers[1]:push("lines", lines)
        assert.same(drivers[1]:tick().out, again:tick().out)
      end
    end
  end)
end)
