-- helpers.e2e: running build/streamrun on the jobs of spec/e2e/jobs and
-- reading what it writes: pprint batches on stdout, status lines on stderr,
-- JSON-lines files (dead letters, --stats).
local cjson = require "cjson"
local proc = require "helpers.proc"

local M = {}

M.ROOT = proc.ROOT
M.BIN = os.getenv("STREAMRUN_BIN") or (proc.ROOT .. "/build/streamrun")
M.DASHES = ("-"):rep(43)

-- The path of spec/e2e/jobs/<name>.lua.
function M.job(name)
  return proc.ROOT .. "/spec/e2e/jobs/" .. name .. ".lua"
end

-- argv for `streamrun run <job> args...`; params become --set KEY=VALUE.
local function run_argv(name, params, args)
  local argv = { M.BIN, "run", M.job(name) }
  for k, v in pairs(params or {}) do
    argv[#argv + 1] = "--set"
    argv[#argv + 1] = k .. "=" .. tostring(v)
  end
  for _, a in ipairs(args or {}) do argv[#argv + 1] = a end
  return argv
end

-- For failure messages: the output without empty batches and their status
-- lines.
local function shorten(which, text)
  if which == "stdout" then
    local empty = M.DASHES .. "\nTime: %d+ ms\n" .. M.DASHES .. "\n\n"
    empty = empty:gsub("%-", "%%-")
    return (text:gsub(empty, ""))
  end
  return (text:gsub("streamrun: batch %d+ ms: 0 records[^\n]*\n", ""))
end

-- Starts `streamrun run` on the named job. Returns the Proc.
function M.start(name, params, args)
  local p = proc.spawn(run_argv(name, params, args))
  p.shorten = shorten
  return p
end

-- Runs `streamrun run` on the named job to its end. opts: input (to stdin),
-- timeout. Returns code, stdout, stderr, proc.
-- The base URL of a process started with --http 127.0.0.1:0, once its
-- log names the port (waits up to 10 s).
function M.http_base(p)
  local port
  p:wait_stderr(function(text)
    port = text:match("http: status page on http://127%.0%.0%.1:(%d+)/")
    return port
  end, 10)
  return "http://127.0.0.1:" .. port
end

function M.run(name, params, args, opts)
  return proc.run(run_argv(name, params, args), opts)
end

-- Runs the binary with any arguments. Returns code, stdout, stderr, proc.
function M.exec(args, opts)
  local argv = { M.BIN }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  return proc.run(argv, opts)
end

-- The pprint batches in a stdout text: a list of { time = ms, elements =
-- {...}, more = true if "..." ended it }. Raises on text that is not in
-- pprint format (dashes, "Time: <ms> ms", dashes, elements, a blank line).
-- A blank line is the end of a batch when the next header or the end of the
-- text follows it, else an empty element.
function M.batches(text)
  local lines = proc.lines(text)
  -- The time of the header at line i, or nil.
  local function header_at(i)
    if lines[i] ~= M.DASHES or lines[i + 2] ~= M.DASHES then return nil end
    return (lines[i + 1] or ""):match("^Time: (%d+) ms$")
  end
  local out, i = {}, 1
  while i <= #lines do
    local t = header_at(i)
    if not t then
      error(("line %d is not a pprint header: %q\n%s"):format(i, tostring(lines[i]), text), 2)
    end
    local b = { time = tonumber(t), elements = {} }
    i = i + 3
    while i <= #lines and not (lines[i] == "" and (i == #lines or header_at(i + 1))) do
      if lines[i] == "..." and (i + 1 > #lines or lines[i + 1] == "") then
        b.more = true
      else
        b.elements[#b.elements + 1] = lines[i]
      end
      i = i + 1
    end
    i = i + 1 -- the blank line closing the batch
    out[#out + 1] = b
  end
  return out
end

-- Every element printed, in order, across batches.
function M.elements(text)
  local all = {}
  for _, b in ipairs(M.batches(text)) do
    for _, e in ipairs(b.elements) do all[#all + 1] = e end
  end
  return all
end

-- How many complete pprint batches a stdout text holds.
function M.batch_count(text)
  local n = 0
  for _ in text:gmatch("\nTime: %d+ ms\n" .. ("%-"):rep(43) .. "\n") do n = n + 1 end
  return n
end

-- The per-batch status lines of a stderr text, parsed.
function M.status_lines(text)
  local out = {}
  for line in text:gmatch("[^\n]+") do
    local t, r, p, d, k, dl, busy = line:match(
      "^streamrun: batch (%d+) ms: (%d+) records, ([%d.]+) ms processing, (%d+) ms delay, (%d+) keys, (%d+) dead letters, workers busy ([%d./]+) ms$")
    if t then
      local workers_busy_ms = {}
      for ms in busy:gmatch("[%d.]+") do workers_busy_ms[#workers_busy_ms + 1] = tonumber(ms) end
      out[#out + 1] = {
        time_ms = tonumber(t), records = tonumber(r), processing_ms = tonumber(p),
        delay_ms = tonumber(d), keys = tonumber(k), dead_letters = tonumber(dl), workers_busy_ms = workers_busy_ms,
      }
    end
  end
  return out
end

-- The decoded lines of a JSON-lines file ({} if it does not exist).
function M.read_jsonl(path)
  local out = {}
  local text = proc.read_file(path)
  if not text then return out end
  for line in text:gmatch("[^\n]+") do out[#out + 1] = cjson.decode(line) end
  return out
end

-- `streamrun inspect PATH --keys STAGE` as a table key -> value (fails the
-- spec if inspect does).
function M.inspect_keys(path, stage)
  local code, out, err = M.exec({ "inspect", path, "--keys", stage }, { timeout = 30 })
  assert(code == 0, ("inspect %s --keys %s: exit %s\n%s"):format(path, stage, tostring(code), err))
  local t = {}
  for line in out:gmatch("[^\n]+") do
    local kv = cjson.decode(line)
    t[kv.key] = kv.value
  end
  return t
end

-- How many times v is in list.
function M.count(list, v)
  local n = 0
  for _, x in ipairs(list) do if x == v then n = n + 1 end end
  return n
end

-- The elements of the complete batches of a stdout text read so far.
local function elements_so_far(text)
  return M.elements(text:match("^(.*\n\n)") or "")
end

-- Waits until the job's stdout shows every element of want (each at least
-- once). Returns the elements printed so far.
-- With only, fails at once when an element not in want is printed.
function M.wait_elements(p, want, timeout_s, only)
  local missing = {}
  local wanted = {}
  for _, w in ipairs(want) do wanted[w] = true end
  p:wait_output("stdout", function(text)
    local got = {}
    for _, e in ipairs(elements_so_far(text)) do
      got[e] = true
      if only and not wanted[e] then error(("unexpected element %q printed\n%s"):format(e, p:describe()), 0) end
    end
    missing = {}
    for _, w in ipairs(want) do if not got[w] then missing[#missing + 1] = w end end
    return #missing == 0
  end, timeout_s or 5, function()
    local printed = elements_so_far(p.stdout)
    local shown = {}
    for i = math.max(1, #printed - 29), #printed do shown[#shown + 1] = ("%q"):format(printed[i]) end
    return ("elements on stdout; missing %d of %d: %s\nthe last %d of %d elements printed: %s"):format(
      #missing, #want, table.concat(missing, ", ", 1, math.min(#missing, 20)),
      #shown, #printed, table.concat(shown, ", "))
  end)
  return elements_so_far(p.stdout)
end

-- Waits until n more pprint batches than now have been printed: the job has
-- gone through n more batch boundaries.
function M.wait_batches(p, n, timeout_s)
  p:pump()
  local target = M.batch_count(p.stdout) + n
  p:wait_output("stdout", function(text) return M.batch_count(text) >= target end, timeout_s or 5,
    ("%d more batches on stdout"):format(n))
end

-- Waits until the job has run its first batch (its sources are open and its
-- signal handlers installed): a first status line on stderr.
function M.wait_running(p, timeout_s)
  p:wait_output("stderr", function(text) return text:find("streamrun: batch %d+ ms:") end, timeout_s or 5,
    "a first status line on stderr")
end

return M
