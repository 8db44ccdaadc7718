-- streamrun.splitcost: whether a batch of a keyed segment without state
-- (a chain into reduce_by_key or count_by_value, streamrun.exchange) is
-- worth splitting across the workers, from what the segment's batches
-- took.
--
-- Splitting has a fixed cost (waking the workers for two phases, the
-- exchange, gathering the outputs: about a millisecond on a 2-core
-- machine) that a small batch does not earn back. Such a segment keeps no
-- state, so worker 0 can run a batch alone through the one-worker plan's
-- step, with the same output. The model: alone, a batch of n records
-- takes a * n; split over N workers, F + a * n / N. a is the time per
-- record of the batches run alone (decayed sums, so one tiny batch does
-- not set it), F the mean of (time split - a * n / N) over the batches
-- split. A batch runs alone when a * n * (N - 1) / N < F.
--
-- The first small batches run alone until a is known, the next ones
-- split until F is (the first run of each way is not counted: it
-- compiles its traces); after that every EXPLORE-th small batch goes the
-- other way than the model says, so neither figure goes stale. A batch of
-- more than MAX_ALONE records always splits: learning or checking a costs
-- at most that many records on one worker. A run counts at most SPIKE
-- times what the model expected of it: one batch caught by a pause (the
-- machine busy elsewhere) would otherwise set a or F for thousands of
-- batches, as the other way is checked only every EXPLORE-th batch; a
-- real change in costs still moves them within a few batches. (A figure
-- of 0 caps nothing: it would stay 0.)
local M = {}

M.MAX_ALONE = 16384
M.EXPLORE = 256
M.SPIKE = 4
local DECAY = 7 / 8

local Cost = {}
Cost.__index = Cost

-- The model for a segment split over n workers.
function M.new(n)
  return setmetatable({ n = n, t = 0, records = 0, F = nil, small = 0, warm = {} }, Cost)
end

-- Milliseconds per record alone, or nil before a batch ran alone.
function Cost:per_record()
  return self.records > 0 and self.t / self.records or nil
end

-- Whether a batch of `records` records runs on worker 0 alone.
function Cost:alone(records)
  if records == 0 then return true end -- (nothing to split)
  if records > M.MAX_ALONE then return false end
  local a, F = self:per_record(), self.F
  if not a then return true end
  if not F then return false end
  local pick = a * records * (self.n - 1) / self.n < F
  self.small = self.small + 1
  if self.small % M.EXPLORE == 0 then pick = not pick end
  return pick
end

-- A batch of `records` records ran (alone or split) in ms milliseconds.
function Cost:ran(alone, records, ms)
  if records == 0 then return end
  if not self.warm[alone] then
    self.warm[alone] = true
    return
  end
  local a = self:per_record()
  if alone then
    if a and a > 0 then ms = math.min(ms, M.SPIKE * a * records) end
    self.t, self.records = self.t * DECAY + ms, self.records * DECAY + records
    return
  end
  if not a then return end
  local f = math.max(0, ms - a * records / self.n)
  if self.F and self.F > 0 then f = math.min(f, M.SPIKE * self.F) end
  self.F = self.F and self.F + (f - self.F) * (1 - DECAY) or f
end

return M
