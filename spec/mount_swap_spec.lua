-- spec/mount_swap_spec.lua: a medium's mount replaced under a running copy
-- (unmounted, another filesystem mounted at the same place: by an
-- operator's mistake or on purpose) is noticed before the next batch or
-- retry reads: the copy stops (or, when a failing file made it remount
-- first, the medium is mounted again), and no byte of the other filesystem
-- reaches the store as this medium's files.
local helper = require "spec.support.helper"
local images = require "spec.support.images"
local runs = require "spec.support.runs"

local function files_of(tag)
  local out = {}
  for d = 1, 10 do
    for f = 1, 200 do
      out[("d%02d/f%03d"):format(d, f)] = ("%s %s %d %d "):format(runs.tag, tag, d, f):rep(60)
    end
  end
  return out
end

describe("a mount swapped under a copy", function()
  local ok, why = runs.can_run()
  if not ok then
    it("is noticed", function() pending(why) end)
    return
  end
  after_each(runs.unmount)

  it("is noticed: the copy stops or mounts the medium again, nothing of the other filesystem is stored", function()
    local dir = helper.tmpdir("mountswap")
    local a = images.ext(dir .. "/a.img", { size_mb = 32, files = files_of("AAAA") })
    -- the same names and sizes, other bytes
    local b = images.ext(dir .. "/b.img", { size_mb = 32, files = files_of("BBBB") })
    local h = runs.medium_of(a)
    local home = dir .. "/home"
    local env = runs.env_of(dir, home)
    local pol = runs.policy(dir, [[{ stages = { "identify", "inspect", "mount", "enumerate", "copy", "unmount" },
                                     copy = { batch = 20, threads = 1, durability = "fsync" } }]])
    local run = runs.start(finally, { "run", pol, a }, env, dir .. "/run.err")
    assert.truthy(runs.wait_copied(runs.db(), h, 40), "the run never got going")
    local mnt = runs.mounts_of(h)[1]
    assert.truthy(mnt, "the medium is mounted")
    helper.sh { "umount", "-l", mnt }
    helper.sh { "mount", "-o", "loop,ro", b, mnt }
    local at_swap = runs.copied(runs.db(), h)
    local function unswap()
      for _ = 1, 3 do helper.sh({ "umount", "-l", mnt }, { may_fail = true }) end
    end
    finally(unswap)
    local how, code = run:wait(240)
    local err = helper.read(dir .. "/run.err") or ""
    assert.equal("exit", how, err)
    -- Either the next batch found the other filesystem and the copy stopped,
    -- or a file of the batch in flight failed first and the diagnosis
    -- mounted the medium again (the helper takes no other filesystem for
    -- it) and the copy went on from the medium -- or, on a loaded machine,
    -- the swap came when the last two batches (read from the medium's own
    -- open mount) were all that was left.
    if code == 2 then
      assert.matches("p0 at " .. mnt:gsub("%p", "%%%0") .. " is not the medium's filesystem any more", err)
      local copied = runs.copied(runs.db(), h)
      assert.is_true(copied >= 40 and copied < 2000, tostring(copied))
      assert.equal(1, #runs.events(home, "root_changed"))
    else
      assert.equal(0, code, err)
      assert.equal(2000, runs.copied(runs.db(), h))
      assert.is_true(#runs.events(home, "remounted") >= 1 or at_swap >= 2000 - 2 * 20,
                     ("copied %d when swapped, no remount: %s"):format(at_swap, err))
    end
    -- every blob holds the medium's bytes, none the other filesystem's
    local function foreign()
      return helper.sh({ "grep", "-rl", "BBBB", home .. "/store/by-hash" }, { may_fail = true }).stdout
    end
    assert.equal("", foreign(), "blobs of the other filesystem in the store")
    -- the other filesystem gone, a rerun mounts the medium and copies the rest
    unswap()
    local r = runs.run(home, { pol, a })
    assert.equal(0, r.code, r.stderr)
    assert.equal(2000, runs.copied(runs.db(), h))
    assert.equal("", foreign())
  end)
end)
