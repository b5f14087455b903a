-- lua/ntt/serve.lua: serving the private cluster to other hosts
-- (`ntt db serve`): TCP with TLS and SCRAM-SHA-256, next to the unix
-- socket the local host keeps using.
--
-- What it keeps (cluster root = <data root>/pg):
--   <root>/serve/ca.crt      the CA certificate remote hosts verify against (0644)
--   <root>/serve/ca.key      its key (0600); made once, kept across serves
--   <root>/serve/password    role ntt's password (0600, one line of hex)
--   <data>/server.crt, server.key   the server's certificate, signed by the
--                            CA for the served names (made on every serve)
--   <data>/ntt-serve.conf    listen_addresses, port, ssl settings (included
--                            from postgresql.conf); absent: not served
--   <data>/pg_hba.conf       a block of hostssl ... scram-sha-256 lines
--                            ahead of initdb's reject lines
-- Certificates are made with the openssl program (EC P-256; the server's
-- carries the served addresses and names as subjectAltName, so clients use
-- sslmode=verify-full).  Serving restarts a running server (listen_addresses
-- needs a restart); a password rotation does not.
--
--   serve.parse_listen(list)     -> { addrs = {...}, port = n } | nil, msg, "EINVAL"
--       each entry ADDR, ADDR:PORT, [V6ADDR]:PORT, * or *:PORT
--   serve.enable(c, {addrs=, port=, allow={cidr...}, names={...}}) -> info | nil, msg, code
--   serve.rotate(c)              -> info | nil, msg, code  (new password; served only)
--   serve.disable(c)             -> true | nil, msg, code  (unix socket only again)
--   serve.info(c)                -> info | nil (not served)
--       info = { url=, ca=, host=, port=, listen=, allow= }
-- Failure codes (docs/errors.md): those of fs.*, proc.run and pg.connect
-- passed on; "ENOENT" no openssl program or no cluster; "EIO" openssl
-- exited non-zero; "EINVAL" a bad --listen or --allow.
local proc = require "ntt.core.proc"
local fs = require "ntt.core.fs"
local util = require "ntt.core.util"

local M = {}

local CONF = "ntt-serve.conf"
local HBA_BEGIN, HBA_END = "# ntt serve: begin", "# ntt serve: end"

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local function write_file(path, text, mode, user)
  local tmp = path .. ".tmp"
  local f, err, errno = io.open(tmp, "wb")
  if not f then return nil, err, util.errname(errno) end
  f:write(text)
  f:close()
  local ok, e, code = fs.chmod(tmp, mode)
  if ok and user then ok, e, code = fs.chown(tmp, user) end
  if not ok then os.remove(tmp); return nil, e, code end
  local moved, merr, merrno = os.rename(tmp, path)
  if not moved then os.remove(tmp); return nil, merr, util.errname(merrno) end
  return true
end

local function random_hex(n)
  local f = assert(io.open("/dev/urandom", "rb"))
  local b = f:read(n)
  f:close()
  return (b:gsub(".", function(ch) return ("%02x"):format(ch:byte()) end))
end

local function paths(c)
  local dir = c.root .. "/serve"
  return { dir = dir, ca = dir .. "/ca.crt", ca_key = dir .. "/ca.key", password = dir .. "/password",
           conf = c.data .. "/" .. CONF, hba = c.data .. "/pg_hba.conf",
           crt = c.data .. "/server.crt", key = c.data .. "/server.key" }
end

local function openssl(args)
  local argv = { "openssl" }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  local r, err, code = proc.run { argv = argv, timeout = 60, cwd = "/" }
  if not r then
    if code == "ENOENT" then
      return nil, "serve: the openssl program is not installed (apt-get install openssl)", "ENOENT"
    end
    return nil, "serve: openssl: " .. tostring(err), code
  end
  if r.code ~= 0 then
    return nil, "serve: openssl " .. args[1] .. " failed: " .. (r.stderr:gsub("%s+$", "")), "EIO"
  end
  return r
end

local function is_ip(s) return s:match("^%d+%.%d+%.%d+%.%d+$") or s:find(":", 1, true) end
local function wildcard(a) return a == "*" or a == "0.0.0.0" or a == "::" end

function M.parse_listen(list)
  local out = { addrs = {}, port = nil }
  for _, item in ipairs(list) do
    local addr, port = item:match("^%[([^%]]+)%]:(%d+)$")
    if not addr then addr, port = item:match("^([^:]+):(%d+)$") end
    if not addr then addr = item:match("^%[([^%]]+)%]$") or item end
    if addr == "" or addr:find("[%s,'\"]") then
      return nil, ("serve: bad listen address '%s'"):format(item), "EINVAL"
    end
    port = port and tonumber(port)
    if port and (port < 1 or port > 65535) then
      return nil, ("serve: bad port in '%s'"):format(item), "EINVAL"
    end
    if port and out.port and port ~= out.port then
      return nil, "serve: one port for every listen address (PostgreSQL has one)", "EINVAL"
    end
    out.port = port or out.port
    out.addrs[#out.addrs + 1] = addr
  end
  if #out.addrs == 0 then out.addrs = { "*" } end
  return out
end

-- The CA, made once.
local function ensure_ca(p)
  if read_file(p.ca) and read_file(p.ca_key) then return true end
  local r, err, code = openssl { "req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
    "-nodes", "-keyout", p.ca_key, "-out", p.ca, "-days", "3650", "-subj", "/CN=ntt database CA " .. random_hex(4),
    "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign" }
  if not r then return nil, err, code end
  local ok
  ok, err, code = fs.chmod(p.ca_key, tonumber("600", 8))
  if ok then ok, err, code = fs.chmod(p.ca, tonumber("644", 8)) end
  if not ok then return nil, "serve: " .. err, code end
  return true
end

-- The server's certificate for names (addresses and host names).
local function server_cert(c, p, names)
  local san = {}
  for _, n in ipairs(names) do san[#san + 1] = (is_ip(n) and "IP:" or "DNS:") .. n end
  local csr, ext = p.dir .. "/server.csr", p.dir .. "/server.ext"
  local key, crt = p.dir .. "/server.key", p.dir .. "/server.crt"
  local ok, err, code = write_file(ext, "subjectAltName = " .. table.concat(san, ",") .. "\n"
    .. "extendedKeyUsage = serverAuth\nbasicConstraints = critical,CA:FALSE\n", tonumber("600", 8))
  if not ok then return nil, "serve: " .. err, code end
  local r
  r, err, code = openssl { "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
    "-keyout", key, "-out", csr, "-subj", "/CN=" .. names[1] }
  if r then
    r, err, code = openssl { "x509", "-req", "-in", csr, "-CA", p.ca, "-CAkey", p.ca_key,
      "-set_serial", "0x" .. random_hex(12), "-days", "825", "-extfile", ext, "-out", crt }
  end
  os.remove(csr); os.remove(ext)
  if not r then os.remove(key); return nil, err, code end
  -- the server refuses a key others can read: 0600, owned by its account
  for _, f in ipairs { { key, p.key, "600" }, { crt, p.crt, "644" } } do
    local text = read_file(f[1])
    os.remove(f[1])
    if not text then return nil, "serve: " .. f[1] .. " was not written", "EIO" end
    ok, err, code = write_file(f[2], text, tonumber(f[3], 8), c.user)
    if not ok then return nil, "serve: " .. err, code end
  end
  return true
end

-- Writes pg_hba.conf with our block (allow: list of CIDRs, or none).
local function write_hba(c, p, allow)
  local text = read_file(p.hba)
  if not text then return nil, "serve: cannot read " .. p.hba, "ENOENT" end
  text = text:gsub("\n?" .. HBA_BEGIN:gsub("%p", "%%%0") .. ".-" .. HBA_END:gsub("%p", "%%%0") .. "\n", "")
  if allow then
    local lines = { HBA_BEGIN }
    for _, cidr in ipairs(allow) do
      lines[#lines + 1] = ("hostssl ntt ntt %s scram-sha-256"):format(cidr)
    end
    lines[#lines + 1] = HBA_END
    -- ahead of everything: the first matching line decides
    text = table.concat(lines, "\n") .. "\n" .. text
  end
  local ok, err, code = write_file(p.hba, text, tonumber("600", 8), c.user)
  if not ok then return nil, "serve: " .. err, code end
  return true
end

local function quote(s) return "'" .. s:gsub("'", "''") .. "'" end

local function set_password(c, p)
  local pw = random_hex(24)
  local conn, err, code = require("ntt.core.pg").connect(c:url("postgres"))
  if not conn then return nil, "serve: " .. err, code end
  -- the verifier, not the password, goes to the server (and so to no log of it)
  local r, qerr, qcode, state = conn:encrypt_password(pw, "ntt")
  if r then r, qerr, qcode, state = conn:exec("ALTER ROLE ntt PASSWORD " .. quote(r)) end
  conn:close()
  if not r then return nil, "serve: " .. tostring(qerr), qcode, state end
  local ok
  ok, err, code = write_file(p.password, pw .. "\n", tonumber("600", 8))
  if not ok then return nil, "serve: " .. err, code end
  return pw
end

-- The settings file: name = value lines ("# host ..." notes what the URL names).
local function read_conf(p)
  local text = read_file(p.conf)
  if not text then return nil end
  local t = {}
  for k, v in text:gmatch("\n?([%w_]+) = ([^\n]*)") do t[k] = v:match("^'(.*)'$") or v end
  t.url_host, t.allow = text:match("# url host (%S+)"), text:match("# allow (%S+)")
  return t
end

function M.info(c)
  local p = paths(c)
  local t = read_conf(p)
  if not t or not t.listen_addresses or t.listen_addresses == "" then return nil end
  local pw = (read_file(p.password) or ""):match("%x+")
  local host = t.url_host or "localhost"
  local hostpart = host:find(":", 1, true) and ("[" .. host .. "]") or host
  local url = ("postgresql://ntt:%s@%s:%s/ntt?sslmode=verify-full&sslrootcert=%s")
    :format(pw or "PASSWORD", hostpart, t.port, p.ca)
  return { url = url, ca = p.ca, host = host, port = tonumber(t.port), listen = t.listen_addresses,
           allow = t.allow, password_file = p.password }
end

local function restart(c)
  if c:status() == "running" then
    local ok, err, code = c:stop()
    if not ok then return nil, err, code end
  end
  return c:start { init = true }
end

function M.enable(c, o)
  o = o or {}
  local allow = o.allow or { "0.0.0.0/0", "::/0" }
  for _, a in ipairs(allow) do
    if not a:match("^[%x:.]+/%d+$") then return nil, ("serve: bad --allow '%s' (a CIDR: 10.0.0.0/8)"):format(a), "EINVAL" end
  end
  local ok, err, code = c:start { init = true }
  if not ok then return nil, err, code end
  local p = paths(c)
  ok, err, code = fs.mkdirp(p.dir)
  if ok then ok, err, code = fs.chmod(p.dir, tonumber("700", 8)) end
  if not ok then return nil, "serve: " .. err, code end
  -- the password first: the server still runs with its old settings
  if not (read_file(p.password) or ""):match("%x+") then
    ok, err, code = set_password(c, p)
    if not ok then return nil, err, code end
  end
  local addrs = o.addrs or { "*" }
  local port = o.port or c:port()
  local names = {}
  for _, n in ipairs(o.names or {}) do names[#names + 1] = n end
  for _, a in ipairs(addrs) do if not wildcard(a) then names[#names + 1] = a end end
  names[#names + 1] = util.hostname() or "localhost"
  ok, err, code = ensure_ca(p)
  if ok then ok, err, code = server_cert(c, p, names) end
  if ok then ok, err, code = write_hba(c, p, allow) end
  if not ok then return nil, err, code end
  local listen = {}
  for _, a in ipairs(addrs) do listen[#listen + 1] = wildcard(a) and "*" or a end
  local conf = table.concat({
    "# ntt db serve: TCP with TLS and SCRAM (`ntt db serve --stop` removes this file)",
    "# url host " .. names[1],
    "# allow " .. table.concat(allow, ","),
    "listen_addresses = " .. quote(table.concat(listen, ",")),
    "port = " .. port,
    "ssl = on",
    "ssl_cert_file = 'server.crt'",
    "ssl_key_file = 'server.key'",
    "ssl_min_protocol_version = 'TLSv1.2'",
    "password_encryption = 'scram-sha-256'",
    "",
  }, "\n")
  ok, err, code = c:include(CONF)
  if ok then ok, err, code = write_file(p.conf, conf, tonumber("600", 8), c.user) end
  if not ok then return nil, "serve: " .. tostring(err), code end
  ok, err, code = restart(c)
  if not ok then return nil, err, code end
  return M.info(c)
end

function M.rotate(c)
  if not M.info(c) then return nil, "serve: the cluster is not served (run `ntt db serve` first)", "ENOENT" end
  local ok, err, code = c:start { init = true }
  if ok then ok, err, code = set_password(c, paths(c)) end
  if not ok then return nil, err, code end
  return M.info(c)
end

function M.disable(c)
  local p = paths(c)
  if not read_file(p.conf) then return true end
  local ok, err, code = write_hba(c, p, nil)
  if not ok then return nil, err, code end
  local port = c:port()
  os.remove(p.conf)
  -- a port other than the default stays: the local socket's name carries it
  if port ~= c.DEFAULT_PORT then
    ok, err, code = write_file(p.conf, "port = " .. port .. "\n", tonumber("600", 8), c.user)
    if not ok then return nil, "serve: " .. err, code end
  end
  if c:status() == "running" then return restart(c) end
  return true
end

return M
