-- A chain starting with flat_map(sr.words) over a text file reads the words
-- in the C batch (no string per line): the same counts and dead letters as
-- when it reads the lines as Lua strings, and a failing call goes on with
-- the rest of its line's words.
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
end)
