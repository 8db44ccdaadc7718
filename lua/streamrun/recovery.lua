-- streamrun.recovery: resuming a job from its write-ahead log after its
-- newest checkpoint. The batches logged after the checkpoint are run again
-- with exactly the records they had: those of sources that re-read their
-- file (text_file) read again between the positions the markers logged, the
-- others from the log. Records logged after the last marker (received, not
-- yet in a batch) go into the first batch after the restart. Sources resume
-- where the last marker left them; one with a file list (text_dir) also
-- skips the files it was done with, from the checkpoint and the files the
-- log shows it took up. Which source does what is its kind's traits
-- (sources.traits).
local core = require "streamrun.core"
local batch = require "streamrun.batch"
local sources = require "streamrun.sources"

local C, ffi = core.C, core.ffi

local M = {}

-- Whether a job logs: it has a source whose records are logged.
function M.needs_log(job)
  for _, node in ipairs(job.sources) do
    if sources.traits(node).logged then return true end
  end
  return false
end

-- The files of each source with a file list (text_dir), from the
-- checkpoint's positions: name ->
-- { file = taken up last, done = set of names, path = its directory,
-- taken = true once the log shows a file taken up since }.
local function dir_files(positions)
  local dirs = {}
  for name, p in pairs(positions) do
    local t = sources.kind_traits(p.kind)
    if t and t.file_list then
      local done = {}
      for _, f in ipairs(p.done or {}) do done[f] = true end
      dirs[name] = { file = p.file, done = done, path = p.path }
    end
  end
  return dirs
end

-- Adds the files a logged batch's text_dirs took up (in order; inode -1:
-- skipped, so done with).
local function take_files(dirs, b)
  for name, files in pairs(b.files or {}) do
    local d = dirs[name] or { done = {} }
    dirs[name] = d
    for _, f in ipairs(files) do
      if f.inode < 0 then
        d.done[f.name] = true
        if d.file == f.name then d.file = nil end -- the file to resume is gone
      else
        if d.file then d.done[d.file] = true end
        d.file, d.taken = f.name, true
      end
    end
  end
end

-- Reads the log of dir: { batches (after the checkpoint's time), pending,
-- positions (where sources resume), note }.
function M.read(dir, meta)
  local since = meta.time_ms or -math.huge
  local log = core.cwal.read(dir, since)
  local after = {}
  local positions = {}
  for name, p in pairs(meta.sources or {}) do positions[name] = p end
  local dirs = dir_files(positions)
  -- The log goes back to the oldest checkpoint kept: what it holds up to
  -- this checkpoint's batch is in the checkpoint already.
  for _, b in ipairs(log.batches) do
    if b.time_ms > since then
      b.from = {}
      for name, p in pairs(positions) do b.from[name] = p end
      after[#after + 1] = b
      take_files(dirs, b)
      for name, p in pairs(b.positions) do positions[name] = p end
    end
  end
  for name, d in pairs(dirs) do
    local p = positions[name] or {}
    local done = {}
    -- (The checkpoint's own file may be done with already: read to its
    -- end. One the log shows taken up since is not.)
    for f in pairs(d.done) do
      if f ~= d.file or not d.taken then done[#done + 1] = f end
    end
    table.sort(done)
    positions[name] = { kind = "text_dir", offset = p.offset, inode = p.inode, file = d.file, done = done, path = d.path }
  end
  return { batches = after, pending = log.pending, positions = positions, note = log.note }
end

local function file_range(node, from, to, dead)
  local out = ffi.gc(C.sr_batch_new(0, 0), C.sr_batch_free)
  local err = ffi.new("char[512]")
  local start = from and from.offset or 0
  if C.sr_source_file_read_range(node.path, to.inode or 0, start, to.offset, node.max_line, out, err, 512) ~= 0 then
    dead(node.stage_name, start, "cannot replay a logged batch: " .. ffi.string(err), "")
  end
  return sources.read_c_batch(node, out, dead)
end

-- The inputs of a logged batch b, by source node. next_lua(node) gives a
-- Lua-side source's batch as it would have been. Records a killed run
-- logged after its last marker are left out for sources that read them
-- again from their position.
function M.inputs(job, b, dead, next_lua)
  local inputs = {}
  for _, node in ipairs(job.sources) do
    local name = node.stage_name
    local traits = sources.traits(node)
    if traits.rereads then
      local to = b.positions[name]
      inputs[node] = to and file_range(node, b.from[name], to, dead) or batch.empty()
    elseif traits.c then
      local records = b.records[name] or {}
      local pos = records.pos or {}
      local carried = traits.resumes and b.carried and b.carried[name] or 0
      if carried > 0 then
        local rest, rest_pos = {}, {}
        for i = carried + 1, #records do
          rest[i - carried], rest_pos[i - carried] = records[i], pos[i]
        end
        records, pos = rest, rest_pos
      end
      -- With the offsets the log keeps: dead letters as the first time.
      inputs[node] = sources.read_values(node, records, 1, dead, pos)
    else
      inputs[node] = next_lua(node)
    end
  end
  return inputs
end

-- Adds the records logged after the last marker to the first live batch's
-- inputs (sources that resume at a position read them again instead).
function M.add_pending(job, inputs, pending, dead)
  for _, node in ipairs(job.sources) do
    local lines = pending[node.stage_name]
    local traits = sources.traits(node)
    if lines and traits.c and not traits.resumes then
      local old = inputs[node]
      local extra = sources.read_values(node, lines, 1, dead, lines.pos)
      local merged = batch.to_elements(extra)
      local rest = batch.to_elements(old)
      for i = 1, #rest do merged[#merged + 1] = rest[i] end
      inputs[node] = batch.of_values(merged)
      inputs[node].cat = { extra, old } -- (the records' origins)
    end
  end
end

return M
