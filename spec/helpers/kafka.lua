-- helpers.kafka: Kafka for end-to-end specs: a mock cluster started by the
-- spec (`streamrun kafka-mock`, waited for by its first line, its brokers
-- taken down and up through its stdin), producing and consuming with kcat,
-- and the group's committed offsets asked of librdkafka (the query Kafka's
-- lag tools make).
local ffi = require "ffi"
local proc = require "helpers.proc"
local e2e = require "helpers.e2e"

local M = {}

-- -- The mock cluster --

local Mock = {}
Mock.__index = Mock

-- Starts a mock cluster: opts.brokers (default 1), opts.topics ({ "name:8",
-- ... }). Returns it once it printed its bootstrap servers: m.bootstrap.
function M.mock(opts)
  opts = opts or {}
  local argv = { e2e.BIN, "kafka-mock", "--brokers", tostring(opts.brokers or 1) }
  for _, t in ipairs(opts.topics or {}) do
    argv[#argv + 1] = "--topic"
    argv[#argv + 1] = t
  end
  local p = proc.spawn(argv)
  local bootstrap = p:wait_output("stdout", function(text) return text:match("^bootstrap: ([^\n]+)\n") end, 10,
    "the mock cluster's bootstrap line")
  return setmetatable({ proc = p, bootstrap = bootstrap }, Mock)
end

-- Sends a command to the mock cluster and waits for its answer ("ok ...").
function Mock:command(line)
  local p = self.proc
  p:pump()
  local before = #p.stdout
  p:write(line .. "\n")
  local answer = p:wait_output("stdout", function(text) return text:sub(before + 1):match("([^\n]+)\n") end, 5,
    "an answer to " .. line)
  assert(answer:match("^ok "), ("mock cluster: %s: %s"):format(line, answer))
  return answer
end

function Mock:down(id) return self:command("down " .. id) end
function Mock:up(id) return self:command("up " .. id) end
function Mock:topic(name, partitions) return self:command(("topic %s %d"):format(name, partitions)) end

-- -- kcat --

-- Produces lines "key:value" (a key each) or plain values with kcat;
-- opts.partition: all to that partition (else by key).
function M.produce(bootstrap, topic, lines, opts)
  opts = opts or {}
  local argv = { "kcat", "-b", bootstrap, "-t", topic, "-P" }
  if opts.partition then
    argv[#argv + 1] = "-p"
    argv[#argv + 1] = tostring(opts.partition)
  end
  if opts.keyed ~= false then argv[#argv + 1] = "-K:" end
  local code, _, err = proc.run(argv, { input = table.concat(lines, "\n") .. "\n", timeout = opts.timeout or 30 })
  assert(code == 0, "kcat -P: exit " .. tostring(code) .. "\n" .. err)
end

-- Every message of topic (to its end), as { key = k or false, value = v,
-- partition = p }, read with kcat.
function M.consume(bootstrap, topic)
  local code, out, err = proc.run({ "kcat", "-b", bootstrap, "-t", topic, "-C", "-e", "-q", "-o", "beginning",
                                    "-f", "%p\t%K\t%k\t%S\t%s\n" }, { timeout = 30 })
  assert(code == 0, "kcat -C: exit " .. tostring(code) .. "\n" .. err)
  local msgs = {}
  local pos = 1
  while pos <= #out do
    local p, klen, rest = out:match("^(%d+)\t(%-?%d+)\t()", pos)
    if not p then break end
    klen = tonumber(klen)
    local key = klen >= 0 and out:sub(rest, rest + klen - 1) or false
    local after = rest + math.max(klen, 0) + 1
    local vlen, vstart = out:match("^(%-?%d+)\t()", after)
    vlen = tonumber(vlen)
    local value = out:sub(vstart, vstart + vlen - 1)
    msgs[#msgs + 1] = { partition = tonumber(p), key = key, value = value }
    pos = vstart + vlen + 1
  end
  return msgs
end

-- -- The group's committed offsets --

ffi.cdef [[
typedef struct rd_kafka_s rd_kafka_t;
typedef struct rd_kafka_conf_s rd_kafka_conf_t;
typedef struct rd_kafka_topic_partition_s {
  char *topic; int32_t partition; int64_t offset; void *metadata; size_t metadata_size; void *opaque;
  int err; void *_private;
} rd_kafka_topic_partition_t;
typedef struct rd_kafka_topic_partition_list_s { int cnt; int size; rd_kafka_topic_partition_t *elems; }
  rd_kafka_topic_partition_list_t;
rd_kafka_conf_t *rd_kafka_conf_new(void);
int rd_kafka_conf_set(rd_kafka_conf_t *conf, const char *name, const char *value, char *errstr, size_t errstr_size);
void rd_kafka_conf_destroy(rd_kafka_conf_t *conf);
rd_kafka_t *rd_kafka_new(int type, rd_kafka_conf_t *conf, char *errstr, size_t errstr_size);
void rd_kafka_destroy(rd_kafka_t *rk);
rd_kafka_topic_partition_list_t *rd_kafka_topic_partition_list_new(int size);
void rd_kafka_topic_partition_list_destroy(rd_kafka_topic_partition_list_t *rkparlist);
rd_kafka_topic_partition_t *rd_kafka_topic_partition_list_add(rd_kafka_topic_partition_list_t *l, const char *topic,
                                                              int32_t partition);
int rd_kafka_committed(rd_kafka_t *rk, rd_kafka_topic_partition_list_t *partitions, int timeout_ms);
const char *rd_kafka_err2str(int err);
]]

local rdk

-- The offsets group has committed for topic's partitions 0..n-1: a list
-- (index partition + 1) of offsets, -1001 where none.
function M.committed(bootstrap, group, topic, n)
  rdk = rdk or ffi.load("rdkafka")
  local errstr = ffi.new("char[512]")
  local conf = rdk.rd_kafka_conf_new()
  rdk.rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, errstr, 512)
  rdk.rd_kafka_conf_set(conf, "group.id", group, errstr, 512)
  local rk = rdk.rd_kafka_new(1, conf, errstr, 512) -- RD_KAFKA_CONSUMER
  assert(rk ~= nil, ffi.string(errstr))
  local list = rdk.rd_kafka_topic_partition_list_new(n)
  for i = 0, n - 1 do rdk.rd_kafka_topic_partition_list_add(list, topic, i) end
  local rc = rdk.rd_kafka_committed(rk, list, 10000)
  local out = {}
  if rc == 0 then
    for i = 0, list.cnt - 1 do out[list.elems[i].partition + 1] = tonumber(list.elems[i].offset) end
  end
  rdk.rd_kafka_topic_partition_list_destroy(list)
  rdk.rd_kafka_destroy(rk)
  assert(rc == 0, "rd_kafka_committed: " .. ffi.string(rdk.rd_kafka_err2str(rc)))
  return out
end

-- -- Waiting on a job's state --

-- Waits until check(keys) is true of the state of stage in the newest
-- checkpoint of dir (read with `streamrun inspect`, at most every 200 ms).
-- Returns the keys.
function M.wait_state(dir, stage, check, timeout_s, what, p)
  local last, keys = 0, {}
  proc.wait_for(function()
    if p then
      p:pump()
      if p:exited() then error("the job exited\n" .. p:describe(), 0) end
    end
    if proc.now() - last < 0.2 then return false end
    last = proc.now()
    if not proc.exists(dir) then return false end
    local code, out = e2e.exec({ "inspect", dir, "--keys", stage }, { timeout = 30 })
    if code ~= 0 then return false end
    -- Tasks hold their own keys: a key in two of them adds up.
    keys = {}
    for line in out:gmatch("[^\n]+") do
      local kv = require("cjson").decode(line)
      keys[kv.key] = type(kv.value) == "number" and (keys[kv.key] or 0) + kv.value or kv.value
    end
    return check(keys)
  end, timeout_s or 30, function()
    local shown = {}
    for k, v in pairs(keys) do shown[#shown + 1] = tostring(k) .. "=" .. tostring(v) end
    return (what or "the job's state") .. "; last seen: " .. table.concat(shown, " ")
      .. (p and ("\n" .. p:describe()) or "")
  end)
  return keys
end

-- The sum of a table's values.
function M.sum(t)
  local n = 0
  for _, v in pairs(t) do n = n + v end
  return n
end

return M
