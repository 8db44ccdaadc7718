-- text_dir: files moved into a watched directory are read once each.
local proc = require "helpers.proc"
local e2e = require "helpers.e2e"

describe("e2e text_dir", function()
  after_each(function() proc.cleanup() end)

  it("reads each file moved into the directory exactly once, and skips files still being written", function()
    local dir = proc.tmpdir()
    local watched, staging = dir .. "/in", dir .. "/staging"
    proc.mkdir(watched)
    proc.mkdir(staging)
    proc.write_file(watched .. "/f0.txt", "zero\n") -- there before the job starts
    local p = e2e.start("dir_print", { dir = watched })
    e2e.wait_elements(p, { "zero" })

    proc.write_file(staging .. "/f1.txt", "one\ntwo\n")
    assert(os.rename(staging .. "/f1.txt", watched .. "/f1.txt"))
    e2e.wait_elements(p, { "one", "two" })

    -- A producer writing under a dot name, then renaming when done.
    proc.write_file(watched .. "/.f2.txt", "three\n")
    e2e.wait_batches(p, 4)
    assert.equal(0, e2e.count(e2e.elements(p.stdout), "three"), "a dot file is not read")
    proc.append_file(watched .. "/.f2.txt", "four\n")
    assert(os.rename(watched .. "/.f2.txt", watched .. "/f2.txt"))
    e2e.wait_elements(p, { "three", "four" })

    -- Several more scans (every 250 ms at least): nothing is read twice.
    e2e.wait_batches(p, 8)
    p:kill("TERM")
    assert.equal(0, p:wait(5))
    assert.same({ "zero", "one", "two", "three", "four" }, e2e.elements(p.stdout))
  end)
end)
