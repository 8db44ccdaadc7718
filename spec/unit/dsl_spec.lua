-- The job DSL's build-time checks (SPEC section 4): every mistake is caught
-- before a source opens, and its message says where (the job script's
-- file:line, here this spec's) and what is wrong. Stage names: explicit
-- ones, and stable defaults op.N.
local sr = require "streamrun"
local loader = require "streamrun.loader"
local sources = require "streamrun.sources"
local testing = require "streamrun.testing"

-- "file:line" of the caller's line, as the DSL reports it.
local function here()
  local info = debug.getinfo(2, "Sl")
  return info.source:sub(2) .. ":" .. info.currentline
end

-- The message the loader gives for a job built by fn (which must fail).
local function load_error(fn)
  local job, err = loader.load(fn)
  assert.is_nil(job, "the job loaded")
  assert.equal("string", type(err))
  return err
end

-- Asserts that err is "<where>: <what...>".
local function assert_error_at(where, what, err)
  assert.equal(where .. ": ", err:sub(1, #where + 2))
  assert.matches(what, err, #where + 3, true)
end

local function id(x) return x end
local function pair(x) return x, 1 end

describe("job DSL", function()
  describe("rejects at build time, naming file:line", function()
    it("an unknown operation", function()
      local where
      local err = load_error(function()
        local job = sr.job { name = "j" }
        where = here(); job:queue({}):frobnicate(id)
        return job
      end)
      assert_error_at(where, "unknown operation 'frobnicate'", err)
    end)

    it("an unknown job method (Lua's own message, with the line)", function()
      local where
      local err = load_error(function()
        local job = sr.job { name = "j" }
        where = here(); job:socket_txt("localhost", 9999)
        return job
      end)
      assert_error_at(where, "socket_txt", err)
    end)

    it("an operation called with '.' instead of ':'", function()
      local where
      local err = load_error(function()
        local job = sr.job { name = "j" }
        local s = job:queue({})
        where = here(); s.map(id)
        return job
      end)
      assert_error_at(where, "map: called on something that is not a stream (use ':' not '.')", err)
    end)

    it("a function argument that is not a function", function()
      local where
      local err = load_error(function()
        local job = sr.job { name = "j" }
        where = here(); job:queue({}):filter("x > 1")
        return job
      end)
      assert_error_at(where, "filter: argument must be a function, got string", err)
    end)

    it("a keyed operation on a stream of single elements", function()
      local cases = {
        -- (no `return s:op()`: a tail call would leave no frame for this line)
        { "reduce_by_key", function(s) s:reduce_by_key(sr.add) end },
        { "group_by_key", function(s) s:group_by_key() end },
        { "map_values", function(s) s:map_values(id) end },
        { "flat_map_values", function(s) s:flat_map_values(id) end },
        { "join", function(s) s:join(s) end },
        { "cogroup", function(s) s:cogroup(s) end },
      }
      for _, case in ipairs(cases) do
        local op, apply = case[1], case[2]
        local err = load_error(function()
          local job = sr.job { name = "j" }
          apply(job:queue({}))
          return job
        end)
        -- the offending call is on apply's line in this file
        local info = debug.getinfo(apply, "S")
        assert_error_at(info.source:sub(2) .. ":" .. info.linedefined,
          op .. " needs a keyed stream of (k, v) pairs, but queue.1 (queue) gives single elements", err)
      end
    end)

    it("a join whose other side is not keyed", function()
      local where
      local err = load_error(function()
        local job = sr.job { name = "j" }
        local words = job:queue({}, { name = "words" })
        local counts = words:map(pair):reduce_by_key(sr.add)
        where = here(); counts:left_outer_join(words:count())
        return job
      end)
      assert_error_at(where, "left_outer_join needs a keyed stream of (k, v) pairs, but count.1 (count) gives single elements", err)
    end)

    it("a bad batch duration", function()
      for _, bad in ipairs { "fast", "-1s", "10 parsecs" } do
        local where
        local err = load_error(function()
          where = here(); local job = sr.job { name = "j", batch = bad }
          job:queue({}):print()
          return job
        end)
        assert_error_at(where, ('sr.job: batch: bad duration "%s"'):format(bad), err)
      end
      local where
      local err = load_error(function()
        where = here(); local job = sr.job { name = "j", batch = 0 }
        return job
      end)
      assert_error_at(where, "sr.job: batch: must be positive", err)
      err = load_error(function()
        where = here(); local job = sr.job { name = "j", checkpoint = { dir = "/tmp/x", every = "often" } }
        return job
      end)
      assert_error_at(where, 'sr.job: checkpoint.every: bad duration "often"', err)
    end)

    it("an unknown option name", function()
      local cases = {
        { "sr.job: unknown option 'nmae'", function(job) sr.job { nmae = "j" } end },
        { "queue: unknown option 'fromat'", function(job) job:queue({}, { fromat = "json" }) end },
        { "map: unknown option 'nme'", function(job) job:queue({}):map(id, { nme = "m" }) end },
        { "reduce_by_key: unknown option 'n'", function(job) job:queue({}):map(pair):reduce_by_key(sr.add, { n = 4 }) end },
        { "print: unknown option 'limit'", function(job) job:queue({}):print(5, { limit = 5 }) end },
        { "transform: unknown option 'keyd'", function(job) job:queue({}):transform(id, { keyd = true }) end },
      }
      for _, case in ipairs(cases) do
        local what, apply = case[1], case[2]
        local err = load_error(function()
          local job = sr.job { name = "j" }
          apply(job)
          return job
        end)
        -- the offending call is on apply's line in this file
        local info = debug.getinfo(apply, "S")
        assert_error_at(info.source:sub(2) .. ":" .. info.linedefined, what, err)
      end
    end)

    it("a bad option value", function()
      local where
      local err = load_error(function()
        where = here(); local job = sr.job { name = "j", on_error = "ignore" }
        return job
      end)
      assert_error_at(where, 'sr.job: on_error must be "dead_letter" or "fail", got ignore', err)
      err = load_error(function()
        local job = sr.job { name = "j" }
        where = here(); job:queue({}):print(-1)
        return job
      end)
      assert_error_at(where, "print: n must be a whole number >= 0", err)
      err = load_error(function()
        local job = sr.job { name = "j" }
        where = here(); job:queue({}, { format = "csv" })
        return job
      end)
      assert_error_at(where, 'queue: format must be "text" or "json", got csv', err)
      for _, case in ipairs {
        { { max_bytes = 0 }, "sr.job: dead_letters.max_bytes must be a positive integer" },
        { { keep = -1 }, "sr.job: dead_letters.keep must be an integer from 0 to 100" },
        { { size = 1 }, "sr.job dead_letters: unknown option 'size'" },
        { "64MB", "sr.job: dead_letters must be {max_bytes = N, keep = N}" },
      } do
        err = load_error(function()
          where = here(); local job = sr.job { name = "j", dead_letters = case[1] }
          return job
        end)
        assert_error_at(where, case[2], err)
      end
    end)

    it("the dead-letter file's rotation: 64 MiB and 3 kept unless the job says", function()
      assert.same({ max_bytes = 64 * 1024 * 1024, keep = 3 }, sr.job { name = "j" }.dead_letters)
      assert.same({ max_bytes = 1000, keep = 3 }, sr.job { name = "j", dead_letters = { max_bytes = 1000 } }.dead_letters)
      assert.same({ max_bytes = 64 * 1024 * 1024, keep = 0 }, sr.job { name = "j", dead_letters = { keep = 0 } }.dead_letters)
    end)

    it("a stage name used twice, naming both places", function()
      local first, second
      local err = load_error(function()
        local job = sr.job { name = "j" }
        local s = job:queue({})
        first = here(); s:map(pair, { name = "pairs" })
        second = here(); s:map(id, { name = "pairs" })
        return job
      end)
      assert_error_at(second, "name 'pairs' is already used by the stage at " .. first, err)
      err = load_error(function()
        local job = sr.job { name = "j" }
        local s = job:queue({})
        first = here(); s:map(id)
        second = here(); s:filter(id):name("map.1")
        return job
      end)
      assert_error_at(second, "name 'map.1' is already used by the stage at " .. first, err)
    end)

    it("a job with no output", function()
      local where
      local err = load_error(function()
        where = here(); local job = sr.job { name = "lonely" }
        job:queue({}):map(id)
        return job
      end)
      assert_error_at(where, "job lonely has no output; add print()", err)
    end)

    it("a job with no source", function()
      local where
      local err = load_error(function()
        where = here(); local job = sr.job { name = "empty" }
        return job
      end)
      assert_error_at(where, "job empty has no source", err)
    end)
  end)

  describe("stage names", function()
    it("default to op.N per operation, in creation order", function()
      local job = sr.job { name = "j" }
      local src = job:queue({})
      local m1 = src:map(pair)
      local m2 = m1:map(pair)
      m2:print()
      src:print()
      m1:reduce_by_key(sr.add):print()
      local names = {}
      for _, n in ipairs(job.nodes) do names[#names + 1] = n.stage_name end
      assert.same({ "queue.1", "map.1", "map.2", "print.1", "print.2", "reduce_by_key.1", "print.3" }, names)
      for _, n in ipairs(job.nodes) do assert.equal(n, job.by_name[n.stage_name]) end
    end)

    it("take :name(x) and opts.name, and the next default keeps counting", function()
      local job = sr.job { name = "j" }
      local src = job:queue({}, { name = "lines" })
      src:map(pair):name("pairs")
      src:map(pair, { name = "more_pairs" })
      src:map(pair)
      local names = {}
      for _, n in ipairs(job.nodes) do names[#names + 1] = n.stage_name end
      assert.same({ "lines", "pairs", "more_pairs", "map.3" }, names)
      assert.is_nil(job.by_name["map.1"])
      assert.equal("pairs", job.by_name.pairs.stage_name)
    end)

    it("are the names the test driver uses for sources and outputs", function()
      local d = testing.driver(function()
        local job = sr.job { name = "j", batch = "1s" }
        local src = job:queue({}, { name = "lines" })
        src:map(pair):print()
        src:foreach_batch(id):name("raw")
        return job
      end)
      d:push("lines", { "x" })
      local out = d:tick()
      assert.same({ { "x", 1 } }, out["print.1"])
      assert.same({ "x" }, out.raw)
    end)

    -- An explicit name equal to a default that a later stage would get
    -- ("map.2" given to the first map): the later stage skips it.
    it("an explicit name that a later default would take is not given twice", function()
      local job = sr.job { name = "j" }
      local s = job:queue({})
      s:map(id, { name = "map.2" })
      s:map(id)
      local seen = {}
      for _, n in ipairs(job.nodes) do
        assert.is_nil(seen[n.stage_name])
        seen[n.stage_name] = true
      end
      assert.is_true(seen["map.3"])
    end)
  end)

  describe("sr.param", function()
    local function job_with(values)
      return function()
        local job = sr.job { name = "j", batch = "1s" }
        values.n = sr.param("n", 1)
        values.flag = sr.param("flag", false)
        values.off = sr.param("off", true)
        values.word = sr.param("word", "default")
        values.missing_n = sr.param("missing_n", 3)
        values.missing_flag = sr.param("missing_flag", true)
        job:queue({}):print()
        return job
      end
    end

    it("gives --set values, numbers and booleans after their defaults' types", function()
      local v = {}
      testing.driver(job_with(v), { params = { n = "5", flag = "true", off = "0", word = "hello" } })
      assert.same({ n = 5, flag = true, off = false, word = "hello", missing_n = 3, missing_flag = true }, v)
      assert.equal("number", type(v.n))
      v = {}
      testing.driver(job_with(v), { params = { n = "2.5", flag = "yes", off = "false" } })
      assert.same({ n = 2.5, flag = true, off = false, word = "default", missing_n = 3, missing_flag = true }, v)
    end)

    it("gives the defaults when nothing is set", function()
      local v = {}
      testing.driver(job_with(v))
      assert.same({ n = 1, flag = false, off = true, word = "default", missing_n = 3, missing_flag = true }, v)
    end)

    it("rejects a value that is not a number when the default is one, naming file:line", function()
      local where
      local job, err = loader.load(function()
        local job = sr.job { name = "j" }
        where = here(); local n = sr.param("n", 10)
        job:queue({}):print(n)
        return job
      end, { params = { n = "ten" } })
      assert.is_nil(job)
      assert_error_at(where, "sr.param: n=ten is not a number", err)
    end)
  end)

  describe("source traits", function()
    -- What each source kind is comes from one place: the C source type for
    -- the kinds that run on the event loop, sources.lua for the Lua ones.
    it("are read from the C source type and sources.lua", function()
      local job = sr.job { name = "j" }
      job:text_file("in.txt"); job:stdin(); job:socket_text("localhost", 9); job:listen_text("localhost", 0)
      job:tail("log"); job:text_dir("dir"); job:generator(id); job:generator(id, { count = 3 }); job:queue({})
      local function row(n)
        local t = sources.traits(n)
        local bits = {}
        for _, k in ipairs({ "c", "bounded", "stored", "logged", "rereads", "resumes", "file_list" }) do
          bits[#bits + 1] = t[k] and k or "-"
        end
        return (n.c_kind or "lua") .. " " .. table.concat(bits, " ")
      end
      local got = {}
      for _, n in ipairs(job.sources) do got[#got + 1] = row(n) end
      assert.same({
        "text_file c bounded stored - rereads resumes -",
        "stdin c bounded - logged - - -",
        "socket_text c - - logged - - -",
        "listen_text c - - logged - - -",
        "tail c - - logged - resumes -",
        "text_dir c - - logged - resumes file_list",
        "lua - - - - - resumes -",
        "lua - bounded - - - resumes -",
        "lua - bounded - - - resumes -",
      }, got)
      assert.is_nil(sources.kind_traits("nope"))
    end)
  end)
end)
