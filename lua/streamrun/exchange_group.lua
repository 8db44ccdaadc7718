-- streamrun.exchange_group: a group_by_key run on every worker (SPEC
-- section 15), with the steps of streamrun.exchange_windows. Per batch:
--
--  phase 1: worker k runs the stateless chain before the group over its
--    share of the batch in its own VM and scatters its pairs to the owners
--    of their keys' partitions (p mod N), each with its order (worker *
--    2^32 + position: the batch's arrival order whatever N); what is no
--    pair with a key is its dead letter there, in arrival order;
--  phase 2: the owner groups the pairs of workers 0, 1, ... in that order
--    (each key's values in arrival order) and puts its groups to worker 0,
--    each with the order of its key's first pair;
--  worker 0 merges them by that order: keys in order of first appearance,
--    as one worker gives them.
local core = require "streamrun.core"
local fuse = require "streamrun.fuse"
local ops = require "streamrun.ops"
local exchange = require "streamrun.exchange"
local xw = require "streamrun.exchange_windows"

local cx, ffi = core.cexchange, core.ffi
local tnew = require "table.new"

local M = {}

local SPAN = 2 ^ 32

-- The segment of a group_by_key fed by a chain of narrow stages only it
-- reads (streamrun.exchange_windows.chain_into): its fields and group, or
-- nil.
function M.find(job, node, cons)
  if node.op ~= "group_by_key" then return nil end
  local seg = xw.chain_into(job, node, cons)
  if seg then seg.group = node end
  return seg
end

-- An executor: worker k of n running seg in this VM; ex: the exchanges'
-- addresses { input, keyed, out }.
function M.executor(seg, k, n, g, _, ex)
  return {
    seg = seg, k = k, n = n, g = g, ex = ex,
    nparts = seg.source.job.partitions,
    chain = fuse.chain(seg.stages, g, false),
    lo = ffi.new("size_t[1]"), hi = ffi.new("size_t[1]"), view = ffi.new("sr_batch_t"),
  }
end

-- The pairs of part (a chain's output on worker k) that node takes,
-- scattered through ex to their keys' owners, each with its order on
-- worker k; what cannot pass goes to node's dead letters.
function M.scatter_pairs(e, node, part, ex)
  local g = e.g
  local A, B, n = part.a, part.b, part.n
  local KA, KB, KO, KI, m = tnew(n, 0), tnew(n, 0), tnew(n, 0), tnew(n, 0), 0
  local base = e.k * SPAN
  for i = 1, n do
    local a, b = A[i], B[i]
    if ops.pair_check(node, g, a, b) then
      m = m + 1
      KA[m], KB[m], KO[m], KI[m] = a, b, base + m, i
    end
  end
  cx.clear(ex, e.k)
  local bad, whys = cx.scatter(ex, e.k, e.nparts, KA, KB, KO, m)
  if bad then exchange.left_out(g, node, bad, whys, KA, KB, part, KI) end
end

-- Phase 1: the chain over worker k's share, its pairs scattered.
function M.phase1(e, arg)
  M.scatter_pairs(e, e.seg.group, e.chain.run(xw.share(e, arg)), e.ex.keyed)
end

-- Phase 2: worker k's keys grouped, put to worker 0 with their orders.
function M.phase2(e)
  local node = e.seg.group
  local keys, lists, first, nk = {}, {}, {}, 0
  for from = 0, e.n - 1 do
    local A, B, O, c = cx.take(e.ex.keyed, from, e.k)
    for j = 1, c do
      local k = A[j]
      local l = lists[k]
      if l == nil then
        nk = nk + 1
        keys[nk], first[nk] = k, O[j]
        lists[k] = { B[j] }
      else
        l[#l + 1] = B[j]
      end
    end
  end
  local OB = tnew(nk, 0)
  for i = 1, nk do OB[i] = lists[keys[i]] end
  if e.k == 0 then
    e.kept = { keys, OB, first, nk }
    return
  end
  cx.clear(e.ex.out, e.k)
  local bad, whys = cx.put(e.ex.out, e.k, 0, keys, OB, first, nk)
  if bad then exchange.left_out(e.g, node, bad, whys, keys, OB) end
end

return M
