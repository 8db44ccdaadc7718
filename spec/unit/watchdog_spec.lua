-- streamrun.watchdog: the poison file's records of batches a resumed job
-- never runs again are dropped.
local watchdog = require "streamrun.watchdog"

local function tmpdir()
  local dir = os.tmpname()
  os.remove(dir)
  assert(os.execute("mkdir -p '" .. dir .. "'"))
  return dir
end

local function read(path)
  local f = io.open(path, "r")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

describe("watchdog.prune", function()
  it("keeps the records of batches after the checkpoint, in order", function()
    local dir = tmpdir()
    local f = assert(io.open(dir .. "/poison", "w"))
    f:write("1000 2 5 0 map.1\n", "3000 1 7 0 upper > stuck\n", "2000 2 1 1 map.1\n", "3000 2 -1 0 counts\n")
    f:close()
    assert.is_true(watchdog.prune(dir, 2000))
    assert.equal("3000 1 7 0 upper > stuck\n3000 2 -1 0 counts\n", read(dir .. "/poison"))
    assert.is_nil(read(dir .. "/poison.tmp"))
    assert.is_true(watchdog.prune(dir, 2000)) -- nothing more to drop
    assert.equal("3000 1 7 0 upper > stuck\n3000 2 -1 0 counts\n", read(dir .. "/poison"))
    assert.is_true(watchdog.prune(dir, 3000))
    assert.is_nil(read(dir .. "/poison"))
    assert.is_true(watchdog.prune(dir, 3000)) -- no file
    os.remove(dir)
  end)
end)
