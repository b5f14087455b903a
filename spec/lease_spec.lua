-- spec/lease_spec.lua: which processes are gone (ntt.liveness), mount
-- leases (ntt.lease): one run never unmounts what another live run reads;
-- claims of a dead process of this host taken back at once; two runs on
-- one image at once.
local helper = require "spec.support.helper"
local images = require "spec.support.images"
local proc = require "ntt.core.proc"
local util = require "ntt.core.util"
local json = require "ntt.json"
local runs = require "spec.support.runs"
local liveness = require "ntt.liveness"
local lease = require "ntt.lease"
local copier = require "ntt.copier"

local policy, medium_of, db = runs.policy, runs.medium_of, runs.db
local env_of, mounts_of = runs.env_of, runs.mounts_of

local gone_pid = helper.gone_pid

local read = helper.try_read

describe("liveness", function()
  it("knows this process, a process gone, another boot, a reused pid and another host", function()
    local me = liveness.me()
    assert.equal(util.pid(), me.pid)
    assert.truthy(me.start)
    assert.equal(32, #liveness.boot_id())
    assert.is_false(liveness.dead(me))
    assert.is_true(liveness.dead { host = me.host, pid = gone_pid() })
    assert.is_true(liveness.dead { host = me.host, pid = me.pid, boot = "00000000" })
    assert.is_true(liveness.dead { host = me.host, pid = me.pid, start = me.start + 1 })
    assert.is_false(liveness.dead { host = me.host .. "-elsewhere", pid = gone_pid() })
  end)

  it("tells a dead claimer of this host from a live one and from another host's", function()
    local id = copier.worker_id()
    assert.matches("^.+:%d+:%x+:%d+:%x+$", id)
    assert.is_false(copier.claimer_dead(id))
    local dead = id:gsub("^(.-):(%d+):", function(h) return h .. ":" .. gone_pid() .. ":" end)
    assert.is_true(copier.claimer_dead(dead))
    -- the older form host:pid:random is judged by its pid
    assert.is_true(copier.claimer_dead(("%s:%d:00ff"):format(util.hostname(), gone_pid())))
    assert.is_false(copier.claimer_dead(("%s:%d:00ff"):format(util.hostname(), util.pid())))
    assert.is_false(copier.claimer_dead(("elsewhere.example:%d:00ff"):format(gone_pid())))
  end)
end)

describe("mount leases", function()
  if not helper.db_url() then
    it("need a database", function() pending("no test database") end)
    return
  end
  local h = ("%032x"):format(math.random(0, 0x7fffffff)) .. "1ea5e"
  before_each(function()
    assert(db():exec("INSERT INTO medium (medium_hash, kind) VALUES ($1, 'image') ON CONFLICT DO NOTHING", h))
    assert(db():exec("DELETE FROM mount_lease WHERE medium_hash = $1", h))
  end)

  it("unmounts when only this process (and dead ones) held a lease", function()
    assert.is_true(lease.take(db(), h, nil))
    local me = liveness.me()
    assert(db():exec("INSERT INTO mount_lease (medium_hash, host, pid, boot_id) VALUES ($1, $2, $3, $4)",
                     h, me.host, gone_pid(), me.boot))
    assert(db():exec("INSERT INTO mount_lease (medium_hash, host, pid, boot_id) VALUES ($1, $2, $3, $4)",
                     h, me.host, 1, "0000"))                 -- before the last boot
    assert(db():exec("INSERT INTO mount_lease (medium_hash, host, pid, boot_id) VALUES ($1, 'elsewhere.example', 77, 'x')", h))
    local called = 0
    local out = assert(lease.release(db(), h, function() called = called + 1; return true end))
    assert.is_true(out.unmounted)
    assert.equal(1, called)
    -- the dead leases of this host are gone; another host's stays
    local left = assert(db():exec("SELECT host FROM mount_lease WHERE medium_hash = $1", h))
    assert.same({ { host = "elsewhere.example" } }, { left[1] and { host = left[1].host } })
    assert.equal(1, #left)
  end)

  it("leaves the mount while another live process of this host holds a lease", function()
    assert.is_true(lease.take(db(), h, 42))
    local other = assert(proc.spawn { argv = { "sleep", "30" } })
    finally(function() other:kill(9); other:wait() end)
    local me = liveness.me()
    assert(db():exec("INSERT INTO mount_lease (medium_hash, host, pid, boot_id, pid_start, run_id) VALUES ($1, $2, $3, $4, $5, 7)",
                     h, me.host, other:pid(), me.boot, liveness.start_time(other:pid())))
    local called = false
    local out = assert(lease.release(db(), h, function() called = true; return true end))
    assert.is_false(out.unmounted)
    assert.is_false(called)
    assert.same({ { pid = other:pid(), run_id = 7 } }, out.holders)
    -- once it is gone, the last one out unmounts
    other:kill(9); other:wait()
    assert.is_true(lease.take(db(), h))
    out = assert(lease.release(db(), h, function() called = true; return true end))
    assert.is_true(out.unmounted and called)
  end)

  it("passes an unmount's failure on", function()
    assert.is_true(lease.take(db(), h))
    local out, err, code = lease.release(db(), h, function() return nil, "busy", "EBUSY" end)
    assert.is_nil(out)
    assert.equal("busy", err)
    assert.equal("EBUSY", code)
  end)
end)

describe("runs sharing a medium", function()
  local ok, why = runs.can_run()
  if not ok then
    it("share its mount", function() pending(why) end)
    return
  end
  after_each(runs.unmount)

  it("two runs on one image at once: both finish, neither takes the other's mount, no false problem", function()
    local dir = helper.tmpdir("lease-two")
    local img = images.ext(dir .. "/two.img", { size_mb = 64, files = runs.many_files("two", 100, 10, 60) })
    local pol = policy(dir, "{ copy = { batch = 20, threads = 1, durability = 'fsync' } }")
    local h = medium_of(img)
    local home = dir .. "/home"
    local function start(name) return runs.start(finally, { "run", pol, img }, env_of(dir, home), dir .. "/" .. name) end
    local a = start("a")
    assert.truthy(runs.wait_copied(db(), h, 40), "the first run never got going: " .. read(dir .. "/a"))
    local b = start("b")
    local how_b, code_b = b:wait(240)
    local how_a, code_a = a:wait(240)
    local ea, eb = read(dir .. "/a"), read(dir .. "/b")
    assert.equal("exit", how_a, ea)
    assert.equal(0, code_a, ea)
    assert.equal("exit", how_b, eb)
    -- the second copied alongside (a load still running is waited for)
    assert.equal(0, code_b, eb)
    assert.equal(600, runs.copied(db(), h))
    local pr = json.decode(assert(db():exec("SELECT problems::text AS p FROM medium WHERE medium_hash = $1", h))[1].p) or {}
    assert.is_nil(pr.high_error_rate, json.encode(pr))
    for _, ev in ipairs(pr.diagnostic_events or {}) do
      assert.is_true(false, "no file of the first run failed: " .. json.encode(ev))
    end
    assert.is_nil(ea:find("remounted", 1, true), ea)
    -- the last one out unmounted; no lease is left
    assert.same({}, mounts_of(h))
    assert.equal(0, assert(db():exec("SELECT count(*) AS n FROM mount_lease WHERE medium_hash = $1", h))[1].n)
  end)

  it("a batch slower than its lease keeps its claims: no file is read by two workers", function()
    local slowfs = require "spec.support.slowfs"
    local bin, err = slowfs.bin()
    if not bin then pending(err) return end
    local dir = helper.tmpdir("lease-slow")
    local opens = dir .. "/opens"
    -- 24 files of a share that answers one request at a time, 150 ms each:
    -- a batch of 6 takes seconds, the lease is one
    local mnt = slowfs.mount(finally, dir .. "/src", { SLOWFS_DIRS = "4", SLOWFS_FILES = "6", SLOWFS_BAD = "0",
                                                      SLOWFS_LATENCY_MS = "150", SLOWFS_OPENS = opens }, true)
    local pol = policy(dir, [[{ stages = { "identify", "inspect", "mount", "enumerate", "copy" },
                                copy = { batch = 6, threads = 1, lease = 1, adapt = false } }]])
    local r = assert(proc.run { argv = { helper.ntt, "run", "--workers", "2", pol, mnt },
                                env = env_of(dir, dir .. "/home"), timeout = 240 })
    assert.equal(0, r.code, r.stderr)
    assert.equal(24, runs.copied(db(), medium_of(mnt)))
    local seen, twice = {}, {}
    for line in io.lines(opens) do
      if seen[line] then twice[#twice + 1] = line end
      seen[line] = true
    end
    assert.same({}, twice)
  end)

  it("a killed run's claims are taken back at once by the next run", function()
    local dir = helper.tmpdir("lease-kill")
    local img = images.ext(dir .. "/k.img", { size_mb = 64, files = runs.many_files("kill", 100, 10, 60) })
    local pol = policy(dir, "{ copy = { batch = 50, threads = 1, durability = 'fsync' } }")
    local h = medium_of(img)
    local home = dir .. "/home"
    local a = runs.start(finally, { "run", pol, img }, env_of(dir, home), dir .. "/a")
    assert.truthy(runs.wait_copied(db(), h, 60), "the first run never got going: " .. read(dir .. "/a"))
    a:kill(9)
    a:wait(10)
    local claimed = assert(db():exec(("SELECT count(*) AS n FROM inode_p_%s WHERE claimed_by IS NOT NULL AND lease_until > now()"):format(h)))[1].n
    assert.is_true(claimed > 0, "the killed run held claims")
    local t0 = util.monotonic()
    local r = assert(proc.run { argv = { helper.ntt, "run", pol, img }, env = env_of(dir, home), timeout = 240 })
    local secs = util.monotonic() - t0
    assert.equal(0, r.code, r.stderr)
    assert.equal(600, runs.copied(db(), h))
    assert.is_true(secs < 60, ("the rerun took %.1f s (the lease is 600 s)"):format(secs))
    io.stderr:write(("\n[rerun] after a killed run holding %d claims: %.2f s\n"):format(claimed, secs))
  end)
end)
