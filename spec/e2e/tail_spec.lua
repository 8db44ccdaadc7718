-- tail: follows a file being appended to; a partial last line waits for
-- its newline.
local proc = require "helpers.proc"
local e2e = require "helpers.e2e"

describe("e2e tail", function()
  after_each(function() proc.cleanup() end)

  it("prints appended lines (not the old content), and a partial line only once it is completed", function()
    local dir = proc.tmpdir()
    local path = proc.write_file(dir .. "/log.txt", "old1\nold2\n")
    local p = e2e.start("tail_print", { path = path })
    e2e.wait_running(p)
    proc.append_file(path, "new1\nnew2\n")
    e2e.wait_elements(p, { "new1", "new2" })

    proc.append_file(path, "par")
    e2e.wait_batches(p, 5) -- well past the source's 250 ms poll and any file event
    assert.same({ "new1", "new2" }, e2e.elements(p.stdout), "a partial line is held")
    proc.append_file(path, "tial\nnew3\n")
    e2e.wait_elements(p, { "partial", "new3" })

    p:kill("TERM")
    assert.equal(0, p:wait(5))
    assert.same({ "new1", "new2", "partial", "new3" }, e2e.elements(p.stdout))
  end)

  it("with from_start reads the existing content first, then what is appended", function()
    local dir = proc.tmpdir()
    local path = proc.write_file(dir .. "/log.txt", "old1\nold2\n")
    local p = e2e.start("tail_print", { path = path, from_start = "true" })
    e2e.wait_elements(p, { "old1", "old2" })
    proc.append_file(path, "new1\n")
    e2e.wait_elements(p, { "new1" })
    p:kill("TERM")
    assert.equal(0, p:wait(5))
    assert.same({ "old1", "old2", "new1" }, e2e.elements(p.stdout))
  end)

  it("follows a rotation: the old file's rest, then the new file from its start", function()
    local dir = proc.tmpdir()
    local path = proc.write_file(dir .. "/log.txt", "")
    local p = e2e.start("tail_print", { path = path })
    e2e.wait_running(p)
    proc.append_file(path, "a1\n")
    e2e.wait_elements(p, { "a1" })
    proc.append_file(path, "a2\n")
    assert(os.rename(path, dir .. "/log.txt.1"))
    proc.write_file(path, "b1\n")
    e2e.wait_elements(p, { "a2", "b1" })
    p:kill("TERM")
    assert.equal(0, p:wait(5))
    assert.same({ "a1", "a2", "b1" }, e2e.elements(p.stdout))
  end)
end)
