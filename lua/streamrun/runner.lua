-- streamrun.runner: `streamrun run` and `streamrun check`. Loads the job,
-- resumes it from its newest valid checkpoint if it has one, starts its
-- sources on the C event loop, then pulls one sealed batch at a time from C
-- and runs the compiled stages over it, with one status line per batch on
-- stderr, --stats as JSON lines, and checkpoints as configured.
--
-- Hot reload: when the job's script (or a module of its directory) changes,
-- or on SIGHUP, drive() returns M.RELOAD at the next batch boundary. The
-- binary then loads the new script in a fresh VM (prepare_reload); if it is
-- valid, this VM hands its C objects over (handoff) and is closed, and the
-- new one takes over (resume); if not, this VM goes on (continue).
local core = require "streamrun.core"
local checkpoint = require "streamrun.checkpoint"
local compile = require "streamrun.compile"
local lint = require "streamrun.lint"
local loader = require "streamrun.loader"
local outputs = require "streamrun.outputs"
local recovery = require "streamrun.recovery"
local reload = require "streamrun.reload"
local sources = require "streamrun.sources"
local watchdog = require "streamrun.watchdog"

local C, ffi = core.C, core.ffi
local handoff = core.handoff

local M = {}

M.RELOAD = 100 -- drive()'s answer when the job asks for a reload

local function log(fmt, ...)
  io.stderr:write("streamrun: ", fmt:format(...), "\n")
end

-- -- Sources --

-- What a C source reads, to tell whether a reload changed it.
local function source_signature(node)
  return table.concat({ node.c_kind or node.op, node.host or "", tostring(node.port or ""), node.path or "",
                        node.format, tostring(node.max_line), tostring(node.from_start or false),
                        tostring(node.max_connections or "") }, "|")
end

local function add_c_source(loop, node, pos)
  local err = ffi.new("char[512]")
  local o = ffi.new("sr_source_opts_t")
  o.kind, o.name = node.c_kind, node.stage_name
  o.host, o.port = node.host, node.port or 0
  o.path, o.max_line = node.path, node.max_line
  o.from_start = node.from_start and 1 or 0
  o.max_connections = node.max_connections or 0
  -- A position applies to a source of the same kind (a text_dir's, to the
  -- same directory).
  if (pos.kind and pos.kind ~= node.op) or (pos.path and pos.path ~= node.path) then pos = {} end
  o.start_offset, o.start_inode = pos.offset or 0, pos.inode or 0
  local done = pos.done or {}
  local done_files = ffi.new("const char *[?]", #done + 1) -- `done` keeps the strings
  for i, name in ipairs(done) do done_files[i - 1] = name end
  o.start_file, o.done_files, o.ndone = pos.file, done_files, #done
  local idx = C.sr_loop_add_source(loop, o, err, 512)
  if idx < 0 then
    return nil, ("%s: source %s: %s"):format(node.where, node.stage_name, ffi.string(err))
  end
  node.c_index = idx
  return true
end

local function lua_source_state(node, pos)
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
-- reload keeps those that did not change).
local function start_sources(S, positions, running)
  S.lua_sources, S.n_c = {}, 0
  local keep = {}
  for _, node in ipairs(S.job.sources) do
    local pos = positions[node.stage_name] or {}
    if node.c_kind then
      local r = running and running[node.stage_name]
      if r and r.signature == source_signature(node) then
        node.c_index = r.index
        keep[r.index] = true
      else
        local ok, err = add_c_source(S.loop, node, pos)
        if not ok then return nil, err end
      end
      S.n_c = S.n_c + 1
    else
      S.lua_sources[node] = lua_source_state(node, pos)
    end
  end
  for _, r in pairs(running or {}) do
    if not keep[r.index] then C.sr_loop_remove_source(S.loop, r.index) end
  end
  return true
end

-- Whether a Lua-side source still produces. (Per batch, so over the job's
-- source array: this LuaJIT can cut hot pairs() loops short.)
local function lua_active(S)
  local list = S.job.sources
  for i = 1, #list do
    local st = S.lua_sources[list[i]]
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

-- Where every source stands after the batch just run, for a checkpoint.
local function positions_of(S)
  local positions = {}
  local pos = ffi.new("sr_source_pos_t")
  for _, node in ipairs(S.job.sources) do
    local name = node.stage_name
    if node.c_index then
      local src = C.sr_loop_source(S.loop, node.c_index)
      if C.sr_source_position(src, pos) == 0 then
        local p = { kind = node.op, offset = tonumber(pos.offset), inode = tonumber(pos.inode) }
        if node.c_kind == "text_dir" then p.path, p.file, p.done = node.path, dir_files(src, pos) end
        positions[name] = p
      end
    else
      local st = S.lua_sources[node]
      positions[name] = { kind = node.op, next = st.next, next_i = st.next_i, carry = st.carry, done = st.done }
    end
  end
  return positions
end

-- Watches the job's script and the modules it loaded from its directory.
local function watch_files(S)
  C.sr_loop_unwatch(S.loop)
  if S.cli.no_reload then return end
  local path = S.job.path
  C.sr_loop_watch(S.loop, path)
  local dir = path:match("^(.*)/[^/]*$") or "."
  for name in pairs(package.loaded) do
    if type(name) == "string" and not name:find("^streamrun") then
      local file = package.searchpath(name, dir .. "/?.lua")
      if file then C.sr_loop_watch(S.loop, file) end
    end
  end
end

local function stats_line(s)
  return ('{"batch": %d, "time_ms": %d, "records": %d, "processing_ms": %.3f, "scheduling_delay_ms": %d, "state_keys": %d, "dead_letters": %d}\n')
    :format(s.batch, s.time_ms, s.records, s.processing_ms, s.scheduling_delay_ms, s.state_keys, s.dead_letters)
end

-- Takes the lock of the checkpoint directory for the rest of the process's
-- life (a reload keeps it: it is C's). Returns true, or nil after saying
-- who holds it.
local function lock_dir(dir)
  local holder, err = ffi.new("long[1]"), ffi.new("char[512]")
  local rc = C.sr_lock_acquire(dir, holder, err, 512)
  if rc == 0 then return true end
  if holder[0] > 0 then
    log("checkpoint directory %s is in use by another streamrun process (pid %d): one process per directory",
      dir, tonumber(holder[0]))
  else
    log("checkpoint directory %s: %s", dir, ffi.string(err))
  end
  return nil
end

-- Locks settings.dir, then finds its newest valid checkpoint, reporting the
-- ones that are not valid. Returns the checkpoint or false (none yet), or
-- nil when the directory is another process's or there are checkpoints but
-- none is valid.
local function find_checkpoint(settings)
  local ok, err = core.mkdir_p(settings.dir)
  if not ok then
    log("checkpoint directory %s: %s", settings.dir, err)
    return nil
  end
  if not lock_dir(settings.dir) then return nil end
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

-- A generator's elements for the batch at time_ms (its function watched
-- like a stage's).
local function generate(S, node, time_ms)
  return watchdog.source(time_ms, node.stage_name, sources.generate, node, S.lua_sources[node], S.job.batch_ms,
    S.report)
end

-- -- The session: everything a running job keeps between batches --

-- Compiles the job's plan into S, with states/windows to continue from.
local function compile_plan(S, states, windows)
  -- User code that runs too long is stopped; so is a job told to stop.
  local wok, werr = watchdog.start(S.job, S.settings and S.settings.dir or nil)
  if not wok then log("%s", werr) end
  S.plan = compile.compile(S.job, {
    on_error = S.job.on_error,
    dead_letter = function(source, offset, reason, record) S.dead(source, offset, reason, record) end,
    sink = { stdout = outputs.stdout, progress = S.progress },
    states = states,
    windows = windows,
  })
end

local function new_writer(S)
  if not S.settings then return true end
  local w, err = checkpoint.writer(S.settings, log)
  if not w then
    log("checkpoint directory %s: %s", S.settings.dir, err)
    return nil
  end
  -- The log goes back to the oldest checkpoint kept, not the newest: a
  -- restart that falls back to any kept one (the newer ones corrupt) replays
  -- every batch after it. Until this process has written `keep` of them,
  -- the oldest kept may be an earlier run's: nothing goes.
  S.kept = S.kept or {}
  w.on_written = function(b)
    local kept, keep = S.kept, S.settings.keep
    kept[#kept + 1] = b
    while #kept > keep do table.remove(kept, 1) end
    if #kept < keep then return end
    local oldest = kept[1]
    if S.segment_after[oldest] then C.sr_loop_wal_drop_before(S.loop, S.segment_after[oldest]) end
    for batch in pairs(S.segment_after) do
      if batch < oldest then S.segment_after[batch] = nil end
    end
  end
  S.writer = w
  return true
end

local function checkpoint_now(S, time_ms, sync, input_ended)
  local m = checkpoint.meta(S.job, S.plan, S.nbatches, time_ms, positions_of(S), S.progress, S.cli.params)
  m.finished = input_ended or nil
  if S.wal_dir then S.segment_after[S.nbatches] = tonumber(C.sr_loop_wal_rotate(S.loop)) end
  S.writer:write(S.nbatches, m, S.plan, sync)
end

local function new_session(cli, job)
  local S = {
    cli = cli, job = job, nbatches = 0, total_records = 0, dead_before = 0,
    progress = {}, segment_after = {}, batches_base = 0, reload_failures = 0,
    started = core.clock_ms(),
    duration_ms = cli.duration and core.duration_ms(cli.duration),
  }
  function S.dead(source, offset, reason, record)
    C.sr_loop_dead_letter(S.loop, source, offset or -1, reason, record, #record)
  end
  function S.report(node, e, i)
    S.dead(node.stage_name, i, ("stage %s: %s"):format(node.stage_name, tostring(e)), tostring(i))
  end
  if cli.stats then
    S.stats_fh = io.open(cli.stats, "a")
    if not S.stats_fh then return nil, "cannot open --stats file " .. cli.stats end
  end
  return S
end

-- Where outputs start, so that a checkpoint always records them.
local function record_output_starts(S)
  for _, node in ipairs(S.job.outputs) do
    if node.op == "to_json_lines" and node.path ~= "-" and not S.progress[node.stage_name] then
      local f = io.open(node.path, "rb")
      S.progress[node.stage_name] = { path = node.path, bytes = f and f:seek("end") or 0 }
      if f then f:close() end
    end
  end
end

-- Holds the job while an output of the batch just run fails to write:
-- sources read nothing and the output is retried every batch interval, as
-- a failing checkpoint is; no checkpoint is taken meanwhile, since it would
-- cover a batch whose output is not written. Returns nil once every output
-- is written, or the exit code when the job must end (standard output
-- closed, on_error = "fail", or a stop signal while failing).
local function hold_outputs(S)
  local failing = S.plan.failing_outputs()
  if #failing == 0 then return nil end
  local function report(how)
    for _, f in ipairs(failing) do log("output %s: %s%s", f.node.stage_name, f.error, how) end
  end
  local retries = 0
  while true do
    for _, f in ipairs(failing) do
      if f.permanent then
        report("")
        log("stopping: output %s cannot be written any more; the batch at %d ms is not written", f.node.stage_name,
          S.last_time)
        if S.writer then S.writer:wait() end
        return 1
      end
    end
    if S.job.on_error == "fail" then
      report("")
      log("stopping: on_error = \"fail\"")
      if S.writer then S.writer:wait() end
      return 1
    end
    if retries == 0 then report("; sources wait, retried every batch interval") end
    if C.sr_loop_wait(S.loop, S.job.batch_ms) ~= 0 then
      report(("; %d retries"):format(retries))
      log("stopping: an output is still failing; nothing was read meanwhile, the batch at %d ms is in no checkpoint",
        S.last_time)
      if S.writer then S.writer:wait() end
      return 1
    end
    retries = retries + 1
    if S.plan.retry_outputs() == 0 then
      log("outputs written again after %d retries; sources go on", retries)
      return nil
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
local function cut_back(name, out)
  local f = io.open(out.path, "rb")
  local size = f and f:seek("end") or 0
  if f then f:close() end
  if size < out.bytes then
    log("output %s: %s has %d bytes, fewer than the %d the checkpoint recorded", name, out.path, size, out.bytes)
  elseif size > out.bytes then
    local tok, terr = core.truncate(out.path, out.bytes)
    if not tok then log("output %s: cannot cut %s back to %d bytes: %s", name, out.path, out.bytes, terr) end
  end
end

-- -- Starting --

local function start(cli)
  local job, err = loader.load(cli.job, { params = cli.params, batch = cli.batch })
  if not job then
    log("%s", err)
    return nil, 2
  end
  local is_check = cli.command == "check"
  for _, w in ipairs(lint.warnings(job, { params = cli.params, files = is_check,
                                          checkpoints = checkpoint.settings(job, cli.checkpoint) ~= nil })) do
    log("warning: %s", w)
  end
  if is_check then
    io.stdout:write(job:describe(), "\n")
    if cli.against then return nil, M.check_against(job, cli.against) end
    return nil, 0
  end
  if cli.stats then os.remove(cli.stats) end
  local S, serr = new_session(cli, job)
  if not S then log("%s", serr) return nil, 1 end

  S.settings = checkpoint.settings(job, cli.checkpoint)
  local restored = false
  if S.settings then
    restored = find_checkpoint(S.settings)
    if restored == nil then return nil, 1 end
  end
  local meta = restored and restored.meta or {}
  if restored then
    local states, windows, how = checkpoint.adopt(restored, job)
    if not states then
      log("%s", windows)
      return nil, how
    end
    restored.states, restored.windows = states, windows
    if meta.script_hash ~= core.file_hash(job.path) then
      log("%s was taken with another version of the script: %s", restored.path, how)
    end
  end
  if meta.finished then
    log("job %s already finished: %s holds its last batch (%d); nothing to do", job.name, restored.path, meta.batch)
    return nil, 0
  end

  -- The log after the checkpoint decides where sources resume.
  S.wal_dir = S.settings and recovery.needs_log(job) and (S.settings.dir .. "/wal") or nil
  local logged = S.wal_dir and recovery.read(S.wal_dir, meta) or nil
  if logged and logged.note then log("write-ahead log: %s", logged.note) end

  local lopts = ffi.new("sr_loop_opts_t")
  lopts.batch_ms = job.batch_ms
  lopts.max_batch_records, lopts.max_batch_bytes = job.max_batch_records, job.max_batch_bytes
  lopts.dead_letter_path = S.settings and S.settings.dir .. "/dead_letters.jsonl" or nil
  lopts.dead_letter_max_bytes, lopts.dead_letter_keep = job.dead_letters.max_bytes, job.dead_letters.keep
  local errbuf = ffi.new("char[512]")
  local loop = C.sr_loop_new(lopts, errbuf, 512)
  if loop == nil then
    log("%s", ffi.string(errbuf))
    return nil, 1
  end
  S.loop = ffi.gc(loop, C.sr_loop_free)

  local ok, serr2 = start_sources(S, logged and logged.positions or meta.sources or {}, nil)
  if not ok then
    log("%s", serr2)
    return nil, 1
  end
  if S.wal_dir then
    local werr = ffi.new("char[512]")
    if C.sr_loop_set_wal(S.loop, S.wal_dir, werr, 512) ~= 0 then
      log("%s", ffi.string(werr))
      return nil, 1
    end
  end
  -- Outputs written after the checkpoint are written again: cut them back
  -- (never lengthened: a file shorter than recorded is reported). Only
  -- files this job writes: the metadata names them, it does not decide.
  for name, out in pairs(type(meta.outputs) == "table" and meta.outputs or {}) do
    if own_output(job, name, out) then
      cut_back(name, out)
      S.progress[name] = out
    else
      log("%s records output %s (%s), which is not an output of this job: left alone", restored.path,
        tostring(name), type(out) == "table" and tostring(out.path) or "?")
    end
  end
  record_output_starts(S)
  compile_plan(S, restored and restored.states or nil, restored and restored.windows or nil)
  if restored and meta.initial then
    log("resuming from %s: the job's start", restored.path)
  elseif restored then
    S.plan.zero_ms = meta.zero_ms
    S.nbatches = meta.batch
    S.batches_base = meta.batch
    C.sr_loop_set_next_time(S.loop, meta.time_ms + job.batch_ms)
    log("resuming from %s: batch %d at %d ms, %d keys", restored.path, meta.batch, meta.time_ms, S.plan.state_keys())
  end
  if not new_writer(S) then return nil, 1 end
  -- A first checkpoint before any batch: a crash before the next one
  -- restarts from here, with outputs cut back to where they started.
  if S.writer and not restored then
    local m = checkpoint.meta(job, S.plan, 0, 0, positions_of(S), S.progress, cli.params)
    m.initial = true
    S.writer:write(0, m, S.plan, true)
  end

  -- Batches logged after the checkpoint run again, as they were.
  if logged and #logged.batches > 0 then
    for _, b in ipairs(logged.batches) do
      local function next_lua(node)
        if node.op == "generator" then return generate(S, node, b.time_ms) end
        return sources.dequeue(node, S.lua_sources[node], S.dead)
      end
      S.plan.zero_ms = S.plan.zero_ms or (b.time_ms - job.batch_ms)
      local rok, perr = pcall(S.plan.run, recovery.inputs(job, b, S.dead, next_lua), b.time_ms)
      if not rok then
        if type(perr) == "table" and perr.fatal then log("replaying batch %d ms: %s", b.time_ms, perr.fatal) return nil, 1 end
        error(perr, 0)
      end
      S.nbatches = S.nbatches + 1
      S.last_time = b.time_ms
      local code = hold_outputs(S)
      if code then return nil, code end
    end
    C.sr_loop_set_next_time(S.loop, S.last_time + job.batch_ms)
    log("replayed %d logged batches, up to %d ms", #logged.batches, S.last_time)
  end
  S.pending = logged and logged.pending
  watch_files(S)
  return S
end

-- -- Running --

local function finish(S)
  if S.stats_fh then S.stats_fh:close() end
  if S.writer then S.writer:wait() end
  if not S.cli.quiet then
    log("finished: %d batches, %d records, %d dead letters", S.nbatches - S.batches_base, S.total_records,
      tonumber(C.sr_loop_dead_letters(S.loop)))
  end
end

-- In the old VM: what a fresh VM needs to validate the new script.
local function describe_running(S)
  local has_windows = next(S.plan.windows) ~= nil
  local sources = {}
  for _, node in ipairs(S.job.sources) do
    if node.c_index then sources[node.stage_name] = { index = node.c_index, signature = source_signature(node) } end
  end
  handoff.put("running", core.cstate.encode {
    stages = reload.stages_of(S.job), batch_ms = S.job.batch_ms, has_windows = has_windows,
    checkpoint_dir = S.settings and S.settings.dir or nil,
    loop = tonumber(ffi.cast("uintptr_t", S.loop)), sources = sources,
  })
end

-- Notes that a write to the log failed (the loop then closed the batch in
-- progress): batch is the first a checkpoint must cover.
local function note_log_failure(S, batch)
  if S.log_lost or C.sr_loop_wal_failed(S.loop) == 0 then return end
  S.log_lost = batch
  log("write-ahead log failing in batch %d: sources wait until a checkpoint covers what was read", batch)
end

-- Whether sources hold because a write to the log failed: until the log
-- takes writes again and a checkpoint after the failing batch is written.
local function log_holds(S)
  if not S.last_time then return false end
  note_log_failure(S, S.nbatches)
  if C.sr_loop_wal_failed(S.loop) ~= 0 then return true end
  if S.log_lost and S.writer.failures == 0 and (S.writer.last_batch or -1) >= S.log_lost then
    log("write-ahead log written again; the checkpoint after batch %d covers what was read; sources go on",
      S.writer.last_batch)
    S.log_lost = nil
  end
  return S.log_lost ~= nil
end

-- Runs batches until the job ends (returns its exit code) or asks for a
-- reload (returns M.RELOAD, at a batch boundary).
local function drive(S)
  local job, loop, cli = S.job, S.loop, S.cli
  local tick = ffi.new("sr_tick_t")
  while true do
    -- Nothing is read while checkpoints keep failing, or while what was
    -- read since a write to the log failed is in no checkpoint yet.
    while S.writer and (S.writer:blocked() or log_holds(S)) do
      if C.sr_loop_wait(loop, job.batch_ms) ~= 0 then
        log("stopping: %s still failing; nothing was read meanwhile", S.log_lost and "the write-ahead log" or "checkpoints")
        S.writer:wait()
        return 1
      end
      checkpoint_now(S, S.last_time, true)
    end
    C.sr_loop_set_lua_active(loop, lua_active(S) and 1 or 0)
    C.sr_loop_next(loop, tick)
    if S.wal_dir then note_log_failure(S, S.nbatches + 1) end
    local t0 = core.clock_ms()
    local time_ms = tonumber(tick.time_ms)
    local inputs, records = {}, 0
    for _, node in ipairs(job.sources) do
      local b
      if node.c_index then
        local cb = C.sr_loop_batch(loop, node.c_index)
        records = records + tonumber(cb.n)
        if S.plan.raw_sources[node] then
          b = { n = tonumber(cb.n), cbatch = cb } -- read in C by a native stage
        else
          b = sources.read_c_batch(node, cb, S.dead)
        end
      elseif node.op == "generator" then
        b = generate(S, node, time_ms)
        records = records + b.n
      else
        b = sources.dequeue(node, S.lua_sources[node], S.dead)
        records = records + b.n
      end
      inputs[node] = b
    end
    if S.pending then
      recovery.add_pending(job, inputs, S.pending, S.dead)
      S.pending = nil
    end
    local ok, perr = pcall(S.plan.run, inputs, time_ms)
    C.sr_loop_release(loop)
    if not ok then
      if type(perr) == "table" and perr.fatal then
        log("batch %d ms: %s", time_ms, perr.fatal)
        log("stopping: on_error = \"fail\"")
        if S.writer then S.writer:wait() end
        return 1
      end
      error(perr, 0)
    end
    S.nbatches = S.nbatches + 1
    S.last_time = time_ms
    S.total_records = S.total_records + records
    local held = hold_outputs(S)
    if held then return held end
    local s = {
      batch = S.nbatches, time_ms = time_ms, records = records,
      processing_ms = core.clock_ms() - t0, scheduling_delay_ms = tonumber(tick.delay_ms),
      state_keys = S.plan.state_keys(), dead_letters = tonumber(C.sr_loop_dead_letters(loop)) - S.dead_before,
    }
    S.dead_before = S.dead_before + s.dead_letters
    if not cli.quiet then
      log("batch %d ms: %d records, %.1f ms processing, %d ms delay, %d keys, %d dead letters",
        s.time_ms, s.records, s.processing_ms, s.scheduling_delay_ms, s.state_keys, s.dead_letters)
    end
    if S.stats_fh then
      S.stats_fh:write(stats_line(s))
      S.stats_fh:flush()
    end
    local input_ended = (tick.last ~= 0 and C.sr_loop_all_done(loop) ~= 0)
      or (S.n_c == 0 and next(S.lua_sources) and not lua_active(S))
    local finished = input_ended or tick.last ~= 0
      or (cli.batches and S.nbatches - S.batches_base >= cli.batches)
    if S.writer then
      if finished then
        checkpoint_now(S, time_ms, true, input_ended)
      elseif S.writer:due(time_ms, S.plan.zero_ms) then
        checkpoint_now(S, time_ms, false)
      else
        S.writer:poll()
      end
    end
    if finished then
      finish(S)
      return 0
    end
    if S.duration_ms and core.clock_ms() - S.started >= S.duration_ms then C.sr_loop_stop(loop) end
    if tick.reload ~= 0 then
      describe_running(S)
      return M.RELOAD
    end
  end
end

-- The running session of this VM, kept between calls from the binary.
local session

-- Entry point from the binary: returns the process exit code, or M.RELOAD.
function M.main(cli)
  local S, code = start(cli)
  if not S then return code end
  session = S
  return drive(S)
end

-- -- Reloading --

-- In the fresh VM: loads and validates the new script against the running
-- job (its stages, batch interval and checkpoint directory, handed over
-- under "running"). Returns true, or false and why.
function M.prepare_reload(cli)
  local running = core.cstate.decode(handoff.take("running"))
  handoff.put("running", core.cstate.encode(running))
  local job, err = loader.load(cli.job, { params = cli.params, batch = cli.batch })
  if not job then return false, err end
  if job.batch_ms ~= running.batch_ms and running.has_windows then
    return false, ("the batch interval cannot change (%d ms to %d ms) while windows hold slices")
      :format(running.batch_ms, job.batch_ms)
  end
  local settings = checkpoint.settings(job, cli.checkpoint)
  if (settings and settings.dir) ~= running.checkpoint_dir then
    return false, "the checkpoint directory cannot change while the job runs (restart it)"
  end
  local r = reload.plan(running.stages, job)
  if #r.conflicts > 0 then return false, table.concat(r.conflicts, "; ") end
  -- New or changed C sources start now (the loop is C's, shared by both
  -- VMs): one that cannot start refuses the reload while the old logic runs.
  local loop = ffi.cast("sr_loop_t *", running.loop)
  local added = {}
  for _, node in ipairs(job.sources) do
    local was = running.sources[node.stage_name]
    if node.c_kind and not (was and was.signature == source_signature(node)) then
      local ok, serr = add_c_source(loop, node, {})
      if not ok then
        for _, index in pairs(added) do C.sr_loop_remove_source(loop, index) end
        return false, serr
      end
      added[node.stage_name] = node.c_index
    end
  end
  M.prepared = { job = job, plan = r, settings = settings, added = added }
  return true
end

-- In the old VM, when the new script was not valid: goes on with the logic
-- it has.
function M.continue(err)
  local S = session
  S.reload_failures = S.reload_failures + 1
  handoff.take("running")
  log("reload of %s failed (%d so far): %s; the job goes on with the logic it had", S.job.path,
    S.reload_failures, tostring(err))
  return drive(S)
end

-- In the old VM, when the new script is valid: hands every C object and the
-- session's context to the next VM. This VM is closed afterwards.
function M.handoff()
  local S = session
  if S.writer then S.writer:wait() end -- a reload and a checkpoint never interleave
  if S.stats_fh then S.stats_fh:close() end
  local running = {}
  for _, node in ipairs(S.job.sources) do
    if node.c_index then running[node.stage_name] = { index = node.c_index, signature = source_signature(node) } end
  end
  for name, st in pairs(S.plan.states) do handoff.put("state:" .. name, st:detach()) end
  for name, w in pairs(S.plan.windows) do
    handoff.put("slices:" .. name, w.slices:detach())
    if w.result then handoff.put("result:" .. name, w.result:detach()) end
  end
  handoff.put("context", core.cstate.encode {
    loop = tonumber(ffi.cast("uintptr_t", S.loop)), running = running, positions = positions_of(S),
    nbatches = S.nbatches, batches_base = S.batches_base, last_time = S.last_time or false,
    zero_ms = S.plan.zero_ms or false, total_records = S.total_records, dead_before = S.dead_before,
    progress = S.progress, failures = S.writer and S.writer.failures or 0,
    segment_after = S.segment_after, kept = S.kept, reload_failures = S.reload_failures, batch_ms = S.job.batch_ms,
    elapsed_ms = core.clock_ms() - S.started,
  })
  ffi.gc(S.loop, nil) -- the loop now belongs to the next VM
  session = nil
  return true
end

-- In the fresh VM: takes the job over from the old one and runs it.
function M.resume(cli)
  local p = M.prepared
  local ctx = core.cstate.decode(handoff.take("context"))
  handoff.take("running")
  local S = assert(new_session(cli, p.job))
  S.settings = p.settings
  S.loop = ffi.gc(ffi.cast("sr_loop_t *", ctx.loop), C.sr_loop_free)
  S.nbatches, S.batches_base, S.total_records = ctx.nbatches, ctx.batches_base, ctx.total_records
  S.dead_before, S.reload_failures = ctx.dead_before, ctx.reload_failures
  S.last_time = ctx.last_time or nil
  S.started = core.clock_ms() - ctx.elapsed_ms
  for name, out in pairs(ctx.progress or {}) do S.progress[name] = out end
  for b, seq in pairs(ctx.segment_after or {}) do S.segment_after[tonumber(b)] = seq end
  S.kept = {}
  for i, b in ipairs(ctx.kept or {}) do S.kept[i] = tonumber(b) end
  S.wal_dir = S.settings and recovery.needs_log(p.job) and (S.settings.dir .. "/wal") or nil
  -- Sources prepare_reload started replace the ones of the same name.
  local running = ctx.running or {}
  for name, index in pairs(p.added) do
    if running[name] then C.sr_loop_remove_source(S.loop, running[name].index) end
    running[name] = { index = index, signature = source_signature(p.job.by_name[name]) }
  end
  local ok, err = start_sources(S, ctx.positions or {}, running)
  if not ok then
    log("%s", err)
    return 1
  end
  -- State kept by stage name; what the new job no longer has is dropped.
  local states, windows = {}, {}
  for _, key in ipairs(handoff.keys()) do
    local kind, name = key:match("^(%a+):(.+)$")
    if kind == "state" then states[name] = core.cstate.adopt(handoff.take(key))
    elseif kind == "slices" then windows[name] = windows[name] or {}; windows[name].slices = core.cwindow.adopt(handoff.take(key))
    elseif kind == "result" then windows[name] = windows[name] or {}; windows[name].result = core.cstate.adopt(handoff.take(key))
    end
  end
  states, windows = reload.carry(p.plan, states, windows)
  compile_plan(S, states, windows)
  S.plan.zero_ms = ctx.zero_ms or nil
  if p.job.batch_ms ~= ctx.batch_ms then
    C.sr_loop_set_interval(S.loop, p.job.batch_ms)
    -- Windows are due on the grid of zero_ms: it moves onto the new
    -- interval's, one interval before the next batch (no window holds
    -- slices when the interval may change).
    if S.plan.zero_ms and S.last_time then S.plan.zero_ms = S.last_time + ctx.batch_ms - p.job.batch_ms end
  end
  if not new_writer(S) then return 1 end
  record_output_starts(S)
  if S.writer then
    S.writer.failures = ctx.failures
    -- A restart after this point must resume with the new logic.
    if S.last_time then checkpoint_now(S, S.last_time, true) end
  end
  watch_files(S)
  log("reloaded %s: %s", cli.job, reload.describe(p.plan))
  session = S
  return drive(S)
end

-- -- Checking --

-- `streamrun check NEW.lua --against CHECKPOINT`: which stages would keep,
-- drop or start state. Exit 0, or 2 when some state could not be kept.
function M.check_against(job, path)
  local is_dir = io.open(path .. "/.", "r")
  local found
  if is_dir then
    is_dir:close()
    found = checkpoint.latest(path)
    if not found then log("no valid checkpoint in %s", path) return 1 end
  else
    local why
    found, why = checkpoint.load(path)
    if not found then log("%s: %s", path, why) return 1 end
  end
  local r = reload.plan(found.meta.stages or {}, job)
  io.stdout:write(("against %s (batch %d): %s\n"):format(found.path, found.meta.batch, reload.describe(r)))
  for _, c in ipairs(r.conflicts) do io.stdout:write("cannot keep ", c, "\n") end
  return #r.conflicts > 0 and 2 or 0
end

return M
