-- lua/ntt/cmd/db.lua: `ntt db ...`, the database and its private cluster.
local config = require "ntt.config"
local cluster = require "ntt.cluster"
local db = require "ntt.db"
local proc = require "ntt.core.proc"
local util = require "ntt.core.util"

local EXIT_FAIL, EXIT_STALE, EXIT_USAGE = 2, 1, 64

local usage = [[
usage: ntt db init|start|stop|status|url|psql [psql args]|migrate|version

  init      create the private cluster (initdb), start it, create the schema
  start     start the private cluster (creating it when absent)
  stop      stop the private cluster
  status    running/stopped, data directory, URL and schema version
  url       print the database URL (libpq conninfo)
  psql      run psql against the database, passing the remaining arguments
  migrate   apply the schema migrations this ntt carries
  version   print the schema version of the database and the one ntt requires

With NTT_DB_URL unset ntt uses its own cluster under <data root>/pg
(data root: $NTT_HOME, else /var/lib/ntt as root, else
$XDG_DATA_HOME/ntt or ~/.local/share/ntt), unix socket only, started on
demand.  With NTT_DB_URL set, init/start/stop do nothing to that server.

Exit status: 0 done; 1 `version` found a schema other than the one ntt
requires; 2 could not run (server binaries missing, database unavailable,
migration failed); 64 usage.]]

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
  summary = "manage the database: init, start, stop, status, url, psql, migrate, version",
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
