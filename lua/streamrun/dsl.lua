-- streamrun.dsl: the job DSL of SPEC section 4. sr.job{...} makes a Job; its
-- source methods and the Stream methods add stages to a graph that
-- streamrun.compile turns into the per-batch function. Mistakes raise errors
-- that name the job script's file:line.
local core = require "streamrun.core"
local eventtime = require "streamrun.eventtime"
local sources = require "streamrun.sources"

local type, pairs, ipairs, tostring, error, setmetatable = type, pairs, ipairs, tostring, error, setmetatable

local M = {}

-- Partitions of a keyed state table (as the checkpoint loader accepts).
local MAX_PARTITIONS = 65536

local LIB_DIR = (debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or ".")

-- The first stack frame outside this library: where the user wrote the call.
local function user_where()
  for level = 3, 40 do
    local info = debug.getinfo(level, "Sl")
    if not info then break end
    local src = info.source or ""
    if src:sub(1, 1) == "@" and info.currentline > 0 and src:sub(2, #LIB_DIR + 1) ~= LIB_DIR then
      return src:sub(2) .. ":" .. info.currentline
    end
  end
  return "?"
end
M.user_where = user_where

-- Raises a job-definition error located at the user's call.
local function fail(fmt, ...)
  error(user_where() .. ": " .. fmt:format(...), 0)
end
M.fail = fail

local function check_fn(op, f, what)
  if type(f) ~= "function" then fail("%s: %s must be a function, got %s", op, what or "argument", type(f)) end
end

local function check_opts(op, opts, allowed)
  if opts == nil then return {} end
  if type(opts) ~= "table" then fail("%s: options must be a table, got %s", op, type(opts)) end
  for k in pairs(opts) do
    if not allowed[k] then fail("%s: unknown option '%s'", op, tostring(k)) end
  end
  return opts
end

local function duration(op, what, d)
  local ms, err = core.duration_ms(d)
  if not ms or ms <= 0 then fail("%s: %s: %s", op, what, err or "must be positive") end
  return ms
end
M.duration = duration

-- -- Job --

local Job = {}
Job.__index = Job
M.Job = Job

-- What a job script holds is a handle; the stage itself is a plain table
-- (the node) that the compiler reads.
local NODE = setmetatable({}, { __tostring = function() return "node" end })
local Stream = {}
local StreamMT = {
  __index = function(_, k)
    local m = Stream[k]
    if m == nil then fail("unknown operation '%s'", tostring(k)) end
    return m
  end,
}
M.Stream = Stream

local function node_of(handle)
  return type(handle) == "table" and rawget(handle, NODE) or nil
end
M.node_of = node_of

local JOB_OPTS = {
  name = true, batch = true, checkpoint = true, max_batch_records = true,
  max_batch_bytes = true, on_error = true, partitions = true, drop_state = true, dead_letters = true,
  stage_timeout = true, http = true, workers = true,
}

function M.job(opts)
  if type(opts) ~= "table" then fail("sr.job: options must be a table") end
  check_opts("sr.job", opts, JOB_OPTS)
  local job = setmetatable({
    name = opts.name or "job",
    batch_ms = duration("sr.job", "batch", opts.batch or "1s"),
    checkpoint = opts.checkpoint,
    max_batch_records = opts.max_batch_records or 100000,
    max_batch_bytes = opts.max_batch_bytes or 64 * 1024 * 1024,
    on_error = opts.on_error or "dead_letter",
    -- A user function running longer is interrupted (false: never).
    stage_timeout_ms = opts.stage_timeout == false and 0
      or duration("sr.job", "stage_timeout", opts.stage_timeout or "30s"),
    partitions = opts.partitions or 16,
    drop_state = opts.drop_state,  -- stage names whose state a reload drops
    -- The dead-letter file rotates at max_bytes, keeping `keep` old ones.
    dead_letters = { max_bytes = 64 * 1024 * 1024, keep = 3 },
    nodes = {},      -- every stage, in creation order
    sources = {},
    outputs = {},
    by_name = {},
    counters = {},
    where = user_where(),
  }, Job)
  if type(job.name) ~= "string" or job.name == "" then fail("sr.job: name must be a non-empty string") end
  if job.on_error ~= "dead_letter" and job.on_error ~= "fail" then
    fail("sr.job: on_error must be \"dead_letter\" or \"fail\", got %s", tostring(job.on_error))
  end
  for _, k in ipairs { "max_batch_records", "max_batch_bytes", "partitions" } do
    local v = job[k]
    if type(v) ~= "number" or v < 1 or v % 1 ~= 0 then fail("sr.job: %s must be a positive integer", k) end
  end
  if job.partitions > MAX_PARTITIONS then fail("sr.job: partitions must be at most %d", MAX_PARTITIONS) end
  if opts.workers ~= nil then -- SPEC section 15; streamrun.workers
    local w, why = require("streamrun.workers").check(opts.workers, "sr.job")
    if not w then fail("%s", why) end
    job.workers = w
  end
  if opts.http ~= nil then
    local host, why = require("streamrun.http").parse_address(opts.http)
    if not host then fail("sr.job: %s", why) end
    job.http = opts.http
  end
  if job.drop_state ~= nil then
    if type(job.drop_state) ~= "table" then fail("sr.job: drop_state must be an array of stage names") end
    for _, n in ipairs(job.drop_state) do
      if type(n) ~= "string" then fail("sr.job: drop_state must be an array of stage names") end
    end
  end
  if opts.dead_letters ~= nil then
    local dl = opts.dead_letters
    if type(dl) ~= "table" then fail("sr.job: dead_letters must be {max_bytes = N, keep = N}") end
    check_opts("sr.job dead_letters", dl, { max_bytes = true, keep = true })
    local mb, keep = dl.max_bytes or job.dead_letters.max_bytes, dl.keep or job.dead_letters.keep
    if type(mb) ~= "number" or mb < 1 or mb % 1 ~= 0 then fail("sr.job: dead_letters.max_bytes must be a positive integer") end
    if type(keep) ~= "number" or keep < 0 or keep > 100 or keep % 1 ~= 0 then
      fail("sr.job: dead_letters.keep must be an integer from 0 to 100")
    end
    job.dead_letters = { max_bytes = mb, keep = keep }
  end
  if job.checkpoint ~= nil then
    local c = job.checkpoint
    if type(c) ~= "table" or type(c.dir) ~= "string" then fail("sr.job: checkpoint must be {dir = \"...\", every = DUR, keep = N}") end
    if c.every ~= nil then duration("sr.job", "checkpoint.every", c.every) end
    if c.keep ~= nil and (type(c.keep) ~= "number" or c.keep < 1 or c.keep % 1 ~= 0) then
      fail("sr.job: checkpoint.keep must be a positive integer")
    end
  end
  return job
end

-- Adds a stage to the job. kind: "source", "narrow", "wide", "stateful",
-- "windowed", "event" (event-time windows and sessions), "view" (of its
-- input's state), "output".
local function add_node(job, op, kind, inputs, fields, name)
  -- The default name skips names the job script has already taken.
  repeat
    job.counters[op] = (job.counters[op] or 0) + 1
  until not job.by_name[op .. "." .. job.counters[op]]
  local node = fields or {}
  node.job, node.op, node.kind, node.inputs = job, op, kind, inputs
  node.id = #job.nodes + 1
  node.where = user_where()
  node.stage_name = op .. "." .. job.counters[op]
  job.nodes[#job.nodes + 1] = node
  node.handle = setmetatable({ [NODE] = node }, StreamMT)
  if name ~= nil then node.handle:name(name) else job.by_name[node.stage_name] = node end
  if kind == "source" then job.sources[#job.sources + 1] = node end
  if kind == "output" then job.outputs[#job.outputs + 1] = node end
  return node.handle
end

-- -- Sources --

local SOURCE_OPTS = { name = true, format = true, max_line = true, event_time = true, watermark = true, idle = true }

local function source(job, op, fields, opts, extra)
  local allowed = SOURCE_OPTS
  if extra then
    allowed = {}
    for k in pairs(SOURCE_OPTS) do allowed[k] = true end
    for k in pairs(extra) do allowed[k] = true end
  end
  opts = check_opts(op, opts, allowed)
  fields.format = opts.format or "text"
  if fields.format ~= "text" and fields.format ~= "json" then
    fail("%s: format must be \"text\" or \"json\", got %s", op, tostring(fields.format))
  end
  fields.max_line = opts.max_line or 1024 * 1024
  if type(fields.max_line) ~= "number" or fields.max_line < 1 then fail("%s: max_line must be a positive number", op) end
  fields.keyed = "no"
  fields.opts = opts
  eventtime.source_opts(op, fields, opts, fail, duration)
  -- A kind the C registry knows runs on the event loop (sources.kind_traits).
  if sources.kind_traits(op).c then fields.c_kind = op end
  return add_node(job, op, "source", {}, fields, opts.name)
end

local function check_host_port(op, host, port, min_port)
  if type(host) ~= "string" or host == "" then fail("%s: host must be a string", op) end
  if type(port) ~= "number" or port % 1 ~= 0 or port < min_port or port > 65535 then
    fail("%s: port must be an integer from %d to 65535, got %s", op, min_port, tostring(port))
  end
end

function Job:socket_text(host, port, opts)
  check_host_port("socket_text", host, port, 1)
  return source(self, "socket_text", { host = host, port = port }, opts)
end

function Job:listen_text(host, port, opts)
  check_host_port("listen_text", host, port, 0)
  local h = source(self, "listen_text", { host = host, port = port }, opts,
    { max_connections = true })
  local n = node_of(h)
  local max = n.opts.max_connections or 1024
  if type(max) ~= "number" or max < 1 or max % 1 ~= 0 or max > 1000000 then
    fail("listen_text: max_connections must be a positive integer, got %s", tostring(max))
  end
  n.max_connections = max
  return h
end

local function check_path(op, path)
  if type(path) ~= "string" or path == "" then fail("%s: path must be a string", op) end
end

function Job:text_file(path, opts)
  check_path("text_file", path)
  return source(self, "text_file", { path = path }, opts)
end

function Job:text_dir(path, opts)
  check_path("text_dir", path)
  return source(self, "text_dir", { path = path }, opts)
end

function Job:tail(path, opts)
  check_path("tail", path)
  local h = source(self, "tail", { path = path }, opts, { from_start = true })
  local n = node_of(h)
  n.from_start = n.opts.from_start and true or false
  return h
end

function Job:stdin(opts)
  return source(self, "stdin", {}, opts)
end

function Job:generator(fn, opts)
  check_fn("generator", fn, "the element function")
  local h = source(self, "generator", { fn = fn }, opts, { rate = true, count = true })
  local n = node_of(h)
  n.rate = n.opts.rate or 1000
  n.total = n.opts.count
  if type(n.rate) ~= "number" or n.rate <= 0 then fail("generator: rate must be a positive number") end
  if n.total ~= nil and (type(n.total) ~= "number" or n.total < 0) then fail("generator: count must be a number >= 0") end
  return h
end

function Job:queue(batches, opts)
  if type(batches) ~= "table" then fail("queue: batches must be an array of arrays") end
  for i, b in ipairs(batches) do
    if type(b) ~= "table" then fail("queue: batch %d must be an array, got %s", i, type(b)) end
  end
  return source(self, "queue", { batches = batches }, opts)
end

-- -- Naming --

function Stream:name(n)
  local handle = self
  self = node_of(self)
  if type(n) ~= "string" or n == "" then fail("name: must be a non-empty string") end
  local job = self.job
  local other = job.by_name[n]
  if other and other ~= self then fail("name '%s' is already used by the stage at %s", n, other.where) end
  if job.by_name[self.stage_name] == self then job.by_name[self.stage_name] = nil end
  self.stage_name = n
  self.named = true
  job.by_name[n] = self
  return handle
end

-- -- Transformations --

local function stream_of(self, op)
  if not self then fail("%s: called on something that is not a stream (use ':' not '.')", op) end
  if self.kind == "output" then fail("%s: %s is an output, not a stream", op, self.stage_name) end
end

local function needs_keyed(self, op)
  stream_of(self, op)
  if self.keyed == "no" then
    fail("%s needs a keyed stream of (k, v) pairs, but %s (%s) gives single elements; make pairs with map(function(x) return k, v end) or key_by", op, self.stage_name, self.op)
  end
end

local function other_stream(self, op, other)
  local node = node_of(other)
  if not node or node.job ~= self.job then
    fail("%s: the other argument must be a stream of the same job", op)
  end
  stream_of(node, op)
  return node
end

local NAME_OPT = { name = true }

local function narrow(op, keyed_result, needs_pairs)
  Stream[op] = function(self, f, opts)
    self = node_of(self)
    if needs_pairs then needs_keyed(self, op) else stream_of(self, op) end
    check_fn(op, f)
    opts = check_opts(op, opts, NAME_OPT)
    local keyed = keyed_result or self.keyed
    return add_node(self.job, op, "narrow", { self }, { fn = f, keyed = keyed, timed = self.timed }, opts.name)
  end
end

narrow("map", "maybe")
narrow("flat_map", "maybe")
narrow("filter", nil)
narrow("map_values", "yes", true)
narrow("flat_map_values", "yes", true)
narrow("key_by", "yes")

function Stream:union(other, opts)
  self = node_of(self)
  stream_of(self, "union")
  other = other_stream(self, "union", other)
  opts = check_opts("union", opts, NAME_OPT)
  local keyed = self.keyed == other.keyed and self.keyed or "maybe"
  return add_node(self.job, "union", "wide", { self, other }, { keyed = keyed, timed = self.timed and other.timed },
    opts.name)
end

local function wide(op, keyed_result, needs_pairs, fn_what)
  Stream[op] = function(self, f, opts)
    self = node_of(self)
    if needs_pairs then needs_keyed(self, op) else stream_of(self, op) end
    if fn_what then check_fn(op, f, fn_what) else opts, f = f, nil end
    opts = check_opts(op, opts, NAME_OPT)
    return add_node(self.job, op, "wide", { self }, { fn = f, keyed = keyed_result }, opts.name)
  end
end

wide("count", "no", false)
wide("count_by_value", "yes", false)
wide("reduce", "maybe", false, "the reduce function")
wide("reduce_by_key", "yes", true, "the reduce function")
wide("group_by_key", "yes", true)

local function join(op)
  Stream[op] = function(self, other, opts)
    self = node_of(self)
    needs_keyed(self, op)
    other = other_stream(self, op, other)
    needs_keyed(other, op)
    opts = check_opts(op, opts, NAME_OPT)
    return add_node(self.job, op, "wide", { self, other }, { keyed = "yes" }, opts.name)
  end
end

join("join")
join("left_outer_join")
join("right_outer_join")
join("full_outer_join")
join("cogroup")

function Stream:transform(f, opts)
  self = node_of(self)
  stream_of(self, "transform")
  check_fn("transform", f)
  opts = check_opts("transform", opts, { name = true, keyed = true })
  local keyed = self.keyed
  if opts.keyed ~= nil then keyed = opts.keyed and "yes" or "no" end
  return add_node(self.job, "transform", "wide", { self }, { fn = f, keyed = keyed }, opts.name)
end

-- -- Windows --

local function check_partitions(op, p)
  if p ~= nil and (type(p) ~= "number" or p < 1 or p > MAX_PARTITIONS or p % 1 ~= 0) then
    fail("%s: partitions must be an integer from 1 to %d", op, MAX_PARTITIONS)
  end
end


-- A window's length and slide in ms; slide defaults to the batch interval.
-- That both are multiples of the batch is checked when the job is loaded
-- (M.validate), after --batch has had its say.
local function window_times(op, length, slide)
  if type(slide) == "table" then fail("%s: slide must be a duration (options go last)", op) end
  local length_ms = duration(op, "window length", length)
  local slide_ms = slide ~= nil and duration(op, "slide", slide) or nil
  return length_ms, slide_ms
end

local WINDOW_OPTS = { name = true, partitions = true }

local function windowed(self, op, fields, opts, extra)
  local allowed = WINDOW_OPTS
  if extra then
    allowed = { name = true, partitions = true }
    for k in pairs(extra) do allowed[k] = true end
  end
  opts = check_opts(op, opts, allowed)
  check_partitions(op, opts.partitions)
  fields.partitions = opts.partitions or self.job.partitions
  return add_node(self.job, op, "windowed", { self }, fields, opts.name)
end

function Stream:window(length, slide, opts)
  self = node_of(self)
  if type(slide) == "table" and opts == nil then slide, opts = nil, slide end
  stream_of(self, "window")
  local length_ms, slide_ms = window_times("window", length, slide)
  return windowed(self, "window", { keyed = self.keyed, length_ms = length_ms, slide_ms = slide_ms }, opts)
end

-- (f, finv, length, slide, opts) with finv optional: (f, length, slide, opts).
local function reducing_args(op, f, finv, length, slide, opts)
  check_fn(op, f, "the reduce function")
  if finv ~= nil and type(finv) ~= "function" then
    finv, length, slide, opts = nil, finv, length, slide
  end
  if type(slide) == "table" and opts == nil then slide, opts = nil, slide end
  return finv, length, slide, opts
end

function Stream:reduce_by_window(f, finv, length, slide, opts)
  self = node_of(self)
  stream_of(self, "reduce_by_window")
  finv, length, slide, opts = reducing_args("reduce_by_window", f, finv, length, slide, opts)
  local length_ms, slide_ms = window_times("reduce_by_window", length, slide)
  return windowed(self, "reduce_by_window", {
    keyed = self.keyed == "no" and "no" or "maybe", fn = f, finv = finv,
    length_ms = length_ms, slide_ms = slide_ms,
  }, opts)
end

function Stream:count_by_window(length, slide, opts)
  self = node_of(self)
  if type(slide) == "table" and opts == nil then slide, opts = nil, slide end
  stream_of(self, "count_by_window")
  local length_ms, slide_ms = window_times("count_by_window", length, slide)
  return windowed(self, "count_by_window", { keyed = "no", length_ms = length_ms, slide_ms = slide_ms }, opts)
end

function Stream:reduce_by_key_and_window(f, finv, length, slide, opts)
  self = node_of(self)
  needs_keyed(self, "reduce_by_key_and_window")
  finv, length, slide, opts = reducing_args("reduce_by_key_and_window", f, finv, length, slide, opts)
  local length_ms, slide_ms = window_times("reduce_by_key_and_window", length, slide)
  local node = windowed(self, "reduce_by_key_and_window", {
    keyed = "yes", fn = f, finv = finv, length_ms = length_ms, slide_ms = slide_ms,
  }, opts, { filter = true })
  local filter = opts and opts.filter
  if filter ~= nil then
    check_fn("reduce_by_key_and_window", filter, "opts.filter")
    node_of(node).filter = filter
  end
  return node
end

function Stream:count_by_value_and_window(length, slide, opts)
  self = node_of(self)
  if type(slide) == "table" and opts == nil then slide, opts = nil, slide end
  stream_of(self, "count_by_value_and_window")
  local length_ms, slide_ms = window_times("count_by_value_and_window", length, slide)
  return windowed(self, "count_by_value_and_window",
    { keyed = "yes", length_ms = length_ms, slide_ms = slide_ms }, opts)
end

-- Works out what depends on the final batch interval (after --batch):
-- every stage's every_ms (how often it runs: its inputs' slide, the batch
-- for sources) and slide_ms (how often it has output: a window's slide, else
-- every_ms). Window lengths and slides must be multiples of what the window
-- reads, and stages with several inputs need them to slide alike. Returns
-- true or nil and "file:line: ...".
function M.validate(job)
  local c = job.checkpoint
  if c and c.every then
    local every = core.duration_ms(c.every)
    if every % job.batch_ms ~= 0 then
      return nil, ("%s: checkpoint.every %d ms is not a multiple of the batch interval %d ms")
        :format(job.where, every, job.batch_ms)
    end
  end
  for _, n in ipairs(job.nodes) do
    local every = job.batch_ms
    for i, input in ipairs(n.inputs) do
      if i > 1 and input.slide_ms ~= every then
        return nil, ("%s: %s: its inputs have output every %d ms and %d ms; they must slide alike")
          :format(n.where, n.stage_name, every, input.slide_ms)
      end
      every = input.slide_ms
    end
    n.every_ms = every
    if n.length_ms then
      n.window_slide_ms = n.window_slide_ms or n.slide_ms or every
      n.slide_ms = n.window_slide_ms
      for _, what in ipairs { "length", "slide" } do
        local ms = what == "length" and n.length_ms or n.slide_ms
        if ms % every ~= 0 then
          local of = every == job.batch_ms and "the batch interval" or "its input's slide"
          return nil, ("%s: %s: window %s %d ms is not a multiple of %s %d ms")
            :format(n.where, n.stage_name, what, ms, of, every)
        end
      end
    else
      n.slide_ms = every
    end
  end
  return true
end

-- -- Keyed state --

function Stream:update_state_by_key(f, opts)
  self = node_of(self)
  needs_keyed(self, "update_state_by_key")
  check_fn("update_state_by_key", f, "the update function")
  opts = check_opts("update_state_by_key", opts, { name = true, initial = true, partitions = true })
  if opts.initial ~= nil and type(opts.initial) ~= "table" and type(opts.initial) ~= "function" then
    fail("update_state_by_key: initial must be a table {key = state} or a function returning one")
  end
  check_partitions("update_state_by_key", opts.partitions)
  return add_node(self.job, "update_state_by_key", "stateful", { self }, {
    fn = f, keyed = "yes", initial = opts.initial,
    partitions = opts.partitions or self.job.partitions, timeout_ms = 0,
  }, opts.name)
end

-- sr.state_spec(fn): what map_with_state needs, set up by chained calls.
local StateSpec = {}
StateSpec.__index = StateSpec

function M.state_spec(f)
  check_fn("state_spec", f, "the mapping function")
  return setmetatable({ fn = f, timeout_ms = 0 }, StateSpec)
end

-- opts.clock: "processing" (the batch time, default) or "event" (the
-- watermark against each record's event time).
function StateSpec:timeout(d, opts)
  self.timeout_ms = duration("state_spec", "timeout", d)
  opts = check_opts("state_spec:timeout", opts, { clock = true })
  local clock = opts.clock or "processing"
  if clock ~= "processing" and clock ~= "event" then
    fail("state_spec:timeout: clock must be \"processing\" or \"event\", got %s", tostring(clock))
  end
  self.clock = clock
  return self
end

function StateSpec:initial_state(t)
  if type(t) ~= "table" and type(t) ~= "function" then
    fail("state_spec: initial_state must be a table {key = state} or a function returning one")
  end
  self.initial = t
  return self
end

function StateSpec:name(n)
  if type(n) ~= "string" or n == "" then fail("state_spec: name must be a non-empty string") end
  self.stage_name = n
  return self
end

function StateSpec:partitions(p)
  check_partitions("state_spec", p)
  self.nparts = p
  return self
end

function Stream:map_with_state(spec, opts)
  self = node_of(self)
  needs_keyed(self, "map_with_state")
  if getmetatable(spec) ~= StateSpec then fail("map_with_state: want sr.state_spec(fn), got %s", type(spec)) end
  opts = check_opts("map_with_state", opts, NAME_OPT)
  if spec.clock == "event" and not self.timed then
    fail("map_with_state: a timeout with clock = \"event\" needs elements with an event time: %s (%s) has none",
      self.stage_name, self.op)
  end
  return add_node(self.job, "map_with_state", "stateful", { self }, {
    fn = spec.fn, keyed = "maybe", initial = spec.initial, timeout_ms = spec.timeout_ms,
    timeout_clock = spec.clock,
    partitions = spec.nparts or self.job.partitions,
  }, opts.name or spec.stage_name)
end

function Stream:state_snapshots(opts)
  self = node_of(self)
  if not self or self.op ~= "map_with_state" then
    fail("state_snapshots: only the stream map_with_state returns has state snapshots")
  end
  opts = check_opts("state_snapshots", opts, NAME_OPT)
  return add_node(self.job, "state_snapshots", "view", { self }, { keyed = "yes" }, opts.name)
end

-- -- Outputs --

function Stream:print(n, opts)
  self = node_of(self)
  stream_of(self, "print")
  if type(n) == "table" and opts == nil then n, opts = nil, n end
  n = n or 10
  if type(n) ~= "number" or n < 0 or n % 1 ~= 0 then fail("print: n must be a whole number >= 0") end
  opts = check_opts("print", opts, NAME_OPT)
  return add_node(self.job, "print", "output", { self }, { limit = n }, opts.name)
end

function Stream:foreach_batch(f, opts)
  self = node_of(self)
  stream_of(self, "foreach_batch")
  check_fn("foreach_batch", f)
  opts = check_opts("foreach_batch", opts, NAME_OPT)
  return add_node(self.job, "foreach_batch", "output", { self }, { fn = f }, opts.name)
end

function Stream:save_as_text_files(prefix, suffix, opts)
  self = node_of(self)
  stream_of(self, "save_as_text_files")
  if type(prefix) ~= "string" or prefix == "" then fail("save_as_text_files: prefix must be a string") end
  if type(suffix) == "table" and opts == nil then suffix, opts = nil, suffix end
  if suffix ~= nil and type(suffix) ~= "string" then fail("save_as_text_files: suffix must be a string") end
  opts = check_opts("save_as_text_files", opts, NAME_OPT)
  return add_node(self.job, "save_as_text_files", "output", { self }, { prefix = prefix, suffix = suffix }, opts.name)
end

function Stream:to_json_lines(path, opts)
  self = node_of(self)
  stream_of(self, "to_json_lines")
  if type(path) ~= "string" or path == "" then fail("to_json_lines: path must be a file name or \"-\"") end
  opts = check_opts("to_json_lines", opts, NAME_OPT)
  return add_node(self.job, "to_json_lines", "output", { self }, { path = path }, opts.name)
end

-- -- Describing --

local function node_detail(n)
  if n.op == "socket_text" or n.op == "listen_text" then return ("%s:%d"):format(n.host, n.port) end
  if n.path then return n.path end
  if n.op == "print" then return "first " .. n.limit end
  if n.op == "save_as_text_files" then return n.prefix .. "-<time_ms>" .. (n.suffix and ("." .. n.suffix) or "") end
  if n.op == "generator" then return ("rate %g/s%s"):format(n.rate, n.total and (", count " .. n.total) or "") end
  if n.kind == "windowed" then
    return ("window %d ms, slide %d ms%s"):format(n.length_ms, n.window_slide_ms or n.slide_ms or n.job.batch_ms,
      n.finv and ", with inverse" or "")
  end
  if n.kind == "event" then
    if n.gap_ms then return ("session gap %d ms, event time, lateness %d ms"):format(n.gap_ms, n.lateness_ms) end
    return ("event window %d ms, slide %d ms, lateness %d ms"):format(n.ev_size_ms, n.ev_slide_ms, n.lateness_ms)
  end
  if n.kind == "stateful" then
    return ("state, %d partitions%s"):format(n.partitions, n.timeout_ms > 0 and (", timeout " .. n.timeout_ms .. " ms") or "")
  end
  return ""
end

-- The stage graph as text, one stage a line, for `streamrun check`.
function Job:describe()
  local lines = { ("job %s: batch %d ms, %d stages, %d sources, %d outputs"):format(
    self.name, self.batch_ms, #self.nodes, #self.sources, #self.outputs) }
  for _, n in ipairs(self.nodes) do
    local from = {}
    for _, i in ipairs(n.inputs) do from[#from + 1] = i.stage_name end
    local detail = node_detail(n)
    if n.format and n.format ~= "text" then detail = detail .. " (" .. n.format .. ")" end
    lines[#lines + 1] = ("  %-22s %-20s %s%s"):format(n.stage_name, n.op,
      #from > 0 and ("<- " .. table.concat(from, ", ")) or "",
      detail ~= "" and ((#from > 0 and "  " or "") .. detail) or "")
  end
  return table.concat(lines, "\n")
end

M.is_job = function(x) return getmetatable(x) == Job end

-- For the operations defined in other files (streamrun.event_dsl, and
-- Kafka's source and sink in streamrun.kafka).
M.add_node, M.check_opts, M.needs_keyed = add_node, check_opts, needs_keyed
M.source, M.stream_of = source, stream_of
require("streamrun.event_dsl").install(M)
require("streamrun.kafka").install(M)

return M
