-- streamrun.watchdog: the poison file's records of batches a resumed job
-- never runs again are dropped.
local watchdog = require "streamrun.watchdog"
local proc = require "helpers.proc"

describe("watchdog.prune", function()
  after_each(function() proc.cleanup() end)

  it("keeps the records of batches after the checkpoint, in order", function()
    local dir = proc.tmpdir()
    local path = dir .. "/poison"
    proc.write_file(path, "1000 2 5 0 map.1\n3000 1 7 0 upper > stuck\n2000 2 1 1 map.1\n3000 2 -1 0 counts\n")
    local later = "3000 1 7 0 upper > stuck\n3000 2 -1 0 counts\n"
    assert.is_true(watchdog.prune(dir, 2000))
    assert.equal(later, proc.read_file(path))
    assert.is_false(proc.exists(path .. ".tmp"))
    assert.is_true(watchdog.prune(dir, 2000)) -- nothing more to drop
    assert.equal(later, proc.read_file(path))
    assert.is_true(watchdog.prune(dir, 3000))
    assert.is_false(proc.exists(path))
    assert.is_true(watchdog.prune(dir, 3000)) -- no file
  end)
end)
