-- streamrun.kafka: Kafka in jobs (SPEC section 16). job:kafka{...}, a
-- source on the event loop (runtime/sr_source_kafka.c): its settings, its
-- framed records read into batches (values, or (key, value) pairs; bad
-- JSON to dead letters), where it stands per partition for checkpoints and
-- the commit of those offsets to the group once a checkpoint is written.
-- :to_kafka{...}, an output through the idempotent producer
-- (runtime/sr_kafka_sink.c): a batch counts as written once Kafka has
-- acknowledged every message of it; a failure holds the job and is retried
-- like any output's.
local core = require "streamrun.core"
local batch = require "streamrun.batch"
local format = require "streamrun.format"
local guard = require "streamrun.guard"
local cjson = require "cjson"

local C, ffi = core.C, core.ffi
local ffi_string, ffi_cast = ffi.string, ffi.cast
local tnew = batch.new_table
local decode, null = cjson.decode, cjson.null
local type, tostring, pairs, ipairs, pcall = type, tostring, pairs, ipairs, pcall

ffi.cdef [[
typedef struct sr_kafka_record { int32_t partition_index; int32_t partition; int32_t keylen; } sr_kafka_record_t;
int sr_kafka_source_partition(sr_source_t *s, size_t i, const char **topic, int32_t *partition,
                              int64_t *next, int *assigned);
int sr_kafka_source_commit(sr_source_t *s, const char *const *topics, const int32_t *partitions,
                           const int64_t *offsets, size_t n);
typedef struct sr_kafka_sink sr_kafka_sink_t;
sr_kafka_sink_t *sr_kafka_sink_new(const char *brokers, const char *topic, const char *const *kv, size_t nkv,
                                   char *err, size_t errlen);
void sr_kafka_sink_free(sr_kafka_sink_t *k);
int sr_kafka_sink_send(sr_kafka_sink_t *k, const char *key, size_t klen, const char *val, size_t vlen,
                       int64_t id, char *err, size_t errlen);
int sr_kafka_sink_flush(sr_kafka_sink_t *k, int timeout_ms, char *err, size_t errlen);
int64_t sr_kafka_sink_failed(const sr_kafka_sink_t *k, size_t i);
]]

local M = {}

local HEADER = ffi.sizeof("sr_kafka_record_t")
local record_ptr = ffi.typeof("const sr_kafka_record_t *")

-- librdkafka properties as kv pairs: { name, value, ... } (values as text).
local function config_pairs(list, prefix, config)
  local names = {}
  for k in pairs(config or {}) do names[#names + 1] = k end
  table.sort(names)
  for _, k in ipairs(names) do
    local v = config[k]
    list[#list + 1] = prefix .. k
    list[#list + 1] = type(v) == "boolean" and (v and "true" or "false") or tostring(v)
  end
  return list
end

-- A C array of the strings of list (kept alive by list, which the caller
-- holds while C reads them).
local function cstrings(list)
  local arr = ffi.new("const char *[?]", #list + 1)
  for i, s in ipairs(list) do arr[i - 1] = s end
  return arr
end

-- -- The source --

-- The settings of node's C source, resumed at pos (a checkpoint's
-- position of this source): the kv array, its number of pairs, and the
-- table that keeps its strings alive.
function M.source_kv(node, pos)
  local list = { "brokers", node.brokers, "group", node.group, "start", node.start }
  for _, t in ipairs(node.topics) do
    list[#list + 1] = "topic"
    list[#list + 1] = t
  end
  config_pairs(list, "config:", node.config)
  if node.tasks then
    list[#list + 1] = "tasks"
    list[#list + 1] = "1"
    -- A rebalance moves only the partitions that change owner, so the
    -- other tasks go on where they are.
    if not (node.config or {})["partition.assignment.strategy"] then
      list[#list + 1] = "config:partition.assignment.strategy"
      list[#list + 1] = "cooperative-sticky"
    end
  end
  if pos and pos.kind == "kafka" and type(pos.offsets) == "table" then
    for tp, off in pairs(pos.offsets) do
      if type(tp) == "string" and type(off) == "number" then
        list[#list + 1] = "offset:" .. tp
        list[#list + 1] = ("%d"):format(off)
      end
    end
  end
  return cstrings(list), #list / 2, list
end

local tp_topic, tp_part = ffi.new("const char *[1]"), ffi.new("int32_t[1]")
local tp_next, tp_assigned = ffi.new("int64_t[1]"), ffi.new("int[1]")

-- Every partition the source src knows: { topic, partition, next,
-- assigned } (next: the offset after the last record delivered, -1 none).
function M.partitions(src)
  local out, i = {}, 0
  while C.sr_kafka_source_partition(src, i, tp_topic, tp_part, tp_next, tp_assigned) == 0 do
    out[#out + 1] = { topic = ffi_string(tp_topic[0]), partition = tp_part[0], next = tonumber(tp_next[0]),
                      assigned = tp_assigned[0] ~= 0 }
    i = i + 1
  end
  return out
end

-- Where the source stands, for a checkpoint: the next offset of every
-- partition read ("topic:partition" -> offset).
function M.position(node, src)
  local offsets = {}
  for _, p in ipairs(M.partitions(src)) do
    if p.next >= 0 then offsets[p.topic .. ":" .. p.partition] = p.next end
  end
  return { kind = node.op, offsets = offsets }
end

-- Commits a checkpoint's position of the source (pos, from position())
-- to its group, so Kafka's lag tools see how far the job is.
function M.commit(node, src, pos)
  if type(pos) ~= "table" or type(pos.offsets) ~= "table" then return end
  local topics, parts, offs, n = {}, {}, {}, 0
  for tp, off in pairs(pos.offsets) do
    local topic, part = tp:match("^(.*):(%d+)$")
    if topic then
      n = n + 1
      topics[n], parts[n], offs[n] = topic, tonumber(part), off
    end
  end
  if n == 0 then return end
  C.sr_kafka_source_commit(src, cstrings(topics), ffi.new("int32_t[?]", n, parts), ffi.new("int64_t[?]", n, offs), n)
end

local function json_reason(err)
  return "invalid JSON: " .. tostring(err):gsub("^[^:]*:%d+: ", "")
end

-- A batch from a kafka source's sealed C batch: values, or with with_key
-- (key, value) pairs. dead(source, offset, reason, record, partition) receives a
-- value that is not JSON (format "json") and, with with_key, a message
-- without a key. The decoding loop runs under one pcall per failure, not
-- one per record. with_parts: the batch also has part[i] (the source's
-- partition index of element i) and offs[i] (its offset).
function M.read_batch(node, cb, dead, with_parts)
  local n = tonumber(cb.n)
  local data, off, pos = cb.data, cb.off, cb.pos
  local with_key, json = node.with_key, node.format == "json"
  -- A repartition topic's values are [key, value] as exact JSON.
  local pairs_fmt = node.format == "pairs"
  local keyed = with_key or pairs_fmt
  json = json or pairs_fmt
  local a = tnew(n, 0)
  local b = keyed and tnew(n, 0) or nil
  local m, skips = 0, nil
  local at = 0
  local part = with_parts and tnew(n, 0) or nil
  local offs = with_parts and tnew(n, 0) or nil
  local function run(i0)
    for i = i0, n do
      at = i
      local s, e = off[i - 1], off[i]
      local h = ffi_cast(record_ptr, data + s)
      local kl = h.keylen
      local vs = s + HEADER + (kl > 0 and kl or 0)
      local v = ffi_string(data + vs, e - vs)
      local k
      if with_key then
        if kl < 0 then error({ reason = "message has no key (the source has with_key = true)", record = v }) end
        k = ffi_string(data + s + HEADER, kl)
      end
      if json then
        v = decode(v)
        if v == null then error({ reason = "JSON null is not an element" }) end
        if pairs_fmt then
          if type(v) ~= "table" or v[1] == nil or v[2] == nil then error({ reason = "not a [key, value] pair" }) end
          k, v = v[1], v[2]
        end
      end
      m = m + 1
      a[m] = keyed and k or v
      if keyed then b[m] = v end
      if part then
        part[m] = h.partition_index
        offs[m] = tonumber(pos[i - 1])
      end
    end
  end
  local i0 = 1
  while i0 <= n do
    local ok, err = pcall(run, i0)
    if ok then break end
    local i = at
    local s, e = off[i - 1], off[i]
    local h = ffi_cast(record_ptr, data + s)
    local vs = s + HEADER + (h.keylen > 0 and h.keylen or 0)
    local reason = type(err) == "table" and err.reason or json_reason(err)
    dead(node.stage_name, tonumber(pos[i - 1]), reason, ffi_string(data + vs, e - vs), h.partition)
    skips = skips or {}
    skips[#skips + 1] = i
    i0 = i + 1
  end
  local out = keyed and { n = m, a = a, b = b } or batch.of_values(a, m)
  out.src, out.pos, out.skips = node.stage_name, pos, skips
  out.part, out.offs = part, offs
  return out
end

-- The test driver's pushes on a keyed kafka source (with_key, or a
-- repartition topic's): each a { key, value } message, its value a record
-- as Kafka would deliver it (decoded if JSON) or an element already.
function M.read_values(node, values, first_offset, dead)
  local n = #values
  local a, b, m, skips = tnew(n, 0), tnew(n, 0), 0, nil
  local json = node.format == "json"
  for i = 1, n do
    local msg, offset = values[i], first_offset + i - 1
    local k, v = type(msg) == "table" and msg[1], type(msg) == "table" and msg[2]
    local reason
    if k == nil or k == false or v == nil then
      reason = "a pushed message must be { key, value }"
    elseif json and type(v) == "string" then
      local ok, d = pcall(decode, v)
      if not ok then reason = json_reason(d) elseif d == null then reason = "JSON null is not an element" else v = d end
    end
    if reason then
      dead(node.stage_name, offset, reason, tostring(type(msg) == "table" and msg[2] or msg))
      skips = skips or {}
      skips[#skips + 1] = i
    else
      m = m + 1
      a[m], b[m] = k, v
    end
  end
  return { n = m, a = a, b = b, src = node.stage_name, first = first_offset, skips = skips }
end

-- -- The sink --

local errbuf = ffi.new("char[512]")

-- Message keys and values of an output's input batch: key_fn(e) for
-- single elements (when given), a pair's key otherwise; values as JSON or
-- text. An element that fails (its key function, or JSON) is reported.
local function messages(node, g, input)
  local A, B = input.a, input.b
  local keys, vals, m = {}, {}, 0
  local json, key_fn = node.format == "json", node.key_fn
  local pairs_fmt = node.format == "pairs"
  guard.each(input.n, function(i)
    local x, y = A[i], B[i]
    local k, v
    if y ~= nil then
      k, v = x, y
    else
      v = x
      if key_fn then k = key_fn(x) end
    end
    if pairs_fmt then
      if y == nil then error("repartition: the element is not a (key, value) pair", 0) end
      v = format.exact_json({ x, y })
    elseif json then
      local s, err = format.json_line(v)
      if not s then error(err, 0) end
      v = s
    else
      v = format.value(v)
    end
    m = m + 1
    keys[m] = k ~= nil and format.value(k) or false
    vals[m] = v
  end, function(i, err) g.report_at(node, err, input, i, A[i], B[i]) end)
  return keys, vals, m
end

-- The output's write(input, time_ms) and retry(): a batch's messages are
-- sent and flushed; those not delivered are kept and sent again by
-- retry() (at least once: a message may reach Kafka twice). Under the
-- test driver (a capturing sink) nothing is produced.
function M.make_sink(node, sink, g)
  if sink.capture then
    return function() return true end, function() return true end
  end
  local handle
  local keys, vals, left -- the batch not yet delivered: left lists its message numbers
  local timeout_ms = node.flush_timeout_ms
  local function flush_left()
    if not handle then
      local kvlist = config_pairs({}, "", node.config)
      local h = C.sr_kafka_sink_new(node.brokers, node.topic, cstrings(kvlist), #kvlist / 2, errbuf, 512)
      if h == nil then return nil, ("to_kafka %s: %s"):format(node.topic, ffi_string(errbuf)) end
      handle = ffi.gc(h, C.sr_kafka_sink_free)
    end
    for j = 1, #left do
      local i = left[j]
      local k, v = keys[i], vals[i]
      local rc
      if k then
        rc = C.sr_kafka_sink_send(handle, k, #k, v, #v, i, errbuf, 512)
      else
        rc = C.sr_kafka_sink_send(handle, nil, 0, v, #v, i, errbuf, 512)
      end
      if rc ~= 0 then
        -- Not queued: these and the rest wait for the retry.
        local rest = {}
        for r = j, #left do rest[#rest + 1] = left[r] end
        C.sr_kafka_sink_flush(handle, timeout_ms, errbuf, 512)
        left = rest
        return nil, ("to_kafka %s: %s"):format(node.topic, ffi_string(errbuf))
      end
    end
    local rc = C.sr_kafka_sink_flush(handle, timeout_ms, errbuf, 512)
    if rc == 0 then
      keys, vals, left = nil, nil, nil
      return true
    end
    local msg = ffi_string(errbuf)
    local failed = {}
    if rc > 0 then
      local j = 0
      while true do
        local id = tonumber(C.sr_kafka_sink_failed(handle, j))
        if id < 0 then break end
        failed[#failed + 1] = id
        j = j + 1
      end
    end
    -- Still in flight at the timeout: librdkafka goes on delivering them;
    -- the retry flushes again and sends what failed meanwhile.
    left = failed
    return nil, ("to_kafka %s: %s"):format(node.topic, msg)
  end
  local function write(input)
    if left then return nil, "to_kafka: the previous batch is not delivered yet" end
    if input.n == 0 then return true end
    local m
    keys, vals, m = messages(node, g, input)
    left = tnew(m, 0)
    for i = 1, m do left[i] = i end
    return flush_left()
  end
  local function retry()
    if not left then return true end
    return flush_left()
  end
  return write, retry
end

-- -- The job DSL --

-- What the session asks of a source kind with framed records and its own
-- positions (streamrun.session): settings, position, commit, batch reader.
local HOOKS = { kv = M.source_kv, position = M.position, commit = M.commit, read = M.read_batch,
                read_values = M.read_values }

local SOURCE_EXTRA = { brokers = true, topic = true, group = true, start = true, with_key = true, config = true }
local SINK_OPTS = { brokers = true, topic = true, key = true, format = true, config = true, name = true,
                    flush_timeout = true }

local function check_config(dsl, op, config)
  if config == nil then return {} end
  if type(config) ~= "table" then dsl.fail("%s: config must be a table of librdkafka properties", op) end
  for k, v in pairs(config) do
    local tv = type(v)
    if type(k) ~= "string" or (tv ~= "string" and tv ~= "number" and tv ~= "boolean") then
      dsl.fail("%s: config: %s must be a string, number or boolean", op, tostring(k))
    end
  end
  return config
end

local function check_brokers(dsl, op, brokers)
  if type(brokers) ~= "string" or brokers == "" then
    dsl.fail("%s: brokers must be \"host:port[,host:port...]\"", op)
  end
end

-- Adds job:kafka and stream:to_kafka to the DSL (streamrun.dsl).
function M.install(dsl)
  local fail = dsl.fail

  function dsl.Job:kafka(opts)
    if type(opts) ~= "table" then fail("kafka: options must be a table { brokers =, topic =, group = }") end
    check_brokers(dsl, "kafka", opts.brokers)
    local topics = opts.topic
    if type(topics) == "string" then topics = { topics } end
    if type(topics) ~= "table" or #topics == 0 then fail("kafka: topic must be a topic name or a list of them") end
    for _, t in ipairs(topics) do
      if type(t) ~= "string" or not t:match("^[%w%._%-]+$") then
        fail("kafka: topic %s is not a valid topic name", tostring(t))
      end
    end
    local group = opts.group or ("streamrun-" .. self.name)
    if type(group) ~= "string" or group == "" then fail("kafka: group must be a non-empty string") end
    local start = opts.start or "earliest"
    if start ~= "earliest" and start ~= "latest" then
      fail("kafka: start must be \"earliest\" or \"latest\", got %s", tostring(start))
    end
    if opts.with_key ~= nil and type(opts.with_key) ~= "boolean" then fail("kafka: with_key must be a boolean") end
    local fields = {
      brokers = opts.brokers, topics = topics, group = group, start = start, with_key = opts.with_key or false,
      config = check_config(dsl, "kafka", opts.config),
      framed = true, -- records carry a header: never read raw by a native stage
      c_hooks = HOOKS,
    }
    fields.signature = table.concat({ fields.brokers, table.concat(topics, ","), group, start,
                                      tostring(fields.with_key), table.concat(config_pairs({}, "", fields.config), "=") }, "|")
    local h = dsl.source(self, "kafka", fields, opts, SOURCE_EXTRA)
    if fields.with_key then dsl.node_of(h).keyed = "yes" end
    return h
  end

  -- Kafka Streams' repartition topic: pairs go to topic keyed by their
  -- key and come back, from the next batch on, as a stream read through
  -- the group (in tasks: split by the key's partition).
  function dsl.Stream:repartition(topic, opts)
    local node = dsl.node_of(self)
    dsl.stream_of(node, "repartition")
    if node.keyed == "no" then
      fail("repartition needs a keyed stream of (k, v) pairs, but %s gives single elements", node.stage_name)
    end
    if type(topic) ~= "string" or not topic:match("^[%w%._%-]+$") then fail("repartition: topic must be a topic name") end
    opts = dsl.check_opts("repartition", opts, { brokers = true, name = true, config = true, group = true })
    local job = node.job
    local first
    for _, n in ipairs(job.sources) do
      if n.op == "kafka" then first = first or n end
    end
    local brokers = opts.brokers or (first and first.brokers)
    check_brokers(dsl, "repartition", brokers)
    local config = check_config(dsl, "repartition", opts.config)
    local name = opts.name or ("repartition." .. topic)
    dsl.add_node(job, "to_kafka", "output", { node }, {
      brokers = brokers, topic = topic, format = "pairs", config = config,
      flush_timeout_ms = 10000,
    }, name .. ".out")
    local group = opts.group or (first and first.group) or ("streamrun-" .. job.name)
    local fields = {
      brokers = brokers, topics = { topic }, group = group, start = "earliest", with_key = false, config = config,
      framed = true, c_hooks = HOOKS,
    }
    fields.signature = table.concat({ brokers, topic, group, "pairs" }, "|")
    local h = dsl.source(job, "kafka", fields, { name = name }, SOURCE_EXTRA)
    local src = dsl.node_of(h)
    src.format, src.keyed = "pairs", "yes"
    return h
  end

  function dsl.Stream:to_kafka(opts)
    local node = dsl.node_of(self)
    dsl.stream_of(node, "to_kafka")
    if type(opts) ~= "table" then fail("to_kafka: options must be a table { brokers =, topic = }") end
    opts = dsl.check_opts("to_kafka", opts, SINK_OPTS)
    check_brokers(dsl, "to_kafka", opts.brokers)
    if type(opts.topic) ~= "string" or not opts.topic:match("^[%w%._%-]+$") then
      fail("to_kafka: topic must be a topic name")
    end
    if opts.key ~= nil and type(opts.key) ~= "function" then fail("to_kafka: key must be a function of the element") end
    local fmt = opts.format or "json"
    if fmt ~= "json" and fmt ~= "text" then fail("to_kafka: format must be \"json\" or \"text\", got %s", tostring(fmt)) end
    local timeout_ms = dsl.duration("to_kafka", "flush_timeout", opts.flush_timeout or "10s")
    return dsl.add_node(node.job, "to_kafka", "output", { node }, {
      brokers = opts.brokers, topic = opts.topic, key_fn = opts.key, format = fmt,
      config = check_config(dsl, "to_kafka", opts.config), flush_timeout_ms = timeout_ms,
    }, opts.name)
  end
end

return M
