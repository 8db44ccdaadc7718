-- streamrun.format: how elements are written as text (print, text files:
-- pairs as (k,v), tables as JSON, as Spark prints tuples) and as JSON lines.

local type, tostring, format, floor = type, tostring, string.format, math.floor
local encode = require("streamrun.core").json.encode

local M = {}

local function number(v)
  if v == floor(v) and v > -2 ^ 53 and v < 2 ^ 53 then return format("%d", v) end
  return tostring(v)
end


-- v with what JSON cannot hold shown by its type ("<function>"; a table
-- met again inside itself "<cycle>"), so that the text still says the
-- rest (and never an address, which differs from run to run).
local function shown(v, seen)
  local t = type(v)
  if t == "string" or t == "number" or t == "boolean" then return v end
  if t ~= "table" then return "<" .. t .. ">" end
  if seen[v] then return "<cycle>" end
  seen[v] = true
  local out = {}
  for k, x in pairs(v) do
    local tk = type(k)
    out[(tk == "string" or tk == "number") and k or ("<" .. tk .. ">")] = shown(x, seen)
  end
  seen[v] = nil
  return out
end

-- A JSON text for any element value, objects with their members sorted by
-- key (the same value is written the same way in every run); values JSON
-- cannot express are shown by their type.
function M.json(v)
  local s = encode(v)
  if s == nil then s = encode(shown(v, {})) end
  if s == nil then return tostring(v) end
  return s
end

-- A text that stands for v and no other value (NaN, infinities and bytes
-- that are not UTF-8 as they are, numbers to 17 digits): the same value
-- gives the same text in every run, and lua-cjson reads it back.
function M.exact_json(v)
  return encode(v, true) or tostring(v)
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

-- Element (a, b) as one JSON line, or nil and why when a value cannot be
-- JSON (a function, a table nested too deep): no fallback to tostring, so
-- what is written always parses.
function M.json_line(a, b)
  local ka, err = encode(a)
  if ka == nil or b == nil then return ka, err end
  local kb
  kb, err = encode(b)
  if kb == nil then return nil, err end
  return '{"key":' .. ka .. ',"value":' .. kb .. "}"
end

return M
