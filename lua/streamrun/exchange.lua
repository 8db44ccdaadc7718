-- streamrun.exchange: a keyed segment of a plan run on every worker (SPEC
-- section 15). The segment is a chain of narrow stages straight from a
-- source, folded into a reduce_by_key or count_by_value, and/or into a
-- map_with_state or update_state_by_key (processing-time timeouts; with
-- or without opts.initial, or a view of its state). Per batch:
--
--  phase 1: worker k runs the chain over its share of the batch (a
--    contiguous range of records, read where they are in the C batch for a
--    text source) in its own VM, folding into partial aggregates in order
--    of first appearance, and scatters them in one call into the buffer of
--    the worker owning each key's partition (p mod N) (the built-in word
--    count: counted in C and its words' counts scattered from C);
--  phase 2: the owner merges the partials from workers 0, 1, ... in that
--    order (a reducer sees the elements' arrival order), runs the stateful
--    stage over its partitions with its own shard of the state (its own
--    table, slab and timing wheel: timeouts fire there), and puts its
--    outputs, each with its order, to worker 0;
--  worker 0 merges the outputs by order: a keyed stage's outputs come in
--    order of the first arrival of their key (what one worker gives), its
--    timed-out keys after them by key bytes (update_state_by_key: the kept
--    keys by key bytes, then the new ones by first arrival), so a batch's
--    output is the same whatever N.
--
-- A keyed stage's opts.initial is seeded by worker 0 between the phases
-- of its first batch (where one worker seeds it: after the chain's dead
-- letters), its function called there alone, each key put into its
-- owner's shard; a shard restored or kept by a reload is not seeded again.
-- A view of the stage's state (state_snapshots) reads every shard on
-- worker 0 once the batch's phases are done, ordered by key bytes as one
-- state's snapshot is.
--
-- A segment that keeps no state (a sink with no keyed stage after it; a
-- group or a join: streamrun.exchange_windows, exchange_join) may run a
-- small batch on worker 0 alone instead, through the steps of the
-- one-worker plan it replaced, when its measured costs say that is
-- faster (M.alone_or_split, streamrun.splitcost).
--
-- Dead letters of the other workers are sent to worker 0 and written after
-- worker 0's own of the same phase, in worker order. A checkpoint writes
-- the shards as one state, each partition from its owner's shard
-- (streamrun.ckpt), so it restores with any N.
local core = require "streamrun.core"
local batch = require "streamrun.batch"
local builtins = require "streamrun.builtins"
local fuse = require "streamrun.fuse"
local native = require "streamrun.native"
local ops = require "streamrun.ops"
local sources = require "streamrun.sources"
local splitcost = require "streamrun.splitcost"
local stateful = require "streamrun.stateful"
local watchdog = require "streamrun.watchdog"

local cx = core.cexchange
local cstate = core.cstate
local C, ffi = core.C, core.ffi
local type, floor, tnew = type, math.floor, require "table.new"

local M = {}

local SINKS = { reduce_by_key = true, count_by_value = true }
local KEYED = { map_with_state = true, update_state_by_key = true }
-- Orders of phase 1: worker * SPAN + position of the key among the
-- worker's partials (exact in a double).
local SPAN = 2 ^ 32
-- (Marks a job's fatal error in a worker's error string: C strings stop
-- at a zero byte, so none.)
local FATAL = "\1streamrun-fatal\1"

local function consumers_of(job)
  local c = {}
  for _, node in ipairs(job.nodes) do
    c[node] = c[node] or {}
    for _, input in ipairs(node.inputs) do
      c[input] = c[input] or {}
      table.insert(c[input], node)
    end
  end
  return c
end

-- The job's first keyed segment that can run on several workers (past
-- the stages in skip): a keyed window's, a group's or a join's is as
-- streamrun.exchange_windows, exchange_group and exchange_join find it;
-- else
-- { source (the chain's input: a source or an earlier stage), stages (the
-- chain), sink (reduce_by_key or count_by_value, or nil: the chain's pairs
-- go to the keyed stage as they are), keyed (map_with_state or
-- update_state_by_key, or nil), raw (the source is a text source only the
-- chain reads), word_count (the chain and sink are the built-in word
-- count: each worker counts its share in C) }, or nil and why none.
-- skip: stages of segments found before (their chains and keyed stages),
-- passed over.
function M.find(job, skip)
  if type(job.path) ~= "string" or not job.load_opts then
    return nil, "the job is built by a function (each worker loads the job from its script)"
  end
  for _, s in ipairs(job.sources) do
    -- (A Kafka job runs a session per input partition, one at a time.)
    if s.c_hooks then return nil, "a Kafka job splits its work by input partition" end
  end
  local cons = consumers_of(job)
  local why = "no chain into a reduce_by_key, count_by_value, map_with_state, update_state_by_key, "
    .. "group_by_key, join, cogroup or keyed window"
  local xw = require "streamrun.exchange_windows"
  for _, node in ipairs(job.nodes) do
    if skip and skip[node] then goto next_node end
    -- A keyed window (streamrun.exchange_windows: seg.window), a
    -- group_by_key (streamrun.exchange_group: seg.group), a join or
    -- cogroup (streamrun.exchange_join: seg.join).
    local wseg = xw.find(job, node, cons) or require("streamrun.exchange_group").find(job, node, cons)
      or require("streamrun.exchange_join").find(job, node, cons)
    if wseg then return wseg end
    local x = node.inputs[1]
    -- A keyed stage the chain feeds directly (no aggregate before it).
    local direct = KEYED[node.op] and node.timeout_clock ~= "event"
    if (SINKS[node.op] or direct) and #node.inputs == 1 and x.kind == "narrow" and #cons[x] == 1 then
      local sink = not direct and node or nil
      local stages = {}
      while x.kind == "narrow" do
        table.insert(stages, 1, x)
        x = x.inputs[1]
        if x.kind == "narrow" and #cons[x] ~= 1 then break end -- (a stage others read too)
      end
      local source = x
      local word_count = #stages == 1 and stages[1].op == "flat_map" and stages[1].fn == builtins.words
        and node.op == "count_by_value" and x.kind == "source" and x.format == "text" and not x.framed
      -- The chain's input: a source, or any stage before it (its batch is
      -- dealt to the workers), without event times.
      if source and not source.event_time and not source.timed and source.op ~= "generator" then
        local keyed = direct and node or (#cons[node] == 1 and cons[node][1]) or nil
        if not (keyed and KEYED[keyed.op] and #keyed.inputs == 1 and keyed.timeout_clock ~= "event") then
          keyed = nil
        end
        -- The built-in word count alone counts on every worker in C and
        -- merges there (streamrun.native); before a keyed stage, its
        -- counts are exchanged like any partials, so that each owner runs
        -- the keyed stage over its own partitions.
        if word_count and not keyed then
          why = "the built-in word count runs on every worker in C"
          goto next_node
        end
        -- A text source only the chain reads: each worker reads its range
        -- of the C batch itself.
        local raw = source.kind == "source" and source.format == "text" and not source.framed and #cons[source] == 1
        return { source = source, stages = stages, sink = sink, keyed = keyed, raw = raw,
                 origin = M.origin_of(source), word_count = word_count }
      end
    end
    ::next_node::
  end
  return nil, why
end

-- The name of the one source upstream of node whose records its elements
-- still are, which dead letters name: through stages that keep each
-- element's record (narrow ones, map_with_state), as one worker's batches
-- say; none past an aggregate (a window, a reduce...), a union or a join.
function M.origin_of(node)
  while node and node.kind ~= "source" do
    node = (node.kind == "narrow" or node.op == "map_with_state") and #node.inputs == 1 and node.inputs[1] or nil
  end
  return node and node.stage_name
end

-- Every keyed segment of the job that can run on several workers, in the
-- order of its stages (each as M.find gives it), or nil and why none.
function M.segments(job)
  local list, skip = {}, {}
  while true do
    local seg, why = M.find(job, skip)
    if not seg then
      if #list == 0 then return nil, why end
      return list
    end
    list[#list + 1] = seg
    for _, side in ipairs(seg.sides or { seg }) do
      for _, st in ipairs(side.stages) do skip[st] = true end
    end
    for _, f in ipairs { "sink", "keyed", "window", "group", "join" } do
      if seg[f] then skip[seg[f]] = true end
    end
  end
end

-- -- The state of a segment's keyed stage: one shard per worker --

local Shards = {}
Shards.__index = Shards

local function shards_of(node, kept, n)
  local list = {}
  if getmetatable(kept) == Shards and #kept.shards == n then return kept end
  local whole = kept
  if getmetatable(kept) == Shards then whole = cx.gather(kept.shards) end
  for k = 1, n do
    list[k] = whole and cx.shard(whole, n, k - 1) or stateful.new_state(node)
    list[k]:set_timeout(node.timeout_ms)
  end
  return setmetatable({ shards = list, nparts = node.partitions, name = node.stage_name }, Shards)
end

function Shards:count()
  local n = 0
  for _, s in ipairs(self.shards) do n = n + s:count() end
  return n
end

function Shards:memory()
  local n = 0
  for _, s in ipairs(self.shards) do n = n + s:memory() end
  return n
end

function Shards:get(k)
  return self.shards[cx.partition(k, self.nparts) % #self.shards + 1]:get(k)
end

-- Every (k, state), ordered by key bytes as one state's snapshot is.
function Shards:snapshot()
  return cstate.snapshot_of(self.shards)
end

-- One state holding every shard's keys (a copy).
function Shards:gathered()
  return cx.gather(self.shards)
end

-- For a reload's handoff: the keys as one state (which the next plan
-- splits again).
function Shards:detach()
  return self:gathered():detach()
end

-- Puts k's state into the shard of its partition's owner (opts.initial's
-- seeds: streamrun.stateful.seed, on worker 0 while the others wait).
function Shards:put(k, v, now)
  return self.shards[cx.partition(k, self.nparts) % #self.shards + 1]:put(k, v, now)
end

function Shards:set_timeout(ms)
  for _, s in ipairs(self.shards) do s:set_timeout(ms) end
end

-- -- One worker's part of a segment --

-- An executor: worker k of n running seg in this VM. g: the guard (its
-- dead letters are this VM's to deliver); shard: the worker's state
-- handle (with a keyed stage); ex: the exchanges' addresses { input,
-- keyed, out }.
function M.executor(seg, k, n, g, shard, ex)
  if seg.keyed then seg.keyed.keep_order = true end
  local e = {
    seg = seg, k = k, n = n, g = g, shard = shard, ex = ex,
    -- (Straight to the keyed stage, elements keep their record's offset
    -- for its dead letters.)
    chain = fuse.chain(seg.stages, g, not seg.sink, seg.sink),
    -- (the keyed stage's partitions: its shards hold them)
    nparts = (seg.keyed or seg.sink).partitions or seg.source.job.partitions,
    lo = ffi.new("size_t[1]"), hi = ffi.new("size_t[1]"), view = ffi.new("sr_batch_t"),
    O = {}, keep = {},
    wc = seg.word_count and ffi.gc(C.sr_wordcount_new(), C.sr_wordcount_free) or nil,
  }
  return e
end

-- Worker k's share of the batch: a view of the C batch's records (a text
-- source's), or the elements worker 0 put for it.
local function share(e, arg)
  local node = e.seg.source
  if arg.cbatch then
    local cb = ffi.cast("sr_batch_t *", arg.cbatch)
    C.sr_workers_share(cb, e.k, e.n, e.lo, e.hi)
    local lo, hi, v = e.lo[0], e.hi[0], e.view
    v.data, v.off, v.pos, v.n, v.len = cb.data, cb.off + lo, cb.pos + lo, hi - lo, cb.len
    watchdog.P.rec_base = tonumber(lo)
    return sources.raw_c_batch(node, v)
  end
  -- (M.deal's shares: the watchdog numbers a record in the step's input.)
  watchdog.P.rec_base = floor((arg.total or 0) * e.k / e.n)
  local A, B, O, n = cx.take(e.ex.input, 0, e.k)
  local origin = e.seg.origin
  if not origin then return { n = n, a = A, b = B } end
  local pos = {}
  for i = 1, n do pos[i - 1] = O[i] end
  return { n = n, a = A, b = B, src = origin, pos = pos }
end
M.share = share

-- The built-in word count over worker k's share, counted in C as
-- streamrun.native counts a batch (its range of the C batch, or the lines
-- dealt to it put into a C batch first) and its words scattered from C,
-- with no Lua string made for them. Returns false when it did, else the
-- share (it holds an element that is no line, a value the test driver
-- pushed: the chain runs in Lua and reports it as one worker does).
local function count_words(e, arg)
  local cb, lo, hi
  if arg.cbatch then
    cb = ffi.cast("sr_batch_t *", arg.cbatch)
    C.sr_workers_share(cb, e.k, e.n, e.lo, e.hi)
    lo, hi = e.lo[0], e.hi[0]
  else
    local input = share(e, arg)
    e.scratch = e.scratch or ffi.gc(C.sr_batch_new(0, 0), C.sr_batch_free)
    cb = native.lines_batch(e.scratch, input)
    if not cb then return input end
    lo, hi = 0, input.n
  end
  if C.sr_wordcount_range(e.wc, cb, lo, hi) ~= 0 then error("word count: out of memory", 0) end
  cx.clear(e.ex.keyed, e.k)
  cx.scatter_words(e.ex.keyed, e.k, e.nparts, tonumber(ffi.cast("uintptr_t", e.wc)), SPAN)
  return false
end

-- What cannot pass between workers (a function, int64 cdata...): the
-- elements a scatter or put left out (bad: their indices in A, B; whys:
-- what each holds), each a dead letter of node, element i of input when
-- at(i) names it, and the batch goes on.
function M.left_out(g, node, bad, whys, A, B, input, at)
  for j, i in ipairs(bad) do
    local why = "cannot pass the value between workers: it holds " .. whys[j]
    local at_i = at and at[i]
    if at_i then
      g.report_at(node, why, input, at_i, A[i], B[i])
    else
      g.report(node, why, A[i], B[i])
    end
  end
end

-- The built-in fold a sink's partials are merged with in C (count_by_value,
-- and a reduce_by_key by sr.add, sr.min or sr.max), or nil.
local function c_fold(sink)
  local fold = sink.op == "count_by_value" and "add" or builtins.reducers[sink.fn]
  return fold and ops.FOLDS[fold] and fold or nil
end

-- Phase 1: the chain over worker k's share, its partials scattered.
function M.phase1(e, arg)
  local input
  if e.wc then
    input = count_words(e, arg)
    if not input then return end
  end
  local part = e.chain.run(input or share(e, arg))
  local A, B, m, O = part.a, part.b, part.n, e.O
  local base = e.k * SPAN
  local sink = e.seg.sink
  if not sink then
    -- Records straight to the keyed stage: what is no pair with a key is
    -- its dead letter here, as with one worker.
    local keyed, g, j = e.seg.keyed, e.g, 0
    local KA, KB, KP = tnew(m, 0), tnew(m, 0), tnew(m, 0)
    for i = 1, m do
      local a, b = A[i], B[i]
      if ops.pair_check(keyed, g, a, b) then
        j = j + 1
        KA[j], KB[j], O[j] = a, b, base + i
        local _, off = batch.origin(part, i)
        KP[j] = off or -1
      end
    end
    A, B, m = KA, KB, j
    e.P = KP
  else
    for j = 1, m do O[j] = base + j end
  end
  for j = m + 1, #O do O[j] = nil end
  if sink and sink.op == "count_by_value" then
    -- By the element's key; an element that is no key travels with its
    -- count. (A string is its own key's partition: the stage after keys
    -- its state by the element, and a shard holds its partitions.)
    local K, V = tnew(m, 0), tnew(m, 0)
    for j = 1, m do
      local rep = A[j]
      local key = ops.element_key(rep)
      if key == rep or type(rep) == "string" then
        K[j], V[j] = rep, B[j]
      else
        K[j], V[j] = key, { B[j], rep }
      end
    end
    A, B = K, V
  end
  cx.clear(e.ex.keyed, e.k)
  -- A reduce merged in Lua reads its own partitions' number partials where
  -- they are (e.keep: their indices in e.kept_a, b and o), not through the
  -- buffers.
  local keep = sink and sink.op == "reduce_by_key" and not c_fold(sink) and e.keep or nil
  local bad, whys = cx.scatter(e.ex.keyed, e.k, e.nparts, A, B, O, m, not sink and e.P or nil, keep)
  if keep then e.kept_a, e.kept_b, e.kept_o = A, B, O end
  if bad then M.left_out(e.g, sink or e.seg.keyed, bad, whys, A, B) end
end

-- The partials worker `from` scattered to this one: A, B, O and their
-- count (this worker's own: those it kept, then those in its buffer).
local function column(e, from)
  local keep = from == e.k and e.kept_a and e.keep
  if not keep then return cx.take(e.ex.keyed, from, e.k) end
  local KA, KB, KO, n = e.kept_a, e.kept_b, e.kept_o, keep.n
  local A, B, O = tnew(n, 0), tnew(n, 0), tnew(n, 0)
  for j = 1, n do
    local i = keep[j]
    A[j], B[j], O[j] = KA[i], KB[i], KO[i]
  end
  e.kept_a, e.kept_b, e.kept_o = nil, nil, nil
  local _, _, _, c = cx.take(e.ex.keyed, from, e.k, 3, A, B, O, n)
  return A, B, O, c
end

-- Key -> the order of its first element in R (RO: their orders; by_key:
-- count_by_value's elements, looked up by their keys).
local function first_orders(R, RO, by_key)
  local A, first = R.a, tnew(0, R.n)
  for i = R.n, 1, -1 do first[by_key and ops.element_key(A[i]) or A[i]] = RO[i] end
  return first
end

-- The partials for worker w, merged in worker order: R = {n, a, b}, the
-- orders of its keys (RO) and key -> order where merging made one (else
-- phase 2 makes it from R, if a new key's output needs it).
local function merge(e)
  local sink, g = e.seg.sink, e.g
  if not sink then
    -- The records in arrival order: worker 0's share first.
    local RA, RB, RO, RP, m = {}, {}, {}, {}, 0
    for from = 0, e.n - 1 do
      RA, RB, RO, RP, m = cx.take(e.ex.keyed, from, e.k, 4, RA, RB, RO, RP, m)
    end
    -- (Each record says where it came from, for the keyed stage's dead
    -- letters.)
    return { n = m, a = RA, b = RB, src = e.seg.origin, pos = e.seg.origin and RP or nil }, RO
  end
  -- Counts, and a reduce_by_key by a built-in fold asked for by name
  -- (sr.add, sr.min, sr.max): merged in C while every element is a string
  -- key with a number (what a word count holds), with the same result.
  local fold = c_fold(sink)
  if fold then
    local K, V, O, nk = cx.take_folded(e.ex.keyed, e.k, fold)
    if K then return { n = nk, a = K, b = V }, O end
  end
  local f = sink.op == "reduce_by_key" and (ops.FOLDS[builtins.reducers[sink.fn] or false] or sink.fn) or nil
  -- (sized as the last batch's merge: tables grown key by key rehash
  -- themselves again and again)
  local size = e.merged or 0
  local keys, accs, reps, first, nk = tnew(size, 0), tnew(0, size), {}, tnew(0, size), 0
  local RO = tnew(size, 0)
  if f then
    -- The reducer runs unguarded in one loop per worker's partials
    -- (g.resumed, as ops.reduce_by_key): a failing call is reported with
    -- its key and value, the accumulator stays as it was, and the loop
    -- resumes after it.
    for from = 0, e.n - 1 do
      local A, B, O, c = column(e, from)
      local at = setmetatable({}, { __index = function(t, name)
        local i = rawget(t, "i")
        if name == "nk" then return #keys elseif name == "v" then return B[i] elseif name == "acc" then return accs[A[i]]
        elseif name == "key" then return A[i] end
      end })
      local function run(i0, acc, n0)
        local nk = n0
        for j = i0, c do
          at.i = j
          local key, v = A[j], B[j]
          acc = accs[key]
          if acc == nil then
            nk = nk + 1
            local o = O[j]
            keys[nk], first[key], RO[nk] = key, o, o
            accs[key] = v
          else
            accs[key] = f(acc, v)
          end
        end
        return nil, nk
      end
      local _, m = g.resumed(sink, run, at, nil, nk, "acc", "nk", "acc", "v", "key")
      nk = m
    end
    local V = tnew(nk, 0)
    for i = 1, nk do V[i] = accs[keys[i]] end
    e.merged = nk
    return { n = nk, a = keys, b = V }, RO, first
  end
  for from = 0, e.n - 1 do
    local A, B, O, c = column(e, from)
    for j = 1, c do
      local key, v = A[j], B[j]
      if sink.op == "count_by_value" then
        local rep = key
        if type(v) == "table" then v, rep = v[1], v[2] else key = ops.element_key(rep) end
        local acc = accs[key]
        if acc == nil then
          nk = nk + 1
          keys[nk], reps[nk], first[key], RO[nk] = key, rep, O[j], O[j]
          accs[key] = v
        else
          accs[key] = acc + v
        end
      else
        local acc = accs[key]
        if acc == nil then
          nk = nk + 1
          keys[nk], first[key], RO[nk] = key, O[j], O[j]
          accs[key] = v
        else
          local ok, r = g.call(sink, f, acc, v)
          if ok then accs[key] = r end
        end
      end
    end
  end
  local V = tnew(nk, 0)
  for i = 1, nk do V[i] = accs[keys[i]] end
  e.merged = nk
  if sink.op == "count_by_value" then return { n = nk, a = reps, b = V }, RO, first end
  return { n = nk, a = keys, b = V }, RO, first
end

-- Phase 2: worker k's partitions: merged, through the keyed stage with its
-- shard, and its outputs with their orders put to worker 0.
function M.phase2(e, arg)
  local R, RO, first = merge(e)
  local out, orders = R, RO
  local keyed = e.seg.keyed
  if keyed then
    out = stateful[keyed.op](keyed, e.g, e.shard, R, arg.time_ms, { final = arg.final, event = nil })
    local OI, m = out.order, out.n
    orders = tnew(m, 0)
    if keyed.op == "map_with_state" then
      local due = out.due_keys
      for j = 1, m do
        local i = OI[j]
        if i then orders[j] = RO[i] else orders[j] = { due[j] } end
      end
    else
      local kept, A = out.kept, out.a
      -- (merge knows count_by_value's elements by their keys.)
      local by_key = e.seg.sink and e.seg.sink.op == "count_by_value"
      for j = 1, m do
        if OI[j] <= kept then
          orders[j] = true -- (ordered by its own key: A[j])
        else
          first = first or first_orders(R, RO, by_key)
          orders[j] = first[by_key and ops.element_key(A[j]) or A[j]]
        end
      end
    end
  end
  if e.k == 0 then
    -- Worker 0's own outputs stay as they are (M.gather reads their
    -- orders).
    e.kept = { out.a, out.b, orders, out.n }
    return
  end
  cx.clear(e.ex.out, e.k)
  local bad, whys = cx.put(e.ex.out, e.k, 0, out.a, out.b, orders, out.n)
  if bad then M.left_out(e.g, keyed or e.seg.sink, bad, whys, out.a, out.b) end
end

-- -- Merging the owners' outputs on worker 0 --

-- Outputs of owners 0 .. n-1, each in order: one batch, merged by order
-- (in C: cexchange.merge_outputs). Orders are numbers (first arrival) or
-- keys (by their bytes, as the state orders them): a keyed stage's
-- timed-out keys after its records, update_state_by_key's kept keys
-- before the new ones (strings_first). own: worker 0's (as phase 2 kept
-- them: a, b, orders, n).
function M.gather(ex, n, strings_first, own)
  local OA, OB, total = cx.merge_outputs(ex, n, strings_first, own[1], own[2], own[3], own[4])
  return { n = total, a = OA, b = OB }
end

-- Dead letters another worker sent (its side buffer of ex), to g.letter.
function M.deliver(ex, k, g)
  local A, B, O, c = cx.take(ex, k, -1)
  for i = 1, c do g.letter(A[i], O[i], B[i][1], B[i][2]) end
end

-- A guard's handlers for a worker's VM: dead letters into the side buffer
-- of its exchange for the phase (e.side), sent at the phase's end.
function M.collector(job)
  local list = { n = 0, a = {}, b = {}, o = {} }
  local function dead_letter(source, offset, reason, record)
    local n = list.n + 1
    list.n = n
    list.a[n], list.b[n], list.o[n] = source, { reason, record or "" }, offset or -1
  end
  return { dead_letter = dead_letter, on_error = job.on_error }, list
end

-- Sends the collected dead letters through ex's side buffer of worker k.
function M.send_letters(ex, k, list)
  if list.n == 0 then return end
  local bad, whys = cx.put(ex, k, -1, list.a, list.b, list.o, list.n)
  if bad then error("dead letter " .. bad[1] .. ": " .. whys[1], 0) end
  for i = 1, list.n do list.a[i], list.b[i], list.o[i] = nil, nil, nil end
  list.n = 0
end

-- A failure of the job itself (on_error = "fail") crosses VMs as a string.
function M.pack_error(err)
  if type(err) == "table" and err.fatal then return FATAL .. tostring(err.fatal) .. FATAL end
  return err
end

function M.unpack_error(msg)
  local fatal = type(msg) == "string" and msg:match("\1streamrun%-fatal\1(.-)\1streamrun%-fatal\1")
  if fatal then return { fatal = fatal } end
  return msg
end

-- The arguments of a batch's phases, as a string for every VM.
function M.encode_arg(arg)
  return cstate.encode(arg)
end

function M.decode_arg(s)
  return cstate.decode(s)
end

-- Splits a Lua batch into worker shares, put into the input exchange:
-- elements with their record offsets (their origin).
function M.deal(ex, input, n)
  local total = input.n
  local A, B = input.a, input.b
  -- (Each share goes to its worker's buffer of row 0.)
  cx.clear(ex, 0)
  for k = 0, n - 1 do
    local lo, hi = floor(total * k / n) + 1, floor(total * (k + 1) / n)
    local SA, SB, SO, m = tnew(hi - lo + 1, 0), tnew(hi - lo + 1, 0), tnew(hi - lo + 1, 0), 0
    for i = lo, hi do
      m = m + 1
      SA[m], SB[m] = A[i], B[i]
      local _, off = batch.origin(input, i)
      SO[m] = off or -1
    end
    local bad, whys = cx.put(ex, 0, k, SA, SB, SO, m)
    if bad then return nil, lo + bad[1] - 1, "cannot pass the element between workers: it holds " .. whys[1] end
  end
  return true
end

-- -- Worker 0: the segment's steps --

-- An xpcall handler: a table error as it is (a job's fatal error, a
-- report), else the message with a traceback.
local function keep_table(e)
  if type(e) == "table" then return e end
  return debug.traceback(e, 2)
end
M.keep_table = keep_table

-- The segment's step: both phases on every worker, the owners' outputs
-- merged. Its output is the segment's last stage's (with a keyed stage,
-- the sink's output stays spread over the workers: the keyed stage's
-- step hands on what this step gathered).
local Par = {}
Par.__index = Par

-- Runs fn(e0, arg) here while the other workers run phase p; raises the
-- first failure (worker 0's, then the others' in worker order) once all
-- are done. Returns the milliseconds worker 0 waited.
local function both(self, p, fn, arg, sarg)
  local vms = self.vms
  vms:run(self.pool_addr, p, sarg)
  local ok, err = xpcall(fn, keep_table, self.e0, arg)
  -- Waiting, worker 0 is not stuck: the watchdog watches each worker's
  -- VM (stage_timeout interrupts a user function on the worker running
  -- it).
  local P = watchdog.P
  P.waiting = 1
  local t0 = core.clock_ms()
  local werr = vms:wait()
  local waited = core.clock_ms() - t0
  P.waiting = 0
  if not ok then error(err, 0) end
  if werr then error(M.unpack_error(werr), 0) end
  return waited
end
M.both = both

-- Sets par (a segment's step without state) up to run a small batch on
-- worker 0 alone when its costs say so: alone(results, time_ms) runs the
-- one-worker plan's steps the segment's step replaced.
function M.may_run_alone(par, alone)
  par.alone, par.cost, par.alone_batches = alone, splitcost.new(par.n), 0
end

-- Runs a batch of `records` records of par's segment: par.alone(results,
-- time_ms) or split(par, results, time_ms), as its cost model says
-- (always split without one), timed for the model.
function M.alone_or_split(par, records, split, results, time_ms)
  local cost = par.cost
  if not cost then return split(par, results, time_ms) end
  local t0 = core.clock_ms()
  local solo = cost:alone(records)
  local out
  if solo then
    out = par.alone(results, time_ms)
    par.alone_batches = par.alone_batches + 1
  else
    out = split(par, results, time_ms)
  end
  cost:ran(solo, records, core.clock_ms() - t0)
  return out
end

local function split(self, results, time_ms)
  local seg, n, ex = self.seg, self.n, self.ex
  local input = results[seg.source] or batch.empty()
  -- (step and label: what the watchdog says of a worker's stall)
  local arg = { time_ms = time_ms, final = self.plan.final or false, step = watchdog.P.step, label = self.label }
  local cb = rawget(input, "cbatch")
  if cb ~= nil then
    arg.cbatch = tonumber(ffi.cast("uintptr_t", cb))
  else
    arg.total = input.n
    local ok, bad, why = M.deal(ex.input, input, n)
    if not ok then error(("stage %s: element %d: %s"):format(seg.stages[1].stage_name, bad, why), 0) end
  end
  local sarg = M.encode_arg(arg)
  local g = self.g
  local waited = both(self, 1, M.phase1, arg, sarg)
  for k = 1, n - 1 do M.deliver(ex.keyed, k, g) end
  -- The watchdog names the keyed stage for a stall from here on (it runs
  -- in phase 2, on every worker).
  if seg.keyed then watchdog.enter(watchdog.P.step, seg.keyed.stage_name) end
  if not self.seeded then
    -- opts.initial, once, here (its function called in this VM alone),
    -- where one worker seeds: after the chain's dead letters, before the
    -- keyed stage's. Each key goes to its owner's shard, put there in the
    -- order one worker puts it, so a partition's table is one worker's.
    self.seeded = true
    stateful.unseeded[self.shards] = nil
    stateful.seed(seg.keyed, g, self.shards, time_ms)
  end
  waited = waited + both(self, 2, M.phase2, arg, sarg)
  for k = 1, n - 1 do M.deliver(ex.out, k, g) end
  self.workers.waited_ms = (self.workers.waited_ms or 0) + waited
  local out = M.gather(ex.out, n, seg.keyed ~= nil and seg.keyed.op == "update_state_by_key", self.e0.kept)
  self.e0.kept = nil
  if seg.keyed then
    self.out = out
    return batch.empty()
  end
  return out
end

function Par:run(results, time_ms)
  local input = results[self.seg.source]
  return M.alone_or_split(self, input and input.n or 0, split, results, time_ms)
end

-- Shuts the other workers' VMs of plan down, if it has them: when the plan
-- is replaced (a reload) or the session ends, not whenever the GC gets to
-- them (each holds a VM, its job and its shard's borrow).
function M.close(plan)
  for _, par in ipairs(plan and (plan.parallels or { plan.parallel }) or {}) do
    if par.vms then
      par.vms:close()
      par.vms = nil
    end
  end
end

-- The keyed stage's step: what the segment's step gathered.
local Handed = {}
Handed.__index = Handed
function Handed:run()
  local out = self.par.out or batch.empty()
  self.par.out = nil
  return out
end
M.Handed = Handed

-- The VMs of workers 1 .. n - 1, each loading the job from the text of
-- the script worker 0 loaded (not the file, which may have changed since)
-- with the fields of its segment (core.cworkervm, streamrun.worker). VMs
-- of plans no longer in use are closed by their finalizers: when the
-- watchdog's table of VMs is full, a full collection closes those first
-- (a process that builds many plans, as a test run does, would otherwise
-- wait on the collector). Raises when a VM fails.
function M.new_vms(n, job, fields)
  local o = job.load_opts
  fields.path, fields.source, fields.params, fields.batch = job.path, o.source, o.params or {}, o.batch or false
  local init = cstate.encode(fields)
  local vms, err = core.cworkervm.new(n, init, core.lua_dir)
  if not vms and tostring(err):find("the watchdog watches at most", 1, true) then
    collectgarbage()
    collectgarbage()
    vms, err = core.cworkervm.new(n, init, core.lua_dir)
  end
  if not vms then error("workers: " .. tostring(err), 0) end
  return vms
end

-- Sets the plan up to run its keyed segments (M.segments) on the workers
-- of ctx.workers: each segment's steps in steps are replaced, the keyed
-- stage's state is split into shards (ctx.states), and the other workers'
-- VMs are started, each loading the job (a set of VMs per segment;
-- plan.parallel_segs lists the segments). Returns the first segment, or
-- nil and why the plan runs on worker 0 alone. Raises when a worker's VM fails to
-- load the job (a reload then keeps the running plan).
function M.attach(job, steps, ctx)
  local w = ctx.workers
  if not w or not w.pool or w.n < 2 then return nil, "one worker" end
  local segs, why = M.segments(job)
  if not segs then return nil, why end
  -- Each segment with its own VMs (each told which segment is its).
  ctx.plan.parallels, ctx.plan.parallel_segs = {}, {}
  local first
  -- (A segment that fails to attach takes the VMs of those before it.)
  -- (A segment that stays on worker 0 while others split is noted with
  -- why in plan.alone_segs, for the log.)
  ctx.plan.alone_segs = {}
  local ok, err = xpcall(function()
    for i, seg in ipairs(segs) do
      local done, err = M.attach_one(job, steps, ctx, seg, i)
      if done then
        first = first or done
        table.insert(ctx.plan.parallel_segs, done)
      else
        table.insert(ctx.plan.alone_segs, { seg = seg, why = err })
      end
      why = why or err
    end
  end, keep_table)
  if not ok then
    M.close(ctx.plan)
    error(err, 0)
  end
  if not first then return nil, why end
  return first
end

-- Sets the plan up to run the index-th segment seg (M.segments), as
-- attach says.
function M.attach_one(job, steps, ctx, seg, index)
  local w = ctx.workers
  if seg.join then return require("streamrun.exchange_join").attach(job, steps, ctx, seg, index) end
  if seg.window or seg.group then return require("streamrun.exchange_windows").attach(job, steps, ctx, seg, index) end
  local ci, ki
  local last = seg.stages[#seg.stages]
  for i, s in ipairs(steps) do
    -- (The built-in word count's step is native: streamrun.native.)
    if s.kind == "chain" and (seg.sink and s.sink == seg.sink or not seg.sink and s.node == last and not s.sink)
       or s.kind == "native" and seg.word_count and s.node == seg.sink then
      ci = i
    end
    if seg.keyed and s.node == seg.keyed then ki = i end
  end
  if not ci or (seg.keyed and not ki) then return nil, "the plan does not fold the chain into its stage" end
  local n = w.n
  local exs = { input = cx.new(n), keyed = cx.new(n), out = cx.new(n) }
  local addr = { input = exs.input:address(), keyed = exs.keyed:address(), out = exs.out:address() }
  local shards, shard_addr, kept
  if seg.keyed then
    local name = seg.keyed.stage_name
    kept = ctx.states_in and ctx.states_in[name]
    -- Kept state hashed into other partitions than the job's (restored or
    -- reloaded after `partitions` changed) keeps them, as with one worker:
    -- its owners would not be the partitions' the exchange routes to.
    local parts = kept and (getmetatable(kept) == Shards and kept.nparts or kept:partitions())
    if parts and parts ~= seg.keyed.partitions then
      return nil, ("the state of %s holds %d partitions, the job %d"):format(name, parts, seg.keyed.partitions)
    end
    shards = shards_of(seg.keyed, kept, n)
    ctx.states[name] = shards
    shard_addr = {}
    for k = 1, n do shard_addr[k] = tonumber(ffi.cast("uintptr_t", shards.shards[k]:pointer())) end
  end
  local vms = M.new_vms(n, job, { ex = addr, shards = shard_addr or false, windows = false, segment = index })
  local par = setmetatable({
    kind = "parallel", node = seg.sink or last, input = seg.source, every = steps[ci].every, label = steps[ci].label,
    seg = seg, n = n, ex = addr, exs = exs, vms = vms, g = ctx.guard, plan = ctx.plan, workers = w,
    pool_addr = tonumber(ffi.cast("uintptr_t", w.pool)),
    e0 = M.executor(seg, 0, n, ctx.guard, shards and shards.shards[1], addr),
    -- (as steps.stateful: kept state, from a checkpoint or a reload, was
    -- seeded before, unless a reload came before its first batch)
    shards = shards, seeded = not (seg.keyed and stateful.needs_seed(seg.keyed, shards, kept)),
  }, Par)
  if w.adaptive and seg.sink and not seg.keyed and steps[ci].kind == "chain" then
    -- A segment without state: a small batch may run on worker 0 alone,
    -- through the one-worker plan's step (streamrun.splitcost).
    local chain = steps[ci]
    M.may_run_alone(par, function(results, time_ms) return chain:run(results, time_ms) end)
  end
  steps[ci] = par
  if ki then
    steps[ki] = setmetatable({ kind = "stateful", node = seg.keyed, every = steps[ki].every,
      label = steps[ki].label, state = shards, par = par, input = seg.sink or last }, Handed)
    -- A view of the state (state_snapshots) reads every shard after the
    -- segment's step, ordered by key bytes as one state's snapshot is.
    for _, s in ipairs(steps) do
      if s.kind == "view" and s.node.inputs[1] == seg.keyed then s.state = shards end
    end
  end
  if seg.raw then ctx.plan.raw_sources[seg.source] = true end
  M.add_parallel(ctx.plan, par)
  return seg
end

-- Notes a segment's step par in plan: plan.parallel is the first,
-- plan.parallels all (closed together).
function M.add_parallel(plan, par)
  plan.parallel = plan.parallel or par
  plan.parallels = plan.parallels or {}
  table.insert(plan.parallels, par)
end

return M
