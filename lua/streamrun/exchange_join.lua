-- streamrun.exchange_join: a join (inner, left, right, full outer) or
-- cogroup of two keyed streams within a batch, run on every worker (SPEC
-- section 15), each side a chain of narrow stages only the join reads.
-- Per batch:
--
--  phase 1: worker k runs both sides' chains over its share of each side's
--    batch in its own VM; what is no pair with a key is its dead letter
--    there; the pairs of each side go to the owners of their keys'
--    partitions (p mod N) through that side's exchange, each with its
--    order (worker * 2^32 + position: the side's arrival order);
--  phase 2: the owner gathers each side's pairs of workers 0, 1, ... in
--    that order and joins them as one worker joins a batch
--    (streamrun.ops), for its keys only; each output goes to worker 0
--    with the order of its key: the first arrival on the side whose keys
--    lead (the left, the right for right_outer_join), then the keys of the
--    other side alone by their first arrival there;
--  worker 0 merges by that order: the batch one worker gives.
local core = require "streamrun.core"
local batch = require "streamrun.batch"
local exchange = require "streamrun.exchange"
local fuse = require "streamrun.fuse"
local group = require "streamrun.exchange_group"
local ops = require "streamrun.ops"
local watchdog = require "streamrun.watchdog"
local xw = require "streamrun.exchange_windows"

local cx, cstate = core.cexchange, core.cstate
local ffi = core.ffi
local tnew = require "table.new"

local M = {}

M.OPS = { join = true, left_outer_join = true, right_outer_join = true, full_outer_join = true, cogroup = true }
-- (After every order of the leading side: 2^40 at most.)
local SECOND = 2 ^ 41

-- The segment of a join whose two inputs are chains only it reads (each
-- as streamrun.exchange_windows.chain_into gives it): { join, sides = {
-- left, right } } and the left's fields, or nil.
function M.find(job, node, cons)
  if not M.OPS[node.op] or #node.inputs ~= 2 then return nil end
  local left = xw.chain_into(job, node, cons, 1)
  local right = left and xw.chain_into(job, node, cons, 2)
  if not right then return nil end
  return { join = node, sides = { left, right }, source = left.source, stages = left.stages, raw = left.raw,
           origin = left.origin }
end

-- The executor of one side (what exchange_windows.share reads).
local function side_executor(side, k, n, g, input)
  return {
    seg = side, k = k, n = n, ex = { input = input },
    chain = fuse.chain(side.stages, g, false),
    lo = ffi.new("size_t[1]"), hi = ffi.new("size_t[1]"), view = ffi.new("sr_batch_t"),
  }
end

-- An executor: worker k of n running seg in this VM; ex: the exchanges'
-- addresses { input, input2, keyed, keyed2, out }.
function M.executor(seg, k, n, g, _, ex)
  return {
    seg = seg, k = k, n = n, g = g, ex = ex, nparts = seg.join.job.partitions,
    sides = { side_executor(seg.sides[1], k, n, g, ex.input), side_executor(seg.sides[2], k, n, g, ex.input2) },
  }
end

-- Phase 1: both chains over worker k's shares, the pairs scattered. The
-- watchdog sees each side's records as the one-worker plan's step of its
-- chain (arg.steps, arg.labels), so a restart skips a stuck record in
-- that side's input.
function M.phase1(e, arg)
  local parts = {}
  for s = 1, 2 do
    watchdog.enter(arg.steps[s], arg.labels[s])
    parts[s] = e.sides[s].chain.run(xw.share(e.sides[s], { cbatch = arg["cbatch" .. s], total = arg["total" .. s] }))
  end
  watchdog.enter(arg.step, arg.label)
  for s = 1, 2 do
    group.scatter_pairs(e, e.seg.join, parts[s], s == 1 and e.ex.keyed or e.ex.keyed2)
  end
end

-- One side's pairs for worker k, in arrival order: a batch, and key ->
-- order of its first pair.
local function side_input(e, ex)
  local A, B, first, m = {}, {}, {}, 0
  for from = 0, e.n - 1 do
    local KA, KB, KO, c = cx.take(ex, from, e.k)
    for j = 1, c do
      m = m + 1
      local key = KA[j]
      A[m], B[m] = key, KB[j]
      if first[key] == nil then first[key] = KO[j] end
    end
  end
  return { n = m, a = A, b = B }, first
end

-- Phase 2: worker k's keys joined, put to worker 0 with their orders.
function M.phase2(e)
  local node = e.seg.join
  local L, lfirst = side_input(e, e.ex.keyed)
  local R, rfirst = side_input(e, e.ex.keyed2)
  local out = ops[node.op](node, e.g, L, R)
  local lead, other = lfirst, rfirst
  if node.op == "right_outer_join" then lead, other = rfirst, lfirst end
  local n, A = out.n, out.a
  local orders = tnew(n, 0)
  for j = 1, n do
    local key = A[j]
    orders[j] = lead[key] or SECOND + other[key]
  end
  if e.k == 0 then
    e.kept = { out.a, out.b, orders, n }
    return
  end
  cx.clear(e.ex.out, e.k)
  local bad, whys = cx.put(e.ex.out, e.k, 0, out.a, out.b, orders, n)
  if bad then exchange.left_out(e.g, node, bad, whys, out.a, out.b) end
end

-- -- Worker 0 --

local Par = {}
Par.__index = Par

local function split(self, results, time_ms)
  local seg, n, ex = self.seg, self.n, self.ex
  local arg = { time_ms = time_ms, step = watchdog.P.step, label = self.label, steps = self.side_steps,
                labels = self.side_labels }
  for s = 1, 2 do
    local side = seg.sides[s]
    local input = results[side.source] or batch.empty()
    local cb = rawget(input, "cbatch")
    if cb ~= nil then
      arg["cbatch" .. s] = tonumber(ffi.cast("uintptr_t", cb))
    else
      arg["total" .. s] = input.n
      local ok, bad, why = exchange.deal(s == 1 and ex.input or ex.input2, input, n)
      if not ok then error(("stage %s: element %d: %s"):format(side.stages[1].stage_name, bad, why), 0) end
    end
  end
  return xw.run_phases(self, M, arg, seg.join, "order")
end

function Par:run(results, time_ms)
  -- The other side's input as its own step saw it (without the records a
  -- restart skips there).
  local held, unheld = self.held, results[self.held_node]
  self.held = nil
  if held ~= nil then results[self.held_node] = held end
  local records = 0
  for _, side in ipairs(self.seg.sides) do
    local input = results[side.source]
    records = records + (input and input.n or 0)
  end
  local out = exchange.alone_or_split(self, records, split, results, time_ms)
  results[self.held_node] = unheld
  return out
end

-- The other side's chain step: the segment's step runs it; this one hands
-- it its input.
local Done = {}
Done.__index = Done
function Done:run(results)
  self.par.held = results[self.input]
  return batch.empty()
end

-- Sets the plan up to run seg (M.find) on the workers of ctx.workers: the
-- step of the side chain that runs last becomes the segment's step, the
-- other's does nothing, the join's hands on what the segment's step
-- gathered; the other workers' VMs are started. Returns seg, or nil and
-- why not.
function M.attach(job, steps, ctx, seg, index)
  local w = ctx.workers
  local node = seg.join
  local lasts = { seg.sides[1].stages[#seg.sides[1].stages], seg.sides[2].stages[#seg.sides[2].stages] }
  local ci, ji = {}, nil
  for i, s in ipairs(steps) do
    for side = 1, 2 do
      if s.kind == "chain" and s.node == lasts[side] and not s.sink then ci[side] = i end
    end
    if s.node == node then ji = i end
  end
  if not ci[1] or not ci[2] or not ji then return nil, "the plan does not feed both chains to the join" end
  local n = w.n
  local exs = { input = cx.new(n), input2 = cx.new(n), keyed = cx.new(n), keyed2 = cx.new(n), out = cx.new(n) }
  local addr = {}
  for name, x in pairs(exs) do addr[name] = x:address() end
  local vms = exchange.new_vms(n, job, { ex = addr, shards = false, windows = false, segment = index })
  local at, other = ci[1], ci[2]
  if other > at then at, other = other, at end
  local par = setmetatable({
    kind = "parallel", node = steps[at].node, input = steps[at].input, every = steps[at].every,
    label = steps[at].label, seg = seg, n = n, ex = addr, exs = exs, vms = vms, g = ctx.guard, plan = ctx.plan,
    workers = w, pool_addr = tonumber(ffi.cast("uintptr_t", w.pool)),
    e0 = M.executor(seg, 0, n, ctx.guard, nil, addr),
    side_steps = { ci[1], ci[2] }, side_labels = { steps[ci[1]].label, steps[ci[2]].label },
    held_node = steps[other].input,
  }, Par)
  if w.adaptive then
    -- A join keeps no state: a small batch may run on worker 0 alone,
    -- through the one-worker plan's steps, in their order, each watched
    -- as its own step (streamrun.splitcost); the join's step hands on
    -- their output.
    local first, second, join = steps[other], steps[at], steps[ji]
    exchange.may_run_alone(par, function(results, time_ms)
      watchdog.enter(other, first.label)
      results[first.node] = first:run(results, time_ms)
      watchdog.enter(at, second.label)
      local out = second:run(results, time_ms)
      results[second.node] = out
      watchdog.enter(ji, join.label)
      par.out = join:run(results, time_ms)
      return out
    end)
  end
  steps[at] = par
  steps[other] = setmetatable({ kind = "chain", node = steps[other].node, input = steps[other].input,
    every = steps[other].every, label = steps[other].label, par = par }, Done)
  steps[ji] = setmetatable({ kind = "wide", node = node, every = steps[ji].every, label = steps[ji].label,
    par = par, input = lasts[1] }, xw.Handed)
  for side = 1, 2 do
    if seg.sides[side].raw then ctx.plan.raw_sources[seg.sides[side].source] = true end
  end
  exchange.add_parallel(ctx.plan, par)
  return seg
end

return M
