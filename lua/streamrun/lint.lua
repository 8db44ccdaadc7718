-- streamrun.lint: what a valid job does that a user should hear of before
-- it runs, as warnings for `streamrun run` and `streamrun check`: stateful
-- stages named by position in a job that checkpoints (inserting a stage
-- earlier would attach old state to the wrong one), --set keys the job did
-- not read, and file sources whose path cannot be read yet.
local sr = require "streamrun"

local M = {}

local STATEFUL = { stateful = true, windowed = true }

local function file_problem(node)
  if node.op == "text_file" then
    local f, err = io.open(node.path, "rb")
    if not f then return err:gsub("^[^:]*: ", "") end
    f:close()
  elseif node.op == "text_dir" then
    local d, err = io.open(node.path .. "/.", "rb")
    if not d then return err:gsub("^[^:]*: ", "") end
    d:close()
  end
  return nil
end

-- The warnings for job, one string each. opts: params (the --set values),
-- checkpoints (whether the job writes checkpoints), files (also look at the
-- file sources' paths).
function M.warnings(job, opts)
  local out = {}
  if opts.checkpoints then
    local unnamed = {}
    for _, n in ipairs(job.nodes) do
      if STATEFUL[n.kind] and not n.named then unnamed[#unnamed + 1] = ("%s (%s)"):format(n.stage_name, n.where) end
    end
    if #unnamed > 0 then
      out[#out + 1] = ("stateful stages without a name: %s; their state is found by name in checkpoints and reloads, "
        .. "so a stage inserted before them would take it over: name them (opts.name or :name())")
        :format(table.concat(unnamed, ", "))
    end
  end
  local read = sr._params_read()
  local unread = {}
  for k in pairs(opts.params or {}) do
    if not read[k] then unread[#unread + 1] = k end
  end
  table.sort(unread)
  for _, k in ipairs(unread) do
    out[#out + 1] = ("--set %s: the job did not read it (sr.param(%q, ...)) while it was built"):format(k, k)
  end
  if opts.files then
    for _, node in ipairs(job.sources) do
      local why = file_problem(node)
      if why then out[#out + 1] = ("source %s: %s %s: %s"):format(node.stage_name, node.op, node.path, why) end
    end
  end
  return out
end

return M
