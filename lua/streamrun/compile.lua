-- streamrun.compile: turns a job's stage graph into its per-batch function.
-- Stages run in creation order (always topological); chains of narrow
-- stages are fused into one loop; every other stage runs once per batch
-- over whole batches. Each becomes one step (streamrun.steps) and the plan
-- runs them in order; calls into user code go through the plan's guard
-- (streamrun.guard).
local batch = require "streamrun.batch"
local eventtime = require "streamrun.eventtime"
local guard = require "streamrun.guard"
local native = require "streamrun.native"
local steps_of = require "streamrun.steps"
local watchdog = require "streamrun.watchdog"
local clock_ms = require("streamrun.core").C.sr_clock_ms

local xpcall, traceback, pairs, ipairs, type = xpcall, debug.traceback, pairs, ipairs, type
local concat = table.concat

local M = {}

-- The stages a chain can fold its elements into (streamrun.fuse).
local SINKS = { reduce_by_key = true, count_by_value = true }

-- Whether a stage's output must say where each element came from: a
-- consumer reports failures per element (a chain, map_with_state), or
-- passes the elements on to one (union).
local function needs_origin(node, consumers_of)
  for _, c in ipairs(consumers_of[node] or {}) do
    if c.kind == "narrow" or c.op == "map_with_state" then return true end
    if c.op == "union" and needs_origin(c, consumers_of) then return true end
  end
  return false
end

-- The job's stages grouped into what will be steps, in order: { kind =
-- "chain", stages, input } for consecutive narrow stages whose input has
-- no other consumer, { kind = "native", node, stages, input } for a
-- built-in chain run in C with its consumer node (whose own entry goes),
-- else { node }.
-- Returns them, the consumers of each node, and the sources whose batches
-- a native step reads as they came (plan.raw_sources).
local function group(job)
  local consumers_of = {}
  for _, node in ipairs(job.nodes) do
    for _, input in ipairs(node.inputs) do
      consumers_of[input] = consumers_of[input] or {}
      table.insert(consumers_of[input], node)
    end
  end
  local function only_consumer(n)
    local c = consumers_of[n]
    return c and #c == 1 and c[1] or nil
  end
  local groups, chain_of = {}, {}
  for _, node in ipairs(job.nodes) do
    if node.kind == "narrow" then
      local input = node.inputs[1]
      local chain = input.kind == "narrow" and only_consumer(input) and chain_of[input]
      if chain then
        chain.stages[#chain.stages + 1] = node
      else
        chain = { kind = "chain", stages = { node }, input = input }
        groups[#groups + 1] = chain
      end
      chain_of[node] = chain
    else
      groups[#groups + 1] = { node = node }
    end
  end
  -- Built-ins the compiler runs in C, asked for by name: the word count
  -- (streamrun.native).
  local replaced, raw = {}, {}
  for _, gr in ipairs(groups) do
    -- (A source with event times is read in Lua: its records are stamped.)
    local counter = gr.kind == "chain" and not gr.input.event_time and native.is_word_count(gr, only_consumer)
    if counter then
      gr.kind, gr.node = "native", counter
      replaced[counter] = true
      if only_consumer(gr.input) then raw[gr.input] = true end
    end
  end
  -- A chain reads a text source's records where they are, in the C batch
  -- (streamrun.fuse): the words of a first flat_map(sr.words), else each
  -- line made a string as the loop takes it. The job's one event-time
  -- source too, when its event_time is a function: the chain stamps its
  -- records in the same loop (streamrun.eventtime).
  local timed = 0
  for _, node in ipairs(job.sources) do
    if node.event_time ~= nil then timed = timed + 1 end
  end
  for _, gr in ipairs(groups) do
    local first, input = gr.kind == "chain" and gr.stages[1], gr.input
    if first and input.kind == "source"
       and input.format == "text" and not input.framed and only_consumer(input)
       and (input.event_time == nil or (timed == 1 and type(input.event_time) == "function")) then
      raw[input] = true
    end
  end
  -- A chain whose elements only a reduce_by_key or count_by_value reads
  -- folds them into that stage as they come (streamrun.fuse's sink).
  for _, gr in ipairs(groups) do
    local last = gr.kind == "chain" and gr.stages[#gr.stages]
    local c = last and only_consumer(last)
    if c and SINKS[c.op] and #c.inputs == 1 and not replaced[c] then
      gr.sink = c
      replaced[c] = true
    end
  end
  for i = #groups, 1, -1 do
    if groups[i].kind == nil and replaced[groups[i].node] then table.remove(groups, i) end
  end
  -- The chain that is the only consumer of the job's one event-time
  -- source, whose event_time is a function, stamps its records in its own
  -- loop (streamrun.eventtime): from a text source, each line is made once.
  for _, gr in ipairs(groups) do
    local input = gr.input
    if gr.kind == "chain" and input.kind == "source" and timed == 1 and type(input.event_time) == "function"
       and only_consumer(input) == gr.stages[1] then
      gr.stamps = true
    end
  end
  return groups, consumers_of, raw
end

-- What the watchdog names for a step that runs user code (a fused chain:
-- its stages; the hook names the very one from its function); nil for a
-- step that calls no user function (not watched).
local function label_of(step)
  if step.kind == "chain" then
    local names = {}
    for i, s in ipairs(step.stages) do names[i] = s.stage_name end
    if step.sink then names[#names + 1] = step.sink.stage_name end
    return concat(names, " > ")
  end
  if step.node.fn or step.node.finv then return step.node.stage_name end
  return nil
end

-- A runtime fault keeps its traceback; a fatal error of the job (a table:
-- on_error = "fail") goes up as it is.
local function run_traceback(e)
  if type(e) == "table" then return e end
  return traceback(e, 2)
end

-- A plan: run(inputs, time_ms) runs one batch. inputs[source_node] = batch.
-- handlers: dead_letter, on_error (streamrun.guard), sink (streamrun.outputs;
-- only read), states and windows: stage name -> state or window to
-- continue from (else new ones), event: the watermark's data to go on
-- with (streamrun.eventtime; else an empty one).
function M.compile(job, handlers)
  local g = guard.new(handlers)
  local groups, consumers_of, raw = group(job)
  -- Output steps whose last write failed, each with its error and whether
  -- it is for good (standard output closed).
  local failing = {}
  local plan = { job = job, states = {}, windows = {}, raw_sources = raw, final = false }
  -- The job's watermark, when a source has event times.
  plan.event = eventtime.tracker(job, handlers.event or eventtime.new_data(), handlers.dead_letter)
  local ctx = {
    guard = g, sink = handlers.sink, states_in = handlers.states, windows_in = handlers.windows,
    states = plan.states, windows = plan.windows, failing = failing, plan = plan,
    workers = handlers.workers, -- streamrun.workers: the session's pool
  }
  local steps = {}
  for i, gr in ipairs(groups) do
    local step
    if gr.kind == "chain" then
      step = steps_of.chain(gr.stages, gr.input, needs_origin(gr.stages[#gr.stages], consumers_of), ctx, gr.sink,
        gr.stamps)
    elseif gr.kind == "native" then
      step = steps_of.native(gr.node, gr.stages, gr.input, ctx)
    else
      step = (steps_of[gr.node.kind] or error("compile: no step for a " .. gr.node.kind .. " stage"))(gr.node, ctx)
    end
    step.label = label_of(step)
    steps[i] = step
  end
  -- A keyed segment runs on every worker (streamrun.exchange); else why
  -- not, for the log.
  plan.parallel_seg, plan.parallel_why = require("streamrun.exchange").attach(job, steps, ctx)
  plan.steps = steps
  -- Milliseconds each step has run, all batches together (one clock read
  -- per step and batch), and the stages each step runs: the status page's.
  local step_ms, step_stages = {}, {}
  for i, gr in ipairs(groups) do
    step_ms[i] = 0
    local names = {}
    for _, n in ipairs(gr.stages or {}) do names[#names + 1] = n.stage_name end
    if gr.node and names[#names] ~= gr.node.stage_name then names[#names + 1] = gr.node.stage_name end
    if gr.sink then names[#names + 1] = gr.sink.stage_name end
    step_stages[i] = names
  end
  plan.step_ms, plan.step_stages = step_ms, step_stages

  for _, node in ipairs(job.nodes) do
    for _, v in pairs(node) do
      if type(v) == "function" then watchdog.register(v, node.stage_name) end
    end
  end

  local P, enter = watchdog.P, watchdog.enter
  local batch_ms, timeout_ms = job.batch_ms, job.stage_timeout_ms

  -- A source stamped before the steps (not in its own chain) is watched
  -- as step #steps + j (j: its place among the event-time sources), so
  -- stage_timeout reaches its event_time function, and a restart skips
  -- the record a compiled loop there was stuck at.
  if plan.event then
    local base = #steps
    function plan.event.watch(j, node, b, time_ms)
      local label = node.stage_name
      enter(base + j, label)
      local poisoned = watchdog.poison and watchdog.poison[time_ms]
      local list = poisoned and poisoned[base + j]
      if list then return g.skip_poisoned(label, b, list, timeout_ms) end
      return b
    end
  end

  local function run_steps(inputs, time_ms, final)
    -- Windows are due at multiples of their slide after the time before
    -- the first batch (Spark's zero time).
    if not plan.zero_ms then plan.zero_ms = time_ms - batch_ms end
    local results = {}
    for node, b in pairs(inputs) do results[node] = b end
    if plan.event then
      plan.event:batch(results, time_ms, final)
      enter(0)
    end
    local since_zero = time_ms - plan.zero_ms
    local poisoned = watchdog.poison and watchdog.poison[time_ms]
    local t0 = clock_ms()
    for k = 1, #steps do
      local step = steps[k]
      enter(k, step.label)
      -- The skip is this step's alone: other consumers of its input see
      -- every record.
      local shared, unskipped
      if poisoned and poisoned[k] then
        shared = step.input
        unskipped = results[shared]
        results[shared] = g.skip_poisoned(step.label, unskipped or batch.empty(), poisoned[k], timeout_ms)
      end
      local every = step.every
      -- Downstream of a window: runs only when the window has output.
      -- (Stages at the batch rate run every batch, also after a reload
      -- changed the interval off the grid of zero_ms.)
      if not (every and every > batch_ms and since_zero % every ~= 0) then
        results[step.node] = step:run(results, time_ms)
      end
      if shared then results[shared] = unskipped end
      local t1 = clock_ms()
      step_ms[k] = step_ms[k] + (t1 - t0)
      t0 = t1
    end
    return results
  end

  -- Runs one batch; returns the results of every stage by node (for tests).
  -- The watchdog sees the batch from start to end, also when it raises.
  -- An output that fails to write does not stop the batch: it is listed in
  -- plan.failing_outputs() until plan.retry_outputs() writes it.
  -- final: the last batch of bounded input (a final watermark: every
  -- event-time window, session and timeout fires, and every key of a
  -- map_with_state with a timeout times out).
  function plan.run(inputs, time_ms, final)
    for i = #failing, 1, -1 do failing[i] = nil end
    P.step = 0
    P.batch_ms = time_ms
    plan.final = final or false
    local ok, results = xpcall(run_steps, run_traceback, inputs, time_ms, final)
    P.batch_ms = 0
    P.step = 0
    if not ok then error(results, 0) end
    return results
  end

  -- { {node, error, permanent}... } of the outputs that failed to write.
  function plan.failing_outputs() return failing end

  -- Writes again what failing outputs kept; returns how many still fail.
  function plan.retry_outputs()
    for i = #failing, 1, -1 do
      local step = failing[i]
      local ok, err, permanent = step.retry()
      if ok then
        table.remove(failing, i)
      else
        step.error, step.permanent = err, permanent
      end
    end
    return #failing
  end

  -- Keys held in all the job's state (a window's running result too, as
  -- the status page counts them), for the status line. (Per batch, so
  -- over arrays: this LuaJIT can cut hot pairs() loops short.)
  local state_list, window_list = {}, {}
  for _, step in ipairs(steps) do
    if step.kind == "stateful" or step.kind == "event" then state_list[#state_list + 1] = step.state end
  end
  for _, w in pairs(plan.windows) do window_list[#window_list + 1] = w end
  function plan.state_keys()
    local n = 0
    for i = 1, #state_list do n = n + state_list[i]:count() end
    for i = 1, #window_list do
      local r = window_list[i].result
      if r then n = n + r:count() end
    end
    return n
  end

  return plan
end

return M
