-- A write-ahead log that cannot be written (a real ENOSPC: the log's next
-- segment is /dev/full) holds the sources: the failure is reported, nothing
-- more is read until the log takes writes again and a checkpoint covers
-- what was read, and then every line is counted exactly once.
local proc = require "helpers.proc"
local net = require "helpers.net"
local e2e = require "helpers.e2e"

-- The highest segment number in the log directory (0: none yet).
local function last_segment(dir)
  local n = 0
  for _, name in ipairs(proc.list_dir(dir)) do
    local seq = name:match("^(%d+)%.wal$")
    if seq then n = math.max(n, tonumber(seq)) end
  end
  return n
end

local function lines(from, to)
  local t = {}
  for i = from, to do t[#t + 1] = ("k%d %d"):format(i % 5, i) end
  return table.concat(t, "\n") .. "\n"
end

local function events_with_line(path)
  local n = 0
  for _, e in ipairs(e2e.read_jsonl(path)) do
    if e.key == "line" then n = n + 1 end
  end
  return n
end

describe("e2e write-ahead log on a full disk", function()
  after_each(function()
    net.cleanup()
    proc.cleanup()
  end)

  it("holds the sources until a checkpoint covers what was read, and loses nothing", function()
    local dir = proc.tmpdir()
    local params = { port = net.free_port(), out = dir, ckpt = dir .. "/ckpt", every = "300ms", timeout = "1h" }
    local p = e2e.start("crash_listen", params, { "--quiet" })
    local conn = net.connect(params.port, 10)
    conn:send(lines(1, 50))
    proc.wait_for(function() return events_with_line(dir .. "/events.jsonl") >= 50 end, 10, "the first 50 lines")
    -- The segment the next checkpoint starts goes to /dev/full.
    local wal = params.ckpt .. "/wal"
    proc.wait_for(function()
      local next_path = ("%s/%020d.wal"):format(wal, last_segment(wal) + 1)
      return os.execute(("ln -s /dev/full %s 2>/dev/null"):format(proc.shell_quote(next_path))) == 0
    end, 10, "a symbolic link for the next segment")
    p:wait_stderr("write-ahead log: new segment: No space left on device", 10)
    p:wait_stderr("sources wait until a checkpoint covers what was read", 10)
    conn:send(lines(51, 100))
    p:wait_stderr("sources go on", 10)
    proc.wait_for(function() return events_with_line(dir .. "/events.jsonl") >= 100 end, 10, "all 100 lines")
    conn:close()
    p:kill("TERM")
    assert.equal(0, p:wait(10), p:describe())
    assert.same({ k0 = 20, k1 = 20, k2 = 20, k3 = 20, k4 = 20 }, e2e.inspect_keys(params.ckpt, "counts"))
    assert.equal(100, events_with_line(dir .. "/events.jsonl"))
  end)
end)
