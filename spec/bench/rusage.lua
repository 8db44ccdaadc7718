-- The benchmark harness's stand-in for /usr/bin/time where there is none:
--   luajit spec/bench/rusage.lua OUTFILE COMMAND [ARG...]
-- runs COMMAND (stdin, stdout and stderr inherited), waits for it with
-- wait4() and writes "elapsed user sys maxrss_kb exit" to OUTFILE, as
-- `/usr/bin/time -f "%e %U %S %M %x" -o OUTFILE` does. Exits with the
-- command's exit code.
local ffi = require "ffi"

ffi.cdef [[
typedef struct { long tv_sec; long tv_usec; } ru_timeval_t;
typedef struct {
  ru_timeval_t ru_utime, ru_stime;
  long ru_maxrss, ru_ixrss, ru_idrss, ru_isrss, ru_minflt, ru_majflt, ru_nswap,
       ru_inblock, ru_oublock, ru_msgsnd, ru_msgrcv, ru_nsignals, ru_nvcsw, ru_nivcsw;
} ru_rusage_t;
typedef struct { long tv_sec; long tv_nsec; } ru_timespec_t;
int ru_spawnp(int *pid, const char *file, const void *fa, const void *attr,
              char *const argv[], char *const envp[]) __asm__("posix_spawnp");
int ru_wait4(int pid, int *status, int options, ru_rusage_t *ru) __asm__("wait4");
int ru_clock_gettime(int clk, ru_timespec_t *ts) __asm__("clock_gettime");
extern char **ru_environ __asm__("environ");
]]
local C = ffi.C

local out = assert(arg[1], "usage: rusage.lua OUTFILE COMMAND [ARG...]")
local n = select("#", ...) - 1
assert(n >= 1, "usage: rusage.lua OUTFILE COMMAND [ARG...]")
local argv = ffi.new("char *[?]", n + 1)
local keep = {}
for i = 1, n do
  keep[i] = ffi.new("char[?]", #arg[i + 1] + 1, arg[i + 1])
  argv[i - 1] = keep[i]
end

local function now()
  local ts = ffi.new("ru_timespec_t")
  C.ru_clock_gettime(1, ts)
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end

local t0 = now()
local pid = ffi.new("int[1]")
local err = C.ru_spawnp(pid, argv[0], nil, nil, argv, C.ru_environ)
if err ~= 0 then
  io.stderr:write("rusage.lua: cannot run ", arg[2], " (error ", err, ")\n")
  os.exit(127)
end
local status, ru = ffi.new("int[1]"), ffi.new("ru_rusage_t")
while C.ru_wait4(pid[0], status, 0, ru) < 0 do
  if ffi.errno() ~= 4 then error("wait4 failed: errno " .. ffi.errno()) end
end
local elapsed = now() - t0
local st = status[0]
local code = bit.band(st, 0x7f) == 0 and bit.band(bit.rshift(st, 8), 0xff) or 128 + bit.band(st, 0x7f)
local function secs(tv) return tonumber(tv.tv_sec) + tonumber(tv.tv_usec) * 1e-6 end
local f = assert(io.open(out, "w"))
f:write(("%.3f %.3f %.3f %d %d\n"):format(elapsed, secs(ru.ru_utime), secs(ru.ru_stime),
  tonumber(ru.ru_maxrss), code))
f:close()
os.exit(code)
