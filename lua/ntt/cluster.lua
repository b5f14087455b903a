-- lua/ntt/cluster.lua: ntt's own private PostgreSQL cluster.
--
-- With NTT_DB_URL unset, ntt keeps a cluster under <home>/pg:
--   <root>/data           the data directory (mode 0700)
--   <root>/run            the unix socket directory (no TCP: listen_addresses = '')
--   <root>/postgres.log   the server log (pg_ctl -l)
-- The server binaries come from Debian's postgresql package
-- (/usr/lib/postgresql/<major>/bin, highest major; or PATH).  PostgreSQL
-- refuses to run as root: when ntt runs as root, initdb/pg_ctl/postgres run
-- as the account owning an existing data directory, else the `postgres`
-- system account (or `nobody` when there is none), and the root directory is
-- chowned to it.  Clients connect as role `ntt` to
-- database `ntt` over the socket with trust authentication (only accounts
-- that can reach the socket directory can connect).  `ntt db serve`
-- (lua/ntt/serve.lua) adds TCP with TLS and SCRAM for other hosts.
--
--   cluster.new{root=dir [, user=account] [, bindir=dir]} -> Cluster
--       bindir: where initdb/pg_ctl are (default: searched, see bindir())
--   cluster.default()                       -> Cluster for <config.home()>/pg
--   c:init()                 -> true | nil, msg, code  (initdb + settings; idempotent)
--   c:start{init=bool, timeout=s} -> true | nil, msg, code  (already running: true;
--                               creates database ntt when missing)
--   c:stop{timeout=s}        -> true | nil, msg, code  (not running: true)
--   c:status()               -> "running"|"stopped"|"absent", details
--       details = { root=, data=, run=, log=, url=, user=, version=, pid=, bindir= }
--   c:url([dbname])          -> "postgresql:///ntt?host=<run, %-encoded>&port=<port>&user=ntt"
--   c:port()                 -> the server's port: 5432 unless `ntt db serve`
--                               chose another (data/ntt-serve.conf, ntt.serve)
--   c:include(file)          -> true | nil, msg, code: postgresql.conf includes
--                               data/<file> (if it exists), after ntt's settings
--   c:bindir()               -> directory of initdb/pg_ctl | nil, msg, "ENOENT"
-- Failure codes (docs/errors.md): the code of the failing call passed on
-- (fs.*, proc.run, pg.connect, "EDB" + SQLSTATE from a query), and ntt's own
-- decisions: "ENOENT" no server binaries / no cluster (start without init),
-- "ENAMETOOLONG" the socket path does not fit, "EACCES" the server's account
-- cannot reach the data root, "EIO" initdb or pg_ctl exited non-zero (the
-- proc.run result as a fourth value).
local proc = require "ntt.core.proc"
local fs = require "ntt.core.fs"
local util = require "ntt.core.util"

local M = {}
local C = {}
C.__index = C

local SOCKET_MAX = 100          -- bytes of "<run>/.s.PGSQL.5432" (sun_path holds 108)
local PORT = 5432
M.DEFAULT_PORT = PORT
C.DEFAULT_PORT = PORT
local INSTALL_HINT = "PostgreSQL server binaries (initdb, pg_ctl) not found in "
  .. "/usr/lib/postgresql/*/bin or PATH: install them (apt-get install postgresql)"

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close(); return true end
  return false
end

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local function run(argv, opts)
  opts = opts or {}
  local r, err, code = proc.run { argv = argv, user = opts.user, timeout = opts.timeout or 120,
                                  cwd = opts.cwd or "/", env = opts.env }
  if not r then return nil, err, code end
  if r.code ~= 0 then
    local out = (r.stderr ~= "" and r.stderr or r.stdout):gsub("%s+$", "")
    return nil, ("%s failed (%s): %s"):format(argv[1]:match("[^/]*$"),
      r.code and ("exit " .. r.code) or ("signal " .. tostring(r.signal)), out), "EIO", r
  end
  return r
end

local function tail(path, n)
  local s = read_file(path)
  if not s then return "" end
  local lines = {}
  for l in s:gmatch("[^\n]+") do lines[#lines + 1] = l end
  return table.concat(lines, "\n", math.max(1, #lines - n + 1))
end

-- Versions under /usr/lib/postgresql, highest first.
local function debian_versions()
  local v = {}
  for _, name in ipairs(fs.readdir("/usr/lib/postgresql") or {}) do
    if name:match("^%d+$") and exists("/usr/lib/postgresql/" .. name .. "/bin/pg_ctl") then
      v[#v + 1] = tonumber(name)
    end
  end
  table.sort(v, function(a, b) return a > b end)
  return v
end

local function urlencode(s)
  return (s:gsub("[^%w/._~-]", function(ch) return ("%%%02X"):format(ch:byte()) end))
end

function M.new(opts)
  if type(opts) ~= "table" or type(opts.root) ~= "string" or opts.root == "" then
    error("cluster.new: root (a directory path) is required", 2)
  end
  local root = opts.root:gsub("/+$", "")
  if root:sub(1, 1) ~= "/" then
    local pwd = os.getenv("PWD") or "."
    root = pwd .. "/" .. root
  end
  local self = setmetatable({ root = root, data = root .. "/data", run = root .. "/run",
                              log = root .. "/postgres.log" }, C)
  self.want_bindir = opts.bindir
  if opts.user then
    self.user = opts.user
  elseif util.euid() == 0 then
    -- the account that owns an existing data directory, else postgres/nobody
    local owner, uid = fs.owner(self.data)
    if owner and uid ~= 0 and proc.user_ids(owner) then
      self.user = owner
    else
      self.user = proc.user_ids("postgres") and "postgres" or "nobody"
    end
  end
  return self
end

function M.default()
  return M.new { root = require("ntt.config").path("pg") }
end

-- Directory holding initdb and pg_ctl: the data directory's major version
-- when it exists, else the highest installed, else PATH.
function C:bindir()
  if self._bindir then return self._bindir end
  if self.want_bindir then
    if exists(self.want_bindir .. "/pg_ctl") and exists(self.want_bindir .. "/initdb") then
      self._bindir = self.want_bindir
      return self._bindir
    end
    return nil, (INSTALL_HINT:gsub("/usr/lib/postgresql/%*/bin or PATH", self.want_bindir)), "ENOENT"
  end
  local want = (read_file(self.data .. "/PG_VERSION") or ""):match("^(%d+)")
  if want and exists("/usr/lib/postgresql/" .. want .. "/bin/pg_ctl") then
    self._bindir = "/usr/lib/postgresql/" .. want .. "/bin"
    return self._bindir
  end
  local v = debian_versions()
  if v[1] then
    self._bindir = "/usr/lib/postgresql/" .. v[1] .. "/bin"
    return self._bindir
  end
  for dir in (os.getenv("PATH") or ""):gmatch("[^:]+") do
    if exists(dir .. "/pg_ctl") and exists(dir .. "/initdb") then
      self._bindir = dir
      return dir
    end
  end
  return nil, INSTALL_HINT, "ENOENT"
end

function C:url(dbname)
  return ("postgresql:///%s?host=%s&port=%d&user=ntt"):format(dbname or "ntt", urlencode(self.run), self:port())
end

function C:port()
  local conf = read_file(self.data .. "/ntt-serve.conf")
  return conf and tonumber(conf:match("\nport = (%d+)") or conf:match("^port = (%d+)")) or PORT
end

function C:include(file)
  local conf = self.data .. "/postgresql.conf"
  local line = ("include_if_exists = '%s'"):format(file)
  local text = read_file(conf)
  if not text then return nil, "cluster: cannot read " .. conf, "ENOENT" end
  if text:find(line, 1, true) then return true end
  local f, err, errno = io.open(conf, "ab")
  if not f then return nil, "cluster: " .. err, util.errname(errno) end
  f:write("\n# ntt: settings of `ntt db serve`, when it serves\n", line, "\n")
  f:close()
  return true
end

function C:_tool(name, args, opts)
  local bin, err, code = self:bindir()
  if not bin then return nil, err, code end
  local argv = { bin .. "/" .. name }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  opts = opts or {}
  opts.user = self.user
  return run(argv, opts)
end

-- Makes the directories, owned by the server's account, and checks that
-- the account can reach them and that the socket path fits.
function C:_prepare()
  local sock = self.run .. "/.s.PGSQL." .. self:port()
  if #sock >= SOCKET_MAX then
    return nil, ("cluster: socket path %s is %d bytes (limit %d): choose a shorter data root (NTT_HOME)")
      :format(sock, #sock, SOCKET_MAX), "ENAMETOOLONG"
  end
  for _, dir in ipairs { self.root, self.run } do
    local ok, err, code = fs.mkdirp(dir)
    if not ok then return nil, "cluster: " .. err, code end
    if self.user then
      ok, err, code = fs.chown(dir, self.user)
      if not ok then return nil, "cluster: " .. err, code end
    end
  end
  if self.user and not fs.access(self.run, "w", self.user) then
    return nil, ("cluster: account '%s' cannot reach %s: make its parent directories searchable "
      .. "(chmod o+x) or choose another data root (NTT_HOME)"):format(self.user, self.root), "EACCES"
  end
  for _, dir in ipairs { self.root, self.run } do
    local ok, err, code = fs.chmod(dir, tonumber("700", 8))
    if not ok then return nil, "cluster: " .. err, code end
  end
  return true
end

-- A sixteenth of the machine's memory, from 128 MB (PostgreSQL's default) to 1 GB.
local function shared_buffers_mb()
  local total = tonumber((read_file("/proc/meminfo") or ""):match("MemTotal:%s*(%d+) kB"))
  if not total then return 128 end
  return math.max(128, math.min(1024, total // 1024 // 16))
end

function C:init()
  if exists(self.data .. "/PG_VERSION") then return true end
  local bin, err, code = self:bindir()
  if not bin then return nil, err, code end
  local ok
  ok, err, code = self:_prepare()
  if not ok then return nil, err, code end
  -- initdb into a private directory renamed into place at the end, so that
  -- concurrent first starts (several workers) never see a half-made cluster.
  local tmpdata = ("%s/data.init.%d"):format(self.root, util.pid())
  fs.rmtree(tmpdata)
  ok, err, code = self:_tool("initdb", { "-D", tmpdata, "-U", "ntt", "-E", "UTF8", "--locale=C",
                                    "--auth-local=trust", "--auth-host=reject" }, { timeout = 300 })
  if not ok then
    fs.rmtree(tmpdata)
    return nil, "cluster: " .. err, code
  end
  local conf = table.concat({
    "",
    "# ntt: private cluster, unix socket only",
    "listen_addresses = ''",
    ("unix_socket_directories = '%s'"):format(self.run:gsub("'", "''")),
    "port = " .. PORT,
    "fsync = on",
    -- nothing replicates from a private cluster; minimal lets a table made
    -- and filled in one transaction (a medium's enumeration) skip the WAL
    "wal_level = minimal",
    "max_wal_senders = 0",
    -- PostgreSQL's defaults are for a small shared server; a medium of a
    -- million files updates a million rows in its copy stage: buffers from
    -- the machine's memory, and checkpoints far enough apart that a page
    -- is not written out again and again (measured: the copy of 1M files
    -- 135 -> 123 s)
    ("shared_buffers = %dMB"):format(shared_buffers_mb()),
    "max_wal_size = 4GB",
    "checkpoint_timeout = 15min",
    "",
  }, "\n")
  local f, ferr, ferrno = io.open(tmpdata .. "/postgresql.conf", "ab")
  if not f then fs.rmtree(tmpdata); return nil, "cluster: " .. ferr, util.errname(ferrno) end
  f:write(conf)
  f:close()
  local moved, merr, merrno = os.rename(tmpdata, self.data)
  if not moved then
    fs.rmtree(tmpdata)
    if exists(self.data .. "/PG_VERSION") then return true end   -- another process won
    return nil, "cluster: " .. tostring(merr), util.errname(merrno)
  end
  return true
end

function C:status()
  local details = { root = self.root, data = self.data, run = self.run, log = self.log,
                    url = self:url(), user = self.user }
  local ver = read_file(self.data .. "/PG_VERSION")
  if not ver then return "absent", details end
  details.version = ver:match("%d+")
  details.bindir = self:bindir()
  local pidfile = read_file(self.data .. "/postmaster.pid")
  details.pid = pidfile and tonumber(pidfile:match("^(%d+)"))
  local r = self:_tool("pg_ctl", { "status", "-D", self.data }, { timeout = 30 })
  if r then return "running", details end
  details.pid = nil
  return "stopped", details
end

-- Creates database ntt when missing (a concurrent creator is fine).
function C:_ensure_db()
  local pg = require "ntt.core.pg"
  local conn, err, code
  local deadline = util.monotonic() + 30
  repeat   -- a server another process just started may still be starting up
    conn, err, code = pg.connect(self:url("postgres"))
    if not conn then util.sleep(0.1) end
  until conn or util.monotonic() > deadline
  if not conn then return nil, "cluster: " .. err, code end
  local res, qerr, qcode, state
  for _ = 1, 50 do
    res, qerr, qcode, state = conn:exec("SELECT 1 AS x FROM pg_database WHERE datname = 'ntt'")
    if not res or #res > 0 then break end
    res, qerr, qcode, state = conn:exec("CREATE DATABASE ntt")
    -- 42P04: created meanwhile; 23505: created meanwhile, caught by the
    -- catalog's unique index instead; 55006: template1 busy with another creator
    if res or state == "42P04" then res = true; break end
    if state ~= "55006" and state ~= "23505" then break end
    util.sleep(0.1)
  end
  conn:close()
  if not res then return nil, "cluster: " .. tostring(qerr), qcode, state end
  return true
end

function C:start(opts)
  opts = opts or {}
  local state = self:status()
  if state == "absent" then
    if not opts.init then
      return nil, ("cluster: no cluster at %s (run `ntt db init`)"):format(self.data), "ENOENT"
    end
    local ok, err, code = self:init()
    if not ok then return nil, err, code end
  end
  if state ~= "running" then
    local ok, err, code = self:_prepare()
    if not ok then return nil, err, code end
    local timeout = opts.timeout or 60
    local r
    r, err, code = self:_tool("pg_ctl", { "start", "-w", "-s", "-t", tostring(timeout), "-D", self.data,
                                    "-l", self.log }, { timeout = timeout + 10 })
    if not r and self:status() ~= "running" then
      return nil, ("cluster: %s\n%s"):format(err, tail(self.log, 5)), code
    end
  end
  return self:_ensure_db()
end

function C:stop(opts)
  opts = opts or {}
  if self:status() ~= "running" then return true end
  local timeout = opts.timeout or 60
  local r, err, code = self:_tool("pg_ctl", { "stop", "-w", "-s", "-m", "fast", "-t", tostring(timeout),
                                        "-D", self.data }, { timeout = timeout + 10 })
  if not r and self:status() == "running" then return nil, "cluster: " .. err, code end
  return true
end

return M
