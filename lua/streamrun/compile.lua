-- streamrun.compile: turns a job's stage graph into its per-batch function.
-- Stages run in creation order (always topological); chains of narrow
-- stages are fused into one loop (streamrun.fuse); every other stage runs
-- once per batch over whole batches (streamrun.ops, streamrun.outputs).
local batch = require "streamrun.batch"
local format = require "streamrun.format"
local fuse = require "streamrun.fuse"
local native = require "streamrun.native"
local ops = require "streamrun.ops"
local outputs = require "streamrun.outputs"
local stateful = require "streamrun.stateful"
local watchdog = require "streamrun.watchdog"
local windows = require "streamrun.windows"

local xpcall, traceback, select = xpcall, debug.traceback, select
local concat, ipairs = table.concat, ipairs

local M = {}

-- Keeps the traceback's lines that are the user's code, not the runtime's
-- (the first line, the error itself, always).
local function trim_traceback(msg)
  local out = {}
  for line in tostring(msg):gmatch("[^\n]+") do
    if line:find("in function 'xpcall'", 1, true) or line:find("[C]: in function 'pcall'", 1, true) then break end
    if #out == 0 or (not line:find("streamrun/[%w_]+%.lua") and not line:find("^%s*%[string")
                     and not line:find("^%s*stages ")) then
      out[#out + 1] = line
    end
  end
  return concat(out, "\n")
end

-- What to write about the element a failing call received.
local function describe_args(...)
  local n = select("#", ...)
  if n == 0 then return "" end
  local a, b = ...
  if n >= 2 and b ~= nil then return format.json({ a, b }) end
  return format.json(a)
end

-- handlers: { dead_letter(source, offset, reason, record), on_error =
-- "dead_letter"|"fail" }. Returns report(node, err, ...args), for a failure
-- of no one record (the dead letter's source is the stage, offset -1), and
-- report_at(node, err, input, i, ...args), for a failure on element i of
-- the stage's input batch: the dead letter has that element's source and
-- record offset when it came from one record (batch.origin).
local function make_report(handlers)
  local function emit(node, source, offset, err, ...)
    local reason = ("stage %s (%s at %s): %s"):format(node.stage_name, node.op, node.where, trim_traceback(err))
    local record = describe_args(...)
    if handlers.on_error == "fail" then
      error({ fatal = reason .. "\n  element: " .. record }, 0)
    end
    handlers.dead_letter(source, offset, reason, record)
  end
  local function report(node, err, ...)
    emit(node, node.stage_name, -1, err, ...)
  end
  local function report_at(node, err, input, i, ...)
    local source, offset = batch.origin(input, i)
    if not source then source, offset = node.stage_name, -1 end
    emit(node, source, offset, err, ...)
  end
  return report, report_at
end

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

-- A plan: run(inputs, time_ms) runs one batch. inputs[source_node] = batch.
-- handlers: dead_letter, on_error, sink (see streamrun.outputs), and
-- states: stage name -> state table to continue from (else new ones).
function M.compile(job, handlers)
  local report, report_at = make_report(handlers)
  -- Stages that call a user function once per batch (transform) run it
  -- guarded; the per-record loops (reduce, reduce_by_key) resume after a
  -- failing call (streamrun.resume).
  local function guarded_call(node, f, ...)
    local ok, r = xpcall(f, traceback, ...)
    if ok then return r end
    report(node, r, ...)
    return nil, true
  end
  local wide_env = { call = guarded_call, report = report, report_at = report_at }

  local consumers, consumers_of = {}, {}
  for _, node in ipairs(job.nodes) do
    for _, input in ipairs(node.inputs) do
      consumers[input] = (consumers[input] or 0) + 1
      consumers_of[input] = consumers_of[input] or {}
      table.insert(consumers_of[input], node)
    end
  end

  -- Group narrow stages into chains.
  local steps, chain_of = {}, {}
  for _, node in ipairs(job.nodes) do
    if node.kind == "narrow" then
      local input = node.inputs[1]
      local chain = input.kind == "narrow" and consumers[input] == 1 and chain_of[input]
      if chain then
        chain.stages[#chain.stages + 1] = node
      else
        chain = { kind = "chain", stages = { node }, input = input }
        steps[#steps + 1] = chain
      end
      chain_of[node] = chain
    else
      steps[#steps + 1] = { kind = node.kind, node = node }
    end
  end

  local plan = { job = job, steps = steps, states = {}, windows = {}, raw_sources = {} }

  -- Chains the compiler runs in C: the word count (streamrun.native).
  local only_consumer = {}
  for _, node in ipairs(job.nodes) do
    for _, input in ipairs(node.inputs) do
      only_consumer[input] = consumers[input] == 1 and node or nil
    end
  end
  local replaced = {}
  for _, step in ipairs(steps) do
    if step.kind == "chain" then
      local reducer = native.is_word_count(step, function(n) return only_consumer[n] end)
      if reducer then
        step.kind, step.node, step.count = "native", reducer, native.word_counter()
        replaced[reducer] = true
        if only_consumer[step.input] then plan.raw_sources[step.input] = true end
      end
    end
  end
  for i = #steps, 1, -1 do
    if steps[i].kind == "wide" and replaced[steps[i].node] then table.remove(steps, i) end
  end
  local state_env = { report = report, report_at = report_at }

  local sink = handlers.sink
  sink.call = guarded_call
  sink.fail = report
  for _, step in ipairs(steps) do
    if step.kind == "chain" then
      step.node = step.stages[#step.stages]
      step.fused = fuse.chain(step.stages, report_at, needs_origin(step.node, consumers_of))
    elseif step.kind == "stateful" then
      local name = step.node.stage_name
      step.state = handlers.states and handlers.states[name] or stateful.new_state(step.node)
      -- Kept state (a restore, a reload) times out as the stage says now.
      step.state:set_timeout(step.node.timeout_ms)
      step.seeded = not step.node.initial or (handlers.states and handlers.states[name]) ~= nil
      step.op = stateful[step.node.op]
      plan.states[name] = step.state
    elseif step.kind == "windowed" then
      local name = step.node.stage_name
      step.window = handlers.windows and handlers.windows[name] or windows.new_window(step.node)
      plan.windows[name] = step.window
    elseif step.node.op == "state_snapshots" then
      local state = plan.states[step.node.inputs[1].stage_name]
      step.kind = "view"
      step.op = function(node, env) return stateful.state_snapshots(node, env, state) end
    elseif step.kind == "wide" then
      step.op = ops[step.node.op] or error("compile: no operation " .. step.node.op)
    elseif step.kind == "output" then
      step.write, step.retry = outputs.make(step.node, sink)
    end
  end

  -- What the watchdog names for each step that runs user code (a fused
  -- chain: its stages; the hook names the very one from its function).
  for _, node in ipairs(job.nodes) do
    for _, v in pairs(node) do
      if type(v) == "function" then watchdog.register(v, node.stage_name) end
    end
  end
  for _, step in ipairs(steps) do
    local k = step.kind
    if k == "chain" then
      local names = {}
      for i, s in ipairs(step.stages) do names[i] = s.stage_name end
      step.label = concat(names, " > ")
    elseif step.node.fn or step.node.finv then -- steps that call no user function are not watched
      step.label = step.node.stage_name
    end
  end

  -- Records the watchdog found stuck where it could not interrupt them
  -- (the job restarted): they go to dead letters instead of running, in
  -- the order found, each numbered after the skips before it. When the
  -- step's progress is not by input record (rec <= 0), the step's whole
  -- input does.
  local P, enter = watchdog.P, watchdog.enter
  local function skip_poisoned(step, input, list)
    local name = step.label
    for j = 1, #list do
      local p = list[j]
      local reason = ("stage_timeout: stage %s ran longer than %d ms and could not be interrupted; the job"
        .. " restarted and skips this record"):format(p.stage, job.stage_timeout_ms)
      if handlers.on_error == "fail" then
        local rec = p.rec >= 1 and p.rec <= input.n and describe_args(input.a[p.rec], input.b[p.rec]) or "(the step's input)"
        error({ fatal = ("stage %s: %s\n  element: %s"):format(p.stage, reason, rec) }, 0)
      end
      local function letter(i)
        local source, offset = batch.origin(input, i)
        if not source then source, offset = name, -1 end
        handlers.dead_letter(source, offset, ("stage %s: %s"):format(p.stage, reason),
          describe_args(input.a[i], input.b[i]))
      end
      if p.rec <= 0 or p.rec > input.n then
        for i = 1, input.n do letter(i) end
        input = batch.empty()
      else
        letter(p.rec)
        -- The rest keep saying which records they came from (o: index map).
        local OA, OB, O, m = {}, {}, {}, 0
        for i = 1, input.n do
          if i ~= p.rec then
            m = m + 1
            OA[m], OB[m], O[m] = input.a[i], input.b[i], i
          end
        end
        input = { n = m, a = OA, b = OB, o = O, from = input }
      end
      P.skipped = j
    end
    return input
  end

  -- Output steps whose last write failed, each with its error and whether
  -- it is for good (standard output closed).
  local failing = {}

  local run_steps
  -- A runtime fault keeps its traceback; a fatal error of the job (a
  -- table: on_error = "fail") goes up as it is.
  local function run_traceback(e)
    if type(e) == "table" then return e end
    return traceback(e, 2)
  end

  -- Runs one batch; returns the results of every stage by node (for tests).
  -- The watchdog sees the batch from start to end, also when it raises.
  -- An output that fails to write does not stop the batch: it is listed in
  -- plan.failing_outputs() until plan.retry_outputs() writes it.
  function plan.run(inputs, time_ms)
    for i = #failing, 1, -1 do failing[i] = nil end
    P.step = 0
    P.batch_ms = time_ms
    local ok, results = xpcall(run_steps, run_traceback, inputs, time_ms)
    P.batch_ms = 0
    P.step = 0
    if not ok then error(results, 0) end
    return results
  end

  function run_steps(inputs, time_ms)
    -- Windows are due at multiples of their slide after the time before
    -- the first batch (Spark's zero time).
    if not plan.zero_ms then plan.zero_ms = time_ms - job.batch_ms end
    local results = {}
    local since_zero = time_ms - plan.zero_ms
    local poisoned = watchdog.poison and watchdog.poison[time_ms]
    for k, step in ipairs(steps) do
      local node = step.node
      local kind = step.kind
      enter(k, step.label)
      -- The skip is this step's alone: other consumers of its input see
      -- every record.
      local shared, unskipped
      if poisoned and poisoned[k] then
        shared = step.input or node.inputs[1]
        unskipped = results[shared]
        results[shared] = skip_poisoned(step, unskipped or batch.empty(), poisoned[k])
      end
      local every = kind == "chain" and step.stages[1].every_ms or node.every_ms
      if every and every > job.batch_ms and since_zero % every ~= 0 then
        -- Downstream of a window: runs only when the window has output.
        -- (Stages at the batch rate run every batch, also after a reload
        -- changed the interval off the grid of zero_ms.)
      elseif kind == "source" then
        results[node] = inputs[node] or batch.empty()
      elseif kind == "chain" then
        results[node] = step.fused.run(results[step.input])
      elseif kind == "native" then
        results[node] = step.count(results[step.input])
      elseif kind == "wide" then
        local a, b = results[node.inputs[1]], node.inputs[2] and results[node.inputs[2]]
        results[node] = step.op(node, wide_env, a, b or time_ms, time_ms)
      elseif kind == "stateful" then
        if not step.seeded then
          step.seeded = true
          stateful.seed(node, state_env, step.state, time_ms)
        end
        results[node] = step.op(node, state_env, step.state, results[node.inputs[1]], time_ms)
      elseif kind == "windowed" then
        results[node] = windows.run(node, state_env, step.window, results[node.inputs[1]], time_ms, plan.zero_ms)
      elseif kind == "view" then
        results[node] = step.op(node, state_env)
      else
        local ok, err, permanent = step.write(results[node.inputs[1]], time_ms)
        if not ok then
          step.error, step.permanent = err, permanent
          failing[#failing + 1] = step
        end
      end
      if shared then results[shared] = unskipped end
    end
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

  -- Keys held in all the job's state, for the status line. (Per batch,
  -- so over an array: this LuaJIT can cut hot pairs() loops short.)
  local state_list = {}
  for _, step in ipairs(steps) do
    if step.state then state_list[#state_list + 1] = step.state end
  end
  function plan.state_keys()
    local n = 0
    for i = 1, #state_list do n = n + state_list[i]:count() end
    return n
  end

  return plan
end

return M
