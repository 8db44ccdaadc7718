-- streamrun: the library job scripts require. sr.job{...} starts a job (see
-- streamrun.dsl); the helpers below are the built-ins of SPEC section 6.
local builtins = require "streamrun.builtins"
local core = require "streamrun.core"
local dsl = require "streamrun.dsl"

local M = {}

M.version = core.ffi.string(core.C.sr_version())
M.job = dsl.job
M.state_spec = dsl.state_spec
M.words = builtins.words
M.sum = builtins.sum
M.add = builtins.add
M.min = builtins.min
M.max = builtins.max

local params, read = {}, {}

-- The value given with --set KEY=VALUE (or the test driver's params), else
-- default. A number default makes the value a number.
function M.param(key, default)
  read[key] = true
  local v = params[key]
  if v == nil then return default end
  if type(default) == "number" then
    local n = tonumber(v)
    if n == nil then dsl.fail("sr.param: %s=%s is not a number", key, tostring(v)) end
    return n
  end
  if type(default) == "boolean" and type(v) == "string" then return v == "true" or v == "1" or v == "yes" end
  return v
end

-- Used by the loader before it runs a job script.
function M._set_params(t) params, read = t or {}, {} end

-- The keys sr.param was asked for since then (streamrun.lint warns of
-- --set keys that are not among them).
function M._params_read() return read end

return M
