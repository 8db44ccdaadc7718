-- flat_map(sr.words) first in a chain over a text source's C batch
-- (streamrun.fuse), a chunk of records at a time: the words cut and named
-- by their distinct word in C (sr_wordcount_ids, one string made per
-- distinct word, kept from chunk to chunk), or cut in the loop, whichever
-- the chain timed faster.
-- Both must give what the chain gives over the lines as Lua strings: the
-- same elements in the same order, the same folds, and the same dead
-- letters (a failing call goes on with the rest of its line's words),
-- whatever the chunk size -- a chunk boundary inside a batch, a failure
-- on a chunk's or a line's last word. Random jobs and inputs from a
-- seed; and the choice of way follows the chunks' times.
local sr = require "streamrun"
local fuse = require "streamrun.fuse"
local sources = require "streamrun.sources"
local node_of = require("streamrun.dsl").node_of
local lcg = require "helpers.lcg"
local rawplan = require "helpers.rawplan"

-- A word "boom" makes the map fail; "skip" gives no element; "two" two.
local function lower_one(w)
  if w == "boom" then error("map failed on " .. w) end
  if w == "skip" then return nil end
  return w:lower(), #w
end

local SHAPES = {
  -- words straight into a fold
  function(words) return words:map(lower_one):reduce_by_key(sr.add, { name = "out" }) end,
  function(words) return words:count_by_value({ name = "out" }) end,
  -- elements kept (no fold), a flat_map after the words
  function(words)
    return words:flat_map(function(w)
      if w == "two" then return { w, w .. "!" } end
      if w == "boom" then error("flat_map failed") end
      return { w }
    end):map(function(w) return w, 1 end):filter(function(_, n) return n == 1 end):reduce_by_key(sr.add)
      :map(function(k, v) return k, v end, { name = "out" })
  end,
  function(words) return words:map(lower_one):filter(function(_, n) return n < 9 end, { name = "out" }) end,
}

local function build(shape, fork)
  local job = sr.job { name = "words_raw" }
  local lines = job:text_file("/dev/null", { name = "in" })
  if fork then lines:filter(function() return false end):foreach_batch(function() end) end
  local last = SHAPES[shape](lines:flat_map(sr.words))
  return job, node_of(last)
end

-- Runs the batches through a plan: "raw" (each C batch handed to the chain
-- as it is) or "lines" (the source has a second consumer: the chain reads
-- the lines as Lua strings). Returns the stage's elements per batch and
-- the dead letters.
local function run(shape, batches, how)
  local job, last = build(shape, how == "lines")
  local plan, dead = rawplan.compile(job, nil, true)
  local src = job.sources[1]
  assert.equal(how == "raw", plan.raw_sources[src] == true)
  local out, base = {}, 1000
  for bi, lines in ipairs(batches) do
    local cb = rawplan.c_batch(lines, base)
    base = base + 10 * #lines + 10
    local input
    if how == "raw" then
      input = sources.raw_c_batch(src, cb)
    else
      input = sources.read_c_batch(src, cb, function() error("not JSON") end)
    end
    local r = plan.run({ [src] = input }, 1000 * bi, false)[last]
    local rows = {}
    for i = 1, r.n do rows[i] = { r.a[i], r.b[i] } end
    out[bi] = rows
  end
  return out, dead
end

local VOCAB = { "a", "B", "b", "two", "boom", "skip", "word", "Word", "longer-than-sixteen-bytes",
                "\195\169t\195\169", "\0z", ("x"):rep(40) }
local SPACES = { " ", "\t", "  ", "\v", "\f", "\r", " \t " }

local function lines_of(r, n)
  local out = {}
  for i = 1, n do
    local parts = {}
    if r.chance(0.3) then parts[1] = r.pick(SPACES) end
    for _ = 1, r.int(0, 6) do
      parts[#parts + 1] = r.pick(VOCAB)
      parts[#parts + 1] = r.pick(SPACES)
    end
    if r.chance(0.5) then parts[#parts] = nil end
    out[i] = table.concat(parts)
  end
  return out
end

describe("flat_map(sr.words) over a C batch", function()
  local saved
  local saved_keep, saved_bytes
  before_each(function() saved, saved_keep, saved_bytes = fuse.ids_chunk, fuse.ids_keep, fuse.ids_keep_bytes end)
  after_each(function()
    fuse.ids_chunk, fuse.ids_keep, fuse.ids_keep_bytes = saved, saved_keep, saved_bytes
    fuse.words_in_c = nil
  end)

  it("gives the elements, folds and dead letters of the Lua strings' path, for any chunk size", function()
    for seed = 1, 24 do
      local r = lcg(seed)
      local shape = (seed - 1) % #SHAPES + 1
      local batches = {}
      for b = 1, r.int(1, 4) do batches[b] = lines_of(r, r.int(0, 40)) end
      local want, want_dead = run(shape, batches, "lines")
      -- (words_in_c: the words cut and named in C, cut in the loop, or
      -- each chunk the way the chain finds faster; named in C, the
      -- distinct words kept from chunk to chunk, or forgotten at each
      -- chunk past 1 word or past 1 byte of them)
      for _, in_c in ipairs { true, false, "either" } do
        fuse.words_in_c = in_c ~= "either" and in_c or nil
        local keeps = { { saved_keep, saved_bytes } }
        if in_c == true then keeps = { keeps[1], { 1, saved_bytes }, { saved_keep, 1 } } end
        for _, keep in ipairs(keeps) do
          fuse.ids_keep, fuse.ids_keep_bytes = keep[1], keep[2]
          for _, chunk in ipairs { 1, 2, 3, 7, 65536 } do
            fuse.ids_chunk = chunk
            local got, got_dead = run(shape, batches, "raw")
            local what = ("seed %d shape %d chunk %d words in C %s keep %d words, %d bytes"):format(seed, shape,
              chunk, tostring(in_c), keep[1], keep[2])
            assert.same(want, got, what)
            assert.same(want_dead, got_dead, what)
          end
        end
      end
    end
  end)

  it("goes on with a line's other words after a failing call, across a chunk's end", function()
    fuse.ids_chunk = 2
    -- (A failing last word of a line, "c boom", once made the loop that
    -- cuts words in Lua raise.)
    local lines = { "a boom b", "boom", "c boom", "boom d boom e" }
    for _, in_c in ipairs { true, false } do
      fuse.words_in_c = in_c
      local out, dead = run(1, { lines }, "raw")
      assert.same({ { "a", 1 }, { "b", 1 }, { "c", 1 }, { "d", 1 }, { "e", 1 } }, out[1])
      assert.equal(5, #dead)
      for _, l in ipairs(dead) do assert.matches("map failed on boom", l, 1, true) end
    end
  end)

  it("reads each chunk the way it found faster, trying the other less often while it stays slower", function()
    local W, seq = { ms = { ids = 0, lua = 0 }, runs = 0 }, {}
    local cost = { ids = 1, lua = 3 }
    for k = 1, 700 do
      seq[k] = fuse.pick_words(W)
      -- (The first chunk of each way, compiled, is slow: not counted.)
      fuse.time_words(W, seq[k], k <= 2 and 100 or cost[seq[k]])
      if k == 40 then cost.ids = 5 end -- (the data changes)
      if k == 300 then cost.ids = 1 end -- (and back)
    end
    assert.same({ "ids", "lua", "ids", "lua", "ids", "lua" }, { seq[1], seq[2], seq[3], seq[4], seq[5], seq[6] })
    -- The other way after 16 chunks, then 32, 64, 128 (each try found it
    -- slower still): chunks 17, 49, 113, 241.
    for k = 7, 40 do assert.equal(k == 17 and "lua" or "ids", seq[k], k) end
    -- ids slower from chunk 41: its figure follows within a few chunks,
    -- and then ids is the way tried.
    for k = 46, 300 do assert.equal((k == 49 or k == 113 or k == 241) and "ids" or "lua", seq[k], k) end
    -- ids faster again from chunk 301: found at the next try (chunk 497,
    -- 256 after the last), then read that way, lua tried 16 chunks on.
    for k = 301, 496 do assert.equal("lua", seq[k], k) end
    assert.equal("ids", seq[497])
    for k = 498, 520 do assert.equal(k == 513 and "lua" or "ids", seq[k], k) end
    -- A try on a batch's last few records decides nothing: the next chunk
    -- is the try.
    W, seq = { ms = { ids = 0, lua = 0 }, runs = 0 }, {}
    for k = 1, 17 do
      seq[k] = fuse.pick_words(W)
      fuse.time_words(W, seq[k], k <= 2 and 100 or cost[seq[k]], k == 17 and 3 or 65536)
    end
    assert.equal("lua", seq[17])
    assert.equal("lua", fuse.pick_words(W))
    fuse.time_words(W, "lua", cost.lua, 65536)
    assert.equal("ids", fuse.pick_words(W))
    fuse.words_in_c = true
    assert.equal("ids", fuse.pick_words(W))
    fuse.words_in_c = false
    assert.equal("lua", fuse.pick_words(W))
  end)
end)
