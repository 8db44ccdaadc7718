-- streamrun.loader: loads a job script and validates the job it returns. Any
-- problem comes back as "file:line: what is wrong", before a source opens.
-- The script and the modules it requires from its directory run in an
-- environment of their own whose os.exit raises: job code cannot end the
-- runtime, its call is an error of the record (SPEC section 17). The
-- runtime's own globals are untouched (busted, under `streamrun test`,
-- still ends with os.exit).
local dsl = require "streamrun.dsl"
local sr = require "streamrun"

local M = {}

local function refuse_exit(code)
  error(("os.exit(%s) called in job code: job code cannot end the runtime"):format(tostring(code)), 2)
end

-- os for job code: the real one but exit.
local job_os = setmetatable({ exit = refuse_exit }, { __index = os })

-- The environment of job code: globals it sets stay in it; reads fall
-- through to the runtime's globals.
local job_env = setmetatable({ os = job_os }, { __index = _G })
job_env._G = job_env
job_env.require = function(name)
  if name == "os" then return job_os end
  return require(name)
end
M.env = job_env

-- Directories whose modules load into job_env, in the order they were added.
local job_dirs = {}

-- A package loader for the job's directories: placed before Lua's own, so
-- a module beside the job runs in job_env.
local function job_dir_loader(name)
  local file = name:gsub("%.", "/")
  local tried = {}
  for _, dir in ipairs(job_dirs) do
    local path = dir .. "/" .. file .. ".lua"
    local f = io.open(path, "r")
    if f then
      f:close()
      local chunk, err = loadfile(path)
      if not chunk then error(("error loading module '%s' from file '%s':\n\t%s"):format(name, path, err), 0) end
      return setfenv(chunk, job_env)
    end
    tried[#tried + 1] = "\n\tno file '" .. path .. "'"
  end
  return table.concat(tried)
end

local function add_job_dir(dir)
  for _, d in ipairs(job_dirs) do
    if d == dir then return end
  end
  job_dirs[#job_dirs + 1] = dir
  if #job_dirs == 1 then table.insert(package.loaders, 2, job_dir_loader) end
end

-- The message's first line; for a module that does not load, the line
-- with the module's own file:line.
local function first_line(msg)
  msg = tostring(msg)
  local cause = msg:match("^error loading module [^\n]*\n%s*([^\n]+)")
  return cause or (msg:match("^[^\n]*"))
end

-- The text of the script at path, or nil and why.
local function read_script(path)
  local f = io.open(path, "rb")
  if not f then return nil, path .. ": cannot open the job script" end
  local text, err = f:read("*a")
  f:close()
  if not text then return nil, ("%s: %s"):format(path, tostring(err)) end
  return text
end

-- Loads the job script at path (or runs a function that builds and returns a
-- job, as specs do). opts: params (table of strings), batch (duration
-- overriding the job's), source (the script's text, read from path if
-- not given). Returns the job, or nil and the message. The job's
-- load_opts.source is the text it was built from.
function M.load(path, opts)
  opts = opts or {}
  local chunk = path
  local from_file = type(path) ~= "function"
  local source = opts.source
  if from_file then
    local err
    if not source then
      source, err = read_script(path)
      if not source then return nil, err end
    end
    -- (as loadfile: a first line starting with # is skipped; the lines keep
    -- their numbers)
    chunk, err = loadstring((source:gsub("^#[^\n]*", "", 1)), "@" .. path)
    if not chunk then return nil, err end
    setfenv(chunk, job_env)
    add_job_dir(path:match("^(.*)/[^/]*$") or ".")
    path = tostring(path)
  else
    path = "(job function)"
  end
  sr._set_params(opts.params)
  local script = "@" .. path
  local ok, job = xpcall(chunk, function(e)
    local mt = type(e) == "table" and getmetatable(e)
    local msg = (type(e) == "string" or type(e) == "number" or mt and mt.__tostring) and first_line(e)
      or ("error object is a %s value"):format(type(e))
    -- A message without a place (error(obj), error(msg, 2)...) is given
    -- the script's line that raised it.
    if from_file and not msg:find("^[^\n:]+:%d+: ") then
      for level = 2, 64 do
        local info = debug.getinfo(level, "Sl")
        if not info then break end
        if info.source == script and info.currentline > 0 then
          return ("%s:%d: %s"):format(path, info.currentline, msg)
        end
      end
    end
    return msg
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
  -- How it was loaded: each worker's VM loads the script the same way
  -- (streamrun.exchange).
  job.load_opts = from_file and { params = opts.params, batch = opts.batch, source = source } or nil
  return job
end

return M
