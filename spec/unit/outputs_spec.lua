-- Outputs (SPEC section 9): print in Spark's pprint format, save_as_text_files
-- one file per batch, to_json_lines. Spark's DStream.print writes a line of
-- 43 dashes, "Time: <ms> ms", the dashes again, the first n elements, "..."
-- when there are more, and a blank line.
local sr = require "streamrun"
local testing = require "streamrun.testing"
local outputs = require "streamrun.outputs"
local batch = require "streamrun.batch"
local core = require "streamrun.core"
local dsl = require "streamrun.dsl"

local DASHES = ("-"):rep(43)

local function pairs_batch(list)
  local b, bad = batch.from_elements(list, true)
  assert(b, "not a pair at " .. tostring(bad))
  return b
end

local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

-- A fresh directory under /tmp; cleanup(names) removes the given files in
-- it, then it.
local function temp_dir()
  local dir = os.tmpname()
  os.remove(dir)
  assert(core.mkdir_p(dir))
  return dir, function(names)
    for _, n in ipairs(names) do os.remove(dir .. "/" .. n) end
    assert(os.remove(dir))
  end
end

-- A stand-in for stdout that keeps what is written.
local function fake_stdout()
  local buf = {}
  return {
    write = function(self, ...) for _, s in ipairs { ... } do buf[#buf + 1] = s end return self end,
    flush = function() end,
    text = function() return table.concat(buf) end,
  }
end

describe("print", function()
  it("writes Spark's pprint lines: dashes, Time: <ms> ms, dashes, elements, blank line", function()
    assert.equal(43, #DASHES)
    assert.same({ DASHES, "Time: 1000 ms", DASHES, "1", "2", "3", "" },
      outputs.pprint_lines(batch.of_values({ 1, 2, 3 }), 1000, 10))
  end)

  it("writes ... after the first n elements when there are more than n", function()
    local b = batch.of_values({ 1, 2, 3, 4 })
    assert.same({ DASHES, "Time: 2000 ms", DASHES, "1", "2", "3", "...", "" }, outputs.pprint_lines(b, 2000, 3))
    assert.same({ DASHES, "Time: 2000 ms", DASHES, "1", "2", "3", "4", "" }, outputs.pprint_lines(b, 2000, 4))
    assert.same({ DASHES, "Time: 2000 ms", DASHES, "...", "" }, outputs.pprint_lines(b, 2000, 0))
  end)

  it("writes an empty batch as its header and a blank line", function()
    assert.same({ DASHES, "Time: 3000 ms", DASHES, "" }, outputs.pprint_lines(batch.empty(), 3000, 10))
  end)

  it("writes pairs as (k,v), tables as JSON and whole numbers without .0", function()
    local b = pairs_batch { { "a", 1 }, { 2, "x" }, { "t", { 1, 2 } }, { "f", 2.5 }, { true, false } }
    assert.same({ DASHES, "Time: 1000 ms", DASHES, "(a,1)", "(2,x)", "(t,[1,2])", "(f,2.5)", "(true,false)", "" },
      outputs.pprint_lines(b, 1000, 10))
    local singles = batch.of_values({ 3.0, 1e15, -7, 0.25, { 1, "b" }, { k = "v" }, "plain text", true })
    assert.same({ DASHES, "Time: 1000 ms", DASHES,
      "3", "1000000000000000", "-7", "0.25", '[1,"b"]', '{"k":"v"}', "plain text", "true", "" },
      outputs.pprint_lines(singles, 1000, 10))
  end)

  it("prints each batch of a job on stdout, the first 10 elements by default", function()
    local job = sr.job { name = "p", batch = "500ms" }
    local handle = job:queue({}):map(function(x) return x, x * x end):print()
    local node = dsl.node_of(handle)
    assert.equal(10, node.limit)
    local out = fake_stdout()
    local write = outputs.make(node, { stdout = out })
    write(pairs_batch { { 1, 1 }, { 2, 4 } }, 500)
    write(batch.of_values({ 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11 }), 1000)
    assert.equal(table.concat({
      DASHES, "Time: 500 ms", DASHES, "(1,1)", "(2,4)", "",
      DASHES, "Time: 1000 ms", DASHES, "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "...", "", "",
    }, "\n"), out.text())
  end)

  it("is captured by the test driver under its default name print.1", function()
    local d = testing.driver(function()
      local job = sr.job { name = "p", batch = "1s" }
      job:queue({ { "a", "b" } }):map(function(w) return w, 1 end):print(1)
      return job
    end)
    assert.same({ { "a", 1 }, { "b", 1 } }, d:tick()["print.1"])
  end)
end)

describe("save_as_text_files", function()
  it("writes prefix-<time_ms>.suffix per batch, one element a line, an empty batch as an empty file", function()
    -- Spark's saveAsTextFiles makes a directory of part files per batch;
    -- streamrun writes one file, under the same name.
    local dir, cleanup = temp_dir()
    local d = testing.driver(function()
      local job = sr.job { name = "s", batch = "1s" }
      job:queue({ { "a b", "a" }, {}, { "c" } }, { name = "in" })
        :flat_map(sr.words):map(function(w) return w, 1 end):reduce_by_key(sr.add)
        :save_as_text_files(dir .. "/counts", "txt")
      return job
    end)
    d:tick(3)
    assert.equal("(a,2)\n(b,1)\n", read(dir .. "/counts-1000.txt"))
    assert.equal("", read(dir .. "/counts-2000.txt"))
    assert.equal("(c,1)\n", read(dir .. "/counts-3000.txt"))
    assert.is_nil(read(dir .. "/counts-1000.txt.tmp"))
    assert.is_nil(read(dir .. "/counts-4000.txt"))
    cleanup { "counts-1000.txt", "counts-2000.txt", "counts-3000.txt" }
  end)

  it("names files prefix-<time_ms> when there is no suffix, and writes tables as JSON", function()
    local dir, cleanup = temp_dir()
    local d = testing.driver(function()
      local job = sr.job { name = "s", batch = "250ms" }
      job:queue({ { 1, 2.0, { x = 1 } } }):save_as_text_files(dir .. "/out")
      return job
    end)
    d:tick()
    assert.equal('1\n2\n{"x":1}\n', read(dir .. "/out-250"))
    cleanup { "out-250" }
  end)

  it("rewrites the same file when a batch is replayed", function()
    local dir, cleanup = temp_dir()
    local function job_for(batches)
      return function()
        local job = sr.job { name = "s", batch = "1s" }
        job:queue(batches):save_as_text_files(dir .. "/r", "log")
        return job
      end
    end
    testing.driver(job_for({ { "first", "run", "longer" } })):tick()
    assert.equal("first\nrun\nlonger\n", read(dir .. "/r-1000.log"))
    -- A restarted job runs the batch at 1000 ms again.
    testing.driver(job_for({ { "again" } })):tick()
    assert.equal("again\n", read(dir .. "/r-1000.log"))
    assert.is_nil(read(dir .. "/r-1000.log.tmp"))
    cleanup { "r-1000.log" }
  end)

  it("reports a file it cannot write as a dead letter naming the output", function()
    local d = testing.driver(function()
      local job = sr.job { name = "s", batch = "1s" }
      job:queue({ { 1 } }):save_as_text_files("/nonexistent-dir/x/out", "txt", { name = "files" })
      return job
    end)
    d:tick()
    assert.equal(1, #d.dead_letters)
    assert.equal("files", d.dead_letters[1].source)
    assert.matches("cannot write /nonexistent-dir/x/out-1000.txt", d.dead_letters[1].reason, 1, true)
  end)
end)

describe("to_json_lines", function()
  it("appends one JSON value a line, pairs as {\"key\":..,\"value\":..}", function()
    local path = os.tmpname()
    local d = testing.driver(function()
      local job = sr.job { name = "j", batch = "1s" }
      local src = job:queue({ { "a b a" }, {}, { "c" } }, { name = "in" })
      src:flat_map(sr.words):map(function(w) return w, 1 end):reduce_by_key(sr.add):to_json_lines(path)
      return job
    end)
    d:tick(3)
    assert.equal('{"key":"a","value":2}\n{"key":"b","value":1}\n{"key":"c","value":1}\n', read(path))
    os.remove(path)
  end)

  it("writes single elements as JSON values, tables included", function()
    local out = fake_stdout()
    local job = sr.job { name = "j", batch = "1s" }
    local node = dsl.node_of(job:queue({}):to_json_lines("-"))
    local write = outputs.make(node, { stdout = out })
    write(batch.of_values({ "s", 1.5, 3, { 1, 2 }, { k = { true } } }), 1000)
    write(batch.empty(), 2000)
    write(pairs_batch { { 1, { "v" } } }, 3000)
    assert.equal('"s"\n1.5\n3\n[1,2]\n{"k":[true]}\n{"key":1,"value":["v"]}\n', out.text())
  end)
end)
