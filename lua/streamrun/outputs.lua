-- streamrun.outputs: the output operations of SPEC section 9. Each is made
-- per stage by make(node, sink, g) and called once per batch. The sink decides
-- what is really written: the runner's writes stdout and files; the test
-- driver's captures every output's elements by name as well.
--
-- No write is silent: an output whose write fails keeps what it could not
-- write (a torn append to a file is cut back to the batch's start) and says
-- so; the runner holds the job and retries it (streamrun.runner).
local batch = require "streamrun.batch"
local core = require "streamrun.core"
local format = require "streamrun.format"

local C, ffi = core.C, core.ffi
local concat, open, rename, remove = table.concat, io.open, os.rename, os.remove
local encode_lines = core.json.encode_lines

local M = {}

local EBADF, EPIPE = 9, 32

local size_out = ffi.new("int64_t[1]")
local written_out = ffi.new("size_t[1]")

local function close_box(box) C.sr_outfile_close(box[0]) end

local function strerror(code) return ffi.string(ffi.C.strerror(code)) end

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

-- The JSON lines of a batch, written by the runtime in one call (one
-- string for the batch, none per line); an element that cannot be JSON is
-- reported (a dead letter) and left out.
local function json_text(node, g, input)
  local A, B, n = input.a, input.b, input.n
  local text, i, err = encode_lines(A, B, n, 1)
  if not err then return text end
  local parts = {}
  while true do
    parts[#parts + 1] = text
    if not err then break end
    g.report(node, err, A[i], B[i])
    text, i, err = encode_lines(A, B, n, i + 1)
  end
  return concat(parts)
end

-- The runner's standard output: written straight to descriptor 1, so that
-- a failing write says how much of it went.
M.stdout = {}

-- Returns true, or nil, the message, errno and the bytes that went.
function M.stdout:write(s)
  io.stdout:flush() -- what job code printed goes first
  if C.sr_outfile_write(1, s, #s, written_out) == 0 then return true end
  local code = ffi.errno()
  return nil, strerror(code), code, tonumber(written_out[0])
end

function M.stdout:flush() return true end

-- An output to the sink's stdout: send(s) writes s after what an earlier
-- failing write left; retry() writes what is left. Both return true, or
-- nil, the message and whether standard output is closed for good.
local function stdout_writer(sink)
  local left
  local function send(s)
    if left then s = left .. s end
    local out = sink.stdout
    -- Failure is nil and a message, as io's files say it.
    local ok, err, code, went = out:write(s)
    if ok ~= nil or err == nil then ok, err, code = out:flush() end
    if ok ~= nil or err == nil then
      left = nil
      return true
    end
    went = went or 0 -- unknown: all of it again
    left = went > 0 and s:sub(went + 1) or s
    local closed = code == EPIPE or code == EBADF
    return nil, "standard output: " .. tostring(err) .. (closed and " (closed)" or ""), closed
  end
  local function retry()
    if not left then return true end
    local s = left
    left = nil
    return send(s)
  end
  return send, retry
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

local function done() return true end

-- Each maker returns write(input, time_ms) and retry(); both return true,
-- or nil, the message and whether the failure is for good.
local makers = {}

function makers.print(node, sink)
  local send, retry = stdout_writer(sink)
  return function(input, time_ms)
    if sink.quiet_print then return true end
    return send(concat(M.pprint_lines(input, time_ms, node.limit), "\n") .. "\n")
  end, retry
end

function makers.foreach_batch(node, sink, g)
  return function(input, time_ms)
    g.call(node, node.fn, batch.to_elements(input), time_ms)
    return true
  end, done
end

function makers.save_as_text_files(node)
  local left_path, left_content -- a batch's file not written yet
  local function put(path, content)
    local ok, err = M.write_file_atomic(path, content)
    if ok then
      left_path, left_content = nil, nil
      return true
    end
    left_path, left_content = path, content
    return nil, "cannot write " .. path .. ": " .. tostring(err)
  end
  return function(input, time_ms)
    local lines = text_lines(input, format.element)
    local content = concat(lines, "\n") .. (#lines > 0 and "\n" or "")
    return put(M.text_file_name(node, time_ms), content)
  end, function()
    if not left_path then return true end
    return put(left_path, left_content)
  end
end

-- to_json_lines to a file: appends each batch whole with one write; one
-- that fails is cut back to the length before it (`good`) and kept to be
-- written again, so the file never holds a torn or doubled line.
local function json_file(node, sink, g)
  local path = node.path
  local fd, good, regular
  local box -- closes fd when the output goes (a reload closes this VM)
  local left -- a batch's lines not written yet
  local function append(content)
    if not fd then
      local f = C.sr_outfile_open(path, size_out)
      if f < 0 then
        left = content
        return nil, ("cannot open %s: %s"):format(path, strerror(ffi.errno()))
      end
      fd, good = f, tonumber(size_out[0])
      box = ffi.gc(ffi.new("int[1]", f), close_box)
      regular = good >= 0
      if not regular then good = 0 end
    end
    if left and C.sr_outfile_cut(fd, good) ~= 0 then
      left = content
      return nil, ("cannot cut %s back to %d bytes: %s"):format(path, good, strerror(ffi.errno()))
    end
    if C.sr_outfile_write(fd, content, #content, written_out) ~= 0 then
      local why = strerror(ffi.errno())
      left = content
      -- At once, so that readers see no torn line meanwhile (retried
      -- before the next write if it fails).
      C.sr_outfile_cut(fd, good)
      return nil, ("cannot write %s: %s"):format(path, why)
    end
    left = nil
    if regular then good = good + #content end
    -- How far the file is written, for checkpoints (replay starts there).
    if sink.progress then sink.progress[node.stage_name] = { path = path, bytes = good } end
    return true
  end
  return function(input)
    if input.n == 0 then return true end
    local content = json_text(node, g, input)
    if left then content = left .. content end
    if content == "" then return true end
    return append(content)
  end, function()
    if not left then return true end
    return append(left)
  end
end

function makers.to_json_lines(node, sink, g)
  if node.path ~= "-" then return json_file(node, sink, g) end
  local send, retry = stdout_writer(sink)
  return function(input)
    if input.n == 0 or sink.quiet_print then return true end
    local content = json_text(node, g, input)
    if content == "" then return true end
    return send(content)
  end, retry
end

-- Kafka's producer (streamrun.kafka), loaded when a job has one.
function makers.to_kafka(node, sink, g)
  return require("streamrun.kafka").make_sink(node, sink, g)
end

-- The per-batch function of an output stage, write(input_batch, time_ms),
-- and retry() to write again what a failing write kept. Both return true,
-- or nil, the message and true when the failure is for good (standard
-- output closed). sink: { stdout (M.stdout or a file-like object),
-- quiet_print, capture(node, elements) or nil, progress (a table
-- to_json_lines keeps its files' lengths in) or nil }; it is only read.
-- g: the plan's guard (streamrun.guard): foreach_batch's function runs
-- through g.call, an element that cannot be written goes to g.report.
function M.make(node, sink, g)
  local write, retry = makers[node.op](node, sink, g)
  if not sink.capture then return write, retry end
  return function(input, time_ms)
    sink.capture(node, batch.to_elements(input))
    return write(input, time_ms)
  end, retry
end

return M
