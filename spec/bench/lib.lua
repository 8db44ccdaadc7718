-- bench.lib: what the benchmark harness shares: a seeded PRNG, the
-- monotonic clock, running a command under the OS's accounting
-- (/usr/bin/time, or spec/bench/rusage.lua where there is none), medians,
-- shell quoting and small file helpers. Plain LuaJIT; no project code.
local ffi = require "ffi"
local bit = require "bit"

ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec_t;
int bench_clock_gettime(int clk, bench_timespec_t *ts) __asm__("clock_gettime");
]]

local M = {}

-- -- PRNG: xorshift64* (Vigna), seeded through splitmix64's increment --

local bxor, rshift, lshift = bit.bxor, bit.rshift, bit.lshift
local MULT = 0x2545F4914F6CDD1DULL

local Rng = {}
Rng.__index = Rng

function M.rng(seed)
  local s = ffi.new("uint64_t[1]", (ffi.cast("uint64_t", seed) + 1ULL) * 0x9E3779B97F4A7C15ULL)
  if s[0] == 0ULL then s[0] = 1ULL end
  return setmetatable({ s = s }, Rng)
end

-- A float in [0, 1).
function Rng:float()
  local s = self.s
  local x = s[0]
  x = bxor(x, rshift(x, 12)); x = bxor(x, lshift(x, 25)); x = bxor(x, rshift(x, 27))
  s[0] = x
  return tonumber(rshift(x * MULT, 11)) * 2 ^ -53
end

-- An integer in [1, n].
function Rng:int(n)
  return math.floor(self:float() * n) + 1
end

-- -- Time --

local ts = ffi.new("bench_timespec_t")
local CLOCK_MONOTONIC = 1

-- Nanoseconds on CLOCK_MONOTONIC (system-wide: comparable across processes).
function M.now_ns()
  ffi.C.bench_clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) * 1e9 + tonumber(ts.tv_nsec)
end

function M.now() return M.now_ns() * 1e-9 end

-- -- Shell and files --

function M.quote(s)
  s = tostring(s)
  if s:match("^[%w%./_=:,+-]+$") then return s end
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

function M.exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  return false
end

function M.size(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local n = f:seek("end")
  f:close()
  return n
end

function M.read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

function M.write(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

-- Runs a shell command; returns true when it exited 0.
function M.sh(cmd)
  local ok, how, code = os.execute(cmd)
  if type(ok) == "number" then return ok == 0 end -- Lua 5.1 / LuaJIT without 5.2 compat
  return ok == true and how == "exit" and code == 0
end

-- The first line a command prints (nil if none).
function M.capture(cmd)
  local p = io.popen(cmd .. " 2>/dev/null")
  if not p then return nil end
  local s = p:read("*l")
  p:close()
  return s
end

function M.median(xs)
  local t = {}
  for i, x in ipairs(xs) do t[i] = x end
  table.sort(t)
  local n = #t
  if n == 0 then return nil end
  if n % 2 == 1 then return t[(n + 1) / 2] end
  return (t[n / 2] + t[n / 2 + 1]) / 2
end

-- -- Running a command under the OS's accounting --

-- The accounting wrapper: GNU time writes "elapsed user sys maxrss_kb exit"
-- to a file; spec/bench/rusage.lua writes the same from wait4() when
-- /usr/bin/time is not there (or BENCH_RUSAGE=lua asks for it).
local TIME_FORMAT = "%e %U %S %M %x"
M.accounting = (os.getenv("BENCH_RUSAGE") ~= "lua" and M.exists("/usr/bin/time"))
  and "/usr/bin/time" or "spec/bench/rusage.lua"

-- The prefix that runs a command under the accounting, writing to file.
function M.timed(file)
  if M.accounting == "/usr/bin/time" then
    return ("/usr/bin/time -f %s -o %s "):format(M.quote(TIME_FORMAT), M.quote(file))
  end
  return ("luajit spec/bench/rusage.lua %s "):format(M.quote(file))
end

-- Reads what the accounting wrote: { elapsed, user, sys, maxrss_kb, exit }.
function M.read_timing(file)
  local s = M.read(file)
  if not s then return nil end
  -- GNU time puts "Command exited with non-zero status N" first on failure.
  local line = s:match("([%d%.]+ [%d%.]+ [%d%.]+ %d+ %-?%d+)%s*$")
  if not line then return nil end
  local e, u, sy, rss, x = line:match("^(%S+) (%S+) (%S+) (%S+) (%S+)$")
  return { elapsed = tonumber(e), user = tonumber(u), sys = tonumber(sy),
           maxrss_kb = tonumber(rss), exit = tonumber(x) }
end

local seq = 0

-- Runs `argv_string` (already quoted, with any redirections) under the
-- accounting. Returns { wall (s, monotonic clock around the command), user,
-- sys, maxrss_kb, exit, ok }. tmpdir holds the accounting file.
function M.run(cmd, tmpdir)
  seq = seq + 1
  local tf = ("%s/time.%d"):format(tmpdir, seq)
  os.remove(tf)
  local t0 = M.now_ns()
  local ok = M.sh(M.timed(tf) .. cmd)
  local wall = (M.now_ns() - t0) * 1e-9
  local r = M.read_timing(tf) or { exit = -1 }
  r.wall = wall
  r.ok = ok and r.exit == 0
  os.remove(tf)
  return r
end

return M
