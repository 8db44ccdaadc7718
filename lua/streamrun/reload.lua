-- streamrun.reload: what happens to a job's state when its logic changes
-- (a hot reload, or a restart from a checkpoint taken with another script).
-- Stateful stages (update_state_by_key, map_with_state, windows) are matched
-- by name: one of the same kind keeps its state and timeouts; one that is
-- gone has its state dropped; a new one starts empty. A stage whose kind
-- changed cannot keep its state: that is refused unless the job lists it in
-- sr.job{ drop_state = {...} }, which also drops any state on purpose.
local M = {}

-- What identifies a stateful stage's kind of state: its operation, and for
-- windows whether an inverse function keeps a running result.
function M.kind_of(node)
  if node.kind == "event" then return require("streamrun.evwindows").kind_of(node) end
  if node.kind == "windowed" then
    -- A running result (with an inverse) is only right for the length and
    -- slide it was built with.
    if node.finv or node.op:find("^count") then
      return ("%s+inverse/%d/%d"):format(node.op, node.length_ms, node.window_slide_ms or node.slide_ms or 0)
    end
    return node.op
  end
  return node.op
end

-- The stateful stages of a job: name -> kind.
function M.stages_of(job)
  local stages = {}
  for _, n in ipairs(job.nodes) do
    if n.kind == "stateful" or n.kind == "windowed" or n.kind == "event" then stages[n.stage_name] = M.kind_of(n) end
  end
  return stages
end

-- The lengths of a job's windows without a running result (name ->
-- length): one may change, but the slices it keeps cover only its length.
function M.lengths_of(job)
  local lengths = {}
  for _, n in ipairs(job.nodes) do
    if n.kind == "windowed" and M.kind_of(n) == n.op then lengths[n.stage_name] = n.length_ms end
  end
  return lengths
end

-- Compares the stages that hold state (old: name -> kind) with a new job's.
-- Returns { keep, drop, new, conflicts, grown } (sorted arrays of names;
-- conflicts are "name: was K1, now K2" texts; grown: name -> old length of
-- a kept window now longer, by old_lengths, as lengths_of gives them).
function M.plan(old, job, old_lengths)
  local drop_list = {}
  for _, name in ipairs(job.drop_state or {}) do drop_list[name] = true end
  local new_stages = M.stages_of(job)
  local r = { keep = {}, drop = {}, new = {}, conflicts = {} }
  for name, kind in pairs(new_stages) do
    local was = old[name]
    if was == nil then
      r.new[#r.new + 1] = name
    elseif drop_list[name] then
      r.drop[#r.drop + 1] = name
      r.new[#r.new + 1] = name
    elseif was ~= kind then
      r.conflicts[#r.conflicts + 1] = ("%s: was %s, now %s (list it in sr.job{ drop_state = {...} } to start it afresh)")
        :format(name, was, kind)
    else
      r.keep[#r.keep + 1] = name
    end
  end
  for name in pairs(old) do
    if new_stages[name] == nil then r.drop[#r.drop + 1] = name end
  end
  for _, list in pairs(r) do table.sort(list) end
  r.grown = {}
  local lengths = M.lengths_of(job)
  for _, name in ipairs(r.keep) do
    local was = (old_lengths or {})[name]
    if was and lengths[name] and lengths[name] > was then r.grown[name] = was end
  end
  return r
end

-- One line for the log: "kept a, b; dropped c; new d" (a kept window now
-- longer says what its first windows lack).
function M.describe(r, job)
  local function names(list) return #list > 0 and table.concat(list, ", ") or "none" end
  local kept = {}
  for i, name in ipairs(r.keep) do
    local was = r.grown and r.grown[name]
    kept[i] = was and job and ("%s (its length grew from %d ms to %d ms: windows ending in the next %d ms lack "
      .. "what came before the last %d ms it kept)"):format(name, was, job.by_name[name].length_ms,
      job.by_name[name].length_ms - was, was) or name
  end
  return ("kept %s; dropped %s; new %s"):format(names(kept), names(r.drop), names(r.new))
end

-- The state tables and windows of `kept` stages, from states/windows by
-- name (what a plan or a checkpoint holds); the others are freed.
function M.carry(r, states, windows)
  local keep = {}
  for _, name in ipairs(r.keep) do keep[name] = true end
  local out_states, out_windows = {}, {}
  for name, st in pairs(states or {}) do
    if keep[name] then out_states[name] = st else st:free() end
  end
  for name, w in pairs(windows or {}) do
    if keep[name] then
      out_windows[name] = w
    else
      w.slices:free()
      if w.result then w.result:free() end
    end
  end
  return out_states, out_windows
end

return M
