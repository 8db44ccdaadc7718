-- streamrun.sources: turns what sources received into batches. C sources'
-- sealed batches are read through the FFI (one string per record, JSON
-- decoded when format = "json"); the Lua-side sources (generator, queue)
-- produce their elements here, once per batch. What each kind of source is
-- (its traits) is looked up here too.
local core = require "streamrun.core"
local batch = require "streamrun.batch"
local guard = require "streamrun.guard"
local cjson = require "cjson"

local C, ffi = core.C, core.ffi
local ffi_string = ffi.string
local tnew = batch.new_table
local decode, null = cjson.decode, cjson.null
local decode_batch = core.json.decode_batch
local pcall, floor, tostring, type = pcall, math.floor, tostring, type
local setmetatable, rawget, rawset = setmetatable, rawget, rawset

local M = {}

-- -- Traits --

-- What a kind of source is, as sr_source_traits_t says it: bounded (its
-- input ends), stored (reads stored input), logged (its records go to the
-- write-ahead log), rereads (a logged batch is replayed by reading the file
-- again), resumes (at a position: what came after the last marker is read
-- again), file_list (its position names files); c: it runs on the event
-- loop. The C kinds' come from their source type; the Lua-side kinds' are
-- these (both resume at their position in a checkpoint).
local LUA_TRAITS = {
  generator = { c = false, bounded = false, stored = false, logged = false, rereads = false, resumes = true,
                file_list = false },
  queue = { c = false, bounded = true, stored = false, logged = false, rereads = false, resumes = true,
            file_list = false },
}
-- A generator with a count ends.
local COUNTED_GENERATOR = { c = false, bounded = true, stored = false, logged = false, rereads = false,
                            resumes = true, file_list = false }

local c_traits = {} -- kind -> traits, read from the C registry once

-- The traits of a kind of source (the C ones' from their source type), or
-- nil for a kind there is none of.
function M.kind_traits(kind)
  local t = LUA_TRAITS[kind] or c_traits[kind]
  if t or type(kind) ~= "string" then return t end
  local ct = ffi.new("sr_source_traits_t")
  if C.sr_source_traits(kind, ct) ~= 0 then return nil end
  t = { c = true, bounded = ct.bounded ~= 0, stored = ct.stored ~= 0, logged = ct.logged ~= 0,
        rereads = ct.rereads ~= 0, resumes = ct.resumes ~= 0, file_list = ct.file_list ~= 0 }
  c_traits[kind] = t
  return t
end

-- The traits of a source node.
function M.traits(node)
  if node.op == "generator" and node.total ~= nil then return COUNTED_GENERATOR end
  return M.kind_traits(node.c_kind or node.op)
end

-- cjson's message without the Lua location luaL_error put in front of it.
local function json_reason(err)
  return "invalid JSON: " .. tostring(err):gsub("^[^:]*:%d+: ", "")
end

-- Decodes the records of a sealed C batch as JSON: the runtime's decoder
-- takes the whole batch in one call and stops at a record it leaves to
-- lua-cjson (anything but strict JSON, a bare null), which is decoded here,
-- one pcall each: its value, or its dead letter with lua-cjson's reason.
-- line(i) makes record i's string (only for those records); dead(i, reason).
-- The batch's skips list the records that made no element.
local function decode_json(cb, n, line, dead)
  local out, m, i = tnew(n, 0), 0, 0
  local skips
  while true do
    m, i = decode_batch(cb, out, m, i)
    if i >= n then break end
    i = i + 1
    local ok, v = pcall(decode, line(i))
    if ok and v ~= null then
      m = m + 1
      out[m] = v
    else
      skips = skips or {}
      skips[#skips + 1] = i
      dead(i, ok and "JSON null is not an element" or json_reason(v))
    end
  end
  local b = batch.of_values(out, m)
  b.skips = skips
  return b
end

-- A batch from the records of a sealed C batch (sr_batch_t *).
-- dead(source_name, offset, reason, record) receives undecodable records.
function M.read_c_batch(node, cb, dead)
  if node.c_hooks then return node.c_hooks.read(node, cb, dead) end -- framed records (kafka)
  local n = tonumber(cb.n)
  local data, off = cb.data, cb.off
  local b
  if node.format ~= "json" then
    local lines = tnew(n, 0)
    for i = 0, n - 1 do
      local s = off[i]
      lines[i + 1] = ffi_string(data + s, off[i + 1] - s)
    end
    b = batch.of_values(lines, n)
  else
    local function line(i)
      local s = off[i - 1]
      return ffi_string(data + s, off[i] - s)
    end
    b = decode_json(cb, n, line, function(i, reason)
      dead(node.stage_name, tonumber(cb.pos[i - 1]), reason, line(i))
    end)
  end
  -- Offsets for dead letters of later stages; valid while the C batch is
  -- (it is released after the batch ran).
  b.src, b.pos = node.stage_name, cb.pos
  return b
end

-- A batch of a text source's sealed C batch, handed as it is to a step
-- that reads the C records itself (a native step, a chain starting with
-- flat_map(sr.words)): { n, cbatch, src, pos }. Reading its .a or .b (any
-- other reader: a skipped record, the test driver's feed) makes the lines
-- as read_c_batch does, once.
local RawBatch = {
  __index = function(b, k)
    if k ~= "a" and k ~= "b" then return nil end
    local cb = rawget(b, "cbatch")
    local n, data, off = b.n, cb.data, cb.off
    local lines = tnew(n, 0)
    for i = 0, n - 1 do
      local s = off[i]
      lines[i + 1] = ffi_string(data + s, off[i + 1] - s)
    end
    local whole = batch.of_values(lines, n)
    rawset(b, "a", whole.a)
    rawset(b, "b", whole.b)
    return whole[k]
  end,
}
function M.raw_c_batch(node, cb)
  return setmetatable({ n = tonumber(cb.n), cbatch = cb, src = node.stage_name, pos = cb.pos }, RawBatch)
end

-- A batch from Lua values (the test driver's pushes, a queue's batch):
-- strings are records as a C source would deliver them (decoded if JSON),
-- other values are elements already. first_offset numbers the records,
-- or positions (a list beside values: the records' positions in their
-- source, as the write-ahead log keeps them) gives their offsets.
function M.read_values(node, values, first_offset, dead, positions)
  if node.c_hooks and node.keyed == "yes" then return node.c_hooks.read_values(node, values, first_offset, dead) end
  local n = #values
  local out, m = tnew(n, 0), 0
  local json = node.format == "json"
  local skips
  for i = 1, n do
    local v = values[i]
    if json and type(v) == "string" then
      local ok, d = pcall(decode, v)
      local offset = positions and positions[i] or first_offset + i - 1
      if not ok then
        dead(node.stage_name, offset, json_reason(d), v)
        d = nil
      elseif d == null then
        dead(node.stage_name, offset, "JSON null is not an element", v)
        d = nil
      end
      v = d
    end
    if v ~= nil then
      m = m + 1
      out[m] = v
    else
      skips = skips or {}
      skips[#skips + 1] = i
    end
  end
  local b = batch.of_values(out, m)
  b.src, b.first, b.skips = node.stage_name, first_offset, skips
  if positions then
    local pos = {} -- (0-based, as a C batch's)
    for i = 1, n do pos[i - 1] = positions[i] end
    b.pos = pos
  end
  return b
end

-- -- Lua-side sources --

-- Generator state: produces rate * interval elements per batch, fn(i) for
-- i = 1, 2, ...; with count, ends after count elements.
function M.generator_state(node)
  return { next_i = 1, carry = 0, done = node.total == 0 }
end

-- report(node, err, i) receives a failing fn(i). The calls run in one
-- guarded loop (guard.each), not one xpcall each.
function M.generate(node, st, batch_ms, report)
  if st.done then return batch.empty() end
  local want = node.rate * batch_ms / 1000 + st.carry
  local k = floor(want)
  st.carry = want - k
  if node.total then
    local left = node.total - (st.next_i - 1)
    if k >= left then k, st.done = left, true end
  end
  local out, m = tnew(k, 0), 0
  local fn = node.fn
  local first, skips = st.next_i, nil
  local function skip(j)
    skips = skips or {}
    skips[#skips + 1] = j
  end
  guard.each(k, function(j)
    local v = fn(first + j - 1)
    if v ~= nil then
      m = m + 1
      out[m] = v
    else
      skip(j)
    end
  end, function(j, err)
    report(node, err, first + j - 1)
    skip(j)
  end)
  st.next_i = first + k
  local b = batch.of_values(out, m)
  b.src, b.first, b.skips = node.stage_name, first, skips
  return b
end

-- Queue state: batch k of the job takes the queue's k-th array.
function M.queue_state(node)
  return { next = 1, done = #node.batches == 0 }
end

function M.dequeue(node, st, dead)
  local b = node.batches[st.next]
  if b == nil then
    st.done = true
    return batch.empty()
  end
  st.next = st.next + 1
  if st.next > #node.batches then st.done = true end
  return M.read_values(node, b, 1, dead)
end

return M
