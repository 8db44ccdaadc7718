-- streamrun.exchange_windows: a keyed window (reduce_by_key_and_window,
-- count_by_value_and_window) run on every worker (SPEC section 15). The
-- window's slices, and with an inverse function its previous result, are
-- split by key partition: worker k holds the keys of the partitions p with
-- p mod N == k. Per batch:
--
--  phase 1: worker k runs the stateless chain before the window over its
--    share of the batch in its own VM, folds the pairs into per-key
--    partials (keys in order of first appearance) and scatters them to the
--    owners of their partitions, each with its order (worker * 2^32 +
--    position: the batch's order of first appearance whatever N);
--  phase 2: the owner folds the partials of workers 0, 1, ... in that
--    order into its slice of the batch, adds it to its window (a second
--    window of the same times keeps each key's order in its slice), and
--    when the window is due folds its keys as one worker does its whole
--    window; the outputs go to worker 0 with their order;
--  worker 0 merges them by order: with an inverse the result's keys come
--    by key bytes (the order of a state's snapshot), without one in order
--    of first appearance in the window's slices (slice, then order in it),
--    as one worker gives them.
--
-- Checkpoints and reloads see the window as one: the checkpoint writer
-- merges the owners' parts by order (parts()), a reload takes whole(), so
-- the bytes are those one worker writes; a
-- window restored (or handed over by a reload) is split again by
-- partition, its orders the positions in its slices. The owner-local
-- "dirty" keys (windows.lua) are forgotten then, as one worker forgets
-- them.
local core = require "streamrun.core"
local batch = require "streamrun.batch"
local exchange = require "streamrun.exchange"
local fuse = require "streamrun.fuse"
local watchdog = require "streamrun.watchdog"
local windows = require "streamrun.windows"

local cx, cstate, cwindow = core.cexchange, core.cstate, core.cwindow
local ffi = core.ffi
local type, tnew = type, require "table.new"
local describe = require("streamrun.guard").describe

-- Marks a partial that could not cross (its [2] the dead letter's reason,
-- [3] its element described).
local LEFT = "\0streamrun: left out"

local M = {}

M.OPS = { reduce_by_key_and_window = true, count_by_value_and_window = true }
local SPAN = 2 ^ 32

-- The chain of narrow stages into node that only node reads, from a
-- source (or an earlier stage) at the batch's rate: { source, stages, raw
-- (a text source only the chain reads), origin (the source dead letters
-- name) }, or nil. cons: node -> its consumers.
-- side: which input of node (default: the only one).
function M.chain_into(job, node, cons, side)
  if (not side and #node.inputs ~= 1) or node.every_ms ~= job.batch_ms then return nil end
  local x = node.inputs[side or 1]
  if x.kind ~= "narrow" or #cons[x] ~= 1 then return nil end
  local stages = {}
  while x.kind == "narrow" do
    table.insert(stages, 1, x)
    x = x.inputs[1]
    if x.kind == "narrow" and #cons[x] ~= 1 then break end
  end
  local source = x
  if not source or source.event_time or source.timed or source.op == "generator" then return nil end
  if source.slide_ms and source.slide_ms ~= job.batch_ms then return nil end
  local raw = source.kind == "source" and source.format == "text" and not source.framed and #cons[source] == 1
  return { source = source, stages = stages, raw = raw, origin = exchange.origin_of(source) }
end

-- The segment of a keyed window fed by such a chain: the chain's fields
-- and window, or nil.
function M.find(job, node, cons)
  if not M.OPS[node.op] then return nil end
  local seg = M.chain_into(job, node, cons)
  if seg then seg.window = node end
  return seg
end

-- -- The window split among workers --

local function has_inverse(node)
  return node.op == "count_by_value_and_window" or node.finv ~= nil
end

-- The result's keys of every shard, for the status line.
local Results = {}
Results.__index = Results
function Results:count()
  local n = 0
  for _, s in ipairs(self.shards) do n = n + s.result:count() end
  return n
end

local Wins = {}
Wins.__index = Wins

-- Slices of the window at (from, to] of one window handle: times.
local function slice_times(slices, from, to)
  local out = {}
  for _, t in ipairs(slices:times()) do
    if t > from and t <= to then out[#out + 1] = t end
  end
  return out
end

-- The window of node split among n workers: worker k's part { slices,
-- orders, result (with an inverse), dirty } is shards[k + 1]. whole: a
-- window to go on from ({ slices, result }: a restore, a reload), or nil.
function M.split(node, whole, n)
  local name, finv = node.stage_name, has_inverse(node)
  local list = {}
  for k = 1, n do
    local result
    if finv then
      result = whole and whole.result and cx.shard(whole.result, n, k - 1)
        or cstate.new(name .. "#window", node.partitions, 0, 0)
    end
    -- (A window taken over knows no dirty keys: its first window folds
    -- every key again, as with one worker.)
    list[k] = { slices = cwindow.new(name), orders = cwindow.new(name .. "#orders"), result = result,
                dirty = not whole and finv and {} or nil }
  end
  if whole then
    local nparts = node.partitions
    for _, t in ipairs(whole.slices:times()) do
      local a, b, c = whole.slices:read(t - 1, t)
      local KA, KB, KO, KN = {}, {}, {}, {}
      for k = 1, n do KA[k], KB[k], KO[k], KN[k] = {}, {}, {}, 0 end
      for i = 1, c do
        local k = cx.partition(a[i], nparts) % n + 1
        local m = KN[k] + 1
        KN[k] = m
        KA[k][m], KB[k][m], KO[k][m] = a[i], b[i], i
      end
      for k = 1, n do
        list[k].slices:push(t, KA[k], KB[k], KN[k])
        list[k].orders:push(t, KO[k], {}, KN[k])
      end
    end
  end
  local w = setmetatable({ node = node, shards = list }, Wins)
  if finv then w.result = setmetatable({ shards = list }, Results) end
  return w
end

-- The window as one ({ slices, result }, copies): each slice the owners'
-- parts merged by order (in C: sr_window_split), the result gathered from
-- the owners' partitions. (A reload hands this over.)
function Wins:whole()
  local slices, orders, rs = {}, {}, {}
  for k, s in ipairs(self.shards) do slices[k], orders[k], rs[k] = s.slices, s.orders, s.result end
  local out = { slices = cwindow.merge(slices, orders) }
  if self.result then out.result = cx.gather(rs) end
  return out
end

-- The window as streamrun.ckpt writes it: the owners' parts, merged by
-- the writer (in its forked child: the loop thread copies nothing) into
-- the bytes one worker writes.
function Wins:parts()
  local slices, orders, rs = {}, {}, {}
  for k, s in ipairs(self.shards) do slices[k], orders[k], rs[k] = s.slices, s.orders, s.result end
  return { slices = slices, orders = orders, result = self.result and rs or nil }
end

-- The partitions the result of a kept window (Wins, or as Wins:whole
-- gives it) is hashed into, or nil (none, or a window without an inverse).
local function kept_partitions(kept)
  if getmetatable(kept) == Wins then kept = kept.shards[1] end
  return kept and kept.result and kept.result:partitions() or nil
end

-- -- One worker's part --

-- An executor: worker k of n running seg in this VM with its part of the
-- window (win); ex: the exchanges' addresses { input, keyed, out }.
function M.executor(seg, k, n, g, win, ex)
  return {
    seg = seg, k = k, n = n, g = g, win = win, ex = ex,
    chain = fuse.chain(seg.stages, g, false),
    lo = ffi.new("size_t[1]"), hi = ffi.new("size_t[1]"), view = ffi.new("sr_batch_t"),
  }
end

-- A worker's part as its VM adopts it from worker 0's addresses (init's
-- windows[k + 1]); detach() gives it back before the VM closes.
function M.adopt(a)
  return {
    slices = cwindow.adopt(a.slices), orders = cwindow.adopt(a.orders),
    result = a.result and cx.adopt_state(a.result) or nil,
    dirty = a.dirty and {} or nil,
  }
end

function M.detach(win)
  win.slices:detach()
  win.orders:detach()
  if win.result then win.result:detach() end
end

-- Worker k's share of the batch (as streamrun.exchange deals it).
M.share = exchange.share

-- Phase 1: the chain over worker k's share, folded into partials,
-- scattered to their owners.
function M.phase1(e, arg)
  local node = e.seg.window
  local part = e.chain.run(M.share(e, arg))
  -- The fold is the window's: a stall there is at no record of the step's
  -- input (a restart skips its whole input), not at the chain's last.
  watchdog.enter(arg.step, node.stage_name)
  local keys, partials, nk = windows.slice_of(node, e.g, part)
  local O, base = tnew(nk, 0), e.k * SPAN
  for j = 1, nk do O[j] = base + j end
  cx.clear(e.ex.keyed, e.k)
  local bad, whys = cx.scatter(e.ex.keyed, e.k, node.partitions, keys, partials, O, nk)
  if bad then
    -- A partial that cannot cross cannot be kept in a window either: its
    -- owner leaves the key out of the slice with one dead letter, as one
    -- worker does (a mark crosses in its place).
    local MA, MB, MO = {}, {}, {}
    for j, i in ipairs(bad) do
      MA[j], MO[j] = keys[i], O[i]
      MB[j] = { LEFT, ("cannot keep %s in a window"):format(whys[j]), describe(keys[i], partials[i]) }
    end
    cx.scatter(e.ex.keyed, e.k, node.partitions, MA, MB, MO, #bad)
  end
end

-- The keys whose partials came as LEFT marks, dropped from PA, PB (1..m)
-- and reported once each, in order of first appearance: the new m.
local function drop_left(node, g, PA, PB, m, left, order)
  for _, key in ipairs(order) do g.report_as(node, left[key][2], left[key][3]) end
  local j = 0
  for i = 1, m do
    if left[PA[i]] == nil then
      j = j + 1
      PA[j], PB[j] = PA[i], PB[i]
    end
  end
  for i = j + 1, m do PA[i], PB[i] = nil, nil end
  return j
end

-- The orders of a due window's outputs without an inverse: each key's
-- first appearance in the window's slices, as (slice, order in it).
local function first_seen(node, win, time_ms)
  local slot, ord = {}, {}
  for i, t in ipairs(slice_times(win.slices, time_ms - node.length_ms, time_ms)) do
    local a, _, c = win.slices:read(t - 1, t)
    local o = win.orders:read(t - 1, t)
    for j = 1, c do
      local key = a[j]
      if slot[key] == nil then slot[key], ord[key] = i, o[j] end
    end
  end
  return slot, ord
end

-- Phase 2: worker k's partitions: the partials folded into its slice, its
-- window advanced, its outputs with their orders put to worker 0.
function M.phase2(e, arg)
  local node, g, win = e.seg.window, e.g, e.win
  local PA, PB, first, m = {}, {}, {}, 0
  local left, order
  for from = 0, e.n - 1 do
    local A, B, O, c = cx.take(e.ex.keyed, from, e.k)
    for j = 1, c do
      m = m + 1
      local key, v = A[j], B[j]
      PA[m], PB[m] = key, v
      if first[key] == nil then first[key] = O[j] end
      if type(v) == "table" and v[1] == LEFT then
        left, order = left or {}, order or {}
        if left[key] == nil then
          left[key] = v
          order[#order + 1] = key
        end
      end
    end
  end
  if left then
    table.sort(order, function(x, y) return first[x] < first[y] end)
    m = drop_left(node, g, PA, PB, m, left, order)
  end
  local keys, accs, nk = windows.fold(node, g, PA, PB, m)
  local SB, SO = tnew(nk, 0), tnew(nk, 0)
  for i = 1, nk do
    local key = keys[i]
    SB[i], SO[i] = accs[key], first[key]
  end
  local OA, OB, n, bad = windows.advance(node, g, win, keys, SB, nk, arg.time_ms, arg.zero_ms)
  if bad then
    -- (The slice left those out: so does its orders.)
    local left, j = {}, 0
    for _, i in ipairs(bad) do left[i] = true end
    for i = 1, nk do
      if not left[i] then j = j + 1; SO[j] = SO[i] end
    end
    for i = j + 1, nk do SO[i] = nil end
    nk = j
  end
  win.orders:push(arg.time_ms, SO, {}, nk)
  win.orders:drop_until(windows.kept_after(node, arg.time_ms))
  local orders = tnew(n, 0)
  if has_inverse(node) then
    for j = 1, n do orders[j] = { OA[j] } end
  elseif n > 0 then
    local slot, ord = first_seen(node, win, arg.time_ms)
    for j = 1, n do
      local key = OA[j]
      orders[j] = ord[key]
      OB[j] = { OB[j], slot[key] }
    end
  end
  local out = windows.finish(node, OA, OB, n)
  if e.k == 0 then
    cx.key_orders(orders, n)
    e.kept = { out.a, out.b, orders, n }
    return
  end
  cx.clear(e.ex.out, e.k)
  local bad_out, whys = cx.put(e.ex.out, e.k, 0, out.a, out.b, orders, n)
  if bad_out then exchange.left_out(g, node, bad_out, whys, out.a, out.b) end
end

-- -- Worker 0 --

-- The owners' outputs merged by order: mode "key": by key bytes (a
-- window with an inverse); "slot": by (slice, order), the slice in each
-- value's [2] (a window without one); "order": by order (a group).
function M.gather(ex, n, mode, own)
  local lists, at, total = { own }, { 1 }, own[4]
  for w = 1, n - 1 do
    local A, B, O, c = cx.take(ex, w, 0)
    lists[w + 1], at[w + 1] = { A, B, O, c }, 1
    total = total + c
  end
  local slot = mode == "slot"
  local OA, OB = tnew(total, 0), tnew(total, 0)
  for m = 1, total do
    local best, bs, bo
    for w = 1, n do
      local l, i = lists[w], at[w]
      if i <= l[4] then
        local o = l[3][i]
        local s = slot and l[2][i][2] or 0
        if not best or s < bs or (s == bs and o < bo) then best, bs, bo = w, s, o end
      end
    end
    local l, i = lists[best], at[best]
    OA[m] = l[1][i]
    if slot then OB[m] = l[2][i][1] else OB[m] = l[2][i] end
    at[best] = i + 1
  end
  return { n = total, a = OA, b = OB }
end

-- How worker 0 merges the owners' outputs of seg.
function M.gather_mode(seg)
  if seg.group then return "order" end
  return has_inverse(seg.window) and "key" or "slot"
end

local Par = {}
Par.__index = Par

-- Both phases on every worker (streamrun.exchange's).
M.both = exchange.both

-- The rest of a segment's step once its input is dealt (arg: the phases'
-- arguments): phase 1 and 2 of X on every worker, the dead letters
-- delivered, the owners' outputs gathered into par.out (mode: gather's)
-- for stage, the stage the watchdog names in phase 2.
function M.run_phases(par, X, arg, stage, mode)
  local n, ex, g = par.n, par.ex, par.g
  local sarg = exchange.encode_arg(arg)
  local waited = M.both(par, 1, X.phase1, arg, sarg)
  for k = 1, n - 1 do exchange.deliver(ex.keyed, k, g) end
  watchdog.enter(watchdog.P.step, stage.stage_name)
  waited = waited + M.both(par, 2, X.phase2, arg, sarg)
  for k = 1, n - 1 do exchange.deliver(ex.out, k, g) end
  par.workers.waited_ms = (par.workers.waited_ms or 0) + waited
  par.out = M.gather(ex.out, n, mode, par.e0.kept)
  par.e0.kept = nil
  return batch.empty()
end

local function split(self, results, time_ms)
  local seg, n, ex = self.seg, self.n, self.ex
  local input = results[seg.source] or batch.empty()
  -- (step and label: what the watchdog says of a worker's stall; without
  -- them the other workers' VMs would not be watched)
  local arg = { time_ms = time_ms, zero_ms = self.plan.zero_ms, step = watchdog.P.step, label = self.label }
  local cb = rawget(input, "cbatch")
  if cb ~= nil then
    arg.cbatch = tonumber(ffi.cast("uintptr_t", cb))
  else
    local ok, bad, why = exchange.deal(ex.input, input, n)
    if not ok then error(("stage %s: element %d: %s"):format(seg.stages[1].stage_name, bad, why), 0) end
  end
  return M.run_phases(self, self.x, arg, self.stage, M.gather_mode(seg))
end

function Par:run(results, time_ms)
  local input = results[self.seg.source]
  return exchange.alone_or_split(self, input and input.n or 0, split, results, time_ms)
end

-- The window's step: what the segment's step gathered.
local Handed = exchange.Handed
M.Handed = Handed

-- The module running seg's phases: this one for a window,
-- streamrun.exchange_group for a group.
function M.module_of(seg)
  if seg.group then return require "streamrun.exchange_group" end
  if seg.join then return require "streamrun.exchange_join" end
  return M
end

-- Sets the plan up to run seg (a window's or a group's: M.find,
-- streamrun.exchange_group) on the workers of ctx.workers, as
-- streamrun.exchange's attach does for a keyed segment: the chain's and
-- the stage's steps are replaced, a window (ctx.windows) is split, the
-- other workers' VMs are started. Returns seg, or nil and why not.
function M.attach(job, steps, ctx, seg, index)
  local w = ctx.workers
  local node, last = seg.window or seg.group, seg.stages[#seg.stages]
  local ci, wi
  for i, s in ipairs(steps) do
    if s.kind == "chain" and s.node == last and not s.sink then ci = i end
    if s.node == node then wi = i end
  end
  if not ci or not wi then return nil, "the plan does not feed the chain to its stage" end
  local n = w.n
  local exs = { input = cx.new(n), keyed = cx.new(n), out = cx.new(n) }
  local addr = { input = exs.input:address(), keyed = exs.keyed:address(), out = exs.out:address() }
  local name = node.stage_name
  local wins, parts
  if seg.window then
    local kept = ctx.windows_in and ctx.windows_in[name]
    -- A kept window's result hashed into other partitions than the job's
    -- keeps them, as with one worker (streamrun.exchange's keyed state).
    local held = kept_partitions(kept)
    if held and held ~= node.partitions then
      return nil, ("the state of %s holds %d partitions, the job %d"):format(name, held, node.partitions)
    end
    wins = M.split(node, kept, n)
    parts = {}
    local function address(h) return tonumber(ffi.cast("uintptr_t", h:pointer())) end
    for k, s in ipairs(wins.shards) do
      parts[k] = { slices = address(s.slices), orders = address(s.orders),
                   result = s.result and address(s.result) or false, dirty = s.dirty ~= nil }
    end
  end
  local vms = exchange.new_vms(n, job, { ex = addr, shards = false, windows = parts or false, segment = index })
  local X = M.module_of(seg)
  local par = setmetatable({
    kind = "parallel", node = last, input = seg.source, every = steps[ci].every, label = steps[ci].label,
    seg = seg, n = n, ex = addr, exs = exs, vms = vms, g = ctx.guard, plan = ctx.plan, workers = w,
    pool_addr = tonumber(ffi.cast("uintptr_t", w.pool)), x = X, stage = node,
    e0 = X.executor(seg, 0, n, ctx.guard, wins and wins.shards[1], addr),
  }, Par)
  if w.adaptive and seg.group then
    -- A group keeps no state: a small batch may run on worker 0 alone,
    -- through the one-worker plan's chain and group steps
    -- (streamrun.splitcost); the group's step hands on their output.
    local chain, group = steps[ci], steps[wi]
    exchange.may_run_alone(par, function(results, time_ms)
      local out = chain:run(results, time_ms)
      results[last] = out
      par.out = group:run(results, time_ms)
      return out
    end)
  end
  steps[ci] = par
  steps[wi] = setmetatable({ kind = steps[wi].kind, node = node, every = steps[wi].every, label = steps[wi].label,
    window = wins, par = par, input = last }, Handed)
  if wins then ctx.windows[name] = wins end
  if seg.raw then ctx.plan.raw_sources[seg.source] = true end
  exchange.add_parallel(ctx.plan, par)
  return seg
end

return M
