-- streamrun.session: one running job. Owns its sources and where they
-- stand (C sources on the event loop, generators and queues here), the
-- compiled plan and its state, the restore from a checkpoint (outputs cut
-- back, the write-ahead log replayed), one batch's run (inputs -> stages ->
-- outputs held while they fail -> stats), the checkpoint cadence, the hold
-- policy, and the export/import of itself across a reload. A clock drives
-- it: the binary's real one (streamrun.runner, batches sealed by the C
-- loop) or the test driver's virtual one (streamrun.testing, a loop-less
-- session fed by pushes), so both run this same code.
local core = require "streamrun.core"
local checkpoint = require "streamrun.checkpoint"
local compile = require "streamrun.compile"
local eventtime = require "streamrun.eventtime"
local exchange = require "streamrun.exchange"
local outputs = require "streamrun.outputs"
local recovery = require "streamrun.recovery"
local reload = require "streamrun.reload"
local sources = require "streamrun.sources"
local stateful = require "streamrun.stateful"
local watchdog = require "streamrun.watchdog"
local workers = require "streamrun.workers"

local C, ffi = core.C, core.ffi
local handoff = core.handoff

local M = {}

local Session = {}
Session.__index = Session

local function stderr_log(fmt, ...)
  io.stderr:write("streamrun: ", fmt:format(...), "\n")
end

-- -- Sources --

-- What a C source reads, to tell whether a reload changed it.
function M.source_signature(node)
  return table.concat({ node.c_kind or node.op, node.host or "", tostring(node.port or ""), node.path or "",
                        node.format, tostring(node.max_line), tostring(node.from_start or false),
                        tostring(node.max_connections or ""), node.signature or "" }, "|")
end

-- Starts node's C source on loop at position pos; sets node.c_index.
-- Returns true, or nil and why.
function M.add_c_source(loop, node, pos)
  local err = ffi.new("char[512]")
  local o = ffi.new("sr_source_opts_t")
  o.kind, o.name = node.c_kind, node.stage_name
  o.host, o.port = node.host, node.port or 0
  o.path, o.max_line = node.path, node.max_line
  o.from_start = node.from_start and 1 or 0
  -- A file that is its job's only source, on two or more workers: a thread
  -- cuts the next batch while the workers process one (the same batches).
  -- Beside another source it would hand over whole batches as its thread
  -- finishes them, where the loop thread shares a batch between sources in
  -- fixed reads, so the batches would depend on timing.
  o.read_ahead = (node.c_kind == "text_file" and #node.job.sources == 1
                  and require("streamrun.workers").count(node.job) > 1) and 1 or 0
  o.max_connections = node.max_connections or 0
  -- A position applies to a source of the same kind (a text_dir's, to the
  -- same directory).
  if (pos.kind and pos.kind ~= node.op) or (pos.path and pos.path ~= node.path) then pos = {} end
  o.start_offset, o.start_inode = pos.offset or 0, pos.inode or 0
  local done = pos.done or {}
  local done_files = ffi.new("const char *[?]", #done + 1) -- `done` keeps the strings
  for i, name in ipairs(done) do done_files[i - 1] = name end
  o.start_file, o.done_files, o.ndone = pos.file, done_files, #done
  local kv_keep -- the kind's own settings (kafka), alive until the source has started
  if node.c_hooks then o.kv, o.nkv, kv_keep = node.c_hooks.kv(node, pos) end
  local idx = C.sr_loop_add_source(loop, o, err, 512)
  kv_keep = nil
  if idx < 0 then
    return nil, ("%s: source %s: %s"):format(node.where, node.stage_name, ffi.string(err))
  end
  node.c_index = idx
  return true
end

-- A Lua-side source's state, resumed at pos (of a source of the same kind).
local function lua_source_state(node, pos)
  if pos.kind and pos.kind ~= node.op then pos = {} end
  if node.op == "generator" then
    local st = sources.generator_state(node)
    if pos.next_i then st.next_i, st.carry, st.done = pos.next_i, pos.carry, pos.done end
    return st
  end
  local st = sources.queue_state(node)
  if pos.next then st.next, st.done = pos.next, pos.done end
  return st
end

-- Starts the job's sources. positions: name -> position to resume at;
-- running: name -> {index, signature} of C sources already running (a
-- reload keeps those that did not change). Without a loop, C sources are
-- the clock's to feed.
function Session:start_sources(positions, running)
  self.lua_sources, self.n_c = {}, 0
  local keep = {}
  for _, node in ipairs(self.job.sources) do
    local pos = positions[node.stage_name] or {}
    if node.c_kind then
      local r = running and running[node.stage_name]
      if not self.loop then -- luacheck: ignore 542
      elseif r and r.signature == M.source_signature(node) then
        node.c_index = r.index
        keep[r.index] = true
      else
        local ok, err = M.add_c_source(self.loop, node, pos)
        if not ok then return nil, err end
      end
      self.n_c = self.n_c + 1
    elseif node.op == "queue" or self.generators then
      self.lua_sources[node] = lua_source_state(node, pos)
    end
  end
  for _, r in pairs(running or {}) do
    if not keep[r.index] then C.sr_loop_remove_source(self.loop, r.index) end
  end
  return true
end

-- Whether a Lua-side source still produces. (Per batch, so over the job's
-- source array: this LuaJIT can cut hot pairs() loops short.)
function Session:lua_active()
  local list = self.job.sources
  for i = 1, #list do
    local st = self.lua_sources[list[i]]
    if st and not st.done then return true end
  end
  return false
end

-- A text_dir's file taken up last and the names of those it is done with.
local function dir_files(src, pos)
  local done = {}
  while true do
    local name = C.sr_source_done_file(src, #done)
    if name == nil then break end
    done[#done + 1] = ffi.string(name)
  end
  return pos.file ~= nil and ffi.string(pos.file) or nil, done
end

-- Where every source stands after the batch just run, for a checkpoint
-- (the clock's feed adds what it keeps, e.g. the driver's pushes).
function Session:positions()
  local positions = {}
  local pos = ffi.new("sr_source_pos_t")
  for _, node in ipairs(self.job.sources) do
    local name = node.stage_name
    local p
    if node.c_index and self.loop then
      local src = C.sr_loop_source(self.loop, node.c_index)
      if node.c_hooks then
        p = node.c_hooks.position(node, src)
      elseif C.sr_source_position(src, pos) == 0 then
        p = { kind = node.op, offset = tonumber(pos.offset), inode = tonumber(pos.inode) }
        if sources.traits(node).file_list then p.path, p.file, p.done = node.path, dir_files(src, pos) end
      end
    else
      local st = self.lua_sources[node] or {}
      p = { kind = node.op, next = st.next, next_i = st.next_i, carry = st.carry, done = st.done }
    end
    if self.feed and self.feed.position then p = p or { kind = node.op }; self.feed.position(node, p) end
    positions[name] = p
  end
  return positions
end

-- A generator's elements for the batch at time_ms (its function watched
-- like a stage's).
function Session:generate(node, time_ms)
  return watchdog.source(time_ms, node.stage_name, sources.generate, node, self.lua_sources[node], self.job.batch_ms,
    self.report)
end

-- Each source's batch for the batch at time_ms: C sources' sealed batches
-- (after sr_loop_next), Lua sources' own, plus what the clock feeds.
-- Returns inputs by node and the number of records.
function Session:inputs(time_ms)
  local inputs, records = {}, 0
  local loop, feed = self.loop, self.feed
  for _, node in ipairs(self.job.sources) do
    local b
    if node.c_index and loop then
      local cb = C.sr_loop_batch(loop, node.c_index)
      records = records + tonumber(cb.n)
      if self.plan.raw_sources[node] then
        b = sources.raw_c_batch(node, cb) -- its records read where they are
      else
        b = sources.read_c_batch(node, cb, self.dead)
      end
    elseif self.lua_sources[node] then
      if node.op == "generator" then
        b = self:generate(node, time_ms)
      else
        b = sources.dequeue(node, self.lua_sources[node], self.dead)
      end
      records = records + b.n
    end
    if feed then
      local before = b and b.n or 0
      b = feed.take(node, b)
      records = records + b.n - before
    end
    inputs[node] = b
  end
  return inputs, records
end

-- -- The plan --

-- Compiles the job's plan, with states/windows to continue from.
function Session:compile(states, windows)
  if self.watch then
    -- User code that runs too long is stopped; so is a job told to stop.
    local wok, werr = watchdog.start(self.job, not self.no_restart and self.settings and self.settings.dir or nil,
      self.no_restart)
    if not wok then self.log("%s", werr) end
  end
  local sink = { progress = self.settings and self.progress or nil }
  for k, v in pairs(self.sink) do sink[k] = v end
  sink.stdout = sink.stdout or outputs.stdout
  if not self.workers then
    self.workers = workers.open(self.job, self.log, not self.split_always)
    -- (Busy time before a reload: /metrics' counters go on.)
    workers.add_before(self.workers, self.worker_busy_before)
  end
  self.plan = compile.compile(self.job, {
    workers = self.workers,
    on_error = self.job.on_error,
    dead_letter = function(source, offset, reason, record) self.dead(source, offset, reason, record) end,
    sink = sink,
    states = states,
    windows = windows,
    event = self.event,
  })
  workers.note_plan(self.workers, self.plan, self.job)
end

-- -- Checkpoints and the write-ahead log --

function Session:new_writer()
  if not self.settings then return true end
  local w, err = checkpoint.writer(self.settings, self.log)
  if not w then
    self.log("checkpoint directory %s: %s", self.settings.dir, err)
    return nil
  end
  -- The log goes back to the oldest checkpoint kept, not the newest: a
  -- restart that falls back to any kept one (the newer ones corrupt) replays
  -- every batch after it. Until this process has written `keep` of them,
  -- the oldest kept may be an earlier run's: nothing goes.
  w.on_written = function(b)
    self:commit_positions(b)
    local kept, keep = self.kept, self.settings.keep
    -- (A reload writes the batch just checkpointed again, into the same
    -- file: one checkpoint kept, not two.)
    if kept[#kept] ~= b then kept[#kept + 1] = b end
    while #kept > keep do table.remove(kept, 1) end
    if #kept < keep then return end
    local oldest = kept[1]
    if self.segment_after[oldest] then C.sr_loop_wal_drop_before(self.loop, self.segment_after[oldest]) end
    for batch in pairs(self.segment_after) do
      if batch < oldest then self.segment_after[batch] = nil end
    end
  end
  self.writer = w
  return true
end

-- A checkpoint after batch b is written: sources that keep their place
-- elsewhere too (Kafka's group offsets) are told the positions it holds.
function Session:commit_positions(b)
  local taken = self.taken[b]
  for batch in pairs(self.taken) do
    if batch <= b then self.taken[batch] = nil end
  end
  if taken and self.feed and self.feed.written then self.feed.written(taken) end -- a Kafka task's
  if not taken or not self.loop then return end
  for _, node in ipairs(self.job.sources) do
    if node.c_hooks and node.c_index and taken[node.stage_name] then
      node.c_hooks.commit(node, C.sr_loop_source(self.loop, node.c_index), taken[node.stage_name])
    end
  end
end

-- Where the dead-letter file ends, for a checkpoint's metadata: { bytes,
-- ino, tail } (its inode and a hash of its last bytes, as decimal strings:
-- msgpack numbers are doubles here), or nil (stderr, or a file the session
-- does not own).
function Session:dead_letter_mark()
  if not (self.loop and self.owns_dead) then return nil end
  local bytes, ino, tail = ffi.new("int64_t[1]"), ffi.new("uint64_t[1]"), ffi.new("uint64_t[1]")
  if C.sr_deadletter_mark(C.sr_loop_deadletter(self.loop), bytes, ino, tail) ~= 0 then return nil end
  local function decimal(u) return (tostring(u):gsub("ULL$", "")) end
  return { bytes = tonumber(bytes[0]), ino = decimal(ino[0]), tail = decimal(tail[0]) }
end

-- A uint64_t from its decimal string, or nil.
local function u64(s)
  if type(s) ~= "string" or not s:match("^%d+$") then return nil end
  local v = 0ULL
  for d in s:gmatch("%d") do v = v * 10 + tonumber(d) end
  return v
end

-- Recovery from the checkpoint of meta: a batch run again letters its
-- records again, so the dead letters written after the checkpoint are cut
-- away when the sources re-read their input (no write-ahead log), or are
-- expected from the batches the log replays (each then written once),
-- until the replay is over (C.sr_deadletter_expect_end).
function Session:resume_dead_letters(meta)
  local mark = meta.dead_letters
  if not (self.loop and self.owns_dead and type(mark) == "table" and type(mark.bytes) == "number") then return end
  local ino, tail = u64(mark.ino), u64(mark.tail)
  if not (ino and tail) then return end
  local dl = C.sr_loop_deadletter(self.loop)
  local rc
  if self.wal_dir then
    rc = C.sr_deadletter_expect(dl, mark.bytes, ino, tail)
  else
    rc = C.sr_deadletter_cut_back(dl, mark.bytes, ino, tail)
  end
  if rc < 0 then
    self.log("dead letters: cannot take back the ones written after the checkpoint: %s",
      ffi.string(C.sr_strerror(tonumber(rc))))
  end
end

-- The metadata of a checkpoint after batch `batch` at time_ms.
function Session:checkpoint_meta(batch, time_ms)
  local m = checkpoint.meta(self.job, self.plan, batch, time_ms, self:positions(), self.progress, self.params)
  m.dead_letters = self:dead_letter_mark()
  return m
end

function Session:checkpoint_now(time_ms, sync, input_ended)
  local m = self:checkpoint_meta(self.nbatches, time_ms)
  self.taken[self.nbatches] = m.sources
  m.finished = input_ended or nil
  if self.wal_dir then self.segment_after[self.nbatches] = tonumber(C.sr_loop_wal_rotate(self.loop)) end
  self.writer:write(self.nbatches, m, self.plan, sync)
end

-- After the batch at time_ms: a checkpoint when due (always, and written
-- here, when the job finishes).
function Session:checkpoint_after(time_ms, finished, input_ended)
  local w = self.writer
  if not w then return end
  if finished then
    self:checkpoint_now(time_ms, true, input_ended)
  elseif w:due(time_ms, self.plan.zero_ms) then
    self:checkpoint_now(time_ms, false)
  else
    w:poll()
  end
end

-- Where outputs start, so that a checkpoint always records them.
function Session:record_output_starts()
  if not self.settings then return end
  for _, node in ipairs(self.job.outputs) do
    if node.op == "to_json_lines" and node.path ~= "-" and not self.progress[node.stage_name] then
      local f = io.open(node.path, "rb")
      self.progress[node.stage_name] = { path = node.path, bytes = f and f:seek("end") or 0 }
      if f then f:close() end
    end
  end
end

-- Whether a checkpoint's output progress out, recorded under name, is of
-- a file this job writes: its to_json_lines stage of that name and path.
local function own_output(job, name, out)
  local node = type(name) == "string" and job.by_name[name]
  return node and node.op == "to_json_lines" and node.path ~= "-" and type(out) == "table"
    and out.path == node.path and type(out.bytes) == "number" and out.bytes >= 0 and out.bytes % 1 == 0
end

-- Cuts an output back to the bytes its checkpoint recorded.
function Session:cut_back(name, out)
  local f = io.open(out.path, "rb")
  local size = f and f:seek("end") or 0
  if f then f:close() end
  if size < out.bytes then
    self.log("output %s: %s has %d bytes, fewer than the %d the checkpoint recorded", name, out.path, size, out.bytes)
  elseif size > out.bytes then
    local tok, terr = core.truncate(out.path, out.bytes)
    if not tok then self.log("output %s: cannot cut %s back to %d bytes: %s", name, out.path, out.bytes, terr) end
  end
end

-- -- The hold policy --

-- Ends the job: waits for a checkpoint in flight; returns nil and code.
-- A session opened with raises (the test driver's) raises the message
-- instead.
function Session:stop(code, fmt, ...)
  if self.raises then error(fmt:format(...), 0) end
  self.log(fmt, ...)
  if self.writer then self.writer:wait() end
  return nil, code
end

-- Holds the job while an output of the batch just run fails to write:
-- sources read nothing and the output is retried every batch interval, as
-- a failing checkpoint is; no checkpoint is taken meanwhile, since it would
-- cover a batch whose output is not written. Returns true once every output
-- is written, or nil and the exit code when the job must end (standard
-- output closed, on_error = "fail", or a stop signal while failing).
function Session:hold_outputs()
  local failing = self.plan.failing_outputs()
  if #failing == 0 then return true end
  if self.raises then
    self:stop(1, "batch %d ms: output %s: %s", self.last_time, failing[1].node.stage_name, failing[1].error)
  end
  local log = self.log
  local function report(how)
    for _, f in ipairs(failing) do log("output %s: %s%s", f.node.stage_name, f.error, how) end
  end
  local retries = 0
  while true do
    for _, f in ipairs(failing) do
      if f.permanent then
        report("")
        return self:stop(1, "stopping: output %s cannot be written any more; the batch at %d ms is not written",
          f.node.stage_name, self.last_time)
      end
    end
    if self.job.on_error == "fail" then
      report("")
      return self:stop(1, "stopping: on_error = \"fail\"")
    end
    if retries == 0 then report("; sources wait, retried every batch interval") end
    if C.sr_loop_wait(self.loop, self.job.batch_ms) ~= 0 then
      report(("; %d retries"):format(retries))
      return self:stop(1,
        "stopping: an output is still failing; nothing was read meanwhile, the batch at %d ms is in no checkpoint",
        self.last_time)
    end
    retries = retries + 1
    if self.plan.retry_outputs() == 0 then
      log("outputs written again after %d retries; sources go on", retries)
      return true
    end
  end
end

-- Notes that a write to the log failed (the loop then closed the batch in
-- progress): batch is the first a checkpoint must cover.
function Session:note_log_failure(batch)
  if not self.wal_dir or self.log_lost or C.sr_loop_wal_failed(self.loop) == 0 then return end
  self.log_lost = batch
  self.log("write-ahead log failing in batch %d: sources wait until a checkpoint covers what was read", batch)
end

-- Whether sources hold because a write to the log failed: until the log
-- takes writes again and a checkpoint after the failing batch is written.
function Session:log_holds()
  if not self.last_time then return false end
  self:note_log_failure(self.nbatches)
  if self.wal_dir and C.sr_loop_wal_failed(self.loop) ~= 0 then return true end
  local w = self.writer
  if self.log_lost and w.failures == 0 and (w.last_batch or -1) >= self.log_lost then
    self.log("write-ahead log written again; the checkpoint after batch %d covers what was read; sources go on",
      w.last_batch)
    self.log_lost = nil
  end
  return self.log_lost ~= nil
end

-- Before a batch: nothing is read while checkpoints keep failing, or while
-- what was read since a write to the log failed is in no checkpoint yet
-- (a checkpoint is retried every batch interval). Returns true to go on,
-- or nil and the exit code.
function Session:wait_while_held()
  while self.writer and (self.writer:blocked() or self:log_holds()) do
    if C.sr_loop_wait(self.loop, self.job.batch_ms) ~= 0 then
      return self:stop(1, "stopping: %s still failing; nothing was read meanwhile",
        self.log_lost and "the write-ahead log" or "checkpoints")
    end
    self:checkpoint_now(self.last_time, true)
  end
  return true
end

-- -- Batches --

-- Runs the stages over inputs as the batch at time_ms, then holds while an
-- output fails. what names the batch in a fatal error's message. Returns
-- true, or nil and the exit code.
function Session:run_inputs(inputs, time_ms, what, final)
  local ok, perr = pcall(self.plan.run, inputs, time_ms, final)
  if self.loop then C.sr_loop_release(self.loop) end
  if not ok then
    if type(perr) == "table" and perr.fatal then
      if what == "replaying batch" then return self:stop(1, "%s %d ms: %s", what, time_ms, perr.fatal) end
      if self.raises then self:stop(1, "batch %d ms: %s", time_ms, perr.fatal) end
      self.log("batch %d ms: %s", time_ms, perr.fatal)
      return self:stop(1, "stopping: on_error = \"fail\"")
    end
    error(perr, 0)
  end
  self.nbatches = self.nbatches + 1
  self.last_time, self.time_ms = time_ms, time_ms
  return self:hold_outputs()
end

-- Runs the batch at time_ms over what the sources have for it. Returns the
-- number of records read, or nil and the exit code.
function Session:run_batch(time_ms)
  self:note_log_failure(self.nbatches + 1)
  local inputs, records = self:inputs(time_ms)
  if self.monitor then self.monitor:inputs(self, inputs) end
  if self.pending then
    recovery.add_pending(self.job, inputs, self.pending, self.dead)
    self.pending = nil
  end
  -- The batch that ends bounded input runs with the final watermark (the
  -- test driver's finish() says so itself).
  local final = self.ending or (self.loop ~= nil and self:input_ended(true))
  local ok, code = self:run_inputs(inputs, time_ms, "batch", final)
  if not ok then return nil, code end
  self.total_records = self.total_records + records
  return records
end

local function stats_line(s)
  return ('{"batch": %d, "time_ms": %d, "records": %d, "processing_ms": %.3f, "scheduling_delay_ms": %d, "state_keys": %d, "dead_letters": %d, "workers_busy_ms": %s}\n')
    :format(s.batch, s.time_ms, s.records, s.processing_ms, s.scheduling_delay_ms, s.state_keys, s.dead_letters,
      workers.json(s.workers_busy_ms))
end

-- The status line and --stats line of the batch just run.
function Session:report_batch(records, processing_ms, delay_ms)
  local s = {
    batch = self.nbatches, time_ms = self.last_time, records = records,
    processing_ms = processing_ms, scheduling_delay_ms = delay_ms,
    state_keys = self.plan.state_keys(), dead_letters = tonumber(C.sr_loop_dead_letters(self.loop)) - self.dead_before,
    workers_busy_ms = workers.batch_busy(self.workers, processing_ms),
  }
  self.dead_before = self.dead_before + s.dead_letters
  if not self.quiet then
    self.log("batch %d ms: %d records, %.1f ms processing, %d ms delay, %d keys, %d dead letters, workers busy %s ms",
      s.time_ms, s.records, s.processing_ms, s.scheduling_delay_ms, s.state_keys, s.dead_letters,
      workers.describe(s.workers_busy_ms))
  end
  if self.stats_fh then
    self.stats_fh:write(stats_line(s))
    self.stats_fh:flush()
  end
  if self.monitor then self.monitor:batch(self, s) end
end

-- Whether every source is done: the loop's (on its last tick) and, with no
-- C source, the Lua-side ones.
function Session:input_ended(last_tick)
  return (last_tick and C.sr_loop_all_done(self.loop) ~= 0)
    or (self.n_c == 0 and next(self.lua_sources) ~= nil and not self:lua_active())
end

-- The job ends: the last checkpoint written, the totals said.
function Session:finish()
  if self.stats_fh then self.stats_fh:close() end
  if self.writer then self.writer:wait() end
  exchange.close(self.plan)
  if not self.quiet then
    self.log("finished: %d batches, %d records, %d dead letters", self.nbatches - self.batches_base, self.total_records,
      tonumber(C.sr_loop_dead_letters(self.loop)))
  end
end

-- -- Opening --

-- A session of job, not started. o: settings (checkpoint settings or nil),
-- params, loop (a C loop, owned from now on; nil: a loop-less session
-- whose clock feeds every source), feed ({ take(node, batch or nil) ->
-- batch, position(node, p) } or nil), dead(source, offset, reason, record)
-- (default: the loop's dead-letter file), sink (outputs' sink fields, e.g.
-- capture), generators (false: generators produce nothing), watch (start
-- the watchdog), no_restart (why a record stuck where no hook runs ends
-- the process rather than restarting it), raises (errors that end the job
-- are raised, not logged: the test driver), split_always (every batch of
-- a keyed segment splits across the workers, however small: the test
-- driver's default, streamrun.splitcost), quiet, stats_fh, log(fmt, ...).
local function new(job, o)
  local S = setmetatable({
    job = job, settings = o.settings, params = o.params, loop = o.loop, feed = o.feed, sink = o.sink or {},
    generators = o.generators ~= false, watch = o.watch, no_restart = o.no_restart, raises = o.raises, quiet = o.quiet,
    stats_fh = o.stats_fh, log = o.log or stderr_log, split_always = o.split_always,
    nbatches = 0, batches_base = 0, total_records = 0, dead_before = 0, reload_failures = 0,
    progress = {}, segment_after = {}, kept = {}, taken = {}, started = core.clock_ms(),
    event = eventtime.new_data(), -- the watermark's data (streamrun.eventtime)
  }, Session)
  -- (Without o.dead the session owns the loop's dead-letter file: its
  -- checkpoints mark where it ends.)
  S.owns_dead = not o.dead
  S.dead = o.dead or function(source, offset, reason, record, partition)
    C.sr_loop_dead_letter(S.loop, source, partition or -1, offset or -1, reason, record, #record)
  end
  function S.report(node, e, i)
    S.dead(node.stage_name, i, ("stage %s: %s"):format(node.stage_name, tostring(e)), tostring(i))
  end
  S.wal_dir = S.loop and S.settings and recovery.needs_log(job) and (S.settings.dir .. "/wal") or nil
  return S
end

-- Locks settings.dir, then finds its newest valid checkpoint, reporting the
-- ones that are not valid. Returns the checkpoint or false (none yet), or
-- nil when the directory is another process's or there are checkpoints but
-- none is valid.
function M.find_checkpoint(settings, log)
  log = log or stderr_log
  local ok, err = core.mkdir_p(settings.dir)
  if not ok then
    log("checkpoint directory %s: %s", settings.dir, err)
    return nil
  end
  -- The lock is the process's for the rest of its life (a reload keeps it).
  local holder, lerr = ffi.new("long[1]"), ffi.new("char[512]")
  if C.sr_lock_acquire(settings.dir, holder, lerr, 512) ~= 0 then
    if holder[0] > 0 then
      log("checkpoint directory %s is in use by another streamrun process (pid %d): one process per directory",
        settings.dir, tonumber(holder[0]))
    else
      log("checkpoint directory %s: %s", settings.dir, ffi.string(lerr))
    end
    return nil
  end
  local found, faults = checkpoint.latest(settings.dir)
  for _, f in ipairs(faults) do
    log("checkpoint %s is not valid: %s%s", f.path, f.reason, found and "; using an older one" or "")
  end
  if not found and #faults > 0 then
    log("no valid checkpoint in %s: not starting from empty state (move the directory away to start afresh)",
      settings.dir)
    return nil
  end
  return found or false
end

-- Cuts the outputs back to what the checkpoint's metadata recorded
-- (never lengthened: a file shorter than recorded is reported). Only files
-- this job writes: the metadata names them, it does not decide.
function Session:restore_outputs(found)
  local outs = found.meta.outputs
  for name, out in pairs(type(outs) == "table" and outs or {}) do
    if own_output(self.job, name, out) then
      self:cut_back(name, out)
      self.progress[name] = out
    else
      self.log("%s records output %s (%s), which is not an output of this job: left alone", found.path,
        tostring(name), type(out) == "table" and tostring(out.path) or "?")
    end
  end
end

-- Runs again the batches the log holds after the checkpoint, as they were.
function Session:replay(logged)
  if #logged.batches == 0 then return true end
  local job = self.job
  for _, b in ipairs(logged.batches) do
    local function next_lua(node)
      if not self.lua_sources[node] then return nil end
      if node.op == "generator" then return self:generate(node, b.time_ms) end
      return sources.dequeue(node, self.lua_sources[node], self.dead)
    end
    self.plan.zero_ms = self.plan.zero_ms or (b.time_ms - job.batch_ms)
    local ok, code = self:run_inputs(recovery.inputs(job, b, self.dead, next_lua), b.time_ms, "replaying batch")
    if not ok then return nil, code end
  end
  C.sr_loop_set_next_time(self.loop, self.last_time + job.batch_ms)
  self.log("replayed %d logged batches, up to %d ms", #logged.batches, self.last_time)
  return true
end

-- The state of checkpoint found, by the rules of streamrun.reload (S.adopted
-- is the log line). Returns states and windows, or nil and the exit code
-- (another job's checkpoint, state this script cannot keep, or with
-- o.finished_ends a job that finished).
function Session:adopt(found, o)
  local meta, job = found.meta, self.job
  local states, windows, how = checkpoint.adopt(found, job)
  if not states then return self:stop(how, "%s", windows) end
  self.adopted = how
  if o.make_loop and meta.script_hash ~= core.file_hash(job.path) then
    self.log("%s was taken with another version of the script: %s", found.path, how)
  end
  if meta.finished and o.finished_ends then
    self.log("job %s already finished: %s holds its last batch (%d); nothing to do", job.name, found.path, meta.batch)
    reload.carry({ keep = {} }, states, windows)
    return nil, 0
  end
  return states, windows
end

-- Opens a session of job (options as for new), resumed from o.restored (a
-- checkpoint found, or nil): its state adopted by the rules of
-- streamrun.reload, sources at their positions, outputs cut back, the
-- write-ahead log replayed; a first checkpoint when there was none.
-- o.finished_ends: a finished checkpoint ends the job (the binary);
-- o.make_loop() gives the C loop once the checkpoint is taken (nil: could
-- not, said why).
-- Returns the session, or nil and the exit code.
function M.open(job, o)
  local S = new(job, o)
  local found = o.restored
  local meta = found and found.meta or {}
  local states, windows
  if found then
    states, windows = S:adopt(found, o)
    -- (A checkpoint adopted, or of a job that finished: its directory's.)
    if S.settings and meta.time_ms and (states or windows == 0) then
      local pok, perr = watchdog.prune(S.settings.dir, meta.time_ms)
      if not pok then S.log("%s/poison: cannot drop the records before the checkpoint: %s", S.settings.dir, perr) end
    end
    if not states then return nil, windows end
    -- The checkpoint of the job's start (before any batch) holds empty
    -- state: the stages start afresh, so opts.initial seeds them at the
    -- first batch, as it would have.
    if meta.initial then states, windows = nil, nil end
  end
  if o.make_loop then
    S.loop = o.make_loop()
    if not S.loop then return nil, 1 end
    S.wal_dir = S.settings and recovery.needs_log(job) and (S.settings.dir .. "/wal") or nil
  end
  if found then S:resume_dead_letters(meta) end
  -- The log after the checkpoint decides where sources resume.
  local logged = S.wal_dir and recovery.read(S.wal_dir, meta) or nil
  if logged and logged.note then S.log("write-ahead log: %s", logged.note) end
  local positions = logged and logged.positions or meta.sources or {}
  local ok, err = S:start_sources(positions, nil)
  if not ok then return S:stop(1, "%s", err) end
  if S.feed and S.feed.restore then S.feed.restore(positions) end
  if S.wal_dir then
    local werr = ffi.new("char[512]")
    if C.sr_loop_set_wal(S.loop, S.wal_dir, werr, 512) ~= 0 then return S:stop(1, "%s", ffi.string(werr)) end
  end
  if found then S:restore_outputs(found) end
  S:record_output_starts()
  if found then S.event = eventtime.import(meta.event) end
  S:compile(states, windows)
  if found and meta.initial then
    S.log("resuming from %s: the job's start", found.path)
  elseif found then
    S.plan.zero_ms = meta.zero_ms
    -- Another batch interval (no window holds slices: checkpoint.adopt):
    -- checkpoints fall due on the new interval's grid from the next batch,
    -- as after a reload that changed it.
    if meta.batch_ms and meta.batch_ms ~= job.batch_ms then S.plan.zero_ms = meta.time_ms end
    S.nbatches, S.batches_base, S.time_ms = meta.batch, meta.batch, meta.time_ms
    if S.loop then
      C.sr_loop_set_next_time(S.loop, meta.time_ms + job.batch_ms)
      S.log("resuming from %s: batch %d at %d ms, %d keys", found.path, meta.batch, meta.time_ms, S.plan.state_keys())
    end
  end
  if not S:new_writer() then return nil, 1 end
  -- A first checkpoint before any batch: a crash before the next one
  -- restarts from here, with outputs cut back to where they started.
  if S.writer and not found then
    local m = S:checkpoint_meta(0, 0)
    m.initial = true
    S.writer:write(0, m, S.plan, true)
  end
  if logged then
    local rok, code = S:replay(logged)
    if S.loop then C.sr_deadletter_expect_end(C.sr_loop_deadletter(S.loop)) end
    if not rok then return nil, code end
    S.pending = logged.pending
  end
  return S
end

-- -- Reloading --

-- What a reload is checked against: the running job's stateful stages,
-- batch interval, checkpoint directory, loop and C sources.
function Session:describe()
  local running = {}
  local positions = self.loop and self:positions() or {}
  for _, node in ipairs(self.job.sources) do
    if node.c_index then
      running[node.stage_name] = { index = node.c_index, signature = M.source_signature(node), kind = node.op,
                                   path = node.path, position = positions[node.stage_name] }
    end
  end
  return {
    stages = reload.stages_of(self.job), window_lengths = reload.lengths_of(self.job), batch_ms = self.job.batch_ms,
    has_windows = next(self.plan.windows) ~= nil,
    checkpoint_dir = self.settings and self.settings.dir or nil,
    loop = self.loop and tonumber(ffi.cast("uintptr_t", self.loop)) or false, sources = running,
  }
end

-- Whether job may take over the running one (described by describe()),
-- with checkpoint settings settings. Returns the reload plan (see
-- streamrun.reload), or nil and why.
function M.check_reload(running, job, settings)
  if job.batch_ms ~= running.batch_ms and running.has_windows then
    return nil, ("the batch interval cannot change (%d ms to %d ms) while windows hold slices")
      :format(running.batch_ms, job.batch_ms)
  end
  if (settings and settings.dir) ~= running.checkpoint_dir then
    return nil, "the checkpoint directory cannot change while the job runs (restart it)"
  end
  local r = reload.plan(running.stages, job, running.window_lengths)
  if #r.conflicts > 0 then return nil, table.concat(r.conflicts, "; ") end
  return r
end

-- Hands this session over (a reload): its state and windows into the
-- handoff store, its loop released, everything else into one encoded
-- context, returned. The session is not usable afterwards.
function Session:export()
  if self.writer then self.writer:wait() end -- a reload and a checkpoint never interleave
  if self.stats_fh then self.stats_fh:close() end
  -- (A stage's state not seeded yet stays so: streamrun.stateful.)
  local unseeded = {}
  for name, st in pairs(self.plan.states) do
    if stateful.unseeded[st] then unseeded[name] = true end
    handoff.put("state:" .. name, st:detach())
  end
  for name, w in pairs(self.plan.windows) do
    if w.whole then w = w:whole() end -- (split among workers: handed over as one)
    handoff.put("slices:" .. name, w.slices:detach())
    if w.result then handoff.put("result:" .. name, w.result:detach()) end
  end
  local ctx = core.cstate.encode {
    running = self:describe().sources, positions = self:positions(),
    loop = self.loop and tonumber(ffi.cast("uintptr_t", self.loop)) or false,
    nbatches = self.nbatches, batches_base = self.batches_base, last_time = self.last_time or false,
    time_ms = self.time_ms or false, zero_ms = self.plan.zero_ms or false, total_records = self.total_records,
    dead_before = self.dead_before, progress = self.progress, failures = self.writer and self.writer.failures or 0,
    written = self.writer and self.writer.written or 0,
    worker_busy = self.workers and workers.totals(self.workers) or {},
    segment_after = self.segment_after, kept = self.kept, reload_failures = self.reload_failures,
    batch_ms = self.job.batch_ms, elapsed_ms = core.clock_ms() - self.started,
    event = eventtime.export(self.event), unseeded = unseeded,
  }
  exchange.close(self.plan)
  if self.loop then ffi.gc(self.loop, nil) end -- the loop now belongs to the next session
  self.loop, self.plan = nil, nil
  return ctx
end

-- The counters and bookkeeping of an exported session's context.
function Session:take_counters(ctx)
  self.nbatches, self.batches_base, self.total_records = ctx.nbatches, ctx.batches_base, ctx.total_records
  self.dead_before, self.reload_failures = ctx.dead_before, ctx.reload_failures
  self.worker_busy_before = ctx.worker_busy
  self.last_time, self.time_ms = ctx.last_time or nil, ctx.time_ms or nil
  self.started = core.clock_ms() - ctx.elapsed_ms
  for name, out in pairs(ctx.progress or {}) do self.progress[name] = out end
  for b, seq in pairs(ctx.segment_after or {}) do self.segment_after[tonumber(b)] = seq end
  for i, b in ipairs(ctx.kept or {}) do self.kept[i] = tonumber(b) end
  self.event = eventtime.import(ctx.event)
end

-- The state tables and windows export() put in the handoff store, by
-- stage name (owned by the caller from now on).
local function take_handed_state()
  local states, windows = {}, {}
  for _, key in ipairs(handoff.keys()) do
    local kind, name = key:match("^(%a+):(.+)$")
    if kind == "state" then
      states[name] = core.cstate.adopt(handoff.take(key))
    elseif kind == "slices" or kind == "result" then
      windows[name] = windows[name] or {}
      local take = kind == "slices" and core.cwindow.adopt or core.cstate.adopt
      windows[name][kind] = take(handoff.take(key))
    end
  end
  return states, windows
end

-- Takes over an exported session (ctx, from export) with job, the reload
-- plan r (from check_reload) and options o as for new (without loop).
-- added: name -> index of C sources the new job started (they replace the
-- ones of the same name). Returns the session, or nil and the exit code.
function M.import(job, o, ctx, r, added)
  ctx = core.cstate.decode(ctx)
  local no = {}
  for k, v in pairs(o) do no[k] = v end
  no.loop = ctx.loop and ffi.gc(ffi.cast("sr_loop_t *", ctx.loop), C.sr_loop_free) or nil
  local S = new(job, no)
  S:take_counters(ctx)
  local running = ctx.running or {}
  for name, index in pairs(added or {}) do
    if running[name] then C.sr_loop_remove_source(S.loop, running[name].index) end
    running[name] = { index = index, signature = M.source_signature(job.by_name[name]) }
  end
  -- State kept by stage name; what the new job no longer has is dropped.
  local states, windows = reload.carry(r, take_handed_state())
  for name in pairs(ctx.unseeded or {}) do
    if states[name] then stateful.unseeded[states[name]] = true end
  end
  local ok, err = S:start_sources(ctx.positions or {}, running)
  if not ok then
    for _, st in pairs(states) do st:free() end
    return S:stop(1, "%s", err)
  end
  S:compile(states, windows)
  S.plan.zero_ms = ctx.zero_ms or nil
  if job.batch_ms ~= ctx.batch_ms then
    if S.loop then C.sr_loop_set_interval(S.loop, job.batch_ms) end
    -- Windows are due on the grid of zero_ms: it moves onto the new
    -- interval's, one interval before the next batch (no window holds
    -- slices when the interval may change).
    -- The loop has the next batch on the old interval; the virtual clock
    -- runs it on the new one.
    local next_ms
    if S.loop then
      next_ms = S.last_time and S.last_time + ctx.batch_ms
    else
      next_ms = S.time_ms and S.time_ms + job.batch_ms
    end
    if next_ms then S.plan.zero_ms = next_ms - job.batch_ms end
  end
  if not S:new_writer() then return nil, 1 end
  S:record_output_starts()
  if S.writer then
    S.writer.failures, S.writer.written = ctx.failures, ctx.written
    -- A restart after this point must resume with the new logic.
    if S.last_time then S:checkpoint_now(S.last_time, true) end
  end
  return S
end

return M
