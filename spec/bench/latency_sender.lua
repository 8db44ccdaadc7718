-- Latency benchmark sender for `make bench`: connects to 127.0.0.1:PORT
-- (retrying for up to 10 s while the job starts), sends RATE lines per
-- second for SECONDS, paced by CLOCK_MONOTONIC, then a line "END". Line j is
-- "<due_ns> <payload>": due_ns = start + j / RATE, the time it was due, so a
-- sender that falls behind (the job not reading) shows in the latency.
-- Prints "sent N seconds S max_lag_ms L".
--   luajit spec/bench/latency_sender.lua PORT RATE SECONDS [PAYLOAD_BYTES]
package.path = "./spec/?.lua;" .. package.path
local libc = require "helpers.libc"
local ffi, C, K = libc.ffi, libc.C, libc.K

local PORT, RATE, SECONDS = tonumber(arg[1]), tonumber(arg[2]), tonumber(arg[3])
local PAYLOAD = ("p"):rep(tonumber(arg[4]) or 40)
assert(PORT and RATE and SECONDS, "usage: latency_sender.lua PORT RATE SECONDS [PAYLOAD_BYTES]")

local ts = ffi.new("e2e_timespec_t")
local function now_ns()
  C.e2e_clock_gettime(K.CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) * 1e9 + tonumber(ts.tv_nsec)
end

local sa = ffi.new("e2e_sockaddr_in_t")
sa.family = K.AF_INET
sa.port[0], sa.port[1] = bit.rshift(PORT, 8), bit.band(PORT, 0xff)
sa.addr[0], sa.addr[1], sa.addr[2], sa.addr[3] = 127, 0, 0, 1

local fd
local deadline = now_ns() + 10e9
while true do
  fd = C.e2e_socket(K.AF_INET, K.SOCK_STREAM + K.SOCK_CLOEXEC, 0)
  assert(fd >= 0, "socket: " .. libc.errmsg())
  if C.e2e_connect(fd, sa, ffi.sizeof(sa)) == 0 then break end
  C.e2e_close(fd)
  if now_ns() > deadline then
    io.stderr:write("latency_sender: nobody listens on 127.0.0.1:", PORT, "\n")
    os.exit(1)
  end
  C.e2e_poll(nil, 0, 20)
end

local function send_all(s)
  local p, off, n = ffi.cast("const char *", s), 0, #s
  while off < n do
    local w = tonumber(C.e2e_send(fd, p + off, n - off, K.MSG_NOSIGNAL))
    if w > 0 then
      off = off + w
    elseif ffi.errno() ~= K.EINTR then
      io.stderr:write("latency_sender: send: ", libc.errmsg(), "\n")
      os.exit(1)
    end
  end
end

local start = now_ns()
local step = 1e9 / RATE
local total = math.floor(RATE * SECONDS)
local sent, max_lag = 0, 0
local buf, fmt, floor = {}, string.format, math.floor
while sent < total do
  local t = now_ns()
  local due = floor((t - start) / step) + 1
  if due > total then due = total end
  if due > sent then
    local n = 0
    for j = sent, due - 1 do
      n = n + 1
      buf[n] = fmt("%d %s\n", floor(start + j * step), PAYLOAD)
    end
    local lag = t - (start + sent * step)
    if lag > max_lag then max_lag = lag end
    send_all(table.concat(buf, "", 1, n))
    sent = due
  end
  C.e2e_poll(nil, 0, 1)
end
send_all("END\n")
C.e2e_close(fd)
print(("sent %d seconds %.3f max_lag_ms %.1f"):format(sent, (now_ns() - start) / 1e9, max_lag / 1e6))
