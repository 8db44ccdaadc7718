-- streamrun.outputs: the output operations of SPEC section 9. Each is made
-- per stage by make(node, sink) and called once per batch. The sink decides
-- what is really written: the runner's writes stdout and files; the test
-- driver's captures every output's elements by name as well.
local batch = require "streamrun.batch"
local format = require "streamrun.format"

local concat, open, rename, remove = table.concat, io.open, os.rename, os.remove

local M = {}

local DASHES = "-------------------------------------------"

-- Spark's pprint: dashes, "Time: <ms> ms", dashes, the first n elements, "..."
-- if there are more, then a blank line.
function M.pprint_lines(input, time_ms, limit)
  local lines = { DASHES, ("Time: %d ms"):format(time_ms), DASHES }
  local A, B = input.a, input.b
  for i = 1, math.min(input.n, limit) do lines[#lines + 1] = format.element(A[i], B[i]) end
  if input.n > limit then lines[#lines + 1] = "..." end
  lines[#lines + 1] = ""
  return lines
end

local function text_lines(input, line_of)
  local out = {}
  local A, B = input.a, input.b
  for i = 1, input.n do out[i] = line_of(A[i], B[i]) end
  return out
end

-- Writes content to path through a temp file and a rename, so readers never
-- see a partial file and a replayed batch rewrites the same file.
function M.write_file_atomic(path, content)
  local tmp = path .. ".tmp"
  local f, err = open(tmp, "wb")
  if not f then return nil, err end
  local ok, werr = f:write(content)
  local cok, cerr = f:close()
  if not ok or not cok then
    remove(tmp)
    return nil, werr or cerr
  end
  local rok, rerr = rename(tmp, path)
  if not rok then
    remove(tmp)
    return nil, rerr
  end
  return true
end

function M.text_file_name(node, time_ms)
  return ("%s-%d%s"):format(node.prefix, time_ms, node.suffix and ("." .. node.suffix) or "")
end

local makers = {}

function makers.print(node, sink)
  return function(input, time_ms)
    if sink.quiet_print then return end
    sink.stdout:write(concat(M.pprint_lines(input, time_ms, node.limit), "\n"), "\n")
    sink.stdout:flush()
  end
end

function makers.foreach_batch(node, sink)
  return function(input, time_ms)
    sink.call(node, node.fn, batch.to_elements(input), time_ms)
  end
end

function makers.save_as_text_files(node, sink)
  return function(input, time_ms)
    local lines = text_lines(input, format.element)
    local content = concat(lines, "\n") .. (#lines > 0 and "\n" or "")
    local path = M.text_file_name(node, time_ms)
    local ok, err = M.write_file_atomic(path, content)
    if not ok then sink.fail(node, "cannot write " .. path .. ": " .. tostring(err)) end
  end
end

function makers.to_json_lines(node, sink)
  local fh
  return function(input, time_ms)
    if input.n == 0 then return end
    local content = concat(text_lines(input, format.json_element), "\n") .. "\n"
    if node.path == "-" then
      if sink.quiet_print then return end
      sink.stdout:write(content)
      sink.stdout:flush()
      return
    end
    if not fh then
      local err
      fh, err = open(node.path, "ab")
      if not fh then sink.fail(node, "cannot open " .. node.path .. ": " .. tostring(err)) return end
    end
    fh:write(content)
    fh:flush()
    -- How far the file is written, for checkpoints (replay starts there).
    if sink.progress then sink.progress[node.stage_name] = { path = node.path, bytes = fh:seek("end") } end
  end
end

-- The per-batch function of an output stage: fn(input_batch, time_ms).
-- sink: { stdout, quiet_print, call(node, f, ...), fail(node, msg),
-- capture(node, elements) or nil, progress (a table to_json_lines keeps its
-- files' lengths in) or nil }.
function M.make(node, sink)
  local write = makers[node.op](node, sink)
  if not sink.capture then return write end
  return function(input, time_ms)
    sink.capture(node, batch.to_elements(input))
    return write(input, time_ms)
  end
end

return M
