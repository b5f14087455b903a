-- spec/stall_spec.lua: a read that hangs (spec/fixtures/slowfs.c with
-- SLOWFS_STUCK=1: d00/stuck.bin never answers until interrupted) is given
-- up after copy.stall_timeout without an operator: recorded failed with
-- where it stalled, the other files copied, the run ends.
local helper = require "spec.support.helper"
local runs = require "spec.support.runs"
local proc = require "ntt.core.proc"
local util = require "ntt.core.util"
local slowfs = require "spec.support.slowfs"

describe("a read that hangs", function()
  local ok, why = runs.can_run { fuse = true }
  if ok then
    local b, err = slowfs.bin()
    if not b then ok, why = false, err end
  end
  if not ok then
    it("is given up", function() pending(why) end)
    return
  end

  it("is given up after copy.stall_timeout: failed where it stalled, the rest copied, the run ends", function()
    local dir = helper.tmpdir("stall")
    -- multithreaded (no -s): the fixture must see the kernel's interrupt while a read hangs
    local mnt = slowfs.mount(finally, dir .. "/src", { SLOWFS_DIRS = "3", SLOWFS_FILES = "5", SLOWFS_BAD = "0",
                                                      SLOWFS_LATENCY_MS = "5", SLOWFS_STUCK = "1" })
    local pol = runs.policy(dir, [[{ stages = { "identify", "inspect", "mount", "enumerate", "copy" },
                                     copy = { batch = 6, threads = 2, adapt = false, stall_timeout = 2 } }]])
    local home = dir .. "/home"
    local t0 = util.monotonic()
    local r = assert(proc.run { argv = { helper.ntt, "run", pol, mnt }, env = runs.env_of(dir, home), timeout = 120 })
    local secs = util.monotonic() - t0
    assert.equal(1, r.code, r.stderr .. r.stdout)   -- a file failed
    assert.is_true(secs < 60, ("the run took %.1f s"):format(secs))
    local h = runs.medium_of(mnt)
    assert.equal(15, runs.copied(runs.db(), h))
    local rows = assert(runs.db():exec(("SELECT i.state::text AS state, i.reason FROM inode_p_%s i"
      .. " JOIN path_p_%s p ON p.ino = i.ino AND p.fs_index = i.fs_index WHERE p.path = $1::bytea"):format(h, h),
      "d00/stuck.bin"))
    assert.equal(1, #rows)
    assert.equal("failed_retryable", rows[1].state)
    assert.matches("^read stalled: no progress for %d+ s at byte 0 %(copy%.stall_timeout%)$", rows[1].reason)
    local ev = runs.events(home, "copy_stalled")
    assert.equal(1, #ev)
    assert.equal("d00/stuck.bin", ev[1].path)
    assert.matches("d00/stuck%.bin: no progress for %d+ s at byte 0: given up", r.stderr)
  end)
end)
