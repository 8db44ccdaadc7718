-- to_json_lines writes a batch with one call (streamrun.json's
-- encode_lines): the same text as format.json_line element by element, and
-- each element that cannot be JSON reported with json_line's reason and
-- left out, wherever it is in the batch.
local sr = require "streamrun"
local batch = require "streamrun.batch"
local dsl = require "streamrun.dsl"
local format = require "streamrun.format"
local outputs = require "streamrun.outputs"

-- What to_json_lines("-") writes for the batch, and what it reports.
local function written(b)
  local text, failed = {}, {}
  local out = { write = function(_, s) text[#text + 1] = s return true end, flush = function() return true end }
  local job = sr.job { name = "j", batch = "1s" }
  local node = dsl.node_of(job:queue({}):to_json_lines("-"))
  local write = outputs.make(node, { stdout = out }, {
    report = function(_, msg, a, b2) failed[#failed + 1] = { msg, a, b2 } end,
  })
  assert.is_true(write(b, 1000))
  return table.concat(text), failed
end

-- The same, element by element with format.json_line.
local function expected(b)
  local lines, failed = {}, {}
  for i = 1, b.n do
    local line, err = format.json_line(b.a[i], b.b[i])
    if line then lines[#lines + 1] = line .. "\n" else failed[#failed + 1] = { err, b.a[i], b.b[i] } end
  end
  return table.concat(lines), failed
end

local function check(b)
  local text, failed = written(b)
  local want, want_failed = expected(b)
  assert.equal(want, text)
  assert.same(want_failed, failed)
  return text, failed
end

describe("to_json_lines' batch writing", function()
  it("writes numbers as json_line does: integers, -0, 2^53, fractions, NaN", function()
    local values = { 0, -0.0, 1, -1, 42, 2 ^ 53 - 1, 2 ^ 53, -(2 ^ 53), 2 ^ 53 + 2, 2 ^ 63, 1e15, 1e16, 1e300,
      0.1, -2.5, 1 / 3, 123456.789, 1e-7, 0 / 0, 1 / 0, -1 / 0, { 1, -0.0, 2 ^ 60 } }
    math.randomseed(3)
    for _ = 1, 2000 do
      local x = math.random(-1e6, 1e6) * 10 ^ math.random(-5, 12)
      values[#values + 1] = x
      values[#values + 1] = math.floor(x)
    end
    local text = check(batch.of_values(values))
    -- And as printf writes them: integers below 2^53 as %.0f, others as %.14g.
    local i = 0
    for line in text:gmatch("[^\n]+") do
      i = i + 1
      local x = values[i]
      if type(x) == "number" then
        local want = (x ~= x or x == 1 / 0 or x == -1 / 0) and "null"
          or (x == math.floor(x) and math.abs(x) < 2 ^ 53) and ("%.0f"):format(x) or ("%.14g"):format(x)
        assert.equal(want, line)
      end
    end
    assert.equal(#values, i)
  end)

  it("writes pairs and single elements, and leaves out what cannot be JSON, wherever it is", function()
    local pairs_list = {
      { "k", 1 }, { 1, { a = "x" } }, { print, 1 }, { "ok", print }, { { deep = { true } }, "v" },
      { "last", coroutine.create(print) },
    }
    local b = batch.from_elements(pairs_list, true)
    local _, failed = check(b)
    assert.equal(3, #failed)
    assert.equal("cannot write function as JSON", failed[1][1])
    local singles = { print, "a", print, print, { 1, 2 }, print }
    local _, failed2 = check(batch.of_values(singles))
    assert.equal(4, #failed2)
    local text = check(batch.of_values({ print }))
    assert.equal("", text)
  end)

  it("writes a batch of records as json_line does, element for element", function()
    math.randomseed(9)
    local values = {}
    for i = 1, 3000 do
      values[i] = { user = "u" .. math.random(1, 100), amount = math.random() * 1000, n = i, tags = { "a", "b\n" },
                    ok = i % 2 == 0 }
    end
    check(batch.of_values(values))
  end)
end)
