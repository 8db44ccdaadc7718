-- save_as_text_files: one file per batch, written through a temp file.
local proc = require "helpers.proc"
local e2e = require "helpers.e2e"

-- The files <prefix>-<time>.txt in dir: a list of { name, time, content } by time.
local function text_files(dir)
  local files = {}
  for _, name in ipairs(proc.list_dir(dir)) do
    local t = name:match("^part%-(%d+)%.txt$")
    if t then files[#files + 1] = { name = name, time = tonumber(t), content = proc.read_file(dir .. "/" .. name) } end
  end
  table.sort(files, function(a, b) return a.time < b.time end)
  return files
end

describe("e2e save_as_text_files", function()
  after_each(function() proc.cleanup() end)

  it("writes prefix-<time_ms>.txt per batch with the elements as lines, and leaves no temp file", function()
    local dir = proc.tmpdir()
    local p = e2e.start("save_files", { prefix = dir .. "/part" })
    p:write("a\nbb\n")
    proc.wait_for(function()
      for _, f in ipairs(text_files(dir)) do
        if f.content == "(a,1)\n(bb,2)\n" then return true end
      end
    end, 5, function() return "a file with (a,1) and (bb,2); files: " .. table.concat(proc.list_dir(dir), " ") .. "\n" .. p:describe() end)
    p:write("ccc\n")
    p:close_stdin()
    assert.equal(0, p:wait(5))

    local names = proc.list_dir(dir)
    local files = text_files(dir)
    assert.equal(#names, #files, "only part-<time>.txt files: " .. table.concat(names, " "))
    local all = {}
    for i, f in ipairs(files) do
      assert.equal(0, f.time % 100)
      if i > 1 then assert.is_true(f.time > files[i - 1].time) end
      assert.truthy(f.content == "" or f.content:sub(-1) == "\n", f.name)
      all[#all + 1] = f.content
    end
    assert.equal("(a,1)\n(bb,2)\n(ccc,3)\n", table.concat(all))
    assert.is_true(#files >= 2, "a file for each batch that ran")
  end)
end)
