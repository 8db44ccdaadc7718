-- streamrun.worker: what runs in the VM of each worker but worker 0
-- (runtime/sr_worker_vm.c, SPEC section 15). The VM loads the job's script
-- as worker 0 did, finds the same keyed segment (streamrun.exchange) and
-- runs its worker's part of each phase. Module-level state of the job's
-- script is this VM's own.
local ffi = require "ffi"
local core = require "streamrun.core"
local watchdog = require "streamrun.watchdog"
-- This VM's loops note their progress in its own record, which the
-- watchdog watches (stage_timeout interrupts this VM on its thread); set
-- before the modules that cache it load.
do
  local P = core.cwatchdog.progress()
  if not P then error("worker: the watchdog gave this VM no progress record", 0) end
  watchdog.P = ffi.cast("sr_progress_t *", P)
end
local exchange = require "streamrun.exchange"
local guard = require "streamrun.guard"
local loader = require "streamrun.loader"

local M = {}

-- This worker's: { e (its executor), letters (dead letters to send),
-- shard (the state handle adopted, detached at shutdown) }.
local S

-- init(k, n, init): init is worker 0's description (msgpack): the script
-- (its path and the text worker 0 loaded), its params and batch, the
-- exchanges' and shards' addresses.
function M.init(k, n, init)
  local a = core.cstate.decode(init)
  local job, err = loader.load(a.path, { params = a.params, batch = a.batch or nil, source = a.source })
  if not job then error(err, 0) end
  if a.probe then return end -- (a reload's check that the script loads here: runner.prepare_reload)
  job.workers = n
  local segs, why = exchange.segments(job)
  local seg = segs and segs[a.segment or 1]
  if not seg then error("the job's script gives this worker no keyed segment: " .. tostring(why), 0) end
  -- (The hook interrupts only inside a stage's function.)
  for _, node in ipairs(job.nodes) do
    for _, v in pairs(node) do
      if type(v) == "function" then watchdog.register(v, node.stage_name) end
    end
  end
  local handlers, letters = exchange.collector(job)
  if seg.window or seg.group or seg.join then
    -- A keyed window (this worker's part of it), a group or a join
    -- (streamrun.exchange_windows, exchange_group, exchange_join).
    -- (The window handles are worker 0's: adopted last, so that nothing
    -- failing after frees them with this VM.)
    local xw = require "streamrun.exchange_windows"
    local x = xw.module_of(seg)
    local e = x.executor(seg, k, n, guard.new(handlers), nil, a.ex)
    local win = seg.window and xw.adopt(a.windows[k + 1]) or nil
    e.win = win
    S = { e = e, letters = letters, win = win, x = x }
    return
  end
  local e = exchange.executor(seg, k, n, guard.new(handlers), nil, a.ex)
  local shard = a.shards and core.cexchange.adopt_state(a.shards[k + 1]) or nil
  e.shard = shard
  S = { e = e, letters = letters, shard = shard, x = exchange }
end

-- phase(p, arg): this worker's part of phase p of a batch (arg: its
-- encoded arguments); its dead letters are sent whatever happens. The
-- watchdog sees the phase as worker 0's step (its number and stage).
function M.phase(p, arg)
  local e = S.e
  local x = S.x
  local a = exchange.decode_arg(arg)
  local P = watchdog.P
  local seg = e.seg
  local keyed = p == 2 and (seg.keyed or seg.sink or seg.window or seg.group or seg.join)
  P.batch_ms = a.time_ms
  P.rec_base = 0
  watchdog.enter(a.step or 0, keyed and keyed.stage_name or a.label or "")
  local ok, err = xpcall(p == 1 and x.phase1 or x.phase2, exchange.keep_table, e, a)
  P.step = 0
  P.batch_ms = 0
  exchange.send_letters(p == 1 and e.ex.keyed or e.ex.out, e.k, S.letters)
  if not ok then error(exchange.pack_error(err), 0) end
end

-- Before the VM closes: the shard goes back to its owner (worker 0's
-- handle), unfreed.
function M.shutdown()
  if S and S.shard then S.shard:detach() end
  if S and S.win then require("streamrun.exchange_windows").detach(S.win) end
  S = nil
end

return M
