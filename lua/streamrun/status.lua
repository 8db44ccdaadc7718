-- streamrun.status: a monitor's figures (streamrun.monitor) as the JSON of
-- /api/status: the job, its stage graph with time and keys per stage, the
-- last batches, sources and their positions, checkpoints, dead letters.
-- The status page (lua/streamrun/web/) draws itself from it.
local cjson = require "cjson"
local core = require "streamrun.core"

local ipairs, pairs, type = ipairs, pairs, type

local M = {}

local encoder = cjson.new()
encoder.encode_sparse_array(true)
encoder.encode_invalid_numbers(false)

-- A position as JSON takes it: a text_dir's list of finished files as its
-- length (it can be long), C strings as Lua ones.
local function position(p)
  if type(p) ~= "table" then return nil end
  local out = {}
  for k, v in pairs(p) do
    if k == "done" and type(v) == "table" then
      out.files_done = #v
    elseif type(v) == "number" or type(v) == "string" or type(v) == "boolean" then
      out[k] = v
    end
  end
  return out
end

-- The stage graph: every stage with its inputs, its step's time in the last
-- batch and in all, and its keys.
local function stages(mon, job)
  local step_of, keys = {}, {}
  for _, st in ipairs(mon.steps or {}) do
    for _, name in ipairs(st.stages) do step_of[name] = st end
  end
  for _, s in ipairs(mon.states or {}) do keys[s.stage] = s.keys end
  local out = {}
  for i, n in ipairs(job.nodes) do
    local from = {}
    for j, input in ipairs(n.inputs) do from[j] = input.stage_name end
    local st = step_of[n.stage_name]
    out[i] = {
      name = n.stage_name, op = n.op, kind = n.kind, inputs = from,
      step = st and st.label or nil, fused = st and #st.stages > 1 or false,
      last_ms = st and st.ms or nil, total_ms = st and mon.stage_ms[st.label] or nil,
      state_keys = keys[n.stage_name],
    }
  end
  return out
end

-- One batch of the list, as JSON text.
function M.batch_json(b)
  return encoder.encode(b)
end

-- The JSON text of /api/status for monitor mon over session S (its last
-- batches from mon.recent_json, made once each).
function M.render(mon, S)
  local job = S.job
  local sources = {}
  for i, node in ipairs(job.sources) do
    sources[i] = {
      name = node.stage_name, op = node.op, records_total = mon.records_in[node.stage_name] or 0,
      position = position(mon.positions and mon.positions[node.stage_name]),
    }
    for _, details in ipairs(mon.source_details or {}) do
      for k, v in pairs(details(mon, S, node.stage_name) or {}) do sources[i][k] = v end
    end
  end
  local w = S.writer
  local ckpt
  if w then
    local lw = w.last_written
    ckpt = {
      dir = S.settings.dir, every_ms = S.settings.every_ms, written = w.written or 0, failures = w.failures,
      last_batch = lw and lw.batch or nil, last_duration_ms = lw and lw.duration_ms or nil,
      last_unix_s = lw and lw.unix_s or nil, age_s = lw and (os.time() - lw.unix_s) or nil,
    }
  end
  local rest = encoder.encode {
    job = {
      name = job.name, script = job.path, batch_ms = job.batch_ms,
      version = core.ffi.string(core.C.sr_version()), started_unix_s = mon.started_unix,
      uptime_s = mon:uptime_s(), on_error = job.on_error,
    },
    totals = {
      batches = mon.batches, records = mon.records, processing_s = mon.processing_s,
      dead_letters = mon.dead.total, reloads = mon.reloads, reload_failures = S.reload_failures or 0,
    },
    stages = stages(mon, job),
    state = mon.states,
    sources = sources,
    checkpoint = ckpt,
    dead_letters = mon.dead,
  }
  return '{"batches":[' .. table.concat(mon.recent_json, ",") .. "]," .. rest:sub(2)
end

return M
