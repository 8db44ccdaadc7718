-- streamrun.runner: `streamrun run` and `streamrun check`. Loads the job,
-- starts its sources on the C event loop, then pulls one sealed batch at a
-- time from C and runs the compiled stages over it, with one status line per
-- batch on stderr and --stats as JSON lines.
local core = require "streamrun.core"
local compile = require "streamrun.compile"
local loader = require "streamrun.loader"
local sources = require "streamrun.sources"

local C, ffi = core.C, core.ffi

local M = {}

local function log(fmt, ...)
  io.stderr:write("streamrun: ", fmt:format(...), "\n")
end

-- The dead-letter file: under the checkpoint dir when there is one.
local function dead_letter_path(job, cli)
  local dir = cli.checkpoint or (job.checkpoint and job.checkpoint.dir)
  if not dir then return nil end
  local ok, err = core.mkdir_p(dir)
  if not ok then return nil, err end
  return dir .. "/dead_letters.jsonl"
end

local function start_sources(job, loop)
  local err = ffi.new("char[512]")
  local lua_sources = {}
  local n_c = 0
  for _, node in ipairs(job.sources) do
    if node.c_kind then
      local o = ffi.new("sr_source_opts_t")
      o.kind, o.name = node.c_kind, node.stage_name
      o.host, o.port = node.host, node.port or 0
      o.path, o.max_line = node.path, node.max_line
      o.from_start = node.from_start and 1 or 0
      local idx = C.sr_loop_add_source(loop, o, err, 512)
      if idx < 0 then
        return nil, ("%s: source %s: %s"):format(node.where, node.stage_name, ffi.string(err))
      end
      node.c_index = idx
      n_c = n_c + 1
    elseif node.op == "generator" then
      lua_sources[node] = sources.generator_state(node)
    else
      lua_sources[node] = sources.queue_state(node)
    end
  end
  return lua_sources, n_c
end

local function lua_active(lua_sources)
  for node, st in pairs(lua_sources) do
    if not st.done then return true end
  end
  return false
end

local function stats_line(s)
  return ('{"batch": %d, "time_ms": %d, "records": %d, "processing_ms": %.3f, "scheduling_delay_ms": %d, "state_keys": %d, "dead_letters": %d}\n')
    :format(s.batch, s.time_ms, s.records, s.processing_ms, s.scheduling_delay_ms, s.state_keys, s.dead_letters)
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

  local dl_path, dl_err = dead_letter_path(job, cli)
  if dl_err then log("%s", dl_err) return 1 end
  local lopts = ffi.new("sr_loop_opts_t")
  lopts.batch_ms = job.batch_ms
  lopts.max_batch_records, lopts.max_batch_bytes = job.max_batch_records, job.max_batch_bytes
  lopts.dead_letter_path = dl_path
  local errbuf = ffi.new("char[512]")
  local loop = C.sr_loop_new(lopts, errbuf, 512)
  if loop == nil then
    log("%s", ffi.string(errbuf))
    return 1
  end
  loop = ffi.gc(loop, C.sr_loop_free)

  local lua_sources, n_c = start_sources(job, loop)
  if not lua_sources then
    log("%s", n_c)
    return 1
  end

  local function dead(source, offset, reason, record)
    C.sr_loop_dead_letter(loop, source, offset or -1, reason, record, #record)
  end
  local plan = compile.compile(job, {
    on_error = job.on_error,
    dead_letter = function(stage, reason, record) dead(stage, -1, reason, record) end,
    sink = { stdout = io.stdout },
  })
  local report = function(node, e, i)
    dead(node.stage_name, i, ("stage %s: %s"):format(node.stage_name, tostring(e)), tostring(i))
  end

  local stats_fh
  if cli.stats then
    stats_fh = io.open(cli.stats, "w")
    if not stats_fh then log("cannot open --stats file %s", cli.stats) return 1 end
  end

  local duration_ms = cli.duration and core.duration_ms(cli.duration)
  local started = core.clock_ms()
  local tick = ffi.new("sr_tick_t")
  local nbatches, total_records = 0, 0
  local dead_before = 0 -- dead letters up to the previous batch, reading included
  while true do
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
    local ok, perr = pcall(plan.run, inputs, time_ms)
    C.sr_loop_release(loop)
    if not ok then
      if type(perr) == "table" and perr.fatal then
        log("batch %d ms: %s", time_ms, perr.fatal)
        log("stopping: on_error = \"fail\"")
        return 1
      end
      error(perr, 0)
    end
    nbatches = nbatches + 1
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
    if tick.last ~= 0 then break end
    if n_c == 0 and next(lua_sources) and not lua_active(lua_sources) then break end
    if cli.batches and nbatches >= cli.batches then break end
    if duration_ms and core.clock_ms() - started >= duration_ms then C.sr_loop_stop(loop) end
  end
  if stats_fh then stats_fh:close() end
  if not cli.quiet then
    log("finished: %d batches, %d records, %d dead letters", nbatches, total_records,
      tonumber(C.sr_loop_dead_letters(loop)))
  end
  return 0
end

-- Entry point from the binary: returns the process exit code.
function M.main(cli)
  return run(cli)
end

return M
