-- --workers: checked as the job option is; the built-in word count gives
-- the same output with 1 and 2 workers, the status line shows one busy
-- figure per worker, and the job says once what runs on one worker; a
-- keyed window gives the same totals with 1 and 2 workers, and so do
-- running totals of the built-in word count.
local proc = require "helpers.proc"
local e2e = require "helpers.e2e"

describe("e2e workers", function()
  after_each(function() proc.cleanup() end)

  it("refuses a bad --workers with exit 2", function()
    for _, bad in ipairs { "0", "-2", "many", "1.5" } do
      local code, _, stderr = e2e.run("stdin_print", {}, { "--workers", bad }, { input = "" })
      assert.equal(2, code, bad)
      assert.truthy(stderr:find("workers must be \"auto\" or an integer from 1 to 256", 1, true), stderr)
    end
  end)

  it("runs a job with nothing to split on one worker, and says so once", function()
    local code, stdout, stderr = e2e.run("stdin_print", {}, { "--workers", "2" }, { input = "a\nb\n" })
    assert.equal(0, code, stderr)
    assert.same({ "a", "b" }, e2e.elements(stdout))
    local _, said = stderr:gsub("workers: 2; nothing in this job runs on several workers %([^\n]*%), so it runs on 1 worker", "")
    assert.equal(1, said, stderr)
    local status = e2e.status_lines(stderr)
    assert.is_true(#status >= 1, stderr)
    for _, s in ipairs(status) do assert.equal(1, #s.workers_busy_ms) end
  end)

  it("counts words the same with 1 and 2 workers", function()
    local lines = {}
    for i = 1, 20000 do lines[i] = ("w%d x%d common"):format(i % 97, i % 13) end
    local input = table.concat(lines, "\n") .. "\n"
    local outs = {}
    for _, n in ipairs { "1", "2" } do
      local code, stdout, stderr = e2e.run("workers_wc", {}, { "--workers", n }, { input = input })
      assert.equal(0, code, stderr)
      -- Batches follow the wall clock: the totals over all of them compared.
      local totals = {}
      for _, b in ipairs(e2e.batches(stdout)) do
        for _, e in ipairs(b.elements) do
          local w, c = e:match("^%((.-),(%d+)%)$")
          totals[w] = (totals[w] or 0) + tonumber(c)
        end
      end
      outs[n] = totals
      local busy = stderr:match("workers busy ([%d./]+) ms")
      assert.truthy(busy, stderr)
      local _, slashes = busy:gsub("/", "")
      assert.equal(tonumber(n) - 1, slashes, stderr)
      local said = select(2, stderr:gsub("workers: 2; the built%-in word count runs on 2 workers", ""))
      assert.equal(n == "2" and 1 or 0, said, stderr)
    end
    assert.equal(20000, outs["1"].common)
    assert.same(outs["1"], outs["2"])
  end)

  it("keeps totals of the built-in word count on each owner, as on one worker", function()
    local dir = proc.tmpdir()
    local lines = {}
    for i = 1, 6000 do
      lines[i] = ("w%d x%d common longer-word-%d \195\169t\195\169%d"):format(i % 997, i % 13, i % 101, i % 7)
    end
    local input = proc.write_file(dir .. "/words.txt", table.concat(lines, "\n") .. "\n")
    local outs = {}
    for _, fork in ipairs { 0, 1 } do
      for _, n in ipairs { "1", "2", "3" } do
        local code, stdout, stderr = e2e.run("words_totals", { input = input, fork = fork }, { "--workers", n })
        assert.equal(0, code, stderr)
        local said = select(2, stderr:gsub("flat_map%.1 > count_by_value%.1 > totals run on " .. n .. " workers", ""))
        assert.equal(n == "1" and 0 or 1, said, stderr)
        outs[fork .. "/" .. n] = stdout
      end
    end
    -- (Batches of 500 lines: "common" runs up to 6000 in the twelfth.)
    local batches, common = e2e.batches(outs["0/1"]), {}
    for i = 1, 12 do
      for _, el in ipairs(batches[i].elements) do common[i] = common[i] or el:match("^%(common,(%d+)%)$") end
    end
    assert.equal("500", common[1])
    assert.equal("6000", common[12])
    -- (With fork=1 the second consumer prints its own empty batches.)
    for key, out in pairs(outs) do assert.equal(outs[key:sub(1, 1) .. "/1"], out, key) end
  end)

  it("cuts the same batches from two files with 1 and 2 workers", function()
    local dir = proc.tmpdir()
    local paths = {}
    for _, name in ipairs { "a", "b" } do
      local lines = {}
      for i = 1, 600000 do lines[i] = name .. i end
      paths[name] = dir .. "/" .. name .. ".txt"
      local f = assert(io.open(paths[name], "w"))
      f:write(table.concat(lines, "\n"), "\n")
      f:close()
    end
    local outs = {}
    for _, n in ipairs { "1", "2" } do
      local code, stdout, stderr = e2e.run("workers_two_files", paths, { "--workers", n, "--quiet" })
      assert.equal(0, code, stderr)
      outs[n] = e2e.batches(stdout)
    end
    -- Each batch holds 200000 lines of each file, whatever the workers.
    assert.equal("(a,200000)", outs["1"][1].elements[1])
    assert.same(outs["1"], outs["2"])
  end)

  it("runs a keyed window on 2 workers with the totals of 1, and says so", function()
    local lines = {}
    for i = 1, 20000 do lines[i] = ("w%d x%d common"):format(i % 97, i % 13) end
    local input = table.concat(lines, "\n") .. "\n"
    local outs = {}
    for _, n in ipairs { "1", "2" } do
      local code, stdout, stderr = e2e.run("workers_window", {}, { "--workers", n }, { input = input })
      assert.equal(0, code, stderr)
      local batches = e2e.batches(stdout)
      outs[n] = batches[#batches].elements
      local said = select(2, stderr:gsub("workers: 2; flat_map%.%d+ > map%.%d+ > counts run on 2 workers", ""))
      assert.equal(n == "2" and 1 or 0, said, stderr)
    end
    assert.equal(97 + 13 + 1, #outs["1"])
    assert.truthy(table.concat(outs["1"], " "):find("(common,20000)", 1, true))
    assert.same(outs["1"], outs["2"])
  end)
end)
