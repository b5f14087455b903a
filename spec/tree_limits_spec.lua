-- spec/tree_limits_spec.lua: ntt.core.tree on its own (links, symlinks,
-- names the destination cannot hold, reruns) and the link limit: a blob
-- with as many links as its filesystem allows gets a verified second copy.
local helper = require "spec.support.helper"
local images = require "spec.support.images"
local runs = require "spec.support.runs"
local store = require "ntt.core.store"
local tree = require "ntt.core.tree"
local fs = require "ntt.core.fs"
local hash = require "ntt.core.hash"

local function blob_path(root, b) return ("%s/by-hash/%s/%s/%s"):format(root, b:sub(1, 2), b:sub(3, 4), b) end

describe("ntt.core.tree", function()
  it("links, makes directories and symlinks, and a second build finds them all in place", function()
    local dir = helper.tmpdir("treecore")
    local st = assert(store.open(dir .. "/store"))
    finally(function() st:close() end)
    assert(fs.mkdirp(dir .. "/tree"))
    local a, b = assert(st:put("alpha")), assert(st:put("beta"))
    local entries = {
      { path = "p1", kind = "d" },
      { path = "p1/x/y/a.txt", kind = "f", blob = a },
      { path = "p1/x/b\n\xff", kind = "f", blob = b },
      { path = "p1/x/empty", kind = "d" },
      { path = "p1/ln", kind = "l", target = "x/y/a.txt", mtime_ns = 1234567890123456789 },
    }
    local s, fails, copies = tree.build(st, dir .. "/tree", entries, { threads = 3 })
    assert.same({}, fails)
    assert.same({}, copies)
    assert.same({ links = 2, symlinks = 1, dirs = 2, existing = 0, failed = 0 }, s)
    assert.equal(assert(fs.stat(blob_path(dir .. "/store", a))).ino, assert(fs.stat(dir .. "/tree/p1/x/y/a.txt")).ino)
    assert.equal("beta", helper.read(dir .. "/tree/p1/x/b\n\xff"))
    local l = assert(fs.stat(dir .. "/tree/p1/ln", true))
    assert.equal("link", l.type)
    assert.equal(1234567890123456789, l.mtime_ns)
    assert.equal("alpha", helper.read(dir .. "/tree/p1/ln"))
    s = tree.build(st, dir .. "/tree", entries)
    assert.same({ links = 0, symlinks = 0, dirs = 0, existing = 5, failed = 0 }, s)
    -- directory times, once the contents are in
    local set, tf = tree.times(dir .. "/tree", { { path = "p1/x", mtime_ns = 946684800000000000 },
                                                 { path = "p1/nowhere/z", mtime_ns = 0 } })
    assert.equal(1, set)
    assert.equal(1, #tf)
    assert.equal("ENOENT", tf[1].err)
    assert.equal(946684800000000000, assert(fs.stat(dir .. "/tree/p1/x")).mtime_ns)
  end)

  it("reports what it cannot put in, per entry, and changes no name", function()
    local dir = helper.tmpdir("treefail")
    local st = assert(store.open(dir .. "/store"))
    finally(function() st:close() end)
    assert(fs.mkdirp(dir .. "/tree/p1"))
    local a = assert(st:put("alpha"))
    helper.write(dir .. "/tree/p1/taken", "other")
    local entries = {
      { path = "p1/" .. ("n"):rep(300), kind = "f", blob = a },
      { path = "p1/" .. ("d"):rep(300) .. "/f", kind = "f", blob = a },
      { path = "p1/taken", kind = "f", blob = a },
      { path = "p1/missing", kind = "f", blob = hash.sum("never stored") },
      { path = "p1/ok", kind = "f", blob = a },
    }
    local s, fails = tree.build(st, dir .. "/tree", entries)
    assert.equal(1, s.links)
    assert.equal(4, s.failed)
    local by = {}
    for _, f in ipairs(fails) do by[f.index] = f end
    assert.equal("ENAMETOOLONG", by[1].err)
    assert.equal("ENAMETOOLONG", by[2].err)
    assert.matches("parent directory", by[2].msg)
    assert.equal("EEXIST", by[3].err)
    assert.equal("ENOENT", by[4].err)
    assert.matches("^blob", by[4].msg)
    assert.equal("other", helper.read(dir .. "/tree/p1/taken"))
    assert.same({ "ok", "taken" }, (function() local t = fs.readdir(dir .. "/tree/p1"); table.sort(t); return t end)())
    -- misuse raises
    assert.has_error(function() tree.build(st, dir .. "/tree", { { path = "/abs", kind = "d" } }) end)
    assert.has_error(function() tree.build(st, dir .. "/tree", { { path = "p1/f", kind = "f", blob = "xyz" } }) end)
    assert.has_error(function() tree.build(st, dir .. "/tree", {}, { treads = 2 }) end)
    local n, msg, code = tree.build(st, dir .. "/nope", {})
    assert.is_nil(n)
    assert.equal("ENOENT", code, msg)
  end)

  it("makes verified second copies of a blob at the link limit, and finds them on a rerun", function()
    local dir = helper.tmpdir("treecopies")
    local st = assert(store.open(dir .. "/store"))
    finally(function() st:close() end)
    assert(fs.mkdirp(dir .. "/tree"))
    local a = assert(st:put("same " .. runs.tag))
    local entries = {}
    for i = 1, 300 do entries[i] = { path = ("p1/d%d/f%03d"):format(i % 7, i), kind = "f", blob = a } end
    local s, fails, copies = tree.build(st, dir .. "/tree", entries, { threads = 4, link_max = 100 })
    assert.same({}, fails)
    assert.equal(300, s.links)
    -- the blob holds 99 tree links, each copy 99 more: 3 copies, the last with 3
    assert.equal(3, #copies)
    local inos = {}
    for _, e in ipairs(entries) do
      local p = dir .. "/tree/" .. e.path
      assert.equal("same " .. runs.tag, helper.read(p))
      inos[assert(fs.stat(p)).ino] = true
    end
    local n = 0
    for _ in pairs(inos) do n = n + 1 end
    assert.equal(4, n)
    for i, c in ipairs(copies) do
      assert.equal(a, c.blob)
      local cp = ("%s/copies/%s/%s/%s.%d"):format(dir .. "/store", a:sub(1, 2), a:sub(3, 4), a, c.n)
      assert.equal(a, (assert(hash.file(cp))))
      assert.equal(i, c.n)
    end
    -- again, from a fresh start: everything is found in place, no copy made
    local s2, f2, c2 = tree.build(st, dir .. "/tree", entries, { threads = 4, link_max = 100 })
    assert.same({}, f2)
    assert.same({}, c2)
    assert.equal(300, s2.existing)
    -- more names: they go to the copy with room left (96), then a new one
    local more = {}
    for i = 1, 150 do more[i] = { path = ("p2/f%03d"):format(i), kind = "f", blob = a } end
    local s3, f3, c3 = tree.build(st, dir .. "/tree", more, { link_max = 100 })
    assert.same({}, f3)
    assert.equal(150, s3.links)
    assert.equal(1, #c3)
    assert.equal(4, c3[1].n)
  end)

  it("asks the filesystem for its link limit", function()
    local n = assert(tree.link_max(helper.tmpdir("linkmax")))
    assert.is_true(n >= 127)
    local _, _, code = tree.link_max("/nonexistent/ntt")
    assert.equal("ENOENT", code)
  end)
end)

describe("the tree stage at the link limit", function()
  local ok, why = runs.can_run()
  if not ok then
    it("copies a blob that is full", function() pending(why) end)
    return
  end
  after_each(runs.unmount)

  -- A folder of n empty files (dirs of 1000).
  local function empty_files(src, n)
    for i = 0, n - 1 do
      if i % 1000 == 0 then assert(fs.mkdirp(("%s/d%03d"):format(src, i // 1000))) end
      local f = assert(io.open(("%s/d%03d/f%05d"):format(src, i // 1000, i), "wb"))
      f:close()
    end
    return src
  end

  -- An ext4 image of n empty files, made with mke2fs -d.
  local function many_empty(dir, n)
    local src = empty_files(dir .. "/src", n)
    local img = dir .. "/" .. hash.sum("many-empty " .. runs.tag .. n, 16) .. ".img"
    images.truncate(img, 160 * images.MiB)
    local r = helper.sh({ "mke2fs", "-q", "-F", "-t", "ext4", "-N", tostring(n + 2000), "-d", src, img },
                        { timeout = 300 })
    assert(r.code == 0, r.stderr)
    helper.sh { "rm", "-rf", src }
    return img
  end

  local function check(home, h, n)
    local tree = home .. "/tree/" .. h .. "/p0"
    local empty = hash.sum("")
    local blob = assert(fs.stat(blob_path(home .. "/store", empty)))
    local r = helper.sh { "find", tree, "-type", "f", "-printf", "%i %s\\n" }
    local inos, count = {}, 0
    for ino, size in r.stdout:gmatch("(%d+) (%d+)\n") do
      assert.equal("0", size)
      inos[tonumber(ino)] = true
      count = count + 1
    end
    assert.equal(n, count)
    local distinct = 0
    for _ in pairs(inos) do distinct = distinct + 1 end
    assert.is_true(inos[blob.ino])
    local probs = assert(runs.db():exec("SELECT count(*) AS n FROM tree_problem WHERE medium_hash = $1", h))
    assert.equal(0, probs[1].n)
    local rows = assert(runs.db():exec("SELECT copy_no FROM blob_copy WHERE blobid = $1 ORDER BY 1", empty))
    return distinct, #rows
  end

  it("links 3,000 same files with a lowered limit through copies, no error", function()
    local dir = helper.tmpdir("treelim")
    local img = many_empty(dir, 3000)
    local home = dir .. "/home"
    local r = runs.run(home, { "-v", runs.policy(dir, "{ tree = { link_max = 1000 } }"), img })
    assert.equal(0, r.code, r.stderr .. r.stdout)
    local h = runs.medium_of(img)
    local distinct, copies = check(home, h, 3000)
    assert.equal(4, distinct)
    assert.equal(3, copies)
  end)

  -- A folder medium (nothing to mount: a long copy of an image is slowed
  -- by every other spec run's unmount of /run/ntt/mnt on a shared machine).
  it("links 70,000 same files at the filesystem's own limit, no error", function()
    local dir = helper.tmpdir("treemax")
    if tree.link_max(dir) > 70000 then return pending("the filesystem here has no link limit under 70,000") end
    local src = empty_files(dir .. "/same-" .. runs.tag, 70000)
    local home = dir .. "/home"
    local r = runs.run(home, { runs.policy(dir), src }, 600)
    assert.equal(0, r.code, r.stderr .. r.stdout)
    local h = runs.medium_of(src)
    local distinct, copies = check(home, h, 70000)
    assert.is_true(distinct >= 2)
    assert.is_true(copies >= 1)
  end)
end)
