-- streamrun.statevalue against the Lua binding's msgpack (cstate.encode and
-- cstate.decode, runtime/sr_msgpack_lua.c): the same bytes for every table
-- it takes, the same tables back, and nil for everything it leaves to the
-- binding. Random cases come from a linear congruential generator with a
-- fixed seed, and run often enough for LuaJIT to compile the encoder and
-- decoder (the compiled code is what map_with_state runs).
local ffi = require "ffi"
local statevalue = require "streamrun.statevalue"
local cstate = require("streamrun.core").cstate

local encode, decode = statevalue.encode, statevalue.decode
local BYTES = ffi.typeof("const uint8_t *")

local function bytes(v)
  local p, n = encode(v)
  if not p then return nil end
  return ffi.string(p, n)
end

local function hex(s)
  return (s:gsub(".", function(c) return ("%02x"):format(c:byte()) end))
end

local function dec(s) return decode(ffi.cast(BYTES, s), #s) end

-- Deep equality of two flat tables, NaN equal to NaN, 0 and -0 told apart
-- only through the bytes (compared separately).
local function same(a, b)
  if type(a) ~= "table" or type(b) ~= "table" then return false end
  local k = next(a)
  while k ~= nil do
    local x, y = a[k], b[k]
    if not (x == y or (x ~= x and y ~= y)) then return false end
    k = next(a, k)
  end
  k = next(b)
  while k ~= nil do
    if a[k] == nil then return false end
    k = next(b, k)
  end
  return true
end

local EDGES = {
  0, 1, 127, 128, 255, 256, 65535, 65536, 4294967295, 4294967296, 2 ^ 53, 2 ^ 63 - 2 ^ 10, 2 ^ 63, 2 ^ 64,
  -1, -32, -33, -128, -129, -32768, -32769, -2147483648, -2147483649, -2 ^ 53, -2 ^ 63, -2 ^ 64,
  0.5, -0.5, 1e300, -1e-300, 1 / 0, -1 / 0, 0 / 0, 3.14159, -0.0, 2 ^ 31, 2 ^ 31 - 1, 2 ^ 32 - 0.5,
}

local seed = 12345
local function rand(n)
  seed = (seed * 1103515245 + 12345) % 2147483648
  return seed % n + 1
end

local function scalar()
  local r = rand(10)
  if r == 1 then return rand(2) == 1 end
  if r <= 4 then return EDGES[rand(#EDGES)] end
  if r <= 7 then return rand(1000) - 500 end
  return (rand(2000000) - 1000000) / 7
end

local function random_table()
  local t = {}
  if rand(2) == 1 then
    for i = 1, rand(15) do t[i] = scalar() end
  else
    for i = 1, rand(15) do t["k" .. ("x"):rep(rand(28)) .. i] = scalar() end
  end
  return t
end

describe("statevalue", function()
  it("encodes flat tables to the binding's bytes and decodes them to equal tables", function()
    for case = 1, 20000 do
      local t = random_table()
      local want = assert(cstate.encode(t))
      local got = bytes(t)
      if got ~= want then
        error(("case %d: statevalue %s, binding %s"):format(case, got and hex(got) or "nil", hex(want)))
      end
      local back = dec(want)
      assert(same(back, cstate.decode(want)), "case " .. case .. ": decoded tables differ for " .. hex(want))
      assert(same(back, t), "case " .. case .. ": the table does not come back")
    end
  end)

  it("decodes every number encoding the binding reads (msgpack-c's, float 32 too)", function()
    local cases = {
      "\x91\x05", "\x91\xff", "\x91\xcc\xc8", "\x91\xcd\xab\xcd", "\x91\xce\xde\xad\xbe\xef",
      "\x91\xcf\x00\x20\x00\x00\x00\x00\x00\x01", "\x91\xcf\xff\xff\xff\xff\xff\xff\xff\xff",
      "\x91\xd0\x80", "\x91\xd1\x80\x00", "\x91\xd2\x80\x00\x00\x00",
      "\x91\xd3\xff\xff\xff\xff\xff\xff\xff\xfe", "\x91\xd3\x80\x00\x00\x00\x00\x00\x00\x00",
      "\x91\xca\x40\x49\x0f\xdb", "\x91\xcb\x40\x09\x21\xfb\x54\x44\x2d\x18", "\x92\xc3\xc2",
      "\x82\xa1a\x01\xa3sum\xcb\x3f\xf8\x00\x00\x00\x00\x00\x00",
    }
    for _, s in ipairs(cases) do
      local got = dec(s)
      assert(got, "not decoded: " .. hex(s))
      assert(same(got, cstate.decode(s)), "differs from the binding: " .. hex(s))
    end
  end)

  it("leaves to the binding what it does not take", function()
    local function bind(v)
      return {} -- (a value only the binding encodes: a table inside)
    end
    local refused = {
      {}, { {} }, { 1, { 2 } }, { "a" }, { 1, nil, 3 }, { [0] = 1 }, { [2] = 1 }, { 1, x = 2 },
      { [1.5] = 1 }, { [true] = 1 }, { a = "s" }, { a = bind() }, { [("k"):rep(32)] = 1 },
      { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16 }, 5, "s", true,
    }
    local sixteen = {}
    for i = 1, 16 do sixteen["k" .. i] = i end
    refused[#refused + 1] = sixteen
    for i, v in ipairs(refused) do
      assert.is_nil(encode(v), "case " .. i)
    end
    -- A map with a number key: the binding's map, not this module's.
    assert.is_nil(encode({ 1, 2, [5] = 3 }))
    for _, s in ipairs({ "", "\x90", "\x80", "\x05", "\x91", "\x92\x01", "\x91\xcb\x00", "\x91\xa1x", "\x91\xc0",
                         "\x81\x01\x02", "\x81\xa2ab", "\x91\x01\x02", "\xdc\x00\x01\x01" }) do
      assert.is_nil(dec(s), hex(s))
    end
  end)

  it("takes a table with keys 1..n that was built out of order or grew", function()
    local t = {}
    t[3], t[1], t[2] = 3.5, 1, -2
    assert.equal(assert(cstate.encode(t)), bytes(t))
    local u = { 1 }
    for i = 2, 15 do u[i] = i * 1000 end
    assert.equal(assert(cstate.encode(u)), bytes(u))
  end)
end)
