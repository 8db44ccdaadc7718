-- streamrun.http: `--http [ADDR:]PORT` and the job option `http` (SPEC
-- section 12). Starts the C server (runtime/sr_http.c, libmicrohttpd in its
-- own thread), publishes the status page's assets (lua/streamrun/web/) once
-- and gives the monitor (streamrun.monitor) that publishes /metrics and
-- /api/status after every batch. The server outlives a reload: its handle
-- and the monitor's figures go to the next VM.
local core = require "streamrun.core"
local kafka_lag = require "streamrun.kafka_lag"
local monitor = require "streamrun.monitor"

local C, ffi = core.C, core.ffi

local M = {}

-- The page's files: path served -> file under web/, content type.
M.ASSETS = {
  { "/", "index.html", "text/html; charset=utf-8" },
  { "/status.js", "status.js", "text/javascript; charset=utf-8" },
  { "/status.css", "status.css", "text/css; charset=utf-8" },
}

local function web_dir()
  local src = debug.getinfo(1, "S").source
  return (src:match("^@(.*)/[^/]*$") or ".") .. "/web"
end
M.web_dir = web_dir

-- Host and port of an address: a port alone (number or "9090", ":9090")
-- is on 127.0.0.1; "HOST:PORT", "[V6]:PORT". Returns host, port or nil and
-- why.
function M.parse_address(v)
  local host, port
  if type(v) == "number" then
    port = v
  elseif type(v) == "string" then
    if v:match("^%d+$") then
      port = tonumber(v)
    else
      host, port = v:match("^(%[[^%]]*%]):(%d+)$")
      if not host then host, port = v:match("^([^:]*):(%d+)$") end
      port = tonumber(port)
    end
  else
    return nil, ("http must be a port or \"ADDR:PORT\", got a %s"):format(type(v))
  end
  if not port or port % 1 ~= 0 or port < 0 or port > 65535 then
    return nil, ("http: want PORT or ADDR:PORT (port 0..65535), got %q"):format(tostring(v))
  end
  if host == nil or host == "" then host = "127.0.0.1" end
  return host, port
end

local function publisher(h)
  return function(path, content_type, body)
    local rc = C.sr_http_publish(h, path, content_type, body, #body)
    if rc ~= 0 then error(("http: cannot publish %s: %s"):format(path, ffi.string(C.sr_strerror(rc))), 0) end
  end
end

-- Serves address (see parse_address) for the job. log(fmt, ...) reports.
-- Returns the monitor (monitor.server is the server, owned), or nil and
-- why.
function M.start(address, log)
  local host, port = M.parse_address(address)
  if not host then return nil, port end
  local err = ffi.new("char[512]")
  local h = C.sr_http_start(host, port, err, 512)
  if h == nil then return nil, ffi.string(err) end
  h = ffi.gc(h, C.sr_http_stop)
  local publish = publisher(h)
  local dir = web_dir()
  for _, a in ipairs(M.ASSETS) do
    local f, ferr = io.open(dir .. "/" .. a[2], "rb")
    if not f then return nil, ("http: the status page's %s"):format(ferr) end
    local body = f:read("*a")
    f:close()
    publish(a[1], a[3], body)
  end
  local shown = host:find(":") and not host:find("^%[") and ("[" .. host .. "]") or host
  if C.sr_http_is_wildcard(host) ~= 0 then
    log("warning: http on every interface (%s:%d): anyone who can reach this host sees the job's status; "
      .. "give 127.0.0.1:PORT to serve local clients only", host, C.sr_http_port(h))
  end
  log("http: status page on http://%s:%d/, metrics on /metrics, JSON on /api/status", shown, C.sr_http_port(h))
  local mon = monitor.new(publish, nil, log)
  mon.server = h
  kafka_lag.attach(mon)
  return mon
end

-- What a reload hands the next VM: the server (no longer this VM's to
-- stop) and the monitor's figures.
function M.export(mon)
  local h = mon.server
  ffi.gc(h, nil)
  mon.server = nil
  return { server = tonumber(ffi.cast("uintptr_t", h)), figures = mon:export() }
end

-- The monitor of the next VM, from export's table; counts the reload.
-- log(fmt, ...) reports.
function M.import(ctx, log)
  local h = ffi.gc(ffi.cast("sr_http_t *", ctx.server), C.sr_http_stop)
  local mon = monitor.new(publisher(h), ctx.figures, log)
  mon.server = h
  kafka_lag.attach(mon)
  mon.reloads = mon.reloads + 1
  return mon
end

-- The port the monitor's server listens on.
function M.port(mon) return C.sr_http_port(mon.server) end

return M
