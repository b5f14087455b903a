-- spec/pgkill_spec.lua: PostgreSQL killed mid-copy (a private cluster of
-- this spec's own, not the suite's), restarted, and the run again: the
-- killed run's claims are taken back at once (its pid is gone), so the
-- rerun is done in seconds, not after the 10 min lease.
local helper = require "spec.support.helper"
local images = require "spec.support.images"
local proc = require "ntt.core.proc"
local util = require "ntt.core.util"
local pg = require "ntt.core.pg"
local runs = require "spec.support.runs"

local read = helper.try_read

-- The postmaster and every process it started, by pid.
local function server_pids(data)
  local pm = tonumber((read(data .. "/postmaster.pid"):match("^(%d+)")))
  if not pm then return {} end
  local out = { pm }
  for _, d in ipairs(require("ntt.core.fs").readdir("/proc") or {}) do
    local stat = d:match("^%d+$") and read("/proc/" .. d .. "/stat")
    local ppid = stat and stat:match("^.*%)%s+%S+%s+(%d+)")
    if ppid and tonumber(ppid) == pm then out[#out + 1] = tonumber(d) end
  end
  return out
end

describe("PostgreSQL killed mid-copy", function()
  local ok, why = runs.can_run()
  if not ok then
    it("and restarted: the rerun is done in seconds", function() pending(why) end)
    return
  end
  after_each(runs.unmount)

  it("and restarted: the rerun takes the dead run's claims at once and is done in seconds", function()
    local dir = helper.tmpdir("pgkill")
    proc.run { argv = { "chmod", "0755", dir }, timeout = 10 }   -- the server's account must reach it
    local home = dir .. "/home"
    -- (a mount root of its own: other specs lazily unmount the shared one)
    helper.sh { "mkdir", "-p", dir .. "/mnt" }
    local env = { NTT_HOME = home, NTT_DB_URL = false, NTT_MOUNT_ROOT = dir .. "/mnt" }
    local function ntt(argv, timeout)
      local full = { helper.ntt }
      for _, a in ipairs(argv) do full[#full + 1] = a end
      return assert(proc.run { argv = full, env = env, timeout = timeout or 300 })
    end
    local r = ntt({ "db", "start" }, 120)
    if r.code ~= 0 then pending("no private cluster here: " .. r.stderr); return end
    finally(function() ntt({ "db", "stop" }, 60) end)
    local c = require("ntt.cluster").new { root = home .. "/pg" }
    local url = c:url()
    local img = images.ext(dir .. "/k.img", { size_mb = 64, files = runs.many_files("pgkill", 100, 10, 100) })
    local pol = runs.policy(dir, "{ copy = { batch = 20, threads = 1, durability = 'fsync' } }")
    local h = runs.medium_of(img)
    local errf = dir .. "/a"
    local p = runs.start(finally, { "run", pol, img }, env, errf)
    local copied_then
    assert.is_true(runs.wait_for(function()
      local conn = pg.connect(url)
      if not conn then return false end
      copied_then = runs.copied(conn, h)
      conn:close()
      return copied_then and copied_then >= 60
    end), "the copy never got going: " .. read(errf))
    for _, pid in ipairs(server_pids(home .. "/pg/data")) do proc.run { argv = { "kill", "-9", tostring(pid) }, timeout = 10 } end
    -- Nothing may reap the killed server here (a container whose first
    -- process reaps no orphan): a zombie postmaster's pid still answers
    -- kill(pid, 0), and PostgreSQL would take its lock file for a live
    -- server.  Once every process of it has exited, its lock files go.
    assert.is_true(runs.wait_for(function()
      for _, pid in ipairs(server_pids(home .. "/pg/data")) do
        if require("ntt.liveness").start_time(pid) then return false end
      end
      return true
    end))
    os.remove(home .. "/pg/data/postmaster.pid")
    os.remove(home .. "/pg/run/.s.PGSQL.5432.lock")
    local how, code = p:wait(120)
    assert.equal("exit", how, read(errf))
    assert.equal(2, code, read(errf))
    local st = ntt({ "db", "start" }, 120)
    assert.equal(0, st.code, st.stderr .. st.stdout .. read(home .. "/pg/postgres.log"))
    local t0 = util.monotonic()
    r = ntt({ "run", pol, img }, 240)
    local secs = util.monotonic() - t0
    assert.equal(0, r.code, r.stderr .. r.stdout)
    local conn = assert(pg.connect(url))
    finally(function() conn:close() end)
    assert.equal(1000, runs.copied(conn, h))
    assert.equal(0, conn:exec(("SELECT count(*) AS n FROM inode_p_%s WHERE claimed_by IS NOT NULL"):format(h))[1].n)
    assert.is_true(secs < 60, ("the rerun took %.1f s"):format(secs))
    io.stderr:write(("\n[rerun] after PostgreSQL was killed (%d of 1000 copied): %.2f s\n"):format(copied_then, secs))
  end)
end)
