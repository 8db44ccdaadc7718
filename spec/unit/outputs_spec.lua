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
local libc = require "helpers.libc"

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

  it("fails a batch whose file it cannot write, naming the output, and loses no element to dead letters", function()
    local d = testing.driver(function()
      local job = sr.job { name = "s", batch = "1s" }
      job:queue({ { 1 } }):save_as_text_files("/nonexistent-dir/x/out", "txt", { name = "files" })
      return job
    end)
    local ok, err = pcall(d.tick, d)
    assert.is_false(ok)
    assert.matches("output files: cannot write /nonexistent-dir/x/out-1000.txt", err, 1, true)
    assert.equal(0, #d.dead_letters)
  end)

  it("keeps a file it could not write and writes it on retry", function()
    local dir, cleanup = temp_dir()
    local job = sr.job { name = "s", batch = "1s" }
    local node = dsl.node_of(job:queue({}):save_as_text_files(dir .. "/later/out", "txt"))
    local write, retry = outputs.make(node, {})
    local ok, err, permanent = write(batch.of_values({ "a", "b" }), 1000)
    assert.is_nil(ok)
    assert.matches("cannot write " .. dir .. "/later/out-1000.txt", err, 1, true)
    assert.is_falsy(permanent)
    assert.is_nil(retry())
    assert(core.mkdir_p(dir .. "/later"))
    assert.is_true(retry())
    assert.equal("a\nb\n", read(dir .. "/later/out-1000.txt"))
    assert.is_true(retry()) -- nothing left
    cleanup { "later/out-1000.txt", "later" }
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

  -- An output's write and retry, and the progress it records, for path.
  local function json_output(path)
    local job = sr.job { name = "j", batch = "1s" }
    local node = dsl.node_of(job:queue({}):to_json_lines(path, { name = "out" }))
    local progress = {}
    local write, retry = outputs.make(node, { progress = progress }, { report = function() end })
    return write, retry, progress
  end

  it("says a full device fails, keeps the batch and records no progress for it", function()
    local write, retry, progress = json_output("/dev/full")
    local ok, err, permanent = write(batch.of_values({ 1, 2 }), 1000)
    assert.is_nil(ok)
    assert.equal("cannot write /dev/full: No space left on device", err)
    assert.is_falsy(permanent)
    assert.is_nil(progress.out)
    assert.is_nil(retry())
  end)

  it("cuts a torn write back to the batch's start and writes the whole batch on retry", function()
    local dir, cleanup = temp_dir()
    local path = dir .. "/out.jsonl"
    local write, retry, progress = json_output(path)
    assert.is_true(write(batch.of_values({ "first" }), 1000))
    assert.same({ path = path, bytes = 8 }, progress.out)
    -- Room for 20 bytes more: the 30 of the batch are torn after 20.
    local long = batch.of_values({ "aaaaaaaaaa", "bbbbbbbbbbbbbb" })
    local ok, err = libc.with_file_limit(28, function() return write(long, 2000) end)
    assert.is_nil(ok)
    assert.equal("cannot write " .. path .. ": File too large", err)
    assert.equal('"first"\n', read(path))
    assert.same({ path = path, bytes = 8 }, progress.out)
    assert.is_nil(libc.with_file_limit(28, retry))
    assert.equal('"first"\n', read(path))
    assert.is_true(retry())
    assert.equal('"first"\n"aaaaaaaaaa"\n"bbbbbbbbbbbbbb"\n', read(path))
    assert.same({ path = path, bytes = 38 }, progress.out)
    assert.is_true(retry())
    assert.is_true(write(batch.of_values({ 3 }), 3000))
    assert.equal('"first"\n"aaaaaaaaaa"\n"bbbbbbbbbbbbbb"\n3\n', read(path))
    cleanup { "out.jsonl" }
  end)

  it("opens a file whose directory appears later on retry", function()
    local dir, cleanup = temp_dir()
    local path = dir .. "/later/out.jsonl"
    local write, retry = json_output(path)
    local ok, err = write(batch.of_values({ 1 }), 1000)
    assert.is_nil(ok)
    assert.matches("^cannot open " .. path:gsub("%p", "%%%0") .. ": No such file or directory$", err)
    assert(core.mkdir_p(dir .. "/later"))
    assert.is_true(retry())
    assert.equal("1\n", read(path))
    cleanup { "later/out.jsonl", "later" }
  end)

  it("writes what a failing write to stdout left, and says a closed one is for good", function()
    -- A stdout that takes `room` bytes, then fails with errno `code`.
    local taken, room, code = {}, 5, 28
    local out = {
      write = function(_, s)
        local n = math.min(#s, room)
        taken[#taken + 1] = s:sub(1, n)
        room = room - n
        if n < #s then return nil, "failed", code, n end
        return true
      end,
      flush = function() return true end,
    }
    local job = sr.job { name = "j", batch = "1s" }
    local node = dsl.node_of(job:queue({}):to_json_lines("-"))
    local write, retry = outputs.make(node, { stdout = out })
    local ok, err, permanent = write(batch.of_values({ "abc", "de" }), 1000)
    assert.is_nil(ok)
    assert.equal("standard output: failed", err)
    assert.is_falsy(permanent)
    room = 100
    assert.is_true(retry())
    assert.equal('"abc"\n"de"\n', table.concat(taken))
    room, code = 0, 32 -- EPIPE
    ok, err, permanent = write(batch.of_values({ 1 }), 2000)
    assert.is_nil(ok)
    assert.equal("standard output: failed (closed)", err)
    assert.is_true(permanent)
  end)

  it("writes NaN and infinities as null, invalid UTF-8 as U+FFFD, and an element JSON cannot hold as a dead letter", function()
    local out = fake_stdout()
    local failed = {}
    local job = sr.job { name = "j", batch = "1s" }
    local node = dsl.node_of(job:queue({}):to_json_lines("-"))
    local write = outputs.make(node, { stdout = out }, { report = function(_, msg, a) failed[#failed + 1] = { msg, a } end })
    assert.is_true(write(batch.of_values({ 0 / 0, 1 / 0, -1 / 0, { x = 0 / 0, y = { 1 / 0 } }, "ok\xff\xc3(", print, "\xe2\x82\xac\xed\xa0\x80" }), 1000))
    assert.equal('null\nnull\nnull\n{"x":null,"y":[null]}\n"ok\xef\xbf\xbd\xef\xbf\xbd("\n"\xe2\x82\xac\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"\n', out.text())
    assert.equal(1, #failed)
    assert.equal("cannot write function as JSON", failed[1][1])
    assert.equal(print, failed[1][2])
  end)
end)
