-- spec helper: a spec's job-building function as a job script, so that the
-- job runs on several workers (SPEC section 15): each worker's VM loads the
-- job from its script, and a job built by a function stays on one.
--
-- The script rebuilds the function from its source text (debug.getinfo's
-- source and lines, compiled under the spec's own chunk name, so errors
-- and tracebacks name the spec's lines) and its upvalues: functions
-- (recursively), numbers, strings, booleans, plain tables, and modules
-- (as require). In the spec's own VM, the one that runs the driver, the
-- script returns the spec's live values instead (so a closure over the
-- spec's tables, as a foreach_batch collecting outputs, still fills them);
-- the other workers' VMs get the rebuilt copies.
local testing = require "streamrun.testing"

local M = {}

-- A table's keys and values, walked with next() (not pairs(): the
-- installed LuaJIT's bug #827 can end a hot pairs() loop early, which here
-- would leave values out of a script).
local function each(t)
  return function(_, k) return next(t, k) end, t, nil
end

-- The live builders of this VM, by script: the script looks here first.
local live = {}
M.live = live

local dir
local function temp_dir()
  if dir then return dir end
  dir = os.tmpname()
  os.remove(dir)
  assert(require("streamrun.core").mkdir_p(dir))
  -- (Removed when the spec's VM ends.)
  local sentinel = newproxy(true)
  getmetatable(sentinel).__gc = function() os.execute("rm -rf '" .. dir .. "'") end
  M.sentinel = sentinel
  return dir
end

local files = {}
local function lines_of(source)
  local t = files[source]
  if t then return t end
  local f = assert(io.open(source, "r"), "jobscript: cannot read " .. source)
  t = {}
  for line in f:lines() do t[#t + 1] = line end
  f:close()
  files[source] = t
  return t
end

local function upvalue_names(f)
  local names = {}
  for i = 1, math.huge do
    local name = debug.getupvalue(f, i)
    if not name then break end
    names[i] = name
  end
  return names
end

local function same_list(a, b)
  if #a ~= #b then return false end
  for i = 1, #a do if a[i] ~= b[i] then return false end end
  return true
end

-- The source of Lua function f as a chunk taking its upvalues as `...`
-- and returning it, padded so its lines are the spec's, and the chunk
-- name; or raises when its text cannot be found.
local function source_of(f)
  local info = debug.getinfo(f, "Su")
  if info.what ~= "Lua" or info.source:sub(1, 1) ~= "@" then
    error("jobscript: a function without source text (" .. tostring(info.source) .. ")", 0)
  end
  local lines = lines_of(info.source:sub(2))
  local first, last = info.linedefined, info.lastlinedefined
  local names = upvalue_names(f)
  local head = (#names > 0 and "local " .. table.concat(names, ", ") .. " = ...; " or "") .. "return "
  local pad = string.rep("\n", first - 1)
  local starts, ends = {}, {}
  local l1 = lines[first]
  for s in l1:gmatch("()function%f[^%w_]") do
    if s == 1 or not l1:sub(s - 1, s - 1):match("[%w_]") then starts[#starts + 1] = s end
  end
  for e in lines[last]:gmatch("%f[%w_]end()%f[^%w_]") do table.insert(ends, 1, e - 1) end
  for _, s in ipairs(starts) do
    for _, e in ipairs(ends) do
      local body
      if first == last then
        body = e > s and l1:sub(s, e) or nil
      else
        local mid = {}
        for i = first + 1, last - 1 do mid[#mid + 1] = lines[i] end
        body = l1:sub(s) .. "\n" .. (#mid > 0 and table.concat(mid, "\n") .. "\n" or "") .. lines[last]:sub(1, e)
      end
      -- (A named function's text is an expression without its name.)
      if body then
        body = body:gsub("^function%s*[%w_%.]+:[%w_]+%s*%(%s*%)", "function(self)")
          :gsub("^function%s*[%w_%.]+:[%w_]+%s*%(", "function(self, ")
          :gsub("^function%s*[%w_%.]+%s*%(", "function(")
      end
      local chunk = body and loadstring(pad .. head .. body, info.source)
      if chunk then
        local args = {}
        for i = 1, #names do args[i] = false end
        local ok, g = pcall(chunk, unpack(args, 1, #names))
        if ok and type(g) == "function" then
          local gi = debug.getinfo(g, "Su")
          if gi.linedefined == first and gi.lastlinedefined == last and gi.nparams == info.nparams
              and gi.isvararg == info.isvararg and same_list(upvalue_names(g), names) then
            return pad .. head .. body, info.source
          end
        end
      end
    end
  end
  error(("jobscript: cannot find the text of the function at %s:%d"):format(info.source:sub(2), first), 0)
end

-- Where each value sits among the loaded modules (a module, or one of its
-- fields), as an expression: value -> expression. (Built once a script.)
local function module_paths()
  local index = {}
  local function put(v, expr)
    if index[v] == nil then index[v] = expr end
  end
  for name, mod in each(package.loaded) do
    if type(name) == "string" and not name:match("^helpers%.") and (type(mod) == "table" or type(mod) == "function") then
      put(mod, ("require(%q)"):format(name))
    end
  end
  for _, lib in ipairs { "string", "table", "math", "coroutine", "io", "os", "bit", "debug", "jit" } do
    local t = _G[lib]
    if type(t) == "table" then
      put(t, lib)
      for k, f in each(t) do
        if type(k) == "string" then put(f, lib .. "." .. k) end
      end
    end
  end
  for k, f in each(_G) do
    if type(k) == "string" and type(f) == "function" then put(f, k) end
  end
  for name, mod in each(package.loaded) do
    if type(name) == "string" and name:match("^streamrun") and type(mod) == "table" then
      for k, f in each(mod) do
        if type(k) == "string" and (type(f) == "function" or type(f) == "table") then
          put(f, ("require(%q)[%q]"):format(name, k))
        end
      end
    end
  end
  return index
end

local function number(x)
  if x ~= x then return "(0/0)" end
  if x == math.huge then return "math.huge" end
  if x == -math.huge then return "(-math.huge)" end
  return ("%.17g"):format(x)
end

-- Writes the script rebuilding builder; returns its text.
local function script_of(builder, id)
  local out = {}
  local function emit(s) out[#out + 1] = s end
  local names = {}   -- value -> variable
  local modules = module_paths()
  local count = 0
  local later = {}   -- statements run once every value exists
  local value

  local function var()
    count = count + 1
    return "v" .. count
  end

  function value(v)
    local t = type(v)
    if t == "nil" then return "nil" end
    if t == "boolean" then return tostring(v) end
    if t == "number" then return number(v) end
    if t == "string" then return ("%q"):format(v) end
    if names[v] then return names[v] end
    local path = modules[v]
    if path then return path end
    if t == "table" then
      if getmetatable(v) ~= nil then error("jobscript: an upvalue is a table with a metatable", 0) end
      local name = var()
      names[v] = name
      emit(("local %s = {}"):format(name))
      for k, x in each(v) do
        local ks, xs = value(k), value(x)
        later[#later + 1] = ("%s[%s] = %s"):format(name, ks, xs)
      end
      return name
    end
    if t == "function" then
      local src, chunkname = source_of(v)
      local name = var()
      names[v] = name
      local n = #upvalue_names(v)
      local args = {}
      for i = 1, n do args[i] = "nil" end
      emit(("local %s = rebuild(%q, %q%s)"):format(name, src, chunkname, n > 0 and ", " .. table.concat(args, ", ") or ""))
      for i = 1, n do
        local _, x = debug.getupvalue(v, i)
        if x ~= nil then
          local xs = value(x)
          later[#later + 1] = ("debug.setupvalue(%s, %d, %s)"):format(name, i, xs)
        end
      end
      return name
    end
    error("jobscript: an upvalue of type " .. t .. " cannot be written into a script", 0)
  end

  local root = value(builder)
  local text = table.concat {
    "-- A spec's job, rebuilt from its source (spec/helpers/jobscript.lua).\n",
    ("local here = package.loaded[%q]\n"):format("helpers.jobscript"),
    ("local own = here and here.live[%q]\n"):format(id),
    "if own then return own() end\n",
    "local env = getfenv(1)\n",
    "local function rebuild(src, name, ...)\n",
    "  local chunk = assert(loadstring(src, name))\n",
    "  return setfenv(chunk, env)(...)\n",
    "end\n",
    table.concat(out, "\n"), "\n",
    table.concat(later, "\n"), "\n",
    "return ", root, "()\n",
  }
  return text
end

local serial = 0

-- The path of a script whose job is the one builder() returns.
function M.write(builder)
  serial = serial + 1
  local id = tostring(serial)
  local text = script_of(builder, id)
  local path = ("%s/job%d.lua"):format(temp_dir(), serial)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
  live[id] = builder
  return path
end

-- The number of workers the specs run with ($STREAMRUN_WORKERS, else 1).
function M.workers()
  return tonumber(os.getenv("STREAMRUN_WORKERS")) or 1
end

-- testing.driver on the script of builder. opts: as for testing.driver,
-- and split: false when the job is not expected to run on several
-- workers, or how many of its keyed segments must run split (default 1):
-- with 2 or more workers, the driver raises if fewer do. Returns the
-- driver and the script's path.
function M.driver(builder, opts)
  opts = opts or {}
  local path = M.write(builder)
  local d = testing.driver(path, opts)
  M.check_split(d, opts.split)
  return d, path
end

-- Raises unless the driver's plan runs split (as many keyed segments as
-- split says, default 1) when the specs run with several workers (and
-- split is not false).
function M.check_split(d, split)
  local n = tonumber(d.workers_opt) or M.workers()
  local want = type(split) == "number" and split or 1
  if n >= 2 and split ~= false and d:parallel_segments() < want then
    local _, why = require("streamrun.exchange").segments(d.job)
    error(("the job runs %d keyed segments split of %d wanted, on %d workers%s"):format(d:parallel_segments(), want, n,
      why and ": " .. why or ""), 2)
  end
end

return M
