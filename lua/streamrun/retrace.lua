-- Compiling a VM's hot loops again when a stateful stage's records change
-- phase.
--
-- LuaJIT compiles a loop along the path its records take when the loop
-- grows hot; records that later take another path leave that trace at a
-- guard and run in a side trace, which then enters the loop's trace again
-- at its top, reloading and checking again everything the loop had
-- hoisted, for every record. A stateful stage's first batches mostly make
-- new keys, and its later ones mostly update keys it holds: compiled in the
-- first phase, its loop (with the user function inlined in it) runs the
-- steady state in side traces. So each stage tells, per batch, how many of
-- its records were of keys it had no state for; when a batch's share of
-- new keys is on the other side of one half from the batch the VM's traces
-- were compiled in, every trace is flushed and LuaJIT compiles them again
-- on the path records take now. Small batches tell nothing (their loops
-- barely run), and a stage flushes at most MAX_FLUSHES times: a stage
-- that swings from phase to phase keeps its traces after that.
local M = {}

-- The fewest records of a batch that count.
M.MIN_RECORDS = 1000
M.MAX_FLUSHES = 4

-- The VM's flushes so far, and the generation of its traces: a stage's
-- phase is remembered with the generation it was seen in.
local flushes, generation = 0, 0

-- node: the stage; records: its batch's records; new_keys: how many of
-- them had no state.
function M.note(node, records, new_keys)
  if records < M.MIN_RECORDS then return end
  local mostly_new = new_keys * 2 > records
  if node.retrace_generation ~= generation then
    node.retrace_generation, node.retrace_mostly_new = generation, mostly_new
  elseif node.retrace_mostly_new ~= mostly_new and (node.retrace_flushes or 0) < M.MAX_FLUSHES then
    flushes, generation = flushes + 1, generation + 1
    node.retrace_generation, node.retrace_mostly_new = generation, mostly_new
    node.retrace_flushes = (node.retrace_flushes or 0) + 1
    jit.flush()
  end
end

-- How many times this VM's traces were flushed.
function M.flushes() return flushes end

return M
