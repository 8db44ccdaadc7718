-- The checkpoint Writer of a running job when its directory cannot be
-- written: each failure logged with the operation and the reason, counted,
-- retried; sources wait after three in a row; one success resets it. Both
-- ways of writing: here and now (sync) and from a forked child (poll, wait).
local sr = require "streamrun"
local testing = require "streamrun.testing"
local checkpoint = require "streamrun.checkpoint"
local core = require "streamrun.core"

local function job()
  local j = sr.job { name = "faults", batch = "1s" }
  local kv = j:queue({}, { name = "in" }):map(function(w) return w, 1 end)
  kv:update_state_by_key(function(v, s) return (s or 0) + #v end, { name = "totals" })
    :foreach_batch(function() end, { name = "totals_out" })
  kv:map_with_state(sr.state_spec(function(k, v, st)
      st:update((st:exists() and st:get() or 0) + 1)
    end):timeout("5s"):name("idle"))
    :foreach_batch(function() end, { name = "idle_out" })
  kv:reduce_by_key_and_window(sr.add, function(a, b) return a - b end, "3s", "1s", { name = "win" })
    :foreach_batch(function() end, { name = "win_out" })
  return j
end

local function tmpdir()
  local p = os.tmpname()
  os.remove(p)
  assert(core.mkdir_p(p))
  return p
end

local function rm_rf(p)
  os.execute("rm -rf '" .. p .. "'")
end

local function read_all(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

-- A driver that has run a batch, and the metadata the runner would write.
local function running()
  local d = testing.driver(job)
  d:push("in", { "a", "bb", "a" })
  d:tick()
  return d
end

local function meta_of(d)
  return checkpoint.meta(d.job, d.plan, d.batches, d:time(), {}, {}, nil)
end

-- Waits, on the writer's own poll, for a forked checkpoint to finish.
local function settle(w)
  local deadline = core.clock_ms() + 20000
  while not w:poll() do
    assert(core.clock_ms() < deadline, "the forked checkpoint writer did not finish in 20 s")
  end
end

describe("checkpoint writer faults", function()
  local base, dir, away, logs, writer, written

  before_each(function()
    base = tmpdir()
    dir = base .. "/ckpt"
    away = base .. "/ckpt.away"
    logs = {}
    written = {}
    local err
    writer, err = checkpoint.writer({ dir = dir, every_ms = 1000, keep = 2 }, function(fmt, ...)
      logs[#logs + 1] = fmt:format(...)
    end)
    assert.is_truthy(writer, err)
    writer.on_written = function(b) written[#written + 1] = b end
  end)

  after_each(function()
    if writer then writer:wait() end
    rm_rf(base)
  end)

  -- The directory turns into a regular file: opening the temp file in it
  -- fails with ENOTDIR. The checkpoints so far are kept aside.
  local function break_dir()
    assert(os.rename(dir, away))
    local f = assert(io.open(dir, "w"))
    f:write("not a directory")
    f:close()
  end

  local function fix_dir()
    assert(os.remove(dir))
    assert(os.rename(away, dir))
  end

  local function tmp_of(batch)
    return dir .. "/" .. checkpoint.file_name(batch) .. ".tmp"
  end

  local function failed_line(batch, n, reason)
    return ("checkpoint after batch %d failed: open %s: %s (%d in a row%s)"):format(batch, tmp_of(batch), reason, n,
      n >= 3 and "; sources wait until one succeeds" or ", retried next batch")
  end

  it("here and now: failures are logged with the operation and reason, counted, and block after three", function()
    local d = running()
    writer:write(d.batches, meta_of(d), d.plan, true)
    assert.same({}, logs)
    assert.same({ 1 }, written)
    local first = dir .. "/" .. checkpoint.file_name(1)
    local before = assert(read_all(first))

    break_dir()
    for n = 1, 3 do
      -- Processing goes on between attempts.
      d:push("in", { "c" .. n })
      d:tick()
      assert.is_false(writer:blocked())
      writer:write(d.batches, meta_of(d), d.plan, true)
      assert.equal(n, writer.failures)
      assert.equal(failed_line(d.batches, n, "Not a directory"), logs[#logs])
      assert.is_true(writer:due(d:time() + 1, 0), "a failed checkpoint is due again at once")
    end
    assert.equal(3, #logs)
    assert.is_true(writer:blocked())
    assert.same({ 1 }, written)

    fix_dir()
    -- Nothing of the failed attempts was left behind, the first is as it was.
    assert.equal(before, read_all(first))
    for b = 2, 4 do assert.is_false(exists(tmp_of(b))) end
    d:tick()
    writer:write(d.batches, meta_of(d), d.plan, true)
    assert.equal(0, writer.failures)
    assert.is_false(writer:blocked())
    assert.equal("checkpoint after batch 5 written; 3 failures before it", logs[#logs])
    assert.same({ 1, 5 }, written)
    assert.equal(5, writer.last_batch)
    -- The checkpoint written holds the state as it stands now.
    local found, faults = checkpoint.latest(dir)
    assert.same({}, faults)
    assert.equal(dir .. "/" .. checkpoint.file_name(5), found.path)
    assert.equal(5, found.meta.batch)
    local r = testing.restore(found.path, { job = job })
    assert.same(d:state("totals"), r:state("totals"))
    assert.same({ a = 2, bb = 1, c1 = 1, c2 = 1, c3 = 1 }, r:state("totals"))
    -- keep = 2: both checkpoints stay; the next success prunes the first.
    assert.is_true(exists(first))
    d:tick()
    writer:write(d.batches, meta_of(d), d.plan, true)
    assert.is_false(exists(first))
    assert.same({ checkpoint.file_name(5), checkpoint.file_name(6) }, core.ckpt.list(dir))
  end)

  it("here and now: a directory removed under the writer is reported with ENOENT", function()
    local d = running()
    rm_rf(dir)
    writer:write(d.batches, meta_of(d), d.plan, true)
    assert.equal(1, writer.failures)
    assert.equal(failed_line(1, 1, "No such file or directory"), logs[1])
    assert(core.mkdir_p(dir))
    writer:write(d.batches, meta_of(d), d.plan, true)
    assert.equal(0, writer.failures)
    assert.same({ 1 }, written)
  end)

  it("forked: the child's failure comes back through poll and wait", function()
    local d = running()
    break_dir()
    -- Through poll, as the runner does between batches.
    writer:write(d.batches, meta_of(d), d.plan, false)
    assert.is_table(writer.flight)
    settle(writer)
    assert.is_nil(writer.flight)
    assert.equal(1, writer.failures)
    assert.equal(failed_line(1, 1, "Not a directory"), logs[1])
    -- Through wait, as the runner does at the end.
    d:tick()
    writer:write(d.batches, meta_of(d), d.plan, false)
    writer:wait()
    assert.is_nil(writer.flight)
    assert.equal(2, writer.failures)
    assert.equal(failed_line(2, 2, "Not a directory"), logs[2])
    assert.is_false(writer:blocked())
    -- A write here and now first finishes the one in flight: both count.
    d:tick()
    writer:write(d.batches, meta_of(d), d.plan, false)
    d:tick()
    writer:write(d.batches, meta_of(d), d.plan, true)
    assert.equal(4, writer.failures)
    assert.equal(failed_line(3, 3, "Not a directory"), logs[3])
    assert.equal(failed_line(4, 4, "Not a directory"), logs[4])
    assert.is_true(writer:blocked())
    assert.same({}, written)

    fix_dir()
    assert.same({}, core.ckpt.list(dir))
    d:tick()
    writer:write(d.batches, meta_of(d), d.plan, false)
    settle(writer)
    assert.equal(0, writer.failures)
    assert.is_false(writer:blocked())
    assert.equal("checkpoint after batch 5 written; 4 failures before it", logs[#logs])
    assert.same({ 5 }, written)
    assert.same({ checkpoint.file_name(5) }, core.ckpt.list(dir))
    local found = checkpoint.latest(dir)
    assert.equal(5, found.meta.batch)
    for b = 1, 4 do assert.is_false(exists(tmp_of(b))) end
  end)

  it("forked: three failures in a row block, and a later success unblocks", function()
    local d = running()
    break_dir()
    for n = 1, 3 do
      writer:write(d.batches, meta_of(d), d.plan, false)
      settle(writer)
      assert.equal(n, writer.failures)
      d:tick()
    end
    assert.is_true(writer:blocked())
    assert.equal(failed_line(3, 3, "Not a directory"), logs[3])
    fix_dir()
    writer:write(d.batches, meta_of(d), d.plan, false)
    writer:wait()
    assert.is_false(writer:blocked())
    assert.same({ 4 }, written)
  end)

  -- Sources wait while checkpoints keep failing, and the job goes on once
  -- one succeeds.
  it("a running job goes on after the checkpoint that unblocks it", function()
    local runner = require "streamrun.runner"
    local seen = {}
    local function batches_job()
      local j = sr.job { name = "blocked", batch = "10ms", checkpoint = { dir = dir, every = "10ms", keep = 2 } }
      local input = {}
      for i = 1, 8 do input[i] = { "r" .. i } end
      j:queue(input, { name = "q" }):foreach_batch(function(rdd, t) seen[#seen + 1] = t end, { name = "out" })
      return j
    end
    -- The first three checkpoints go to a directory that does not exist.
    local ckpt = core.ckpt
    local real_start, real_write = ckpt.start, ckpt.write
    local calls = 0
    local function nowhere(real)
      return function(d, ...)
        calls = calls + 1
        return real(calls <= 3 and base .. "/nowhere" or d, ...)
      end
    end
    ckpt.start, ckpt.write = nowhere(real_start), nowhere(real_write)
    local ok, rc = pcall(runner.main, { command = "run", job = batches_job, quiet = true })
    ckpt.start, ckpt.write = real_start, real_write
    assert.is_true(ok, rc)
    assert.equal(0, rc)
    assert.is_true(calls > 3, "the checkpoints failed three times, then were written")
    assert.equal(8, #seen, ("batches run: %d of 8"):format(#seen))
  end)

  -- Out of descriptors, the forked writer cannot get its pipe: a failed
  -- checkpoint like any other, retried, never an error of the job.
  it("a checkpoint that cannot get a pipe fails and is retried", function()
    local libc = require "helpers.libc"
    local d = running()
    libc.without_descriptors(function() writer:write(d.batches, meta_of(d), d.plan, false) end)
    assert.equal(1, writer.failures)
    assert.equal(("checkpoint after batch %d failed: pipe: Too many open files (1 in a row, retried next batch)")
      :format(d.batches), logs[#logs])
    writer:write(d.batches, meta_of(d), d.plan, false)
    settle(writer)
    assert.equal(0, writer.failures)
    assert.same({ d.batches }, written)
  end)
end)
