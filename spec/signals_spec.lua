-- spec/signals_spec.lua: ^C (SIGINT) and SIGTERM to `ntt run --workers 3`
-- mid-copy: the workers stop too (the signal is passed on to them), no
-- batch stays claimed, nothing stays mounted, one line says what was done,
-- exit 130 / 143.  And what a run refuses before it starts: a policy out
-- of bounds, a run without a policy.
local helper = require "spec.support.helper"
local images = require "spec.support.images"
local proc = require "ntt.core.proc"
local util = require "ntt.core.util"
local runs = require "spec.support.runs"

local policy, medium_of, db = runs.policy, runs.medium_of, runs.db
local env_of, mounts_of = runs.env_of, runs.mounts_of
local read = helper.try_read

-- pids of the processes whose command line holds word
local function pids_with(word)
  local out = {}
  local r = helper.sh { "sh", "-c", "for p in /proc/[0-9]*; do c=$(tr '\\0' ' ' < $p/cmdline 2>/dev/null); "
                                  .. "case \"$c\" in *ntt*) echo \"${p#/proc/} $c\";; esac; done" }
  for line in r.stdout:gmatch("[^\n]+") do
    local pid, cmd = line:match("^(%d+) (.*)$")
    if pid and cmd:find(word, 1, true) and not cmd:find("^sh ") then out[#out + 1] = line end
  end
  return out
end

describe("a signal to ntt run --workers 3 mid-copy", function()
  local ok, why = runs.can_run()
  if not ok then
    it("stops everything", function() pending(why) end)
    return
  end
  after_each(runs.unmount)

  for _, case in ipairs { { sig = 2, name = "SIGINT", code = 130 }, { sig = 15, name = "SIGTERM", code = 143 } } do
    it(("%s: workers stopped, batches released, nothing mounted, exit %d"):format(case.name, case.code), function()
      local dir = helper.tmpdir("sig" .. case.sig)
      local img = images.ext(dir .. "/s.img", { size_mb = 64, files = runs.many_files("sig" .. case.sig, 40, 40, 100) })
      local pol = policy(dir, "{ copy = { batch = 10, threads = 1, durability = 'fsync' } }")
      local h = medium_of(img)
      local errf = dir .. "/stderr"
      local p = assert(proc.spawn { argv = { helper.ntt, "run", "--workers", "3", pol, img },
                                    env = env_of(dir), stdout = "null", stderr = errf })
      finally(function() if p:wait(0) == nil then p:kill(9); p:wait(10) end end)
      assert.truthy(runs.wait_copied(db(), h, 60), "the copy never got going: " .. read(errf))
      -- the workers are running (in sessions of their own)
      assert.truthy(runs.wait_for(function() return #pids_with("worker " .. pol) == 2 end),
                    table.concat(pids_with(pol), "\n"))
      local t0 = util.monotonic()
      assert(p:kill(case.sig))
      local how, code = p:wait(120)
      local secs = util.monotonic() - t0
      local err = read(errf)
      assert.equal("exit", how, err)
      assert.equal(case.code, code, err)
      assert.is_true(runs.copied(db(), h) < 4000, "the copy was over before the signal")
      -- the one line
      assert.truthy(err:find("ntt run: stopped by " .. case.name .. "; 2 copy worker(s) stopped; batches being copied released (pending again); 1 medium(s) unmounted", 1, true), err)
      -- nothing left: no process, no mount, no claim, no lease
      assert.same({}, pids_with(pol))
      assert.same({}, mounts_of(h))
      local claimed = assert(db():exec(("SELECT count(*) AS n FROM inode_p_%s WHERE claimed_by IS NOT NULL"):format(h)))[1].n
      assert.equal(0, claimed)
      assert.equal(0, assert(db():exec("SELECT count(*) AS n FROM mount_lease WHERE medium_hash = $1", h))[1].n)
      io.stderr:write(("\n[signal] %s: everything stopped in %.2f s\n"):format(case.name, secs))
    end)
  end
end)

describe("ntt run refuses before it starts", function()
  local function run_with(overrides)
    local dir = helper.tmpdir("bounds")
    local pol = policy(dir, overrides)
    return assert(proc.run { argv = { helper.ntt, "run", pol, dir }, env = { NTT_HOME = dir .. "/home", NTT_DB_URL = false },
                             timeout = 60 }), pol, dir
  end

  for _, case in ipairs {
    { "{ copy = { batch = 0 } }", ":2: copy.batch must be at least 1 (got 0)" },
    { "{ workers = 0 }", ":2: workers must be at least 1 (got 0)" },
    { "{ retry = { max = 5 } }", "retry.max (5) must not be below retry.checkpoint (10)" },
    { "{ copy = { lease = -1 } }", "copy.lease must be at least 0 (got -1)" },
    { "{ mount = { timeout = -5 } }", "mount.timeout must be at least 0 (got -5)" },
    { "{ retry = { backoff = { cap = -0.5 } } }", "retry.backoff.cap must be at least 0 (got -0.5)" },
    { "{ mount = { remounts = -1 } }", "mount.remounts must be at least 0 (got -1)" },
  } do
    it("a policy with " .. case[1], function()
      local r, _, dir = run_with(case[1])
      assert.equal(2, r.code, r.stderr)
      assert.truthy(r.stderr:find(case[2], 1, true), r.stderr)
      assert.is_nil(io.open(dir .. "/home", "r"))   -- nothing was created
    end)
  end

  it("ntt run IMAGE (no policy) prints the usage, exit 64", function()
    local dir = helper.tmpdir("usage")
    local img = dir .. "/disk.img"
    helper.write(img, ("\0"):rep(4096))
    local r = assert(proc.run { argv = { helper.ntt, "run", img }, env = { NTT_HOME = dir .. "/home" }, timeout = 60 })
    assert.equal(64, r.code, r.stderr)
    assert.truthy(r.stderr:find("usage: ntt run", 1, true), r.stderr)
    assert.is_nil(io.open(dir .. "/home", "r"))
  end)
end)
