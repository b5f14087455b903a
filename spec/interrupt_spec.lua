-- spec/interrupt_spec.lua: ^C (SIGINT) to `ntt run POLICY IMAGE` during
-- enumerate and during copy: the run exits 130 (docs/operations.md) and
-- leaves nothing mounted, neither a mount under its mount root nor a loop
-- device backed by the image.
local helper = require "spec.support.helper"
local images = require "spec.support.images"
local proc = require "ntt.core.proc"
local json = require "ntt.json"
local pg = require "ntt.core.pg"
local runs = require "spec.support.runs"
local policy, medium_of = runs.policy, runs.medium_of

-- Mount points under root, from /proc/self/mountinfo (field 5).
local function mounts_under(root)
  local out = {}
  for l in io.lines("/proc/self/mountinfo") do
    local mp = l:match("^%S+ %S+ %S+ %S+ (%S+)")
    if mp and (mp == root or mp:sub(1, #root + 1) == root .. "/") then out[#out + 1] = mp end
  end
  return out
end

-- Loop devices backed by img, as losetup and sysfs see them.
local function loops_of(img)
  local out = {}
  local r = assert(proc.run { argv = { "losetup", "-a" }, timeout = 30 })
  for l in r.stdout:gmatch("[^\n]+") do
    if l:find(img, 1, true) then out[#out + 1] = "losetup: " .. l end
  end
  local s = assert(proc.run { argv = { "sh", "-c", 'for f in /sys/block/loop*/loop/backing_file; do '
                                      .. '[ -r "$f" ] && echo "$f $(cat "$f")"; done' }, timeout = 30 })
  for l in s.stdout:gmatch("[^\n]+") do
    if l:find(img, 1, true) then out[#out + 1] = "sysfs: " .. l end
  end
  return out
end

local read = helper.try_read

-- `ntt run pol img` in the background, mounting under dir/mnt.
local function start(dir, pol, img)
  local run = { mroot = dir .. "/mnt", errf = dir .. "/stderr", img = img }
  helper.sh { "mkdir", "-p", run.mroot }
  run.p = assert(proc.spawn { argv = { helper.ntt, "run", pol, img },
                              env = { NTT_HOME = dir .. "/home", NTT_MOUNT_ROOT = run.mroot,
                                      NTT_MOUNT_TIMEOUT = "20" },
                              stdout = "null", stderr = run.errf })
  return run
end

-- SIGINT, then: exit status 130, nothing mounted, no loop device left.
local function interrupt_and_check(run, stage)
  assert(run.p:kill(2))
  local how, code = run.p:wait(120)
  local err = read(run.errf)
  assert.equal("exit", how, err)
  assert.equal(130, code, err)
  assert.truthy(err:find("stage " .. stage .. " failed: interrupted", 1, true), err)
  assert.same({}, mounts_under(run.mroot))
  assert.same({}, loops_of(run.img))
  -- nor its console socket (ntt attach)
  assert.same({}, require("ntt.core.fs").readdir(run.mroot .. "/../home/run") or {})
end

describe("^C during ntt run", function()
  local ok, why = runs.can_run()
  if not ok then
    it("exits 130 and leaves nothing mounted", function() pending(why) end)
    return
  end
  local conn
  before_each(function()
    conn = assert(pg.connect(assert(helper.db_url())))
    assert(require("ntt.db").migrate(conn))
  end)
  after_each(function() conn:close() end)

  it("during enumerate exits 130 and leaves nothing mounted", function()
    local dir = helper.tmpdir("intr-enum")
    local files = {}
    for i = 1, 50 do files[("d%d/f%d"):format(i % 5, i)] = ("%s enum %d\n"):format(runs.tag, i) end
    local img = images.ext(dir .. "/enum.img", { size_mb = 8, files = files })
    local pol = policy(dir)
    -- Enumerate's first step that needs the inode table (or one of its
    -- partitions) waits behind this lock, and no stage before it touches
    -- them, so the signal is sure to arrive while enumerate runs.
    assert(conn:begin())
    assert(conn:exec("LOCK TABLE inode IN ACCESS EXCLUSIVE MODE"))
    local released = false
    local function release() if not released then released = true; conn:rollback() end end
    finally(release)
    local run = start(dir, pol, img)
    finally(function() if run.p:wait(0) == nil then run.p:kill(9); run.p:wait(10) end end)
    local other = assert(pg.connect(assert(helper.db_url())))
    finally(function() other:close() end)
    local waiting = runs.wait_for(function()
      local r = other:exec([[SELECT count(*) AS n FROM pg_stat_activity
                              WHERE wait_event_type = 'Lock' AND datname = current_database()]])
      return r and r[1].n > 0
    end)
    if not waiting then
      local act = other:exec("SELECT state, wait_event_type, wait_event, query FROM pg_stat_activity WHERE datname = current_database()")
      assert.is_true(waiting, "enumerate never reached the inode table: " .. read(run.errf) .. json.encode(act or {}))
    end
    assert.same({ medium_of(img) }, (function()
      local seen = {}
      for _, mp in ipairs(mounts_under(run.mroot)) do
        local h = mp:match("/([0-9a-f]+)/p%d+$")
        if h then seen[#seen + 1] = h end
      end
      return seen
    end)())
    interrupt_and_check(run, "enumerate")
    release()
  end)

  it("during copy exits 130 and leaves nothing mounted", function()
    local dir = helper.tmpdir("intr-copy")
    local files = runs.many_files("copy", 100)
    local img = images.ext(dir .. "/copy.img", { size_mb = 64, files = files })
    -- fsync per file and one thread: slow enough to be caught mid-copy
    local pol = policy(dir, "{ copy = { batch = 20, threads = 1, durability = 'fsync' } }")
    local h = medium_of(img)
    local run = start(dir, pol, img)
    finally(function() if run.p:wait(0) == nil then run.p:kill(9); run.p:wait(10) end end)
    local function copied() return runs.copied(conn, h) or 0 end
    assert.is_true(runs.wait_for(function() return copied() >= 100 end), "the copy never got going: " .. read(run.errf))
    interrupt_and_check(run, "copy")
    assert.is_true(copied() < 2000, "the copy was over before the signal")
  end)
end)

describe("^C during a child process", function()
  it("proc.run kills the child and returns nil, \"interrupted\", \"EINTR\"", function()
    local script = helper.tmpdir("intr-proc") .. "/s.lua"
    helper.write(script, [[
      local util = require "ntt.core.util"
      local proc = require "ntt.core.proc"
      util.raise_on_interrupt(false)
      assert(proc.spawn { argv = { "sh", "-c", "sleep 0.3; kill -INT " .. util.pid() } })
      local t0 = util.monotonic()
      local r, msg, code = proc.run { argv = { "sleep", "30" }, timeout = 60 }
      util.clear_interrupt()
      print(tostring(r), msg, code, util.monotonic() - t0 < 10)
    ]])
    local r = assert(proc.run { argv = { helper.ntt, script }, timeout = 60 })
    assert.equal(0, r.code, r.stderr)
    assert.equal("nil\tinterrupted\tEINTR\ttrue\n", r.stdout)
  end)
end)
