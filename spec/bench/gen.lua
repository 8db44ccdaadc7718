-- bench.gen: the benchmark inputs, generated from a seed (never downloaded).
-- Each generator writes PATH.tmp, then renames it and writes PATH.meta (the
-- parameters it was made with), so a later run reuses a file only when its
-- meta matches and its size is the one recorded.
--   luajit spec/bench/gen.lua words PATH BYTES [SEED]
--   luajit spec/bench/gen.lua json PATH RECORDS [SEED]
--   luajit spec/bench/gen.lua keys PATH KEYS UPDATES [SEED]
package.path = "./spec/bench/?.lua;" .. package.path
local lib = require "lib"

local floor, concat, char = math.floor, table.concat, string.char

local M = {}

-- Buffered writer: table of pieces flushed every ~1 MB.
local function writer(path)
  local f = assert(io.open(path, "wb"))
  local buf, n, bytes = {}, 0, 0
  local w = {}
  function w.add(s)
    n = n + 1
    buf[n] = s
    bytes = bytes + #s
    if n >= 16384 then
      f:write(concat(buf, "", 1, n))
      n = 0
    end
  end
  function w.close()
    f:write(concat(buf, "", 1, n))
    f:close()
  end
  function w.bytes() return bytes end
  return w
end

-- -- Words: lines of 8-12 words from a Zipf-distributed vocabulary --

-- `size` distinct lowercase words of 2-12 letters, shortest first (so, as in
-- natural text, the frequent ranks are the short words).
local function vocabulary(rng, size)
  local seen, words = {}, {}
  while #words < size do
    local len = 2 + floor(rng:float() * 11)
    local cs = {}
    for i = 1, len do cs[i] = 97 + floor(rng:float() * 26) end
    local w = char(unpack(cs))
    if not seen[w] then
      seen[w] = true
      words[#words + 1] = w
    end
  end
  local order = {}
  for i = 1, size do order[i] = i end
  table.sort(order, function(a, b)
    if #words[a] ~= #words[b] then return #words[a] < #words[b] end
    return a < b
  end)
  local sorted = {}
  for i = 1, size do sorted[i] = words[order[i]] end
  return sorted
end

-- A sampler of ranks 1..n with P(r) proportional to r^-s: the cumulative
-- distribution, and a guide table giving, for each of G equal slices of
-- [0, 1), the first rank whose cumulative weight reaches the slice.
local function zipf(n, s)
  local cdf, total = {}, 0
  for r = 1, n do
    total = total + r ^ -s
    cdf[r] = total
  end
  for r = 1, n do cdf[r] = cdf[r] / total end
  cdf[n] = 1
  local G = 65536
  local guide, r = {}, 1
  for g = 0, G - 1 do
    local lo = g / G
    while cdf[r] <= lo do r = r + 1 end
    guide[g] = r
  end
  return function(u)
    local k = guide[floor(u * G)]
    while cdf[k] <= u do k = k + 1 end
    return k
  end
end

function M.words(path, bytes, seed, opts)
  opts = opts or {}
  local rng = lib.rng(seed)
  local vocab = vocabulary(rng, opts.vocabulary or 50000)
  local sample = zipf(#vocab, opts.exponent or 1.0)
  local w = writer(path)
  local line = {}
  local lines, words = 0, 0
  while w.bytes() < bytes do
    local k = 8 + floor(rng:float() * 5)
    for i = 1, k do line[i] = vocab[sample(rng:float())] end
    w.add(concat(line, " ", 1, k) .. "\n")
    lines, words = lines + 1, words + k
  end
  w.close()
  return { lines = lines, words = words, bytes = w.bytes() }
end

-- -- JSON events --

local ACTIONS = { "view", "view", "view", "view", "click", "click", "cart", "purchase", "purchase", "search" }
local PAGES = { "/", "/home", "/search", "/cart", "/checkout", "/item", "/help", "/account" }

function M.json(path, records, seed)
  local rng = lib.rng(seed)
  local w = writer(path)
  local fmt = string.format
  local purchases, selected = 0, 0
  for i = 1, records do
    local action = ACTIONS[rng:int(#ACTIONS)]
    local amount
    if rng:float() < 0.5 then amount = tostring(rng:int(500))
    else amount = fmt("%.2f", rng:int(50000) / 100) end
    w.add(fmt('{"user":"u%d","action":"%s","amount":%s,"ts":%d,"page":"%s","session":"s%08x","ok":%s}\n',
      rng:int(100000), action, amount, 1700000000000 + i * 7, PAGES[rng:int(#PAGES)],
      rng:int(2 ^ 31), rng:float() < 0.9 and "true" or "false"))
    if action == "purchase" then
      purchases = purchases + 1
      if tonumber(amount) >= 50 then selected = selected + 1 end
    end
  end
  w.close()
  return { records = records, purchases = purchases, selected = selected, bytes = w.bytes() }
end

-- -- Keys: `updates` lines of `keys` distinct keys, each key once per round --

function M.keys(path, keys, updates, seed)
  local rng = lib.rng(seed)
  local w = writer(path)
  local perm = {}
  for i = 1, keys do perm[i] = i end
  local written, key_bytes = 0, 0
  while written < updates do
    -- Fisher-Yates: a fresh order of every key per round.
    for i = keys, 2, -1 do
      local j = rng:int(i)
      perm[i], perm[j] = perm[j], perm[i]
    end
    for i = 1, keys do
      if written >= updates then break end
      local k = ("key%07d"):format(perm[i])
      w.add(k .. "\n")
      written = written + 1
    end
  end
  w.close()
  return { keys = keys, updates = updates, key_bytes = 10, bytes = w.bytes() }
end

-- -- Events: "<key> <epoch ms>" lines, 1M records per second of event
-- time, each up to `jitter` ms behind the time of its place (out of order) --

function M.events(path, records, keys, jitter, seed)
  local rng = lib.rng(seed)
  local w = writer(path)
  local t0 = 1700000000000
  local late_max = 0
  for i = 0, records - 1 do
    local behind = rng:int(jitter + 1) - 1
    if behind > late_max then late_max = behind end
    w.add(("key%05d %d\n"):format(rng:int(keys), t0 + floor(i / 1000) - behind))
  end
  w.close()
  return { records = records, keys = keys, jitter = late_max, bytes = w.bytes() }
end

-- -- Readings: `records` lines "<sensor> <value>", sensors drawn uniformly
-- from `keys`, values with one decimal in [0, 100) --

function M.readings(path, keys, records, seed)
  local rng = lib.rng(seed)
  local w = writer(path)
  for _ = 1, records do
    w.add(("sensor%05d %d.%d\n"):format(rng:int(keys), rng:int(100) - 1, rng:int(10) - 1))
  end
  w.close()
  return { keys = keys, records = records, bytes = w.bytes() }
end

-- -- Reuse --

local function meta_text(kind, params)
  local ks = {}
  for k in pairs(params) do ks[#ks + 1] = k end
  table.sort(ks)
  local parts = { "kind=" .. kind, "generator=1" }
  for _, k in ipairs(ks) do parts[#parts + 1] = k .. "=" .. tostring(params[k]) end
  return concat(parts, " ")
end

-- Makes (or reuses) the input `kind` at path. Returns the generator's info
-- (read back from the meta file when reused) and whether it was reused.
function M.ensure(kind, path, params)
  local want = meta_text(kind, params)
  local meta = lib.read(path .. ".meta")
  if meta then
    local head, info = meta:match("^(.-)\n(.*)$")
    if head == want then
      local t = {}
      for k, v in info:gmatch("(%w+)=(%S+)") do t[k] = tonumber(v) or v end
      if t.bytes and lib.size(path) == t.bytes then return t, true end
    end
  end
  os.remove(path .. ".meta")
  local tmp = path .. ".tmp"
  local info
  if kind == "words" then
    info = M.words(tmp, params.bytes, params.seed, { vocabulary = params.vocabulary, exponent = params.exponent })
  elseif kind == "json" then
    info = M.json(tmp, params.records, params.seed)
  elseif kind == "keys" then
    info = M.keys(tmp, params.keys, params.updates, params.seed)
  elseif kind == "events" then
    info = M.events(tmp, params.records, params.keys, params.jitter, params.seed)
  elseif kind == "readings" then
    info = M.readings(tmp, params.keys, params.records, params.seed)
  else
    error("unknown input kind " .. kind)
  end
  assert(os.rename(tmp, path))
  local ks = {}
  for k, v in pairs(info) do ks[#ks + 1] = k .. "=" .. tostring(v) end
  table.sort(ks)
  lib.write(path .. ".meta", want .. "\n" .. concat(ks, " ") .. "\n")
  return info, false
end

if arg and arg[0] and arg[0]:match("gen%.lua$") then
  local kind, path = arg[1], arg[2]
  local info
  if kind == "words" then
    info = M.ensure("words", path, { bytes = tonumber(arg[3]), seed = tonumber(arg[4] or 1),
                                     vocabulary = 50000, exponent = 1.0 })
  elseif kind == "json" then
    info = M.ensure("json", path, { records = tonumber(arg[3]), seed = tonumber(arg[4] or 2) })
  elseif kind == "keys" then
    info = M.ensure("keys", path, { keys = tonumber(arg[3]), updates = tonumber(arg[4]), seed = tonumber(arg[5] or 3) })
  else
    io.stderr:write("usage: gen.lua words|json|keys PATH ...\n")
    os.exit(2)
  end
  for k, v in pairs(info) do print(k, v) end
end

return M
