-- streamrun.statevalue: state values that are small flat tables (an array
-- of up to 15 numbers or booleans, a map of up to 15 of them under short
-- string keys: {sum, count}, {sum = s, n = c}) encoded to and decoded from
-- msgpack in Lua through the FFI, so LuaJIT compiles them into a stateful
-- stage's batch loop instead of calling the Lua binding's C functions per
-- key. The bytes are exactly those the binding writes (runtime/
-- sr_msgpack_lua.c: an array when the keys are exactly 1..n, else a map in
-- next() order; whole numbers as msgpack-c's smallest integer, the others
-- as doubles) and the tables those it makes; anything else is left to the
-- binding (encode and decode return nil).
local ffi = require "ffi"
local bit = require "bit"
local tnew = require "table.new"

local band, rshift = bit.band, bit.rshift
local floor, type, next = math.floor, type, next
local ffi_string, ffi_copy = ffi.string, ffi.copy

local M = {}

-- What one value can take: 1 + 15 * (32 key bytes + 9 value bytes).
local BUF_SIZE = 1024
local buf = ffi.new("uint8_t[?]", BUF_SIZE)
-- Whole words are byte-swapped (msgpack is big-endian) rather than moved a
-- byte at a time: a loop per number would be a trace of its own.
local SWAP = ffi.abi("le")
local u = ffi.new("union { double d; uint64_t u; float f; uint32_t w; }")
local P64, P32, P16 = ffi.typeof("uint64_t *"), ffi.typeof("uint32_t *"), ffi.typeof("uint16_t *")
local bswap = bit.bswap

local TWO32 = 4294967296

-- The 4 bytes of a 32-bit word (0 <= w < 2^32, or its two's complement) at o.
local function put32(o, w)
  ffi.cast(P32, buf + o)[0] = SWAP and bswap(w) or w
end

-- Encodes x at o; returns the offset after it.
local function put_number(o, x)
  if x == floor(x) and x >= -9.2233720368547758e18 and x < 9.2233720368547758e18 then
    if x >= 0 then
      if x < 128 then buf[o] = x return o + 1 end
      if x < 256 then buf[o], buf[o + 1] = 0xcc, x return o + 2 end
      if x < 65536 then
        buf[o], buf[o + 1], buf[o + 2] = 0xcd, rshift(x, 8), band(x, 255)
        return o + 3
      end
      if x < TWO32 then buf[o] = 0xce put32(o + 1, x) return o + 5 end
      local hi = floor(x / TWO32)
      buf[o] = 0xcf
      put32(o + 1, hi)
      put32(o + 5, x - hi * TWO32)
      return o + 9
    end
    if x >= -32 then buf[o] = x + 256 return o + 1 end
    if x >= -128 then buf[o], buf[o + 1] = 0xd0, x + 256 return o + 2 end
    if x >= -32768 then
      local w = x + 65536
      buf[o], buf[o + 1], buf[o + 2] = 0xd1, rshift(w, 8), band(w, 255)
      return o + 3
    end
    if x >= -2147483648 then buf[o] = 0xd2 put32(o + 1, x) return o + 5 end
    local hi = floor(x / TWO32)
    buf[o] = 0xd3
    put32(o + 1, hi)
    put32(o + 5, x - hi * TWO32)
    return o + 9
  end
  u.d = x
  buf[o] = 0xcb
  ffi.cast(P64, buf + o + 1)[0] = SWAP and bswap(u.u) or u.u
  return o + 9
end

-- Encodes a scalar element at o: the offset after it, or nil.
local function put_scalar(o, v)
  local t = type(v)
  if t == "number" then return put_number(o, v) end
  if t == "boolean" then
    buf[o] = v and 0xc3 or 0xc2
    return o + 1
  end
  return nil
end

-- v's msgpack bytes (in a buffer reused by the next call) and their count,
-- or nil when v is not a table this module encodes. Keys are walked with
-- next() in a while loop, not pairs(): the installed LuaJIT's compiled
-- pairs() loop may stop early once blacklisted (LuaJIT bug #827).
function M.encode(v)
  if type(v) ~= "table" then return nil end
  local n = #v
  if n > 0 and n <= 15 then
    -- An array when v[1..n] are all set and there is no other key.
    local o = 1
    for i = 1, n do
      o = put_scalar(o, v[i])
      if not o then return nil end
    end
    local count, k = 0, next(v)
    while k ~= nil do
      count = count + 1
      k = next(v, k)
    end
    if count == n then
      buf[0] = 0x90 + n
      return buf, o
    end
  end
  local count, o = 0, 1
  local k, x = next(v)
  while k ~= nil do
    count = count + 1
    if count > 15 or type(k) ~= "string" then return nil end
    local kl = #k
    if kl > 31 then return nil end
    buf[o] = 0xa0 + kl
    ffi_copy(buf + o + 1, k, kl)
    o = put_scalar(o + 1 + kl, x)
    if not o then return nil end
    k, x = next(v, k)
  end
  if count == 0 then return nil end
  buf[0] = 0x80 + count
  return buf, o
end

-- Big-endian unsigned integers of 2 and 4 bytes at p + o.
local function be16(p, o)
  local w = ffi.cast(P16, p + o)[0]
  return SWAP and rshift(bswap(w), 16) or w
end
local function be32(p, o)
  local w = ffi.cast(P32, p + o)[0]
  return SWAP and bswap(w) % TWO32 or w
end

-- Decodes the scalar at p + o (n bytes in all): the value and the offset
-- after it, or nil.
local function get_scalar(p, o, n)
  local c = p[o]
  if c <= 0x7f then return c, o + 1 end
  if c >= 0xe0 then return c - 256, o + 1 end
  if c == 0xc2 then return false, o + 1 end
  if c == 0xc3 then return true, o + 1 end
  if c == 0xcb then
    if o + 9 > n then return nil end
    local w = ffi.cast(P64, p + o + 1)[0]
    u.u = SWAP and bswap(w) or w
    return u.d, o + 9
  end
  if c == 0xcc then
    if o + 2 > n then return nil end
    return p[o + 1], o + 2
  end
  if c == 0xcd then
    if o + 3 > n then return nil end
    return be16(p, o + 1), o + 3
  end
  if c == 0xce then
    if o + 5 > n then return nil end
    return be32(p, o + 1), o + 5
  end
  if c == 0xcf or c == 0xd3 then
    if o + 9 > n then return nil end
    local hi = be32(p, o + 1)
    if c == 0xd3 and hi >= 2147483648 then hi = hi - TWO32 end
    return hi * TWO32 + be32(p, o + 5), o + 9
  end
  if c == 0xd0 then
    if o + 2 > n then return nil end
    local x = p[o + 1]
    return x >= 128 and x - 256 or x, o + 2
  end
  if c == 0xd1 then
    if o + 3 > n then return nil end
    local x = be16(p, o + 1)
    return x >= 32768 and x - 65536 or x, o + 3
  end
  if c == 0xd2 then
    if o + 5 > n then return nil end
    local x = be32(p, o + 1)
    return x >= 2147483648 and x - TWO32 or x, o + 5
  end
  if c == 0xca then
    if o + 5 > n then return nil end
    local w = ffi.cast(P32, p + o + 1)[0]
    u.w = SWAP and bswap(w) or w
    return u.f, o + 5
  end
  return nil
end

-- The table of the n msgpack bytes at p (a uint8_t pointer), or nil when
-- they are not a table this module decodes.
function M.decode(p, n)
  if n < 1 then return nil end
  local c = p[0]
  local o = 1
  if c >= 0x90 and c <= 0x9f then
    local len = c - 0x90
    if len == 0 then return nil end
    local t = tnew(len, 0)
    for i = 1, len do
      if o >= n then return nil end
      local x
      x, o = get_scalar(p, o, n)
      if o == nil then return nil end
      t[i] = x
    end
    if o ~= n then return nil end
    return t
  end
  if c >= 0x81 and c <= 0x8f then
    local len = c - 0x80
    local t = tnew(0, len)
    for _ = 1, len do
      if o >= n then return nil end
      local kc = p[o]
      if kc < 0xa0 or kc > 0xbf then return nil end
      local kl = kc - 0xa0
      if o + 1 + kl >= n then return nil end
      local k = ffi_string(p + o + 1, kl)
      local x
      x, o = get_scalar(p, o + 1 + kl, n)
      if o == nil then return nil end
      t[k] = x
    end
    if o ~= n then return nil end
    return t
  end
  return nil
end

M.BUF_SIZE = BUF_SIZE

return M
