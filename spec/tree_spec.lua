-- spec/tree_spec.lua: the tree stage end to end -- real images, a real
-- store, real links: tree/<medium>/p<N>/<path> is the medium's files.
local helper = require "spec.support.helper"
local images = require "spec.support.images"
local runs = require "spec.support.runs"
local fs = require "ntt.core.fs"
local hash = require "ntt.core.hash"
local json = require "ntt.json"

local tag, policy, medium_of = runs.tag, runs.policy, runs.medium_of
local run, db = runs.run, runs.db

-- Every entry below dir (find -P: symlinks not followed), relative names.
local function listing(dir)
  local r = helper.sh { "find", "-P", dir, "-mindepth", "1", "-printf", "%y %P\\0" }
  local out = {}
  for kind, name in r.stdout:gmatch("(%a) ([^%z]*)%z") do out[name] = kind end
  return out
end

local function medium_row(h)
  return assert(db():exec([[SELECT tree_done::text AS tree_done, problems::text AS problems
                              FROM medium WHERE medium_hash = $1]], h))[1]
end

-- The mounted source (a loop mount of the partition image) for comparing.
local function mount_ro(img, dir)
  assert(fs.mkdirp(dir))
  local r = helper.sh { "mount", "-o", "ro,loop", img, dir }
  assert(r.code == 0, r.stderr)
  finally(function() helper.sh { "umount", "-l", dir } end)
end

-- Every regular file of src is in tree as a link to the blob of its content,
-- every directory is a directory with src's mtime, every symlink the same
-- symlink; nothing else is in tree.
local function same_tree(home, src, tree)
  local want, have = listing(src), listing(tree)
  local n = 0
  for name, kind in pairs(want) do
    do
      assert.equal(kind, have[name], "kind of " .. name)
      local s, t = assert(fs.stat(src .. "/" .. name, true)), assert(fs.stat(tree .. "/" .. name, true))
      if kind == "f" then
        local data = helper.read(src .. "/" .. name)
        assert.equal(data, helper.read(tree .. "/" .. name), name)
        local blob = assert(fs.stat(home .. "/store/by-hash/" .. hash.sum(data):gsub("^(..)(..)", "%1/%2/%1%2"), true))
        assert.equal(blob.ino, t.ino, name .. " is the blob")
      elseif kind == "l" then
        local r1 = helper.sh { "readlink", src .. "/" .. name }
        local r2 = helper.sh { "readlink", tree .. "/" .. name }
        assert.equal(r1.stdout, r2.stdout, name)
      elseif kind == "d" then
        assert.equal(s.mtime_ns, t.mtime_ns, "mtime of " .. name)
      end
      n = n + 1
    end
  end
  for name in pairs(have) do assert.truthy(want[name], "only in the tree: " .. name) end
  return n
end

-- `ntt run` of 2,000 small files in the background, its tree stage 20
-- links a batch on one thread: the process (killed at the test's end),
-- whether the tree stage began within 60 s, and the image, its medium, the
-- data root and the policy.
local function tree_under_way(finally, dir, label)
  local img = images.ext(dir .. "/many.img", { size_mb = 32, files = runs.many_files(label, 1, 40, 50) })
  local home = dir .. "/home"
  local pol = policy(dir, "{ tree = { batch = 20, threads = 1 } }")
  local p = runs.start(finally, { "run", pol, img }, { NTT_HOME = home }, "null")
  local h = medium_of(img)
  local started = runs.wait_for(function()
    local okq, rows = pcall(db().exec, db(), "SELECT tree_fs FROM medium WHERE medium_hash = $1", h)
    return okq and rows and rows[1] and rows[1].tree_fs ~= nil
  end)
  return p, started, img, h, home, pol
end

describe("the tree stage", function()
  local ok, why = runs.can_run()
  if not ok then
    it("links a medium's files under their names", function() pending(why) end)
    return
  end

  after_each(runs.unmount)

  it("links every path of a two-partition image to its blob, and a rerun does nothing", function()
    local dir = helper.tmpdir("tree")
    local p1 = images.ext(dir .. "/p1.img", { size_mb = 8, files = {
      ["a.txt"] = "alpha " .. tag, ["sub/b.bin"] = ("b"):rep(70000), ["sub/dup.txt"] = "same content",
      ["sub/deeper/c.txt"] = "deep", ["name\nwith newline"] = "nl", ["back\\nslash"] = "bs",
      ["\xff\xfeinvalid"] = "bytes", ["empty-dir/.keep"] = "" } })
    local p2 = images.ext(dir .. "/p2.img", { size_mb = 8, files = {
      ["c.txt"] = "gamma " .. tag, ["dup-again.txt"] = "same content", ["empty"] = "" } })
    -- a symlink and an older directory mtime in p1 (debugfs writes the image)
    helper.sh { "debugfs", "-w", "-R", "symlink link-to-a a.txt", p1 }
    helper.sh { "debugfs", "-w", "-R", "set_inode_field /sub mtime 200001010000", p1 }
    local img = images.mbr(dir .. "/disk.img", { size_mb = 20, parts = {
      { start_mb = 1, size_mb = 8, image = p1 }, { start_mb = 10, size_mb = 8, image = p2 } } })
    local home = dir .. "/home"
    local pol = policy(dir, "{ tree = { batch = 3, threads = 2 } }")
    local r = run(home, { "-v", pol, img })
    assert.equal(0, r.code, r.stderr .. r.stdout)
    local h = medium_of(img)
    local m = medium_row(h)
    assert.truthy(m.tree_done)
    assert.is_nil(json.decode(m.problems).tree_problems)
    local tree = home .. "/tree/" .. h
    mount_ro(p1, dir .. "/m1")
    mount_ro(p2, dir .. "/m2")
    assert.is_true(same_tree(home, dir .. "/m1", tree .. "/p1") >= 11)
    assert.is_true(same_tree(home, dir .. "/m2", tree .. "/p2") >= 3)
    assert.equal("a.txt", helper.sh({ "readlink", tree .. "/p1/link-to-a" }).stdout:gsub("\n$", ""))
    -- again: nothing to do
    local before = helper.sh { "find", tree, "-printf", "%p %i %T@\\n" }.stdout
    r = run(home, { "-v", pol, img })
    assert.equal(0, r.code, r.stderr)
    assert.matches("tree_skipped.*already built", r.stderr)
    assert.equal(before, helper.sh { "find", tree, "-printf", "%p %i %T@\\n" }.stdout)
    -- a copy that finished after the tree (files a later walk found): the
    -- tree is gone over again, what is there is kept, what is missing put in
    os.remove(tree .. "/p2/c.txt")
    assert(db():exec("UPDATE medium SET copy_done = now() WHERE medium_hash = $1", h))
    r = run(home, { "-v", pol, img })
    assert.equal(0, r.code, r.stderr)
    assert.matches("tree_built.*existing=1[0-9] .*links=1 ", r.stderr)
    assert.equal("gamma " .. tag, helper.read(tree .. "/p2/c.txt"))
    assert.is_true(same_tree(home, dir .. "/m2", tree .. "/p2") >= 3)
  end)

  it("finishes the tree after kill -9 in the middle of it", function()
    local dir = helper.tmpdir("treekill")
    local p, started, img, h, home, pol = tree_under_way(finally, dir, "treekill")
    p:kill(9)
    p:wait(30)
    assert.is_true(started)
    local m = medium_row(h)
    if m.tree_done then return pending("the tree was complete before the kill landed") end
    local r = run(home, { pol, img })
    assert.equal(0, r.code, r.stderr .. r.stdout)
    m = medium_row(h)
    assert.truthy(m.tree_done)
    assert.is_nil(json.decode(m.problems).tree_problems)
    mount_ro(img, dir .. "/m")
    assert.equal(2000 + 40 + 1, same_tree(home, dir .. "/m", home .. "/tree/" .. h .. "/p0"))
  end)

  it("stops at ^C in the middle of the tree with status 130, and the next run completes it", function()
    local dir = helper.tmpdir("treeint")
    local p, started, img, h, home, pol = tree_under_way(finally, dir, "treeint")
    assert.is_true(started)
    p:kill(2)
    local how, code = p:wait(60)
    if medium_row(h).tree_done then return pending("the tree was complete before the signal landed") end
    assert.equal("exit", how)
    assert.equal(130, code)
    local r = run(home, { pol, img })
    assert.equal(0, r.code, r.stderr .. r.stdout)
    assert.truthy(medium_row(h).tree_done)
    mount_ro(img, dir .. "/m")
    assert.equal(2000 + 40 + 1, same_tree(home, dir .. "/m", home .. "/tree/" .. h .. "/p0"))
  end)

  it("lists damaged files instead of linking them, salvaged or not, and records a name already taken", function()
    local dir = helper.tmpdir("treedam")
    local files = {}
    for i = 1, 4 do files[("f%d.bin"):format(i)] = (string.char(96 + i)):rep(256 * 1024) .. tag end
    files["tab\tname.txt"] = "taken " .. tag
    local img = images.ext(dir .. "/disk.img", { size_mb = 8, block = 4096, files = files })
    -- the map says some of f3's data were never read
    local blocks = images.ext_blocks(img, "f3.bin")
    local lo, hi = blocks[17] * 4096, (blocks[32] + 1) * 4096
    images.mapfile(dir .. "/disk.map", { { 0, lo, "+" }, { lo, hi - lo, "-" }, { hi, 8 * images.MiB - hi, "+" } })
    local home = dir .. "/home"
    local h = medium_of(img)
    -- something already where one of the medium's files belongs
    local tree = home .. "/tree/" .. h
    assert(fs.mkdirp(tree .. "/p0"))
    helper.write(tree .. "/p0/tab\tname.txt", "not the medium's")
    local r = run(home, { "-v", policy(dir, '{ copy = { damaged = "salvage" } }'), img })
    assert.equal(1, r.code, r.stderr .. r.stdout)
    local m = medium_row(h)
    assert.truthy(m.tree_done)
    assert.equal(1, json.decode(m.problems).tree_problems)
    local p = assert(db():exec("SELECT fs_index, path, err, msg FROM tree_problem WHERE medium_hash = $1", h))
    assert.equal(1, #p)
    assert.same({ 0, "tab\tname.txt", "EEXIST" }, { p[1].fs_index, p[1].path, p[1].err })
    assert.equal("not the medium's", helper.read(tree .. "/p0/tab\tname.txt"))
    -- the damaged file: listed, never linked (its salvaged blob has zeros)
    assert.is_nil(fs.stat(tree .. "/p0/f3.bin", true))
    local list = helper.read(tree .. "/damaged.txt")
    local name, ranges = list:match("^([^\t]+)\t([^\n]+)\n$")
    assert.equal("p0/f3.bin", name)
    assert.equal(16 * 4096, json.decode(ranges)[1].length)
    for _, f in ipairs { "f1.bin", "f2.bin", "f4.bin" } do
      assert.equal(files[f], helper.read(tree .. "/p0/" .. f))
    end
  end)
end)

