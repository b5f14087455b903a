-- spec/support/helper.lua: shared fixtures for the specs.
--
-- Temp directories that are removed after the suite, running commands,
-- and the suite's throwaway PostgreSQL cluster (started once by spec/run.lua,
-- its URL handed to every spec through $NTT_DB_URL).
local proc = require "ntt.core.proc"
local util = require "ntt.core.util"

local M = {}

local temps = {}

-- A fresh directory under $TMPDIR (default /tmp); removed at exit.
function M.tmpdir(tag)
  local r = assert(proc.run { argv = { "mktemp", "-d", "/tmp/ntt-spec-" .. (tag or "x") .. ".XXXXXX" } })
  local dir = r.stdout:gsub("%s+$", "")
  temps[#temps + 1] = dir
  return dir
end

-- Runs argv (a table), raising with its output when it fails.
function M.sh(argv, opts)
  opts = opts or {}
  local spec = { argv = argv, timeout = opts.timeout or 120, input = opts.input, env = opts.env }
  local r = assert(proc.run(spec))
  if r.code ~= 0 and not opts.may_fail then
    error(("command failed (%s): %s\n%s%s"):format(tostring(r.code or ("signal " .. tostring(r.signal))),
          table.concat(argv, " "), r.stdout, r.stderr), 2)
  end
  return r
end

function M.write(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
end

function M.read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

-- Overwrite bytes at offset of a file in place.
function M.poke(path, offset, data)
  local f = assert(io.open(path, "r+b"))
  f:seek("set", offset)
  f:write(data)
  f:close()
end

-- The pid of a process that has exited and been reaped: it names nothing now.
function M.gone_pid()
  local p = assert(proc.spawn { argv = { "true" } })
  local pid = p:pid()
  p:wait()
  return pid
end

-- The contents of path, or "" when it cannot be opened (not there yet).
function M.try_read(path)
  local f = io.open(path, "rb")
  if not f then return "" end
  local s = f:read("a")
  f:close()
  return s
end

-- n random bytes (from /dev/urandom).
function M.random_bytes(n)
  local f = assert(io.open("/dev/urandom", "rb"))
  local s = f:read(n) or ""
  f:close()
  return s
end

-- n bytes at offset of file path (read) or, with data, written in place.
function M.bytes_at(path, offset, n, data)
  local f = assert(io.open(path, data and "r+b" or "rb"))
  f:seek("set", offset)
  local out
  if data then f:write(data) else out = f:read(n) end
  f:close()
  return out
end

-- Path of the ntt binary under test and of the source tree.
M.build = os.getenv("NTT_BUILD") or "build"
M.ntt = M.build .. "/ntt"

function M.is_root() return util.euid() == 0 end

-- The suite's database, or nil and why not.
function M.db_url()
  local url = os.getenv("NTT_DB_URL")
  if url and url ~= "" then return url end
  return nil, "no test database (NTT_DB_URL unset)"
end

-- Started by spec/run.lua: a private cluster in a temp directory (run by
-- the postgres account when root), its URL exported as $NTT_DB_URL.
-- Returns the cluster, or nil (the DB specs then skip) after saying why.
function M.start_suite_db()
  if os.getenv("NTT_DB_URL") then return nil end
  local ok, cluster = pcall(require, "ntt.cluster")
  if not ok then return nil end
  local dir = M.tmpdir("pg")
  -- The server's account must be able to reach its directory.
  proc.run { argv = { "chmod", "0755", dir }, timeout = 10 }
  local c, err = cluster.new { root = dir .. "/pg" }
  if not c then io.stderr:write("spec: no test database: ", tostring(err), "\n"); return nil end
  local started, serr = c:start { init = true }
  if not started then io.stderr:write("spec: no test database: ", tostring(serr), "\n"); return nil end
  util.setenv("NTT_DB_URL", c:url())
  return c
end

function M.stop_suite_db(c)
  if c then
    local ok, err = c:stop()
    if not ok then io.stderr:write("spec: stopping the test database: ", tostring(err), "\n") end
    util.setenv("NTT_DB_URL", nil)
  end
  for i = #temps, 1, -1 do
    proc.run { argv = { "rm", "-rf", "--one-file-system", temps[i] }, timeout = 60 }
  end
  temps = {}
end

return M
