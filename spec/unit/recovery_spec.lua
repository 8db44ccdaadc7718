-- streamrun.recovery over a write-ahead log written by the runtime's own
-- writer: where text_dir and tail resume (the files done with, the one
-- taken up last, its offset) and which logged records a replayed batch
-- gets when runs were killed between batch markers.
local core = require "streamrun.core"
local recovery = require "streamrun.recovery"
local batch = require "streamrun.batch"

local ffi, C = core.ffi, core.C

pcall(ffi.cdef, [[
typedef struct sr_wal sr_wal_t;
typedef struct sr_wal_pos { int index; int64_t offset; uint64_t inode; } sr_wal_pos_t;
sr_wal_t *sr_wal_open(const char *dir, char *err, size_t errlen);
void sr_wal_free(sr_wal_t *w);
int sr_wal_declare(sr_wal_t *w, int index, const char *name);
int sr_wal_record(sr_wal_t *w, int index, int64_t pos, const char *data, size_t len);
int sr_wal_file(sr_wal_t *w, int index, int64_t inode, const char *name);
int sr_wal_batch(sr_wal_t *w, int64_t time_ms, const sr_wal_pos_t *pos, int npos);
]])

local made = {}
local function tmpdir()
  local f = io.popen("mktemp -d")
  local dir = f:read("*l")
  f:close()
  made[#made + 1] = dir
  return dir
end

-- A run of the job that logs: index 0 is the text_dir "files", 1 a socket
-- "sock".
local function open_run(dir)
  local err = ffi.new("char[256]")
  local w = C.sr_wal_open(dir, err, 256)
  assert(w ~= nil, ffi.string(err))
  assert(C.sr_wal_declare(w, 0, "files") == 0)
  assert(C.sr_wal_declare(w, 1, "sock") == 0)
  local run = {}
  function run.file(name, inode) assert(C.sr_wal_file(w, 0, inode, name) == 0) end
  function run.record(index, line, pos) assert(C.sr_wal_record(w, index, pos or 0, line, #line) == 0) end
  function run.batch(time_ms, offset, inode)
    local pos = ffi.new("sr_wal_pos_t[1]", { { 0, offset, inode } })
    assert(C.sr_wal_batch(w, time_ms, pos, 1) == 0)
  end
  function run.kill() C.sr_wal_free(w) end -- what was logged stays, as after kill -9
  return run
end

local job = { sources = {
  { c_kind = "text_dir", stage_name = "files" },
  { c_kind = "socket_text", stage_name = "sock" },
} }

local function values_of(inputs, i)
  return batch.to_elements(inputs[job.sources[i]])
end

local function no_dead() error("no dead letter expected") end

describe("recovery of text_dir from the write-ahead log", function()
  after_each(function()
    for _, dir in ipairs(made) do os.execute("rm -rf '" .. dir .. "'") end
    made = {}
  end)
  local meta = { time_ms = 100, sources = {
    files = { kind = "text_dir", file = "b.txt", inode = 2, offset = 4, done = { "a.txt" }, path = "in" },
  } }

  it("resumes at the file taken up last before the last marker; later ones are not done", function()
    local dir = tmpdir()
    local run = open_run(dir)
    run.record(0, "b2")
    run.file("c.txt", 3)
    run.record(0, "c1")
    run.file("bad.txt", -1)
    run.batch(200, 3, 3)
    run.file("d.txt", 4) -- after the last marker: not taken up as far as a restart goes
    run.record(0, "d1")
    run.kill()
    local logged = recovery.read(dir, meta)
    assert.same({ kind = "text_dir", file = "c.txt", inode = 3, offset = 3, path = "in",
                  done = { "a.txt", "b.txt", "bad.txt" } }, logged.positions.files)
    assert.equal(1, #logged.batches)
    assert.same({ "b2", "c1" }, values_of(recovery.inputs(job, logged.batches[1], no_dead), 1))
  end)

  it("leaves out what a killed run logged after its last marker: the next run read it again", function()
    local dir = tmpdir()
    local r1 = open_run(dir)
    r1.record(0, "b2")
    r1.record(1, "s1")
    r1.batch(200, 7, 2)
    r1.record(0, "b3") -- killed before the next marker
    r1.file("c.txt", 3)
    r1.record(0, "c1")
    r1.record(1, "s2")
    r1.kill()
    local r2 = open_run(dir) -- resumed at b.txt:7 and took s2 into its first batch
    r2.file("b.txt", 2)
    r2.record(0, "b3")
    r2.file("c.txt", 3)
    r2.record(0, "c1")
    r2.record(0, "c2")
    r2.record(1, "s3")
    r2.batch(300, 6, 3)
    r2.kill()
    local logged = recovery.read(dir, meta)
    assert.equal(2, #logged.batches)
    local second = recovery.inputs(job, logged.batches[2], no_dead)
    assert.same({ "b3", "c1", "c2" }, values_of(second, 1))
    assert.same({ "s2", "s3" }, values_of(second, 2))
    assert.same({ kind = "text_dir", file = "c.txt", inode = 3, offset = 6, path = "in",
                  done = { "a.txt", "b.txt" } }, logged.positions.files)
  end)

  it("replayed and pending records keep their source offsets (their dead letters name them as the first time)",
    function()
    local dir = tmpdir()
    local r1 = open_run(dir)
    r1.record(1, "s1", 0)
    r1.batch(200, 0, 0)
    r1.record(1, "s2", 3) -- killed before the next marker: the next run's
    r1.kill()
    local r2 = open_run(dir)
    r2.record(1, "s3", 6)
    r2.batch(300, 0, 0)
    r2.record(1, "s4", 9) -- pending: into the first live batch
    r2.kill()
    local logged = recovery.read(dir, meta)
    local first = recovery.inputs(job, logged.batches[1], no_dead)[job.sources[2]]
    assert.same({ "sock", 0 }, { batch.origin(first, 1) })
    local second = recovery.inputs(job, logged.batches[2], no_dead)[job.sources[2]]
    assert.same({ "s2", "s3" }, batch.to_elements(second))
    assert.same({ "sock", 3 }, { batch.origin(second, 1) })
    assert.same({ "sock", 6 }, { batch.origin(second, 2) })
    local inputs = { [job.sources[2]] = batch.of_values({ "live" }) }
    inputs[job.sources[2]].src, inputs[job.sources[2]].first = "sock", 12
    recovery.add_pending(job, inputs, logged.pending, no_dead)
    assert.same({ "s4", "live" }, batch.to_elements(inputs[job.sources[2]]))
    assert.same({ "sock", 9 }, { batch.origin(inputs[job.sources[2]], 1) })
    assert.same({ "sock", 12 }, { batch.origin(inputs[job.sources[2]], 2) })
  end)

  it("a file to resume that could not be opened is done with, and no longer the one to resume", function()
    local dir = tmpdir()
    local run = open_run(dir)
    run.file("b.txt", -1)
    run.batch(200, 0, 0)
    run.kill()
    local logged = recovery.read(dir, meta)
    assert.same({ kind = "text_dir", offset = 0, inode = 0, path = "in", done = { "a.txt", "b.txt" } },
      logged.positions.files)
  end)

  it("without a checkpoint, the log alone says which files are done", function()
    local dir = tmpdir()
    local run = open_run(dir)
    run.file("a.txt", 1)
    run.record(0, "a1")
    run.file("b.txt", 2)
    run.batch(100, 0, 2)
    run.kill()
    local logged = recovery.read(dir, {})
    assert.same({ kind = "text_dir", file = "b.txt", inode = 2, offset = 0, done = { "a.txt" } },
      logged.positions.files)
  end)
end)
