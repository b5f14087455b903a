-- lua/ntt/cmd/db.lua: `ntt db ...`, the database and its private cluster.
local config = require "ntt.config"
local cluster = require "ntt.cluster"
local db = require "ntt.db"
local proc = require "ntt.core.proc"
local util = require "ntt.core.util"

local EXIT_FAIL, EXIT_STALE, EXIT_USAGE = 2, 1, 64

local usage = [==[
usage: ntt db init|start|stop|status|url|psql [psql args]|migrate|version
       ntt db serve [--listen ADDR[:PORT]]... [--allow CIDR]... [--name HOST]...
       ntt db serve --stop | --rotate-password | --url

  init      create the private cluster (initdb), start it, create the schema
  start     start the private cluster (creating it when absent)
  stop      stop the private cluster
  status    running/stopped, data directory, URL and schema version
  url       print the database URL (libpq conninfo)
  psql      run psql against the database, passing the remaining arguments
  migrate   apply the schema migrations this ntt carries
  version   print the schema version of the database and the one ntt requires
  serve     serve the private cluster to other hosts too: TCP with TLS 1.2+
            (a generated CA and server certificate) and SCRAM-SHA-256 (a
            generated password for role ntt); restarts the server and prints
            the NTT_DB_URL other hosts use and the CA file they need
            --listen ADDR[:PORT]  address to listen on (default: every
                                  address, port 5432); repeatable
            --allow CIDR          clients allowed (default: any); repeatable
            --name HOST           a name clients use, put in the certificate
                                  and the printed URL; repeatable
            --url                 print the URL of the served cluster again
            --rotate-password     a new password (no restart); print the URL
            --stop                unix socket only again (restarts the server)

With NTT_DB_URL unset ntt uses its own cluster under <data root>/pg
(data root: $NTT_HOME, else /var/lib/ntt as root, else
$XDG_DATA_HOME/ntt or ~/.local/share/ntt), unix socket only, started on
demand.  With NTT_DB_URL set, init/start/stop do nothing to that server.

Exit status: 0 done; 1 `version` found a schema other than the one ntt
requires; 2 could not run (server binaries missing, database unavailable,
migration failed); 64 usage.]==]

local function fail(msg)
  io.stderr:write("ntt db: ", tostring(msg), "\n")
  return EXIT_FAIL
end

local function external()
  local url = config.db_url()
  if url then return url end
end

local function connect()
  local conn, err, code = db.connect()
  if not conn then return nil, err, code end
  return conn
end

local cmds = {}

function cmds.init()
  if external() then return fail("NTT_DB_URL is set: not creating a private cluster (use `ntt db migrate`)") end
  local c = cluster.default()
  local ok, err = c:start { init = true }
  if not ok then return fail(err) end
  return cmds.migrate()
end

function cmds.start()
  if external() then io.stdout:write("using NTT_DB_URL; nothing to start\n"); return 0 end
  local c = cluster.default()
  local ok, err = c:start { init = true }
  if not ok then return fail(err) end
  io.stdout:write("running: ", c:url(), "\n")
  return 0
end

function cmds.stop()
  if external() then io.stdout:write("using NTT_DB_URL; nothing to stop\n"); return 0 end
  local ok, err = cluster.default():stop()
  if not ok then return fail(err) end
  io.stdout:write("stopped\n")
  return 0
end

local function serve_lines(info)
  return ("served:   %s port %d (TLS, SCRAM-SHA-256; allowed %s)\nca:       %s\nremote:   NTT_DB_URL='%s'\n")
    :format(info.listen, info.port, info.allow or "any", info.ca, info.url)
end

function cmds.serve(args)
  if external() then return fail("NTT_DB_URL is set: `ntt db serve` serves only ntt's private cluster") end
  local serve = require "ntt.serve"
  local listen, allow, names, mode = {}, nil, {}, "enable"
  local i = 2
  while i <= #args do
    local a, v = args[i], args[i + 1]
    if a == "--listen" or a == "--allow" or a == "--name" then
      if not v then io.stderr:write("ntt db serve: ", a, " needs a value\n"); return EXIT_USAGE end
      if a == "--listen" then listen[#listen + 1] = v
      elseif a == "--allow" then allow = allow or {}; allow[#allow + 1] = v
      else names[#names + 1] = v end
      i = i + 2
    elseif a == "--stop" or a == "--rotate-password" or a == "--url" then
      mode = a:sub(3)
      i = i + 1
    else
      io.stderr:write("ntt db serve: unknown argument ", a, "\n", usage, "\n")
      return EXIT_USAGE
    end
  end
  local c = cluster.default()
  if mode == "stop" then
    local ok, err = serve.disable(c)
    if not ok then return fail(err) end
    io.stdout:write("not served: unix socket only (", c.run, ")\n")
    return 0
  end
  local info, err, code
  if mode == "url" then
    info = serve.info(c)
    if not info then return fail("the cluster is not served (run `ntt db serve`)") end
  elseif mode == "rotate-password" then
    info, err = serve.rotate(c)
  else
    local l, lerr = serve.parse_listen(listen)
    if not l then io.stderr:write("ntt db serve: ", lerr, "\n"); return EXIT_USAGE end
    info, err, code = serve.enable(c, { addrs = l.addrs, port = l.port, allow = allow, names = names })
  end
  if code == "EINVAL" then io.stderr:write("ntt db serve: ", err, "\n"); return EXIT_USAGE end
  if not info then return fail(err) end
  io.stdout:write(serve_lines(info),
    "each host keeps a copy of the CA file at the path sslrootcert names (or edit it)\n")
  return 0
end

local function schema_line(url)
  local conn, err = require("ntt.core.pg").connect(url)
  if not conn then return "unknown (" .. err .. ")" end
  local v, verr = db.version(conn)
  conn:close()
  if not v then return "unknown (" .. verr .. ")" end
  local need = db.required()
  local note = v == need and "up to date" or v < need and "run `ntt db migrate`" or "newer than this ntt"
  return ("%d (ntt requires %d: %s)"):format(v, need, note)
end

function cmds.status()
  local out = io.stdout
  local url = external()
  if url then
    out:write("database: NTT_DB_URL\nurl:      ", url, "\nschema:   ", schema_line(url), "\n")
    return 0
  end
  local c = cluster.default()
  local state, d = c:status()
  out:write("cluster:  ", state, "\n", "data:     ", d.data, "\n", "url:      ", d.url, "\n")
  if d.version then out:write("server:   PostgreSQL ", d.version, "\n") end
  if d.user then out:write("account:  ", d.user, "\n") end
  if d.pid then out:write("pid:      ", d.pid, "\n") end
  out:write("log:      ", d.log, "\n")
  local info = require("ntt.serve").info(c)
  if info then out:write(serve_lines(info)) end
  if state == "running" then out:write("schema:   ", schema_line(d.url), "\n") end
  return 0
end

function cmds.url()
  io.stdout:write(external() or cluster.default():url(), "\n")
  return 0
end

function cmds.migrate()
  local conn, err = connect()
  if not conn then return fail(err) end
  local v, applied = db.migrate(conn)
  conn:close()
  if not v then return fail(applied) end
  if #applied > 0 then
    io.stdout:write("applied ", table.concat(applied, ", "), "\n")
  end
  io.stdout:write("schema version ", v, "\n")
  return 0
end

function cmds.version()
  local conn, err = connect()
  if not conn then return fail(err) end
  local v, verr = db.version(conn)
  conn:close()
  if not v then return fail(verr) end
  io.stdout:write(("schema version %d (ntt requires %d)\n"):format(v, db.required()))
  return v == db.required() and 0 or EXIT_STALE
end

function cmds.psql(args)
  local url = external()
  local c = not url and cluster.default() or nil
  local psql = "psql"
  if c then
    local ok, err = c:start { init = true }
    if not ok then return fail(err) end
    url = c:url()
    local bin = c:bindir()
    if bin then
      local f = io.open(bin .. "/psql", "rb")
      if f then f:close(); psql = bin .. "/psql" end
    end
  end
  local argv = { psql, url }
  for i = 2, #args do argv[#argv + 1] = args[i] end
  local p, err = proc.spawn { argv = argv }
  if not p then return fail(err .. " (psql comes with apt-get install postgresql-client)") end
  util.raise_on_interrupt(false)
  while true do
    local how, code = p:wait(0.2)
    if how == "exit" then util.raise_on_interrupt(true); return code end
    if how == "signal" then util.raise_on_interrupt(true); return 128 + code end
    if util.interrupted() then     -- psql lives in its own session: pass ^C on
      util.clear_interrupt()
      p:kill(2)
    end
  end
end

return {
  summary = "manage the database: init, start, stop, status, url, psql, migrate, version, serve",
  usage = usage,
  main = function(args)
    local sub = args[1]
    local fn = sub and cmds[sub]
    if not fn then
      io.stderr:write(usage, "\n")
      return EXIT_USAGE
    end
    return fn(args)
  end,
}
