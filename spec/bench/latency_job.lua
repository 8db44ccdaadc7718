-- Latency benchmark job for `make bench`: lines "<send_ns> <payload>" on
-- listen_text, batch = "10ms"; the output stage takes CLOCK_MONOTONIC (the
-- same system-wide clock the sender stamps lines with) once per batch and
-- adds now - send_ns of each line to a histogram per second of send time
-- (100 us buckets up to 2 s, one bucket above). A line "END" writes the
-- histogram to `out` (to out.tmp, then renamed) as lines "SECOND BUCKET COUNT"
-- after a header "lines N max_ns M". With --set keyed=1 every line goes
-- through a keyed stage first (a map, then reduce_by_key by the whole line:
-- each line its own key), the segment SPEC section 15 splits among
-- workers: split, its lines cross between workers by key partition; a
-- batch this small runs on worker 0 alone when that is faster (the
-- README's "Small batches").
--   streamrun run spec/bench/latency_job.lua --quiet --set port=P --set out=F --duration 65s
local sr = require "streamrun"
local ffi = require "ffi"

ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } latbench_timespec_t;
int latbench_clock_gettime(int clk, latbench_timespec_t *ts) __asm__("clock_gettime");
]]

local job = sr.job { name = "latency_bench", batch = sr.param("batch", "10ms") }

local OUT = sr.param("out", "latency.txt")
local SECONDS = sr.param("seconds", 600) -- histogram rows; later seconds share the last
local BUCKET_NS = 100000
local NBUCKETS = 20001                   -- 0 .. 2 s by 100 us, then "more"

local hist = ffi.new("uint32_t[?]", SECONDS * NBUCKETS)
local ts = ffi.new("latbench_timespec_t")
local first_ns, lines, max_ns = nil, 0, 0
local find, sub, tonumber, floor, type = string.find, string.sub, tonumber, math.floor, type

local function write_result()
  local parts = { ("lines %d max_ns %d"):format(lines, max_ns) }
  for s = 0, SECONDS - 1 do
    local row = s * NBUCKETS
    for b = 0, NBUCKETS - 1 do
      local n = hist[row + b]
      if n > 0 then parts[#parts + 1] = ("%d %d %d"):format(s, b, n) end
    end
  end
  local f = assert(io.open(OUT .. ".tmp", "w"))
  f:write(table.concat(parts, "\n"), "\n")
  f:close()
  assert(os.rename(OUT .. ".tmp", OUT))
end

local function record(batch_lines)
  ffi.C.latbench_clock_gettime(1, ts)
  local now = tonumber(ts.tv_sec) * 1e9 + tonumber(ts.tv_nsec)
  for i = 1, #batch_lines do
    local line = batch_lines[i]
    if type(line) == "table" then line = line[1] end -- (keyed: {line, count})
    local sp = find(line, " ", 1, true)
    local sent = sp and tonumber(sub(line, 1, sp - 1))
    if sent then
      first_ns = first_ns or sent
      local lat = now - sent
      if lat > max_ns then max_ns = lat end
      local s = floor((sent - first_ns) / 1e9)
      if s >= SECONDS then s = SECONDS - 1 end
      local b = floor(lat / BUCKET_NS)
      if b >= NBUCKETS then b = NBUCKETS - 1 elseif b < 0 then b = 0 end
      hist[s * NBUCKETS + b] = hist[s * NBUCKETS + b] + 1
      lines = lines + 1
    elseif line == "END" then
      write_result()
    end
  end
end

local lines = job:listen_text("127.0.0.1", sr.param("port", 7171), { name = "lines" })
if tonumber(sr.param("keyed", 0)) == 1 then
  lines = lines:map(function(line) return line, 1 end):reduce_by_key(sr.add, { name = "per_line" })
end
lines:foreach_batch(record, { name = "latency" })

return job
