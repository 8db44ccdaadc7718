-- streamrun.fuse: turns a chain of narrow stages (map, filter, flat_map,
-- map_values, flat_map_values, key_by) into one generated Lua loop over the
-- batch, so LuaJIT compiles the whole chain as one trace with no per-record
-- closure or table. The same generator makes a guarded variant that runs
-- one element with every user call under xpcall: when the fast loop raises,
-- the failing element is re-run guarded, the failing call is reported with
-- its stage and element, and the fast loop resumes after that element.
local batch = require "streamrun.batch"
local watchdog = require "streamrun.watchdog"

local tnew = batch.new_table
local pcall, type, error, concat = pcall, type, error, table.concat

local M = {}

local function not_pair(op)
  return function(a) error(("%s needs a (k, v) pair; got the single element %s"):format(op, tostring(a)), 0) end
end

local function bad_iter(op)
  return function(r)
    error(("%s: the function must return an array or an iterator, got %s"):format(op, type(r)), 0)
  end
end

-- key_by's value: the element itself, a pair packed as {k, v}.
local function pack(a, b)
  if b == nil then return a end
  return { a, b }
end

-- Source text for stage k and the rest of the chain. call(k, args) is the
-- expression calling stage k's function; guarded: also guard the calls of
-- an iterator a flat_map returned (GI), so its failure names its stage.
local function gen(stages, k, call, guarded)
  if k > #stages then return "m = m + 1; OA[m] = a; OB[m] = b" end
  local rest = gen(stages, k + 1, call, guarded)
  local op = stages[k].op
  if op == "map" then
    return ("do local a, b = %s\nif a ~= nil then\n%s\nend end"):format(call(k, "a, b"), rest)
  elseif op == "filter" then
    return ("if %s then\n%s\nend"):format(call(k, "a, b"), rest)
  elseif op == "key_by" then
    return ("do local key = %s\nif key ~= nil then\nlocal a, b = key, PACK(a, b)\n%s\nend end")
      :format(call(k, "a, b"), rest)
  elseif op == "map_values" then
    return ("if b == nil then %s else\nlocal b = %s\nif b ~= nil then\n%s\nend end")
      :format(call(k, "a", "E"), call(k, "b"), rest)
  elseif op == "flat_map" or op == "flat_map_values" then
    local guard, args, each = "", "a, b", "local a, b = r[j], nil"
    local iter = "for a, b in r do\n" .. rest .. "\nend"
    if op == "flat_map_values" then
      guard = ("if b == nil then %s else\n"):format(call(k, "a", "E"))
      args, each = "b", "local b = r[j]"
      iter = "for x in r do\nlocal b = x\n" .. rest .. "\nend"
    end
    if guarded then iter = ("r = GI(%d, r, a, b)\n"):format(k) .. iter end
    return (guard .. [[
do local r = %s
if r ~= nil then
  local tr = type(r)
  if tr == "table" then
    for j = 1, #r do
      %s
      if %s ~= nil then
%s
      end
    end
  elseif tr == "function" then
%s
  else %s end
end end]] .. (guard ~= "" and " end" or "")):format(call(k, args), each,
      op == "flat_map" and "a" or "b", rest, iter, call(k, "r", "I"))
  end
  error("fuse: not a narrow stage: " .. tostring(op))
end

local HEADER = "local F, E, I, G, ctx, type, PACK, GI, P = ...\n"

-- Fast variant: direct calls. Guarded variant: every call through G.
local function fast_call(k, args, which) return ("%s[%d](%s)"):format(which or "F", k, args) end
local function guarded_call(k, args, which) return ("G(%d, %s[%d], %s)"):format(k, which or "F", k, args) end

local function build(stages, call, name)
  local body = gen(stages, 1, call, call == guarded_call)
  local src = HEADER .. [[
return function(IA, IB, n, i0, OA, OB, m)
  for i = i0, n do
    ctx.i = i; ctx.m = m
    P.rec = i -- the watchdog's progress: one store per record
    local a, b = IA[i], IB[i]
]] .. body .. [[

  end
  return m
end]]
  local chunk, err = loadstring(src, "=" .. name)
  if not chunk then error("fuse: generated code does not compile: " .. err .. "\n" .. src) end
  return chunk
end

-- A compiled chain. stages: the narrow nodes in order. report(node, err, a, b)
-- is called for a failing call (it may raise to stop the job).
function M.chain(stages, report)
  local names = {}
  local F, E, I = {}, {}, {}
  for k, s in ipairs(stages) do
    names[k] = s.stage_name
    F[k], E[k], I[k] = s.fn, not_pair(s.op), bad_iter(s.op)
  end
  local name = "stages " .. concat(names, " > ")
  local ctx = { i = 0, m = 0 }
  local function G(k, f, ...)
    local ok, r1, r2 = xpcall(f, debug.traceback, ...)
    if ok then return r1, r2 end
    report(stages[k], r1, ...)
    return nil
  end
  -- An iterator whose every call is guarded: a failure is reported for
  -- stage k and the element (a, b) it came from, and ends the iteration.
  local function GI(k, iter, a, b)
    return function(st, ctl)
      local ok, r1, r2 = xpcall(iter, debug.traceback, st, ctl)
      if ok then return r1, r2 end
      report(stages[k], r1, a, b)
      return nil
    end
  end
  local P = watchdog.P
  local fast = build(stages, fast_call, name)(F, E, I, G, ctx, type, pack, GI, P)
  local guarded = build(stages, guarded_call, name .. " (guarded)")(F, E, I, G, ctx, type, pack, GI, P)

  local chain = { stages = stages, name = name }

  -- Runs the chain over an input batch; returns the output batch.
  function chain.run(input)
    local IA, IB, n = input.a, input.b, input.n
    local OA, OB = tnew(n, 0), tnew(n, 0)
    local m, i0 = 0, 1
    while true do
      local ok, res = pcall(fast, IA, IB, n, i0, OA, OB, m)
      if ok then m = res break end
      local i, m0 = ctx.i, ctx.m
      local j = m0 + 1
      while OA[j] ~= nil do OA[j], OB[j] = nil, nil; j = j + 1 end
      local gok, gres = pcall(guarded, IA, IB, i, i, OA, OB, m0)
      if gok then
        m = gres
      elseif type(gres) == "table" and gres.fatal then
        error(gres, 0)
      else
        -- Every call of the guarded variant is guarded; should anything
        -- else raise, the element's outputs so far are kept.
        report(stages[1], gres, IA[i], IB[i])
        m = m0
        while OA[m + 1] ~= nil do m = m + 1 end
      end
      i0 = i + 1
    end
    return { n = m, a = OA, b = OB }
  end

  return chain
end

return M
