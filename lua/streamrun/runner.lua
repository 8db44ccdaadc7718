-- streamrun.runner: `streamrun run` and `streamrun check`. Loads the job,
-- resumes it from its newest valid checkpoint if it has one, starts its
-- sources on the C event loop, then pulls one sealed batch at a time from C
-- and runs the compiled stages over it, with one status line per batch on
-- stderr, --stats as JSON lines, and checkpoints as configured.
local core = require "streamrun.core"
local checkpoint = require "streamrun.checkpoint"
local compile = require "streamrun.compile"
local loader = require "streamrun.loader"
local recovery = require "streamrun.recovery"
local sources = require "streamrun.sources"

local C, ffi = core.C, core.ffi

local M = {}

local function log(fmt, ...)
  io.stderr:write("streamrun: ", fmt:format(...), "\n")
end

local function start_sources(job, loop, positions)
  local err = ffi.new("char[512]")
  local lua_sources = {}
  local n_c = 0
  for _, node in ipairs(job.sources) do
    local pos = positions[node.stage_name] or {}
    if node.c_kind then
      local o = ffi.new("sr_source_opts_t")
      o.kind, o.name = node.c_kind, node.stage_name
      o.host, o.port = node.host, node.port or 0
      o.path, o.max_line = node.path, node.max_line
      o.from_start = node.from_start and 1 or 0
      o.start_offset, o.start_inode = pos.offset or 0, pos.inode or 0
      local idx = C.sr_loop_add_source(loop, o, err, 512)
      if idx < 0 then
        return nil, ("%s: source %s: %s"):format(node.where, node.stage_name, ffi.string(err))
      end
      node.c_index = idx
      n_c = n_c + 1
    elseif node.op == "generator" then
      local st = sources.generator_state(node)
      if pos.next_i then st.next_i, st.carry, st.done = pos.next_i, pos.carry, pos.done end
      lua_sources[node] = st
    else
      local st = sources.queue_state(node)
      if pos.next then st.next, st.done = pos.next, pos.done end
      lua_sources[node] = st
    end
  end
  return lua_sources, n_c
end

local function lua_active(lua_sources)
  for _, st in pairs(lua_sources) do
    if not st.done then return true end
  end
  return false
end

-- Where every source stands after the batch just run, for a checkpoint.
local function positions_of(job, loop, lua_sources)
  local positions = {}
  local pos = ffi.new("sr_source_pos_t")
  for _, node in ipairs(job.sources) do
    local name = node.stage_name
    if node.c_index then
      if C.sr_source_position(C.sr_loop_source(loop, node.c_index), pos) == 0 then
        positions[name] = { kind = node.op, offset = tonumber(pos.offset), inode = tonumber(pos.inode) }
      end
    else
      local st = lua_sources[node]
      positions[name] = { kind = node.op, next = st.next, next_i = st.next_i, carry = st.carry, done = st.done }
    end
  end
  return positions
end

local function stats_line(s)
  return ('{"batch": %d, "time_ms": %d, "records": %d, "processing_ms": %.3f, "scheduling_delay_ms": %d, "state_keys": %d, "dead_letters": %d}\n')
    :format(s.batch, s.time_ms, s.records, s.processing_ms, s.scheduling_delay_ms, s.state_keys, s.dead_letters)
end

-- The newest valid checkpoint of settings.dir, reporting the ones that are
-- not valid. Returns the checkpoint or false (none yet), or nil when there
-- are checkpoints but none is valid.
local function find_checkpoint(settings)
  local ok, err = core.mkdir_p(settings.dir)
  if not ok then
    log("checkpoint directory %s: %s", settings.dir, err)
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

local function run(cli)
  local job, err = loader.load(cli.job, { params = cli.params, batch = cli.batch })
  if not job then
    log("%s", err)
    return 2
  end
  if cli.command == "check" then
    io.stdout:write(job:describe(), "\n")
    return 0
  end

  local settings = checkpoint.settings(job, cli.checkpoint)
  local restored = false
  if settings then
    restored = find_checkpoint(settings)
    if restored == nil then return 1 end
  end
  local meta = restored and restored.meta or {}
  if meta.finished then
    log("job %s already finished: %s holds its last batch (%d); nothing to do", job.name, restored.path, meta.batch)
    return 0
  end

  -- The log after the checkpoint decides where sources resume.
  local wal_dir = settings and recovery.needs_log(job) and (settings.dir .. "/wal") or nil
  local logged = wal_dir and recovery.read(wal_dir, meta) or nil
  if logged and logged.note then log("write-ahead log: %s", logged.note) end

  local lopts = ffi.new("sr_loop_opts_t")
  lopts.batch_ms = job.batch_ms
  lopts.max_batch_records, lopts.max_batch_bytes = job.max_batch_records, job.max_batch_bytes
  local dl_path = settings and settings.dir .. "/dead_letters.jsonl" or nil
  lopts.dead_letter_path = dl_path
  local errbuf = ffi.new("char[512]")
  local loop = C.sr_loop_new(lopts, errbuf, 512)
  if loop == nil then
    log("%s", ffi.string(errbuf))
    return 1
  end
  loop = ffi.gc(loop, C.sr_loop_free)

  local lua_sources, n_c = start_sources(job, loop, logged and logged.positions or meta.sources or {})
  if not lua_sources then
    log("%s", n_c)
    return 1
  end
  if wal_dir then
    local werr = ffi.new("char[512]")
    if C.sr_loop_set_wal(loop, wal_dir, werr, 512) ~= 0 then
      log("%s", ffi.string(werr))
      return 1
    end
  end

  local function dead(source, offset, reason, record)
    C.sr_loop_dead_letter(loop, source, offset or -1, reason, record, #record)
  end
  -- Outputs written after the checkpoint are written again: cut them back.
  for name, out in pairs(meta.outputs or {}) do
    local ok, terr = core.truncate(out.path, out.bytes)
    if not ok then log("output %s: cannot cut %s back to %d bytes: %s", name, out.path, out.bytes, terr) end
  end
  local progress = {}
  for name, out in pairs(meta.outputs or {}) do progress[name] = out end
  local plan = compile.compile(job, {
    on_error = job.on_error,
    dead_letter = function(stage, reason, record) dead(stage, -1, reason, record) end,
    sink = { stdout = io.stdout, progress = progress },
    states = restored and restored.states,
    windows = restored and restored.windows,
  })
  local report = function(node, e, i)
    dead(node.stage_name, i, ("stage %s: %s"):format(node.stage_name, tostring(e)), tostring(i))
  end

  local nbatches = 0
  if restored then
    plan.zero_ms = meta.zero_ms
    nbatches = meta.batch
    C.sr_loop_set_next_time(loop, meta.time_ms + job.batch_ms)
    log("resuming from %s: batch %d at %d ms, %d keys", restored.path, meta.batch, meta.time_ms, plan.state_keys())
  end
  local writer
  if settings then
    local werr
    writer, werr = checkpoint.writer(settings, log)
    if not writer then log("checkpoint directory %s: %s", settings.dir, werr) return 1 end
  end
  -- Log segments a checkpoint covers go once it is written.
  local segment_after = {}
  if writer then
    writer.on_written = function(b)
      if segment_after[b] then C.sr_loop_wal_drop_before(loop, segment_after[b]) end
      segment_after[b] = nil
    end
  end
  local function checkpoint_now(time_ms, sync, input_ended)
    local m = checkpoint.meta(job, plan, nbatches, time_ms, positions_of(job, loop, lua_sources), progress, cli.params)
    m.finished = input_ended or nil
    if wal_dir then segment_after[nbatches] = tonumber(C.sr_loop_wal_rotate(loop)) end
    writer:write(nbatches, m, plan, sync)
  end

  -- Batches logged after the checkpoint run again, as they were.
  local last_time
  if logged and #logged.batches > 0 then
    local function next_lua(node)
      if node.op == "generator" then return sources.generate(node, lua_sources[node], job.batch_ms, report) end
      return sources.dequeue(node, lua_sources[node], dead)
    end
    for _, b in ipairs(logged.batches) do
      plan.zero_ms = plan.zero_ms or (b.time_ms - job.batch_ms)
      local ok, perr = pcall(plan.run, recovery.inputs(job, b, dead, next_lua), b.time_ms)
      if not ok then
        if type(perr) == "table" and perr.fatal then log("replaying batch %d ms: %s", b.time_ms, perr.fatal) return 1 end
        error(perr, 0)
      end
      nbatches = nbatches + 1
      last_time = b.time_ms
    end
    C.sr_loop_set_next_time(loop, last_time + job.batch_ms)
    log("replayed %d logged batches, up to %d ms", #logged.batches, last_time)
  end
  local pending = logged and logged.pending

  local stats_fh
  if cli.stats then
    stats_fh = io.open(cli.stats, "w")
    if not stats_fh then log("cannot open --stats file %s", cli.stats) return 1 end
  end

  local duration_ms = cli.duration and core.duration_ms(cli.duration)
  local started = core.clock_ms()
  local tick = ffi.new("sr_tick_t")
  local total_records = 0
  local dead_before = 0 -- dead letters up to the previous batch, reading included
  while true do
    -- Nothing is read while checkpoints keep failing.
    while writer and writer:blocked() do
      if C.sr_loop_wait(loop, job.batch_ms) ~= 0 then
        log("stopping: checkpoints still failing, nothing read since the last one")
        writer:wait()
        return 1
      end
      checkpoint_now(last_time, true)
    end
    C.sr_loop_set_lua_active(loop, lua_active(lua_sources) and 1 or 0)
    C.sr_loop_next(loop, tick)
    local t0 = core.clock_ms()
    local time_ms = tonumber(tick.time_ms)
    local inputs, records = {}, 0
    for _, node in ipairs(job.sources) do
      local b
      if node.c_index then
        local cb = C.sr_loop_batch(loop, node.c_index)
        records = records + tonumber(cb.n)
        b = sources.read_c_batch(node, cb, dead)
      elseif node.op == "generator" then
        b = sources.generate(node, lua_sources[node], job.batch_ms, report)
        records = records + b.n
      else
        b = sources.dequeue(node, lua_sources[node], dead)
        records = records + b.n
      end
      inputs[node] = b
    end
    if pending then
      recovery.add_pending(job, inputs, pending, dead)
      pending = nil
    end
    local ok, perr = pcall(plan.run, inputs, time_ms)
    C.sr_loop_release(loop)
    if not ok then
      if type(perr) == "table" and perr.fatal then
        log("batch %d ms: %s", time_ms, perr.fatal)
        log("stopping: on_error = \"fail\"")
        if writer then writer:wait() end
        return 1
      end
      error(perr, 0)
    end
    nbatches = nbatches + 1
    last_time = time_ms
    total_records = total_records + records
    local s = {
      batch = nbatches, time_ms = time_ms, records = records,
      processing_ms = core.clock_ms() - t0, scheduling_delay_ms = tonumber(tick.delay_ms),
      state_keys = plan.state_keys(), dead_letters = tonumber(C.sr_loop_dead_letters(loop)) - dead_before,
    }
    dead_before = dead_before + s.dead_letters
    if not cli.quiet then
      log("batch %d ms: %d records, %.1f ms processing, %d ms delay, %d keys, %d dead letters",
        s.time_ms, s.records, s.processing_ms, s.scheduling_delay_ms, s.state_keys, s.dead_letters)
    end
    if stats_fh then
      stats_fh:write(stats_line(s))
      stats_fh:flush()
    end
    local input_ended = (tick.last ~= 0 and C.sr_loop_all_done(loop) ~= 0)
      or (n_c == 0 and next(lua_sources) and not lua_active(lua_sources))
    local finished = input_ended or tick.last ~= 0
      or (cli.batches and nbatches - (meta.batch or 0) >= cli.batches)
    if writer then
      if finished then
        checkpoint_now(time_ms, true, input_ended)
      elseif writer:due(time_ms, plan.zero_ms) then
        checkpoint_now(time_ms, false)
      else
        writer:poll()
      end
    end
    if finished then break end
    if duration_ms and core.clock_ms() - started >= duration_ms then C.sr_loop_stop(loop) end
  end
  if stats_fh then stats_fh:close() end
  if writer then writer:wait() end
  if not cli.quiet then
    log("finished: %d batches, %d records, %d dead letters", nbatches - (meta.batch or 0), total_records,
      tonumber(C.sr_loop_dead_letters(loop)))
  end
  return 0
end

-- Entry point from the binary: returns the process exit code.
function M.main(cli)
  return run(cli)
end

return M
