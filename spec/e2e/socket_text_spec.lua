-- socket_text: a TCP client of a test server on 127.0.0.1; a connection
-- closed mid-line leaves a dead letter; the source reconnects.
local proc = require "helpers.proc"
local net = require "helpers.net"
local e2e = require "helpers.e2e"

describe("e2e socket_text", function()
  after_each(function()
    proc.cleanup()
    net.cleanup()
  end)

  it("prints the server's lines, dead-letters a line cut by a close, and reconnects when the server is back", function()
    local dir = proc.tmpdir()
    local server = assert(net.server(0))
    local port = server.port
    local p = e2e.start("socket_print", { port = port }, { "--checkpoint", dir })
    local conn = server:accept(5)
    conn:send("one\ntwo\n")
    e2e.wait_elements(p, { "one", "two" })

    -- The server goes away in the middle of a line.
    conn:send("partial")
    conn:close()
    server:close()
    local dead_file = dir .. "/dead_letters.jsonl"
    local dead = proc.wait_for(function()
      p:pump()
      if e2e.count(e2e.elements(p.stdout:match("^(.*\n\n)") or ""), "partial") > 0 then
        error("the cut line was printed as a whole one\n" .. p:describe(), 0)
      end
      local d = e2e.read_jsonl(dead_file)
      return #d > 0 and d
    end, 5, function() return "a dead letter in " .. dead_file .. "\n" .. p:describe() end)
    assert.equal(1, #dead)
    assert.equal("feed", dead[1].source)
    assert.equal("partial", dead[1].record)
    assert.equal(8, dead[1].offset) -- offsets count the bytes of the stream: "one\ntwo\n"
    assert.matches("closed", dead[1].reason)

    -- Back on the same port: the source reconnects by itself.
    local server2 = assert(net.server(port))
    local conn2 = server2:accept(5)
    conn2:send("three\nfour\n")
    e2e.wait_elements(p, { "three", "four" })

    p:kill("TERM")
    assert.equal(0, p:wait(5))
    local elements = e2e.elements(p.stdout)
    assert.same({ "one", "two", "three", "four" }, elements)
    assert.equal(1, #e2e.read_jsonl(dead_file))
  end)
end)
