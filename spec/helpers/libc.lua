-- helpers.libc: the one ffi.cdef place of the spec helpers (Linux, glibc).
-- Every name carries an e2e_ prefix and points at the libc symbol with
-- __asm__, so these declarations never clash with the runtime's own cdefs
-- or another spec's when Busted runs every spec in one LuaJIT.
local ffi = require "ffi"

ffi.cdef [[
typedef int e2e_pid_t;
typedef struct { long tv_sec; long tv_nsec; } e2e_timespec_t;
typedef struct { int fd; short events; short revents; } e2e_pollfd_t;
/* Opaque glibc types, given more room than they take (80 and 336 bytes on
 * x86_64 and aarch64) and pointer alignment. */
typedef union { void *align; unsigned char b[256]; } e2e_spawn_actions_t;
typedef union { void *align; unsigned char b[512]; } e2e_spawn_attr_t;
typedef union { unsigned long align; unsigned char b[128]; } e2e_sigset_t;
/* struct sockaddr_in with the port and address as network-order bytes. */
typedef struct {
  uint16_t family; uint8_t port[2]; uint8_t addr[4]; uint8_t zero[8];
} e2e_sockaddr_in_t;

extern char **e2e_environ __asm__("environ");

int e2e_spawn_actions_init(e2e_spawn_actions_t *fa) __asm__("posix_spawn_file_actions_init");
int e2e_spawn_actions_destroy(e2e_spawn_actions_t *fa) __asm__("posix_spawn_file_actions_destroy");
int e2e_spawn_actions_adddup2(e2e_spawn_actions_t *fa, int fd, int newfd) __asm__("posix_spawn_file_actions_adddup2");
int e2e_spawn_actions_addchdir(e2e_spawn_actions_t *fa, const char *path) __asm__("posix_spawn_file_actions_addchdir_np");
int e2e_spawnattr_init(e2e_spawn_attr_t *a) __asm__("posix_spawnattr_init");
int e2e_spawnattr_destroy(e2e_spawn_attr_t *a) __asm__("posix_spawnattr_destroy");
int e2e_spawnattr_setflags(e2e_spawn_attr_t *a, short flags) __asm__("posix_spawnattr_setflags");
int e2e_spawnattr_setsigdefault(e2e_spawn_attr_t *a, const e2e_sigset_t *s) __asm__("posix_spawnattr_setsigdefault");
int e2e_spawnattr_setsigmask(e2e_spawn_attr_t *a, const e2e_sigset_t *s) __asm__("posix_spawnattr_setsigmask");
int e2e_sigemptyset(e2e_sigset_t *s) __asm__("sigemptyset");
int e2e_sigaddset(e2e_sigset_t *s, int sig) __asm__("sigaddset");
int e2e_spawnp(e2e_pid_t *pid, const char *file, const e2e_spawn_actions_t *fa,
               const e2e_spawn_attr_t *attr, char *const argv[], char *const envp[]) __asm__("posix_spawnp");

int e2e_pipe2(int fds[2], int flags) __asm__("pipe2");
long e2e_read(int fd, void *buf, size_t n) __asm__("read");
long e2e_write(int fd, const void *buf, size_t n) __asm__("write");
int e2e_close(int fd) __asm__("close");
typedef struct { unsigned long cur, max; } e2e_rlimit_t;
int e2e_getrlimit(int resource, e2e_rlimit_t *r) __asm__("getrlimit");
int e2e_dup(int fd) __asm__("dup");
int e2e_setrlimit(int resource, const e2e_rlimit_t *r) __asm__("setrlimit");
int e2e_fcntl(int fd, int cmd, ...) __asm__("fcntl");
int e2e_poll(e2e_pollfd_t *fds, unsigned long nfds, int timeout) __asm__("poll");
int e2e_kill(e2e_pid_t pid, int sig) __asm__("kill");
e2e_pid_t e2e_waitpid(e2e_pid_t pid, int *status, int options) __asm__("waitpid");
char *e2e_mkdtemp(char *tmpl) __asm__("mkdtemp");
char *e2e_realpath(const char *path, char *resolved) __asm__("realpath");
int e2e_clock_gettime(int clk, e2e_timespec_t *ts) __asm__("clock_gettime");
const char *e2e_strerror(int errnum) __asm__("strerror");

int e2e_socket(int domain, int type, int protocol) __asm__("socket");
int e2e_setsockopt(int fd, int level, int name, const void *val, unsigned int len) __asm__("setsockopt");
int e2e_bind(int fd, const e2e_sockaddr_in_t *addr, unsigned int len) __asm__("bind");
int e2e_listen(int fd, int backlog) __asm__("listen");
int e2e_accept4(int fd, e2e_sockaddr_in_t *addr, unsigned int *len, int flags) __asm__("accept4");
int e2e_connect(int fd, const e2e_sockaddr_in_t *addr, unsigned int len) __asm__("connect");
int e2e_getsockname(int fd, e2e_sockaddr_in_t *addr, unsigned int *len) __asm__("getsockname");
long e2e_send(int fd, const void *buf, size_t n, int flags) __asm__("send");

typedef struct { unsigned long cur; unsigned long max; } e2e_rlimit_t;
int e2e_getrlimit(int resource, e2e_rlimit_t *r) __asm__("getrlimit");
int e2e_setrlimit(int resource, const e2e_rlimit_t *r) __asm__("setrlimit");
void *e2e_signal(int sig, void *handler) __asm__("signal");
]]

-- Linux values (the same on x86_64 and aarch64).
local K = {
  O_NONBLOCK = 0x800, O_CLOEXEC = 0x80000, F_GETFL = 3, F_SETFL = 4,
  POLLIN = 1, POLLOUT = 4, POLLERR = 8, POLLHUP = 16,
  WNOHANG = 1, CLOCK_MONOTONIC = 1,
  POSIX_SPAWN_SETSIGDEF = 4, POSIX_SPAWN_SETSIGMASK = 8,
  EINTR = 4, EAGAIN = 11, ECHILD = 10, EADDRINUSE = 98, ECONNREFUSED = 111,
  AF_INET = 2, SOCK_STREAM = 1, SOCK_NONBLOCK = 0x800, SOCK_CLOEXEC = 0x80000,
  SOL_SOCKET = 1, SO_REUSEADDR = 2, MSG_NOSIGNAL = 0x4000, RLIMIT_NOFILE = 7, RLIMIT_FSIZE = 1,
  SIG = { HUP = 1, INT = 2, KILL = 9, PIPE = 13, TERM = 15, CONT = 18, STOP = 19, XFSZ = 25 },
}

local M = { C = ffi.C, ffi = ffi, K = K }

-- The text of the current errno.
function M.errmsg(errno)
  errno = errno or ffi.errno()
  return ffi.string(ffi.C.e2e_strerror(errno)) .. " (errno " .. errno .. ")"
end

-- Runs f() with this process's files limited to limit bytes (RLIMIT_FSIZE)
-- and SIGXFSZ ignored, so that a write past it is cut short (a full disk
-- that tears a write); the limit goes afterwards. Returns what f returns.
function M.with_file_limit(limit, f)
  local C = ffi.C
  local old = ffi.new("e2e_rlimit_t")
  assert(C.e2e_getrlimit(K.RLIMIT_FSIZE, old) == 0, "getrlimit: " .. M.errmsg())
  local handler = C.e2e_signal(K.SIG.XFSZ, ffi.cast("void *", 1)) -- SIG_IGN
  local new = ffi.new("e2e_rlimit_t", { limit, old.max })
  assert(C.e2e_setrlimit(K.RLIMIT_FSIZE, new) == 0, "setrlimit: " .. M.errmsg())
  local r = (function(...) return { n = select("#", ...), ... } end)(pcall(f))
  assert(C.e2e_setrlimit(K.RLIMIT_FSIZE, old) == 0, "setrlimit: " .. M.errmsg())
  C.e2e_signal(K.SIG.XFSZ, handler)
  if not r[1] then error(r[2], 0) end
  return unpack(r, 2, r.n)
end

-- Sets O_NONBLOCK on fd.
function M.set_nonblocking(fd)
  local C = ffi.C
  local fl = C.e2e_fcntl(fd, K.F_GETFL)
  assert(fl >= 0 and C.e2e_fcntl(fd, K.F_SETFL, ffi.new("int", bit.bor(fl, K.O_NONBLOCK))) == 0,
    "fcntl: " .. M.errmsg())
end

-- Runs fn() with no descriptor left to open (the soft limit at the highest
-- one open now, the free ones below it taken), then gives them back and
-- restores the limit. Returns what fn returns.
function M.without_descriptors(fn)
  local C = ffi.C
  local old = ffi.new("e2e_rlimit_t")
  assert(C.e2e_getrlimit(K.RLIMIT_NOFILE, old) == 0, "getrlimit: " .. M.errmsg())
  local highest = 0
  for fd = 0, 4095 do
    if C.e2e_fcntl(fd, K.F_GETFL) >= 0 then highest = fd end
  end
  local tight = ffi.new("e2e_rlimit_t", highest + 1, old.max)
  assert(C.e2e_setrlimit(K.RLIMIT_NOFILE, tight) == 0, "setrlimit: " .. M.errmsg())
  local taken = {}
  while true do
    local fd = C.e2e_dup(2)
    if fd < 0 then break end
    taken[#taken + 1] = fd
  end
  local ok, a, b = pcall(fn)
  for _, fd in ipairs(taken) do C.e2e_close(fd) end
  assert(C.e2e_setrlimit(K.RLIMIT_NOFILE, old) == 0, "setrlimit: " .. M.errmsg())
  if not ok then error(a, 0) end
  return a, b
end
return M
