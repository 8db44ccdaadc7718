-- helpers.net: TCP on 127.0.0.1 for end-to-end specs, through the FFI (no
-- luasocket): a server on a given port or port 0 (the system picks; read it
-- back from server.port), a client, and a free-port finder. Every socket
-- made here is tracked, so net.cleanup() in after_each closes what is left.
local libc = require "helpers.libc"
local proc = require "helpers.proc"

local ffi, C, K = libc.ffi, libc.C, libc.K
local errmsg = libc.errmsg

local M = {}

local open_socks = {}

local function addr(port)
  local sa = ffi.new("e2e_sockaddr_in_t")
  sa.family = K.AF_INET
  sa.port[0], sa.port[1] = bit.rshift(port, 8), bit.band(port, 0xff)
  sa.addr[0], sa.addr[1], sa.addr[2], sa.addr[3] = 127, 0, 0, 1
  return sa
end

local SA_LEN = ffi.sizeof("e2e_sockaddr_in_t")

local function new_socket()
  local fd = C.e2e_socket(K.AF_INET, K.SOCK_STREAM + K.SOCK_CLOEXEC, 0)
  assert(fd >= 0, "socket: " .. errmsg())
  return fd
end

local function close_fd(obj)
  if obj.fd then
    C.e2e_close(obj.fd)
    open_socks[obj] = nil
    obj.fd = nil
  end
end

-- -- Connections --

local Conn = {}
Conn.__index = Conn

local function conn_of(fd)
  libc.set_nonblocking(fd)
  local c = setmetatable({ fd = fd }, Conn)
  open_socks[c] = true
  return c
end

-- Sends all of s (waiting up to timeout_s while the socket buffer is full).
-- Raises if the peer is gone.
function Conn:send(s, timeout_s)
  assert(self.fd, "connection is closed")
  local off = 0
  proc.wait_for(function()
    while off < #s do
      local n = tonumber(C.e2e_send(self.fd, ffi.cast("const char *", s) + off, #s - off, K.MSG_NOSIGNAL))
      if n > 0 then
        off = off + n
      else
        local e = ffi.errno()
        if e == K.EAGAIN then return false end
        if e ~= K.EINTR then error("send: " .. errmsg(e), 0) end
      end
    end
    return true
  end, timeout_s or 5, "the socket to take the data")
  return self
end

function Conn:close() close_fd(self) end

-- -- Servers --

local Server = {}
Server.__index = Server

-- Listens on 127.0.0.1:port (0 or nil: a free port; SO_REUSEADDR, so a
-- port just closed can be taken again). Returns the server (server.port),
-- or nil and the message when the port cannot be bound.
function M.server(port)
  local fd = new_socket()
  local one = ffi.new("int[1]", 1)
  C.e2e_setsockopt(fd, K.SOL_SOCKET, K.SO_REUSEADDR, one, ffi.sizeof("int"))
  if C.e2e_bind(fd, addr(port or 0), SA_LEN) ~= 0 or C.e2e_listen(fd, 64) ~= 0 then
    local msg = errmsg()
    C.e2e_close(fd)
    return nil, ("cannot listen on 127.0.0.1:%d: %s"):format(port or 0, msg)
  end
  libc.set_nonblocking(fd)
  local sa, len = ffi.new("e2e_sockaddr_in_t"), ffi.new("unsigned int[1]", SA_LEN)
  assert(C.e2e_getsockname(fd, sa, len) == 0, "getsockname: " .. errmsg())
  local s = setmetatable({ fd = fd, port = sa.port[0] * 256 + sa.port[1] }, Server)
  open_socks[s] = true
  return s
end

-- Waits up to timeout_s for a client and returns its connection.
function Server:accept(timeout_s)
  assert(self.fd, "server is closed")
  return proc.wait_for(function()
    local fd = C.e2e_accept4(self.fd, nil, nil, K.SOCK_CLOEXEC)
    if fd >= 0 then return conn_of(fd) end
    local e = ffi.errno()
    if e ~= K.EAGAIN and e ~= K.EINTR then error("accept: " .. errmsg(e), 0) end
    return false
  end, timeout_s or 5, ("a client to connect to port %d"):format(self.port))
end

function Server:close() close_fd(self) end

-- -- Clients --

-- One attempt to connect to 127.0.0.1:port. Returns the connection, or nil
-- and the message (e.g. nobody listens yet).
function M.try_connect(port)
  local fd = new_socket()
  if C.e2e_connect(fd, addr(port), SA_LEN) ~= 0 then
    local msg = errmsg()
    C.e2e_close(fd)
    return nil, msg
  end
  return conn_of(fd)
end

-- Connects to 127.0.0.1:port, retrying until someone listens (up to
-- timeout_s seconds).
function M.connect(port, timeout_s)
  local last
  return proc.wait_for(function()
    local c, err = M.try_connect(port)
    last = err
    return c
  end, timeout_s or 5, function() return ("a listener on 127.0.0.1:%d (last: %s)"):format(port, tostring(last)) end)
end

-- A port that was free a moment ago (bound to port 0, read, closed), for a
-- child process that needs to be told its port in advance.
function M.free_port()
  local s = assert(M.server(0))
  local port = s.port
  s:close()
  return port
end

-- Closes every socket still open. Call from after_each.
function M.cleanup()
  for obj in pairs(open_socks) do close_fd(obj) end
end

return M
