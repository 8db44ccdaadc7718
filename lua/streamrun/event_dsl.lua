-- streamrun.event_dsl: the job DSL's event-time operations (SPEC section
-- 14): reduce_by_key_and_event_window and session_by_key, added to the
-- Stream methods of streamrun.dsl by install(dsl). They need a stream whose
-- elements carry an event time (a source with event_time, and stateless
-- stages after it).
local type, tostring = type, tostring

local M = {}

local ON_LATE = { dead_letter = true, drop = true }

function M.install(dsl)
  local Stream, fail, node_of, duration = dsl.Stream, dsl.fail, dsl.node_of, dsl.duration

  -- A duration that may be 0 ("0s").
  local function duration0(op, what, d)
    if d == nil or d == 0 or d == "0s" or d == "0ms" then return 0 end
    return duration(op, what, d)
  end

  local function event_stage(self, op, f, opts, allowed)
    dsl.needs_keyed(self, op)
    if type(f) ~= "function" then fail("%s: the reduce function must be a function, got %s", op, type(f)) end
    if not self.timed then
      fail("%s needs elements with an event time: %s (%s) has none; give its source an event_time option "
        .. "(stateless stages after it keep the time)", op, self.stage_name, self.op)
    end
    opts = dsl.check_opts(op, opts, allowed)
    local p = opts.partitions
    if p ~= nil and (type(p) ~= "number" or p < 1 or p > 65536 or p % 1 ~= 0) then
      fail("%s: partitions must be an integer from 1 to 65536", op)
    end
    local on_late = opts.on_late or "dead_letter"
    if not ON_LATE[on_late] then fail("%s: on_late must be \"dead_letter\" or \"drop\", got %s", op, tostring(on_late)) end
    return opts, { fn = f, keyed = "yes", timed = true, on_late = on_late,
                   partitions = p or self.job.partitions }
  end

  -- reduce_by_key_and_event_window(f, size, opts): opts.slide (default
  -- size), opts.allowed_lateness (default 0s), opts.on_late, name,
  -- partitions.
  function Stream:reduce_by_key_and_event_window(f, size, opts)
    local op = "reduce_by_key_and_event_window"
    self = node_of(self)
    local fields
    opts, fields = event_stage(self, op, f, opts,
      { name = true, slide = true, allowed_lateness = true, on_late = true, partitions = true })
    fields.ev_size_ms = duration(op, "size", size)
    fields.ev_slide_ms = opts.slide ~= nil and duration(op, "slide", opts.slide) or fields.ev_size_ms
    if fields.ev_slide_ms > fields.ev_size_ms then
      fail("%s: slide %d ms is longer than the window (%d ms): records would fall between windows", op,
        fields.ev_slide_ms, fields.ev_size_ms)
    end
    fields.lateness_ms = duration0(op, "allowed_lateness", opts.allowed_lateness)
    return dsl.add_node(self.job, op, "event", { self }, fields, opts.name)
  end

  -- session_by_key(gap, f, opts): opts.allowed_lateness (default 0s),
  -- opts.on_late, name, partitions.
  function Stream:session_by_key(gap, f, opts)
    local op = "session_by_key"
    self = node_of(self)
    local fields
    opts, fields = event_stage(self, op, f, opts,
      { name = true, allowed_lateness = true, on_late = true, partitions = true })
    fields.gap_ms = duration(op, "gap", gap)
    fields.lateness_ms = duration0(op, "allowed_lateness", opts.allowed_lateness)
    return dsl.add_node(self.job, op, "event", { self }, fields, opts.name)
  end
end

return M
