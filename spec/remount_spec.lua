-- spec/remount_spec.lua: a mount lost mid-copy -- the FUSE driver serving
-- the medium killed, or the honest view under it -- is mounted again
-- through the helper and every file is copied; a directory medium is never
-- remounted; the remount budget holds.
local helper = require "spec.support.helper"
local images = require "spec.support.images"
local proc = require "ntt.core.proc"
local util = require "ntt.core.util"
local json = require "ntt.json"
local runs = require "spec.support.runs"

local policy, medium_of, db = runs.policy, runs.medium_of, runs.db
local env_of = runs.env_of

-- pids of the processes whose command line holds every one of words
local function pids_of(words)
  local out = {}
  local r = helper.sh { "sh", "-c", "for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline 2>/dev/null; echo \" @${p#/proc/}\"; done" }
  for line in r.stdout:gmatch("[^\n]+") do
    local all = true
    for _, w in ipairs(words) do if not line:find(w, 1, true) then all = false end end
    local pid = line:match("@(%d+)$")
    if all and pid and tonumber(pid) ~= util.pid() and not line:find("^sh ") and not line:find("tr ", 1, true) then
      out[#out + 1] = tonumber(pid)
    end
  end
  return out
end

local states = runs.states

-- `ntt run` of img in the background, 10 files a batch, once 20 files are
-- copied: the process (killed at the test's end), the medium's hash, the
-- file of its stderr and how many were copied by then.  A generous remount
-- budget: other runs on this machine may take mounts away too.
local function start_copying(dir, home, img)
  local pol = policy(dir, "{ mount = { remounts = 10 }, copy = { batch = 10, threads = 1, durability = 'fsync', adapt = false } }")
  local h = medium_of(img)
  local errf = dir .. "/stderr"
  local p = runs.start(finally, { "run", pol, img }, env_of(dir, home), errf)
  local copied_then = runs.wait_copied(db(), h, 20)
  assert.truthy(copied_then, "the copy never got going: " .. helper.read(errf))
  return p, h, errf, copied_then
end

local function reasons(h)
  local r = assert(db():exec(("SELECT reason, count(*) AS n FROM inode_p_%s WHERE state <> 'copied' GROUP BY 1"):format(h)))
  return json.encode(r)
end

local function events(h)
  local r = assert(db():exec("SELECT problems::text AS p FROM medium WHERE medium_hash = $1", h))
  return (json.decode(r[1].p) or {}).diagnostic_events or {}
end

local function fat_files(n)
  local files = {}
  for i = 1, n do files[("F%04d.BIN"):format(i)] = ("%s fat %d "):format(runs.tag, i):rep(300) end
  return files
end

describe("a mount lost mid-copy", function()
  local ok, why = runs.can_run { fuse = true }
  if not ok then
    it("is remounted", function() pending(why) end)
    return
  end
  after_each(runs.unmount)

  it("a killed FUSE driver (the FAT reader) is remounted through the helper and every file is copied", function()
    local dir = helper.tmpdir("remount-fat")
    local img = images.fat(dir .. "/f.img", { kb = 16384, files = fat_files(300) })
    local home = dir .. "/home"
    local p, h, errf, copied_then = start_copying(dir, home, img)
    -- its FUSE driver: the Sleuth Kit reader (the default), or fusefat
    local fuse = pids_of { "ntt-tskfs", h }
    if #fuse == 0 then fuse = pids_of { "fusefat", h } end
    if #fuse == 0 then pending("the FAT image is not served by a FUSE driver here"); return end
    assert.is_true(copied_then < 300, "the copy was over before the driver could be killed")
    for _, pid in ipairs(fuse) do helper.sh { "kill", "-9", tostring(pid) } end
    local how, code = p:wait(240)
    local err = helper.read(errf)
    assert.equal("exit", how, err)
    assert.equal(0, code, err)
    local n = states(h)
    assert.equal(300, n.copied, json.encode(n))
    assert.is_nil(n.pending or n.skipped or n.failed_retryable or n.failed_permanent or n.damaged, json.encode(n))
    local remounted = 0
    for _, ev in ipairs(events(h)) do
      if ev.action == "remounted" then
        remounted = remounted + 1
        assert.matches("mount_check:[mi][in][sa]", table.concat(ev.checks, ","))
      end
    end
    assert.is_true(remounted > 0, "a remount was recorded")
    local secs = err:match("remounted in ([%d%.]+) s")
    assert.truthy(secs, err)
    io.stderr:write(("\n[remount] fusefat killed after %d files: remounted in %s s\n"):format(copied_then, secs))
    -- and the helper serves it again from a fresh driver, then unmounted at the end
    assert.same({}, pids_of { "fusefat", h })
  end)

  it("a killed honest view is remounted, files over the holes stay damaged, the rest copied", function()
    local dir = helper.tmpdir("remount-view")
    local files = runs.many_files("view", 40, 10, 30)
    local img = images.ext(dir .. "/v.img", { size_mb = 32, files = files })
    -- a map with one unrescued area near the end: the image needs the view
    local size = 32 * images.MiB
    images.mapfile(dir .. "/v.img.map", { { 0, size - 64 * 1024, "+" }, { size - 64 * 1024, 64 * 1024, "-" } })
    local home = dir .. "/home"
    local p, h, errf, copied_then = start_copying(dir, home, img)
    local st = json.decode(helper.sh({ helper.build .. "/ntt-mount-helper", "status", h }, { may_fail = true, env = env_of(dir, home) }).stdout)
    local view = { st.view and st.view.pid }
    assert.is_true(#view > 0 and view[1] > 0, "no honest view daemon found")
    assert.is_true(copied_then < 300, "the copy was over before the view could be killed")
    for _, pid in ipairs(view) do helper.sh { "kill", "-9", tostring(pid) } end
    -- what the view served before is in the page cache: reads from there
    -- would not notice (no sync first: a busy machine's sync takes seconds)
    helper.sh { "sh", "-c", "echo 1 > /proc/sys/vm/drop_caches" }
    local how, code = p:wait(240)
    local err = helper.read(errf)
    assert.equal("exit", how, err)
    local n = states(h)
    -- nothing lost to the dead view: what is not copied was judged on a
    -- working mount (the files the view refuses next to its hole)
    local diag = json.encode(n) .. reasons(h) .. err
    assert.equal(300, (n.copied or 0) + (n.damaged or 0) + (n.skipped or 0), diag)
    assert.is_nil(n.pending or n.failed_permanent or n.failed_retryable, diag)
    for _, ev in ipairs(events(h)) do
      if ev.action == "skipped" then assert.matches("mount_check:ok", table.concat(ev.checks, ","), diag) end
    end
    local secs = err:match("remounted in ([%d%.]+) s")
    assert.truthy(secs, diag .. json.encode(events(h)[1] or {}))
    io.stderr:write(("\n[remount] honest view killed after %d files: remounted in %s s\n"):format(copied_then, secs))
    assert.is_true(code == 0 or code == 1, err)   -- 1: files next to the hole are not copied
  end)

  it("a lost mount beyond the remount budget stops the copy, its files left pending for the next run", function()
    local dir = helper.tmpdir("remount-budget")
    local img = images.ext(dir .. "/b.img", { size_mb = 16, files = runs.many_files("budget", 20, 5, 20) })
    local home = dir .. "/home"
    -- the mount taken away between enumerate and copy; no remount allowed
    local stages = [[stages = { "identify", "inspect", "mount", "enumerate",
             function(ctx)
               for _, r in ipairs(ctx.roots) do require("ntt.core.proc").run { argv = { "umount", "-l", r.root }, timeout = 20 } end
               return true
             end,
             "copy", "unmount" }]]
    local pol = policy(dir, "{ mount = { remounts = 0 }, " .. stages .. " }")
    local h = medium_of(img)
    local r = assert(proc.run { argv = { helper.ntt, "run", pol, img }, env = env_of(dir, home), timeout = 120 })
    assert.equal(2, r.code, r.stderr)
    assert.truthy(r.stderr:find("the mount is lost and not mounted again: remount budget spent", 1, true), r.stderr)
    local n = states(h)
    assert.equal(100, n.pending, json.encode(n))
    local worst = assert(db():exec(("SELECT max(attempts) AS a FROM inode_p_%s"):format(h)))[1].a
    assert.is_true(worst <= 1, "attempts used: " .. tostring(worst))
    -- the next run (remounts allowed) copies them all
    local pol2 = runs.policy(dir .. "/home", "{}")
    r = assert(proc.run { argv = { helper.ntt, "run", pol2, img }, env = env_of(dir, home), timeout = 120 })
    assert.equal(0, r.code, r.stderr)
    assert.equal(100, states(h).copied)
  end)

  it("a directory medium is never remounted: its check says it is a directory", function()
    local diagnose = require "ntt.diagnose"
    local dir = helper.tmpdir("remount-dir")
    local found = diagnose.gather { err = "EIO", phase = "read", root = dir, directory = true }
    assert.same({ "detected_io_error", "mount_check:directory" }, found)
    local d = assert(require("ntt.policy").load("default"))
    assert.equal("continue", require("ntt.rules").decide(d.diagnose, found, {}).kind)
    -- a mount point gone, or its FUSE driver: missing / inaccessible
    assert.equal("mount_check:missing", diagnose.mount_check(dir))
  end)
end)
