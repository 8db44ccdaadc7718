-- Bounded resources of a running job (SPEC section 17): listen_text serves
-- at most max_connections producers at once; out of descriptors, it pauses
-- accepting and checkpoints are retried, and the job never ends for it;
-- a wildcard listen address is warned of.
local proc = require "helpers.proc"
local net = require "helpers.net"
local e2e = require "helpers.e2e"

-- Starts listen_print with params (and a free port) through `sh -c` with
-- the shell prefix given (a ulimit, say). Returns the process and the port.
local function start(params, args, prefix)
  local port = net.free_port()
  params.port = port
  local argv = { e2e.BIN, "run", e2e.job("listen_print") }
  for k, v in pairs(params) do argv[#argv + 1] = "--set"; argv[#argv + 1] = k .. "=" .. tostring(v) end
  for _, a in ipairs(args or {}) do argv[#argv + 1] = a end
  local quoted = {}
  for i, a in ipairs(argv) do quoted[i] = "'" .. a:gsub("'", "'\\''") .. "'" end
  local p = proc.spawn({ "sh", "-c", (prefix or "") .. "exec " .. table.concat(quoted, " ") })
  e2e.wait_running(p)
  return p, port
end

describe("e2e resource limits", function()
  after_each(function()
    proc.cleanup()
    net.cleanup()
  end)

  it("serves at most max_connections producers; the next waits until one closes", function()
    local p, port = start({ max_connections = 2 })
    local a, b = net.connect(port), net.connect(port)
    a:send("a1\n")
    b:send("b1\n")
    e2e.wait_elements(p, { "a1", "b1" })
    local c = net.connect(port) -- the kernel's backlog takes it; the job does not
    c:send("c1\n")
    e2e.wait_batches(p, 5)
    assert.equal(0, e2e.count(e2e.elements(p.stdout), "c1"), p:describe())
    assert.truthy(p.stderr:find("2 connections, its max_connections: new ones wait until one closes", 1, true),
      p:describe())
    a:close()
    e2e.wait_elements(p, { "c1" })
    c:send("c2\n")
    b:send("b2\n")
    e2e.wait_elements(p, { "c2", "b2" })
    p:kill("TERM")
    assert.equal(0, p:wait(10), p:describe())
  end)

  it("keeps descriptors for its own files: more producers than fit wait, checkpoints go on", function()
    local dir = proc.tmpdir()
    -- 64 descriptors: 32 are kept for the job, so at most 32 producers at once.
    local p, port = start({}, { "--checkpoint", dir .. "/ck" }, "ulimit -n 64; ")
    assert.truthy(p.stderr:find("max_connections 1024 is more than the descriptor limit allows (64, ulimit -n): "
      .. "at most 32 at once", 1, true), p:describe())
    local conns, want = {}, {}
    for i = 1, 60 do
      conns[i] = net.connect(port)
      conns[i]:send(("p%d\n"):format(i))
      want[i] = ("p%d"):format(i)
    end
    e2e.wait_elements(p, { "p1" })
    -- Checkpoints fall due every 10 batches and are written while 60 producers wait.
    local ck = dir .. "/ck"
    local function checkpoints() return #(proc.list_dir(ck)) end
    local before = checkpoints()
    proc.wait_for(function() return checkpoints() > before or p.stderr:find("failed") end, 10, "a checkpoint")
    assert.falsy(p.stderr:find("checkpoint after batch %d+ failed"), p:describe())
    for i = 1, 60 do conns[i]:close() end
    e2e.wait_elements(p, want, 20)
    p:kill("TERM")
    assert.equal(0, p:wait(10), p:describe())
    assert.falsy(p.stderr:find("failed", 1, true), p:describe())
  end)

  it("warns when listening on every interface", function()
    local p = start({ host = "0.0.0.0" })
    assert.truthy(p.stderr:find("warning: listening on every interface (0.0.0.0:", 1, true), p:describe())
    p:kill("TERM")
    assert.equal(0, p:wait(10), p:describe())
    local q = start({})
    assert.falsy(q.stderr:find("every interface", 1, true), q:describe())
    q:kill("TERM")
    assert.equal(0, q:wait(10), q:describe())
  end)
end)
