-- streamrun.loader: loads a job script and validates the job it returns. Any
-- problem comes back as "file:line: what is wrong", before a source opens.
local dsl = require "streamrun.dsl"
local sr = require "streamrun"

local M = {}

-- The message's first line; for a module that does not load, the line
-- with the module's own file:line.
local function first_line(msg)
  msg = tostring(msg)
  local cause = msg:match("^error loading module [^\n]*\n%s*([^\n]+)")
  return cause or (msg:match("^[^\n]*"))
end

-- Loads the job script at path (or runs a function that builds and returns a
-- job, as specs do). opts: params (table of strings), batch (duration
-- overriding the job's). Returns the job, or nil and the message.
function M.load(path, opts)
  opts = opts or {}
  local chunk = path
  if type(path) ~= "function" then
    local err
    chunk, err = loadfile(path)
    if not chunk then
      if not io.open(path, "r") then return nil, path .. ": cannot open the job script" end
      return nil, err
    end
    local dir = path:match("^(.*)/[^/]*$") or "."
    if not package.path:find(dir .. "/?.lua;", 1, true) then
      package.path = dir .. "/?.lua;" .. package.path
    end
    path = tostring(path)
  else
    path = "(job function)"
  end
  sr._set_params(opts.params)
  local ok, job = xpcall(chunk, function(e)
    if type(e) == "table" then return e end
    return first_line(e)
  end)
  if not ok then return nil, tostring(job) end
  if not dsl.is_job(job) then
    return nil, ("%s: the script must end with `return job` (it returned %s)"):format(path, type(job))
  end
  if #job.sources == 0 then
    return nil, ("%s: job %s has no source"):format(job.where, job.name)
  end
  if #job.outputs == 0 then
    return nil, ("%s: job %s has no output; add print(), foreach_batch(), save_as_text_files() or to_json_lines()")
      :format(job.where, job.name)
  end
  if opts.batch then
    local ms, derr = require("streamrun.core").duration_ms(opts.batch)
    if not ms then return nil, "--batch: " .. derr end
    job.batch_ms = ms
  end
  local ok, verr = dsl.validate(job)
  if not ok then return nil, verr end
  job.path = path
  return job
end

return M
