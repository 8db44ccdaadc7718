-- A crash loop for jobs whose sources resume at a position (text_dir,
-- tail): the job is started, killed with SIGKILL at a random moment while
-- input keeps coming, and started again, `kills` times; then it runs until
-- every line sent is in its JSON-lines output and is stopped with SIGTERM.
-- Time comes from explicit waits on conditions with timeouts.
local proc = require "helpers.proc"
local e2e = require "helpers.e2e"
local assert = require "luassert"

local M = {}

-- The number of lines of the file at path (0 if there is none).
function M.count_lines(path)
  local f = io.open(path, "rb")
  if not f then return 0 end
  local n = 0
  for _ in f:lines() do n = n + 1 end
  f:close()
  return n
end

-- A counter of the lines of the file at path that reads only what was
-- appended since its last call (from the start again when the file got
-- shorter: a restart cut it back): polling a file of millions of lines
-- must not take the job's CPU.
function M.line_counter(path)
  local size, lines = 0, 0
  return function()
    local f = io.open(path, "rb")
    if not f then
      size, lines = 0, 0
      return 0
    end
    local now = f:seek("end")
    if now < size then size, lines = 0, 0 end
    f:seek("set", size)
    while size < now do
      local chunk = f:read(math.min(1048576, now - size))
      if not chunk then break end
      size = size + #chunk
      local _, n = chunk:gsub("\n", "")
      lines = lines + n
    end
    f:close()
    return lines
  end
end

local function sleep_s(s)
  local t_end = proc.now() + s
  proc.wait_for(function() return proc.now() >= t_end end, s + 5, "a pause")
end

-- opts: job, params (out = the JSON-lines output), kills, feed() (sends
-- more input: called before each run and now and then during one; it adds
-- what it sends to opts.sent), sent (the lines sent). Returns the log of
-- the runs, one line each.
function M.run(opts)
  local params, sent = opts.params, opts.sent
  local log = {}
  for kill = 1, opts.kills do
    opts.feed()
    local p = e2e.start(opts.job, params, { "--quiet" })
    -- Now and then a kill while it restores and replays its log.
    local delay = math.random(8) == 1 and 0.05 * math.random() or 0.6 * math.random()
    local t_end = proc.now() + delay
    proc.wait_for(function()
      if proc.now() >= t_end then return true end
      if math.random(4) == 1 then opts.feed() end
      sleep_s(0.02)
      return false
    end, 10, "the moment to kill")
    p:kill("KILL")
    p:wait(10)
    assert(p.signal ~= nil, "the job was not killed:\n" .. p:describe())
    log[#log + 1] = ("run %d: killed after %.0f ms; %d lines out of %d sent"):format(kill, delay * 1000,
      M.count_lines(params.out), #sent)
  end
  -- The last run stops with SIGTERM once it has run a batch (a status
  -- line): a signal before the job has set up its handlers, while it reads
  -- its checkpoint and log, would end it as the default action does.
  local p = e2e.start(opts.job, params)
  e2e.wait_running(p, 30)
  -- The backlog of hundreds of kills can take long on a loaded machine:
  -- the wait fails when no line came out for 60 s.
  local count, last, moved = M.line_counter(params.out), -1, proc.now()
  proc.wait_for(function()
    if p:exited() then error("the job exited:\n" .. p:describe(), 0) end
    local n = count()
    if n ~= last then last, moved = n, proc.now() end
    if proc.now() - moved > 60 then
      error(("no line out for 60 s: %d of %d\n%s\n%s"):format(n, #sent, table.concat(log, "\n"), p:describe()), 0)
    end
    return n >= #sent
  end, 3600, function() return "every line out\n" .. table.concat(log, "\n") .. "\n" .. p:describe() end)
  p:kill("TERM")
  assert.equal(0, p:wait(10), p:describe())
  return log
end

-- Fails unless the JSON-lines file out holds each line of sent once and
-- nothing else.
function M.check_output(out, sent)
  local seen, want, dups, extra = {}, {}, {}, {}
  for _, l in ipairs(sent) do want[l] = true end
  for _, e in ipairs(e2e.read_jsonl(out)) do
    if seen[e] then dups[#dups + 1] = e end
    if not want[e] then extra[#extra + 1] = e end
    seen[e] = true
  end
  local missing = {}
  for _, l in ipairs(sent) do
    if not seen[l] then missing[#missing + 1] = l end
  end
  assert(#dups == 0, ("%d lines twice in the output, e.g. %s"):format(#dups, tostring(dups[1])))
  assert(#extra == 0, ("%d lines in the output never sent, e.g. %s"):format(#extra, tostring(extra[1])))
  assert(#missing == 0, ("%d of %d lines missing from the output, e.g. %s"):format(#missing, #sent, tostring(missing[1])))
end

return M
