-- JSON sources' batches (sources.read_c_batch with format = "json"): the
-- runtime's batch decoder (runtime/sr_json_decode.c) and lua-cjson for what
-- it leaves must give, record for record, what lua-cjson's decode gives: the
-- same values (numbers to the bit, cjson.null, strings byte for byte) and
-- the same dead letters (reason, source, offset, record).
local core = require "streamrun.core"
local sources = require "streamrun.sources"
local cjson = require "cjson"

local C, ffi = core.C, core.ffi
local null = cjson.null

local NODE = { op = "stdin", format = "json", stage_name = "events" }

-- A sealed C batch of the records, record i at stream offset 1000 + 10 * i.
local function c_batch(records)
  local b = ffi.gc(C.sr_batch_new(0, 0), C.sr_batch_free)
  for i, r in ipairs(records) do assert(C.sr_batch_append(b, r, #r, 1000 + 10 * i) == 0) end
  return b
end

-- What lua-cjson makes of each record, as read_c_batch must report it.
local function reference(records)
  local elements, dead = {}, {}
  for i, r in ipairs(records) do
    local ok, v = pcall(cjson.decode, r)
    if ok and v ~= null then
      elements[#elements + 1] = v
    else
      local reason = ok and "JSON null is not an element"
        or "invalid JSON: " .. tostring(v):gsub("^[^:]*:%d+: ", "")
      dead[#dead + 1] = { source = "events", offset = 1000 + 10 * i, reason = reason, record = r }
    end
  end
  return elements, dead
end

local function decoded(records)
  local dead = {}
  local b = sources.read_c_batch(NODE, c_batch(records), function(source, offset, reason, record)
    dead[#dead + 1] = { source = source, offset = offset, reason = reason, record = record }
  end)
  local elements = {}
  for i = 1, b.n do elements[i] = b.a[i] end
  return elements, dead, b
end

-- Deep equality that tells -0 from 0 and takes NaN as equal to NaN.
local function same(x, y, path)
  path = path or "value"
  if type(x) ~= type(y) then return false, path .. ": " .. type(x) .. " vs " .. type(y) end
  if type(x) == "number" then
    if x ~= x and y ~= y then return true end
    if x ~= y or 1 / x ~= 1 / y then return false, ("%s: %.17g vs %.17g"):format(path, x, y) end
    return true
  end
  if type(x) ~= "table" then
    if x ~= y then return false, path .. ": " .. tostring(x) .. " vs " .. tostring(y) end
    return true
  end
  if #x ~= #y then return false, path .. ": length " .. #x .. " vs " .. #y end
  for k, v in pairs(x) do
    local ok, why = same(v, y[k], path .. "." .. tostring(k))
    if not ok then return false, why end
  end
  for k in pairs(y) do
    if x[k] == nil then return false, path .. "." .. tostring(k) .. ": missing" end
  end
  return true
end

local function check(records)
  local want, want_dead = reference(records)
  local got, got_dead, b = decoded(records)
  assert.equal(#want, b.n)
  for i = 1, #want do
    local ok, why = same(got[i], want[i])
    assert(ok, ("record %q: %s"):format(tostring(records[i]), tostring(why)))
  end
  assert.same(want_dead, got_dead)
  return got, got_dead, b
end

describe("JSON sources' batch decoding", function()
  it("decodes a batch of objects as lua-cjson does", function()
    local got = check({
      '{"user":"u83794","action":"view","amount":370.50,"ts":1700000000007,"page":"/checkout","ok":true}',
      '{"user":"ann","nested":{"a":[1,2,{"b":null}],"e":{}},"list":[],"f":false,"n":null}',
      '  {"spaced" :\t[ 1 , 2 ] , "x" : "y" }\r',
    })
    assert.equal(370.5, got[1].amount)
    assert.equal(null, got[2].n)
    assert.equal(null, got[2].nested.a[3].b)
    assert.equal(2, #got[3].spaced)
  end)

  it("decodes top-level scalars and arrays, and sends a bare null to the dead letters", function()
    local _, dead, b = check({ "5", '"s"', "true", "false", "[1,null,3]", "null", " null ", "[]", "{}" })
    assert.equal(7, b.n)
    assert.equal(2, #dead)
    assert.equal("JSON null is not an element", dead[1].reason)
    assert.same({ 6, 7 }, b.skips)
  end)

  it("reads numbers to the bit, as strtod does", function()
    local nums = { "0", "-0", "-0.0", "0.0", "1", "-1", "1.5", "370.50", "0.1", "0.2", "0.3", "4.35",
      "0.30000000000000004", "1e5", "1E5", "1e+5", "1e-5", "1.5e-10", "-2.5E+3", "1e22", "1e23", "1e-22",
      "1e-23", "9007199254740992", "9007199254740993", "9007199254740995", "18446744073709551615",
      "18446744073709551616", "12345678901234567890123", "0.000000000000000000000000000001",
      "1.7976931348623157e308", "1.7976931348623159e308", "1e400", "-1e400", "5e-324", "2.4703282292062328e-324",
      "1e-400", "0e500", "-0e-500", "123456789012345678", "1234567890123456789", "0.1234567890123456789",
      "1700000000007", "3.141592653589793238462643383279", "2.2250738585072011e-308", "100000000000000000000000",
      "1e00000000000000000000000000001", "1e-0000000000000000000000000022" }
    local records = {}
    for i, s in ipairs(nums) do records[i] = '{"x":' .. s .. '}' end
    for i, s in ipairs(nums) do records[#records + 1] = "[" .. s .. "]" end
    check(records)
    check(nums)
  end)

  it("reads random numbers to the bit", function()
    math.randomseed(13)
    local records = {}
    for i = 1, 3000 do
      local x = (math.random() - 0.5) * 10 ^ math.random(-30, 30)
      local f = ({ "%.17g", "%.15g", "%.6f", "%.2f", "%.0f", "%.3e", "%.20g" })[i % 7 + 1]
      local digits = {}
      for j = 1, math.random(1, 24) do digits[j] = tostring(math.random(0, 9)) end
      local d = table.concat(digits):gsub("^0+(%d)", "%1")
      records[#records + 1] = ('{"a":%s,"b":%s.%s,"c":%se%d}'):format(f:format(x), d, d, d, math.random(-40, 40))
    end
    check(records)
  end)

  it("leaves lua-cjson's extensions and errors to lua-cjson", function()
    check({ "0x10", "01", "-01", "+1", "inf", "-inf", "nan", "-nan", "Infinity", "1.", ".5", "-.5", "1e", "1e+",
      "-", "1.e5", "1x", "[1 2]", "{\"a\" 1}", "{\"a\":1,}", "[1,]", "{,}", "{'a':1}", "{a:1}", "tru", "nul",
      "True", "[true false]", "", " ", "{}x", "{} {}", "[", "{", '{"a":', '"abc', '{"a":1', "]", "}",
      '{"a":01}', '[0x1F]', '{"n":nan}', '{"i":-Infinity}', "1 2", "\"\\x\"", "[-]", "{\"a\":-}",
      "{\"a\":.5}", "[1.]", "[1e]", "[+1]" })
  end)

  it("decodes strings as lua-cjson does: escapes, surrogates, raw bytes", function()
    check({
      [["plain"]], [["a\"b\\c\/d\be\ff\ng\rh\ti"]], [["\u00e9\u20AC\uD83D\uDE00"]], [["\u0000nul"]],
      [["\uD83D"]], [["\uDE00"]], [["\uDE00\uDE00"]], [["\uDE00\uD83D"]], [["\uD83D\uD83D"]],
      [["\uD83Dx"]], [["\uD83D\u0041"]], [["\u12G4"]], [["\u12"]], [["\q"]],
      '"raw\1\31\127 bytes"', '"\255\254 not utf-8"', '"caf\195\169"', '"emb\0edded"', '"a' .. ("\\n"):rep(700) .. '"',
      '{"k\\u00e9y":1,"k\\"q":2}', '{"dup":1,"dup":2}', '{"dup":1,"dup":null}', "{}\0trailing", "\0",
      '"' .. ("x"):rep(5000) .. '"',
    })
  end)

  it("gives each member its own name: many names, names alike but for a byte, long names", function()
    math.randomseed(5)
    local names = { "a", "b", "ab", "ba", "aaaaaaa", "aaaaaaaa", "aaaaaaaaa", "aaaaaaab", "aaaaaaaaaaaaaaaa",
      "aaaaaaaaaaaaaaab", "aaaaaaaaaaaaaaaaa", ("x"):rep(24), ("x"):rep(23) .. "y", ("x"):rep(25), ("x"):rep(40),
      "", "a\\u0000", "a\\u0000b", "\\u00e9", "\\u00e9t\\u00e9", "user", "User", "us\\u0065r" }
    for i = 1, 3000 do names[#names + 1] = ("id%d"):format(math.random(1, 5000)) end
    local records = {}
    for i = 1, 3000 do
      local parts = {}
      for j = 1, math.random(1, 9) do
        local k = names[math.random(#names)]
        parts[j] = ('"%s":%d'):format(k, i * 10 + j)
      end
      records[i] = "{" .. table.concat(parts, ",") .. "}"
    end
    check(records)
  end)

  -- The cache slot sr_json_decode.c gives a name (its hash, redone here),
  -- to make names that share a slot.
  local function slot(name)
    local len = #name
    local function word(off)
      local x = 0ULL
      for i = math.min(len, off + 8), off + 1, -1 do x = x * 256 + name:byte(i) end
      return x
    end
    local h = bit.bxor(word(0) * 0x9E3779B97F4A7C15ULL, word(8) * 0xC2B2AE3D27D4EB4FULL,
      word(16) * 0x165667B19E3779F9ULL, len)
    h = bit.bxor(h, bit.rshift(h, 29))
    return tonumber(bit.rshift(h * 0xFF51AFD7ED558CCDULL, 54))
  end

  it("tells apart names that share a cache slot, whichever of their words differs", function()
    local pairs_of = {}
    for _, form in ipairs({ "%06d", ("q"):rep(8) .. "%06d", ("p"):rep(16) .. "%06d", ("r"):rep(16) .. "%08d" }) do
      local seen = {}
      for i = 1, 100000 do
        local n = form:format(i)
        local other = seen[slot(n)]
        if other then pairs_of[#pairs_of + 1] = { other, n } break end
        seen[slot(n)] = n
      end
    end
    assert.equal(4, #pairs_of)
    local records = {}
    for i = 1, 400 do
      local a, b = unpack(pairs_of[i % 4 + 1])
      if i % 3 == 0 then a, b = b, a end
      records[#records + 1] = ('{"%s":%d,"%s":%d}'):format(a, i, b, -i)
      records[#records + 1] = ('{"%s":%d}'):format(b, i)
    end
    local got = check(records)
    local a, b = unpack(pairs_of[2])
    assert.same({ [a] = 1, [b] = -1 }, got[1])
  end)

  it("goes as deep as lua-cjson, and gives its error beyond its limit", function()
    local records = {}
    for _, depth in ipairs({ 1, 8, 9, 63, 64, 65, 200, 1000, 1001, 1500 }) do
      records[#records + 1] = ("["):rep(depth) .. ("]"):rep(depth)
      records[#records + 1] = ('{"a":'):rep(depth) .. "1" .. ("}"):rep(depth)
    end
    check(records)
  end)

  it("keeps each record's offset and text in its dead letter, wherever it is in the batch", function()
    local records = {}
    for i = 1, 2000 do
      local r = ('{"i":%d,"s":"v%d"}'):format(i, i)
      if i % 97 == 0 then r = r:sub(1, 5) end
      if i % 101 == 0 then r = "null" end
      records[i] = r
    end
    local got, dead = check(records)
    assert.equal(2000 - 20 - 19, #got)
    assert.equal(20 + 19, #dead)
    assert.equal(1000 + 10 * 97, dead[1].offset)
  end)

  it("decodes records mutated at random as lua-cjson does", function()
    math.randomseed(7)
    local seeds = {
      '{"user":"u1","action":"purchase","amount":42.5,"tags":["a","b"],"n":null,"ok":true,"o":{"x":-1e-3}}',
      '[1,-2.5,"\\u00e9\\n",[[]],{},{"a":[false]}]',
    }
    local alphabet = '{}[]:,"\\-+.0123456789eEtrufalsn \t\1\0\255xu'
    local records = {}
    for i = 1, 4000 do
      local r = seeds[i % #seeds + 1]
      for _ = 1, math.random(1, 3) do
        local at = math.random(1, #r)
        local op = math.random(3)
        local k = math.random(#alphabet)
        local c = alphabet:sub(k, k)
        if op == 1 then r = r:sub(1, at - 1) .. c .. r:sub(at + 1)
        elseif op == 2 then r = r:sub(1, at - 1) .. r:sub(at + 1)
        else r = r:sub(1, at) .. c .. r:sub(at + 1) end
      end
      records[i] = r
    end
    check(records)
  end)

  it("decodes an empty batch", function()
    local got, dead, b = check({})
    assert.equal(0, b.n)
    assert.same({}, got)
    assert.same({}, dead)
  end)
end)
