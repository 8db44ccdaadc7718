-- helpers.proc: child processes for end-to-end specs (posix_spawn with pipes
-- on stdin, stdout and stderr, non-blocking reads, signals, exit with a
-- timeout), polling waits on concrete conditions, temp dirs and small file
-- helpers. Every process and temp dir made here is tracked, so one
-- proc.cleanup() in after_each leaves nothing behind.
local libc = require "helpers.libc"

local ffi, C, K = libc.ffi, libc.C, libc.K
local errmsg = libc.errmsg

local M = {}

local live = {}     -- spawned processes not yet reaped and closed
local tmpdirs = {}  -- temp dirs to remove

-- -- Time and waiting --

local ts = ffi.new("e2e_timespec_t")

-- Seconds on the monotonic clock.
function M.now()
  C.e2e_clock_gettime(K.CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end

local function pause_ms(ms)
  C.e2e_poll(nil, 0, ms)
end

local POLL_MS = 5

-- Polls cond() every few ms until it returns a true value, and returns that
-- value. After timeout_s seconds raises "timed out after Ns waiting for
-- <what>"; what is a string or a function giving one (called on timeout, so
-- it can describe the state, e.g. a process's output so far). Meanwhile the
-- output of every process spawned here is read: one whose pipe filled up
-- would block in its next write, whatever the wait is for.
function M.wait_for(cond, timeout_s, what)
  local deadline = M.now() + (timeout_s or 5)
  while true do
    for p in pairs(live) do p:pump() end
    local v = cond()
    if v then return v end
    if M.now() >= deadline then
      if type(what) == "function" then what = what() end
      error(("timed out after %gs waiting for %s"):format(timeout_s or 5, what or "a condition"), 2)
    end
    pause_ms(POLL_MS)
  end
end

-- -- Processes --

local Proc = {}
Proc.__index = Proc

local function cstrings(list)
  local keep = {}
  local arr = ffi.new("char *[?]", #list + 1)
  for i, s in ipairs(list) do
    keep[i] = ffi.new("char[?]", #s + 1, s)
    arr[i - 1] = keep[i]
  end
  arr[#list] = nil
  return arr, keep
end

-- The environment as a list of "K=V", with overrides (value false removes).
local function environment(overrides)
  local list, seen = {}, {}
  local env = C.e2e_environ
  local i = 0
  while env[i] ~= nil do
    local kv = ffi.string(env[i])
    local k = kv:match("^([^=]*)=")
    if k and overrides[k] ~= nil then
      seen[k] = true
      if overrides[k] then list[#list + 1] = k .. "=" .. overrides[k] end
    else
      list[#list + 1] = kv
    end
    i = i + 1
  end
  for k, v in pairs(overrides) do
    if not seen[k] and v then list[#list + 1] = k .. "=" .. v end
  end
  return list
end

local function new_pipe()
  local fds = ffi.new("int[2]")
  assert(C.e2e_pipe2(fds, K.O_CLOEXEC) == 0, "pipe2: " .. errmsg())
  return fds[0], fds[1]
end

-- Starts argv[1] (looked up on PATH) with argv as its arguments, its stdin,
-- stdout and stderr on pipes. opts: cwd, env (table of overrides). The child
-- starts with default SIGPIPE/SIGTERM/SIGINT/SIGHUP handling and no signal
-- blocked, whatever this process does. Returns a Proc: p.pid, p.stdout and
-- p.stderr (what was read so far; call p:pump() to read more).
function M.spawn(argv, opts)
  opts = opts or {}
  local in_r, in_w = new_pipe()
  local out_r, out_w = new_pipe()
  local err_r, err_w = new_pipe()
  local fa = ffi.new("e2e_spawn_actions_t")
  local attr = ffi.new("e2e_spawn_attr_t")
  local sigs = ffi.new("e2e_sigset_t")
  local empty = ffi.new("e2e_sigset_t")
  C.e2e_spawn_actions_init(fa)
  C.e2e_spawnattr_init(attr)
  -- dup2 clears O_CLOEXEC on 0, 1, 2; every other pipe end closes at exec.
  C.e2e_spawn_actions_adddup2(fa, in_r, 0)
  C.e2e_spawn_actions_adddup2(fa, out_w, 1)
  C.e2e_spawn_actions_adddup2(fa, err_w, 2)
  if opts.cwd then C.e2e_spawn_actions_addchdir(fa, opts.cwd) end
  C.e2e_sigemptyset(sigs)
  for _, s in ipairs { K.SIG.PIPE, K.SIG.TERM, K.SIG.INT, K.SIG.HUP } do C.e2e_sigaddset(sigs, s) end
  C.e2e_sigemptyset(empty)
  C.e2e_spawnattr_setsigdefault(attr, sigs)
  C.e2e_spawnattr_setsigmask(attr, empty)
  C.e2e_spawnattr_setflags(attr, K.POSIX_SPAWN_SETSIGDEF + K.POSIX_SPAWN_SETSIGMASK)
  local cargv, keep_argv = cstrings(argv)
  local envp, keep_env = C.e2e_environ, nil
  if opts.env then envp, keep_env = cstrings(environment(opts.env)) end
  local pid = ffi.new("e2e_pid_t[1]")
  local rc = C.e2e_spawnp(pid, argv[1], fa, attr, cargv, envp)
  C.e2e_spawn_actions_destroy(fa)
  C.e2e_spawnattr_destroy(attr)
  local _ = keep_argv, keep_env
  C.e2e_close(in_r)
  C.e2e_close(out_w)
  C.e2e_close(err_w)
  if rc ~= 0 then
    C.e2e_close(in_w); C.e2e_close(out_r); C.e2e_close(err_r)
    error(("cannot start %s: %s"):format(argv[1], errmsg(rc)), 2)
  end
  for _, fd in ipairs { in_w, out_r, err_r } do libc.set_nonblocking(fd) end
  local p = setmetatable({
    pid = pid[0], argv = argv, started = M.now(),
    stdin_fd = in_w, fds = { stdout = out_r, stderr = err_r },
    stdout = "", stderr = "",
  }, Proc)
  live[p] = true
  return p
end

local readbuf = ffi.new("char[65536]")

-- Reads whatever stdout and stderr hold now into p.stdout and p.stderr,
-- without blocking. Returns p.
function Proc:pump()
  for _, which in ipairs { "stdout", "stderr" } do
    local fd = self.fds[which]
    while fd do
      local n = tonumber(C.e2e_read(fd, readbuf, 65536))
      if n > 0 then
        self[which] = self[which] .. ffi.string(readbuf, n)
      elseif n == 0 then
        C.e2e_close(fd)
        self.fds[which] = nil
        fd = nil
      else
        local e = ffi.errno()
        if e ~= K.EINTR then break end
      end
    end
  end
  return self
end

-- Checks without blocking whether the process has exited. Returns true once
-- it has (then p.code is its exit code, or p.signal the signal that killed it).
function Proc:exited()
  if self.status then return true end
  local st = ffi.new("int[1]")
  local r = C.e2e_waitpid(self.pid, st, K.WNOHANG)
  if r == self.pid then
    local s = st[0]
    self.status = s
    if bit.band(s, 0x7f) == 0 then
      self.code = bit.band(bit.rshift(s, 8), 0xff)
    else
      self.signal = bit.band(s, 0x7f)
    end
    return true
  end
  if r < 0 and ffi.errno() == K.ECHILD then
    self.status, self.code = -1, -1
    return true
  end
  return false
end

-- "exit code N" / "killed by signal N" / "running".
function Proc:state()
  if not self.status then return "running" end
  if self.signal then return "killed by signal " .. self.signal end
  return "exit code " .. tostring(self.code)
end

local function tail(s, n)
  if #s <= n then return s end
  return "..." .. s:sub(-n)
end

-- A description of the process for failure messages: state and output.
-- p.shorten(which, text), if set, drops uninteresting parts of the output
-- first (e.g. empty batches).
function Proc:describe()
  self:pump()
  local out, err = self.stdout, self.stderr
  if self.shorten then out, err = self.shorten("stdout", out), self.shorten("stderr", err) end
  return ("%s [%s]\n--- stdout ---\n%s\n--- stderr ---\n%s"):format(
    table.concat(self.argv, " "), self:state(), tail(out, 3000), tail(err, 3000))
end

-- Writes all of s to the process's stdin (waiting while the pipe is full, up
-- to timeout_s seconds).
function Proc:write(s, timeout_s)
  assert(self.stdin_fd, "stdin is closed")
  local off = 0
  M.wait_for(function()
    while off < #s do
      local n = tonumber(C.e2e_write(self.stdin_fd, ffi.cast("const char *", s) + off, #s - off))
      if n > 0 then
        off = off + n
      else
        local e = ffi.errno()
        if e == K.EAGAIN then self:pump() return false end
        if e ~= K.EINTR then error("write to the process's stdin: " .. errmsg(e) .. "\n" .. self:describe(), 0) end
      end
    end
    return true
  end, timeout_s or 5, function() return "stdin to take the input\n" .. self:describe() end)
  return self
end

-- Closes the process's stdin (it reads end of file).
function Proc:close_stdin()
  if self.stdin_fd then
    C.e2e_close(self.stdin_fd)
    self.stdin_fd = nil
  end
  return self
end

-- Sends a signal: a name ("TERM", "KILL", "INT", "HUP") or a number.
function Proc:kill(sig)
  sig = sig or "TERM"
  local n = type(sig) == "number" and sig or K.SIG[sig]
  assert(n, "unknown signal " .. tostring(sig))
  if not self:exited() then C.e2e_kill(self.pid, n) end
  return self
end

-- Reads the rest of the output after the process exited (until both pipes
-- reach end of file, or nothing more comes within a moment: a grandchild
-- may hold them).
function Proc:drain()
  local deadline = M.now() + 1
  repeat
    self:pump()
    if not self.fds.stdout and not self.fds.stderr then break end
    pause_ms(1)
  until M.now() > deadline
  return self
end

-- The stacks of every thread of the process if it still runs (gdb, when
-- installed), for the message of a test that waited for it in vain.
function Proc:stacks()
  if self:exited() or os.execute("command -v gdb >/dev/null 2>&1") ~= 0 then return "" end
  local pipe = io.popen(("timeout 30 gdb -p %d -batch -nx -ex 'thread apply all bt' 2>&1"):format(self.pid))
  local out = pipe:read("*a")
  pipe:close()
  return "\n--- stacks of pid " .. self.pid .. " ---\n" .. out:gsub("\n[^\n]*[Rr]eading symbols[^\n]*", "")
end

-- Waits for the process to exit, reading its output meanwhile. Returns the
-- exit code (nil and the signal if a signal killed it). After timeout_s
-- seconds the test fails with the process's output in the message.
function Proc:wait(timeout_s)
  M.wait_for(function()
    self:pump()
    return self:exited()
  end, timeout_s or 5, function() return "the process to exit\n" .. self:describe() .. self:stacks() end)
  self:drain()
  self.elapsed = M.now() - self.started
  return self.code, self.signal
end

-- Waits until the output stream (which: "stdout" or "stderr") satisfies
-- want: a string to find (plainly) or a function(text) returning true.
-- Returns want's result. Fails at once if the process exits first without it.
-- label (a string, or a function giving one) says what is awaited in the
-- failure message.
function Proc:wait_output(which, want, timeout_s, label)
  local test = want
  if type(want) == "string" then test = function(text) return text:find(want, 1, true) end end
  label = label or (type(want) == "string" and ("%q on %s"):format(want, which) or ("a condition on " .. which))
  local function what()
    return (type(label) == "function" and label() or label) .. "\n" .. self:describe()
  end
  return M.wait_for(function()
    self:pump()
    local v = test(self[which])
    if v then return v end
    if self:exited() then
      self:drain()
      v = test(self[which])
      if v then return v end
      error("the process exited before " .. what(), 0)
    end
    return false
  end, timeout_s or 5, what)
end

function Proc:wait_stdout(want, timeout_s) return self:wait_output("stdout", want, timeout_s) end
function Proc:wait_stderr(want, timeout_s) return self:wait_output("stderr", want, timeout_s) end

-- Kills the process if it still runs (SIGKILL), reaps it and closes the
-- pipes. Safe to call twice.
function Proc:finish()
  if not self:exited() then
    C.e2e_kill(self.pid, K.SIG.KILL)
    local ok = pcall(M.wait_for, function() return self:exited() end, 5)
    if not ok then io.stderr:write("helpers.proc: pid ", self.pid, " did not die\n") end
  end
  self:pump()
  self:close_stdin()
  for which, fd in pairs(self.fds) do
    C.e2e_close(fd)
    self.fds[which] = nil
  end
  live[self] = nil
  return self
end

-- Runs argv to completion: writes opts.input (if any), closes stdin, waits
-- up to opts.timeout seconds (default 10). Returns code, stdout, stderr, proc.
function M.run(argv, opts)
  opts = opts or {}
  local p = M.spawn(argv, opts)
  local ok, err = pcall(function()
    if opts.input then p:write(opts.input) end
    p:close_stdin()
    p:wait(opts.timeout or 10)
  end)
  p:finish()
  if not ok then error(err, 0) end
  return p.code, p.stdout, p.stderr, p
end

-- -- Files --

local function shell_quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end
M.shell_quote = shell_quote

-- Makes a fresh temp dir (removed by cleanup). Returns its path.
function M.tmpdir()
  local tmpl = ffi.new("char[?]", 64, "/tmp/streamrun-e2e-XXXXXX")
  assert(C.e2e_mkdtemp(tmpl) ~= nil, "mkdtemp: " .. errmsg())
  local path = ffi.string(tmpl)
  tmpdirs[#tmpdirs + 1] = path
  return path
end

-- The absolute, resolved form of path; nil if it does not exist.
function M.realpath(path)
  local buf = ffi.new("char[4096]")
  if C.e2e_realpath(path, buf) == nil then return nil end
  return ffi.string(buf)
end

function M.read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

function M.write_file(path, content)
  local f = assert(io.open(path, "wb"))
  assert(f:write(content))
  assert(f:close())
  return path
end

function M.append_file(path, content)
  local f = assert(io.open(path, "ab"))
  assert(f:write(content))
  assert(f:close())
  return path
end

-- Creates a directory (and its parents).
function M.mkdir(path)
  local r = os.execute("mkdir -p " .. shell_quote(path))
  assert(r == 0 or r == true, "mkdir -p " .. path .. " failed")
  return path
end

function M.exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  return false
end

-- The names in a directory (with dot files, without . and ..), sorted.
function M.list_dir(dir)
  local names = {}
  local p = assert(io.popen("ls -A " .. shell_quote(dir) .. " 2>/dev/null"))
  for line in p:lines() do names[#names + 1] = line end
  p:close()
  table.sort(names)
  return names
end

-- The lines of a text (the last one without its newline kept, if any).
function M.lines(text)
  local out = {}
  for line in (text or ""):gmatch("([^\n]*)\n") do out[#out + 1] = line end
  local rest = (text or ""):match("([^\n]+)$")
  if rest then out[#out + 1] = rest end
  return out
end

-- -- Cleanup --

-- Kills and reaps every process still running and removes the temp dirs.
-- Call from after_each.
function M.cleanup()
  for p in pairs(live) do p:finish() end
  for i = #tmpdirs, 1, -1 do
    os.execute("rm -rf " .. shell_quote(tmpdirs[i]))
    tmpdirs[i] = nil
  end
end

-- The repository root: two levels above this file.
do
  local src = debug.getinfo(1, "S").source:gsub("^@", "")
  local dir = src:match("^(.*)/spec/helpers/[^/]*$") or "."
  M.ROOT = M.realpath(dir) or dir
end

return M
