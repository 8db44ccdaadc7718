-- Keyed state against the cases of Spark's BasicOperationsSuite
-- (updateStateByKey) and MapWithStateSuite (mapWithState), with their
-- inputs and expected outputs, batch by batch through the test driver.
--
-- Spark compares each batch as a set (useSet = true, and toSet in
-- MapWithStateSuite); we compare as multisets (compare.same_multisets), which
-- is at least as strict. As in Spark's TestSuiteBase, batch k runs at
-- k * 1000 ms, and the input stream maps each word x to the pair (x, 1).
--
-- Not reproduced: "mapWithState - checkpoint durations" (Spark's internal
-- checkpoint interval of the state RDD; streamrun checks timeouts every
-- batch and checkpoints on its own schedule) and "mapWithState - driver
-- failure recovery" (checkpoints, outside these specs).
local spark = require "helpers.spark"
local compare = require "helpers.compare"
local sr = require "streamrun"
local testing = require "streamrun.testing"
local jobscript = require "helpers.jobscript"

local function pair_of(x) return x, 1 end

local function sum(values)
  local s = 0
  for i = 1, #values do s = s + values[i] end
  return s
end

-- getOperationOutput of MapWithStateSuite: input words become (x, 1),
-- go through map_with_state(make_spec()); returns the mapped output and the
-- state snapshots of every batch, and the driver. The job is a script
-- (helpers.jobscript), so it runs split on several workers; opts.in_process
-- keeps it a function (one worker), for a spec whose function records its
-- calls in the spec's tables.
local function map_with_state_run(input, make_spec, nbatches, opts)
  opts = opts or {}
  -- Collected by the job itself, as Spark's TestOutputStream does (its
  -- outputs run in the spec's VM).
  local outputs, snapshots = {}, {}
  local function build()
    local job = sr.job { name = "mws", batch = "1s" }
    local mapped = job:queue(input, { name = "input" }):map(pair_of):map_with_state(make_spec())
    mapped:foreach_batch(function(elements) outputs[#outputs + 1] = elements end, { name = "output" })
    mapped:state_snapshots():foreach_batch(function(elements) snapshots[#snapshots + 1] = elements end,
      { name = "snapshots" })
    return job
  end
  local d
  if opts.in_process then
    d = testing.driver(build)
  else
    d = jobscript.driver(build)
  end
  d:tick(nbatches or #input)
  return outputs, snapshots, d
end

-- testOperation of MapWithStateSuite: outputs and snapshots batch by batch.
local function map_with_state_case(input, spec, expected_outputs, expected_snapshots, opts)
  assert(#expected_outputs == #expected_snapshots)
  local outputs, snapshots = map_with_state_run(input, spec, #expected_outputs, opts)
  assert.equal(#expected_outputs, #outputs)
  compare.same_multisets(expected_outputs, outputs)
  compare.same_multisets(expected_snapshots, snapshots)
end

-- The input and running counts shared by several MapWithStateSuite cases.
local COUNT_INPUT = { {}, { "a" }, { "a", "b" }, { "a", "b", "c" }, { "a", "b" }, { "a" }, {} }
local COUNT_SNAPSHOTS = {
  {},
  { { "a", 1 } },
  { { "a", 2 }, { "b", 1 } },
  { { "a", 3 }, { "b", 2 }, { "c", 1 } },
  { { "a", 4 }, { "b", 3 }, { "c", 1 } },
  { { "a", 5 }, { "b", 3 }, { "c", 1 } },
  { { "a", 5 }, { "b", 3 }, { "c", 1 } },
}

describe("updateStateByKey (Spark BasicOperationsSuite)", function()
  local INPUT = { { "a" }, { "a", "b" }, { "a", "b", "c" }, { "a", "b" }, { "a" }, {} }

  it("updateStateByKey", function()
    -- updateFunc = (values, state) => Some(values.sum + state.getOrElse(0))
    local out = spark.run(INPUT, function(s)
      return s:map(pair_of):update_state_by_key(function(values, state)
        return sum(values) + (state or 0)
      end)
    end)
    compare.same_multisets({
      { { "a", 1 } },
      { { "a", 2 }, { "b", 1 } },
      { { "a", 3 }, { "b", 2 }, { "c", 1 } },
      { { "a", 4 }, { "b", 3 }, { "c", 1 } },
      { { "a", 5 }, { "b", 3 }, { "c", 1 } },
      { { "a", 5 }, { "b", 3 }, { "c", 1 } },
    }, out)
  end)

  -- Both initial-value cases of Spark expect the same: c, seeded with 2,
  -- appears from the first batch although it gets no values until batch 3.
  local WITH_INITIAL = {
    { { "a", 2 }, { "c", 2 } },
    { { "a", 3 }, { "b", 1 }, { "c", 2 } },
    { { "a", 4 }, { "b", 2 }, { "c", 3 } },
    { { "a", 5 }, { "b", 3 }, { "c", 3 } },
    { { "a", 6 }, { "b", 3 }, { "c", 3 } },
    { { "a", 6 }, { "b", 3 }, { "c", 3 } },
  }

  it("updateStateByKey - simple with initial value RDD", function()
    -- initialRDD = Seq(("a", 1), ("c", 2)); here opts.initial as a table.
    local out, d = spark.run(INPUT, function(s)
      return s:map(pair_of):update_state_by_key(function(values, state)
        return sum(values) + (state or 0)
      end, { name = "totals", initial = { a = 1, c = 2 } })
    end)
    compare.same_multisets(WITH_INITIAL, out)
    assert.same({ a = 6, b = 3, c = 3 }, d:state("totals"))
  end)

  it("updateStateByKey - with initial value RDD", function()
    -- Spark's variant takes an iterator function over (key, values, state)
    -- with rememberPartitioner; ours has one function shape, which gets the
    -- key too: the case is reproduced with the key used, and opts.initial
    -- as a function returning the seed table.
    local seen_keys = {}
    local out = spark.run(INPUT, function(s)
      return s:map(pair_of):update_state_by_key(function(values, state, key)
        seen_keys[key] = true
        return sum(values) + (state or 0)
      end, { initial = function() return { a = 1, c = 2 } end })
    end, nil, { in_process = true }) -- (seen_keys is the spec's: one worker)
    compare.same_multisets(WITH_INITIAL, out)
    assert.same({ a = true, b = true, c = true }, seen_keys)
  end)

  it("updateStateByKey - testing time stamps as input", function()
    -- updateFunc = (time, key, values, state) => time + state when there
    -- are values, else state; initial (a, 0), (c, 0).
    local out = spark.run(INPUT, function(s)
      return s:map(pair_of):update_state_by_key(function(values, state, _, time_ms)
        if #values > 0 then return time_ms + (state or 0) end
        return state or 0
      end, { initial = { a = 0, c = 0 } })
    end)
    compare.same_multisets({
      { { "a", 1000 }, { "c", 0 } },
      { { "a", 3000 }, { "b", 2000 }, { "c", 0 } },
      { { "a", 6000 }, { "b", 5000 }, { "c", 3000 } },
      { { "a", 10000 }, { "b", 9000 }, { "c", 3000 } },
      { { "a", 15000 }, { "b", 9000 }, { "c", 3000 } },
      { { "a", 15000 }, { "b", 9000 }, { "c", 3000 } },
    }, out)
  end)

  it("updateStateByKey - object lifecycle", function()
    -- Spark's input has null batches (no RDD at all); its StateDStream then
    -- re-applies the function to the old state with no values, exactly what
    -- an empty batch does, so null becomes {} here. The StateObject
    -- (counter, expireCounter) is a table; Spark mutates it in place and
    -- returns it, which we do as well: the state is a decoded copy, so the
    -- mutation only counts once returned.
    local out = spark.run({ { "a", "b" }, {}, { "a", "c", "a" }, { "c" }, {}, {} }, function(s)
      return s:map(pair_of):update_state_by_key(function(values, state)
        local obj = state or { counter = 0, expire_counter = 0 }
        local n = sum(values)
        if n == 0 then
          obj.expire_counter = obj.expire_counter + 1
        else
          obj.counter = obj.counter + n
          obj.expire_counter = 0
        end
        if obj.expire_counter == 2 then return nil end
        return obj
      end):map_values(function(obj) return obj.counter end)
    end)
    compare.same_multisets({
      { { "a", 1 }, { "b", 1 } },
      { { "a", 1 }, { "b", 1 } },
      { { "a", 3 }, { "c", 1 } },
      { { "a", 3 }, { "c", 2 } },
      { { "c", 2 } },
      {},
    }, out)
  end)
end)

describe("mapWithState (Spark MapWithStateSuite)", function()
  it("mapWithState - basic operations with simple API", function()
    -- state keeps a running count; the updated count is returned.
    local function spec() return sr.state_spec(function(_, v, state)
      local s = (v or 0) + (state:exists() and state:get() or 0)
      state:update(s)
      return s
    end) end
    map_with_state_case(COUNT_INPUT, spec,
      { {}, { 1 }, { 2, 1 }, { 3, 2, 1 }, { 4, 3 }, { 5 }, {} }, COUNT_SNAPSHOTS)
  end)

  it("mapWithState - basic operations with advanced API", function()
    -- Spark's advanced function also gets the batch time (ours: the 4th
    -- argument); it returns Some(key * 2).
    local times = {}
    local function spec() return sr.state_spec(function(k, v, state, time_ms)
      times[#times + 1] = time_ms
      state:update((v or 0) + (state:exists() and state:get() or 0))
      return k:rep(2)
    end) end
    map_with_state_case(COUNT_INPUT, spec,
      { {}, { "aa" }, { "aa", "bb" }, { "aa", "bb", "cc" }, { "aa", "bb" }, { "aa" }, {} },
      COUNT_SNAPSHOTS, { in_process = true }) -- (times is the spec's: one worker)
    assert.same({ 2000, 3000, 3000, 4000, 4000, 4000, 5000, 5000, 6000 }, times)
  end)

  it("mapWithState - type inferencing and class tags", function()
    -- Spark checks the inferred Scala classes (key String, value Int, state
    -- Double, mapped Long) of the simple and the advanced function forms,
    -- with numPartitions(1) or the default. Lua has no static types; what
    -- carries over is that each form and partitioning accepts the same
    -- function and that the types reach it and come back unchanged: string
    -- keys, integer values, a Double state (a float that must stay one),
    -- and the mapped 0.
    local function run(partitions)
      local seen = {}
      local function make_spec()
        local spec = sr.state_spec(function(k, v, state, time_ms)
          seen[#seen + 1] = { type(k), v, type(time_ms), state:exists() and state:get() or false }
          state:update(0.5 + (state:exists() and state:get() or 0))
          return 0
        end)
        if partitions then spec:partitions(partitions) end
        return spec
      end
      -- (seen is the spec's: one worker.)
      local outputs, snapshots = map_with_state_run({ { "a" }, { "a" } }, make_spec, nil, { in_process = true })
      return outputs, snapshots, seen
    end
    for _, partitions in ipairs { false, 1 } do
      local outputs, snapshots, seen = run(partitions)
      assert.same({ { 0 }, { 0 } }, outputs)
      assert.same({ { { "a", 0.5 } }, { { "a", 1.0 } } }, snapshots)
      assert.same({ { "string", 1, "number", false }, { "string", 1, "number", 0.5 } }, seen)
    end
  end)

  it("mapWithState - states as mapped data", function()
    local function spec() return sr.state_spec(function(k, v, state)
      local s = (v or 0) + (state:exists() and state:get() or 0)
      state:update(s)
      return k, s
    end) end
    map_with_state_case(COUNT_INPUT, spec, {
      {},
      { { "a", 1 } },
      { { "a", 2 }, { "b", 1 } },
      { { "a", 3 }, { "b", 2 }, { "c", 1 } },
      { { "a", 4 }, { "b", 3 } },
      { { "a", 5 } },
      {},
    }, COUNT_SNAPSHOTS)
  end)

  it("mapWithState - initial states, with nothing returned as from mapping function", function()
    -- The seeds are in the first batch's snapshot, before any record.
    local function spec() return sr.state_spec(function(_, v, state)
      state:update((v or 0) + (state:exists() and state:get() or 0))
      return nil
    end):initial_state { a = 5, b = 10, c = -20, d = 0 } end
    map_with_state_case(COUNT_INPUT, spec, { {}, {}, {}, {}, {}, {}, {} }, {
      { { "a", 5 }, { "b", 10 }, { "c", -20 }, { "d", 0 } },
      { { "a", 6 }, { "b", 10 }, { "c", -20 }, { "d", 0 } },
      { { "a", 7 }, { "b", 11 }, { "c", -20 }, { "d", 0 } },
      { { "a", 8 }, { "b", 12 }, { "c", -19 }, { "d", 0 } },
      { { "a", 9 }, { "b", 13 }, { "c", -19 }, { "d", 0 } },
      { { "a", 10 }, { "b", 13 }, { "c", -19 }, { "d", 0 } },
      { { "a", 10 }, { "b", 13 }, { "c", -19 }, { "d", 0 } },
    })
  end)

  it("mapWithState - state removing", function()
    -- An existing state is removed and the key returned; a missing one is
    -- set to the value. numPartitions(1) as in Spark.
    local function spec() return sr.state_spec(function(k, v, state)
      if state:exists() then
        state:remove()
        return k
      end
      state:update(v)
    end):partitions(1) end
    map_with_state_case(
      { {}, { "a" }, { "a", "b" }, { "a", "b", "c" }, { "a", "b", "c" }, { "a", "b" }, { "a" }, {} },
      spec,
      { {}, {}, { "a" }, { "b" }, { "a", "c" }, { "b" }, { "a" }, {} },
      {
        {},
        { { "a", 1 } },
        { { "b", 1 } },
        { { "a", 1 }, { "c", 1 } },
        { { "b", 1 } },
        { { "a", 1 } },
        {},
        {},
      })
  end)

  it("mapWithState - state timing out", function()
    -- Spark: input (a b c), (a b), (a), (), (), (a), then (a) twenty more
    -- times; timeout 3 s; 20 batches run. The function sets the state to 1
    -- on a value and returns the key when timing out.
    --
    -- Spark only looks for timed-out keys on the batches where the state RDD
    -- does a full scan (its checkpoint batches, every 10 s here), so there b
    -- and c come out together at 10000 ms, and the suite only asserts "b and
    -- c once each, at some point" (its comments "c will time out" on batch 4
    -- and "b will time out" on batch 5 are not asserted). streamrun checks
    -- every batch, so we assert the exact batches: a key whose last record
    -- was at t times out at the first batch T with T - t > 3000 (Spark's
    -- lastUpdate < batchTime - timeout):
    --   c: last record at 1000 -> times out at 5000 (4000 - 1000 is not > 3000)
    --   b: last record at 2000 -> times out at 6000
    --   a: records at 3000 and 6000 (6000 - 3000 is not > 3000) and every
    --      batch after: never times out.
    local input = { { "a", "b", "c" }, { "a", "b" }, { "a" }, {}, {}, { "a" } }
    for _ = 1, 20 do input[#input + 1] = { "a" } end
    local function spec() return sr.state_spec(function(k, v, state)
      if v ~= nil then state:update(1) end
      if state:is_timing_out() then return k end
    end):timeout("3s") end
    local outputs, snapshots = map_with_state_run(input, spec, 20)

    -- Spark's own assertions.
    local all = {}
    for _, batch in ipairs(outputs) do
      for _, k in ipairs(batch) do all[#all + 1] = k end
    end
    table.sort(all)
    assert.same({ "b", "c" }, all)
    local had_all_three = false
    for _, snap in ipairs(snapshots) do
      if #snap == 3 and compare.canon(compare.sorted(snap)) == compare.canon { { "a", 1 }, { "b", 1 }, { "c", 1 } } then
        had_all_three = true
      end
    end
    assert.is_true(had_all_three)
    assert.same({ { "a", 1 } }, snapshots[20])

    -- Ours, batch by batch.
    local expected_outputs = { {}, {}, {}, {}, { "c" }, { "b" } }
    for i = 7, 20 do expected_outputs[i] = {} end
    assert.same(expected_outputs, outputs)
    local AB, ABC = { { "a", 1 }, { "b", 1 } }, { { "a", 1 }, { "b", 1 }, { "c", 1 } }
    local expected_snapshots = { ABC, ABC, ABC, ABC, AB }
    for i = 6, 20 do expected_snapshots[i] = { { "a", 1 } } end
    compare.same_multisets(expected_snapshots, snapshots)
  end)
end)
