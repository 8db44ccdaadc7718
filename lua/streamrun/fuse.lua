-- streamrun.fuse: turns a chain of narrow stages (map, filter, flat_map,
-- map_values, flat_map_values, key_by) into one generated Lua loop over the
-- batch, so LuaJIT compiles the whole chain as one trace with no per-record
-- closure, table or pcall.
--
-- When a user call raises, the loop is not run again: streamrun.resume reads
-- the generated loop's locals at the failure (every value in hand has a
-- name of its own, every call a line of its own), the failing call is
-- reported with the element it received, and the work left for that input
-- element (the rest of an array or iterator a flat_map returned, at any
-- depth) goes on in guarded variants of the chain's tails, where every
-- user call runs under xpcall (streamrun.guard). Then the fast loop resumes
-- at the next element. So each user function is called once per element.
local core = require "streamrun.core"
local batch = require "streamrun.batch"
local builtins = require "streamrun.builtins"
local guard = require "streamrun.guard"
local ops = require "streamrun.ops"
local resume = require "streamrun.resume"
local watchdog = require "streamrun.watchdog"
local tclear = require "table.clear"

local tnew = batch.new_table
local type, error, next, concat, byte, sub = type, error, next, table.concat, string.byte, string.sub
local try = guard.try
local FOLDS = ops.FOLDS
local ffi, C = core.ffi, core.C
local min = math.min
local clock_ms = core.clock_ms

local M = {}

-- Records of a C batch a chain starting with flat_map(sr.words) reads at
-- a time, either way (pick_words): named in C (chunk_ids), a chunk's ids
-- stay in the caches, and its distinct words are few beside its words.
-- (A field: tests set it small.)
M.ids_chunk = 65536

-- How a chain starting with flat_map(sr.words) reads its next chunk of a
-- C batch: "ids" (words cut and named in C) or "lua" (cut in the loop).
-- Each way runs 3 chunks first, in turn (the first of each, which LuaJIT
-- compiles, not timed), then the faster by its recent milliseconds per
-- record, the other once in a while so that its figure follows the data:
-- TRY_EVERY chunks after the probe, then twice as long after each try
-- that found it slower still (up to TRY_MAX), TRY_EVERY again after one
-- that found it faster. M.words_in_c (tests): always "ids" (true) or
-- "lua" (false).
local PROBE, TRY_EVERY, TRY_MAX, TRY_RECORDS = 6, 16, 256, 64
local function pick_words(WID)
  if M.words_in_c ~= nil then return M.words_in_c and "ids" or "lua" end
  local runs = WID.runs
  WID.runs = runs + 1
  if runs < PROBE then return runs % 2 == 0 and "ids" or "lua" end
  local best = WID.ms.ids <= WID.ms.lua and "ids" or "lua"
  if runs >= (WID.next_try or TRY_EVERY) then
    WID.trying = true
    return best == "ids" and "lua" or "ids"
  end
  return best
end

-- Notes a chunk's milliseconds per record, read the way how (runs: the
-- chunks picked so far, this one included; records: the chunk's): the
-- mean of its second and third, then a moving average; a try's own
-- figure (the one before is old).
local function time_words(WID, how, ms, records)
  local ms_of, runs = WID.ms, WID.runs
  if runs <= 2 then return end
  -- (A try on a batch's last few records decides nothing: the next chunk
  -- is the try.)
  if WID.trying and records and records < TRY_RECORDS then return end
  if runs <= 4 or WID.trying then
    ms_of[how] = ms
  elseif runs <= PROBE then
    ms_of[how] = (ms_of[how] + ms) / 2
  else
    ms_of[how] = 0.75 * ms_of[how] + 0.25 * ms
  end
  if WID.trying then
    WID.trying = nil
    local slower = ms_of[how] > ms_of[how == "ids" and "lua" or "ids"]
    WID.every = slower and min(2 * (WID.every or TRY_EVERY), TRY_MAX) or TRY_EVERY
    WID.next_try = runs - 1 + WID.every
  end
end

M.pick_words, M.time_words = pick_words, time_words -- (for tests)

-- Distinct words a chain keeps named (their strings in WID.str) from
-- chunk to chunk and batch to batch; past this many, or past this many
-- bytes of them, it starts over. (Fields: tests set them small.)
M.ids_keep, M.ids_keep_bytes = 2 ^ 18, 2 ^ 26

-- Cuts the words of records i0 .. i1 (1-based) of the C batch cb and names
-- each by its distinct word (sr_wordcount_ids), for the loop over them
-- (the WID of M.chain). The C table keeps its words, so a string is made
-- once per distinct word, not once per chunk: a steady vocabulary makes
-- none.
local function chunk_ids(WID, cb, i0, i1)
  local wc = WID.wc
  if WID.known > M.ids_keep or wc.own.len > M.ids_keep_bytes then
    C.sr_wordcount_forget(wc)
    tclear(WID.str)
    WID.known = 0
  end
  if C.sr_wordcount_ids(wc, cb, i0 - 1, i1) ~= 0 then error("flat_map(sr.words): out of memory", 0) end
  local STR, data, word, n = WID.str, wc.data, wc.word, tonumber(wc.n)
  for id = WID.known + 1, n do
    local w = word[id - 1]
    STR[id] = ffi.string(data + w.off, w.len)
  end
  WID.known = n
  WID.ids, WID.rend, WID.r0 = wc.ids, wc.rec_end, i0 - 1
end

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

local function with(list, item)
  local out = {}
  for i = 1, #list do out[i] = list[i] end
  out[#out + 1] = item
  return out
end

-- Source of the chain from stage k0 on, for one element held in a0, b0.
-- guarded: calls through G (and iterators through GI). origin: outputs
-- also note their input index (OI[m] = i). Returns the lines and, by line,
-- the call site on it: { k = stage, args = names of the values it got,
-- loops = the enclosing flat_map loops, outermost first: { kind = "table"
-- | "iter", k, r = name of what the flat_map returned, j = index name |
-- ctl = control name, key = name of the key (flat_map_values), args } }.
local function generate(stages, k0, guarded, origin, sink, raw, timed)
  local lines, sites, nvar = {}, {}, 0
  local function fresh(p) nvar = nvar + 1 return p .. nvar end
  local function emit(s, site)
    lines[#lines + 1] = s
    if site then sites[#lines] = site end
  end
  local function call(k, which, args)
    if guarded then return ("G(%d, %s[%d], %s)"):format(k, which, k, concat(args, ", ")) end
    return ("%s[%d](%s)"):format(which, k, concat(args, ", "))
  end
  local gen_flat, gen
  -- Cuts words (runs of bytes other than ASCII whitespace) from position p
  -- on while more(at) holds, byte(at) reading the byte at at; each word x
  -- (word(q): from p to before q) goes on to stage k + 1 in the loop
  -- loops (the flat_map's own entry last).
  local function gen_words(k, p, x, more, byte, word, loops)
    local c, q = fresh("c"), fresh("q")
    emit(("while %s do"):format(more(p)))
    emit(("local %s = %s"):format(c, byte(p)))
    emit(("if %s == 32 or (%s >= 9 and %s <= 13) then"):format(c, c, c))
    emit(("%s = %s + 1"):format(p, p))
    emit("else")
    emit(("local %s = %s + 1"):format(q, p))
    emit(("while %s do"):format(more(q)))
    emit(("%s = %s"):format(c, byte(q)))
    emit(("if %s == 32 or (%s >= 9 and %s <= 13) then break end"):format(c, c, c))
    emit(("%s = %s + 1"):format(q, q))
    emit("end")
    emit(("local %s = %s"):format(x, word(q)))
    emit(("%s = %s + 1"):format(p, q))
    gen(k + 1, x, "nil", loops)
    emit("end")
    emit("end")
  end
  function gen(k, a, b, loops)
    if k > #stages then
      if sink == "reduce_by_key" then
        -- Folded into the keyed stage at once: OA its keys in order of
        -- first appearance, OB the accumulator by key, m how many keys.
        local acc = fresh("acc")
        emit(("if %s == nil then BAD(%s) else"):format(b, a))
        emit(("local %s = OB[%s]"):format(acc, a))
        emit(("if %s == nil then"):format(acc))
        emit(("if KEYTYPE[type(%s)] and %s == %s then m = m + 1; OA[m] = %s; OB[%s] = %s else BAD(%s, %s) end")
          :format(a, a, a, a, a, b, a, b))
        emit("else")
        -- (Guarded, the key goes too, for the dead letter: G.)
        emit(("OB[%s] = %s"):format(a, call(k, "F", guarded and { acc, b, a } or { acc, b })),
          { k = k, args = { acc, b }, key = a, loops = loops })
        emit("end")
        emit("end")
      elseif sink == "count_by_value" then
        -- OA: the keys in order of first appearance, OB the count by key.
        local key, c = fresh("k"), fresh("c")
        emit(("local %s = %s"):format(key, a))
        emit(("if %s ~= nil or type(%s) ~= \"string\" or BYTE(%s, 1) == 0 then %s = EKEY(%s, %s) end")
          :format(b, a, a, key, a, b))
        emit(("local %s = OB[%s]"):format(c, key))
        emit(("if %s == nil then m = m + 1; OA[m] = %s; OB[%s] = 1 else OB[%s] = %s + 1 end")
          :format(c, key, key, key, c))
      else
        emit(("m = m + 1; OA[m] = %s; OB[m] = %s"):format(a, b) .. (origin and "; OI[m] = i" or "")
          .. (timed and "; OT[m] = t0" or ""))
      end
      return
    end
    local op = stages[k].op
    local function site(args) return { k = k, args = args, loops = loops } end
    if op == "map" then
      local na, nb = fresh("a"), fresh("b")
      emit(("local %s, %s = %s"):format(na, nb, call(k, "F", { a, b })), site({ a, b }))
      emit(("if %s ~= nil then"):format(na))
      gen(k + 1, na, nb, loops)
      emit("end")
    elseif op == "filter" then
      emit(("if %s then"):format(call(k, "F", { a, b })), site({ a, b }))
      gen(k + 1, a, b, loops)
      emit("end")
    elseif op == "key_by" then
      local key, na, nb = fresh("k"), fresh("a"), fresh("b")
      emit(("local %s = %s"):format(key, call(k, "F", { a, b })), site({ a, b }))
      emit(("if %s ~= nil then"):format(key))
      emit(("local %s, %s = %s, PACK(%s, %s)"):format(na, nb, key, a, b))
      gen(k + 1, na, nb, loops)
      emit("end")
    elseif op == "map_values" then
      local nb = fresh("b")
      emit(("if %s == nil then"):format(b))
      emit(call(k, "E", { a }), site({ a }))
      emit("else")
      emit(("local %s = %s"):format(nb, call(k, "F", { b })), site({ b }))
      emit(("if %s ~= nil then"):format(nb))
      gen(k + 1, a, nb, loops)
      emit("end")
      emit("end")
    elseif raw == "lua" and k == 1 then
      -- Words of record i of a C batch (DATA, OFF), cut where they lie:
      -- no string is made of the line, one of each word (which LuaJIT
      -- need not make when the next stage only reads it: w:lower()).
      local p, e, x = fresh("p"), fresh("e"), fresh("w")
      emit(("local %s, %s = OFF[i - 1], OFF[i]"):format(p, e))
      gen_words(k, p, x, function(at) return ("%s < %s"):format(at, e) end,
        function(at) return ("DATA[%s]"):format(at) end,
        function(q) return ("FSTRING(DATA + %s, %s - %s)"):format(p, q, p) end,
        with(loops, { kind = "cwords", k = k, p = p, e = e }))
    elseif raw == "ids" and k == 1 then
      -- Words of record i of a C batch, as sr_wordcount_ids cut them from
      -- where they lie and named each by its distinct word (IDS: the ids
      -- of the chunk's words, record i's from REND[i - R0 - 1]; STR: the
      -- string of each id): no string is made of the line, nor of each
      -- word, only one per distinct word.
      local j, e, x = fresh("j"), fresh("e"), fresh("w")
      emit(("local %s, %s = REND[i - R0 - 1], REND[i - R0]"):format(j, e))
      emit(("while %s < %s do"):format(j, e))
      emit(("local %s = STR[IDS[%s]]"):format(x, j))
      emit(("%s = %s + 1"):format(j, j))
      gen(k + 1, x, "nil", with(loops, { kind = "cids", k = k, p = j, e = e }))
      emit("end")
    elseif op == "flat_map" and stages[k].fn == builtins.words then
      -- The built-in sr.words, asked for by name: its words are cut from
      -- the line in the loop itself, with no array made per line (each
      -- word is a string, as the next stage needs one). What is not a
      -- string goes through the function as any flat_map's would.
      local p, len, x = fresh("p"), fresh("l"), fresh("w")
      emit(("if type(%s) == \"string\" then"):format(a))
      emit(("local %s, %s = 1, #%s"):format(p, len, a))
      gen_words(k, p, x, function(at) return ("%s <= %s"):format(at, len) end,
        function(at) return ("BYTE(%s, %s)"):format(a, at) end,
        function(q) return ("SUB(%s, %s, %s - 1)"):format(a, p, q) end,
        with(loops, { kind = "words", k = k, s = a, p = p }))
      emit("else")
      gen_flat(k, a, b, loops)
      emit("end")
    elseif op == "flat_map" or op == "flat_map_values" then
      gen_flat(k, a, b, loops)
    else
      error("fuse: not a narrow stage: " .. tostring(op))
    end
  end
  function gen_flat(k, a, b, loops)
    local op = stages[k].op
    local function site(args) return { k = k, args = args, loops = loops } end
    do
      local fv = op == "flat_map_values"
      local args = fv and { b } or { a, b }
      if fv then
        emit(("if %s == nil then"):format(b))
        emit(call(k, "E", { a }), site({ a }))
        emit("else")
      end
      local r, t, j = fresh("r"), fresh("t"), fresh("j")
      emit(("local %s = %s"):format(r, call(k, "F", args)), site(args))
      emit(("if %s ~= nil then"):format(r))
      emit(("local %s = type(%s)"):format(t, r))
      emit(("if %s == \"table\" then"):format(t))
      emit(("for %s = 1, #%s do"):format(j, r))
      local x = fresh("x")
      emit(("local %s = %s[%s]"):format(x, r, j))
      emit(("if %s ~= nil then"):format(x))
      local inner = with(loops, { kind = "table", k = k, r = r, j = j, key = fv and a or nil, args = args })
      if fv then gen(k + 1, a, x, inner) else gen(k + 1, x, "nil", inner) end
      emit("end")
      emit("end")
      emit(("elseif %s == \"function\" then"):format(t))
      local iter = guarded and ("GI(%d, %s, %s)"):format(k, r, concat(args, ", ")) or r
      local xa, xb = fresh("a"), fresh("b")
      -- The iterator's calls are on the for line: a failure there is the
      -- flat_map's, and ends that iteration.
      emit(("for %s, %s in %s do"):format(xa, xb, iter), site(args))
      inner = with(loops, { kind = "iter", k = k, r = r, ctl = xa, key = fv and a or nil, args = args })
      if fv then gen(k + 1, a, xa, inner) else gen(k + 1, xa, xb, inner) end
      emit("end")
      emit("else")
      emit(call(k, "I", { r }), site({ r }))
      emit("end")
      emit("end")
      if fv then emit("end") end
    end
  end
  gen(k0, "a0", "b0", {})
  return lines, sites
end

local HEADER = "local F, E, I, G, type, PACK, GI, BYTE, SUB, BAD, KEYTYPE, EKEY = ...\n"

local function load(src, name, ...)
  local chunk, err = loadstring(src, "=" .. name)
  if not chunk then error("fuse: generated code does not compile: " .. err .. "\n" .. src) end
  return chunk(...)
end

-- A compiled chain. stages: the narrow nodes in order. g: the plan's guard
-- (streamrun.guard); a failing call on an element that came from element i
-- of the input batch goes to g.report_at (which may raise to stop the
-- job). origin: the output batch notes where each element came from
-- (batch.origin). stamp: the chain stamps its text source's records with
-- their event times in its loop over a C batch (streamrun.eventtime):
-- { fn = the source's event_time function, dead(input, i, err): record i
-- has no event time (it then goes to no stage) }.
function M.chain(stages, g, origin, sink, stamp)
  local report = g.report_at
  local names = {}
  local F, E, I = {}, {}, {}
  for k, s in ipairs(stages) do
    names[k] = s.stage_name
    F[k], E[k], I[k] = s.fn, not_pair(s.op), bad_iter(s.op)
  end
  -- The sink: a reduce_by_key or count_by_value the chain folds its
  -- elements into as they come, so no batch of them is made. Its failures
  -- are reported as the stage's own (ops.reduce_by_key).
  local nk = #stages
  local sink_op = sink and sink.op
  local BAD, EKEY, REPS
  if sink then
    origin = false
    names[nk + 1] = sink.stage_name
    if sink_op == "reduce_by_key" then
      local f = sink.fn
      F[nk + 1] = FOLDS[builtins.reducers[f] or false] or f
      BAD = function(a, b) ops.pair_check(sink, g, a, b) end
    else
      REPS = {}
      EKEY = function(a, b)
        if b == nil and (type(a) == "number" and a == a or type(a) == "boolean") then return a end
        local k = ops.element_key(a, b)
        if REPS[k] == nil then
          if b == nil then REPS[k] = a else REPS[k] = { a, b } end
        end
        return k
      end
    end
  end
  local name = "stages " .. concat(names, " > ")
  -- The element being finished after a failure: its batch and index.
  local cur = { input = nil, i = 0 }
  local function G(k, f, ...)
    if k > nk then
      -- The reducer: a failing call (named with its key, when the loop
      -- gives it) leaves the key's accumulator as it was.
      local acc, v, key = ...
      local ok, r1
      if key ~= nil then ok, r1 = g.call_key(sink, key, v, f, acc, v) else ok, r1 = g.call(sink, f, acc, v) end
      if ok then return r1 end
      return acc
    end
    local ok, r1, r2 = g.call_at(stages[k], cur.input, cur.i, f, ...)
    if ok then return r1, r2 end
    return nil
  end
  -- An iterator whose every call is guarded: a failure is reported for
  -- stage k and the element (a, b) it came from, and ends the iteration.
  local function GI(k, iter, a, b)
    return function(st, ctl)
      local ok, r1, r2 = try(iter, st, ctl)
      if ok then return r1, r2 end
      report(stages[k], r1, cur.input, cur.i, a, b)
      return nil
    end
  end

  -- P.i: the element in hand, for when the error handler cannot run (a
  -- stack overflow): then the element is run again guarded from stage 1,
  -- after its outputs so far are dropped (P.m: the outputs before it, kept
  -- only by a chain that can make several outputs of one element).
  local P = { i = 0, m = 0, t = 0, tv = 0 }
  local several = false
  for _, st in ipairs(stages) do
    if st.op == "flat_map" or st.op == "flat_map_values" then several = true end
  end
  -- A stamping chain that makes at most one element of each input and
  -- keeps its elements writes each one's time beside it (OT[m] = t0,
  -- ST.ot); one that can make several keeps the inputs' times (T[i], ST.t)
  -- for its step to copy by origin; one folding into its sink keeps none.
  local direct = stamp and not several and not sink
  local keeps = stamp and several and not sink
  local lines, sites = generate(stages, 1, false, origin, sink_op, false, direct)
  -- W.rec: the same index, for the watchdog (sr_watchdog.c).
  --
  -- With stamp, each element is first given to the source's event_time
  -- function: t0 its time (kept as above; P.tv too, for a rerun after a
  -- stack overflow), ST.top the largest, P.t = i once it is stamped (a
  -- failure with P.t ~= i is the event_time call's). All on the line of
  -- a0, so the lines are numbered alike in every loop.
  local ST = { t = nil, ot = nil, top = -1 }
  local stamp_src, ev = "", nil
  if stamp then
    ev = require "streamrun.eventtime"
    stamp_src = " local t0 = TIME(a0, b0); if type(t0) == \"number\" and t0 >= 0 and t0 < FINAL then "
      .. "t0 = t0 - t0 % 1 else t0 = CHECKED(t0) end;" .. (keeps and " T[i] = t0;" or "")
      .. (direct and " P.tv = t0;" or "") .. " P.t = i; if t0 > ST.top then ST.top = t0 end"
  end
  local fast_src = "local P, W, FSTRING, TIME, CHECKED, FINAL, ST = select(13, ...)\n" .. HEADER .. [[
return function(IA, IB, n, i0, OA, OB, m, OI) local T, OT = ST.t, ST.ot
  for i = i0, n do
    P.i = i; W.rec = i]] .. (several and "; P.m = m" or "") .. [[

    local a0, b0 = IA[i], IB[i];]] .. stamp_src .. "\n" .. concat(lines, "\n") .. [[

  end
  return m
end]]
  local fast = load(fast_src, name, F, E, I, G, type, pack, GI, byte, sub, BAD, ops.KEY_TYPES, EKEY, P, watchdog.P,
    ffi.string, stamp and stamp.fn, ev and ev.checked, ev and ev.FINAL, ST)
  local first_line = 7 -- the line of lines[1] in fast_src

  -- The same loop over the records of a C batch (a text source's, handed
  -- as it is: sources.raw_c_batch). When the chain starts with
  -- flat_map(sr.words), its words are cut from the records where they lie;
  -- else each record becomes a string where the loop takes it
  -- (make_raw, at the first such batch): no array of the batch's lines is
  -- made, and a line the chain does not keep is garbage at once.
  -- (With stamp, the line made is stamped first, as above.)
  local raw_fast, raw_sites
  local function make_raw()
    local raw_src = "local P, W, FSTRING, TIME, CHECKED, FINAL, ST = select(13, ...)\n" .. HEADER .. [[
return function(DATA, OFF, n, i0, OA, OB, m, OI) local T, OT = ST.t, ST.ot
  for i = i0, n do
    P.i = i; W.rec = i]] .. (several and "; P.m = m" or "") .. [[

    local a0, b0 = FSTRING(DATA + OFF[i - 1], OFF[i] - OFF[i - 1]), nil;]] .. stamp_src .. "\n"
      .. concat(lines, "\n") .. [[

  end
  return m
end]]
    raw_fast = load(raw_src, name, F, E, I, G, type, pack, GI, byte, sub, BAD, ops.KEY_TYPES, EKEY, P, watchdog.P,
      ffi.string, stamp and stamp.fn, ev and ev.checked, ev and ev.FINAL, ST)
    raw_sites = sites
  end
  -- A chain starting with flat_map(sr.words) has two loops over a C
  -- batch, for chunks of records: one cutting the words in Lua, a string
  -- made of each (raw_fast), one over the words cut and named in C, a
  -- string of each distinct word (raw_ids; WID: chunk_ids). Which is
  -- faster depends on what the next stage does with a word: kept as a
  -- key, the strings made in C save interning each word; only read
  -- (w:lower()), LuaJIT need not make the word's string at all. The chain
  -- runs the faster one, as timed on its own chunks (pick_words).
  local WID, raw_ids, ids_sites
  if not stamp and stages[1].op == "flat_map" and stages[1].fn == builtins.words then
    WID = { wc = ffi.gc(C.sr_wordcount_new(), C.sr_wordcount_free), str = {}, known = 0, r0 = 0,
            ms = { ids = 0, lua = 0 }, runs = 0 }
    local function words_loop(how)
      local raw_lines, sites = generate(stages, 1, false, origin, sink_op, how)
      local raw_src = "local P, W, FSTRING, WID = select(13, ...)\n" .. HEADER .. [[
return function(DATA, OFF, n, i0, OA, OB, m, OI) local IDS, REND, STR, R0 = WID.ids, WID.rend, WID.str, WID.r0
  for i = i0, n do
    P.i = i; W.rec = i; P.m = m
    -- (the lines below are numbered as the other loop's)
]] .. concat(raw_lines, "\n") .. [[

  end
  return m
end]]
      return load(raw_src, name, F, E, I, G, type, pack, GI, byte, sub, BAD, ops.KEY_TYPES, EKEY, P, watchdog.P,
        ffi.string, WID), sites
    end
    raw_fast, raw_sites = words_loop("lua")
    raw_ids, ids_sites = words_loop("ids")
  end

  -- tails[k]: the guarded chain from stage k on, for one element.
  local tails = {}
  local function tail(k)
    if not tails[k] then
      local body = generate(stages, k, true, origin, sink_op)
      tails[k] = load(HEADER .. "return function(a0, b0, OA, OB, m, OI, i)\n" .. concat(body, "\n") .. "\nreturn m\nend",
        name .. " (from " .. k .. ", guarded)", F, E, I, G, type, pack, GI, byte, sub, BAD, ops.KEY_TYPES, EKEY)
    end
    return tails[k]
  end

  -- Finishes element i after a failing call at site (cap: the fast loop's
  -- locals): reports the call, then what is left of the enclosing
  -- flat_maps' arrays and iterators, innermost first. Returns m.
  local function finish(input, i, site, cap, err, OA, OB, m, OI)
    cur.input, cur.i = input, i
    if not site then
      -- Not a user call (nothing else should raise): the element's
      -- outputs so far are kept.
      report(stages[1], err, input, i, input.a[i], input.b[i])
      return m
    end
    local args = site.args
    local v1, v2 = cap[args[1]], args[2] and cap[args[2]]
    local key = site.key and cap[site.key]
    if site.k > nk and key ~= nil then
      g.report_key(sink, key, err, v2)
    elseif site.k > nk then
      g.report(sink, err, v1, v2)
    elseif args[2] then
      report(stages[site.k], err, input, i, v1, v2)
    else
      report(stages[site.k], err, input, i, v1)
    end
    for L = #site.loops, 1, -1 do
      local lp = site.loops[L]
      local r, key, go = cap[lp.r], lp.key and cap[lp.key], tail(lp.k + 1)
      if lp.kind == "cids" then
        local IDS, STR = WID.ids, WID.str
        for j = cap[lp.p], cap[lp.e] - 1 do m = go(STR[IDS[j]], nil, OA, OB, m, OI, i) end
      elseif lp.kind == "cwords" then
        -- (After a record's last word, p is past its end.)
        local p, e = cap[lp.p], cap[lp.e]
        local rest = p < e and builtins.words(ffi.string(input.cbatch.data + p, e - p)) or {}
        for j = 1, #rest do m = go(rest[j], nil, OA, OB, m, OI, i) end
      elseif lp.kind == "words" then
        local rest = builtins.words(sub(cap[lp.s], cap[lp.p]))
        for j = 1, #rest do m = go(rest[j], nil, OA, OB, m, OI, i) end
      elseif lp.kind == "table" then
        for j = cap[lp.j] + 1, #r do
          local x = r[j]
          if x ~= nil then
            if key ~= nil then m = go(key, x, OA, OB, m, OI, i) else m = go(x, nil, OA, OB, m, OI, i) end
          end
        end
      else
        local a1, a2 = cap[lp.args[1]], lp.args[2] and cap[lp.args[2]]
        local iter, ctl = GI(lp.k, r, a1, a2), cap[lp.ctl]
        while true do
          local x, y = iter(nil, ctl)
          if x == nil then break end
          ctl = x
          if key ~= nil then m = go(key, x, OA, OB, m, OI, i) else m = go(x, y, OA, OB, m, OI, i) end
        end
      end
    end
    return m
  end

  local chain = { stages = stages, name = name }

  -- Runs the chain over an input batch; returns the output batch.
  -- Keys the sink saw last batch: its tables are sized for as many.
  local last_keys = 0

  -- With stamp: the second result is the largest time (nil when no
  -- record has one); the output's elements carry their times (t) when
  -- the chain writes them itself, else (chain.keeps_times) T, an FFI array
  -- of at least n + 1 doubles, receives the inputs' times.
  chain.keeps_times = keeps
  function chain.run(input, T)
    local cb = rawget(input, "cbatch")
    if cb and not raw_fast then make_raw() end
    local stamping = stamp and input.n > 0
    if stamping then
      if keeps and T == nil then error("fuse: a stamping chain needs the times' array", 0) end
      ST.t, ST.top, P.t = T, -1, 0
      if direct then ST.ot = batch.reuse_times(ST, input.n) end
    end
    local n = input.n
    local IA, IB, loop, at_line = nil, nil, fast, sites
    if cb then
      loop, at_line = raw_fast, raw_sites
    else
      IA, IB = input.a, input.b
    end
    local OA, OB
    if sink then
      OA, OB = tnew(last_keys, 0), tnew(0, last_keys)
    else
      OA, OB = tnew(n, 0), tnew(n, 0)
    end
    local OI
    if stamping and origin and not several then
      -- (One element at most of each record: the indexes in a buffer of
      -- the chain's, no table of a million numbers per batch.)
      OI = batch.reuse_indexes(ST, n)
    elseif origin then
      OI = tnew(n, 0)
    end
    -- (upto: the last record the loop runs to, a chunk's with WID; c0
    -- and t0: its first record and when it started, its failures'
    -- handling included, the same either way)
    local m, i0, upto = 0, 1, n
    local chunks = cb and WID
    local how, c0, t0
    if chunks then upto = 0 end
    while true do
      if chunks and i0 > upto then
        if i0 > n then break end
        upto = min(n, i0 + M.ids_chunk - 1)
        how = pick_words(WID)
        c0, t0 = i0, clock_ms()
        if how == "ids" then
          chunk_ids(WID, cb, i0, upto)
          loop, at_line = raw_ids, ids_sites
        else
          loop, at_line = raw_fast, raw_sites
        end
      end
      local ok, res, cap, raised
      if cb then
        ok, res, cap, raised = resume.call(loop, cb.data, cb.off, upto, i0, OA, OB, m, OI)
      else
        ok, res, cap, raised = resume.call(loop, IA, IB, n, i0, OA, OB, m, OI)
      end
      if ok then
        m = res
        if t0 then time_words(WID, how, (clock_ms() - t0) / (upto - c0 + 1), upto - c0 + 1) end
        if upto >= n then break end
        i0 = upto + 1
        goto next_run
      end
      if type(res) == "table" and res.fatal then error(res, 0) end
      local i = cap and cap.i or P.i
      if stamping and P.t ~= i then
        -- The record has no event time: a dead letter (the error as
        -- raised, no traceback), and no stage sees it.
        if cap then
          m = cap.m
        else
          -- (A stack overflow: the outputs so far are those in OA.)
          m = 0
          while OA[m + 1] ~= nil do m = m + 1 end
        end
        stamp.dead(input, i, raised == nil and res or raised)
      else
        if not cap then
          -- The handler could not run (a stack overflow): the element runs
          -- again from stage 1, guarded, after the outputs of those before.
          local m0 = 0
          if cb then
            local s0 = cb.off[i - 1]
            IA, IB = {}, {}
            IA[i] = ffi.string(cb.data + s0, cb.off[i] - s0)
          end
          if sink and several then
            -- What the element folded in before the failure cannot be taken
            -- out again: it stays, and the rest of the element is dropped.
            m0 = #OA
            report(stages[1], res, input, i, IA[i], IB[i])
          elseif several then
            m0 = P.m
            local j = m0 + 1
            while OA[j] ~= nil do OA[j], OB[j] = nil, nil; j = j + 1 end
          else
            while OA[m0 + 1] ~= nil do m0 = m0 + 1 end
          end
          cur.input, cur.i = input, i
          if sink and several then m = m0 else m = tail(1)(IA[i], IB[i], OA, OB, m0, OI, i) end
          if stamping and direct then
            for j = m0 + 1, m do ST.ot[j] = P.tv end
          end
        end
        -- The traceback's frames from the generated loop on are the runtime's.
        if type(res) == "string" then
          local at = res:find("\n%s*" .. name:gsub("%p", "%%%0") .. ":")
          if at then res = res:sub(1, at - 1) end
        end
        if cap then m = finish(input, i, at_line[cap.line - first_line + 1], cap, res, OA, OB, cap.m, OI) end
      end
      i0 = i + 1
      ::next_run::
    end
    local top, OT
    if stamping then
      top = ST.top >= 0 and ST.top or nil
      OT = ST.ot
      ST.t, ST.ot = nil, nil
    end
    if sink then
      last_keys = m
      local V = tnew(m, 0)
      for j = 1, m do V[j] = OB[OA[j]] end
      if REPS then
        for j = 1, m do
          local rep = REPS[OA[j]]
          if rep ~= nil then OA[j] = rep end
        end
        if next(REPS) ~= nil then REPS = {} end
      end
      return { n = m, a = OA, b = V }, top
    end
    if origin then return { n = m, a = OA, b = OB, o = OI, from = input, t = OT }, top end
    return { n = m, a = OA, b = OB }, top
  end

  return chain
end

return M
