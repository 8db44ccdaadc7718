-- A chain starting with flat_map(sr.words) over a text file reads the words
-- in the C batch (no string per line): the same counts and dead letters as
-- when it reads the lines as Lua strings, and a failing call goes on with
-- the rest of its line's words. Thousands of distinct words, long ones and
-- multi-byte ones, give the same counts from the C batch as from Lua
-- strings.
local proc = require "helpers.proc"
local e2e = require "helpers.e2e"

describe("e2e flat_map(sr.words) over a text file", function()
  after_each(function() proc.cleanup() end)

  it("counts as the Lua path does, a failing call a dead letter with its record's offset", function()
    local dir = proc.tmpdir()
    local text = "a B\tc\n" .. "\n" .. "  x boom A\r\n" .. "b\vb\fb\n" .. "\0z c\n"
    local input = proc.write_file(dir .. "/words.txt", text)
    local outs = {}
    for _, fork in ipairs({ 0, 1 }) do
      local ckpt = ("%s/ckpt%d"):format(dir, fork)
      local code, stdout, stderr = e2e.run("words_file", { input = input, fork = fork }, { "--checkpoint", ckpt })
      assert.equal(0, code, stderr)
      local counts = {}
      for _, b in ipairs(e2e.batches(stdout)) do
        for _, el in ipairs(b.elements) do
          local k, v = el:match("^%((.*),(%d+)%)$")
          if k then counts[#counts + 1] = b.time .. " " .. k .. "=" .. v end
        end
      end
      local dead = e2e.read_jsonl(ckpt .. "/dead_letters.jsonl")
      assert.equal(1, #dead)
      assert.equal("lines", dead[1].source)
      assert.equal(7, dead[1].offset) -- the third line, after "a B\tc\n\n"
      assert.matches("boom word", dead[1].reason)
      assert.equal('"boom"', dead[1].record)
      outs[fork] = counts
    end
    assert.same(outs[1], outs[0])
    -- Batches of 3 lines; "A" after the failing "boom" is still counted.
    assert.same({ "100 a=2", "100 b=1", "100 c=1", "100 x=1", "200 b=3", "200 \0z=1", "200 c=1" }, outs[0])
  end)

  it("counts thousands of distinct words from the C batch as from Lua strings", function()
    local dir = proc.tmpdir()
    local x, lines = 7, {}
    local function rnd(m)
      x = (x * 1103515245 + 12345) % 2147483648
      return math.floor(x / 65536) % m
    end
    local forms = { "w%d", "W%d", "longer-word-number-%d-past-sixteen-bytes", "\195\169t\195\169%d", "%d", "x%dy" }
    for i = 1, 3000 do
      local ws = {}
      for j = 1, 8 do ws[j] = forms[rnd(#forms) + 1]:format(rnd(j % 2 == 0 and 20 or 12000)) end
      lines[i] = table.concat(ws, i % 3 == 0 and "\t" or " ")
    end
    local input = proc.write_file(dir .. "/many.txt", table.concat(lines, "\n") .. "\n")
    local outs = {}
    for _, fork in ipairs({ 0, 1 }) do
      local code, stdout, stderr = e2e.run("words_file", { input = input, fork = fork, max_batch = 100 })
      assert.equal(0, code, stderr)
      local counts = {}
      for _, b in ipairs(e2e.batches(stdout)) do
        assert.is_true(#b.elements < 1000) -- (none cut short)
        for _, el in ipairs(b.elements) do counts[#counts + 1] = b.time .. " " .. el end
      end
      outs[fork] = counts
    end
    assert.is_true(#outs[0] > 10000, #outs[0])
    assert.same(outs[1], outs[0])
  end)
end)
