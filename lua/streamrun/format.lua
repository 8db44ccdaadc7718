-- streamrun.format: how elements are written as text (print, text files:
-- pairs as (k,v), tables as JSON, as Spark prints tuples) and as JSON lines.
local cjson = require "cjson.safe"

local type, tostring, tonumber, format, floor, ipairs = type, tostring, tonumber, string.format, math.floor, ipairs

local M = {}

local json = cjson.new()
json.encode_sparse_array(true)
json.encode_invalid_numbers(true)

local function number(v)
  if v == floor(v) and v > -2 ^ 53 and v < 2 ^ 53 then return format("%d", v) end
  return tostring(v)
end

local encode_leaf = json.encode
local sort, concat, next, pairs = table.sort, table.concat, next, pairs

-- The key of an object member as JSON text, and as a sort key.
local function member_key(k)
  if type(k) == "string" then return k end
  if type(k) == "number" then return number(k) end
  return tostring(k)
end

-- Tables as JSON with object members sorted by key, so the same value is
-- written the same way in every run (this LuaJIT orders a table's keys by a
-- hash seeded per process). Arrays (integer keys 1..n, holes as null) stay
-- arrays; a table JSON cannot express gives nil.
local function encode(v, depth)
  if type(v) ~= "table" then return encode_leaf(v) end
  if depth > 32 then return nil end
  local count, max, ints = 0, 0, true
  for k in pairs(v) do
    count = count + 1
    if ints and type(k) == "number" and k >= 1 and k % 1 == 0 then
      if k > max then max = k end
    else
      ints = false
    end
  end
  if count == 0 then return "{}" end
  local parts = {}
  if ints and max <= 2 * count + 8 then
    for i = 1, max do
      local e = v[i]
      local s = e == nil and "null" or encode(e, depth + 1)
      if not s then return nil end
      parts[i] = s
    end
    return "[" .. concat(parts, ",") .. "]"
  end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = member_key(k) end
  sort(keys)
  for i, key in ipairs(keys) do
    local e = v[key]
    if e == nil then e = v[tonumber(key)] end
    if e == nil and (key == "true" or key == "false") then e = v[key == "true"] end
    local s = encode(e, depth + 1)
    if not s then return nil end
    parts[i] = encode_leaf(key) .. ":" .. s
  end
  return "{" .. concat(parts, ",") .. "}"
end

-- A JSON text for any element value; tables that JSON cannot express fall
-- back to tostring.
function M.json(v)
  local s = encode(v, 0)
  if s == nil then return tostring(v) end
  return s
end

-- A value as text: strings as they are, numbers without a trailing .0,
-- tables as JSON.
function M.value(v)
  local t = type(v)
  if t == "string" then return v end
  if t == "number" then return number(v) end
  if t == "table" then return M.json(v) end
  return tostring(v)
end

local value = M.value

-- Element (a, b) as Spark prints it: a single value, or "(k,v)".
function M.element(a, b)
  if b == nil then return value(a) end
  return "(" .. value(a) .. "," .. value(b) .. ")"
end

-- Element (a, b) as one JSON line: a pair is {"key":k,"value":v}.
function M.json_element(a, b)
  if b == nil then return M.json(a) end
  return '{"key":' .. M.json(a) .. ',"value":' .. M.json(b) .. "}"
end

return M
