-- listen_text: a TCP server in the job; several clients at once, each
-- client's lines whole, never mixed with another's.
local proc = require "helpers.proc"
local net = require "helpers.net"
local e2e = require "helpers.e2e"

-- Starts listen_print on a free port. Returns the process, the port and a
-- first client connection (made as soon as the job listens). The port is
-- picked by binding port 0 and closing it, so another process may take it
-- before the job does: then it tries once more with another port.
local function start_listener()
  local last
  for _ = 1, 2 do
    local port = net.free_port()
    local p = e2e.start("listen_print", { port = port })
    local conn = proc.wait_for(function()
      local c = net.try_connect(port)
      if c then return c end
      if p:exited() then return "exited" end
    end, 5, function() return "the job to listen on port " .. port .. "\n" .. p:describe() end)
    if conn ~= "exited" then return p, port, conn end
    p:wait(5)
    last = p:describe()
    if not p.stderr:find("in use", 1, true) then break end
  end
  error("the job could not listen:\n" .. tostring(last), 2)
end

-- A text cut in pieces of the given sizes, round robin.
local function pieces(text, sizes)
  local out, i, k = {}, 1, 1
  while i <= #text do
    local n = sizes[k]
    out[#out + 1] = text:sub(i, i + n - 1)
    i, k = i + n, k % #sizes + 1
  end
  return out
end

describe("e2e listen_text", function()
  after_each(function()
    proc.cleanup()
    net.cleanup()
  end)

  it("takes lines from two clients writing at once, none lost, none mixed", function()
    local p, port, a = start_listener()
    local b = net.connect(port)

    -- Partial lines on both connections across batch boundaries.
    a:send("alpha-")
    b:send("beta-")
    e2e.wait_batches(p, 2)
    a:send("one\nalpha-")
    b:send("one\nbeta-")
    e2e.wait_batches(p, 2)
    a:send("two\n")
    b:send("two\n")

    -- Then many lines, the two streams cut in small pieces and interleaved.
    local want = { "alpha-one", "alpha-two", "beta-one", "beta-two" }
    local text_a, text_b = {}, {}
    for i = 1, 300 do
      text_a[i] = ("a%03d-aaaaaaaaaaaa"):format(i)
      text_b[i] = ("b%03d-bbbbbbbbbbbbbbbbb"):format(i)
      want[#want + 1] = text_a[i]
      want[#want + 1] = text_b[i]
    end
    local pa = pieces(table.concat(text_a, "\n") .. "\n", { 5, 11, 3 })
    local pb = pieces(table.concat(text_b, "\n") .. "\n", { 7, 2, 13 })
    for i = 1, math.max(#pa, #pb) do
      if pa[i] then a:send(pa[i]) end
      if pb[i] then b:send(pb[i]) end
      if i == 200 then e2e.wait_batches(p, 1) end
    end
    e2e.wait_elements(p, want, 10, "only")

    p:kill("TERM")
    assert.equal(0, p:wait(5))
    local got = e2e.elements(p.stdout)
    local expected = {}
    for _, w in ipairs(want) do expected[w] = true end
    local strange = {}
    for _, e in ipairs(got) do
      if not expected[e] then strange[#strange + 1] = e end
    end
    assert.same({}, strange)
    for _, w in ipairs(want) do assert.equal(1, e2e.count(got, w), w) end
    assert.equal(#want, #got)
  end)

  it("dead-letters the partial line of a client that closes, and keeps the other client's lines whole", function()
    local p, port, a = start_listener()
    local b = net.connect(port)
    b:send("b-")
    a:send("first\ndangling")
    e2e.wait_elements(p, { "first" }, 5, "only")
    a:close()
    p:wait_stderr('"record":"dangling"')
    b:send("second\n")
    e2e.wait_elements(p, { "first", "b-second" }, 5, "only")
    p:kill("TERM")
    assert.equal(0, p:wait(5))
    assert.same({ "first", "b-second" }, e2e.elements(p.stdout))
    local dead
    for line in p.stderr:gmatch("[^\n]+") do
      if line:find('"dead_letter":true', 1, true) then dead = require("cjson").decode(line) end
    end
    assert.truthy(dead, "a dead letter on stderr")
    assert.equal("inbox", dead.source)
    assert.equal("dangling", dead.record)
    assert.equal(6, dead.offset) -- offsets count bytes within the connection
    assert.matches("closed", dead.reason)
  end)
end)
