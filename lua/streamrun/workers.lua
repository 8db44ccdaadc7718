-- streamrun.workers: a job on several cores (SPEC section 15, issue 14).
--
-- A job runs on N workers: the loop thread is worker 0, N - 1 pthreads the
-- others (runtime/sr_workers.c: a fixed pool woken once per phase of a
-- batch under one mutex, never once per record). Sources, the write-ahead
-- log, outputs and checkpoint scheduling stay on the loop thread. This
-- module opens the pool, says in the log what runs where, and counts each
-- worker's busy time.
--
-- What runs on several workers: the built-in word count (each worker
-- counts its range of the batch in C; the counts are merged in worker
-- order: streamrun.native; into a keyed stage it is a keyed segment,
-- its counts sent from C), and every keyed segment of the job
-- (streamrun.exchange; keyed windows: streamrun.exchange_windows;
-- group_by_key: streamrun.exchange_group; joins and cogroup:
-- streamrun.exchange_join): each worker runs it in its own LuaJIT VM
-- (runtime/sr_worker_vm.c, streamrun.worker) over its range, exchanges
-- partials or pairs by key partition through per-(from, to) buffers
-- (runtime/sr_exchange.c), and runs the keyed stage for the partitions it
-- owns with its own state shard (runtime/sr_shard.c) or window slices.
-- Outputs, state, dead letters and checkpoints are those of one worker
-- for any N. Every other stage runs on worker 0.
--
-- Module-level Lua state of a job script is per worker: each VM loads the
-- script (the README says so).
local core = require "streamrun.core"

local C, ffi = core.C, core.ffi

local M = {}

M.MAX = 256

-- The workers of each job, shared by its sessions (a Kafka job runs one
-- session per input partition, one after the other on the loop thread).
local of_job = setmetatable({}, { __mode = "k" })

-- Checks a requested count: a positive integer up to M.MAX or "auto".
-- Returns the value (numbers from strings, as --workers gives them), or
-- nil and why.
function M.check(v, what)
  if v == nil or v == "auto" then return "auto" end
  local n = tonumber(v)
  if not n or n < 1 or n % 1 ~= 0 or n > M.MAX then
    return nil, ("%s: workers must be \"auto\" or an integer from 1 to %d, got %s"):format(what, M.MAX, tostring(v))
  end
  return n
end

-- A --workers value (or the test driver's option) over the job's own:
-- returns nil, or why the value is refused.
function M.override(job, v)
  if v == nil then return nil end
  local n, why = M.check(v, "--workers")
  if not n then return why end
  job.workers = n
  return nil
end

-- The number of workers job runs on: job.workers ("auto": the CPUs the
-- process may use, at most the job's partitions).
function M.count(job)
  local want = job.workers or "auto"
  if want == "auto" then return math.max(1, math.min(C.sr_workers_online_cpus(), job.partitions)) end
  return want
end

-- The steps of a compiled plan that run on several workers: the built-in
-- word counts, and the keyed segments (streamrun.exchange).
local function parallel_steps(plan)
  local native, keyed = 0, 0
  for _, step in ipairs(plan.steps or {}) do
    if step.kind == "native" then native = native + 1 end
    if step.kind == "parallel" then keyed = keyed + 1 end
  end
  return native, keyed
end

-- The workers of a session: { pool (a C pool, nil with one worker), n,
-- busy (milliseconds per worker at the last report), adaptive (a small
-- batch of a keyed segment without state may run on worker 0 alone:
-- streamrun.splitcost) }. log says once what does not run on several
-- workers yet.
function M.open(job, log, adaptive)
  if of_job[job] then return of_job[job] end
  local n = M.count(job)
  -- Told to stop before it started: the last batch runs on worker 0 (the
  -- same outputs), without loading the script into other VMs.
  local stopping = n > 1 and C.sr_stop_requested() ~= 0
  if stopping then n = 1 end
  local w = { n = n, busy = {}, said = false, log = log, adaptive = adaptive }
  for i = 1, n do w.busy[i] = 0 end
  if n > 1 then
    local pool = C.sr_workers_new(n)
    if pool == nil then
      log("workers: cannot start %d threads; running on 1 worker", n)
      w.n, w.busy = 1, { 0 }
    else
      w.pool = ffi.gc(pool, C.sr_workers_free)
    end
  end
  of_job[job] = w
  return w
end

-- The stages of a keyed segment (streamrun.exchange), as the log names
-- them: "map.1 > reduce_by_key.2 > running".
function M.segment_names(seg)
  local names = {}
  if seg.join then
    -- (Both sides' chains into the join.)
    for _, side in ipairs(seg.sides) do
      local chain = {}
      for _, s in ipairs(side.stages) do chain[#chain + 1] = s.stage_name end
      names[#names + 1] = table.concat(chain, " > ")
    end
    return "(" .. table.concat(names, ", ") .. ") > " .. seg.join.stage_name
  end
  for _, s in ipairs(seg.stages) do names[#names + 1] = s.stage_name end
  for _, f in ipairs { "sink", "keyed", "window", "group" } do
    if seg[f] then names[#names + 1] = seg[f].stage_name end
  end
  return table.concat(names, " > ")
end

-- After a compile: says once (per job) which part of the plan runs on one
-- worker only. A plan with nothing to split gives its threads back and
-- runs on one worker, which the status line and /metrics then show.
function M.note_plan(w, plan, job)
  if w.n == 1 or w.said then return end
  w.said = true
  local asked = (job.workers or "auto") == "auto" and ("auto (%d CPUs)"):format(w.n) or tostring(w.n)
  local kept = (w.pool and C.sr_workers_pinned(w.pool) ~= 0) and " (each worker kept to a CPU)" or ""
  local native, keyed = parallel_steps(plan)
  if native + keyed == 0 then
    w.log("workers: %s; nothing in this job runs on several workers (%s), so it runs on 1 worker", asked,
      plan.parallel_why or "no keyed segment")
    w.pool, w.n, w.busy = nil, 1, { 0 }
  elseif keyed > 0 then
    -- (segments without state whose small batches may run on worker 0
    -- alone: streamrun.splitcost)
    local alone = {}
    for _, par in ipairs(plan.parallels or {}) do
      if par.alone then alone[par.seg] = true end
    end
    local parts = {}
    for i, seg in ipairs(plan.parallel_segs or { plan.parallel_seg }) do
      parts[i] = M.segment_names(seg) .. (alone[seg] and " (a small batch on worker 0 alone when faster)" or "")
    end
    if native > 0 then parts[#parts + 1] = "the built-in word count" end
    local alone_why = {}
    for _, a in ipairs(plan.alone_segs or {}) do
      alone_why[#alone_why + 1] = ("; %s on worker 0 (%s)"):format(M.segment_names(a.seg), tostring(a.why))
    end
    w.log("workers: %s; %s run on %d workers, the other stages on worker 0%s%s", asked, table.concat(parts, "; "),
      w.n, kept, table.concat(alone_why))
  else
    w.log("workers: %s; the built-in word count runs on %d workers, the other stages on worker 0%s", asked, w.n, kept)
  end
end

-- Each worker's busy milliseconds since the last call (worker 0 is the
-- loop thread: with no pool, the batch's processing time).
function M.batch_busy(w, processing_ms)
  local out = {}
  if not w.pool then
    out[1] = processing_ms
    w.busy[1] = w.busy[1] + processing_ms
    return out
  end
  local pool = w.pool
  for i = 1, w.n do
    local total = C.sr_workers_busy_ms(pool, i - 1)
    -- Worker 0 also runs every stage that is not parallel: its busy time
    -- is the whole batch's but what it spent waiting for the others
    -- (streamrun.exchange counts that).
    if i == 1 then
      w.busy0 = (w.busy0 or 0) + math.max(0, processing_ms - (w.waited_ms or 0))
      w.waited_ms = 0
      total = w.busy0
    end
    out[i] = total - w.busy[i]
    w.busy[i] = total
  end
  return out
end

-- Cumulative busy milliseconds per worker (for /metrics), with those
-- before a reload (a worker the job no longer has keeps its figure).
function M.totals(w)
  local out, before = {}, w.before or {}
  for i = 1, math.max(w.n, #before) do out[i] = (before[i] or 0) + (w.busy[i] or 0) end
  return out
end

-- Counts busy (milliseconds per worker, from M.totals before a reload)
-- in the totals from now on.
function M.add_before(w, busy)
  if not busy then return end
  w.before = {}
  for i, ms in ipairs(busy) do w.before[i] = tonumber(ms) end
end

-- The status line's part: "busy 12.0/3.1 ms" (one figure per worker).
function M.describe(busy)
  local parts = {}
  for i, ms in ipairs(busy) do parts[i] = ("%.1f"):format(ms) end
  return table.concat(parts, "/")
end

-- The --stats field: "[12.000, 3.100]".
function M.json(busy)
  local parts = {}
  for i, ms in ipairs(busy) do parts[i] = ("%.3f"):format(ms) end
  return "[" .. table.concat(parts, ", ") .. "]"
end

-- A /metrics collector (monitor.add_collector): workers and each
-- worker's busy seconds, from which utilisation is the rate.
function M.collector(metrics)
  return function(_, S, out)
    local w = S.workers
    if not w then return end
    metrics.family(out, "streamrun_workers", "gauge", "Worker threads the job runs on.", { { w.n } })
    local samples = {}
    for i, ms in ipairs(M.totals(w)) do samples[i] = { ms / 1000, labels = { { "worker", tostring(i - 1) } } } end
    metrics.family(out, "streamrun_worker_busy_seconds_total", "counter",
      "Time each worker spent running batches (rate = utilisation).", samples)
  end
end

return M
