-- streamrun.native: stage patterns the compiler runs in C instead of Lua.
-- flat_map(sr.words) -> map(function(w) return w, 1 end) -> reduce_by_key
-- (sr.add or sr.sum) over a text source is the word count: one C pass
-- (sr_words) counts every word of the batch; Lua makes strings only for the
-- distinct words. The result is exactly what the Lua stages give: keys in
-- order of first appearance, with their counts.
local bit = require "bit"
local core = require "streamrun.core"
local builtins = require "streamrun.builtins"
local jutil = require "jit.util"
local bcnames = require("jit.vmdef").bcnames

local C, ffi = core.C, core.ffi
local band, rshift = bit.band, bit.rshift

local M = {}

local function opname(ins)
  local op = band(ins, 0xff)
  return (bcnames:sub(op * 6 + 1, op * 6 + 6):gsub(" ", ""))
end

-- Whether f is `function(w) return w, 1 end`, by its bytecode: one
-- parameter, no upvalue, and only MOV w, KSHORT 1, RET of both.
function M.pairs_with_one(f)
  local info = jutil.funcinfo(f)
  if not info or info.params ~= 1 or info.upvalues ~= 0 or info.children or info.bytecodes ~= 4 then
    return false
  end
  local mov = jutil.funcbc(f, 1)
  local k = jutil.funcbc(f, 2)
  local ret = jutil.funcbc(f, 3)
  return opname(mov) == "MOV" and rshift(mov, 16) == 0
    and opname(k) == "KSHORT" and rshift(k, 16) == 1 and band(rshift(k, 8), 0xff) == band(rshift(mov, 8), 0xff) + 1
    and opname(ret) == "RET" and band(rshift(ret, 8), 0xff) == band(rshift(mov, 8), 0xff) and rshift(ret, 16) == 3
end

-- The word-count pattern: a chain of exactly flat_map(sr.words) and a
-- pairing map, straight from a text source, consumed only by reduce_by_key
-- with an adding built-in.
function M.is_word_count(chain, consumer_of)
  local s = chain.stages
  if #s ~= 2 or s[1].op ~= "flat_map" or s[1].fn ~= builtins.words or s[2].op ~= "map" then return false end
  if not M.pairs_with_one(s[2].fn) then return false end
  local input = chain.input
  if input.kind ~= "source" or input.format ~= "text" then return false end
  local r = consumer_of(s[2])
  return r and r.op == "reduce_by_key" and builtins.reducers[r.fn] == "add" and r or false
end

-- A counter for one stage: run(input) -> the reduce_by_key result batch.
-- input is a batch from the source, with .cbatch (the sealed C batch) when
-- the runner hands it over unconverted.
function M.word_counter()
  local wc = ffi.gc(C.sr_wordcount_new(), C.sr_wordcount_free)
  local scratch = ffi.gc(C.sr_batch_new(0, 0), C.sr_batch_free)
  local ffi_string = ffi.string
  return function(input)
    local cb = input.cbatch
    if cb == nil then
      -- Lines as Lua strings (the test driver): into a C batch first.
      C.sr_batch_clear(scratch)
      local A = input.a
      for i = 1, input.n do
        local line = A[i]
        if type(line) == "string" then C.sr_batch_append(scratch, line, #line, i) end
      end
      cb = scratch
    end
    if C.sr_wordcount_batch(wc, cb) ~= 0 then error("word count: out of memory", 0) end
    local n = tonumber(wc.n)
    local keys, counts = {}, {}
    local data, off, len, count = wc.data, wc.off, wc.len, wc.count
    for i = 0, n - 1 do
      keys[i + 1] = ffi_string(data + off[i], len[i])
      counts[i + 1] = count[i]
    end
    return { n = n, a = keys, b = counts }
  end
end

return M
