-- streamrun.guard: calls into user code and the one report of their
-- failures (dead letters with the stage, file:line, element and origin; a
-- fatal error with on_error = "fail"); loops resume after a failing item.
local batch = require "streamrun.batch"
local guard = require "streamrun.guard"

local NODE = { stage_name = "map.1", op = "map", where = "job.lua:7" }

local function collecting(on_error)
  local letters = {}
  local g = guard.new({
    on_error = on_error or "dead_letter",
    dead_letter = function(source, offset, reason, record)
      letters[#letters + 1] = { source = source, offset = offset, reason = reason, record = record }
    end,
  })
  return g, letters
end

describe("guard", function()
  it("reports a failing call with the stage, op, place, the error and the element", function()
    local g, letters = collecting()
    local ok = g.call(NODE, function(x) error("bad " .. x, 0) end, "a")
    assert.is_false(ok)
    assert.equal(1, #letters)
    assert.equal("map.1", letters[1].source)
    assert.equal(-1, letters[1].offset)
    assert.matches("^stage map.1 %(map at job.lua:7%): bad a", letters[1].reason)
    assert.equal('"a"', letters[1].record)
    assert.same({ true, 3, 4 }, { g.call(NODE, function(a, b) return a + 1, b + 1 end, 2, 3) })
  end)

  it("keeps only the user's frames of the traceback", function()
    local trimmed = guard.trim_traceback("job.lua:3: boom\nstack traceback:\n\tjob.lua:3: in function 'f'\n"
      .. "\t./lua/streamrun/ops.lua:10: in function 'run'\n\t[C]: in function 'xpcall'\n\tjob.lua:1: in main chunk")
    assert.equal("job.lua:3: boom\nstack traceback:\n\tjob.lua:3: in function 'f'", trimmed)
  end)

  it("names the record an element came from (batch.origin)", function()
    local g, letters = collecting()
    local input = batch.of_values({ "x", "y" }, 2)
    input.src, input.first = "in", 40
    g.report_at(NODE, "no", input, 2, "y")
    assert.equal("in", letters[1].source)
    assert.equal(41, letters[1].offset)
  end)

  it("says the key of a failing call about a key", function()
    local g, letters = collecting()
    assert.is_false(g.call_key(NODE, "k", { 1, 2 }, function() error("nope", 0) end))
    assert.matches('key "k": nope', letters[1].reason, 1, true)
    assert.equal('["k",[1,2]]', letters[1].record)
  end)

  it("raises the job's fatal error with on_error = fail", function()
    local g, letters = collecting("fail")
    local ok, err = pcall(g.call, NODE, function() error("stop", 0) end, 5)
    assert.is_false(ok)
    assert.matches("^stage map.1 %(map at job.lua:7%): stop\n", err.fatal)
    assert.matches("\n  element: 5$", err.fatal)
    assert.equal(0, #letters)
  end)

  it("runs each item once, resumes after a failing one, and lets a fatal error through", function()
    local calls, failed = {}, {}
    guard.each(5, function(i)
      calls[#calls + 1] = i
      if i == 2 or i == 4 then error("item " .. i, 0) end
    end, function(i, err) failed[#failed + 1] = { i, err:match("^[^\n]*") } end)
    assert.same({ 1, 2, 3, 4, 5 }, calls)
    assert.same({ { 2, "item 2" }, { 4, "item 4" } }, failed)
    local ok, err = pcall(guard.each, 3, function(i) if i == 2 then error({ fatal = "x" }) end end, function() end)
    assert.is_false(ok)
    assert.equal("x", err.fatal)
  end)

  it("resumes a loop that notes its item after the failing one", function()
    local sum, at, failed = 0, { i = 0 }, {}
    local values = { 1, 2, "x", 4 }
    guard.loop(function(i0)
      for i = i0, #values do
        at.i = i
        sum = sum + values[i]
      end
    end, at, function(i) failed[#failed + 1] = i end)
    assert.equal(7, sum)
    assert.same({ 3 }, failed)
  end)

  it("dead-letters a poisoned record and hands on the rest with their origins", function()
    local g, letters = collecting()
    local input = batch.of_values({ "a", "b", "c" }, 3)
    input.src, input.first = "in", 1
    local rest = g.skip_poisoned("map.1", input, { { rec = 2, stage = "map.1" } }, 100)
    assert.equal(2, rest.n)
    assert.same({ "a", "c" }, { rest.a[1], rest.a[2] })
    assert.same({ "in", 3 }, { batch.origin(rest, 2) })
    assert.equal(1, #letters)
    assert.same({ "in", 2, '"b"' }, { letters[1].source, letters[1].offset, letters[1].record })
    assert.matches("stage map.1: stage_timeout: stage map.1 ran longer than 100 ms", letters[1].reason, 1, true)
  end)
end)
