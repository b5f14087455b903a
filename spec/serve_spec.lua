-- spec/serve_spec.lua: `ntt db serve` (lua/ntt/serve.lua): the private
-- cluster over TCP with TLS and SCRAM, next to its unix socket; and
-- NTT_HOST, the name a host's claims and leases carry.
local helper = require "spec.support.helper"
local proc = require "ntt.core.proc"
local util = require "ntt.core.util"
local pg = require "ntt.core.pg"
local fs = require "ntt.core.fs"
local serve = require "ntt.serve"

local function ntt(args, env)
  local argv = { helper.ntt }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  return assert(proc.run { argv = argv, env = env, timeout = 120 })
end

local function have_server()
  return require("ntt.cluster").new({ root = "/nonexistent" }):bindir() ~= nil
end

describe("ntt db serve", function()
  it("reads listen addresses and ports", function()
    assert.same({ addrs = { "*" } }, serve.parse_listen {})
    assert.same({ addrs = { "10.0.0.1" }, port = 5433 }, serve.parse_listen { "10.0.0.1:5433" })
    assert.same({ addrs = { "::1", "10.0.0.1" }, port = 6000 }, serve.parse_listen { "[::1]:6000", "10.0.0.1" })
    assert.same({ addrs = { "*" }, port = 7000 }, serve.parse_listen { "*:7000" })
    local ok, err, code = serve.parse_listen { "a:1", "b:2" }
    assert.is_nil(ok)
    assert.equal("EINVAL", code)
    assert.matches("one port", err)
    assert.equal("EINVAL", select(3, serve.parse_listen { "a:99999" }))
    assert.equal("EINVAL", select(3, serve.parse_listen { "a b" }))
  end)

  it("names the host by NTT_HOST when it is set, else by the UTS name", function()
    local script = "print(require('ntt.core.util').hostname())"
    local uts = helper.sh({ "hostname" }).stdout:gsub("%s+$", "")
    assert.equal("shelf-7\n", ntt({ "-e", script }, { NTT_HOST = "shelf-7" }).stdout)
    assert.equal(uts .. "\n", ntt({ "-e", script }, { NTT_HOST = "" }).stdout)
    assert.equal(uts .. "\n", ntt({ "-e", script }, { NTT_HOST = false }).stdout)
  end)

  it("serves TLS with SCRAM only, rotates the password, and stops serving", function()
    if not have_server() then pending("PostgreSQL server binaries not installed"); return end
    if not helper.is_root() then pending("needs root (the server's account)"); return end
    local dir = helper.tmpdir("serve")
    helper.sh { "chmod", "0755", dir }
    local port = 20000 + util.pid() % 20000
    local env = { NTT_HOME = dir .. "/home", NTT_DB_URL = false }
    finally(function() ntt({ "db", "stop" }, env) end)

    -- usage and refusals
    assert.equal(64, ntt({ "db", "serve", "--listen", "a:1", "--listen", "b:2" }, env).code)
    assert.equal(64, ntt({ "db", "serve", "--bogus" }, env).code)
    assert.equal(64, ntt({ "db", "serve", "--allow", "everyone" }, env).code)
    local r = ntt({ "db", "serve" }, { NTT_HOME = env.NTT_HOME, NTT_DB_URL = "postgresql:///x" })
    assert.equal(2, r.code)
    assert.matches("private cluster", r.stderr)
    assert.equal(2, ntt({ "db", "serve", "--url" }, env).code)   -- not served yet

    r = ntt({ "db", "serve", "--listen", "127.0.0.1:" .. port, "--allow", "127.0.0.0/8" }, env)
    assert.equal(0, r.code, r.stderr .. r.stdout)
    local url = assert(r.stdout:match("NTT_DB_URL='([^']+)'"), r.stdout)
    assert.matches("^postgresql://ntt:%x+@127%.0%.0%.1:" .. port .. "/ntt%?sslmode=verify%-full&sslrootcert=/", url)
    local root = env.NTT_HOME .. "/pg"
    assert.matches("ca:%s+" .. root:gsub("%p", "%%%0") .. "/serve/ca%.crt", r.stdout)
    -- the secrets are the server's or ours alone
    assert.equal(tonumber("600", 8), fs.stat(root .. "/serve/password").mode)
    assert.equal(tonumber("600", 8), fs.stat(root .. "/serve/ca.key").mode)
    assert.equal(tonumber("600", 8), fs.stat(root .. "/data/server.key").mode)
    assert.equal(fs.owner(root .. "/data"), fs.owner(root .. "/data/server.key"))

    -- over TCP: TLS 1.2 or later, the password, the certificate's names
    local conn = assert(pg.connect(url))
    local s = assert(conn:exec("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()"))[1]
    conn:close()
    assert.is_true(s.ssl)
    assert.matches("^TLSv1%.[23]$", s.version)
    local no, err = pg.connect((url:gsub("sslmode=verify%-full", "sslmode=disable")))
    assert.is_nil(no)
    assert.matches("no encryption", err)
    no, err = pg.connect((url:gsub(":(%x+)@", ":wrong@")))
    assert.is_nil(no)
    assert.matches("password authentication failed", err)
    no, err = pg.connect((url:gsub("@127%.0%.0%.1:", "@localhost:")))
    assert.is_nil(no)
    assert.matches("does not match host name", err)
    -- the local host keeps its socket, without a password
    local c = require("ntt.cluster").new { root = root }
    assert.equal(port, c:port())
    local lc = assert(pg.connect(c:url()))
    lc:close()
    local pid = c:status() == "running" and select(2, c:status()).pid

    -- a new password, the server not restarted
    r = ntt({ "db", "serve", "--rotate-password" }, env)
    assert.equal(0, r.code, r.stderr)
    local url2 = assert(r.stdout:match("NTT_DB_URL='([^']+)'"))
    assert.are_not.equal(url, url2)
    assert.is_nil((pg.connect(url)))
    conn = assert(pg.connect(url2))
    conn:close()
    assert.equal(pid, select(2, c:status()).pid)
    -- the server was sent a SCRAM verifier, never the password
    lc = assert(pg.connect(c:url("postgres")))
    local stored = assert(lc:exec("SELECT rolpassword FROM pg_authid WHERE rolname = 'ntt'"))[1].rolpassword
    lc:close()
    assert.matches("^SCRAM%-SHA%-256%$4096:", stored)
    assert.is_nil(stored:find(url2:match(":(%x+)@"), 1, true))
    assert.equal(url2 .. "\n", ntt({ "db", "serve", "--url" }, env).stdout:match("NTT_DB_URL='([^']+)'") .. "\n")
    assert.matches("served:%s+127%.0%.0%.1 port " .. port, ntt({ "db", "status" }, env).stdout)

    -- serving again keeps the CA and the password
    local ca = helper.read(root .. "/serve/ca.crt")
    r = ntt({ "db", "serve", "--listen", "127.0.0.1:" .. port }, env)
    assert.equal(0, r.code, r.stderr)
    assert.equal(url2, r.stdout:match("NTT_DB_URL='([^']+)'"))
    assert.equal(ca, helper.read(root .. "/serve/ca.crt"))
    -- one block of hostssl lines, ahead of initdb's reject lines
    local function hostssl()
      local out = {}
      for l in helper.read(root .. "/data/pg_hba.conf"):gmatch("[^\n]+") do
        if l:match("^hostssl") or l:match("^host ") then out[#out + 1] = l:match("^(%S+).-(%S+)%s+%S+$") end
      end
      return out
    end
    assert.same({ "hostssl", "hostssl", "host", "host" }, { table.unpack(hostssl(), 1, 4) })
    local hba = helper.read(root .. "/data/pg_hba.conf")
    assert.matches("hostssl ntt ntt 0%.0%.0%.0/0 scram%-sha%-256\nhostssl ntt ntt ::/0 scram%-sha%-256\n", hba)
    assert.not_matches("127%.0%.0%.0/8", hba)

    -- a lookup that had to start the server leaves a served one running
    assert.equal(0, ntt({ "db", "stop" }, env).code)
    ntt({ "find", "nothing-here" }, env)
    assert.equal("running", (c:status()))

    -- stopped: no TCP, the socket as before (on the same port)
    r = ntt({ "db", "serve", "--stop" }, env)
    assert.equal(0, r.code, r.stderr)
    assert.is_nil((pg.connect(url2)))
    lc = assert(pg.connect(c:url()))
    lc:close()
    assert.equal(port, c:port())
    assert.is_nil(serve.info(c))
    assert.not_matches("served:", ntt({ "db", "status" }, env).stdout)
    assert.not_matches("\nhostssl", helper.read(root .. "/data/pg_hba.conf"))
    assert.not_matches("ntt serve", helper.read(root .. "/data/pg_hba.conf"))
  end)
end)
