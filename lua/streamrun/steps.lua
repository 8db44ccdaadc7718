-- streamrun.steps: the steps of a plan, one factory per kind. A step runs
-- one stage, or a fused chain of narrow ones, once per batch through one
-- interface: step:run(results, time_ms) reads its inputs' batches from
-- results (by node) and returns the output batch of its stage (step.node);
-- an output step returns nothing. Every step also says step.kind, its
-- first input (step.input: the one a poisoned record is skipped from) and
-- step.every (its rate when slower than the batch's: downstream of a
-- window).
--
-- ctx, shared by a plan's steps: { guard (streamrun.guard), states_in and
-- windows_in (stage name -> state or window to continue from, else new
-- ones are made), states and windows (the plan's tables, filled here),
-- sink (streamrun.outputs; only read), failing (the outputs whose last
-- write failed), plan (for its zero_ms) }.
local batch = require "streamrun.batch"
local evwindows = require "streamrun.evwindows"
local fuse = require "streamrun.fuse"
local native = require "streamrun.native"
local ops = require "streamrun.ops"
local outputs = require "streamrun.outputs"
local stateful = require "streamrun.stateful"
local windows = require "streamrun.windows"

local setmetatable, empty, rawget = setmetatable, batch.empty, rawget
local ffi_string = require("ffi").string

local M = {}

local function class()
  local c = {}
  c.__index = c
  return c
end

local function new(c, kind, node, input, fields)
  local step = fields or {}
  step.kind, step.node, step.input, step.every = kind, node, input, node.every_ms
  return setmetatable(step, c)
end

-- A source: its batch is the one the plan was given (in results already).
local Source = class()
function M.source(node)
  return new(Source, "source", node, nil)
end
function Source:run(results)
  return results[self.node] or empty()
end

-- A chain of narrow stages fused into one loop (streamrun.fuse). origin:
-- its output must say where each element came from (a consumer reports
-- failures per element). sink: the reduce_by_key or count_by_value stage
-- the chain folds into (then the step's output is that stage's).
local Chain = class()
function M.chain(stages, input, origin, ctx, sink, stamps)
  local step = new(Chain, "chain", sink or stages[#stages], input, { stages = stages, sink = sink })
  step.every = stages[1].every_ms
  -- Event times follow each element through the chain by its origin
  -- index: no work per record in the fused loop itself. (A chain folding
  -- into its sink makes no elements: the sink's results carry no times.)
  step.timed = input.timed and not sink
  -- stamps: the chain is the only consumer of the job's one event-time
  -- source and stamps its records itself (streamrun.eventtime); from a
  -- text source read where it is, each line is made once, for the
  -- event_time call and the first stage.
  local tr = ctx.plan.event
  local stamp
  if stamps and tr then
    tr.chained = input
    step.tracker = tr
    stamp = {
      fn = input.event_time,
      dead = function(b, i, err)
        -- An error event_time raised at its caller's level (a tail call of
        -- assert, error(msg, 2)) points into the chain's generated loop:
        -- the reason names event_time instead.
        local msg = tostring(err):match("^stages [^\n]-:%d+: (.*)$")
        if msg then err = "event_time: " .. msg end
        local cb = rawget(b, "cbatch")
        local record
        if cb then
          local s = cb.off[i - 1]
          record = ffi_string(cb.data + s, cb.off[i] - s)
        else
          record = b.a[i]
        end
        tr:dead_record(input, b, i, err, record)
      end,
    }
  end
  step.fused = fuse.chain(stages, ctx.guard, origin or step.timed, sink, stamp)
  return step
end
function Chain:run(results)
  local input = results[self.input]
  local tr, out = self.tracker, nil
  if tr and tr.waiting == self.input then
    local T = self.fused.keeps_times and batch.reuse_times(tr.buffers[self.input], input.n) or nil
    local top
    out, top = self.fused.run(input, T)
    input.t = T
    tr:stamped(self.input, top)
  else
    out = self.fused.run(input)
  end
  local IT = self.timed and not out.t and input.t
  if IT then
    local O, OT = out.o, batch.reuse_times(self, out.n)
    for m = 1, out.n do OT[m] = IT[O[m]] end
    out.t = OT
  end
  return out
end

-- A built-in chain and the stage consuming it, run in C (streamrun.native):
-- node is that stage (count_by_value), stages the chain, input the source.
-- A batch the C counter cannot take (not all lines) goes through the chain
-- and the stage in Lua, with their guard.
local Native = class()
function M.native(node, stages, input, ctx)
  return new(Native, "native", node, input, {
    count = native.word_counter(ctx.workers), fused = fuse.chain(stages, ctx.guard, false),
    op = ops[node.op], guard = ctx.guard,
  })
end
function Native:run(results, time_ms)
  local input = results[self.input]
  local out = self.count(input)
  if out then return out end
  return self.op(self.node, self.guard, self.fused.run(input), time_ms, time_ms)
end

-- A stage over whole batches (streamrun.ops); a second input (union, the
-- joins) is read too.
local Wide = class()
function M.wide(node, ctx)
  local op = ops[node.op] or error("compile: no operation " .. node.op)
  return new(Wide, "wide", node, node.inputs[1], { op = op, input2 = node.inputs[2], guard = ctx.guard })
end
function Wide:run(results, time_ms)
  local second = self.input2 and results[self.input2] or time_ms
  return self.op(self.node, self.guard, results[self.input], second, time_ms)
end

-- A keyed-state stage (streamrun.stateful): its state is plan.states[name].
local Stateful = class()
function M.stateful(node, ctx)
  local name = node.stage_name
  local kept = ctx.states_in and ctx.states_in[name]
  local state = kept or stateful.new_state(node)
  -- Kept state (a restore, a reload) times out as the stage says now.
  state:set_timeout(node.timeout_ms)
  ctx.states[name] = state
  return new(Stateful, "stateful", node, node.inputs[1], {
    state = state, op = stateful[node.op], guard = ctx.guard, plan = ctx.plan,
    seeded = not stateful.needs_seed(node, state, kept),
  })
end
function Stateful:run(results, time_ms)
  local node, g = self.node, self.guard
  if not self.seeded then
    self.seeded = true
    stateful.unseeded[self.state] = nil
    stateful.seed(node, g, self.state, time_ms)
  end
  return self.op(node, g, self.state, results[self.input], time_ms, self.plan)
end

-- A window stage (streamrun.windows): its window is plan.windows[name].
local Windowed = class()
function M.windowed(node, ctx)
  local name = node.stage_name
  local w = ctx.windows_in and ctx.windows_in[name] or windows.new_window(node)
  ctx.windows[name] = w
  return new(Windowed, "windowed", node, node.inputs[1], { window = w, guard = ctx.guard, plan = ctx.plan })
end
function Windowed:run(results, time_ms)
  return windows.run(self.node, self.guard, self.window, results[self.input], time_ms, self.plan.zero_ms)
end

-- An event-time window or session stage (streamrun.evwindows): its state
-- table is plan.states[name]; the watermark is the plan's tracker's.
local Event = class()
function M.event(node, ctx)
  local name = node.stage_name
  local state = ctx.states_in and ctx.states_in[name] or evwindows.new_state(node)
  ctx.states[name] = state
  return new(Event, "event", node, node.inputs[1], {
    state = state, op = evwindows[node.op], guard = ctx.guard, plan = ctx.plan,
  })
end
function Event:run(results)
  return self.op(self.node, self.guard, self.state, results[self.input], self.plan.event)
end

-- A view of its input's state (state_snapshots): every (k, state) after
-- the input's batch.
local View = class()
function M.view(node, ctx)
  local state = ctx.states[node.inputs[1].stage_name]
    or error("compile: " .. node.stage_name .. " views a stage with no state")
  return new(View, "view", node, node.inputs[1], { state = state, guard = ctx.guard })
end
function View:run()
  return stateful.state_snapshots(self.node, self.guard, self.state)
end

-- An output (streamrun.outputs). A write that fails does not stop the
-- batch: the step goes on ctx.failing with its error and whether the
-- failure is for good, until retry() writes what it kept.
local Output = class()
function M.output(node, ctx)
  local write, retry = outputs.make(node, ctx.sink, ctx.guard)
  return new(Output, "output", node, node.inputs[1], { write = write, retry = retry, failing = ctx.failing })
end
function Output:run(results, time_ms)
  local ok, err, permanent = self.write(results[self.input], time_ms)
  if not ok then
    self.error, self.permanent = err, permanent
    local failing = self.failing
    failing[#failing + 1] = self
  end
end

return M
