-- `make bench` / `make bench-quick`: every benchmark of SPEC section 13
-- (issue 7) beside its baselines, measured in the same run; one table on
-- stdout, the same as JSON in build/bench.json.
--   luajit spec/bench/run.lua [--quick] [--runs N] [--only NAME,...] [--out FILE]
-- Run from the repository root after `make` (the Makefile targets do both).
-- Inputs are generated from fixed seeds into build/bench-data/ and reused
-- while their parameters and size match. Times: the monotonic clock around
-- each finished process (wall) and the OS's accounting of it (/usr/bin/time,
-- or spec/bench/rusage.lua: CPU and max RSS). Each figure is the median of
-- the runs (3 by default; --quick: smaller inputs and 1 run).
-- The data-path rows (forms, json, state, average, event) run streamrun
-- with --workers 1: they compare one core with one-core scripts; the
-- workers rows compare 2 workers with 1; wordcount runs as users run it.
--
-- A benchmark is a function in BENCHMARKS below returning its table lines;
-- adding one (checkpoints, once they work) means adding a function there.
package.path = "./spec/bench/?.lua;./spec/?.lua;" .. package.path
local lib = require "lib"
local gen = require "gen"
local cjson = require "cjson"

local q, median = lib.quote, lib.median
local fmt = string.format

-- -- Options --

local opts = { quick = false, out = "build/bench.json" }
do
  local i = 1
  while i <= #arg do
    local a = arg[i]
    if a == "--quick" then opts.quick = true
    elseif a == "--runs" then i = i + 1 opts.runs = tonumber(arg[i])
    elseif a == "--only" then i = i + 1 opts.only = arg[i]
    elseif a == "--out" then i = i + 1 opts.out = arg[i]
    else
      io.stderr:write("usage: luajit spec/bench/run.lua [--quick] [--runs N] [--only NAME,...] [--out FILE]\n")
      os.exit(2)
    end
    i = i + 1
  end
end

local CFG = opts.quick and {
  mode = "quick", runs = 1,
  words_bytes = 20e6, json_records = 1e5, keys = 1e5, updates = 1e6,
  latency_s = 5, latency_window_s = 2, readings = 5e5,
} or {
  mode = "full", runs = 3,
  words_bytes = 200e6, json_records = 1e6, keys = 1e6, updates = 1e7,
  -- (latency: 30 s runs, three cases in turn: its first and last 10 s,
  -- 10 s apart, still show a growth.)
  latency_s = 30, latency_window_s = 10, readings = 5e6,
}
CFG.runs = opts.runs or CFG.runs
CFG.latency_rate = 100000
CFG.state_max_batch = 5000
CFG.readings_keys = 10000

local DATA, TMP = "build/bench-data", "build/bench-tmp"
local STREAMRUN, WC_C = "build/streamrun", "build/wc_baseline"
local SEED = { words = 1, json = 2, keys = 3, events = 4, readings = 5 }

local failures = {} -- problems: commands that failed, runs left out of a figure

local function log(...)
  io.stderr:write("bench: ", fmt(...), "\n")
  io.stderr:flush()
end

local function first_line(path)
  local s = lib.read(path) or ""
  return s:match("[^\n]+") or ""
end

-- -- Running commands --

-- Runs each command of cmds `runs` times, interleaved (a, b, c, a, b, c, ...)
-- so a slow patch of the machine hits every command alike. cmd: { name,
-- cmd (shell text, stdout redirected), before (optional function run first),
-- after (optional: checks a finished run's output, returns nil or what is
-- wrong; such a run is left out of the figures and reported) }. stderr goes to
-- TMP/<name>.err. Returns { [name] = { run results } } and the first
-- failure per name ({ [name] = message }).
local function measure(title, cmds, runs)
  local results, failed = {}, {}
  for _, c in ipairs(cmds) do results[c.name] = {} end
  for rep = 1, runs do
    for _, c in ipairs(cmds) do
      if not failed[c.name] then
        if c.before then c.before(rep) end
        local err = ("%s/%s.err"):format(TMP, c.name)
        local r = lib.run(c.cmd .. " 2> " .. q(err), TMP)
        local wrong = r.ok and c.after and c.after(r)
        if wrong then
          failures[#failures + 1] = fmt("%s: %s run %d left out: %s", title, c.name, rep, wrong)
          log("%s", failures[#failures])
        elseif r.ok then
          table.insert(results[c.name], r)
          log("%s run %d/%d: %-18s %7.2f s wall, %6.2f s CPU, max RSS %6.1f MB", title, rep, runs,
            c.name, r.wall, r.user + r.sys, r.maxrss_kb / 1024)
        else
          failed[c.name] = fmt("failed (exit %s)", tostring(r.exit))
          failures[#failures + 1] = fmt("%s: %s failed (exit %s; %s): %s", title, c.name, tostring(r.exit), err,
            first_line(err))
          log("%s", failures[#failures])
        end
      end
    end
  end
  for _, c in ipairs(cmds) do
    if #results[c.name] == 0 and not failed[c.name] then failed[c.name] = "wrong output (see notes)" end
    if #results[c.name] > 0 and #results[c.name] < runs then
      failures[#failures + 1] = fmt("%s: %s: the figure is the median of %d runs, not %d", title, c.name,
        #results[c.name], runs)
    end
  end
  return results, failed
end

local function med(runs, field)
  local xs = {}
  for i, r in ipairs(runs) do xs[i] = r[field] end
  return median(xs)
end

local function have(cmd)
  return lib.sh("command -v " .. q(cmd) .. " > /dev/null 2>&1")
end

local function warm(path)
  lib.sh("cat " .. q(path) .. " > /dev/null")
end

-- -- Formatting --

local function rate(x, unit)
  if not x then return "-" end
  local s
  if x >= 1e6 then s = fmt("%.2fM", x / 1e6)
  elseif x >= 1e3 then s = fmt("%.1fk", x / 1e3)
  else s = fmt("%.0f", x) end
  return unit and (s .. " " .. unit) or s
end

-- A round count: 200k, 1M, 10M.
local function count(n)
  if n >= 1e6 and n % 1e5 == 0 then return (fmt("%.1fM", n / 1e6):gsub("%.0M$", "M")) end
  if n >= 1e3 and n % 100 == 0 then return (fmt("%.1fk", n / 1e3):gsub("%.0k$", "k")) end
  return tostring(n)
end

local function mbs(x) return x and fmt("%.1f MB/s", x) or "-" end
local function ratio(a, b) return (a and b and b > 0) and a / b or nil end
local function xfmt(r) return r and fmt("%.2fx", r) or "-" end
local function yesno(b) if b == nil then return "-" end return b and "yes" or "no" end

-- A table line: benchmark, figure, baseline, ratio, target, met.
local function line(bench, figure, baseline, r, target, met)
  return { bench or "", figure or "", baseline or "", r or "", target or "", met or "" }
end

-- Records, final state keys, batches and the most state keys of a --stats
-- file.
local function stats_summary(path)
  local records, keys, batches, most = 0, nil, 0, nil
  local f = io.open(path, "r")
  if not f then return nil end
  for l in f:lines() do
    local r = tonumber(l:match('"records": (%d+)'))
    if r then records, batches = records + r, batches + 1 end
    keys = tonumber(l:match('"state_keys": (%d+)')) or keys
    if keys and (not most or keys > most) then most = keys end
  end
  f:close()
  return records, keys, batches, most
end

-- A command's before/after pair that has streamrun write --stats to
-- TMP/<name>.stats and checks that the run took `want` records.
local function stats_check(c, want)
  local file = fmt("%s/%s.stats", TMP, c.name)
  c.cmd = c.cmd:gsub("^(%S+ run %S+)", "%1 --stats " .. file)
  c.before = function() os.remove(file) end
  c.after = function()
    local n = stats_summary(file)
    if n ~= want then return fmt("read %s records of %d (%s)", tostring(n), want, file) end
  end
  return c
end

-- -- wordcount --

local MAWK_PROG = "{for(i=1;i<=NF;i++)c[$i]++} END{for(w in c){n++;t+=c[w]} print t, n}"

-- Totals of the last batch printed by jobs/wordcount.lua: (total, distinct).
local function last_printed_totals(path)
  local total, distinct
  for l in io.lines(path) do
    if l:match("^Time: ") then
      total, distinct = 0, 0
    elseif total then
      local n = l:match("^%(.*,(%d+)%)$")
      if n then total, distinct = total + tonumber(n), distinct + 1 end
    end
  end
  return total, distinct
end

local function read_pair(path)
  local a, b = first_line(path):match("^(%d+)%s+(%d+)")
  return tonumber(a), tonumber(b)
end

local function words_input(bytes)
  local path = DATA .. ("/words-%dMB-s%d.txt"):format(bytes / 1e6, SEED.words)
  local info, reused = gen.ensure("words", path, { bytes = bytes, seed = SEED.words,
                                                   vocabulary = 50000, exponent = 1.0 })
  log("wordcount: %s %s: %d bytes, %d lines, %d words", reused and "reused" or "generated", path,
    info.bytes, info.lines, info.words)
  return path, info
end

-- The totals in jobs/wordcount.lua's final state, printed whole (show =
-- 1e9) by an untimed run over `path`: total, distinct (nil if it failed).
local function streamrun_totals(path)
  local out = TMP .. "/wc_streamrun_state.out"
  local r = lib.run(fmt("%s run jobs/wordcount.lua --quiet --set source=file --set path=%s --set show=1000000000 > %s 2> %s",
    STREAMRUN, q(path), q(out), q(TMP .. "/wc_streamrun_state.err")), TMP)
  local total, distinct
  if r.ok then total, distinct = last_printed_totals(out) end
  os.remove(out)
  return total, distinct
end

-- The streamrun check runs over the quick input (20 MB): over 200 MB it
-- would cost another full pass (~30 s); the timed runs are checked to read
-- every line instead.
local CHECK_BYTES = 20e6

local function bench_wordcount()
  local path, info = words_input(CFG.words_bytes)
  warm(path)
  local has_mawk, has_c = have("mawk"), lib.exists(WC_C)
  local cmds = {
    stats_check({ name = "wc_streamrun", label = "streamrun jobs/wordcount.lua",
      cmd = fmt("%s run jobs/wordcount.lua --quiet --set source=file --set path=%s --set show=0 > /dev/null",
        STREAMRUN, q(path)) }, info.lines),
    { name = "wc_luajit", label = "LuaJIT script",
      cmd = fmt("luajit spec/bench/wc_baseline.lua %s > %s/wc_luajit.out", q(path), TMP) },
  }
  if has_mawk then
    cmds[#cmds + 1] = { name = "wc_mawk", label = "mawk",
      cmd = fmt("mawk %s %s > %s/wc_mawk.out", q(MAWK_PROG), q(path), TMP) }
  end
  if has_c then
    cmds[#cmds + 1] = { name = "wc_c", label = "C (open addressing)",
      cmd = fmt("%s %s > %s/wc_c.out", WC_C, q(path), TMP) }
  end
  local res, failed = measure("wordcount", cmds, CFG.runs)

  -- Correctness, once: every baseline's total (and distinct words) against
  -- the generator's count; streamrun's from its final state (see
  -- streamrun_totals and CHECK_BYTES).
  local checks, ok_all = {}, true
  local function check(label, total, distinct, want)
    local ok = total == (want or info.words)
    ok_all = ok_all and ok
    checks[#checks + 1] = fmt("%s %s/%s", label, tostring(total), tostring(distinct))
  end
  if #res.wc_luajit > 0 then check("luajit", read_pair(TMP .. "/wc_luajit.out")) end
  if has_mawk and #res.wc_mawk > 0 then check("mawk", read_pair(TMP .. "/wc_mawk.out")) end
  if has_c and #res.wc_c > 0 then check("c", read_pair(TMP .. "/wc_c.out")) end
  local sr_check = ""
  if #res.wc_streamrun > 0 then
    local cpath, cinfo = path, info
    if info.bytes > CHECK_BYTES * 1.01 then cpath, cinfo = words_input(CHECK_BYTES) end
    local total, distinct = streamrun_totals(cpath)
    check("streamrun", total, distinct, cinfo.words)
    if cpath ~= path then
      sr_check = fmt(" (streamrun's final state over the %d MB input, %d words)", CHECK_BYTES / 1e6, cinfo.words)
    end
  end
  local verified = fmt("wordcount: words counted (total/distinct) vs %d generated: %s%s -> %s; "
    .. "every timed streamrun run read all %d lines (--stats)", info.words,
    table.concat(checks, ", "), sr_check, ok_all and "all match" or "MISMATCH", info.lines)
  log("%s", verified)

  local mb = info.bytes / 1e6
  local function speed(n) local r = res[n] return r and #r > 0 and mb / med(r, "wall") or nil end
  local sr = speed("wc_streamrun")
  local what = fmt("wordcount (%d MB)", math.floor(mb + 0.5))
  local fig = sr and ("streamrun " .. mbs(sr)) or ("streamrun " .. (failed.wc_streamrun or "-"))
  local lines = {}
  local function cmp(n, label, target, goal)
    local b = speed(n)
    local r = ratio(sr, b)
    local met = nil
    if goal and r then met = r >= goal end
    local base = b and (label .. " " .. mbs(b)) or (label .. " " .. (failed[n] or "not run"))
    lines[#lines + 1] = line(#lines == 0 and what or "", #lines == 0 and fig or "", base, xfmt(r), target, yesno(met))
    return { baseline = label, mb_s = b, ratio = r, target = target, met = met }
  end
  local data = { input = { path = path, bytes = info.bytes, lines = info.lines, words = info.words },
                 streamrun_mb_s = sr, comparisons = {}, verified = ok_all, check = verified, runs = res }
  local c = data.comparisons
  c[#c + 1] = cmp("wc_luajit", "LuaJIT script", ">= 1.5x", 1.5)
  if has_mawk then c[#c + 1] = cmp("wc_mawk", "mawk", ">= 1.5x", 1.5)
  else lines[#lines + 1] = line("", "", "mawk: not installed", "-", ">= 1.5x", "-") end
  if has_c then c[#c + 1] = cmp("wc_c", "C (open addressing)", "(reported)", nil)
  else lines[#lines + 1] = line("", "", "C: build/wc_baseline missing", "-", "(reported)", "-") end
  local rss = {}
  for _, cm in ipairs(cmds) do
    if #res[cm.name] > 0 then rss[#rss + 1] = fmt("%s %.1f MB", cm.label, med(res[cm.name], "maxrss_kb") / 1024) end
  end
  return lines, data, { verified, "wordcount: max RSS " .. table.concat(rss, ", ") }
end

-- -- word counts as users write them --

-- spec/bench/wc_forms_job.lua's three forms of a word count into running
-- totals (the user's own lowercasing map and reducer; the README's pairing
-- map; the built-ins flat_map(sr.words):count_by_value()), each beside a
-- plain LuaJIT script doing the same work on the same input, the built-ins
-- also beside C (issue 13). Batches of 1M lines, as jobs/wordcount.lua.
local FORMS = {
  { form = "lower", what = "lowercase + own reducer", base = "wc_lower_baseline.lua", target = 1.0 },
  { form = "pairs", what = "README word count (pairing map)", base = "wc_baseline.lua", target = 1.0 },
  { form = "builtin", what = "built-ins count_by_value", base = "wc_baseline.lua", target = 2.0, c_target = 0.7 },
}

local function bench_forms()
  local path, info = words_input(CFG.words_bytes)
  warm(path)
  local cmds, has_c = {}, lib.exists(WC_C)
  local function job(form, extra)
    return fmt("%s run spec/bench/wc_forms_job.lua --quiet --workers 1 --set form=%s --set path=%s --set max_batch=1000000%s",
      STREAMRUN, form, q(path), extra or "")
  end
  for _, f in ipairs(FORMS) do
    cmds[#cmds + 1] = stats_check({ name = "forms_" .. f.form, cmd = job(f.form) .. " > /dev/null" }, info.lines)
  end
  cmds[#cmds + 1] = { name = "forms_luajit_lower",
    cmd = fmt("luajit spec/bench/wc_lower_baseline.lua %s > %s/forms_luajit_lower.out", q(path), TMP) }
  cmds[#cmds + 1] = { name = "forms_luajit",
    cmd = fmt("luajit spec/bench/wc_baseline.lua %s > %s/forms_luajit.out", q(path), TMP) }
  if has_c then
    cmds[#cmds + 1] = { name = "forms_c", cmd = fmt("%s %s > %s/forms_c.out", WC_C, q(path), TMP) }
  end
  local res, failed = measure("forms", cmds, CFG.runs)

  -- Correctness, once: each baseline's total and distinct words against the
  -- generator's (its words are lowercase: lowercasing changes none), and
  -- each form's final state, printed whole by an untimed run over the
  -- quick input (CHECK_BYTES), against that input's.
  local checks, ok_all = {}, true
  local function check(label, total, distinct, want)
    local ok = total == want
    ok_all = ok_all and ok
    checks[#checks + 1] = fmt("%s %s/%s", label, tostring(total), tostring(distinct))
  end
  for _, n in ipairs({ "forms_luajit_lower", "forms_luajit", "forms_c" }) do
    if res[n] and #res[n] > 0 then
      local t, d = read_pair(fmt("%s/%s.out", TMP, n))
      check((n:gsub("^forms_", "")), t, d, info.words)
    end
  end
  local cpath, cinfo = path, info
  if info.bytes > CHECK_BYTES * 1.01 then cpath, cinfo = words_input(CHECK_BYTES) end
  for _, f in ipairs(FORMS) do
    if #res["forms_" .. f.form] > 0 then
      local out = TMP .. "/forms_state.out"
      local r = lib.run(fmt("%s run spec/bench/wc_forms_job.lua --quiet --workers 1 --set form=%s --set path=%s --set show=1000000000 > %s 2> %s",
        STREAMRUN, f.form, q(cpath), q(out), q(TMP .. "/forms_state.err")), TMP)
      local total, distinct
      if r.ok then total, distinct = last_printed_totals(out) end
      os.remove(out)
      check(f.form, total, distinct, cinfo.words)
    end
  end
  local verified = fmt("forms: words counted (total/distinct): baselines vs %d generated, streamrun's final state over the "
    .. "%d MB input vs %d: %s -> %s; every timed streamrun run read all %d lines (--stats)", info.words,
    math.floor(cinfo.bytes / 1e6 + 0.5), cinfo.words, table.concat(checks, ", "), ok_all and "all match" or "MISMATCH",
    info.lines)
  log("%s", verified)

  local mb = info.bytes / 1e6
  local function speed(n) local r = res[n] return r and #r > 0 and mb / med(r, "wall") or nil end
  local lines, data = {}, { input = { path = path, bytes = info.bytes, lines = info.lines, words = info.words },
                            verified = ok_all, check = verified, runs = res, forms = {} }
  for _, f in ipairs(FORMS) do
    local n = "forms_" .. f.form
    local sr = speed(n)
    local bname = f.base == "wc_lower_baseline.lua" and "forms_luajit_lower" or "forms_luajit"
    local b = speed(bname)
    local r = ratio(sr, b)
    local what = fmt("%s (%d MB)", f.what, math.floor(mb + 0.5))
    lines[#lines + 1] = line(what, sr and ("streamrun " .. mbs(sr)) or ("streamrun " .. (failed[n] or "-")),
      b and ("LuaJIT script " .. mbs(b)) or ("LuaJIT script " .. (failed[bname] or "-")), xfmt(r),
      fmt(">= %.1fx", f.target), yesno(r and r >= f.target))
    local fd = { form = f.form, mb_s = sr, baseline = f.base, baseline_mb_s = b, ratio = r, target = f.target }
    if f.c_target then
      local c = has_c and speed("forms_c") or nil
      local rc = ratio(sr, c)
      lines[#lines + 1] = line("", "", c and ("C (open addressing) " .. mbs(c)) or "C: not run", xfmt(rc),
        fmt(">= %.1fx", f.c_target), yesno(rc and rc >= f.c_target))
      fd.c_mb_s, fd.c_ratio, fd.c_target = c, rc, f.c_target
    end
    data.forms[#data.forms + 1] = fd
  end
  return lines, data, { verified }
end

-- -- workers --

-- SPEC section 15: the same jobs with --workers 2 beside --workers 1, in
-- the same run: the built-in word count (counted in C on each worker), the
-- README's word count (user functions before reduce_by_key and
-- update_state_by_key) and an ordinary keyed job (user functions before
-- reduce_by_key and map_with_state, spec/bench/workers_job.lua), whose
-- keyed segments run in each worker's VM. Beside wall-clock speed: the CPU
-- seconds of each run (what the extra workers cost on a busy machine).
local WORKER_FORMS = {
  { form = "builtin", what = "built-in word count", target = 1.6 },
  { form = "pairs", what = "map -> reduce_by_key -> update_state_by_key (user functions)", target = 1.7 },
  { form = "keyed", what = "map -> reduce_by_key -> map_with_state (user functions)", target = 1.7,
    job = "spec/bench/workers_job.lua" },
}

local function bench_workers()
  local path, info = words_input(CFG.words_bytes)
  warm(path)
  local cmds = {}
  for _, f in ipairs(WORKER_FORMS) do
    for _, n in ipairs { 1, 2 } do
      cmds[#cmds + 1] = stats_check({ name = fmt("workers_%s_%d", f.form, n),
        cmd = fmt("%s run %s --quiet --set form=%s --set path=%s --set max_batch=1000000 "
          .. "--workers %d > /dev/null", STREAMRUN, f.job or "spec/bench/wc_forms_job.lua", f.form, q(path), n) },
        info.lines)
    end
  end
  local res, failed = measure("workers", cmds, CFG.runs)
  local mb = info.bytes / 1e6
  local function speed(n) local r = res[n] return r and #r > 0 and mb / med(r, "wall") or nil end
  local function cpu(n)
    local r = res[n]
    if not r or #r == 0 then return "" end
    local xs = {}
    for k, x in ipairs(r) do xs[k] = x.user + x.sys end
    return fmt(" (%.2f s CPU)", median(xs))
  end
  local lines, data = {}, { forms = {} }
  for _, f in ipairs(WORKER_FORMS) do
    local one, two = fmt("workers_%s_1", f.form), fmt("workers_%s_2", f.form)
    local s1, s2 = speed(one), speed(two)
    local r = ratio(s2, s1)
    lines[#lines + 1] = line(fmt("%s (%d MB)", f.what, math.floor(mb + 0.5)),
      s2 and ("--workers 2 " .. mbs(s2) .. cpu(two)) or ("--workers 2 " .. (failed[two] or "-")),
      s1 and ("--workers 1 " .. mbs(s1) .. cpu(one)) or ("--workers 1 " .. (failed[one] or "-")), xfmt(r),
      fmt(">= %.1fx", f.target), yesno(r and r >= f.target))
    data.forms[#data.forms + 1] = { form = f.form, mb_s_1 = s1, mb_s_2 = s2, ratio = r, target = f.target }
  end
  -- What two cores give two independent processes here, the ceiling of
  -- any ratio above: the LuaJIT word-count script over the check input,
  -- one copy alone against two copies at once.
  local cpath, cinfo = words_input(CHECK_BYTES)
  warm(cpath)
  local script = fmt("luajit spec/bench/wc_baseline.lua %s > /dev/null", q(cpath))
  local pres, pfailed = measure("ceiling", {
    { name = "ceiling_one", cmd = script },
    -- (fails when either copy does)
    { name = "ceiling_two", cmd = fmt("sh -c %s", q(fmt("%s & p=$!; %s; r=$?; wait $p && exit $r", script, script))) },
  }, CFG.runs)
  local cmb = cinfo.bytes / 1e6
  local one = #pres.ceiling_one > 0 and cmb / med(pres.ceiling_one, "wall") or nil
  local two = #pres.ceiling_two > 0 and 2 * cmb / med(pres.ceiling_two, "wall") or nil
  local cr = ratio(two, one)
  lines[#lines + 1] = line(fmt("two processes at once, the machine's ceiling (LuaJIT script, %d MB each)",
      math.floor(cmb + 0.5)),
    two and ("2 at once " .. mbs(two) .. " in all") or ("2 at once " .. (pfailed.ceiling_two or "-")),
    one and ("1 alone " .. mbs(one)) or ("1 alone " .. (pfailed.ceiling_one or "-")), xfmt(cr), "(reported)", "-")
  data.ceiling = { mb_s_1 = one, mb_s_2 = two, ratio = cr }
  return lines, data, { "workers: the ceiling row runs no streamrun code: two copies of the LuaJIT script "
    .. "on two cores, against one alone: a worker row near it is as parallel as this machine lets any two processes be" }
end

-- -- json filter --

local function count_lines(path)
  local n = 0
  local f = io.open(path, "rb")
  if not f then return nil end
  for _ in f:lines() do n = n + 1 end
  f:close()
  return n
end

-- Whether two JSON-lines files hold the same records, line by line,
-- compared decoded (key order in the text follows cjson's hash tables).
local function same_records(a, b)
  local fa, fb = io.open(a, "rb"), io.open(b, "rb")
  if not (fa and fb) then return false end
  local decode = cjson.decode
  local same = true
  while same do
    local la, lb = fa:read("*l"), fb:read("*l")
    if la == nil or lb == nil then
      same = la == lb
      break
    end
    if la ~= lb then
      local ra, rb = decode(la), decode(lb)
      for k, v in pairs(ra) do if rb[k] ~= v then same = false end end
      for k in pairs(rb) do if ra[k] == nil then same = false end end
    end
  end
  fa:close()
  fb:close()
  return same
end

local function bench_json()
  local path = DATA .. ("/events-%dk-s%d.jsonl"):format(CFG.json_records / 1e3, SEED.json)
  local info, reused = gen.ensure("json", path, { records = CFG.json_records, seed = SEED.json })
  log("json: %s %s, %d records, %d selected", reused and "reused" or "generated", path,
    info.records, info.selected)
  warm(path)
  local outs = {}
  local function cmd(name, label, text)
    outs[name] = fmt("%s/%s.out", TMP, name)
    local c = { name = name, label = label, cmd = text:gsub("OUT", outs[name]) }
    if name:match("streamrun") then stats_check(c, info.records) end
    local before = c.before
    c.before = function() os.remove(outs[name]) if before then before() end end
    return c
  end
  local cmds = {
    cmd("json_streamrun", "streamrun", fmt("%s run jobs/json_filter.lua --quiet --workers 1 --set out=OUT < %s > /dev/null",
      STREAMRUN, q(path))),
    cmd("json_streamrun_100ms", "streamrun --set batch=100ms",
      fmt("%s run jobs/json_filter.lua --quiet --workers 1 --set batch=100ms --set out=OUT < %s > /dev/null", STREAMRUN, q(path))),
    cmd("json_luajit", "LuaJIT + cjson", fmt("luajit spec/bench/json_baseline.lua OUT < %s > /dev/null", q(path))),
  }
  local res, failed = measure("json", cmds, CFG.runs)
  -- Correctness: each output has the generator's number of selected
  -- records, and streamrun's records are the baseline's.
  local checks, ok_all = {}, true
  for _, c in ipairs(cmds) do
    if #res[c.name] > 0 then
      local n = count_lines(outs[c.name])
      ok_all = ok_all and n == info.selected
      checks[#checks + 1] = fmt("%s %s", c.name:gsub("^json_", ""), tostring(n))
    end
  end
  local same = #res.json_streamrun > 0 and #res.json_luajit > 0
               and same_records(outs.json_streamrun, outs.json_luajit)
  local verified = fmt("json: records out vs %d expected: %s; streamrun's records %s the baseline's -> %s",
    info.selected, table.concat(checks, ", "), same and "are the same as" or "DIFFER from",
    (ok_all and same) and "match" or "MISMATCH")
  log("%s", verified)

  local function speed(n) local r = res[n] return #r > 0 and info.records / med(r, "wall") or nil end
  local function cpu(n) local r = res[n] return #r > 0 and info.records / (med(r, "user") + med(r, "sys")) or nil end
  local base = speed("json_luajit")
  local lines, data = {}, { input = { path = path, records = info.records, selected = info.selected },
                            verified = ok_all and same, same_records = same, check = verified, runs = res, figures = {} }
  local what = fmt("json filter (%s records)", count(info.records))
  for i, n in ipairs({ "json_streamrun", "json_streamrun_100ms" }) do
    local s = speed(n)
    local r = ratio(s, base)
    local label = cmds[i].label
    lines[#lines + 1] = line(i == 1 and what or "",
      s and fmt("%s %s", label, rate(s, "rec/s")) or (label .. " " .. (failed[n] or "-")),
      i == 1 and (base and "LuaJIT + cjson " .. rate(base, "rec/s") or ("LuaJIT + cjson " .. (failed.json_luajit or "-"))) or "",
      xfmt(r), ">= 1.0x", yesno(r and r >= 1.0))
    data.figures[#data.figures + 1] = { label = label, records_s = s, ratio = r, cpu_records_s = cpu(n),
                                        cpu_ratio = ratio(cpu(n), cpu("json_luajit")) }
  end
  data.baseline_records_s = base
  local notes = { verified }
  local rss = {}
  for _, cm in ipairs(cmds) do
    if #res[cm.name] > 0 then rss[#rss + 1] = fmt("%s %.1f MB", cm.label, med(res[cm.name], "maxrss_kb") / 1024) end
  end
  notes[#notes + 1] = "json: max RSS " .. table.concat(rss, ", ")
  local c1, c2 = data.figures[1], data.figures[2]
  if c1.cpu_ratio and c2.cpu_ratio then
    notes[#notes + 1] = fmt("json: by CPU time (user+sys) streamrun is %.2fx (batch 1s) and %.2fx (batch 100ms) the baseline "
      .. "(a regular file on stdin is read fast-forward: batches do not wait for the clock)", c1.cpu_ratio, c2.cpu_ratio)
  end
  return lines, data, notes
end

-- -- state --

local function bench_state()
  local path = DATA .. ("/keys-%dk-%dk-s%d.txt"):format(CFG.keys / 1e3, CFG.updates / 1e3, SEED.keys)
  local info, reused = gen.ensure("keys", path, { keys = CFG.keys, updates = CFG.updates, seed = SEED.keys })
  log("state: %s %s, %d keys, %d updates", reused and "reused" or "generated", path, info.keys, info.updates)
  warm(path)
  local function cmd(name, stateful)
    return stats_check({ name = name, cmd = fmt("%s run spec/bench/state_job.lua --quiet --workers 1 --set path=%s "
      .. "--set stateful=%d --set max_batch=%d > /dev/null", STREAMRUN, q(path), stateful, CFG.state_max_batch) },
      info.updates)
  end
  local res, failed = measure("state", { cmd("state_map_with_state", 1), cmd("state_stateless", 0) }, CFG.runs)
  local S, B = res.state_map_with_state, res.state_stateless
  -- (the last batch, at the end of the input, times every key out)
  local recs, left, batches, keys = stats_summary(TMP .. "/state_map_with_state.stats")
  local ok = recs == info.updates and keys == info.keys and left == 0
  local verified = fmt("state: %s records through the stage in %s batches, %s keys in state before the end of the input, "
    .. "%s after (want %d, %d and 0) -> %s",
    tostring(recs), tostring(batches), tostring(keys), tostring(left), info.updates, info.keys, ok and "match" or "MISMATCH")
  log("%s", verified)

  local ups = #S > 0 and info.updates / med(S, "wall") or nil
  local base = #B > 0 and info.updates / med(B, "wall") or nil
  -- Value bytes: the count (at most a few hundred) as msgpack is 1 byte
  -- (positive fixint) up to 127, 2 above.
  local rounds = math.ceil(info.updates / info.keys)
  local value_bytes = rounds <= 127 and 1 or 2
  local per_key, rss_s, rss_b
  if #S > 0 and #B > 0 then
    rss_s, rss_b = med(S, "maxrss_kb") * 1024, med(B, "maxrss_kb") * 1024
    per_key = (rss_s - rss_b) / info.keys - (info.key_bytes + value_bytes)
  end
  local what = fmt("state (%s keys, %s updates)", count(info.keys), count(info.updates))
  local lines = {
    line(what, ups and ("map_with_state " .. rate(ups, "updates/s")) or ("map_with_state " .. (failed.state_map_with_state or "-")),
      base and ("without the stage " .. rate(base, "rec/s")) or ("without the stage " .. (failed.state_stateless or "-")),
      xfmt(ratio(ups, base)), ">= 3M updates/s", yesno(ups and ups >= 3e6)),
    line("", per_key and fmt("%.0f B/key RSS overhead", per_key) or "RSS overhead -",
      (rss_s and rss_b) and fmt("max RSS %.1f MB vs %.1f MB", rss_s / 2 ^ 20, rss_b / 2 ^ 20) or "", "-",
      "<= 64 B/key", yesno(per_key and per_key <= 64)),
  }
  local notes = { verified, fmt("state: RSS overhead = (max RSS with map_with_state - without) / keys - (%d B key + %d B msgpack value); "
    .. "batch = \"100ms\", max_batch_records = %d, timeout 60 s (no key times out: each is updated every %d records)",
    info.key_bytes, value_bytes, CFG.state_max_batch, info.keys) }
  if ups and base then
    notes[#notes + 1] = fmt("state: the map_with_state stage alone (time with it - without): %s updates/s",
      rate(info.updates / (med(S, "wall") - med(B, "wall"))))
  end
  return lines, { input = { path = path, keys = info.keys, updates = info.updates, key_bytes = info.key_bytes,
                            value_bytes = value_bytes },
                  updates_s = ups, stateless_records_s = base, rss_overhead_bytes_per_key = per_key,
                  maxrss_bytes = rss_s, maxrss_stateless_bytes = rss_b, verified = ok, check = verified, runs = res }, notes
end

-- -- running average --

-- A per-key running average kept by the job's own map_with_state function
-- (spec/bench/avg_job.lua) against a plain LuaJIT script doing the same
-- work (spec/bench/avg_baseline.lua); both end with the count and sum of
-- the averages emitted, which must be equal.
local function bench_average()
  local path = DATA .. ("/readings-%dk-%dk-s%d.txt"):format(CFG.readings_keys / 1e3, CFG.readings / 1e3, SEED.readings)
  local info, reused = gen.ensure("readings", path, { keys = CFG.readings_keys, records = CFG.readings,
                                                      seed = SEED.readings })
  log("average: %s %s, %d sensors, %d readings", reused and "reused" or "generated", path, info.keys, info.records)
  warm(path)
  local outs = { avg_streamrun = TMP .. "/avg_streamrun.out", avg_luajit = TMP .. "/avg_luajit.out" }
  local cmds = {
    stats_check({ name = "avg_streamrun", cmd = fmt("%s run spec/bench/avg_job.lua --quiet --workers 1 --set path=%s > %s",
      STREAMRUN, q(path), q(outs.avg_streamrun)) }, info.records),
    { name = "avg_luajit", cmd = fmt("luajit spec/bench/avg_baseline.lua %s > %s", q(path), q(outs.avg_luajit)) },
  }
  local before = cmds[1].before
  cmds[1].before = function() os.remove(outs.avg_streamrun) before() end
  local res, failed = measure("average", cmds, CFG.runs)
  -- (the job prints its count and sum after every batch: the last line)
  local a, b = (lib.read(outs.avg_streamrun) or ""):match("([^\n]*)\n?$"), first_line(outs.avg_luajit)
  local ok = a ~= "" and a == b and tonumber(a:match("^(%d+)")) == info.records
  local verified = fmt("average: count and sum of the averages emitted: streamrun %s, LuaJIT %s -> %s", a, b,
    ok and "equal" or "MISMATCH")
  log("%s", verified)
  local function speed(n) local r = res[n] return #r > 0 and info.records / med(r, "wall") or nil end
  local sr, base = speed("avg_streamrun"), speed("avg_luajit")
  local r = ratio(sr, base)
  local lines = {
    line(fmt("running average (%s sensors, %s readings)", count(info.keys), count(info.records)),
      sr and ("streamrun " .. rate(sr, "rec/s")) or ("streamrun " .. (failed.avg_streamrun or "-")),
      base and ("LuaJIT script " .. rate(base, "rec/s")) or ("LuaJIT script " .. (failed.avg_luajit or "-")),
      xfmt(r), ">= 1.0x", yesno(r and r >= 1.0)),
  }
  local function cpu(n) local rr = res[n] return #rr > 0 and (med(rr, "user") + med(rr, "sys")) or nil end
  local notes = { verified }
  if cpu("avg_streamrun") and cpu("avg_luajit") then
    notes[#notes + 1] = fmt("average: CPU time (user+sys) streamrun %.2f s, LuaJIT %.2f s (%.2fx); max RSS %.1f MB and %.1f MB",
      cpu("avg_streamrun"), cpu("avg_luajit"), cpu("avg_luajit") / cpu("avg_streamrun"),
      med(res.avg_streamrun, "maxrss_kb") / 1024, med(res.avg_luajit, "maxrss_kb") / 1024)
  end
  return lines, { input = { path = path, keys = info.keys, records = info.records }, streamrun_records_s = sr,
                  luajit_records_s = base, ratio = r, verified = ok, check = verified, runs = res }, notes
end

-- -- latency --

local function read_histogram(path)
  local s = lib.read(path)
  if not s then return nil end
  local n, max_ns = s:match("^lines (%d+) max_ns (%d+)")
  local rows = {}
  for sec, b, c in s:gmatch("\n(%d+) (%d+) (%d+)") do
    rows[#rows + 1] = { tonumber(sec), tonumber(b), tonumber(c) }
  end
  return { lines = tonumber(n), max_ns = tonumber(max_ns), rows = rows }
end

-- The p-quantile (0..1) in ms of the lines sent in seconds [from, to): the
-- upper edge of its 100 us bucket (the last bucket, over 2 s, gives max).
local function quantile(h, p, from, to)
  local counts, total = {}, 0
  for _, r in ipairs(h.rows) do
    if r[1] >= from and r[1] < to then
      counts[r[2]] = (counts[r[2]] or 0) + r[3]
      total = total + r[3]
    end
  end
  if total == 0 then return nil end
  local buckets = {}
  for b in pairs(counts) do buckets[#buckets + 1] = b end
  table.sort(buckets)
  local want, seen = math.ceil(p * total), 0
  for _, b in ipairs(buckets) do
    seen = seen + counts[b]
    if seen >= want then
      if b >= 20000 then return h.max_ns / 1e6 end
      return (b + 1) * 0.1
    end
  end
end

-- 100k lines/s through listen_text into a per-batch output for D seconds.
-- Three cases, run in turn (a slow patch of the machine hits each alike):
-- the plain job (no keyed stage: one thread whatever --workers, so it runs
-- with --workers 1), and the keyed job (every line through a map and a
-- reduce_by_key, split among workers) with --workers 1 and --workers 2.
-- SPEC section 15: the keyed job's p99 with 2 workers no worse than with 1
-- (within LATENCY_NOISE_MS, about the run-to-run spread of a p99 here).
local LATENCY_CASES = {
  { name = "plain", workers = 1, keyed = false },
  { name = "keyed1", workers = 1, keyed = true },
  { name = "keyed2", workers = 2, keyed = true },
}
local LATENCY_NOISE_MS = 2

local function latency_run(c, rep, D, RATE)
  local net = require "helpers.net"
  local port = net.free_port()
  local res_file, tf = TMP .. "/latency.hist", TMP .. "/latency_job.time"
  os.remove(res_file)
  os.remove(tf)
  local cmd = fmt("%s%s run spec/bench/latency_job.lua --quiet --workers %d --set keyed=%d --set port=%d --set out=%s "
    .. "--set seconds=%d --duration %ds > %s/latency_job.out 2> %s/latency_job.err & "
    .. "luajit spec/bench/latency_sender.lua %d %d %d > %s/latency_sender.out 2> %s/latency_sender.err; wait",
    lib.timed(tf), STREAMRUN, c.workers, c.keyed and 1 or 0, port, res_file, D + 10, D + 3, TMP, TMP, port, RATE, D,
    TMP, TMP)
  lib.sh(cmd)
  local sender = first_line(TMP .. "/latency_sender.out")
  local sent = tonumber(sender:match("^sent (%d+)"))
  local lag = tonumber(sender:match("max_lag_ms ([%d%.]+)"))
  local h = read_histogram(res_file)
  local job = lib.read_timing(tf)
  if not (h and sent) then
    local failure = fmt("failed: %s%s", first_line(TMP .. "/latency_sender.err"), first_line(TMP .. "/latency_job.err"))
    log("latency %s run %d/%d: %s", c.name, rep, CFG.runs, failure)
    return nil, failure
  end
  local W = CFG.latency_window_s
  local r = { sent = sent, received = h.lines, sender_max_lag_ms = lag, max_ms = h.max_ns / 1e6,
              p50 = quantile(h, 0.5, 0, math.huge), p99 = quantile(h, 0.99, 0, math.huge),
              p99_first = quantile(h, 0.99, 0, W), p99_last = quantile(h, 0.99, D - W, D),
              job_cpu_s = job and (job.user + job.sys), job_maxrss_kb = job and job.maxrss_kb }
  log("latency %s (--workers %d) run %d/%d: %d sent, %d received, p50 %.1f ms, p99 %.1f ms (first %d s %.1f, "
    .. "last %d s %.1f), max %.1f ms, sender lag max %.1f ms, job CPU %.1f s", c.name, c.workers, rep, CFG.runs, sent,
    h.lines, r.p50 or -1, r.p99 or -1, W, r.p99_first or -1, W, r.p99_last or -1, r.max_ms, lag or -1,
    r.job_cpu_s or -1)
  return r
end

local function bench_latency()
  local D, W, RATE = CFG.latency_s, CFG.latency_window_s, CFG.latency_rate
  local runs, failure = {}, {}
  for _, c in ipairs(LATENCY_CASES) do runs[c.name] = {} end
  for rep = 1, CFG.runs do
    for _, c in ipairs(LATENCY_CASES) do
      if not failure[c.name] then
        local r, why = latency_run(c, rep, D, RATE)
        if r then table.insert(runs[c.name], r) else failure[c.name] = why end
      end
    end
  end
  local lines, notes = {}, {}
  local json = { rate = RATE, seconds = D, window_s = W, noise_ms = LATENCY_NOISE_MS }
  for _, c in ipairs(LATENCY_CASES) do
    local rs = runs[c.name]
    local label = c.keyed and fmt("latency, keyed (%s lines/s, %d s) --workers %d", count(RATE), D, c.workers)
      or fmt("latency (%s lines/s, %d s)", count(RATE), D)
    if #rs == 0 then
      lines[#lines + 1] = line(label, failure[c.name] or "failed", "", "-", "p99 <= 30 ms", "-")
      json[c.name] = { failure = failure[c.name] }
    else
      local function m(f) return med(rs, f) end
      local p50, p99, first, last = m("p50"), m("p99"), m("p99_first"), m("p99_last")
      local growth_ok = first and last and last <= 1.5 * first + 2
      local lost = 0
      for _, r in ipairs(rs) do lost = lost + (r.sent - r.received) end
      lines[#lines + 1] = line(label, fmt("p50 %.1f ms, p99 %.1f ms", p50, p99), "-", "-", "p99 <= 30 ms", yesno(p99 <= 30))
      lines[#lines + 1] = line("", fmt("p99 first %d s %.1f ms, last %d s %.1f ms", W, first or -1, W, last or -1), "-", "-",
        "no growth (last <= 1.5x first + 2 ms)", yesno(growth_ok))
      notes[#notes + 1] = fmt("latency %s: every line sent was received (%s) in every run; send time = the time the line "
        .. "was due (the sender's worst lag behind schedule: %.1f ms); batch = \"10ms\"; job CPU %.0f%% of a core, max RSS "
        .. "%.1f MB", c.keyed and fmt("keyed --workers %d", c.workers) or "(plain)",
        lost == 0 and "yes" or ("NO: " .. lost .. " lost"), m("sender_max_lag_ms") or -1,
        (m("job_cpu_s") or 0) / (D + 3) * 100, (m("job_maxrss_kb") or 0) / 1024)
      json[c.name] = { p50_ms = p50, p99_ms = p99, p99_first_ms = first, p99_last_ms = last, lost = lost, runs = rs }
    end
  end
  local one, two = json.keyed1.p99_ms, json.keyed2.p99_ms
  lines[#lines + 1] = line("latency, keyed: p99 --workers 2 vs 1",
    two and fmt("--workers 2 p99 %.1f ms", two) or "-", one and fmt("--workers 1 p99 %.1f ms", one) or "-",
    (one and two) and fmt("%+.1f ms", two - one) or "-",
    fmt("2 workers <= 1 worker + %d ms (noise)", LATENCY_NOISE_MS),
    (one and two) and yesno(two <= one + LATENCY_NOISE_MS) or "-")
  notes[#notes + 1] = "latency: the plain job has no keyed stage, so any --workers runs it on one thread; the keyed job "
    .. "sends every line through map -> reduce_by_key (each line its own key), a segment split among the workers, "
    .. "whose small batches run on worker 0 alone when that is faster (README: Workers, small batches)"
  return lines, json, notes
end

-- -- checkpoint --

-- Write and restore times of a checkpoint of 1M and 10M keys (quick: 100k
-- and 1M), and the batch stall: a running job pauses only while it forks
-- the writer (spec/bench/checkpoint_cost.lua); medians of CFG.runs.
local function bench_checkpoint()
  local sizes = opts.quick and { 1e5, 1e6 } or { 1e6, 1e7 }
  local runs = {}
  for _ = 1, CFG.runs do
    local p = io.popen(fmt("luajit spec/bench/checkpoint_cost.lua %d %d 2>&1", sizes[1], sizes[2]))
    local out = p:read("*a")
    p:close()
    for n, w, r, st, bytes in out:gmatch("RESULT (%d+) ([%d.]+) ([%d.]+) ([%d.]+) (%d+)") do
      n = tonumber(n)
      runs[n] = runs[n] or {}
      table.insert(runs[n], { write_ms = tonumber(w), restore_ms = tonumber(r), stall_ms = tonumber(st),
                              bytes = tonumber(bytes) })
    end
  end
  local lines, figures = {}, {}
  for i, n in ipairs(sizes) do
    local rs = runs[n] or {}
    if #rs == 0 then
      failures[#failures + 1] = fmt("checkpoint of %d keys: no result", n)
    else
      local w, r, st = med(rs, "write_ms"), med(rs, "restore_ms"), med(rs, "stall_ms")
      figures[tostring(n)] = { write_ms = w, restore_ms = r, stall_ms = st, bytes = rs[1].bytes }
      local label = i == 1 and "checkpoint" or ""
      lines[#lines + 1] = line(label, fmt("%s keys: stall %.1f ms", count(n), st), "-", "-",
        i == 1 and "stall <= 50 ms at 1M keys" or "-", i == 1 and yesno(st <= 50) or "-")
      lines[#lines + 1] = line("", fmt("%s keys: write %.0f ms, restore %.0f ms", count(n), w, r), "-", "-",
        i == 2 and "write/restore 10M keys <= 5 s" or "-",
        i == 2 and not opts.quick and yesno(w <= 5000 and r <= 5000) or "-")
    end
  end
  return lines, figures, {}
end

-- -- event time --

-- Tumbling 10 s windows counted per key over "<key> <epoch ms>" lines at
-- 1M records per second of event time, up to 2 s out of order, in event
-- time against the same job in processing time (1 s batches of 1M
-- records), both in this run.
local function bench_event()
  local records = opts.quick and 2e6 or 10e6
  local path = DATA .. ("/events-%dk-s%d.txt"):format(records / 1e3, SEED.events)
  local info, reused = gen.ensure("events", path, { records = records, keys = 10000, jitter = 2000, seed = SEED.events })
  log("event: %s %s, %d records, %d keys, up to %d ms out of order", reused and "reused" or "generated", path,
    info.records, info.keys, info.jitter)
  warm(path)
  local total = TMP .. "/event_total.txt"
  local function cmd(name, clock)
    local c = stats_check({ name = name, cmd = fmt("%s run spec/bench/event_job.lua --quiet --workers 1 --set path=%s --set clock=%s "
      .. "--set total=%s > /dev/null", STREAMRUN, q(path), clock, q(total)) }, info.records)
    if clock == "event" then
      -- Every record is in exactly one emitted window (the file's end
      -- closes the last ones).
      local check = c.after
      c.after = function(r)
        local wrong = check(r)
        if wrong then return wrong end
        local sum = tonumber(first_line(total))
        if sum ~= info.records then return fmt("windows count %s records of %d", tostring(sum), info.records) end
      end
    end
    local before = c.before
    c.before = function(rep) before(rep); os.remove(total) end
    return c
  end
  local res, failed = measure("event", { cmd("event_time", "event"), cmd("processing_time", "processing") }, CFG.runs)
  local E, P = res.event_time, res.processing_time
  local ev = #E > 0 and info.records / med(E, "wall") or nil
  local pt = #P > 0 and info.records / med(P, "wall") or nil
  local function cpu(r) return #r > 0 and info.records / (med(r, "user") + med(r, "sys")) or nil end
  local r = ratio(ev, pt)
  local lines = {
    line(fmt("event-time windows (%s rec, 1M rec/s of event time, 10 s tumbling, 2 s out of order)", count(records)),
      ev and ("event time " .. rate(ev, "rec/s")) or ("event time " .. (failed.event_time or "-")),
      pt and ("processing time " .. rate(pt, "rec/s")) or ("processing time " .. (failed.processing_time or "-")),
      xfmt(r), ">= 0.8x", yesno(r and r >= 0.8)),
  }
  local notes = {}
  if cpu(E) and cpu(P) then
    notes[#notes + 1] = fmt("event: by CPU time (user+sys) event time %s rec/s, processing time %s rec/s: %.2fx",
      rate(cpu(E)), rate(cpu(P)), ratio(cpu(E), cpu(P)))
  end
  notes[#notes + 1] = "event: both jobs read the file fast-forward in 1 s batches of 1M records and count per key with "
    .. "sr.add; the event-time job also reads each line's time (its event_time function) and windows by it"
  return lines, { input = { path = path, records = info.records, keys = info.keys, jitter_ms = info.jitter },
                  event_records_s = ev, processing_records_s = pt, ratio = r, runs = res }, notes
end

local BENCHMARKS = {
  { name = "wordcount", run = bench_wordcount },
  { name = "forms", run = bench_forms },
  { name = "workers", run = bench_workers },
  { name = "json", run = bench_json },
  { name = "state", run = bench_state },
  { name = "average", run = bench_average },
  { name = "latency", run = bench_latency },
  { name = "checkpoint", run = bench_checkpoint },
  { name = "event", run = bench_event },
  { name = "kafka", run = function()
      return require("kafka_bench").run({ streamrun = STREAMRUN, tmp = TMP, records = opts.quick and 2e5 or 1e6 },
        line, rate)
    end },
}

-- -- Main --

local function machine()
  local cpu = "?"
  for l in io.lines("/proc/cpuinfo") do
    local m = l:match("^model name%s*:%s*(.-)%s*$")
    if m then cpu = m break end
  end
  local dirty = lib.capture("git status --porcelain -- runtime lua jobs | head -1")
  return {
    date = os.date("!%Y-%m-%d %H:%M UTC"),
    nproc = tonumber(lib.capture("nproc")),
    cpu = cpu,
    loadavg = (lib.read("/proc/loadavg") or ""):match("^(%S+)"),
    commit = lib.capture("git rev-parse --short HEAD"),
    uncommitted = dirty ~= nil and dirty ~= "",
    streamrun = lib.capture(STREAMRUN .. " --version"),
    luajit = lib.capture("luajit -v"),
    mawk = lib.capture("mawk -W version 2>&1"),
    accounting = lib.accounting,
  }
end

local function print_table(header, rows)
  local w = {}
  for i, c in ipairs(header) do w[i] = #c end
  for _, r in ipairs(rows) do
    for i, c in ipairs(r) do w[i] = math.max(w[i], #c) end
  end
  local function out(r)
    local cells = {}
    for i, c in ipairs(r) do cells[i] = c .. (" "):rep(w[i] - #c) end
    print("| " .. table.concat(cells, " | ") .. " |")
  end
  out(header)
  local sep = {}
  for i = 1, #w do sep[i] = ("-"):rep(w[i]) end
  print("|-" .. table.concat(sep, "-|-") .. "-|")
  for _, r in ipairs(rows) do out(r) end
end

local function main()
  if not lib.exists(STREAMRUN) then
    io.stderr:write("bench: build/streamrun is missing; run `make bench` (it builds first)\n")
    os.exit(1)
  end
  lib.sh("mkdir -p " .. DATA .. " " .. TMP)
  local t0 = lib.now()
  local mach = machine()
  log("%s run, %d run(s) per figure, on %s cores (%s), load average %s", CFG.mode, CFG.runs,
    tostring(mach.nproc), mach.cpu, tostring(mach.loadavg))
  local only = {}
  if opts.only then for n in opts.only:gmatch("[^,]+") do only[n] = true end end
  local rows, results, notes = {}, {}, {}
  for _, b in ipairs(BENCHMARKS) do
    if not opts.only or only[b.name] then
      local tb = lib.now()
      local ok, lines, data, bnotes = pcall(b.run)
      if not ok then
        log("%s: harness error: %s", b.name, tostring(lines))
        lines, data, bnotes = { line(b.name, "harness error: " .. tostring(lines):sub(1, 80), "", "", "", "") },
                              { error = tostring(lines) }, {}
      end
      data.seconds = lib.now() - tb
      for _, l in ipairs(lines) do rows[#rows + 1] = l end
      for _, n in ipairs(bnotes or {}) do notes[#notes + 1] = n end
      results[b.name] = data
    end
  end
  local total = lib.now() - t0
  mach.loadavg_end = (lib.read("/proc/loadavg") or ""):match("^(%S+)")

  print()
  print(fmt("streamrun benchmarks, %s: %s", CFG.mode,
    CFG.runs == 1 and "1 run per figure (not a median)" or fmt("median of %d runs per figure", CFG.runs)))
  print(fmt("%s; %s cores (nproc), %s; load average %s at start, %s at end; streamrun %s at %s%s; %s; %s",
    mach.date, tostring(mach.nproc), mach.cpu, tostring(mach.loadavg), tostring(mach.loadavg_end),
    tostring(mach.streamrun):gsub("^streamrun ", ""), tostring(mach.commit),
    mach.uncommitted and " + uncommitted changes" or "", tostring(mach.luajit):match("^%S+ %S+") or "luajit ?",
    mach.mawk and (mach.mawk:match("^%S+ %S+") or mach.mawk) or "no mawk"))
  print()
  print_table({ "benchmark", "figure", "baseline(s)", "ratio", "target", "met?" }, rows)
  print()
  for _, n in ipairs(notes) do print("- " .. n) end
  for _, n in ipairs(failures) do print("- problem: " .. n) end
  print(fmt("- times: wall clock (monotonic) around each process; CPU and max RSS from %s; took %.0f s",
    lib.accounting, total))

  local f = io.open(opts.out, "w")
  if f then
    cjson.encode_sparse_array(true)
    f:write(cjson.encode({ mode = CFG.mode, runs_per_figure = CFG.runs, machine = mach, seconds = total,
                           config = CFG, results = results, notes = notes, failures = failures,
                           table = rows }), "\n")
    f:close()
    print("- written to " .. opts.out)
  end
end

main()
