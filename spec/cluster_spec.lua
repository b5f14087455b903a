-- spec/cluster_spec.lua: the private cluster, `ntt db`, and the data root.
local helper = require "spec.support.helper"
local proc = require "ntt.core.proc"
local util = require "ntt.core.util"
local pg = require "ntt.core.pg"
local cluster = require "ntt.cluster"
local config = require "ntt.config"

local function have_server()
  local c = cluster.new { root = "/nonexistent/ntt" }
  return c:bindir()
end

-- A temp directory the server's account can traverse.
local function tmp(tag)
  local dir = helper.tmpdir(tag)
  helper.sh { "chmod", "0755", dir }
  return dir
end

local function owner_mode(path)
  local r = helper.sh { "stat", "-c", "%U %a", path }
  return r.stdout:match("^(%S+) (%d+)")
end

describe("ntt.config", function()
  local saved = {}
  local names = { "NTT_HOME", "NTT_DB_URL", "XDG_DATA_HOME", "HOME" }
  before_each(function()
    for _, n in ipairs(names) do saved[n] = os.getenv(n) end
  end)
  after_each(function()
    for _, n in ipairs(names) do util.setenv(n, saved[n]) end
  end)

  it("takes the data root from NTT_HOME, else a documented default", function()
    util.setenv("NTT_HOME", "/srv/ntt/")
    assert.equal("/srv/ntt", config.home())
    assert.equal("/srv/ntt/store/by-hash", config.path("store", "by-hash"))
    assert.equal("/srv/ntt/pg", config.path("/pg/"))
    util.setenv("NTT_HOME", nil)
    if helper.is_root() then
      assert.equal("/var/lib/ntt", config.home())
    else
      util.setenv("XDG_DATA_HOME", "/x/data")
      assert.equal("/x/data/ntt", config.home())
      util.setenv("XDG_DATA_HOME", nil)
      util.setenv("HOME", "/home/a")
      assert.equal("/home/a/.local/share/ntt", config.home())
    end
    assert.has_error(function() config.path(1) end)
  end)

  it("uses NTT_DB_URL when set, else nil (the private cluster)", function()
    util.setenv("NTT_DB_URL", "postgresql://h/db")
    assert.equal("postgresql://h/db", config.db_url())
    util.setenv("NTT_DB_URL", nil)
    assert.is_nil(config.db_url())
    util.setenv("NTT_DB_URL", "")
    assert.is_nil(config.db_url())
  end)
end)

describe("ntt.cluster", function()
  it("initialises, starts, serves only a unix socket and stops", function()
    if not have_server() then pending("PostgreSQL server binaries not installed"); return end
    local root = tmp("cluster") .. "/pg"
    local c = cluster.new { root = root }
    finally(function() c:stop() end)
    assert.equal("absent", (c:status()))
    assert.is_true(c:init())
    assert.is_true(c:init())                         -- idempotent
    local state, d = c:status()
    assert.equal("stopped", state)
    assert.equal(root .. "/data", d.data)
    assert.equal(root .. "/run", d.run)
    if helper.is_root() then
      assert.equal("postgres", d.user)
      local who, mode = owner_mode(root .. "/data")
      assert.equal("postgres", who); assert.equal("700", mode)
    end
    assert.is_true(c:start())
    assert.is_true(c:start())                        -- already running: fine
    state, d = c:status()
    assert.equal("running", state)
    assert.is_number(d.pid)
    local conn = assert(pg.connect(c:url()))
    local r = assert(conn:exec([[SELECT current_setting('listen_addresses') AS listen,
        current_setting('unix_socket_directories') AS sockdir, current_setting('fsync') AS fsync,
        current_user AS who, current_database() AS db, current_setting('server_encoding') AS enc]]))
    assert.same({ listen = "", sockdir = root .. "/run", fsync = "on", who = "ntt", db = "ntt", enc = "UTF8" }, r[1])
    assert.equal("", conn:exec("SHOW listen_addresses")[1].listen_addresses)
    -- sized for a medium of millions of rows: a sixteenth of the memory, 128 MB to 1 GB
    local mem = tonumber(helper.read("/proc/meminfo"):match("MemTotal:%s*(%d+) kB"))
    local want = math.max(128, math.min(1024, mem // 1024 // 16))
    local sizes = assert(conn:exec([[SELECT current_setting('shared_buffers') AS sb,
        current_setting('max_wal_size') AS wal, current_setting('wal_level') AS level]]))[1]
    assert.equal(want % 1024 == 0 and ("%dGB"):format(want // 1024) or ("%dMB"):format(want), sizes.sb)
    assert.same({ wal = "4GB", level = "minimal" }, { wal = sizes.wal, level = sizes.level })
    conn:close()
    -- no TCP: none of the postmaster's sockets is a TCP socket
    local socks = {}
    local fds = helper.sh { "find", "/proc/" .. d.pid .. "/fd", "-lname", "socket:*", "-printf", "%l\n" }
    for ino in fds.stdout:gmatch("socket:%[(%d+)%]") do socks[#socks + 1] = ino end
    assert.is_true(#socks > 0)
    local tcp = {}
    for _, f in ipairs { "/proc/net/tcp", "/proc/net/tcp6" } do
      local fh = io.open(f, "r")
      if fh then
        for line in fh:lines() do
          local ino = line:match("^%s*%d+:%s+%S+%s+%S+%s+%S+%s+%S+%s+%S+%s+%S+%s+%S+%s+%S+%s+(%d+)")
          if ino then tcp[ino] = true end
        end
        fh:close()
      end
    end
    for _, ino in ipairs(socks) do assert.is_nil(tcp[ino], "TCP socket " .. ino) end
    assert.is_true(c:stop())
    assert.equal("stopped", (c:status()))
    assert.is_true(c:stop())
    assert.is_nil(pg.connect(c:url()))
    -- starting again keeps the data
    assert.is_true(c:start())
    assert.equal("running", (c:status()))
    assert.is_true(c:stop())
  end)

  it("runs an existing cluster as the account that owns it", function()
    if not have_server() then pending("PostgreSQL server binaries not installed"); return end
    if not helper.is_root() then pending("needs root (to choose accounts)"); return end
    local root = tmp("owner") .. "/pg"
    assert.is_true(cluster.new { root = root, user = "nobody" }:init())
    assert.equal("nobody", (owner_mode(root .. "/data")))
    assert.equal("nobody", cluster.new { root = root }.user)
    assert.equal("postgres", cluster.new { root = tmp("owner2") .. "/pg" }.user)
  end)

  it("does not create a cluster on start without init", function()
    local c = cluster.new { root = tmp("noinit") .. "/pg" }
    local ok, msg, code = c:start()
    assert.is_nil(ok)
    assert.matches("ntt db init", msg, 1, true)
    assert.equal("ENOENT", code)
  end)

  it("says which package to install when the server binaries are missing", function()
    local c = cluster.new { root = tmp("nobin") .. "/pg", bindir = tmp("emptybin") }
    local ok, msg, code = c:start { init = true }
    assert.is_nil(ok)
    assert.matches("apt-get install postgresql", msg, 1, true)
    assert.equal("ENOENT", code)
    assert.equal("absent", (c:status()))
  end)

  it("refuses a socket path that is too long", function()
    if not have_server() then pending("PostgreSQL server binaries not installed"); return end
    local c = cluster.new { root = tmp("long") .. "/" .. ("d"):rep(90) }
    local ok, msg, code = c:init()
    assert.is_nil(ok)
    assert.matches("socket path", msg)
    assert.matches("NTT_HOME", msg)
    assert.equal("ENAMETOOLONG", code)
    ok, msg, code = c:start { init = true }           -- passed on by start
    assert.is_nil(ok)
    assert.matches("socket path", msg)
    assert.equal("ENAMETOOLONG", code)
  end)

  it("encodes the socket directory in its URL", function()
    local c = cluster.new { root = "/tmp/a b&c/pg" }
    assert.equal("postgresql:///ntt?host=/tmp/a%20b%26c/pg/run&port=5432&user=ntt", c:url())
  end)
end)

describe("ntt db", function()
  it("starts the private cluster under NTT_HOME and reports its status", function()
    if not have_server() then pending("PostgreSQL server binaries not installed"); return end
    local home = tmp("ntthome") .. "/home"
    local env = { NTT_HOME = home, NTT_DB_URL = false }
    local function ntt(...)
      return assert(proc.run { argv = { helper.ntt, "db", ... }, env = env, timeout = 120 })
    end
    finally(function() ntt("stop") end)
    local r = ntt("status")
    assert.equal(0, r.code)
    assert.matches("cluster:%s+absent", r.stdout)
    r = ntt("start")
    assert.equal(0, r.code, r.stderr)
    r = ntt("status")
    assert.equal(0, r.code)
    assert.matches("cluster:%s+running", r.stdout)
    assert.matches("data:%s+" .. home:gsub("%p", "%%%0") .. "/pg/data", r.stdout)
    assert.matches("schema:%s+0 %(ntt requires %d+: run `ntt db migrate`%)", r.stdout)
    r = ntt("migrate")
    assert.equal(0, r.code, r.stderr)
    assert.matches("applied 001_schema.sql", r.stdout)
    r = ntt("migrate")
    assert.equal(0, r.code)
    assert.not_matches("applied", r.stdout)
    r = ntt("version")
    assert.equal(0, r.code)
    assert.matches("schema version (%d+) %(ntt requires %1%)", r.stdout)
    r = ntt("url")
    assert.equal("postgresql:///ntt?host=" .. home .. "/pg/run&port=5432&user=ntt\n", r.stdout)
    r = ntt("psql", "-XAtc", "SELECT count(*) FROM schema_migrations")
    assert.equal(0, r.code, r.stderr)
    assert.matches("^%d+\n$", r.stdout)
    r = ntt("stop")
    assert.equal(0, r.code)
    r = ntt("status")
    assert.matches("cluster:%s+stopped", r.stdout)
    r = ntt("init")                                   -- existing cluster: starts, schema current
    assert.equal(0, r.code, r.stderr)
    assert.matches("schema version %d+", r.stdout)
    assert.matches("cluster:%s+running", ntt("status").stdout)
    r = ntt("bogus")
    assert.equal(64, r.code)
  end)

  it("leaves a server named by NTT_DB_URL alone", function()
    local url, why = helper.db_url()
    if not url then pending(why); return end
    local env = { NTT_HOME = tmp("ext") .. "/home", NTT_DB_URL = url }
    local function ntt(...)
      return assert(proc.run { argv = { helper.ntt, "db", ... }, env = env, timeout = 60 })
    end
    local r = ntt("start")
    assert.equal(0, r.code); assert.matches("nothing to start", r.stdout)
    r = ntt("status")
    assert.equal(0, r.code)
    assert.matches("database: NTT_DB_URL", r.stdout)
    assert.matches("url:%s+" .. url:gsub("%p", "%%%0"), r.stdout)
    r = ntt("url")
    assert.equal(url .. "\n", r.stdout)
    r = ntt("init")
    assert.equal(2, r.code); assert.matches("NTT_DB_URL is set", r.stderr)
    assert.equal("absent", (cluster.new { root = env.NTT_HOME .. "/pg" }:status()))
  end)

  it("lets several workers start and migrate a fresh private cluster at once", function()
    if not have_server() then pending("PostgreSQL server binaries not installed"); return end
    local home = tmp("race") .. "/home"
    local env = { NTT_HOME = home, NTT_DB_URL = false }
    finally(function()
      proc.run { argv = { helper.ntt, "db", "stop" }, env = env, timeout = 120 }
    end)
    local ps = {}
    for i = 1, 3 do
      ps[i] = assert(proc.spawn { argv = { helper.ntt, "-e",
        "local c, e = require('ntt.db').connect{ migrate = true }; if not c then io.stderr:write(e, '\\n'); os.exit(3) end" },
        env = env })
    end
    for i = 1, 3 do
      local how, code = ps[i]:wait(120)
      assert.equal("exit", how); assert.equal(0, code)
    end
    local r = assert(proc.run { argv = { helper.ntt, "db", "version" }, env = env, timeout = 60 })
    assert.equal(0, r.code, r.stderr)
    local left = helper.sh { "ls", home .. "/pg" }
    assert.not_matches("data%.init", left.stdout)
  end)

  it("auto-starts the private cluster on connect", function()
    if not have_server() then pending("PostgreSQL server binaries not installed"); return end
    local home = tmp("autostart") .. "/home"
    local env = { NTT_HOME = home, NTT_DB_URL = false }
    finally(function()
      proc.run { argv = { helper.ntt, "db", "stop" }, env = env, timeout = 120 }
    end)
    local r = assert(proc.run { argv = { helper.ntt, "-e",
      "local c = assert(require('ntt.db').connect()); print(c:exec('SELECT 6*7 AS x')[1].x)" },
      env = env, timeout = 120 })
    assert.equal(0, r.code, r.stderr)
    assert.equal("42\n", r.stdout)
  end)
end)
