-- streamrun.native: built-in chains the compiler runs in C instead of Lua.
-- A job asks for them by name, never by the shape of its own functions
-- (SPEC section 6): flat_map(sr.words) -> count_by_value() over a text
-- source is the word count, one C pass (sr_words) over the batch; Lua makes
-- strings only for the distinct words. The result is exactly what the Lua
-- stages give: the words in order of first appearance, with their counts.
-- (With several workers, a word count into a keyed stage runs as a keyed
-- segment instead: streamrun.exchange.)
local core = require "streamrun.core"
local builtins = require "streamrun.builtins"

local C, ffi = core.C, core.ffi
local tnew = require "table.new"

local M = {}

-- The word count: a chain of exactly flat_map(sr.words) (the runtime's own
-- function, by identity), straight from a text source, consumed only by
-- count_by_value. Returns that count_by_value stage, else false.
function M.is_word_count(chain, consumer_of)
  local s = chain.stages
  if #s ~= 1 or s[1].op ~= "flat_map" or s[1].fn ~= builtins.words then return false end
  local input = chain.input
  if input.kind ~= "source" or input.format ~= "text" or input.framed then return false end
  local c = consumer_of(s[1])
  return c and c.op == "count_by_value" and c or false
end

-- The lines of a Lua batch (elements 1..n of input.a) put into the C
-- batch scratch, for the word count; nil when an element is not a line.
function M.lines_batch(scratch, input)
  C.sr_batch_clear(scratch)
  local A = input.a
  for i = 1, input.n do
    local line = A[i]
    if type(line) ~= "string" then return nil end
    if C.sr_batch_append(scratch, line, #line, i) ~= 0 then error("word count: out of memory", 0) end
  end
  return scratch
end

-- A counter for one stage: run(input) -> the count_by_value result batch,
-- or nil when the batch holds an element that is not a line (a value the
-- test driver pushed): sr.words fails on it, and only the Lua stages report
-- that as they should. input is a batch from the source, with .cbatch (the
-- sealed C batch) when the session hands it over unconverted. workers
-- (streamrun.workers, optional): with a pool, each worker counts its share
-- of the batch and the counts are merged, with the same result.
function M.word_counter(workers)
  local wc = ffi.gc(C.sr_wordcount_new(), C.sr_wordcount_free)
  local pool, wcs, own = workers and workers.pool, nil, nil
  if pool then
    own = { wc }
    wcs = ffi.new("sr_wordcount_t *[?]", workers.n)
    wcs[0] = wc
    for k = 1, workers.n - 1 do
      own[k + 1] = ffi.gc(C.sr_wordcount_new(), C.sr_wordcount_free)
      wcs[k] = own[k + 1]
    end
  end
  local scratch = ffi.gc(C.sr_batch_new(0, 0), C.sr_batch_free)
  local ffi_string = ffi.string
  return function(input)
    local cb = input.cbatch
    if cb == nil then
      -- Lines as Lua strings (the test driver): into a C batch first.
      cb = M.lines_batch(scratch, input)
      if not cb then return nil end
    end
    local rc
    if pool and own then rc = C.sr_workers_wordcount(pool, wcs, cb) else rc = C.sr_wordcount_batch(wc, cb) end
    if rc ~= 0 then error("word count: out of memory", 0) end
    local n = tonumber(wc.n)
    local keys, counts = tnew(n, 0), tnew(n, 0)
    local data, word = wc.data, wc.word
    for i = 0, n - 1 do
      local w = word[i]
      keys[i + 1] = ffi_string(data + w.off, w.len)
      counts[i + 1] = w.count
    end
    return { n = n, a = keys, b = counts }
  end
end

return M
