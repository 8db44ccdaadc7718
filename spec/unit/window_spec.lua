-- Windows: streamrun's own rules beyond Spark's suite (SPEC sections 7 and
-- 11). Lengths and slides must be multiples of the batch, checked once the
-- final batch interval is known; a window on a keyed stream keeps pairs;
-- failing reducers become dead letters; an omitted inverse or slide; empty
-- output on batches where no window is due; and slices dropped as the
-- window moves on, over long jumps of the clock too.
local sr = require "streamrun"
local testing = require "streamrun.testing"
local loader = require "streamrun.loader"
local compare = require "helpers.compare"

local function pair_of(e) return e[1], e[2] end
local function add(a, b) return a + b end
local function sub(a, b) return a - b end

-- A driver over a job with batch `batch` (default 1s), a queue source
-- "input" and the stream build(source) returns captured as output "out".
local function driver(build, batch)
  return testing.driver(function()
    local job = sr.job { name = "windows", batch = batch or "1s" }
    build(job:queue({}, { name = "input" })):foreach_batch(function() end, { name = "out" })
    return job
  end)
end

-- The windowed operations, each as a function of (stream, length, slide,
-- opts) that makes the stage (keyed input where the operation needs it) and
-- returns it and the line of the call (not a tail call, so that the stage's
-- file:line is this line).
local function here() return debug.getinfo(2, "l").currentline end
local OPS = {
  window = function(s, l, sl, o) local w = s:window(l, sl, o); return w, here() end,
  reduce_by_window = function(s, l, sl, o) local w = s:reduce_by_window(add, l, sl, o); return w, here() end,
  reduce_by_window_inverse = function(s, l, sl, o)
    local w = s:reduce_by_window(add, sub, l, sl, o); return w, here()
  end,
  count_by_window = function(s, l, sl, o) local w = s:count_by_window(l, sl, o); return w, here() end,
  reduce_by_key_and_window = function(s, l, sl, o)
    local w = s:map(pair_of):reduce_by_key_and_window(add, l, sl, o); return w, here()
  end,
  reduce_by_key_and_window_inverse = function(s, l, sl, o)
    local w = s:map(pair_of):reduce_by_key_and_window(add, sub, l, sl, o); return w, here()
  end,
  count_by_value_and_window = function(s, l, sl, o)
    local w = s:count_by_value_and_window(l, sl, o); return w, here()
  end,
}
local OP_NAMES = {}
for name in pairs(OPS) do OP_NAMES[#OP_NAMES + 1] = name end
table.sort(OP_NAMES)

-- Elements every operation accepts: pairs for the keyed ones, numbers for
-- the others.
local function inputs_for(name, i)
  if name:find("by_key") then return { { "a", i }, { "b", 1 } } end
  return { i, 1 }
end

describe("windows: lengths and slides", function()
  -- The message of a job that fails validation, raised by testing.driver.
  local function driver_error(build, batch)
    local ok, err = pcall(driver, build, batch)
    assert.is_false(ok, "the driver accepted the job")
    return tostring(err)
  end

  for _, name in ipairs(OP_NAMES) do
    it(name .. ": a length that is not a multiple of the batch is refused naming file:line, stage and length", function()
      local line
      local err = driver_error(function(s)
        local w
        w, line = OPS[name](s, "2500ms", "1s", { name = "w" })
        return w
      end)
      assert.matches("window_spec%.lua:" .. line .. ": w: ", err)
      assert.matches("window length 2500 ms is not a multiple of the batch interval 1000 ms", err, 1, true)
    end)

    it(name .. ": a slide that is not a multiple of the batch is refused naming file:line, stage and slide", function()
      local line
      local err = driver_error(function(s)
        local w
        w, line = OPS[name](s, "3s", "1500ms", { name = "w" })
        return w
      end)
      assert.matches("window_spec%.lua:" .. line .. ": w: ", err)
      assert.matches("window slide 1500 ms is not a multiple of the batch interval 1000 ms", err, 1, true)
    end)
  end

  it("an unnamed stage is named by its default name", function()
    local err = driver_error(function(s) return s:window("1500ms") end)
    assert.matches(": window%.1: window length 1500 ms", err)
  end)

  it("the job's batch decides: 4s is fine with 1s or 2s batches but not with 3s", function()
    local function build(s) return s:window("4s", "4s", { name = "w" }) end
    assert.has_no.errors(function() driver(build, "1s") end)
    assert.has_no.errors(function() driver(build, "2s") end)
    assert.matches("w: window length 4000 ms is not a multiple of the batch interval 3000 ms",
      driver_error(build, "3s"), 1, true)
    -- A slide of 3s is a multiple of 3s, its length 4s is not; the slide
    -- 2s of a 6s window is not a multiple of 3s.
    assert.matches("w: window slide 2000 ms is not a multiple of the batch interval 3000 ms",
      driver_error(function(s) return s:window("6s", "2s", { name = "w" }) end, "3s"), 1, true)
  end)

  it("an omitted slide is the batch, so it is always valid; the length is still checked", function()
    assert.has_no.errors(function() driver(function(s) return s:window("6s") end, "3s") end)
    assert.matches("window length 4000 ms is not a multiple of the batch interval 3000 ms",
      driver_error(function(s) return s:window("4s") end, "3s"), 1, true)
  end)

  -- streamrun run --batch overrides the job's batch before validation
  -- (loader.load's opts.batch is what --batch sets).
  local function job_fn(batch, length, slide)
    return function()
      local job = sr.job { name = "windows", batch = batch }
      job:queue({}, { name = "input" }):window(length, slide, { name = "w" })
        :foreach_batch(function() end, { name = "out" })
      return job
    end
  end

  it("--batch is applied before the check: a valid job made invalid", function()
    assert.is_truthy(loader.load(job_fn("1s", "4s", "2s")))
    local job, err = loader.load(job_fn("1s", "4s", "2s"), { batch = "3s" })
    assert.is_nil(job)
    assert.matches("w: window length 4000 ms is not a multiple of the batch interval 3000 ms", err, 1, true)
    job, err = loader.load(job_fn("1s", "6s", "2s"), { batch = "3s" })
    assert.is_nil(job)
    assert.matches("w: window slide 2000 ms is not a multiple of the batch interval 3000 ms", err, 1, true)
  end)

  it("--batch is applied before the check: an invalid job made valid", function()
    local job, err = loader.load(job_fn("3s", "4s", "2s"))
    assert.is_nil(job)
    assert.matches("window length 4000 ms", err, 1, true)
    job = assert(loader.load(job_fn("3s", "4s", "2s"), { batch = "1s" }))
    assert.equal(1000, job.batch_ms)
  end)

  it("--batch decides an omitted slide", function()
    local job = assert(loader.load(job_fn("1s", "4s", nil), { batch = "2s" }))
    assert.equal(2000, job.by_name.w.slide_ms)
    local _, err = loader.load(job_fn("1s", "3s", nil), { batch = "2s" })
    assert.matches("window length 3000 ms is not a multiple of the batch interval 2000 ms", err, 1, true)
  end)

  it("zero, negative and malformed durations are refused where they are written", function()
    for _, bad in ipairs { "0s", "-1s", "soon", {} } do
      local ok, err = pcall(driver, function(s) return s:window(bad) end)
      assert.is_false(ok)
      assert.matches("window_spec%.lua:%d+: window: window length", tostring(err))
      if type(bad) == "string" then -- a table there is the options (slide omitted)
        ok, err = pcall(driver, function(s) return s:window("2s", bad) end)
        assert.is_false(ok)
        assert.matches("window_spec%.lua:%d+: window: slide", tostring(err))
      end
    end
  end)
end)

describe("windows: semantics", function()
  it("window on a keyed stream keeps the pairs, and keyed stages downstream see them", function()
    local d = testing.driver(function()
      local job = sr.job { name = "windows", batch = "1s" }
      local w = job:queue({}, { name = "input" }):map(pair_of):window("2s", "1s", { name = "w" })
      w:foreach_batch(function() end, { name = "pairs" })
      w:reduce_by_key(add):foreach_batch(function() end, { name = "sums" })
      return job
    end)
    d:push("input", { { "a", 1 }, { "b", 2 } })
    local out = d:tick()
    assert.same({ { "a", 1 }, { "b", 2 } }, out.pairs)
    d:push("input", { { "a", 10 }, { 7, true } })
    out = d:tick()
    assert.same({ { "a", 1 }, { "b", 2 }, { "a", 10 }, { 7, true } }, out.pairs)
    compare.same_multisets({ { { "a", 11 }, { "b", 2 }, { 7, true } } }, { out.sums })
    out = d:tick()
    assert.same({ { "a", 10 }, { 7, true } }, out.pairs)
  end)

  it("window on an unkeyed stream keeps tables as single elements", function()
    local d = driver(function(s) return s:window("2s") end)
    d:push("input", { { x = 1 }, { 1, 2, 3 }, "s" })
    assert.same({ { x = 1 }, { 1, 2, 3 }, "s" }, d:tick().out)
  end)

  for _, inverse in ipairs { false, true } do
    local form = inverse and "with" or "without"
    it("a reducer that raises (" .. form .. " inverse) makes a dead letter naming the stage; other keys are unaffected", function()
      local function f(a, b)
        if b == 99 then error("reducer refuses 99") end
        return a + b
      end
      local d = driver(function(s)
        if inverse then
          return s:map(pair_of):reduce_by_key_and_window(f, sub, "2s", "1s", { name = "sums" })
        end
        return s:map(pair_of):reduce_by_key_and_window(f, "2s", "1s", { name = "sums" })
      end)
      d:push("input", { { "a", 1 }, { "b", 1 }, { "b", 99 }, { "a", 2 } })
      local out = d:tick()
      -- b's failing call is left out: b keeps the value before it.
      compare.same_multisets({ { { "a", 3 }, { "b", 1 } } }, { out.out })
      assert.equal(1, #d.dead_letters)
      local dl = d.dead_letters[1]
      assert.equal("sums", dl.source)
      assert.matches("^stage sums %(reduce_by_key_and_window at [^)]*window_spec%.lua:%d+%).*reducer refuses 99", dl.reason)
      d:push("input", { { "a", 5 }, { "c", 4 } })
      out = d:tick()
      compare.same_multisets({ { { "a", 8 }, { "b", 1 }, { "c", 4 } } }, { out.out })
      assert.equal(1, #d.dead_letters)
      out = d:tick()
      local expected = { { "a", 5 }, { "c", 4 } }
      if inverse then expected[3] = { "b", 0 } end
      compare.same_multisets({ expected }, { out.out })
    end)
  end

  -- Errors name the stage, the key and the element (STYLE).
  it("a reducer's dead letter names the key", function()
    local d = driver(function(s)
      return s:map(pair_of):reduce_by_key_and_window(function(a, b)
        if b == 99 then error("no") end
        return a + b
      end, "2s", "1s", { name = "sums" })
    end)
    d:push("input", { { "the_key", 1 }, { "the_key", 99 } })
    d:tick()
    assert.equal(1, #d.dead_letters)
    local dl = d.dead_letters[1]
    assert.truthy(dl.reason:find("the_key", 1, true) or dl.record:find("the_key", 1, true),
      "neither reason nor record names the key: " .. dl.reason .. " / " .. dl.record)
  end)

  it("an inverse function or filter that raises makes a dead letter; other keys are unaffected", function()
    local d = driver(function(s)
      return s:map(pair_of):reduce_by_key_and_window(add, function(a, b)
        if b == 7 then error("inverse refuses 7") end
        return a - b
      end, "1s", "1s", { name = "sums", filter = function(k, v)
        if k == "f" then error("filter refuses f") end
        return v ~= 0
      end })
    end)
    d:push("input", { { "a", 7 }, { "b", 2 }, { "f", 1 } })
    local out = d:tick()
    -- A failing filter keeps the key.
    compare.same_multisets({ { { "a", 7 }, { "b", 2 }, { "f", 1 } } }, { out.out })
    assert.equal(1, #d.dead_letters)
    assert.matches("filter refuses f", d.dead_letters[1].reason, 1, true)
    out = d:tick()
    -- a's inverse call fails: a is folded again from the window, where
    -- it has no value left, so it goes (it kept 7 before, for good); b
    -- leaves (0, filtered out); f's filter fails again.
    compare.same_multisets({ { { "f", 0 } } }, { out.out })
    assert.equal(3, #d.dead_letters)
    for _, dl in ipairs(d.dead_letters) do assert.equal("sums", dl.source) end
    assert.matches("inverse refuses 7", d.dead_letters[2].reason .. d.dead_letters[3].reason, 1, true)
  end)

  -- Runs the same pushes through build(s) and returns every batch's output.
  local PUSHES = {
    { { "a", 1 }, { "b", 2 } }, { { "a", 3 } }, {}, { { "b", 1 }, { "c", 5 } }, {}, {}, {},
    { { "a", 2 } }, {}, {}, {},
  }
  local function outputs(build)
    local d = driver(build)
    for _, p in ipairs(PUSHES) do
      d:push("input", p)
      d:tick()
    end
    return d:outputs("out")
  end

  it("reduce_by_key_and_window: finv given as nil is the same as finv omitted", function()
    local omitted = outputs(function(s) return s:map(pair_of):reduce_by_key_and_window(add, "3s", "2s") end)
    local as_nil = outputs(function(s) return s:map(pair_of):reduce_by_key_and_window(add, nil, "3s", "2s") end)
    local inverse = outputs(function(s) return s:map(pair_of):reduce_by_key_and_window(add, sub, "3s", "2s") end)
    compare.same_multisets(omitted, as_nil)
    -- The inverse form keeps keys at 0, so it differs; without its zeros
    -- it is the same.
    assert.is_false(pcall(compare.same_multisets, omitted, inverse))
    for _, batch in ipairs(inverse) do
      for i = #batch, 1, -1 do
        if batch[i][2] == 0 then table.remove(batch, i) end
      end
    end
    compare.same_multisets(omitted, inverse)
    -- Options after a nil finv are read too.
    local named = driver(function(s)
      return s:map(pair_of):reduce_by_key_and_window(add, nil, "3s", "2s", { name = "nil_finv" })
    end)
    assert.is_not_nil(named.plan.windows.nil_finv)
    assert.is_nil(named.plan.windows.nil_finv.result)
  end)

  it("reduce_by_window: finv given as nil is the same as finv omitted", function()
    local function values(s) return s:map(function(e) return e[2] end) end
    local omitted = outputs(function(s) return values(s):reduce_by_window(add, "3s", "1s") end)
    local as_nil = outputs(function(s) return values(s):reduce_by_window(add, nil, "3s", "1s") end)
    assert.same(omitted, as_nil)
    assert.same({ 3 }, omitted[1])
    assert.same({ 6 }, omitted[2])
    assert.same({}, omitted[7]) -- nothing in (4 s, 7 s]
  end)

  it("an omitted slide is the batch interval", function()
    for _, name in ipairs(OP_NAMES) do
      local function run(slide)
        local d = driver(function(s) return OPS[name](s, "3s", slide) end)
        for i = 1, 7 do
          d:push("input", i % 3 == 0 and {} or inputs_for(name, i))
          d:tick()
        end
        return d:outputs("out")
      end
      local omitted, explicit = run(nil), run("1s")
      compare.same_multisets(explicit, omitted)
      -- Every batch of 1 s is due: each with data in its window has output.
      for i = 1, 7 do assert.is_true(#omitted[i] > 0, name .. ": batch " .. i .. " has no output") end
    end
  end)

  it("an omitted slide is the batch interval of the job (2 s batches)", function()
    local d = driver(function(s) return s:window("4s", nil, { name = "w" }) end, "2s")
    assert.equal(2000, d.job.by_name.w.slide_ms)
    for i = 1, 4 do d:push("input", { i }); d:tick() end
    assert.same({ { 1 }, { 1, 2 }, { 2, 3 }, { 3, 4 } }, d:outputs("out"))
    assert.same(8000, d:time())
  end)

  -- Options may stand where an omitted argument would, as for print(n, opts).
  it("options may stand in place of an omitted slide", function()
    local d = driver(function(s) return s:window("2s", { name = "w" }) end)
    assert.is_not_nil(d.plan.windows.w)
    d = driver(function(s) return s:map(pair_of):reduce_by_key_and_window(add, "2s", { name = "r" }) end)
    assert.is_not_nil(d.plan.windows.r)
  end)

  it("every batch where no window is due outputs nothing, for every operation", function()
    for _, name in ipairs(OP_NAMES) do
      for _, c in ipairs { { "3s", "3s" }, { "2s", "3s" }, { "5s", "3s" }, { "4s", "2s" } } do
        local slide_s = tonumber(c[2]:match("%d+"))
        local d = driver(function(s) return OPS[name](s, c[1], c[2]) end)
        for i = 1, 12 do
          d:push("input", inputs_for(name, i))
          local out = d:tick().out
          local what = ("%s(%s, %s) at batch %d"):format(name, c[1], c[2], i)
          if i % slide_s == 0 then
            assert.is_true(#out > 0, what .. " is due and has data but no output")
          else
            assert.same({}, out, what .. " is not due")
          end
        end
      end
    end
  end)

  it("downstream of a window, stages run only on the batches where it is due", function()
    local calls = 0
    local d = driver(function(s)
      return s:window("2s", "2s"):map(function(x) calls = calls + 1; return x * 10 end)
    end)
    for i = 1, 6 do d:push("input", { i }); d:tick() end
    assert.equal(6, calls)
    assert.same({ {}, { 10, 20 }, {}, { 30, 40 }, {}, { 50, 60 } }, d:outputs("out"))
  end)

  -- Elements that cannot key a table, and strings starting with NUL, are
  -- keyed by a tagged string that no element collides with.
  it("count_by_value_and_window counts strings that start with \\0 as themselves", function()
    local d = driver(function(s) return s:count_by_value_and_window("2s") end)
    d:push("input", { "\0x", "\0[1]", { 1 }, "\0x" })
    local ok, out = pcall(d.tick, d)
    assert.is_true(ok, tostring(out))
    compare.same_multisets({ { { "\0x", 2 }, { "\0[1]", 1 }, { { 1 }, 1 } } }, { out.out })
  end)

  it("count_by_value_and_window counts tables, pairs and keys of every type apart", function()
    local d = driver(function(s) return s:count_by_value_and_window("2s") end)
    d:push("input", { { 1, 2 }, { 1, 2 }, "1", 1, true, 1.5, { a = 1 } })
    compare.same_multisets({ { { { 1, 2 }, 2 }, { "1", 1 }, { 1, 1 }, { true, 1 }, { 1.5, 1 }, { { a = 1 }, 1 } } },
      { d:tick().out })
    d = driver(function(s) return s:map(pair_of):count_by_value_and_window("2s") end)
    d:push("input", { { "a", 1 }, { "a", 1 }, { "a", 2 } })
    compare.same_multisets({ { { { "a", 1 }, 2 }, { { "a", 2 }, 1 } } }, { d:tick().out })
  end)

  it("count_by_window is 0 once the window has emptied, and nothing before any data", function()
    local d = driver(function(s) return s:count_by_window("2s") end)
    d:tick(2)
    d:push("input", { "x", "y" })
    d:tick(3)
    assert.same({ {}, {}, { 2 }, { 2 }, { 0 } }, d:outputs("out"))
  end)

  -- A window kept across a restore or a reload between two of its outputs
  -- knows not which keys it must fold again (a failed reducer's): it folds
  -- every key with values in the window; one whose values all left keeps
  -- its result less them, as without the restart ((a,0), kept as Spark
  -- keeps it, or dropped by the filter).
  for _, form in ipairs { "reduce_by_key_and_window", "count_by_value_and_window" } do
    for _, how in ipairs { "restore", "reload" } do
      for _, workers in ipairs { 1, 2 } do
        it(("%s with an inverse, after a %s between outputs (%d workers): as without it"):format(form, how, workers),
          function()
          local function job()
            local j = sr.job { name = "inv", batch = "1s", workers = workers }
            local s = j:queue({}, { name = "input" })
            local w = form == "count_by_value_and_window" and s:count_by_value_and_window("2s", "2s", { name = "w" })
              or s:map(function(x) return x, 1 end):reduce_by_key_and_window(sr.add, sub, "2s", "2s", { name = "w" })
            w:foreach_batch(function() end, { name = "out" })
            return j
          end
          local function run(cut)
            local d = testing.driver(job)
            for b, words in ipairs { { "a" }, { "b" }, { "b" }, { "b" }, { "b" }, { "b" } } do
              if b == 4 and cut then
                if how == "restore" then d = testing.restore(d:checkpoint(), { job = job }) else d:reload(job) end
              end
              d:push("input", words)
              d:tick()
            end
            return d:outputs("out")
          end
          local want = run(false)
          assert.same(form == "count_by_value_and_window" and { { "b", 2 } } or { { "a", 0 }, { "b", 2 } },
            compare.sorted(want[4]))
          local got = run(true)
          for b = 4, 6 do assert.same(compare.sorted(want[b]), compare.sorted(got[b]), "batch " .. b) end
        end)
      end
    end
  end
end)

describe("windows: slices", function()
  -- The most slices a windowed stage may hold: the window's batches, the
  -- slide's (the slices leaving the next window, with an inverse) and one.
  local function bound(length_ms, slide_ms, batch_ms)
    return length_ms / batch_ms + slide_ms / batch_ms + 1
  end

  for _, name in ipairs(OP_NAMES) do
    it(name .. ": d:advance over long jumps of empty batches drops old slices", function()
      local length_ms, slide_ms = 6000, 2000
      local d = driver(function(s) return OPS[name](s, "6s", "2s", { name = "w" }) end)
      local slices = d.plan.windows.w.slices
      local max = bound(length_ms, slide_ms, 1000)
      local function check(when)
        local times = slices:times()
        assert.is_true(#times <= max, ("%s: %d slices (at most %d)"):format(when, #times, max))
        local now = d:time()
        for _, t in ipairs(times) do
          assert.is_true(t > now - length_ms - slide_ms and t <= now,
            ("%s: slice at %d ms is out of (%d, %d]"):format(when, t, now - length_ms - slide_ms, now))
        end
      end
      for i = 1, 10 do
        d:push("input", inputs_for(name, i))
        d:tick()
        check("batch " .. i)
      end
      local memory = slices:memory()
      for _, jump in ipairs { "1m", "10m", "1h", "2500ms", "6s", "7s" } do
        d:push("input", inputs_for(name, 1))
        d:advance(jump)
        check("after advance(" .. jump .. ")")
        -- No more memory than with the window full of data.
        assert.is_true(slices:memory() <= memory, "memory grew over an advance of " .. jump)
      end
      -- After a jump longer than the window, a due window sees only empty
      -- slices: nothing, except the forms that keep keys at 0.
      d:advance("1h")
      while d:time() % slide_ms ~= 0 do d:tick() end
      local out = d:outputs("out")
      local last = out[#out]
      if name == "count_by_window" then
        assert.same({ 0 }, last)
      elseif name == "reduce_by_key_and_window_inverse" then
        compare.same_multisets({ { { "a", 0 }, { "b", 0 } } }, { last })
      elseif name == "reduce_by_window_inverse" then
        assert.same({ 0 }, last)
      else
        assert.same({}, last)
      end
      assert.equal(0, #d.dead_letters)
    end)
  end

  it("a jump runs every batch in between (empty ones too) and keeps windows due on time", function()
    local d = driver(function(s) return s:window("3s", "2s") end)
    d:push("input", { "x" })
    d:advance("9500ms")
    assert.equal(9, d.batches)
    local out = d:outputs("out")
    assert.same({ {}, { "x" }, {}, {}, {}, {}, {}, {}, {} }, out)
    d:push("input", { "y" })
    d:advance("500ms")
    assert.same({ "y" }, d:outputs("out")[10])
  end)
end)
