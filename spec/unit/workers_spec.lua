-- Workers (SPEC section 15): the option and its checks, "auto", and the
-- promise that a batch's outputs, state and checkpoints do not depend on
-- the number of workers: random jobs and random input run with 1, 2, 3 and
-- 8 workers give the same results, the keyed segments in every worker's
-- own VM; failing user functions there give the same dead letters and
-- on_error stop; a reload swaps every worker's logic.
local sr = require "streamrun"
local testing = require "streamrun.testing"
local workers = require "streamrun.workers"

local function rng(seed)
  local x = seed
  return function(m)
    x = (x * 1103515245 + 12345) % 2147483648
    return math.floor(x / 65536) % m -- (the low bits of this generator cycle)
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

-- Random jobs over lines, as scripts (each worker's VM loads the job from
-- its script): the built-in word count; user functions before a
-- reduce_by_key; a map_with_state with a timeout; a windowed count with
-- its inverse; reduce_by_key into map_with_state; a map into
-- count_by_value into update_state_by_key; a reducer that is not
-- commutative (concatenation: the arrival order shows) into
-- update_state_by_key; a chain from a stage another output reads too (its
-- batch dealt to the workers) into a map_with_state; keyed windows: one
-- without an inverse over a concatenation (the order of first appearance
-- shows), one with an inverse and a filter, a count of table elements; a
-- group_by_key (its values in arrival order; single elements are dead
-- letters); the built-in word count into update_state_by_key and into a
-- map_with_state with a timeout (each worker counts its share in C and
-- sends its words' counts from C); every record into update_state_by_key
-- (no reduce before it: its new keys' outputs in the order each first
-- came); the joins and cogroup of two chains;
-- several keyed segments one after the other (SEGMENTS: how many).
-- SPLIT: the shapes whose keyed stages run on every worker.
local SHAPES = {
  "out = words:count_by_value()",
  [[out = words:filter(function(w) return #w > 1 end):map(function(w) return { w:sub(1, 2), #w } end)
      :reduce_by_key(function(a, b) return a + b end)]],
  [[out = words:map(function(w) return { w, 1 } end):map_with_state(sr.state_spec(function(k, v, state)
      local n = (state:get() or 0) + (v or 0)
      if v == nil then return { k, "gone" } end
      state:update(n)
      return { k, n }
    end):timeout("3s"):name("running"))]],
  [[out = words:count_by_value_and_window("3s", "1s")]],
  [[out = words:map(function(w) return w:lower(), 1 end):reduce_by_key(sr.add)
      :map_with_state(sr.state_spec(function(k, v, state)
        if v == nil then return k, -1 end
        local n = (state:exists() and state:get() or 0) + v
        state:update(n)
        return k, n
      end):timeout("2s"):name("running"))]],
  [[out = words:map(function(w) return w:upper() end):count_by_value():update_state_by_key(function(values, total)
      local t = total or 0
      for i = 1, #values do t = t + values[i] end
      if t > 40 then return nil end
      return t
    end, { name = "running" })]],
  [[out = words:map(function(w) return w:sub(1, 1), w end):reduce_by_key(function(a, b) return a .. "+" .. b end)
      :update_state_by_key(function(values, last) return values[1] or last end, { name = "running" })]],
  [[local upper = words:map(function(w) return w:upper() end)
    upper:count_by_value():foreach_batch(function() end, { name = "side" })
    out = upper:map(function(w) return w, #w end):map_with_state(sr.state_spec(function(k, v, state)
      if v == nil then return k, "gone" end
      local n = (state:exists() and state:get() or 0) + v
      state:update(n)
      return k, n
    end):timeout("2s"):name("running"))]],
  [[out = words:map(function(w) return w:sub(1, 1), w end)
      :reduce_by_key_and_window(function(a, b) return a .. "+" .. b end, "4s", "2s")]],
  [[out = words:filter(function(w) return #w < 20 end):map(function(w) return w:sub(1, 2), #w end)
      :reduce_by_key_and_window(sr.add, function(a, b) return a - b end, "3s", "1s",
        { filter = function(_, v) return v > 0 end })]],
  [[out = words:map(function(w) return { w:sub(1, 1), #w } end):count_by_value_and_window("5s", "1s")]],
  [[out = words:map(function(w) if w ~= "x1" then return #w, w end return w end):group_by_key()]],
  [[out = words:count_by_value():update_state_by_key(function(counts, total)
      local t = total or 0
      for i = 1, #counts do t = t + counts[i] end
      if t > 40 then return nil end
      return t
    end, { name = "running" })]],
  [[out = words:count_by_value():map_with_state(sr.state_spec(function(w, c, state)
      if c == nil then return w, "gone" end
      local n = (state:exists() and state:get() or 0) + c
      state:update(n)
      return w, n
    end):timeout("2s"):name("running"))]],
  [[out = words:map(function(w) return w:sub(1, 2), w end):update_state_by_key(function(ws, last)
      local s = last or ""
      for i = 1, #ws do s = s .. ws[i]:sub(-1) end
      if #s > 30 then return nil end
      return s
    end, { name = "running" })]],
}
-- Joins of two chains from the same stream (each its own side): keys on
-- both sides, on the left alone and on the right alone.
local JOINS = {}
for _, op in ipairs { "join", "left_outer_join", "right_outer_join", "full_outer_join", "cogroup" } do
  SHAPES[#SHAPES + 1] = ([[local l = words:map(function(w) return w:sub(1, 1), #w end)
    local r = words:filter(function(w) return #w ~= 3 end):map(function(w) return w:sub(-1), w end)
    out = l:%s(r)]]):format(op)
  JOINS[#SHAPES] = true
end
-- Several keyed segments one after the other, each on every worker.
local CHAINED = {
  [[out = words:map(function(w) return w, 1 end):reduce_by_key(sr.add)
      :map(function(w, c) return #w % 3, w .. c end):reduce_by_key(function(a) return a end)]],
  [[out = words:map(function(w) return w:sub(1, 1), #w end):reduce_by_key(sr.add)
      :map_with_state(sr.state_spec(function(k, v, state)
        local n = (state:exists() and state:get() or 0) + (v or 0)
        state:update(n)
        return k, n
      end):name("running"))
      :map(function(k, n) return n % 2 == 0 and "even" or k, 1 end)
      :reduce_by_key_and_window(function(a, b) return a + b end, "3s", "1s")]],
  [[out = words:map(function(w) return #w, w end):group_by_key()
      :map(function(k, ws) return ws[1], #ws end):reduce_by_key(sr.add)]],
}
local SEGMENTS = {}
for _, text in ipairs(CHAINED) do
  SHAPES[#SHAPES + 1] = text
  SEGMENTS[#SHAPES] = 2
end
local SPLIT = { [2] = true, [3] = true, [4] = true, [5] = true, [6] = true, [7] = true, [8] = true,
                [9] = true, [10] = true, [11] = true, [12] = true, [13] = true, [14] = true, [15] = true }
for shape in pairs(JOINS) do SPLIT[shape] = true end
for shape in pairs(SEGMENTS) do SPLIT[shape] = true end
local STATEFUL = { [3] = true, [5] = true, [6] = true, [7] = true, [8] = true, [13] = true, [14] = true, [15] = true,
                   [#SHAPES - 1] = true }
-- Keyed stages seeded by opts.initial (each seed in its owner's shard):
-- a map_with_state whose seeds outside the vocabulary time out, and an
-- initial function (called on worker 0) into an update_state_by_key
-- after a count_by_value.
local SEEDED = {
  [[out = words:map(function(w) return w, 1 end):map_with_state(sr.state_spec(function(k, v, state)
      if v == nil then return k, "gone" end
      local n = (state:exists() and state:get() or 0) + v
      state:update(n)
      return k, n
    end):timeout("2s"):initial_state { a = 100, zz = 5, [7] = 70, ["1"] = 1, [true] = 0, q = 9 }:name("running"))]],
  [[out = words:filter(function(w) return #w < 5 end):count_by_value():update_state_by_key(function(values, total)
      local t = total or 0
      for i = 1, #values do t = t + values[i] end
      if t > 60 then return nil end
      return t
    end, { name = "running", initial = function() return { a = 50, x1 = 1, never = 3, [2] = 2 } end })]],
}
-- Views of a split keyed stage's state (state_snapshots, read from every
-- shard): of a map_with_state fed directly, with seeds and a timeout, and
-- of one after a reduce_by_key.
local VIEWED = {
  [[local m = words:map(function(w) return w, #w end):map_with_state(sr.state_spec(function(k, v, state)
      if v == nil then return k, "gone" end
      state:update((state:exists() and state:get() or 0) + v)
    end):timeout("2s"):initial_state { a = 1, zz = 2 }:name("running"))
    m:foreach_batch(function() end, { name = "mapped" })
    out = m:state_snapshots()]],
  [[local m = words:map(function(w) return w:sub(1, 1), 1 end):reduce_by_key(sr.add)
      :map_with_state(sr.state_spec(function(k, v, state)
        local n = (state:exists() and state:get() or 0) + v
        if n > 30 then state:remove() else state:update(n) end
        return k, n
      end):name("running"))
    out = m:state_snapshots()]],
}
for _, text in ipairs(SEEDED) do
  SHAPES[#SHAPES + 1] = text
  SPLIT[#SHAPES], STATEFUL[#SHAPES] = true, true
end
for _, text in ipairs(VIEWED) do
  SHAPES[#SHAPES + 1] = text
  SPLIT[#SHAPES], STATEFUL[#SHAPES] = true, true
end

local script_dir
local function script(name, text)
  if not script_dir then
    script_dir = os.tmpname()
    os.remove(script_dir)
    assert(os.execute("mkdir -p " .. script_dir))
  end
  local path = ("%s/%s.lua"):format(script_dir, name)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
  return path
end

local function random_job(shape)
  return script("job" .. shape, ([[local sr = require "streamrun"
local job = sr.job { name = "w", batch = "1s", partitions = 4 }
local words = job:queue({}, { name = "lines" }):flat_map(sr.words)
local out
%s
out:foreach_batch(function() end, { name = "out" })
return job
]]):format(SHAPES[shape]))
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

  it("auto: the CPUs the process may use, at most the partitions", function()
    local cpus = require("streamrun.core").C.sr_workers_online_cpus()
    assert.is_true(cpus >= 1)
    -- (nproc counts the CPUs of the affinity mask, as a container's cpuset
    -- or taskset leaves it, unless OpenMP's variables say otherwise)
    local p = assert(io.popen("env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc"))
    assert.equal(tonumber(p:read("*l")), cpus)
    p:close()
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

  it("counts a share holding an element that is no line in Lua, as one worker does", function()
    local outs, letters = {}, {}
    for i, n in ipairs { 1, 2, 3 } do
      local d = testing.driver(random_job(13), { workers = n })
      assert.equal(n > 1, d.plan.parallel ~= nil)
      d:push("lines", { "a b a", 42, "b c", { "x" }, "c a" })
      outs[i] = d:tick().out
      letters[i] = {}
      for j, l in ipairs(d.dead_letters) do letters[i][j] = l.source .. "|" .. l.reason:gsub("\n.*", "") end
    end
    assert.same({ { "a", 3 }, { "b", 2 }, { "c", 2 } }, outs[1])
    assert.equal(2, #letters[1])
    for i = 2, 3 do
      assert.same(outs[1], outs[i])
      assert.same(letters[1], letters[i])
    end
  end)

  it("says which keyed segment stays on worker 0, and why, beside those split", function()
    local path = script("parts_mixed", [[local sr = require "streamrun"
local job = sr.job { name = "mixed", batch = "1s", partitions = sr.param("parts", 16) }
local words = job:queue({}, { name = "lines" }):flat_map(sr.words)
words:map(function(w) return w, 1 end)
  :update_state_by_key(function(values, total) return (total or 0) + #values end, { name = "totals" })
  :foreach_batch(function() end, { name = "out" })
words:map(function(w) return w, 1 end):reduce_by_key(sr.add):foreach_batch(function() end, { name = "counts" })
return job
]])
    local d = testing.driver(path, { workers = 2, params = { parts = 16 } })
    d:push("lines", random_lines(rng(3), 20)):tick()
    local again = testing.restore(d:checkpoint(), { job = path, workers = 2, params = { parts = 5 } })
    local said = {}
    workers.note_plan({ n = 2, log = function(f, ...) said[#said + 1] = f:format(...) end }, again.plan, again.job)
    assert.equal("workers: 2; map.2 > reduce_by_key.1 run on 2 workers, the other stages on worker 0; map.1 > totals"
      .. " on worker 0 (the state of totals holds 16 partitions, the job 5)", said[1])
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
    for shape = 1, #SHAPES do
      for seed = 1, 6 do
        local drivers = {}
        for i, n in ipairs { 1, 2, 3, 8 } do drivers[i] = testing.driver(random_job(shape), { workers = n }) end
        -- The keyed segment really runs on every worker, in their own VMs.
        for i = 2, 4 do
          local par = drivers[i].plan.parallel
          assert.equal(SPLIT[shape] or false, par ~= nil, ("shape %d"):format(shape))
          if par then assert.equal(drivers[i].session.workers.n, par.n) end
          assert.equal(SEGMENTS[shape] or (par and 1 or 0), #(drivers[i].plan.parallels or {}))
        end
        local rnd = rng(seed * 31 + shape)
        for b = 1, 8 do
          -- (Fewer lines for a join: its output grows as the square.)
          local lines = random_lines(rnd, rnd(4) == 0 and 0 or rnd(JOINS[shape] and 30 or 200))
          local outs = {}
          for i, d in ipairs(drivers) do
            d:push("lines", lines)
            outs[i] = d:tick().out
          end
          for i = 2, #drivers do assert.same(outs[1], outs[i], ("shape %d seed %d batch %d"):format(shape, seed, b)) end
        end
        -- Dead letters too (here: what is no pair for a group), in order.
        local function letters(d)
          local list = {}
          for i, l in ipairs(d.dead_letters) do
            list[i] = ("%s|%s|%s|%s"):format(l.source, l.offset, (l.reason:gsub("\n.*", "")), l.record)
          end
          return list
        end
        if shape == 12 then assert.is_true(#drivers[1].dead_letters > 0) end
        for i = 2, #drivers do assert.same(letters(drivers[1]), letters(drivers[i])) end
        local stage = STATEFUL[shape] and "running" or nil
        if stage then
          for i = 2, #drivers do assert.same(drivers[1]:state(stage), drivers[i]:state(stage)) end
        end
        -- Checkpoints are the same bytes whatever N, and one written with
        -- N workers restores with M.
        local paths = {}
        for i, d in ipairs(drivers) do
          paths[i] = d:checkpoint()
          local f = assert(io.open(paths[i], "rb"))
          paths[i] = { path = paths[i], bytes = f:read("*a") }
          f:close()
        end
        for i = 2, #drivers do
          assert.equal(paths[1].bytes, paths[i].bytes, ("shape %d: checkpoint of %d workers"):format(shape, i))
        end
        local again = testing.restore(paths[4].path, { job = random_job(shape), workers = 2 })
        local lines = random_lines(rnd, 50)
        again:push("lines", lines)
        drivers[1]:push("lines", lines)
        assert.same(drivers[1]:tick().out, again:tick().out)
        if stage then assert.same(drivers[1]:state(stage), again:state(stage)) end
      end
    end
  end)

  -- Failing user functions in the other workers' VMs: the same dead letters
  -- (stage, reason with the error, record offset or key) as with one
  -- worker, and on_error = "fail" stops the job with the same message.
  local FAILING = [[local sr = require "streamrun"
local job = sr.job { name = "f", batch = "1s", partitions = 8, on_error = sr.param("on_error", "dead_letter") }
local words = job:queue({}, { name = "lines" }):flat_map(sr.words)
words:map(function(w)
  if w == "bad" then error("no bad words") end
  return w, 1
end):map_with_state(sr.state_spec(function(k, v, state)
  if k == "x1" and v then error("x1 fails here") end
  local n = (state:exists() and state:get() or 0) + (v or 0)
  state:update(n)
  return k, n
end):name("running")):foreach_batch(function() end, { name = "out" })
return job
]]
  local REDUCING = [[local sr = require "streamrun"
local job = sr.job { name = "r", batch = "1s", partitions = 8 }
job:queue({}, { name = "lines" }):flat_map(sr.words):map(function(w) return w:sub(1, 1), #w end)
  :reduce_by_key(function(a, b) return a + b end)
  :update_state_by_key(function(values, total)
    if values[1] % 7 == 0 then error("seven") end
    return (total or 0) + (values[1] or 0)
  end, { name = "running" })
  :foreach_batch(function() end, { name = "out" })
return job
]]

  local function sorted_letters(d)
    local list = {}
    for i, l in ipairs(d.dead_letters) do
      list[i] = ("%s|%s|%s|%s"):format(l.source, l.offset, (l.reason:gsub("\n.*", "")), l.record)
    end
    table.sort(list)
    return list
  end

  -- The job at path on 1, 2 and 3 workers.
  local function drivers_of(path)
    return { testing.driver(path, { workers = 1 }), testing.driver(path, { workers = 2 }),
             testing.driver(path, { workers = 3 }) }
  end

  -- lines pushed to every driver and a batch run: outs[i] = pick(result, i)
  -- of driver i (a second value of pick's goes to outs[i + 2]).
  local function tick_all(drivers, lines, pick)
    for _, d in ipairs(drivers) do d:push("lines", lines) end
    local outs = {}
    for i, d in ipairs(drivers) do
      local a, b = pick(d:tick(), i)
      outs[i] = a
      if b ~= nil then outs[i + 2] = b end
    end
    return outs
  end

  it("dead-letters what fails in any worker's VM as one worker does", function()
    for _, text in ipairs { FAILING, REDUCING } do
      local path = script("failing", text)
      local drivers = drivers_of(path)
      local rnd = rng(7)
      for _ = 1, 4 do
        local lines = random_lines(rnd, 300)
        lines[#lines + 1] = "bad x1 ok bad"
        local outs = tick_all(drivers, lines, function(r) return r.out end)
        for i = 2, #drivers do assert.same(outs[1], outs[i]) end
      end
      assert.is_not_nil(drivers[2].plan.parallel)
      local one = sorted_letters(drivers[1])
      assert.is_true(#one > 0)
      for i = 2, #drivers do assert.same(one, sorted_letters(drivers[i])) end
      for i = 2, #drivers do assert.same(drivers[1]:state("running"), drivers[i]:state("running")) end
    end
    -- The reasons name the stage and keep the error's message.
    local d = testing.driver(script("failing", FAILING), { workers = 2 })
    d:push("lines", { "a bad", "x1 b" })
    d:tick()
    local reasons = {}
    for _, l in ipairs(d.dead_letters) do reasons[#reasons + 1] = l.reason end
    local all = table.concat(reasons, "\n")
    assert.matches("stage map%.1 %(map at .-%): .-no bad words", all)
    assert.matches("stage running %(map_with_state at .-%): key \"x1\": .-x1 fails here", all)
    assert.same({ "lines", "lines" }, { d.dead_letters[1].source, d.dead_letters[2].source })
  end)

  -- A reducer's number partials bound for its own worker's partitions
  -- stay in that worker's VM (not packed and unpacked): the same outputs
  -- and state, and worker 0 kept some.
  it("keeps a worker's own number partials out of the buffers", function()
    local drivers = drivers_of(script("reducing", REDUCING))
    local rnd = rng(11)
    for _ = 1, 3 do
      local outs = tick_all(drivers, random_lines(rnd, 300), function(r) return r.out end)
      assert.is_true(#outs[1] > 0)
      for i = 2, #drivers do assert.same(outs[1], outs[i]) end
      for i = 2, #drivers do assert.is_true(drivers[i].plan.parallel.e0.keep.n > 0) end
    end
    for i = 2, #drivers do assert.same(drivers[1]:state("running"), drivers[i]:state("running")) end
  end)

  -- A stage after a window fails on an element the window made: its dead
  -- letter names the stage (a window's output is no record of the
  -- source's), as with one worker.
  it("names the failing stage, not the source, for an element a window made", function()
    local drivers = drivers_of(script("after_window", [[local sr = require "streamrun"
local job = sr.job { name = "aw", batch = "1s", partitions = 8 }
job:queue({}, { name = "lines" }):map(function(l) return l, 1 end):window("2s", "1s", { name = "w" })
  :map(function(k, v) if k == "boom" then error("no boom") end return k, v end, { name = "m" })
  :reduce_by_key(sr.add):foreach_batch(function() end, { name = "out" })
return job
]]))
    assert.is_not_nil(drivers[2].plan.parallel)
    local lines = random_lines(rng(9), 50)
    lines[#lines + 1] = "boom"
    tick_all(drivers, lines, function(r) return r.out end)
    for i, d in ipairs(drivers) do
      assert.equal(1, #d.dead_letters, "workers " .. i)
      assert.equal("m", d.dead_letters[1].source, "workers " .. i)
      assert.equal(-1, d.dead_letters[1].offset, "workers " .. i)
    end
  end)

  -- A reducer that raises on the owners' merge of the workers' partials
  -- (the first line's share is worker 0's, the second worker 1's): the
  -- failing call is a dead letter of the stage naming the key, with the key
  -- and the partial; the key keeps its accumulator, and the merge goes on
  -- with the keys after it.
  it("dead-letters a reducer failing on the owners' merge and merges the rest", function()
    local path = script("merge_fail", [[local sr = require "streamrun"
local job = sr.job { name = "rf", batch = "1s", partitions = 8 }
job:queue({}, { name = "lines" }):flat_map(sr.words):map(function(w) return w:sub(1, 1), w end)
  :reduce_by_key(function(a, b) if b == "bad" then error("no bad partials") end return a .. "+" .. b end,
    { name = "joined" })
  :foreach_batch(function() end, { name = "out" })
return job
]])
    local d = testing.driver(path, { workers = 2 })
    assert.is_not_nil(d.plan.parallel)
    d:push("lines", { "b1 c1 a1 d1", "bad c2 a2 d2" })
    assert.same({ { "b", "b1" }, { "c", "c1+c2" }, { "a", "a1+a2" }, { "d", "d1+d2" } }, d:tick().out)
    assert.equal(1, #d.dead_letters)
    local l = d.dead_letters[1]
    assert.equal("joined", l.source)
    assert.matches('^stage joined %(reduce_by_key at .-%): key "b": .-no bad partials', l.reason)
    assert.equal('["b","bad"]', l.record)
    d:push("lines", { "b3 c3", "b4 c4" })
    assert.same({ { "b", "b3+b4" }, { "c", "c3+c4" } }, d:tick().out)
  end)

  -- Failing user functions of keyed windows, groups and joins on other
  -- workers: the same dead letters, and the same stop with "fail".
  local FAILING_KEYED = [[local sr = require "streamrun"
local job = sr.job { name = "fk", batch = "1s", partitions = 8, on_error = sr.param("on_error", "dead_letter") }
local words = job:queue({}, { name = "lines" }):flat_map(sr.words)
words:map(function(w)
  if w == "bad" then error("no bad words") end
  return w, 1
end):reduce_by_key_and_window(sr.add, function(a, b) return a - b end, "2s", "1s", { name = "counts",
  filter = function(k, v) if k == "x1" then error("x1 fails here") end return v > 0 end })
  :foreach_batch(function() end, { name = "out" })
local l = words:map(function(w) if w == "ok" then return w end return w:sub(1, 1), w end)
local r = words:map(function(w) return w:sub(1, 1), #w end)
l:cogroup(r):foreach_batch(function() end, { name = "out2" })
return job
]]

  it("dead-letters what fails in a keyed window or join on any worker as one worker does", function()
    local path = script("failing_keyed", FAILING_KEYED)
    local drivers = drivers_of(path)
    assert.equal(2, #drivers[2].plan.parallels)
    local rnd = rng(11)
    for _ = 1, 4 do
      local lines = random_lines(rnd, 100)
      lines[#lines + 1] = "bad x1 ok bad"
      local outs = tick_all(drivers, lines, function(r) return { r.out, r.out2 } end)
      for i = 2, #drivers do assert.same(outs[1], outs[i]) end
    end
    local one = sorted_letters(drivers[1])
    local all = table.concat(one, "\n")
    assert.matches("no bad words", all)
    assert.matches("x1 fails here", all)
    assert.matches("cogroup needs %(k, v%) pairs", all)
    for i = 2, #drivers do assert.same(one, sorted_letters(drivers[i])) end
    local msgs = {}
    for i, n in ipairs { 1, 2, 3 } do
      local d = testing.driver(path, { workers = n, params = { on_error = "fail" } })
      d:push("lines", { "a b c", "d e x1" })
      local ok, err = pcall(d.tick, d)
      assert.is_false(ok)
      msgs[i] = tostring(type(err) == "table" and err.fatal or err):gsub("\n.*", "")
    end
    assert.matches("x1 fails here", msgs[1])
    assert.equal(msgs[1], msgs[2])
    assert.equal(msgs[1], msgs[3])
  end)

  -- Values that cannot pass between workers (a function here) in a keyed
  -- window: one dead letter per key and batch, the other keys go on, as
  -- with one worker.
  local UNCROSSABLE = [[local sr = require "streamrun"
local job = sr.job { name = "u", batch = "1s", partitions = 8 }
local words = job:queue({}, { name = "lines" }):flat_map(sr.words)
words:map(function(w) if w == "x1" or w == "e" then return w, function() end end return w, 1 end)
  :reduce_by_key_and_window(function(a, b)
    if type(a) ~= "number" then return a end
    if type(b) ~= "number" then return b end
    return a + b
  end, "2s", "1s", { name = "counts" })
  :foreach_batch(function() end, { name = "out" })
words:map(function(w) if w == "x1" then return w, function() end end return w, #w end):group_by_key()
  :map(function(k, vs) return k, #vs end):foreach_batch(function() end, { name = "out2" })
return job
]]

  local function letters_no_record(d)
    local list = {}
    for i, l in ipairs(d.dead_letters) do
      list[i] = ("%s|%s|%s"):format(l.source, l.offset, (l.reason:gsub("\n.*", "")))
    end
    table.sort(list)
    return list
  end

  it("dead-letters values that cannot pass between workers and goes on", function()
    local path = script("uncrossable", UNCROSSABLE)
    local drivers = drivers_of(path)
    assert.equal(2, #drivers[2].plan.parallels)
    local rnd = rng(5)
    for _ = 1, 3 do
      local lines = random_lines(rnd, 100)
      lines[#lines + 1] = "x1 a x1 e"
      local outs = tick_all(drivers, lines, function(r, i) return r.out, i > 1 and r.out2 or nil end)
      assert.is_true(#outs[1][1] > 0)
      for i = 2, #drivers do assert.same(outs[1], outs[i]) end
      -- (group_by_key keeps any value with one worker: several agree.)
      assert.same(outs[4], outs[5])
    end
    local function window_letters(d)
      local list = {}
      for _, l in ipairs(letters_no_record(d)) do
        if l:find("reduce_by_key_and_window", 1, true) then list[#list + 1] = l end
      end
      return list
    end
    local one = window_letters(drivers[1])
    assert.equal(6, #one)
    assert.matches("cannot keep a function in a window", one[1])
    for i = 2, #drivers do assert.same(one, window_letters(drivers[i])) end
    local two = letters_no_record(drivers[2])
    assert.matches("group_by_key.-cannot pass the value between workers: it holds a function", table.concat(two, "\n"))
    assert.same(two, letters_no_record(drivers[3]))
    -- The record names the element, its function shown by its type.
    for _, l in ipairs(drivers[2].dead_letters) do
      if l.reason:find("cannot pass the value", 1, true) then
        assert.falsy(l.record:find("0x", 1, true), l.record)
        assert.truthy(l.record:find('"<function>"', 1, true), l.record)
      end
    end
  end)

  it("closes the VMs of the segments set up before one that fails to attach", function()
    local exchange = require "streamrun.exchange"
    local attach_one = exchange.attach_one
    local plan
    exchange.attach_one = function(job, steps, ctx, seg, i)
      plan = ctx.plan
      if i == 2 then error("segment 2 fails here", 0) end
      return attach_one(job, steps, ctx, seg, i)
    end
    local ok, err = pcall(testing.driver, script("failing_keyed", FAILING_KEYED), { workers = 2 })
    exchange.attach_one = attach_one
    assert.is_false(ok)
    assert.matches("segment 2 fails here", tostring(type(err) == "table" and (err.fatal or err.message) or err))
    assert.equal(1, #plan.parallels)
    assert.is_nil(plan.parallels[1].vms)
  end)

  it("stops on a failing record with on_error = \"fail\" as one worker does", function()
    local path = script("failing", FAILING)
    local msgs = {}
    for i, n in ipairs { 1, 2 } do
      local d = testing.driver(path, { workers = n, params = { on_error = "fail" } })
      d:push("lines", { "a b c", "d e x1" })
      local ok, err = pcall(d.tick, d)
      assert.is_false(ok)
      msgs[i] = tostring(type(err) == "table" and err.fatal or err):gsub("\n.*", "")
    end
    assert.matches("x1 fails here", msgs[1])
    assert.equal(msgs[1], msgs[2])
  end)

  it("passes a pair whose value is cjson.null between workers as that pair", function()
    local texts = {
      [[local sr = require "streamrun"
local null = require("cjson").null
local job = sr.job { name = "n", batch = "1s", partitions = 8 }
job:queue({}, { name = "lines" }):flat_map(sr.words):map(function(w) return w, null end)
  :map_with_state(sr.state_spec(function(k, v, state)
    state:update((state:exists() and state:get() or 0) + 1)
    return k, v == null and "null" or type(v)
  end):name("running")):foreach_batch(function() end, { name = "out" })
return job
]],
      [[local sr = require "streamrun"
local null = require("cjson").null
local job = sr.job { name = "n", batch = "1s", partitions = 8 }
job:queue({}, { name = "lines" }):flat_map(sr.words):map(function(w) return w, null end)
  :reduce_by_key(function(a, b) return a end)
  :foreach_batch(function() end, { name = "out" })
return job
]],
    }
    for i, text in ipairs(texts) do
      local path = script("nulls" .. i, text)
      local outs = {}
      for j, n in ipairs { 1, 2 } do
        local d = testing.driver(path, { workers = n })
        d:push("lines", { "a b c d", "e f a b" })
        outs[j] = d:tick().out
        assert.equal(n > 1, d.plan.parallel ~= nil)
      end
      assert.is_true(#outs[1] > 0)
      if i == 1 then assert.equal("null", outs[1][1][2]) end
      assert.same(outs[1], outs[2])
    end
  end)

  it("orders count_by_value's keys into update_state_by_key whatever the elements", function()
    local path = script("zero", [[local sr = require "streamrun"
local job = sr.job { name = "z", batch = "1s", partitions = 8 }
job:queue({}, { name = "lines" }):map(function(l) return l end):count_by_value()
  :update_state_by_key(function(values, total) return (total or 0) + (values[1] or 0) end, { name = "running" })
  :foreach_batch(function() end, { name = "out" })
return job
]])
    local outs = {}
    for j, n in ipairs { 1, 2, 3 } do
      local d = testing.driver(path, { workers = n })
      d:push("lines", { "\0a", "plain", "\0b", "\0a", "x\0", "\0" })
      local first = d:tick().out
      d:push("lines", { "\0b", "new", "\0c" })
      outs[j] = { first, d:tick().out, d:state("running") }
      assert.equal(n > 1, d.plan.parallel ~= nil)
    end
    assert.equal(7, #outs[1][2])
    assert.same(outs[1], outs[2])
    assert.same(outs[1], outs[3])
  end)

  -- opts.initial on several workers (a table, or a function each call of
  -- which appends a line to the file of param "log", whichever VM calls
  -- it): two keyed segments seeded where one worker seeds them, once,
  -- each key in its owner's shard; bad entries (a key too long, an int64
  -- cdata as a state) are the same dead letters in the same order;
  -- the seeds without records time out as one worker's do.
  local SEEDS = [[local sr = require "streamrun"
local job = sr.job { name = "seeds", batch = "1s", partitions = 8 }
local function seeds()
  local f = assert(io.open(sr.param("log"), "a"))
  f:write("called\n")
  f:close()
  return { a = 1, b = 2, [string.rep("k", 70000)] = 3, c = 4, [5] = 5, int = 1LL, d = 6, e = 7, [true] = 8, f = 9,
           ccc = 10 }
end
local function table_of()
  return { a = 1, b = 2, [string.rep("k", 70000)] = 3, c = 4, [5] = 5, int = 1LL, d = 6, e = 7, [true] = 8, f = 9,
           ccc = 10 }
end
local words = job:queue({}, { name = "lines" }):flat_map(sr.words)
words:map(function(w) return w, 1 end):map_with_state(sr.state_spec(function(k, v, state)
  if v == nil then return k, "gone " .. state:get() end
  local n = (state:exists() and state:get() or 0) + v
  state:update(n)
  return k, n
end):timeout("3s"):initial_state(INITIAL):name("running")):foreach_batch(function() end, { name = "out" })
words:map(function(w) return w:sub(1, 1), #w end):update_state_by_key(function(values, total)
  local t = total or 0
  for i = 1, #values do t = t + values[i] end
  return t
end, { name = "totals", initial = INITIAL }):foreach_batch(function() end, { name = "out2" })
return job
]]
  local SEED_BATCHES = { { "a b x" }, {}, { "bb a", "ccc" }, {}, { "x1 a" }, {}, { "b" } }

  -- (The long key's record cut short.)
  local function letters_of(d)
    local list = {}
    for i, l in ipairs(d.dead_letters) do
      list[i] = ("%s|%s|%s|%s"):format(l.source, l.offset, (l.reason:gsub("\n.*", ""):sub(1, 120)), l.record:sub(1, 40))
    end
    return list
  end

  local lines_in = require("helpers.crashloop").count_lines

  -- Runs batches from..to of SEED_BATCHES on d: each batch's outputs.
  local function run_seeded(d, from, to)
    local outs = {}
    for b = from, to do
      d:push("lines", SEED_BATCHES[b])
      local r = d:tick()
      outs[#outs + 1] = { r.out, r.out2 }
    end
    return outs
  end

  it("seeds opts.initial once, each key on its owner, as one worker does", function()
    for _, initial in ipairs { "table_of()", "seeds" } do
      local path = script("seeds", (SEEDS:gsub("INITIAL", initial)))
      local runs = {}
      -- (One log for every run, emptied in between: the checkpoint holds
      -- the params.)
      local log = os.tmpname()
      for i, n in ipairs { 1, 2, 3, 8 } do
        os.remove(log)
        local d = testing.driver(path, { workers = n, params = { log = log } })
        assert.equal(n > 1 and 2 or 0, d:parallel_segments())
        local outs = run_seeded(d, 1, #SEED_BATCHES)
        local f = assert(io.open(d:checkpoint(), "rb"))
        runs[i] = { outs = outs, letters = letters_of(d), running = d:state("running"), totals = d:state("totals"),
                    bytes = f:read("*a") }
        f:close()
        -- The function ran once, in one VM (both stages share it: twice).
        assert.equal(initial == "seeds" and 2 or 0, lines_in(log))
      end
      os.remove(log)
      local one = runs[1]
      -- The seeds are there from the first batch; c, d, e... time out at
      -- 5000 (seeded at 1000, 3s), with b and x (records at 1000), by key bytes.
      assert.same({ { "a", 2 }, { "b", 3 }, { "x", 1 } }, one.outs[1][1])
      local gone = {}
      for _, e in ipairs(one.outs[5][1]) do if type(e[2]) == "string" then gone[#gone + 1] = e[1] end end
      assert.same({ 5, "b", "c", "d", "e", "f", "x", true }, gone)
      assert.same({ x1 = 1, a = 4, b = 1 }, one.running)
      assert.same({ a = 1 + 1 + 1 + 1, b = 2 + 1 + 2 + 1, c = 4 + 3, d = 6, e = 7, f = 9, ccc = 10, x = 1 + 2,
                    [5] = 5, [true] = 8 }, one.totals)
      -- Each bad entry once per stage, in the order of one worker's (by
      -- key: streamrun.stateful.seed).
      assert.equal(4, #one.letters)
      assert.matches("^running|%-1|.*initial state, key \"int\": cannot store", one.letters[1])
      assert.matches("^running|%-1|.*initial state, key \"kkkk", one.letters[2])
      assert.matches("^totals|%-1|.*initial state, key \"int\": cannot store", one.letters[3])
      for i = 2, #runs do
        assert.same(one.outs, runs[i].outs)
        assert.same(one.letters, runs[i].letters)
        assert.same(one.running, runs[i].running)
        assert.same(one.totals, runs[i].totals)
        assert.is_true(one.bytes == runs[i].bytes, ("%s: the checkpoint of run %d is not one worker's"):format(initial, i))
      end
    end
  end)

  -- An initial function that fails, or returns no table: one dead letter
  -- per stage, as with one worker, and no seeds.
  it("dead-letters an initial function that fails or returns no table once, as one worker does", function()
    for _, initial in ipairs { [[function() error("no seeds") end]], "function() return 42 end" } do
      local path = script("seeds_bad", (SEEDS:gsub("INITIAL", initial)))
      local runs = {}
      for i, n in ipairs { 1, 2, 3 } do
        local d = testing.driver(path, { workers = n })
        assert.equal(n > 1 and 2 or 0, d:parallel_segments())
        runs[i] = { outs = run_seeded(d, 1, 3), letters = letters_of(d), totals = d:state("totals") }
      end
      assert.equal(2, #runs[1].letters)
      assert.matches(initial:match("error") and "no seeds" or "initial state must be a table", runs[1].letters[1])
      assert.same({ a = 2, b = 3, x = 1, c = 3 }, runs[1].totals)
      for i = 2, #runs do assert.same(runs[1], runs[i]) end
    end
  end)

  -- A checkpoint written with N workers restores with M: the keys seeded
  -- stay as the batches left them, never seeded again (the function is
  -- not called).
  it("restores seeded state written with N workers on M without seeding again", function()
    local path = script("seeds_fn", (SEEDS:gsub("INITIAL", "seeds")))
    local log = os.tmpname()
    local whole = testing.driver(path, { workers = 1, params = { log = log } })
    local want = run_seeded(whole, 1, #SEED_BATCHES)
    for _, written in ipairs { 1, 3, 8 } do
      local d = testing.driver(path, { workers = written, params = { log = log } })
      run_seeded(d, 1, 3)
      local ckpt = d:checkpoint()
      for _, m in ipairs { 1, 2, 3, 8 } do
        local restored_log = os.tmpname()
        os.remove(restored_log)
        local again = testing.restore(ckpt, { job = path, workers = m, params = { log = restored_log } })
        assert.equal(m > 1 and 2 or 0, again:parallel_segments())
        local outs = run_seeded(again, 4, #SEED_BATCHES)
        assert.same({ unpack(want, 4) }, outs, ("written with %d, restored with %d"):format(written, m))
        assert.same(whole:state("running"), again:state("running"))
        assert.same(whole:state("totals"), again:state("totals"))
        assert.equal(0, lines_in(restored_log))
        -- (The seeds' dead letters were the first run's.)
        assert.same({}, again.dead_letters)
      end
    end
    -- The checkpoint of the job's start (before any batch: the binary
    -- writes one) holds no seeds yet: the restored job seeds at its first
    -- batch, calling the function once.
    for _, written in ipairs { 1, 3 } do
      local ckpt = testing.driver(path, { workers = written, params = { log = log } }):checkpoint()
      for _, m in ipairs { 1, 2, 8 } do
        local restored_log = os.tmpname()
        os.remove(restored_log)
        local again = testing.restore(ckpt, { job = path, workers = m, params = { log = restored_log } })
        assert.same(want, run_seeded(again, 1, #SEED_BATCHES), ("start written with %d, restored with %d"):format(written, m))
        assert.same(whole:state("totals"), again:state("totals"))
        assert.equal(2, lines_in(restored_log))
        assert.same(letters_of(whole), letters_of(again))
        os.remove(restored_log)
      end
    end
    os.remove(log)
  end)

  -- A reload keeps a seeded stage's state (not seeded again) and seeds a
  -- new stage with opts.initial at its first batch, split as one worker.
  it("reloads seeded stages as one worker does: kept ones are not seeded again, new ones are", function()
    local v1 = script("seeds_v1", (SEEDS:gsub("INITIAL", "table_of()")))
    local v2 = script("seeds_v2", (SEEDS:gsub("INITIAL", "table_of()"):gsub("return job\n$", [[
words:map(function(w) return w, 1 end):update_state_by_key(function(values, total)
  return (total or 0) + #values
end, { name = "added", initial = { a = 100, zz = 1 } }):foreach_batch(function() end, { name = "out3" })
return job
]])))
    local runs = {}
    for i, n in ipairs { 1, 2, 3 } do
      local d = testing.driver(v1, { workers = n })
      local outs = run_seeded(d, 1, 2)
      assert.equal("kept running, totals; dropped none; new added", d:reload(v2))
      assert.equal(n > 1 and 3 or 0, d:parallel_segments())
      d:push("lines", { "a zz q" })
      local r = d:tick()
      outs[#outs + 1] = { r.out, r.out2, r.out3 }
      runs[i] = { outs = outs, letters = letters_of(d), running = d:state("running"), added = d:state("added") }
    end
    assert.same({ a = 101, zz = 2, q = 1 }, runs[1].added)
    assert.equal(3, runs[1].running.a)
    -- The new stage's bad-free seeds add no dead letters to the first four.
    assert.equal(4, #runs[1].letters)
    for i = 2, #runs do assert.same(runs[1], runs[i]) end
  end)

  -- The watchdog watches at most 1024 VMs: plans no longer in use give
  -- theirs back when the collector closes them, and a new plan collects
  -- first when the table is full (a test run builds many).
  it("starts more worker VMs over time than the watchdog watches at once", function()
    -- (With no collection on its own, as when the VMs' memory, which the
    -- collector does not count, is all that grows.)
    collectgarbage("stop")
    local ok, err = pcall(function()
      for i = 1, 160 do
        local d = testing.driver(random_job(2), { workers = 8 })
        assert.equal(7, d.plan.parallel.n - 1, i)
      end
    end)
    collectgarbage("restart")
    assert(ok, err)
  end)

  -- A reload before a seeded stage's first batch keeps its state unseeded:
  -- the new plan seeds it at that batch (it once never did, with any N).
  it("seeds opts.initial at the first batch when a reload came before it", function()
    local path = script("reload_first", [[local sr = require "streamrun"
local job = sr.job { name = "rf", batch = "1s", partitions = 8 }
local words = job:queue({}, { name = "lines" }):flat_map(sr.words)
words:count_by_value():update_state_by_key(function(values, total)
  local t = total or 0
  for i = 1, #values do t = t + values[i] end
  return t
end, { name = "running", initial = { a = 5, b = 2 } }):foreach_batch(function() end, { name = "out" })
words:map(function(w) return w, 1 end):map_with_state(sr.state_spec(function(w, c, state)
  local n = (state:exists() and state:get() or 0) + c
  state:update(n)
  return w, n
end):initial_state { a = 100 }:name("direct")):foreach_batch(function() end, { name = "out2" })
return job
]])
    for _, n in ipairs { 1, 2, 3 } do
      for _, reload in ipairs { false, true } do
        local d = testing.driver(path, { workers = n })
        if reload then d:reload(path) end
        d:push("lines", { "a" })
        local r = d:tick()
        local what = ("%d workers, reload %s"):format(n, tostring(reload))
        assert.same({ { "a", 6 }, { "b", 2 } }, r.out, what)
        assert.same({ { "a", 101 } }, r.out2, what)
        assert.same({ a = 6, b = 2 }, d:state("running"), what)
        d:reload(path)
        d:push("lines", { "b" })
        assert.same({ { "a", 6 }, { "b", 3 } }, d:tick().out, what) -- (not seeded again)
      end
    end
  end)

  -- A view of a split stage's state reads every shard after the batch's
  -- phases: its snapshot is one worker's, by key bytes. (Such a plan once
  -- searched for segments forever on 2 workers.)
  it("splits a map_with_state whose state_snapshots are read, with the outputs of one worker", function()
    local path = script("mws_view", [[local sr = require "streamrun"
local job = sr.job { name = "v", batch = "1s" }
local m = job:queue({}, { name = "lines" }):map(function(l) return l, 1 end)
  :map_with_state(sr.state_spec(function(k, v, state)
    local n = (state:exists() and state:get() or 0) + v
    state:update(n)
    return k, n
  end):name("counts"))
m:foreach_batch(function() end, { name = "out" })
m:state_snapshots():foreach_batch(function() end, { name = "snap" })
return job
]])
    local outs = {}
    for j, n in ipairs { 1, 2, 3, 8 } do
      local d = testing.driver(path, { workers = n })
      assert.equal(n > 1 and 1 or 0, d:parallel_segments())
      d:push("lines", { "a", "b", "a" })
      local first = d:tick()
      d:push("lines", { "b" })
      local second = d:tick()
      -- (A reload's plan reads the shards it split the kept state into.)
      assert.equal("kept counts; dropped none; new none", d:reload(path))
      assert.equal(n > 1 and 1 or 0, d:parallel_segments())
      d:push("lines", { "c", "1", "a", "x1", "ünï", "bb" })
      outs[j] = { first, second, d:tick(), d:state("counts") }
    end
    assert.same({ { "a", 1 }, { "b", 1 }, { "a", 2 } }, outs[1][1].out)
    assert.same({ { "a", 2 }, { "b", 1 } }, outs[1][1].snap)
    assert.same({ a = 3, b = 2, c = 1, ["1"] = 1, x1 = 1, ["ünï"] = 1, bb = 1 }, outs[1][4])
    assert.equal(7, #outs[1][3].snap)
    for j = 2, #outs do assert.same(outs[1], outs[j]) end
  end)

  -- Enough keys that a partition's table grows and its keys collide: the
  -- window's result is written from each owner's shard, whose table went
  -- through what one worker's did, so the bytes match.
  it("writes the checkpoint of a window with many keys as one worker does", function()
    local text = [[local sr = require "streamrun"
local job = sr.job { name = "manykeys", batch = "1s", partitions = 8 }
job:queue({}, { name = "lines" }):map(function(k) return k, 1 end)
  :reduce_by_key_and_window(sr.add, function(a, b) return a - b end, "30s", "1s", { name = "counts" })
  :foreach_batch(function() end, { name = "out" })
job:queue({}, { name = "more" }):map(function(k) return k, k end)
  :reduce_by_key_and_window(function(a, b) return a .. "," .. b end, "30s", "1s", { name = "joined" })
  :foreach_batch(function() end, { name = "out2" })
return job
]]
    local path = script("manykeys", text)
    local bytes = {}
    for i, n in ipairs { 1, 2, 3 } do
      local d = testing.driver(path, { workers = n })
      assert.equal(n > 1, d.plan.parallel ~= nil)
      for b = 1, 20 do
        local keys, more = {}, {}
        for j = 1, 60 do
          keys[j] = ("key%d"):format((b * 37 + j * 11) % 700)
          more[j] = ("m%d"):format((b * 13 + j) % 90)
        end
        d:push("lines", keys)
        d:push("more", more)
        d:tick()
      end
      local f = assert(io.open(d:checkpoint(), "rb"))
      bytes[i] = f:read("*a")
      f:close()
    end
    -- (Compared as booleans: a failure would print megabytes otherwise.)
    assert.is_true(bytes[1] == bytes[2], "the checkpoint of 2 workers is not one worker's")
    assert.is_true(bytes[1] == bytes[3], "the checkpoint of 3 workers is not one worker's")
  end)

  it("reloads a keyed window split among workers, keeping its slices and results", function()
    local text = [[local sr = require "streamrun"
local job = sr.job { name = "rw", batch = "1s", partitions = 8 }
local words = job:queue({}, { name = "lines" }):flat_map(sr.words)
words:map(function(w) return w:sub(1, 1), SCALE end)
  :reduce_by_key_and_window(sr.add, function(a, b) return a - b end, "3s", "1s", { name = "counts" })
  :foreach_batch(function() end, { name = "out" })
words:map(function(w) return w:sub(-1), w end)
  :reduce_by_key_and_window(function(a, b) return a .. b end, "2s", "1s", { name = "joined" })
  :foreach_batch(function() end, { name = "out2" })
return job
]]
    local v1 = script("rwin1", (text:gsub("SCALE", "1")))
    local v2 = script("rwin2", (text:gsub("SCALE", "10")))
    local runs = {}
    for i, n in ipairs { 1, 2, 3 } do
      local d = testing.driver(v1, { workers = n })
      assert.equal(n > 1, d.plan.parallel ~= nil)
      local rnd = rng(5)
      local outs = {}
      for b = 1, 6 do
        if b == 4 then d:reload(v2) end
        d:push("lines", random_lines(rnd, 40))
        local r = d:tick()
        outs[b] = { r.out, r.out2 }
      end
      local path = d:checkpoint()
      local f = assert(io.open(path, "rb"))
      runs[i] = { outs = outs, bytes = f:read("*a") }
      f:close()
    end
    -- The new logic counts tens from the reload on, over the old slices.
    assert.is_true(#runs[1].outs[4][1] > 0)
    for i = 2, #runs do
      assert.same(runs[1].outs, runs[i].outs)
      assert.equal(runs[1].bytes, runs[i].bytes)
    end
  end)

  -- The owners merge partials of a built-in fold (sr.add, sr.min, sr.max)
  -- in C while they are string keys with numbers, else in Lua: either way
  -- as one worker folds them (floats, negatives, integers past 2^32, a
  -- batch with a value that is no number). (Sums whose partials round
  -- differently, 0.1 + 0.2 + 0.3, differ with N as partial sums do.)
  it("merges the partials of sr.add, sr.min and sr.max as one worker folds them", function()
    for _, fold in ipairs { "add", "min", "max" } do
      local path = script("fold_" .. fold, ([[local sr = require "streamrun"
local job = sr.job { name = "m", batch = "1s", partitions = 8 }
job:queue({}, { name = "lines" }):flat_map(sr.words):map(function(w)
  local k, v = w:match("^(%%a+)=(.*)$")
  return k, tonumber(v) or v
end):reduce_by_key(sr.%s)
  :update_state_by_key(function(values, last) return values[1] or last end, { name = "running" })
  :foreach_batch(function() end, { name = "out" })
return job
]]):format(fold))
      local batches = {
        { "a=1.5 b=-3 c=0.25 a=2 b=-3.25", "c=0.5 d=5000000000 a=-0.0 d=1e300 e=-1e-300", "c=0.125 b=7" },
        { "a=x a=y b=2", "b=1" }, -- strings: merged in Lua
        { "a=0.5 a=0.25 a=0.75 f=-9007199254740993" },
      }
      local outs = {}
      for j, n in ipairs { 1, 2, 3 } do
        local d = testing.driver(path, { workers = n })
        local got = {}
        for b, lines in ipairs(batches) do
          d:push("lines", lines)
          got[b] = d:tick().out
        end
        got[#got + 1] = d:state("running")
        outs[j] = got
        assert.equal(n > 1, d.plan.parallel ~= nil)
      end
      assert.same(outs[1], outs[2], fold)
      assert.same(outs[1], outs[3], fold)
    end
  end)

  it("runs small batches of a keyed segment without state on worker 0 alone, with the results of one worker", function()
    local splitcost = require "streamrun.splitcost"
    local max_alone = splitcost.MAX_ALONE
    splitcost.MAX_ALONE = 100
    local ok, err = pcall(function()
      -- shape 2: a chain into reduce_by_key; 12: into group_by_key (some
      -- elements its dead letters); a join of two chains; 5: into
      -- map_with_state
      local join = math.huge
      for shape in pairs(JOINS) do join = math.min(join, shape) end
      local ALONE = { [2] = true, [12] = true, [join] = true }
      for _, shape in ipairs { 2, 12, join, 5 } do
        local one = testing.driver(random_job(shape), { workers = 1 })
        local two = testing.driver(random_job(shape), { workers = 2, adaptive_split = true })
        local always = testing.driver(random_job(shape), { workers = 2 })
        local rnd = rng(shape)
        for b = 1, 12 do
          -- (the segment's input: the lines, or a join's sides' words,
          -- up to 8 a line: 5 lines are under MAX_ALONE records, 150
          -- over)
          local lines = random_lines(rnd, b % 4 == 0 and 150 or 5)
          local want
          for i, d in ipairs { one, two, always } do
            d:push("lines", lines)
            local got = d:tick().out
            if i == 1 then want = got else assert.same(want, got, ("shape %d batch %d"):format(shape, b)) end
          end
          if ALONE[shape] and b <= 3 then
            -- The first small batches run alone (what a record costs
            -- there; the first compiles, not counted), the next split
            -- (what splitting adds).
            assert.equal(math.min(b, 2), two:batches_alone(), ("batch %d"):format(b))
          end
        end
        assert.equal(0, always:batches_alone())
        -- The same dead letters (split, a batch's come grouped by worker).
        local function letters(d)
          local list = {}
          for i, l in ipairs(d.dead_letters) do list[i] = ("%s|%s|%s"):format(l.source, l.offset, l.record) end
          table.sort(list)
          return list
        end
        assert.same(letters(one), letters(two))
        assert.same(letters(one), letters(always))
        if shape == 12 then assert.is_true(#one.dead_letters > 0) end
        if ALONE[shape] then
          assert.is_true(two:batches_alone() >= 1)
          -- Batches over MAX_ALONE records (every fourth) always split.
          assert.is_true(two:batches_alone() <= 9)
        else
          -- A keyed stage's state lives with its owners: every batch splits.
          assert.equal(0, two:batches_alone())
        end
      end
    end)
    splitcost.MAX_ALONE = max_alone
    assert(ok, err)
  end)

  -- A join's two chains run in its segment's step; the watchdog sees each
  -- side's records as its own chain's step of the one-worker plan, so a
  -- restart skips a stuck record in that side's input. (The poison list
  -- is what the watchdog writes and reads back: records to skip per batch
  -- and step.)
  it("skips a stuck record of either side of a join as one worker does, split or alone", function()
    local path = script("join_poison", [[local sr = require "streamrun"
local watchdog = require "streamrun.watchdog"
local job = sr.job { name = "jp", batch = "1s", partitions = 4 }
-- (the spec's table in this VM; the other workers' VMs have their own)
local steps = package.loaded.join_poison_steps or {}
local function seen(side) return function(w)
  steps[side] = { watchdog.P.step, watchdog.P.rec }
  return w, side .. w
end end
local l = job:queue({}, { name = "left" }):map(seen("L"), { name = "lmap" })
local r = job:queue({}, { name = "right" }):map(seen("R"), { name = "rmap" })
l:join(r, { name = "joined" }):foreach_batch(function() end, { name = "out" })
return job
]])
    local watchdog = require "streamrun.watchdog"
    local steps = {}
    package.loaded.join_poison_steps = steps
    -- Each side's step in the one-worker plan (its user function, on
    -- worker 0, sees it), and in a small batch run alone.
    local one = testing.driver(path, { workers = 1 })
    one:push("left", { "a" }):push("right", { "a" }):tick()
    local want = { L = steps.L[1], R = steps.R[1] }
    assert.not_equal(want.L, want.R)
    local alone = testing.driver(path, { workers = 2, adaptive_split = true })
    alone:push("left", { "a" }):push("right", { "a" }):tick()
    assert.equal(1, alone:batches_alone())
    assert.same(want, { L = steps.L[1], R = steps.R[1] })

    local CONFIGS = { { workers = 1 }, { workers = 2 }, { workers = 2, adaptive_split = true } }
    for side, stage in pairs { L = "lmap", R = "rmap" } do
      local results = {}
      for i, opts in ipairs(CONFIGS) do
        local d = testing.driver(path, opts)
        d:push("left", { "a", "b", "c" }):push("right", { "a", "b", "c" })
        watchdog.poison = { [1000] = { [want[side]] = { { rec = 2, stage = stage } } } }
        local ok, out = pcall(d.tick, d)
        watchdog.poison = nil
        assert(ok, out)
        assert.equal(opts.adaptive_split and 1 or 0, d:batches_alone())
        local letters = {}
        for _, x in ipairs(d.dead_letters) do letters[#letters + 1] = { x.source, x.offset, x.record } end
        results[i] = { out = out.out, letters = letters }
      end
      -- The second record of that side alone is skipped, and dead-lettered.
      local source = side == "L" and "left" or "right"
      assert.equal(1, #results[1].letters)
      assert.equal(source, results[1].letters[1][1])
      assert.equal('"b"', results[1].letters[1][3])
      assert.equal(2, #results[1].out)
      assert.same(results[1], results[2])
      assert.same(results[1], results[3])
    end
  end)

  it("keeps a state's own partitions when the job's change, on worker 0 as one worker does", function()
    local STAGES = {
      totals = [[:update_state_by_key(function(values, total) return (total or 0) + #values end, { name = "totals" })]],
      win = [[:reduce_by_key_and_window(sr.add, function(a, b) return a - b end, "3s", "1s", { name = "win" })]],
    }
    for name, stage in pairs(STAGES) do
      local path = script("parts_" .. name, ([[local sr = require "streamrun"
local job = sr.job { name = "parts", batch = "1s", partitions = sr.param("parts", 16) }
job:queue({}, { name = "lines" }):flat_map(sr.words):map(function(w) return w, 1 end)
  %s
  :foreach_batch(function() end, { name = "out" })
return job
]]):format(stage))
      local rnd = rng(7)
      local first, later = random_lines(rnd, 40), random_lines(rnd, 40)
      local d = testing.driver(path, { workers = 2, params = { parts = 16 } })
      d:push("lines", first):tick()
      local ckpt = d:checkpoint()
      local results = {}
      for i, n in ipairs { 1, 2, 3 } do
        -- Restored into the job with 5 partitions.
        local again = testing.restore(ckpt, { job = path, workers = n, params = { parts = 5 } })
        if n > 1 then
          assert.matches(("the state of %s holds 16 partitions, the job 5"):format(name), again.plan.parallel_why or "")
        end
        again:push("lines", later)
        results[i] = { again:tick().out, name == "totals" and again:state("totals") or nil }
        -- Reloaded into the job with 5 partitions.
        local re = testing.driver(path, { workers = n, params = { parts = 16 } })
        re:push("lines", first):tick()
        re:reload(path, { params = { parts = 5 } })
        re:push("lines", later)
        assert.same({ re:tick().out, name == "totals" and re:state("totals") or nil }, results[i])
      end
      assert.same(results[1], results[2])
      assert.same(results[1], results[3])
    end
  end)

  it("loads in every worker's VM the script text worker 0 loaded, not the file saved since", function()
    local function version(tag)
      return ([[local sr = require "streamrun"
local job = sr.job { name = "text", batch = "1s", partitions = 4 }
job:queue({}, { name = "lines" }):flat_map(sr.words):map(function(w) return w, %q end)
  :group_by_key({ name = "tags" })
  :foreach_batch(function() end, { name = "out" })
return job
]]):format(tag)
    end
    local path = script("text_v1", version("v1"))
    -- The script is saved again just after worker 0 read it (a save while
    -- a reload runs).
    local loader = require "streamrun.loader"
    local load = loader.load
    loader.load = function(p, o)
      local job, err = load(p, o)
      script("text_v1", version("v2"))
      return job, err
    end
    local ok, d = pcall(testing.driver, path, { workers = 2 })
    loader.load = load
    assert(ok, d)
    d:push("lines", random_lines(rng(3), 30))
    local tags = {}
    for _, e in ipairs(d:tick().out) do
      for _, t in ipairs(e[2]) do tags[t] = (tags[t] or 0) + 1 end
    end
    assert.same({ "v1" }, (function() local l = {} for t in pairs(tags) do l[#l + 1] = t end return l end)())
  end)

  it("reloads every worker's logic at one batch boundary, keeping the state", function()
    local v1 = script("reload1", (FAILING:gsub("error%(\"x1 fails here\"%)", "return k, -1")))
    local v2 = script("reload2", (FAILING:gsub("error%(\"x1 fails here\"%)", "return k, -2")))
    local outs = {}
    for i, n in ipairs { 1, 2 } do
      local d = testing.driver(v1, { workers = n })
      d:push("lines", { "a b x1", "x1 c" })
      d:tick()
      local old = d.plan.parallel and d.plan.parallel.vms
      d:reload(v2)
      assert.equal(n > 1, d.plan.parallel ~= nil)
      -- The replaced plan's VMs are closed then, not by the GC some time.
      if old then
        local ok, err = pcall(old.wait, old)
        assert.is_false(ok)
        assert.matches("worker VMs: closed", err)
      end
      d:push("lines", { "x1 a", "b x1" })
      outs[i] = { d:tick().out, d:state("running") }
    end
    assert.same(outs[1], outs[2])
    -- The new logic ran on every worker: x1's outputs are the new ones.
    local seen = {}
    for _, e in ipairs(outs[2][1]) do if e[1] == "x1" then seen[#seen + 1] = e[2] end end
    assert.same({ -2, -2 }, seen)
  end)
end)

