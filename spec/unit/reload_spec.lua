-- Hot reload through the test driver (issue 6, SPEC section 10): d:reload()
-- swaps a job's logic between two batches as `streamrun run` does, and
-- testing.restore() resumes a checkpoint with another script by the same
-- rules (streamrun.reload): a stateful stage of the same name and kind
-- keeps its state, timeouts and window slices; one that is gone is dropped;
-- a new one starts empty; one whose kind changed is refused unless
-- drop_state lists it. Sources keep what was pushed on them by name.
-- Rules first found as bugs are at the end.
local sr = require "streamrun"
local testing = require "streamrun.testing"

local function sorted(list)
  local copy = {}
  for i, x in ipairs(list or {}) do copy[i] = x end
  table.sort(copy, function(a, b)
    local x, y = type(a) == "table" and a[1] or a, type(b) == "table" and b[1] or b
    return tostring(x) < tostring(y)
  end)
  return copy
end

local function rep(x, n)
  local t = {}
  for i = 1, n do t[i] = x end
  return t
end

-- The job most cases use, by option. Words come in on the queue source
-- "in"; stateful stages, each with an output "<stage>_out":
--   totals   update_state_by_key: (word, count so far)
--   sessions map_with_state with a timeout (o.timeout, default 3s): counts
--            a word's records; (word, "<tag>:<n>") per record, (word,
--            "<tag>:closed:<n>") when it times out
--   win      reduce_by_key_and_window, inverse (o.no_inverse: without),
--            o.length (default 3s), o.slide (default 1s): (word, "<tag>:<n>")
-- The words also go to "raw" as they are. o.stages: which ones (default
-- all three); o.tag: what the logic emits
-- (default "a"); o.kinds: name -> "update"|"map" to build a stage of that
-- name as update_state_by_key or map_with_state instead; o.drop:
-- drop_state; o.batch: interval; o.sources: more queue sources { name =
-- batches }; o.json: the source "in" reads JSON.
local function build(o)
  o = o or {}
  local tag = o.tag or "a"
  local want = {}
  for _, s in ipairs(o.stages or { "totals", "sessions", "win" }) do want[s] = true end
  return function()
    local job = sr.job { name = "reload", batch = o.batch or "1s", drop_state = o.drop }
    local words = job:queue({}, { name = "in", format = o.json and "json" or nil })
    words:foreach_batch(function() end, { name = "raw" })
    for name, batches in pairs(o.sources or {}) do
      job:queue(batches, { name = name }):map(function(x) return tag .. ":" .. x end)
         :foreach_batch(function() end, { name = name .. "_out" })
    end
    local kv = words:map(function(w) return w, 1 end)
    local function update(name)
      kv:update_state_by_key(function(v, n) return (n or 0) + #v end, { name = name })
        :map_values(function(n) return tag .. ":" .. n end)
        :foreach_batch(function() end, { name = name .. "_out" })
    end
    local function map(name, timeout)
      local spec = sr.state_spec(function(k, _, st)
        if st:is_timing_out() then return k, tag .. ":closed:" .. st:get() end
        local n = (st:exists() and st:get() or 0) + 1
        st:update(n)
        return k, tag .. ":" .. n
      end):name(name)
      if timeout ~= false then spec = spec:timeout(timeout or "3s") end
      kv:map_with_state(spec):foreach_batch(function() end, { name = name .. "_out" })
    end
    local kinds = o.kinds or {}
    if want.totals then
      if kinds.totals == "map" then map("totals", false) else update("totals") end
    end
    if want.sessions then
      if kinds.sessions == "update" then update("sessions") else map("sessions", o.timeout) end
    end
    if want.win then
      local inv = function(a, b) return a - b end
      if o.no_inverse then inv = nil end
      kv:reduce_by_key_and_window(sr.add, inv, o.length or "3s", o.slide or "1s", { name = "win" })
        :map_values(function(n) return tag .. ":" .. n end)
        :foreach_batch(function() end, { name = "win_out" })
    end
    return job
  end
end

-- Two drivers of the same job: one to reload, one to compare with.
local function twin(o)
  return testing.driver(build(o)), testing.driver(build(o))
end

-- Temp files and dirs made here, removed after each case.
local made = {}
local function tmpname()
  local p = os.tmpname()
  made[#made + 1] = p
  return p
end
local function write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
  return path
end
local function cleanup()
  for i = #made, 1, -1 do
    os.execute("rm -rf '" .. made[i] .. "'")
    made[i] = nil
  end
end

-- A checkpoint of d in a temp dir; returns its path.
local function checkpoint(d)
  local dir = tmpname()
  os.remove(dir)
  return d:checkpoint(dir)
end

describe("d:reload", function()
  after_each(cleanup)

  describe("the log line", function()
    it("is d:reload's value: kept, dropped and new stateful stages, sorted, 'none' for an empty list", function()
      local d = testing.driver(build { stages = { "totals", "sessions" } })
      assert.equal("kept sessions, totals; dropped none; new none", d:reload(build { stages = { "totals", "sessions" } }))
      assert.equal("kept totals; dropped sessions; new win", d:reload(build { stages = { "totals", "win" } }))
      assert.equal("kept none; dropped totals, win; new none", d:reload(build { stages = {} }))
      assert.equal("kept none; dropped none; new sessions, totals, win", d:reload(build {}))
      assert.equal(d.reload_log, "kept none; dropped none; new sessions, totals, win")
    end)
  end)

  describe("a stage of the same name and kind keeps its state", function()
    it("update_state_by_key: the totals go on with the new logic", function()
      local d = testing.driver(build {})
      d:push("in", { "x", "y", "x" })
      d:tick()
      assert.same({ x = 2, y = 1 }, d:state("totals"))
      assert.equal("kept sessions, totals, win; dropped none; new none", d:reload(build { tag = "b" }))
      assert.same({ x = 2, y = 1 }, d:state("totals"))
      d:push("in", { "x" })
      local out = d:tick()
      assert.same({ { "x", "b:3" }, { "y", "b:1" } }, sorted(out.totals_out))
      assert.same({ x = 3, y = 1 }, d:state("totals"))
    end)

    it("map_with_state: values go on", function()
      local d = testing.driver(build {})
      d:push("in", { "x", "x" })
      d:tick()
      d:reload(build { tag = "b" })
      d:push("in", { "x" })
      assert.same({ { "x", "b:3" } }, d:tick().sessions_out)
      assert.same({ x = 3 }, d:state("sessions"))
    end)

    it("keys about to time out time out on the batch they would have, whenever the reload comes", function()
      -- x idle from 1000 ms, y from 2000 ms, z from 4000 ms, 3 s timeout:
      -- x closes at 5000 ms, y at 6000 ms, z at 8000 ms.
      local function feed(d, b)
        if b == 1 then d:push("in", { "x" }) end
        if b == 2 then d:push("in", { "y" }) end
        if b == 4 then d:push("in", { "z" }) end
      end
      local want = {}
      do
        local ref = testing.driver(build { stages = { "sessions" } })
        for b = 1, 9 do
          feed(ref, b)
          want[b] = sorted(ref:tick().sessions_out)
        end
        assert.same({ { "x", "a:closed:1" } }, want[5])
        assert.same({ { "y", "a:closed:1" } }, want[6])
        assert.same({ { "z", "a:closed:1" } }, want[8])
      end
      -- A reload before each batch in turn: before the batch where x
      -- closes, before y's, before z's, and in between.
      for reload_before = 2, 9 do
        local d = testing.driver(build { stages = { "sessions" } })
        for b = 1, 9 do
          if b == reload_before then d:reload(build { stages = { "sessions" }, tag = "b" }) end
          feed(d, b)
          local got = sorted(d:tick().sessions_out)
          local expected = {}
          for i, p in ipairs(want[b]) do
            expected[i] = { p[1], b >= reload_before and (p[2]:gsub("^a:", "b:")) or p[2] }
          end
          assert.same(expected, got, ("reload before batch %d: batch %d"):format(reload_before, b))
        end
      end
    end)

    it("a window keeps its slices: its output goes on as if there had been no reload", function()
      for _, no_inverse in ipairs { false, true } do
        local ref, d = twin { stages = { "win" }, no_inverse = no_inverse }
        local counts = { 1, 2, 4, 0, 3, 0, 0, 0, 0 }
        for b = 1, #counts do
          if b == 3 or b == 5 then
            assert.equal("kept win; dropped none; new none",
              d:reload(build { stages = { "win" }, no_inverse = no_inverse, tag = "b" .. b }))
          end
          ref:push("in", rep("w", counts[b]))
          d:push("in", rep("w", counts[b]))
          -- The same numbers; the tag of the logic running.
          local want, got = {}, {}
          for _, p in ipairs(ref:tick().win_out) do want[#want + 1] = { p[1], (p[2]:gsub("^a:", "")) } end
          for _, p in ipairs(d:tick().win_out) do got[#got + 1] = { p[1], (p[2]:gsub("^%w+:", "")) } end
          assert.same(want, got, ("batch %d, inverse %s"):format(b, tostring(not no_inverse)))
        end
        -- Window sums 1, 3, 7, 6, 7, 3, 3, 0 ...: the slices before the
        -- reloads were counted after them.
        local seen = {}
        for b, out in pairs(d:outputs("win_out")) do seen[b] = out[1] and out[1][2] end
        assert.equal("b3:7", seen[3])
        assert.equal("b3:6", seen[4])
        assert.equal("b5:7", seen[5])
        assert.equal("b5:3", seen[6])
      end
    end)
  end)

  describe("a stage that is gone", function()
    it("has its state dropped; brought back later, it starts empty", function()
      local d = testing.driver(build { stages = { "totals", "sessions" } })
      d:push("in", { "x", "y" })
      d:tick()
      assert.equal("kept sessions; dropped totals; new none", d:reload(build { stages = { "sessions" } }))
      assert.has_error(function() d:state("totals") end,
        'no stateful stage named "totals" (stateful stages: sessions)')
      d:push("in", { "x" })
      d:tick()
      assert.equal("kept sessions; dropped none; new totals", d:reload(build { stages = { "totals", "sessions" } }))
      assert.same({}, d:state("totals"))
      d:push("in", { "x" })
      assert.same({ { "x", "a:1" } }, d:tick().totals_out)
      assert.same({ x = 3, y = 1 }, d:state("sessions"))
    end)

    it("renamed, it is dropped and the new name starts empty", function()
      local d = testing.driver(function()
        local job = sr.job { name = "r", batch = "1s" }
        job:queue({}, { name = "in" }):map(function(w) return w, 1 end)
          :update_state_by_key(function(v, n) return (n or 0) + #v end, { name = "old_name" })
          :foreach_batch(function() end, { name = "out" })
        return job
      end)
      d:push("in", { "x" })
      d:tick()
      assert.equal("kept none; dropped old_name; new new_name", d:reload(function()
        local job = sr.job { name = "r", batch = "1s" }
        job:queue({}, { name = "in" }):map(function(w) return w, 1 end)
          :update_state_by_key(function(v, n) return (n or 0) + #v end, { name = "new_name" })
          :foreach_batch(function() end, { name = "out" })
        return job
      end))
      d:push("in", { "x" })
      assert.same({ { "x", 1 } }, d:tick().out)
    end)
  end)

  describe("a new stage", function()
    it("starts empty while the others keep theirs", function()
      local d = testing.driver(build { stages = { "totals" } })
      d:push("in", { "x", "x" })
      d:tick()
      assert.equal("kept totals; dropped none; new sessions, win", d:reload(build {}))
      assert.same({}, d:state("sessions"))
      d:push("in", { "x" })
      local out = d:tick()
      assert.same({ { "x", "a:3" } }, out.totals_out)
      assert.same({ { "x", "a:1" } }, out.sessions_out)
      assert.same({ { "x", "a:1" } }, out.win_out) -- no slice from before the reload
    end)
  end)

  describe("initial state", function()
    local function seeded(name, extra)
      return function()
        local job = sr.job { name = "init", batch = "1s" }
        local kv = job:queue({}, { name = "in" }):map(function(w) return w, 1 end)
        for _, n in ipairs { name, extra } do
          kv:update_state_by_key(function(v, c) return (c or 0) + #v end, { name = n, initial = { seed = 10 } })
            :foreach_batch(function() end, { name = n .. "_out" })
        end
        return job
      end
    end

    it("a new stage is seeded at its first batch; a kept one is not seeded again", function()
      local d = testing.driver(seeded("kept"))
      d:push("in", { "seed" })
      d:tick()
      assert.same({ seed = 11 }, d:state("kept"))
      assert.equal("kept kept; dropped none; new added", d:reload(seeded("kept", "added")))
      d:push("in", { "seed", "x" })
      d:tick()
      assert.same({ seed = 12, x = 1 }, d:state("kept"))
      assert.same({ seed = 11, x = 1 }, d:state("added"))
    end)
  end)

  describe("a stage whose kind changed", function()
    local cases = {
      { "update_state_by_key to map_with_state", { kinds = { totals = "map" } },
        "totals: was update_state_by_key, now map_with_state" },
      { "map_with_state to update_state_by_key", { kinds = { sessions = "update" } },
        "sessions: was map_with_state, now update_state_by_key" },
      { "a window losing its inverse", { no_inverse = true },
        "win: was reduce_by_key_and_window+inverse/3000/1000, now reduce_by_key_and_window" },
    }
    for _, case in ipairs(cases) do
      local what, change, conflict = case[1], case[2], case[3]

      it(what .. " is refused, naming the stage; the old logic and its state go on", function()
        local d = testing.driver(build {})
        d:push("in", { "x", "y", "x" })
        d:tick()
        local states = { totals = d:state("totals"), sessions = d:state("sessions") }
        change.tag = "b"
        local ok, err = pcall(d.reload, d, build(change))
        assert.is_false(ok)
        assert.equal("reload: " .. conflict .. " (list it in sr.job{ drop_state = {...} } to start it afresh)", err)
        assert.same(states, { totals = d:state("totals"), sessions = d:state("sessions") })
        d:push("in", { "x" })
        local out = d:tick()
        assert.same({ { "x", "a:3" }, { "y", "a:1" } }, sorted(out.totals_out))
        assert.same({ { "x", "a:3" } }, out.sessions_out)
        assert.same({ { "x", "a:3" }, { "y", "a:1" } }, sorted(out.win_out))
      end)

      it(what .. " starts afresh when drop_state lists it; the others keep theirs", function()
        local d = testing.driver(build {})
        d:push("in", { "x", "y", "x" })
        d:tick()
        local name = conflict:match("^(%w+):")
        change.tag, change.drop = "b", { name }
        local log = d:reload(build(change))
        local kept = {}
        for _, s in ipairs { "sessions", "totals", "win" } do
          if s ~= name then kept[#kept + 1] = s end
        end
        assert.equal(("kept %s; dropped %s; new %s"):format(table.concat(kept, ", "), name, name), log)
        if name ~= "win" then assert.same({}, d:state(name)) end
        d:push("in", { "x" })
        local out = d:tick()
        assert.same({ { "x", "b:1" } }, out[name .. "_out"])
        for _, s in ipairs(kept) do
          assert.same({ "x", "b:3" }, sorted(out[s .. "_out"])[1], s)
        end
      end)
    end

    it("several conflicts are all named", function()
      local d = testing.driver(build {})
      local ok, err = pcall(d.reload, d, build { kinds = { totals = "map", sessions = "update" } })
      assert.is_false(ok)
      assert.matches("sessions: was map_with_state, now update_state_by_key %(.-%); "
        .. "totals: was update_state_by_key, now map_with_state", err)
    end)

    it("drop_state also drops a stage whose kind did not change", function()
      local d = testing.driver(build { stages = { "totals" } })
      d:push("in", { "x" })
      d:tick()
      assert.equal("kept none; dropped totals; new totals", d:reload(build { stages = { "totals" }, drop = { "totals" } }))
      assert.same({}, d:state("totals"))
    end)
  end)

  describe("a script that does not load", function()
    local good = [[
local sr = require "streamrun"
local job = sr.job { name = "file_job", batch = "1s" }
job:queue({}, { name = "in" }):map(function(w) return w, 1 end)
  :update_state_by_key(function(v, n) return (n or 0) + #v end, { name = "totals" })
  :map_values(function(n) return "%s" .. n end)
  :foreach_batch(function() end, { name = "totals_out" })
return job
]]

    it("is refused with file:line (syntax error, error while building the job); the old logic goes on", function()
      -- In a dir of its own (the loader puts a job's dir on package.path).
      local dir = tmpname()
      os.remove(dir)
      assert(os.execute("mkdir " .. dir) == 0)
      local path = write(dir .. "/job.lua", good:format("a:"))
      local d = testing.driver(path)
      d:push("in", { "x" })
      d:tick()
      write(path, good:format("b:"):gsub("return job\n$", "return job job\n"))
      local ok, err = pcall(d.reload, d, path)
      assert.is_false(ok)
      assert.equal(path .. ":7: '<eof>' expected near 'job'", err)
      write(path, good:format("b:"):gsub('job:queue', 'job:no_such_op()\njob:queue'))
      ok, err = pcall(d.reload, d, path)
      assert.is_false(ok)
      assert.matches("^" .. path:gsub("%p", "%%%0") .. ":3: ", err)
      d:push("in", { "x" })
      assert.same({ { "x", "a:2" } }, d:tick().totals_out)
      -- Fixed: reloaded from the same path.
      write(path, good:format("b:"))
      assert.equal("kept totals; dropped none; new none", d:reload(path))
      d:push("in", { "x" })
      assert.same({ { "x", "b:3" } }, d:tick().totals_out)
    end)
  end)

  describe("timeouts", function()
    it("keys idle since before a reload keep the deadline they had (a shorter new timeout does not close them)", function()
      local d = testing.driver(build { stages = { "sessions" }, timeout = "1h" })
      d:push("in", { "old" })
      d:tick()
      d:reload(build { stages = { "sessions" }, timeout = "2s", tag = "b" })
      d:tick(5)
      for _, out in pairs(d:outputs("sessions_out")) do
        for _, p in ipairs(out) do assert.is_nil(p[2]:find("closed"), "no key closed yet") end
      end
      assert.same({ old = 1 }, d:state("sessions"))
    end)
  end)

  describe("sources", function()
    it("of the same name keep what was pushed and not yet run; the new logic runs it", function()
      local d = testing.driver(build { stages = { "totals" } })
      d:push("in", { "x", "y" })
      d:reload(build { stages = { "totals" }, tag = "b" })
      d:push("in", { "x" })
      assert.same({ { "x", "b:2" }, { "y", "b:1" } }, sorted(d:tick().totals_out))
    end)

    it("of the same name keep their offsets (dead letters count on)", function()
      local d = testing.driver(build { stages = { "totals" }, json = true })
      d:push("in", { '"a"', "not json" })
      d:tick()
      d:reload(build { stages = { "totals" }, json = true, tag = "b" })
      d:push("in", { "bad too" })
      d:tick()
      assert.equal(2, #d.dead_letters)
      assert.equal(2, d.dead_letters[1].offset)
      assert.equal(3, d.dead_letters[2].offset)
    end)

    it("a queue source kept goes on where it was; a new one starts from its beginning", function()
      local q = { { "q1" }, { "q2" }, { "q3" } }
      local d = testing.driver(build { stages = {}, sources = { old = q } })
      assert.same({ "a:q1" }, d:tick().old_out)
      d:reload(build { stages = {}, tag = "b", sources = { old = q, fresh = { { "f1" }, { "f2" } } } })
      local out = d:tick()
      assert.same({ "b:q2" }, out.old_out)
      assert.same({ "b:f1" }, out.fresh_out)
      out = d:tick()
      assert.same({ "b:q3" }, out.old_out)
      assert.same({ "b:f2" }, out.fresh_out)
    end)

    it("a source removed is gone, with what was pushed on it", function()
      local d = testing.driver(build { stages = {}, sources = { gone = {} } })
      d:push("gone", { "g" })
      d:reload(build { stages = {} })
      assert.has_error(function() d:push("gone", { "h" }) end, 'no source named "gone" (sources: in)')
      d:reload(build { stages = {}, sources = { gone = {} } })
      assert.same({}, d:tick().gone_out)
    end)
  end)

  describe("the batch interval", function()
    it("may change when no window holds slices: batches then come at the new interval", function()
      local d = testing.driver(build { stages = { "totals", "sessions" } })
      d:push("in", { "x" })
      d:tick(3)
      assert.equal("kept sessions, totals; dropped none; new none",
        d:reload(build { stages = { "totals", "sessions" }, batch = "2s" }))
      d:push("in", { "x" })
      local out = d:tick()
      assert.equal(5000, d:time())
      assert.same({ { "x", "a:2" } }, out.totals_out, "stages run on every batch off the old grid too")
      local t1 = d:time()
      d:tick()
      assert.equal(2000, d:time() - t1)
      assert.same({ x = 2 }, d:state("totals"))
    end)

    it("a window added with a new interval is due on that interval's grid", function()
      local d = testing.driver(build { stages = { "totals" } })
      d:push("in", { "x" })
      d:tick(3)
      d:reload(build { batch = "2s", length = "4s", slide = "2s" })
      d:push("in", { "x" })
      local out = d:tick()
      assert.equal(5000, d:time())
      assert.same({ { "x", "a:1" } }, out.win_out)
    end)

    it("cannot change while a window holds slices, with the reason; the job goes on", function()
      local d = testing.driver(build {})
      d:push("in", { "x" })
      d:tick()
      local ok, err = pcall(d.reload, d, build { batch = "2s", length = "4s", slide = "2s" })
      assert.is_false(ok)
      assert.equal("reload: the batch interval cannot change (1000 ms to 2000 ms) while windows hold slices", err)
      d:push("in", { "x" })
      local out = d:tick()
      assert.equal(2000, d:time())
      assert.same({ { "x", "a:2" } }, out.win_out)
    end)
  end)
end)

describe("testing.restore with another script", function()
  after_each(cleanup)

  local function sample()
    local d = testing.driver(build {})
    d:push("in", { "x", "y", "x" })
    d:tick()
    d:push("in", { "x" })
    d:tick()
    return d, checkpoint(d)
  end

  it("keeps stages of the same name and kind, drops those gone, starts new ones empty", function()
    local d, path = sample()
    local r = testing.restore(path, { job = build { stages = { "totals", "win" }, tag = "b" } })
    assert.equal("kept totals, win; dropped sessions; new none", r.reload_log)
    assert.same(d:state("totals"), r:state("totals"))
    assert.equal(2000, r:time())
    r:push("in", { "x" })
    d:push("in", { "x" })
    local out, ref = r:tick(), d:tick()
    assert.same({ { "x", "b:4" }, { "y", "b:1" } }, sorted(out.totals_out))
    -- The window's slices came along: the same sums as the original's.
    for _, p in ipairs(ref.win_out) do p[2] = p[2]:gsub("^a:", "b:") end
    assert.same(sorted(ref.win_out), sorted(out.win_out))

    local r2 = testing.restore(path, { job = build { stages = { "totals", "sessions", "win" } } })
    assert.equal("kept sessions, totals, win; dropped none; new none", r2.reload_log)
    local r3 = testing.restore(path, { job = build { stages = {} } })
    assert.equal("kept none; dropped sessions, totals, win; new none", r3.reload_log)
  end)

  it("keeps pending timeouts: keys close on the batch they would have", function()
    local d, path = sample()
    local r = testing.restore(path, { job = build { tag = "b" } })
    local closed_d, closed_r = {}, {}
    for b = 3, 7 do
      for _, p in ipairs(d:tick().sessions_out) do closed_d[#closed_d + 1] = b .. ":" .. p[1] .. ":" .. p[2] end
      for _, p in ipairs(r:tick().sessions_out) do closed_r[#closed_r + 1] = b .. ":" .. p[1] .. ":" .. p[2]:gsub("^b:", "a:") end
    end
    assert.same({ "5:y:a:closed:1", "6:x:a:closed:3" }, closed_d)
    assert.same(closed_d, closed_r)
  end)

  it("raises on a stage whose kind changed, naming it and the checkpoint; drop_state allows it", function()
    local _, path = sample()
    local ok, err = pcall(testing.restore, path, { job = build { kinds = { totals = "map" } } })
    assert.is_false(ok)
    assert.equal(path .. " cannot be resumed by this script: totals: was update_state_by_key, now map_with_state"
      .. " (list it in sr.job{ drop_state = {...} } to start it afresh)", err)
    local r = testing.restore(path, { job = build { kinds = { totals = "map" }, drop = { "totals" } } })
    assert.equal("kept sessions, win; dropped totals; new totals", r.reload_log)
    assert.same({}, r:state("totals"))
    assert.same({ x = 3, y = 1 }, r:state("sessions"))
  end)
end)

describe("reload rules found by these specs", function()
  after_each(cleanup)

  -- Kept state times out as the new script says.
  it("a map_with_state timeout changed by a reload applies to keys touched after it", function()
    local d = testing.driver(build { stages = { "sessions" }, timeout = "10s" })
    d:push("in", { "x" })
    d:tick()
    d:reload(build { stages = { "sessions" }, timeout = "2s", tag = "b" })
    d:push("in", { "y" })
    d:tick()
    local closed = {}
    for _ = 3, 13 do
      for _, p in ipairs(d:tick().sessions_out) do closed[#closed + 1] = d:time() .. ":" .. p[1] end
    end
    -- x keeps the deadline it had (touched at 1000 ms, 10 s): 12000 ms.
    assert.same({ "5000:y", "12000:x" }, closed)
  end)

  -- The clock goes on from the last batch when the interval changes.
  it("a batch interval change does not move the clock", function()
    local d = testing.driver(build { stages = { "totals" } })
    d:tick(3)
    assert.equal(3000, d:time())
    d:reload(build { stages = { "totals" }, batch = "2s" })
    assert.equal(3000, d:time())
    d:tick()
    assert.is_true(d:time() > 3000 and d:time() <= 5000, "the next batch at " .. d:time())
  end)

  -- A window with an inverse keeps its running result only for the same length and slide.
  it("a window whose length or slide changed: with an inverse, the same sums as without (or refused)", function()
    local function value(out)
      local p = out[1]
      return p and tonumber(p[2]:match("%-?%d+$")) or 0
    end
    for _, case in ipairs {
      { from = { "3s", "1s" }, to = { "5s", "1s" }, before = 4 },
      { from = { "5s", "1s" }, to = { "2s", "1s" }, before = 6 },
      { from = { "4s", "1s" }, to = { "4s", "2s" }, before = 5 },
    } do
      local what = ("%s/%s -> %s/%s"):format(case.from[1], case.from[2], case.to[1], case.to[2])
      local function window(inverse, o)
        o = o or {}
        return build { stages = { "win" }, no_inverse = not inverse, tag = o.tag,
                       length = (o.to or case.from)[1], slide = (o.to or case.from)[2] }
      end
      local with, without = testing.driver(window(true)), testing.driver(window(false))
      local reloaded = true
      for b = 1, 14 do
        if b == case.before + 1 then
          reloaded = pcall(with.reload, with, window(true, { to = case.to, tag = "b" }))
          if not reloaded then break end
          without:reload(window(false, { to = case.to, tag = "b" }))
        end
        local records = rep("w", b <= case.before + 2 and b or 0)
        with:push("in", records)
        without:push("in", records)
        assert.equal(value(without:tick().win_out), value(with:tick().win_out), what .. ", batch " .. b)
      end
    end
  end)

  -- A reload writes the batch just checkpointed again (the same file): the
  -- write-ahead log goes back to the oldest checkpoint on disk, so that
  -- kept counts it once.
  it("a checkpoint written again for the same batch is kept once", function()
    local d = testing.driver(build { stages = { "totals" } })
    local Session = getmetatable(d.session)
    local dir = os.tmpname()
    os.remove(dir)
    local S = setmetatable({ settings = { dir = dir, keep = 2, every_ms = 1000 }, kept = {}, taken = {},
                             segment_after = {}, log = function() end }, Session)
    assert.truthy(S:new_writer())
    S.writer.on_written(4)
    S.writer.on_written(5)
    S.writer.on_written(5)
    assert.same({ 4, 5 }, S.kept)
    os.execute("rm -rf '" .. dir .. "'")
  end)

  -- A window without an inverse may grow, but it kept only its old length
  -- of slices: the log says which windows lack data, also on a restore.
  it("a window without an inverse whose length grew says what its first windows lack", function()
    local function job(length)
      return function()
        local j = sr.job { name = "grow", batch = "1s" }
        j:queue({}, { name = "in" }):map(function(w) return w, 1 end)
          :reduce_by_key_and_window(sr.add, length, "1s", { name = "w" })
          :foreach_batch(function() end, { name = "w_out" })
        return j
      end
    end
    local d = testing.driver(job("2s"))
    d:push("in", { "a" })
    d:tick()
    local want = "kept w (its length grew from 2000 ms to 5000 ms: windows ending in the next 3000 ms lack what came"
      .. " before the last 2000 ms it kept)"
    local path = d:checkpoint()
    assert.equal(want .. "; dropped none; new none", d:reload(job("5s")))
    assert.equal("kept w; dropped none; new none", d:reload(job("3s")))
    local r = testing.restore(path, { job = job("5s") })
    assert.equal(want .. "; dropped none; new none", r.session.adopted)
  end)
end)
