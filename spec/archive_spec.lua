-- spec/archive_spec.lua: the archive stage (lua/ntt/archive.lua): a
-- medium's image set packed into archive/<hash>.tar.zst, read back and
-- compared member by member with its sources, recorded; sources removed
-- only when policy says so, never while mounted, never before a verified
-- archive.
local helper = require "spec.support.helper"
local images = require "spec.support.images"
local runs = require "spec.support.runs"
local fs = require "ntt.core.fs"

local MiB = images.MiB
local tag, policy, medium_of, run, db = runs.tag, runs.policy, runs.medium_of, runs.run, runs.db

local function b3(path) return (helper.sh { "b3sum", "--no-names", path }.stdout:match("%x+")) end

local function poke(path, offset, byte)
  local f = assert(io.open(path, "r+b"))
  f:seek("set", offset)
  local old = f:read(1)
  f:seek("set", offset)
  f:write(byte or string.char((old:byte() + 1) % 256))
  f:close()
end

-- An ext4 image with a full map and a ddrescue log beside it.
local function image_set(dir)
  local img = images.ext(dir .. "/disk.img", { size_mb = 8, files = {
    ["a.txt"] = "alpha " .. tag, ["b/c.bin"] = ("archive " .. tag .. " "):rep(20000) } })
  images.mapfile(dir .. "/disk.map", { { 0, 8 * MiB, "+" } })
  helper.write(dir .. "/disk-ddrescue.log", "ddrescue log " .. tag .. "\n")
  helper.write(dir .. "/other.txt", "not part of the set\n")
  return img, { img, dir .. "/disk.map", dir .. "/disk-ddrescue.log" }
end

local function exists(p) return fs.stat(p, true) ~= nil end

describe("archive temps", function()
  it("a killed process's temp of this host is swept, a live one's and another host's stay", function()
    local archive = require "ntt.archive"
    local util = require "ntt.core.util"
    local liveness = require "ntt.liveness"
    local dir = helper.tmpdir("arch-sweep")
    local h = ("%032x"):format(util.pid())
    local dead = helper.gone_pid()
    local me = liveness.me()
    local host = me.host
    local names = {
      dead_new = ("%s.tar.zst.tmp.%s:%d:%s:%s"):format(h, host, dead, me.boot:sub(1, 8), "1"),
      dead_old = ("%s.tar.zst.tmp.%d"):format(h, dead),
      reborn = ("%s.tar.zst.tmp.%s:%d:%s:%s"):format(h, host, me.pid, "00000000", tostring(me.start)),
      live = ("%s.tar.zst.tmp.%s:%d:%s:%s"):format(h, host, me.pid, me.boot:sub(1, 8), tostring(me.start)),
      other_host = ("%s.tar.zst.tmp.%s:%d:%s:%s"):format(h, "elsewhere.example", dead, "0", "1"),
      other_medium = ("%s.tar.zst.tmp.%s:%d:%s:%s"):format(("f"):rep(32), host, dead, "0", "1"),
      final = h .. ".tar.zst",
    }
    for _, n in pairs(names) do helper.write(dir .. "/" .. n, "x") end
    local gone = archive.sweep(dir, h)
    table.sort(gone)
    local want = { names.dead_new, names.dead_old, names.reborn }
    table.sort(want)
    assert.same(want, gone)
    for k, n in pairs(names) do
      local swept = k == "dead_new" or k == "dead_old" or k == "reborn"
      assert.equal(not swept, exists(dir .. "/" .. n), k)
    end
  end)
end)

describe("archive stage", function()
  local ok, why = runs.can_run()
  if not ok then
    it("archives an image set", function() pending(why) end)
    return
  end
  after_each(runs.unmount)

  it("packs the image set in a default run, verified and recorded, sources kept", function()
    local dir = helper.tmpdir("arch-default")
    local img, set = image_set(dir)
    local home = dir .. "/home"
    local r = run(home, { policy(dir), img })
    assert.equal(0, r.code, r.stderr .. r.stdout)
    local h = medium_of(img)
    local path = home .. "/archive/" .. h .. ".tar.zst"
    assert.is_true(exists(path))
    local rec = assert(require("ntt.archive").record(db(), h))
    assert.equal(path, rec.path)
    assert.equal(fs.stat(path).size, rec.size)
    assert.equal(b3(path), rec.blake3)
    assert.equal(#set, #rec.members)
    for i, src in ipairs(set) do
      assert.equal(src, rec.members[i].source_path)
      assert.equal(src:match("[^/]+$"), rec.members[i].name)
      assert.equal(b3(src), rec.members[i].blake3)
      assert.is_true(exists(src))                 -- policy did not ask: kept
    end
    assert.is_nil(rec.sources_removed_at)
    local listed = helper.sh { "tar", "--zstd", "-tf", path }.stdout
    assert.equal("disk.img\ndisk.map\ndisk-ddrescue.log\n", listed)
    local m = assert(db():exec("SELECT archived_at IS NOT NULL AS done FROM medium WHERE medium_hash = $1", h))
    assert.is_true(m[1].done)
    -- no temp left behind, and a rerun does not write it again
    assert.same({ h .. ".tar.zst" }, fs.readdir(home .. "/archive"))
    local before = fs.stat(path).mtime_ns
    r = run(home, { policy(dir), img })
    assert.equal(0, r.code, r.stderr .. r.stdout)
    assert.equal(before, fs.stat(path).mtime_ns)
  end)

  it("fails without removing anything when a member differs on read-back", function()
    local dir = helper.tmpdir("arch-mismatch")
    local img, set = image_set(dir)
    local home = dir .. "/home"
    local r = run(home, { policy(dir, '{ stages = { "identify", "inspect" } }'), img })
    assert.equal(0, r.code, r.stderr .. r.stdout)
    local archive = require "ntt.archive"
    local m = assert(require("ntt.accounting").resolve(db(), medium_of(img)))
    -- a source changed between write and verify
    local w = assert(archive.write(m, { root = home }))
    local map_before = helper.read(set[2])
    poke(set[2], 3)
    local vok, err, code = archive.verify(w)
    assert.is_nil(vok)
    assert.equal("EBADMSG", code, err)
    assert.truthy(err:find("disk.map does not match its source", 1, true), err)
    assert.is_false(exists(w.tmp))
    assert.is_false(exists(w.path))
    helper.write(set[2], map_before)
    -- a byte of the archive flipped between write and read-back
    w = assert(archive.write(m, { root = home }))
    poke(w.tmp, fs.stat(w.tmp).size // 2)
    vok, err, code = archive.verify(w)
    assert.is_nil(vok)
    assert.equal("EBADMSG", code, err)
    assert.is_false(exists(w.tmp))
    -- nothing recorded, nothing removed, and no removal without a record
    assert.is_false(archive.record(db(), m.medium_hash))
    local rem, rerr, rcode = archive.remove_sources(db(), m)
    assert.is_nil(rem)
    assert.equal("ENOENT", rcode, rerr)
    for _, src in ipairs(set) do assert.is_true(exists(src)) end
  end)

  it("compares members with the bytes read from their sources, hashing a source again when it may have changed", function()
    local dir = helper.tmpdir("arch-racy")
    local img, set = image_set(dir)
    local home = dir .. "/home"
    local r = run(home, { policy(dir, '{ stages = { "identify" } }'), img })
    assert.equal(0, r.code, r.stderr .. r.stdout)
    local archive = require "ntt.archive"
    local m = assert(require("ntt.accounting").resolve(db(), medium_of(img)))
    local racy = archive.RACY_NS
    finally(function() archive.RACY_NS = racy end)
    archive.RACY_NS = 0   -- every source counts as settled: only its stat tells a change
    local w = assert(archive.write(m, { root = home }))
    for i, src in ipairs(set) do assert.equal(b3(src), w.written.members[i].blake3) end
    -- the same size, changed after it was read: its ctime tells, hashed again, refused
    local map_before = helper.read(set[2])
    poke(set[2], 3)
    local vok, err, code = archive.verify(w)
    assert.is_nil(vok)
    assert.equal("EBADMSG", code, err)
    assert.truthy(err:find("disk.map does not match its source", 1, true), err)
    helper.write(set[2], map_before)
    -- touched only: hashed again, the same bytes, verified
    w = assert(archive.write(m, { root = home }))
    helper.sh { "touch", set[3] }
    assert(archive.verify(w))
    os.remove(w.tmp)
  end)

  it("refuses an image rewritten in place by a later rescue", function()
    local dir = helper.tmpdir("arch-stale")
    local img = image_set(dir)
    local home = dir .. "/home"
    local r = run(home, { policy(dir, '{ stages = { "identify" } }'), img })
    assert.equal(0, r.code, r.stderr .. r.stdout)
    local m = assert(require("ntt.accounting").resolve(db(), medium_of(img)))
    poke(img, 5 * MiB)
    local archive = require "ntt.archive"
    local w = assert(archive.write(m, { root = home }))
    local vok, err, code = archive.verify(w)
    assert.is_nil(vok)
    assert.equal("ESTALE", code, err)
    assert.same({}, fs.readdir(home .. "/archive"))
    assert.is_false(archive.record(db(), m.medium_hash))
  end)

  it("removes the sources when policy asks, never while the medium is mounted", function()
    local dir = helper.tmpdir("arch-remove")
    local img, set = image_set(dir)
    local home = dir .. "/home"
    -- archive (and mount) with the sources kept
    local r = run(home, { policy(dir, '{ stages = { "identify", "inspect", "mount", "archive" } }'), img })
    assert.equal(0, r.code, r.stderr .. r.stdout)
    local h = medium_of(img)
    local archive = require "ntt.archive"
    local m = assert(require("ntt.accounting").resolve(db(), h))
    local rem, err, code = archive.remove_sources(db(), m)
    assert.is_nil(rem)
    assert.equal("EBUSY", code, err)
    for _, src in ipairs(set) do assert.is_true(exists(src)) end
    -- the same through the stage: it fails, the sources stay
    r = run(home, { policy(dir, '{ stages = { "identify", "archive" }, archive = { remove_sources = true } }'), img })
    assert.are_not.equal(0, r.code)
    assert.truthy(r.stderr:find("sources kept", 1, true), r.stderr)
    for _, src in ipairs(set) do assert.is_true(exists(src)) end
    assert(require("ntt.mount").unmount(h, img))
    -- unmounted: the stage removes them, the archive and its record stay
    r = run(home, { policy(dir, '{ stages = { "identify", "archive" }, archive = { remove_sources = true } }'), img })
    assert.equal(0, r.code, r.stderr .. r.stdout)
    for _, src in ipairs(set) do assert.is_false(exists(src)) end
    assert.is_true(exists(dir .. "/other.txt"))
    local rec = assert(archive.record(db(), h))
    assert.truthy(rec.sources_removed_at)
    assert.equal(b3(rec.path), rec.blake3)
  end)
end)
