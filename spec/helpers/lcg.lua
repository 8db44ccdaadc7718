-- helpers.lcg: the property specs' random numbers. Numerical Recipes'
-- 32-bit linear congruential generator, exact in doubles (a * x < 2^53),
-- so a case is replayed from its seed alone.
local floor = math.floor

-- A generator from seed: int(lo, hi), chance(p), pick(array).
return function(seed)
  local x = seed % 4294967296
  local r = {}
  function r.int(lo, hi)
    x = (1664525 * x + 1013904223) % 4294967296
    -- The high bits are the random ones.
    return lo + floor(x / 4294967296 * (hi - lo + 1))
  end
  function r.chance(p) return r.int(1, 1000) <= p * 1000 end
  function r.pick(t) return t[r.int(1, #t)] end
  return r
end
