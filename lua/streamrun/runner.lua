-- streamrun.runner: `streamrun run` and `streamrun check`. Loads the job,
-- opens its session (streamrun.session: resumed from its newest valid
-- checkpoint if it has one, sources started on the C event loop), then is
-- its real clock: pulls one sealed batch at a time from the loop and has
-- the session run it, until the job ends.
--
-- Hot reload: when the job's script (or a module of its directory) changes,
-- or on SIGHUP, drive() returns M.RELOAD at the next batch boundary. The
-- binary then loads the new script in a fresh VM (prepare_reload); if it is
-- valid, this VM exports its session (handoff) and is closed, and the new
-- one imports it (resume); if not, this VM goes on (continue).
local core = require "streamrun.core"
local checkpoint = require "streamrun.checkpoint"
local http = require "streamrun.http"
local lint = require "streamrun.lint"
local loader = require "streamrun.loader"
local outputs = require "streamrun.outputs"
local reload = require "streamrun.reload"
local session = require "streamrun.session"
local kafka_tasks = require "streamrun.kafka_tasks"
local metrics = require "streamrun.metrics"
local workers = require "streamrun.workers"
local exchange = require "streamrun.exchange"

local C, ffi = core.C, core.ffi
local handoff = core.handoff

local M = {}

M.RELOAD = 100 -- drive()'s answer when the job asks for a reload

local function log(fmt, ...)
  io.stderr:write("streamrun: ", fmt:format(...), "\n")
end

-- Watches the job's script and the modules it loaded from its directory.
-- A script saved again since it was read (during a reload, say) is
-- reloaded at the next batch boundary: watching starts from the file as
-- it is now.
local function watch_files(cli, S)
  C.sr_loop_unwatch(S.loop)
  if cli.no_reload then return end
  local path = S.job.path
  C.sr_loop_watch(S.loop, path)
  local f = io.open(path, "rb")
  local now = f and f:read("*a")
  if f then f:close() end
  local loaded = S.job.load_opts and S.job.load_opts.source
  if loaded and now ~= loaded then C.sr_loop_request_reload(S.loop) end
  local dir = path:match("^(.*)/[^/]*$") or "."
  for name in pairs(package.loaded) do
    if type(name) == "string" and not name:find("^streamrun") then
      local file = package.searchpath(name, dir .. "/?.lua")
      if file then C.sr_loop_watch(S.loop, file) end
    end
  end
end

-- The session options of `streamrun run`.
local function session_options(cli, settings)
  local o = { settings = settings, params = cli.params, watch = true, quiet = cli.quiet, log = log,
              sink = { stdout = outputs.stdout }, finished_ends = true }
  if cli.stats then
    o.stats_fh = io.open(cli.stats, "a")
    if not o.stats_fh then return nil, "cannot open --stats file " .. cli.stats end
  end
  return o
end

-- The C event loop of job: its batch interval and limits, its dead-letter
-- file. Returns the loop (owned), or nil after saying why.
local function new_loop(job, settings)
  local lopts = ffi.new("sr_loop_opts_t")
  lopts.batch_ms = job.batch_ms
  lopts.max_batch_records, lopts.max_batch_bytes = job.max_batch_records, job.max_batch_bytes
  lopts.dead_letter_path = settings and settings.dir .. "/dead_letters.jsonl" or nil
  lopts.dead_letter_max_bytes, lopts.dead_letter_keep = job.dead_letters.max_bytes, job.dead_letters.keep
  local errbuf = ffi.new("char[512]")
  local loop = C.sr_loop_new(lopts, errbuf, 512)
  if loop == nil then
    log("%s", ffi.string(errbuf))
    return nil
  end
  return ffi.gc(loop, C.sr_loop_free)
end

-- -- Starting --

local function start(cli)
  local job, err = loader.load(cli.job, { params = cli.params, batch = cli.batch })
  err = err or workers.override(job, cli.workers)
  if err then
    log("%s", err)
    return nil, 2
  end
  local is_check = cli.command == "check"
  local settings = checkpoint.settings(job, cli.checkpoint)
  for _, w in ipairs(lint.warnings(job, { params = cli.params, files = is_check, checkpoints = settings ~= nil })) do
    log("warning: %s", w)
  end
  if is_check then
    io.stdout:write(job:describe(), "\n")
    if cli.against then return nil, M.check_against(job, cli.against) end
    return nil, 0
  end
  -- The server first: an address that is malformed or taken ends the start
  -- before any checkpoint or source is touched.
  local address, mon = cli.http or job.http, nil
  if address then
    local herr
    mon, herr = http.start(address, log)
    if not mon then
      log("%s", herr)
      return nil, http.parse_address(address) and 1 or 2
    end
  end
  if cli.stats then os.remove(cli.stats) end
  local o, oerr = session_options(cli, settings)
  if not o then log("%s", oerr) return nil, 1 end
  local as_tasks, one_process = kafka_tasks.applies(job, settings)
  if one_process then log("%s", one_process) end
  if as_tasks then -- one task per partition, the lock per task
    o.make_loop = function() return new_loop(job, settings) end
    local S, code = kafka_tasks.open(job, o)
    if not S then return nil, code end
    if mon then
      S.monitor = mon
      mon:refresh(S, true)
    end
    watch_files(cli, S)
    return S
  end
  if settings then
    o.restored = session.find_checkpoint(settings, log)
    if o.restored == nil then return nil, 1 end
  end
  o.make_loop = function() return new_loop(job, settings) end
  local S, code = session.open(job, o)
  if not S then return nil, code end
  if mon then
    S.monitor = mon
    mon:add_collector(workers.collector(metrics))
    mon:refresh(S, true)
  end
  watch_files(cli, S)
  return S
end

-- -- Running --

-- Runs batches until the job ends (returns its exit code) or asks for a
-- reload (returns M.RELOAD, at a batch boundary).
local function drive(cli, S)
  local loop = S.loop
  local tick = ffi.new("sr_tick_t")
  local duration_ms = cli.duration and core.duration_ms(cli.duration)
  while true do
    local go, hcode = S:wait_while_held()
    if not go then return hcode end
    C.sr_loop_set_lua_active(loop, S:lua_active() and 1 or 0)
    C.sr_loop_next(loop, tick)
    local t0 = core.clock_ms()
    local time_ms = tonumber(tick.time_ms)
    local records, code = S:run_batch(time_ms)
    if not records then return code end
    S:report_batch(records, core.clock_ms() - t0, tonumber(tick.delay_ms))
    local input_ended = S:input_ended(tick.last ~= 0)
    local finished = input_ended or tick.last ~= 0
      or (cli.batches and S.nbatches - S.batches_base >= cli.batches)
    S:checkpoint_after(time_ms, finished, input_ended)
    if finished then
      S:finish()
      return 0
    end
    if duration_ms and core.clock_ms() - S.started >= duration_ms then C.sr_loop_stop(loop) end
    if tick.reload ~= 0 and S.reloadable == false then
      log("reload: a job run as Kafka tasks is not reloaded in place; restart it (its tasks resume)")
    elseif tick.reload ~= 0 then
      handoff.put("running", core.cstate.encode(S:describe()))
      return M.RELOAD
    end
  end
end

-- The running session of this VM and its command line, kept between
-- calls from the binary.
local current, current_cli

-- Entry point from the binary: returns the process exit code, or M.RELOAD.
function M.main(cli)
  local S, code = start(cli)
  if not S then return code end
  current, current_cli = S, cli
  return drive(cli, S)
end

-- -- Reloading --

-- In the fresh VM: loads and validates the new script against the running
-- job (described under "running" by the old VM). Returns true, or false and
-- why.
local function prepare_reload(cli)
  local running = core.cstate.decode(handoff.take("running"))
  handoff.put("running", core.cstate.encode(running))
  local job, err = loader.load(cli.job, { params = cli.params, batch = cli.batch })
  err = err or workers.override(job, cli.workers)
  if err then return false, err end
  local settings = checkpoint.settings(job, cli.checkpoint)
  local r, rerr = session.check_reload(running, job, settings)
  if not r then return false, rerr end
  -- The other workers' VMs load the script again once the old VM has gone
  -- (session.import): a script or module that fails there (saved again
  -- meanwhile) would end the job. Loaded by as many VMs now, while the old
  -- logic can still go on, it refuses the reload instead.
  local n = workers.count(job)
  if n > 1 and exchange.segments(job) then
    local ok, vms = pcall(exchange.new_vms, n, job, { probe = true })
    if not ok then return false, (tostring(vms):gsub("\nstack traceback:.*$", "")) end
    vms:close()
  end
  -- New or changed C sources start now (the loop is C's, shared by both
  -- VMs): one that cannot start refuses the reload while the old logic runs.
  -- A source whose options changed (the same kind and path) goes on where
  -- the old one stands, after the batch just run, as a restart from a
  -- checkpoint would: from its start or the file's end it would read lines
  -- again, or lose those written meanwhile. (A Kafka source's position is
  -- its offsets by topic and partition.)
  local loop = ffi.cast("sr_loop_t *", running.loop)
  local added = {}
  for _, node in ipairs(job.sources) do
    local was = running.sources[node.stage_name]
    if node.c_kind and not (was and was.signature == session.source_signature(node)) then
      local same = was and was.kind == node.op and was.path == node.path
      local ok, serr = session.add_c_source(loop, node, same and was.position or {})
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

-- (An error raised while preparing refuses the reload, and says why.)
function M.prepare_reload(cli)
  local ok, valid, why = pcall(prepare_reload, cli)
  if not ok then return false, tostring(valid) end
  return valid, why
end

-- In the old VM, when the new script was not valid: goes on with the logic
-- it has.
function M.continue(err)
  local S, cli = current, current_cli
  S.reload_failures = S.reload_failures + 1
  handoff.take("running")
  log("reload of %s failed (%d so far): %s; the job goes on with the logic it had", S.job.path,
    S.reload_failures, tostring(err))
  return drive(cli, S)
end

-- In the old VM, when the new script is valid: hands the session over to
-- the next VM. This VM is closed afterwards.
function M.handoff()
  if current.monitor then handoff.put("http", core.cstate.encode(http.export(current.monitor))) end
  handoff.put("context", current:export())
  current = nil
  return true
end

-- In the fresh VM: takes the job over from the old one and runs it.
function M.resume(cli)
  local p = M.prepared
  handoff.take("running")
  local o, oerr = session_options(cli, p.settings)
  if not o then log("%s", oerr) return 1 end
  local S, code = session.import(p.job, o, handoff.take("context"), p.plan, p.added)
  local served = handoff.take("http")
  if served and S then
    S.monitor = http.import(core.cstate.decode(served), log)
    S.monitor:add_collector(workers.collector(metrics))
    S.monitor:refresh(S, true)
  end
  if not S then return code end
  watch_files(cli, S)
  log("reloaded %s: %s", cli.job, reload.describe(p.plan, p.job))
  current, current_cli = S, cli
  return drive(cli, S)
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
  local r = reload.plan(found.meta.stages or {}, job, found.meta.window_lengths)
  io.stdout:write(("against %s (batch %d): %s\n"):format(found.path, found.meta.batch, reload.describe(r, job)))
  for _, c in ipairs(r.conflicts) do io.stdout:write("cannot keep ", c, "\n") end
  return #r.conflicts > 0 and 2 or 0
end

return M
