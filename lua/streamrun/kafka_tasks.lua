-- streamrun.kafka_tasks: a Kafka job with a checkpoint directory runs as
-- Kafka Streams runs one: one task per input partition, each with its own
-- state (a session of the job's stages, fed that partition's records), its
-- own checkpoints and lock under DIR/tasks/<topic>-<partition>/. Processes
-- running the job with the same group split the partitions through the
-- consumer group; the directory is shared and each task has one owner.
--
-- The group's assignments and revocations wait for the batch boundary
-- (runtime/sr_source_kafka.c, tasks=1): a revoked partition's task, whose
-- records up to the boundary have run, is checkpointed (its offset
-- committed to the group) and its lock released before the partition is
-- let go; an assigned one is locked, restored from its newest checkpoint
-- and resumes at the offset that checkpoint holds. One still locked by its
-- previous owner is put off, not read, and tried again at each batch
-- boundary while the process's other tasks run. A lost assignment (the
-- group dropped this member: session timeout, fenced generation) drops its
-- tasks at once, with no checkpoint or commit: their next owners resume
-- from the last checkpoint. kill -9 loses the batches after a task's
-- last checkpoint, which its next owner reads again: state counts every
-- record once.
--
-- To the runner this looks like a session (streamrun.session): run_batch,
-- checkpoint_after, report_batch, finish, wait_while_held.
local core = require "streamrun.core"
local batch = require "streamrun.batch"
local checkpoint = require "streamrun.checkpoint"
local kafka = require "streamrun.kafka"
local monitor = require "streamrun.monitor"
local session = require "streamrun.session"
local watchdog = require "streamrun.watchdog"

local C, ffi = core.C, core.ffi
local ffi_string = ffi.string

ffi.cdef [[
int sr_kafka_source_pending(sr_source_t *s, size_t i, const char **topic, int32_t *partition);
int sr_kafka_source_complete(sr_source_t *s, const int64_t *offsets, size_t n);
int sr_kafka_source_assign_late(sr_source_t *s, const char *topic, int32_t partition, int64_t offset);
int sr_lock_task_acquire(const char *dir, long *holder, char *err, size_t errlen);
void sr_lock_task_release(int fd);
typedef struct sr_glob { size_t gl_pathc; char **gl_pathv; size_t gl_offs; int gl_flags; void *fns[5]; } sr_glob_t;
int glob(const char *pattern, int flags, void *errfunc, sr_glob_t *pglob);
void globfree(sr_glob_t *pglob);
]]

local M = {}

local SR_EBUSY = -10
local SR_KAFKA_LATER = -2

-- The first stage that two of job's sources reach (a join, a union...),
-- and the names of two of them; nil when their records never meet.
local function sources_meet(job)
  local reach = {} -- node -> { source node -> its name } upstream of it
  for _, s in ipairs(job.sources) do reach[s] = { [s] = s.stage_name } end
  for _, node in ipairs(job.nodes) do -- inputs come before their stages
    if not reach[node] then
      local set, names = {}, {}
      for _, input in ipairs(node.inputs or {}) do
        for s, name in pairs(reach[input] or {}) do
          if not set[s] then
            set[s] = name
            names[#names + 1] = name
          end
        end
      end
      if #names > 1 then
        table.sort(names)
        return node, names
      end
      reach[node] = set
    end
  end
end

-- Whether job runs as tasks: it checkpoints and reads kafka sources (its
-- topics, and the repartition topics it reads back) and nothing else, and
-- no two of them meet (a task holds one partition of one topic). Returns
-- false and why not when only their meeting stops it.
function M.applies(job, settings)
  if not settings or #job.sources == 0 then return false end
  for _, node in ipairs(job.sources) do
    if node.op ~= "kafka" then return false end
  end
  local at, names = sources_meet(job)
  if at then
    return false, ("job %s runs as one process, not as tasks: its Kafka sources %s and %s meet at %s, and a task "
      .. "holds one partition of one topic"):format(job.name, names[1], names[2], at.stage_name)
  end
  return true
end

-- The task directories of checkpoint directory dir, sorted (none: empty).
function M.task_dirs(dir)
  local g = ffi.new("sr_glob_t")
  local out = {}
  if ffi.C.glob(dir .. "/tasks/*/lock", 0, nil, g) == 0 then
    for i = 0, tonumber(g.gl_pathc) - 1 do out[#out + 1] = ffi_string(g.gl_pathv[i]):match("^(.*)/lock$") end
    ffi.C.globfree(g)
  end
  table.sort(out)
  return out
end

local Tasks = {}
Tasks.__index = Tasks
Tasks.reloadable = false

local holder, errbuf = ffi.new("long[1]"), ffi.new("char[512]")
local tp_topic, tp_part = ffi.new("const char *[1]"), ffi.new("int32_t[1]")

-- The directory of the task of topic/partition (made if need be).
function Tasks:task_dir(topic, partition)
  local dir = self.settings.dir .. "/tasks/" .. topic .. "-" .. partition
  local ok, err = core.mkdir_p(dir)
  if not ok then return nil, err end
  return dir
end

-- Locks the directory of the task of tp ({ topic, partition }) without
-- waiting. Returns the descriptor; false when another process holds it
-- (logged once per wait); or nil and the exit code.
function Tasks:try_lock(tp)
  local name = tp[1] .. "-" .. tp[2]
  local dir, err = self:task_dir(tp[1], tp[2])
  if not dir then
    self.log("task %s: %s", name, err)
    return nil, 1
  end
  local fd = C.sr_lock_task_acquire(dir, holder, errbuf, 512)
  if fd >= 0 then return fd end
  if fd ~= SR_EBUSY then
    self.log("task %s: %s", name, ffi_string(errbuf))
    return nil, 1
  end
  if not self.told[name] then
    self.log("task %s: waiting for pid %d to release it (the other tasks run meanwhile)", name, tonumber(holder[0]))
    self.told[name] = true
  end
  return false
end

-- Opens the task of topic/partition, read by source input, its directory
-- locked (fd): restored from its newest checkpoint. Returns it and the
-- offset to resume at (-1: the group's committed one), or nil and the exit
-- code. Its session runs every stage of the job; sources other than its own
-- give it nothing.
function Tasks:open_task(input, topic, partition, fd)
  local name = topic .. "-" .. partition
  local dir = self.settings.dir .. "/tasks/" .. name
  local found, faults = checkpoint.latest(dir)
  for _, f in ipairs(faults) do
    self.log("task %s: checkpoint %s is not valid: %s%s", name, f.path, f.reason, found and "; using an older one" or "")
  end
  if not found and #faults > 0 then
    C.sr_lock_task_release(fd)
    self.log("task %s: no valid checkpoint in %s: not starting it from empty state", name, dir)
    return nil, 1
  end
  local task = { name = name, topic = topic, partition = partition, dir = dir, lock = fd, next = -1, input_of = input }
  local key = topic .. ":" .. partition
  local own = input.node
  task.feed = {
    take = function(node)
      if node ~= own then return batch.empty() end
      local b = task.input or batch.empty()
      task.input = nil
      return b
    end,
    position = function(node, p) if node == own then p.offsets = { [key] = task.next >= 0 and task.next or nil } end end,
    written = function(taken) self:commit(input, taken) end,
  }
  local S, code = session.open(self.job, {
    settings = { dir = dir, every_ms = self.settings.every_ms, keep = self.settings.keep },
    params = self.o.params, feed = task.feed, restored = found or nil, log = self.log, quiet = true,
    sink = self.o.sink, generators = false,
    -- (the job's dead-letter file, which every task and process shares:
    -- no task's checkpoint marks where it ends)
    dead = self.dead,
  })
  if not S then
    C.sr_lock_task_release(fd)
    return nil, code
  end
  S.loop = self.loop
  task.S = S
  local pos = found and found.meta.sources and found.meta.sources[own.stage_name]
  local off = pos and type(pos.offsets) == "table" and pos.offsets[key] or -1
  task.next = off
  self.tasks[name] = task
  self.log("task %s: %s, resuming at offset %s", name, found and ("restored from " .. found.path) or "new",
    off >= 0 and tostring(off) or "the group's committed one")
  return task, off
end

-- Checkpoints a task whose partition goes (its offset committed to the
-- group), then releases it.
function Tasks:close_task(task)
  local S = task.S
  if S.writer and S.last_time then S:checkpoint_now(S.last_time, true) end
  if S.writer then S.writer:wait() end
  C.sr_lock_task_release(task.lock)
  self.tasks[task.name] = nil
  self.log("task %s: checkpointed at offset %s and released", task.name,
    task.next >= 0 and tostring(task.next) or "none")
end

-- Drops a task whose partition was lost (the group gave it to another
-- member without a revocation): nothing checkpointed or committed, its
-- state since its last checkpoint discarded; its next owner resumes from
-- that checkpoint and its offset, so nothing is counted twice.
function Tasks:drop_task(task)
  local S = task.S
  if S.writer then S.writer:wait() end
  C.sr_lock_task_release(task.lock)
  self.tasks[task.name] = nil
  self.log("task %s: partition lost; released without a checkpoint", task.name)
end

-- Commits a task checkpoint's offsets to the group.
function Tasks:commit(input, taken)
  kafka.commit(input.node, input.src, taken and taken[input.node.stage_name])
end

-- Completes the assignment or revocation the group waits for on source
-- input, if any. Returns true, or nil and the exit code.
function Tasks:rebalance(input)
  local list, what = {}, 0
  while true do
    local w = C.sr_kafka_source_pending(input.src, #list, tp_topic, tp_part)
    if w <= 0 then break end
    what = w
    -- Past the last partition (an assignment of none, a cooperative
    -- rebalance's usual second half): still completed below.
    if tp_topic[0] == nil then break end
    list[#list + 1] = { ffi_string(tp_topic[0]), tp_part[0] }
  end
  if what == 2 or what == 3 then
    for _, tp in ipairs(list) do
      local name = tp[1] .. "-" .. tp[2]
      local task = self.tasks[name]
      if task and what == 2 then self:close_task(task) elseif task then self:drop_task(task) end
      self.later[name], self.told[name] = nil, nil
    end
    -- Lost is the whole assignment: nothing put off is this member's now.
    if what == 3 then
      for name, w in pairs(self.later) do
        if w.input == input then self.later[name], self.told[name] = nil, nil end
      end
    end
    C.sr_kafka_source_complete(input.src, nil, 0)
  elseif what == 1 then
    -- A task still locked by its previous owner is put off (retried at
    -- later batch boundaries): the others run meanwhile.
    local offs = ffi.new("int64_t[?]", #list)
    for i, tp in ipairs(list) do
      local name = tp[1] .. "-" .. tp[2]
      local task = self.tasks[name]
      if not task then
        local fd, code = self:try_lock(tp)
        if fd == nil then return nil, code end
        if fd then
          local off
          task, off = self:open_task(input, tp[1], tp[2], fd)
          if not task then return nil, off end
        else
          self.later[name] = { input = input, tp = tp }
        end
      end
      offs[i - 1] = task and task.next or SR_KAFKA_LATER
    end
    C.sr_kafka_source_complete(input.src, offs, #list)
  end
  return true
end

-- Starts the tasks put off whose locks came free. Returns true, or nil and
-- the exit code.
function Tasks:start_later()
  for name, w in pairs(self.later) do
    if C.sr_kafka_source_pending(w.input.src, 0, tp_topic, tp_part) == 0 then
      local fd, code = self:try_lock(w.tp)
      if fd == nil then return nil, code end
      if fd then
        local task, off = self:open_task(w.input, w.tp[1], w.tp[2], fd)
        if not task then return nil, off end
        self.later[name], self.told[name] = nil, nil
        if C.sr_kafka_source_assign_late(w.input.src, w.tp[1], w.tp[2], off) ~= 0 then return nil, 1 end
      end
    end
  end
  return true
end

-- The tasks in name order (outputs and checkpoints in the same order
-- every batch).
function Tasks:each()
  local names = {}
  for name in pairs(self.tasks) do names[#names + 1] = name end
  table.sort(names)
  local i = 0
  return function()
    i = i + 1
    return names[i] and self.tasks[names[i]]
  end
end

-- Before a batch: rebalances wait here, as do the tasks' own holds.
function Tasks:wait_while_held()
  local ok, code
  for _, input in ipairs(self.inputs) do
    ok, code = self:rebalance(input)
    if not ok then return nil, code end
  end
  if next(self.later) then
    ok, code = self:start_later()
    if not ok then return nil, code end
  end
  for task in self:each() do
    ok, code = task.S:wait_while_held()
    if not ok then return nil, code end
  end
  return true
end

function Tasks:lua_active() return false end

function Tasks:input_ended() return false end

-- Runs the batch at time_ms: the source's records split by partition, each
-- task's stages over its own. Returns the number of records, or nil and
-- the exit code.
function Tasks:run_batch(time_ms)
  local records = 0
  for _, input in ipairs(self.inputs) do records = records + self:split(input) end
  C.sr_loop_release(self.loop)
  for task in self:each() do
    local n, code = task.S:run_batch(time_ms)
    if not n then return nil, code end
  end
  self.nbatches = self.nbatches + 1
  self.last_time = time_ms
  self.total_records = self.total_records + records
  return records
end

-- Hands the records source input received for the batch to the tasks of
-- their partitions. Returns how many there were.
function Tasks:split(input)
  local node = input.node
  local cb = C.sr_loop_batch(self.loop, input.index)
  local records = tonumber(cb.n)
  local mon = self.monitor
  if mon then mon.records_in[node.stage_name] = (mon.records_in[node.stage_name] or 0) + records end
  local all = kafka.read_batch(node, cb, self.dead, true)
  local parts = kafka.partitions(input.src)
  local by_index = {}
  local A, B, P, O = all.a, all.b, all.part, all.offs
  local keyed = all.b ~= batch.empty().b
  for i = 1, all.n do
    local pi = P[i]
    local sub = by_index[pi]
    if not sub then
      sub = { n = 0, a = {}, b = keyed and {} or all.b, src = node.stage_name, pos = {} }
      by_index[pi] = sub
    end
    local m = sub.n + 1
    sub.n = m
    sub.a[m] = A[i]
    if keyed then sub.b[m] = B[i] end
    sub.pos[m - 1] = O[i]
  end
  for pi, sub in pairs(by_index) do
    local tp = parts[pi + 1]
    local task = tp and self.tasks[tp.topic .. "-" .. tp.partition]
    if task then task.input = sub end
  end
  for _, tp in ipairs(parts) do
    local task = self.tasks[tp.topic .. "-" .. tp.partition]
    if task and tp.next >= 0 then task.next = tp.next end
  end
  return records
end

function Tasks:report_batch(records, processing_ms, delay_ms)
  local keys, ntasks = 0, 0
  for task in self:each() do
    keys = keys + task.S.plan.state_keys()
    ntasks = ntasks + 1
  end
  local dead = tonumber(C.sr_loop_dead_letters(self.loop))
  if self.monitor then
    self.monitor:batch(self, { batch = self.nbatches, time_ms = self.last_time, records = records,
      processing_ms = processing_ms, scheduling_delay_ms = delay_ms, state_keys = keys,
      dead_letters = dead - self.dead_before })
  end
  if not self.o.quiet then
    self.log("batch %d ms: %d records, %.1f ms processing, %d ms delay, %d keys, %d dead letters, %d tasks",
      self.last_time, records, processing_ms, delay_ms, keys, dead - self.dead_before, ntasks)
  end
  if self.o.stats_fh then
    self.o.stats_fh:write(('{"batch": %d, "time_ms": %d, "records": %d, "processing_ms": %.3f, '
      .. '"scheduling_delay_ms": %d, "state_keys": %d, "dead_letters": %d, "tasks": %d}\n'):format(
      self.nbatches, self.last_time, records, processing_ms, delay_ms, keys, dead - self.dead_before, ntasks))
    self.o.stats_fh:flush()
  end
  self.dead_before = dead
end

-- For the HTTP monitor (streamrun.monitor): keys per stateful stage and
-- window, summed over the tasks, and where each source stands.
function Tasks:state_sizes()
  local sum = {}
  for task in self:each() do
    for _, st in ipairs(monitor.state_sizes(task.S.plan)) do sum[st.stage] = (sum[st.stage] or 0) + st.keys end
  end
  local out = {}
  for stage, keys in pairs(sum) do out[#out + 1] = { stage = stage, keys = keys } end
  table.sort(out, function(a, b) return a.stage < b.stage end)
  return out
end

function Tasks:positions()
  local out = {}
  for _, input in ipairs(self.inputs) do out[input.node.stage_name] = kafka.position(input.node, input.src) end
  return out
end

function Tasks:checkpoint_after(time_ms, finished)
  for task in self:each() do task.S:checkpoint_after(time_ms, finished, false) end
end

-- The job ends: every task's last checkpoint written, its lock released.
function Tasks:finish()
  if self.o.stats_fh then self.o.stats_fh:close() end
  for task in self:each() do
    if task.S.writer then task.S.writer:wait() end
    C.sr_lock_task_release(task.lock)
  end
  if not self.o.quiet then
    self.log("finished: %d batches, %d records, %d dead letters", self.nbatches, self.total_records,
      tonumber(C.sr_loop_dead_letters(self.loop)))
  end
end

-- Opens a Kafka job as tasks. o: session options with settings and
-- make_loop (streamrun.runner). Returns it, or nil and the exit code.
function M.open(job, o)
  local settings = o.settings
  -- Every task runs every output: files would be written (and cut back on
  -- restore) by several tasks at once.
  for _, node in ipairs(job.outputs) do
    if (node.op == "to_json_lines" and node.path ~= "-") or node.op == "save_as_text_files" then
      o.log("%s: output %s writes files, which the tasks of a Kafka job would share: write to Kafka (to_kafka), "
        .. "standard output or foreach_batch", node.where, node.stage_name)
      return nil, 2
    end
  end
  local ok, err = core.mkdir_p(settings.dir .. "/tasks")
  if not ok then
    o.log("checkpoint directory %s: %s", settings.dir, err)
    return nil, 1
  end
  local T = setmetatable({
    job = job, o = o, settings = settings, log = o.log, tasks = {}, later = {}, told = {},
    nbatches = 0, batches_base = 0, total_records = 0, dead_before = 0, started = core.clock_ms(),
  }, Tasks)
  T.loop = o.make_loop()
  if not T.loop then return nil, 1 end
  T.dead = function(source, offset, reason, record, partition)
    C.sr_loop_dead_letter(T.loop, source, partition or -1, offset or -1, reason, record, #record)
  end
  local wok, werr = watchdog.start(job, settings.dir)
  if not wok then T.log("%s", werr) end
  -- One consumer per kafka source, all in the job's group. The job's
  -- nodes stay free of the loop's index: the tasks' sessions are fed here.
  T.inputs = {}
  local topics = {}
  for _, node in ipairs(job.sources) do
    node.tasks = true
    local sok, serr = session.add_c_source(T.loop, node, {})
    if not sok then
      T.log("%s", serr)
      return nil, 1
    end
    local input = { node = node, index = node.c_index }
    node.c_index = nil
    input.src = C.sr_loop_source(T.loop, input.index)
    T.inputs[#T.inputs + 1] = input
    topics[#topics + 1] = table.concat(node.topics, ",")
  end
  T.log("job %s runs as tasks, one per partition of %s, under %s/tasks (group %s)", job.name,
    table.concat(topics, ","), settings.dir, job.sources[1].group)
  return T
end

return M
