-- spec/browse_spec.lua: `ntt browse` (lua/ntt/browse.lua, src/browse/):
-- real images run through ntt into a real store, then the read-only FUSE
-- view compared with the mounted source -- contents (diff -r), names
-- byte-exact (one not UTF-8), mtimes and modes by a stat walk, symlinks; a
-- damaged file listed, never shown; writes refused (EROFS); a second
-- medium as its own directory; --stop unmounts.
local helper = require "spec.support.helper"
local images = require "spec.support.images"
local runs = require "spec.support.runs"
local fs = require "ntt.core.fs"
local proc = require "ntt.core.proc"
local json = require "ntt.json"

local tag, policy, medium_of, run, ntt = runs.tag, runs.policy, runs.medium_of, runs.run, runs.ntt
local sh = helper.sh

local ODD = "caf\xe9 \x01\n.txt"   -- Latin-1, not UTF-8, a control byte and a newline
local EROFS = 30

-- A source tree with every kind of entry the view must get right.
local function source_tree(dir)
  local src = dir .. "/src"
  sh { "mkdir", "-p", src .. "/sub/deep", src .. "/empty" }
  helper.write(src .. "/a.txt", "alpha " .. tag .. "\n")
  helper.write(src .. "/sub/b.bin", ("bravo " .. tag .. " "):rep(50000))
  helper.write(src .. "/sub/deep/c.txt", "charlie " .. tag .. "\n")
  helper.write(src .. "/" .. ODD, "odd name " .. tag .. "\n")
  helper.write(src .. "/setuid", "#!/bin/sh\n")
  helper.write(src .. "/private", "secret " .. tag .. "\n")
  sh { "ln", "-s", "../a.txt", src .. "/sub/link" }
  sh { "mkfifo", src .. "/sub/pipe" }
  sh { "chmod", "4755", src .. "/setuid" }
  sh { "chmod", "0640", src .. "/private" }
  local t = 0
  for _, p in ipairs { "a.txt", "sub/b.bin", "sub/deep/c.txt", ODD, "setuid", "private", "sub/deep", "sub", "empty" } do
    t = t + 1
    sh { "touch", "-h", "-d", ("2001-02-%02d 03:04:05.123456789"):format(t), src .. "/" .. p }
  end
  sh { "touch", "-h", "-d", "2000-01-01 00:00:00", src .. "/sub/link" }
  local img = dir .. "/disk.img"
  sh { "truncate", "-s", "16M", img }
  sh { "mke2fs", "-q", "-F", "-t", "ext4", "-b", "4096", "-I", "256", "-d", src, img }
  return img
end

-- Every entry below root: rel path -> lstat.
local function walk(root, rel, out)
  out = out or {}
  for _, name in ipairs(assert(fs.readdir(root .. (rel ~= "" and "/" .. rel or "")))) do
    local r = rel == "" and name or (rel .. "/" .. name)
    local st = assert(fs.stat(root .. "/" .. r, true))
    out[r] = st
    if st.type == "directory" then walk(root, r, out) end
  end
  return out
end

-- The view holds what src holds but its FIFO (listed in missing.txt):
-- names, types, contents, mtimes; modes read-only (no write bits, setuid
-- or setgid), the owner may read.
local function same_tree(src, view)
  sh { "diff", "-r", "--no-dereference", "-x", "pipe", src, view }
  local a, b = walk(src, ""), walk(view, "")
  local n = 0
  for rel, st in pairs(a) do
    if rel ~= "lost+found" and rel ~= "sub/pipe" then
      local got = b[rel]
      assert(got, "missing in the view: " .. rel)
      assert.equal(st.type, got.type, rel)
      assert.equal(st.mtime_ns, got.mtime_ns, rel)
      if st.type == "file" then
        assert.equal(st.size, got.size, rel)
        assert.equal((st.mode & tonumber("555", 8)) | tonumber("400", 8), got.mode, rel)
      elseif st.type == "directory" then
        assert.equal((st.mode & tonumber("555", 8)) | tonumber("500", 8), got.mode, rel)
      end
      n = n + 1
    end
  end
  for rel in pairs(b) do assert(a[rel], "not on the medium: " .. rel) end
  return n
end

local function mounted(mp)
  return require("ntt.browse").mounted(mp)
end

-- Stops a view left behind by a failed test, and the process serving it.
local function cleanup(mp, p)
  return function()
    if mounted(mp) then proc.run { argv = { "umount", "-l", mp }, timeout = 10 } end
    if p and p:wait(0) == nil then p:kill(15); if not p:wait(10) then p:kill(9); p:wait(10) end end
  end
end

describe("ntt browse", function()
  local ok, why = runs.can_run { fuse = true }
  if not ok then
    it("shows the media read-only", function() pending(why) end)
    return
  end
  after_each(runs.unmount)

  local dir, home, img, img2, h, h2, files2
  setup(function()
    dir = helper.tmpdir("browse")
    home = dir .. "/home"
    img = source_tree(dir)
    local r = run(home, { policy(dir, '{ stages = { "identify", "inspect", "mount", "enumerate", "copy", "unmount" } }'), img })
    assert(r.code == 0, r.stderr .. r.stdout)
    h = medium_of(img)
    -- a second medium, one of whose files the map says was never fully read
    files2 = {}
    for i = 1, 3 do files2[("f%d.bin"):format(i)] = (string.char(96 + i)):rep(256 * 1024) .. tag end
    img2 = images.ext(dir .. "/second.img", { size_mb = 8, block = 4096, files = files2 })
    local blocks = images.ext_blocks(img2, "f2.bin")
    local lo, hi = blocks[17] * 4096, (blocks[32] + 1) * 4096
    images.mapfile(dir .. "/second.map", { { 0, lo, "+" }, { lo, hi - lo, "-" }, { hi, 8 * images.MiB - hi, "+" } })
    r = run(home, { policy(dir, '{ stages = { "identify", "inspect", "mount", "enumerate", "copy", "unmount" }, copy = { damaged = "salvage" } }', "salvage.lua"), img2 })
    assert(r.code == 0 or r.code == 1, r.stderr .. r.stdout)
    h2 = medium_of(img2)
  end)

  it("shows a medium as the mounted source holds it, read-only, and a second medium beside it", function()
    local mp = dir .. "/view"
    assert(fs.mkdirp(mp))
    local p = runs.start(finally, { "browse", mp, "--medium", h, "--medium", h2:sub(1, 12), "--foreground" },
                         { NTT_HOME = home })
    finally(cleanup(mp, p))
    assert.is_true(runs.wait_for(function() return mounted(mp) or p:wait(0) ~= nil end))
    assert.is_true(mounted(mp))
    local src = assert(require("ntt.mount").mount(h, img))
    local root = require("ntt.mount").roots_of(src)[1]
    local view = ("%s/%s/p%d"):format(mp, h, root.fs_index)
    assert.is_true(same_tree(root.root, view) >= 10)
    assert.equal("odd name " .. tag .. "\n", helper.read(view .. "/" .. ODD))
    assert.equal("../a.txt", sh { "readlink", view .. "/sub/link" }.stdout:match("[^\n]+"))
    assert.equal(tonumber("555", 8), fs.stat(view .. "/setuid").mode)
    assert.equal(tonumber("440", 8), fs.stat(view .. "/private").mode)
    -- read-only: neither an existing file nor a new one can be written
    local f, _, errno = io.open(view .. "/a.txt", "r+b")
    assert.is_nil(f)
    assert.equal(EROFS, errno)
    f, _, errno = io.open(view .. "/new.txt", "wb")
    assert.is_nil(f)
    assert.equal(EROFS, errno)
    assert.is_nil(fs.mkdirp(view .. "/newdir"))
    -- the second medium: its own directory; the damaged file listed, not shown
    local want = { h, h2, "disk", "second" }
    table.sort(want)
    assert.same(want, fs.readdir(mp))
    local view2 = mp .. "/" .. h2 .. "/p0"
    assert.is_nil(fs.stat(view2 .. "/f2.bin", true))
    assert.equal(files2["f1.bin"], helper.read(view2 .. "/f1.bin"))
    assert.equal(files2["f3.bin"], helper.read(view2 .. "/f3.bin"))
    local name, ranges = helper.read(mp .. "/" .. h2 .. "/damaged.txt"):match("^([^\t]+)\t([^\n]+)\n$")
    assert.equal("p0/f2.bin", name)
    assert.equal(16 * 4096, json.decode(ranges)[1].length)
    assert.is_nil(fs.stat(mp .. "/" .. h .. "/damaged.txt"))
    assert.equal(("p%d/sub/pipe\tnot a file, directory or symlink (type p)\n"):format(root.fs_index),
                 helper.read(mp .. "/" .. h .. "/missing.txt"))
    assert.equal(tonumber("444", 8), fs.stat(mp .. "/" .. h .. "/missing.txt").mode)
    assert(require("ntt.mount").unmount(h, img))
    -- ^C unmounts a view in the foreground
    p:kill(2)
    local how, code = p:wait(30)
    assert.equal("exit", how)
    assert.equal(130, code)
    assert.is_false(mounted(mp))
  end)

  it("goes to the background, --stop unmounts it, and a second --stop says there is nothing", function()
    local mp = dir .. "/bg"
    assert(fs.mkdirp(mp))
    finally(cleanup(mp))
    local r = ntt(home, { "browse", mp, "--medium", h }, 120)
    assert.equal(0, r.code, r.stderr .. r.stdout)
    assert.is_true(mounted(mp))
    local want = { "disk", h }   -- the medium's name stands for it
    table.sort(want)
    assert.same(want, fs.readdir(mp))
    assert.equal(h, sh { "readlink", mp .. "/disk" }.stdout:match("[^\n]+"))
    assert.equal("alpha " .. tag .. "\n", helper.read(mp .. "/" .. h .. "/p0/a.txt"))
    assert.same({}, fs.readdir(home .. "/tmp"))   -- the snapshot is gone once the view is up
    r = ntt(home, { "browse", mp, "--medium", h })
    assert.equal(2, r.code, r.stderr)
    assert.truthy(r.stderr:find("already", 1, true), r.stderr)
    -- its daemon killed, the view answers ENOTCONN; a new browse takes its place
    local pids = sh({ "pgrep", "-f", "ntt-browse.*" .. mp }, { may_fail = true }).stdout
    assert.truthy(pids:match("%d+"), "the view's daemon")
    for pid in pids:gmatch("%d+") do sh { "kill", "-9", pid } end
    assert.truthy(require("spec.support.runs").wait_for(function()
      return select(3, fs.readdir(mp)) == "ENOTCONN"
    end), "a dead view answers ENOTCONN")
    r = ntt(home, { "browse", mp, "--medium", h }, 120)
    assert.equal(0, r.code, r.stderr .. r.stdout)
    assert.equal("alpha " .. tag .. "\n", helper.read(mp .. "/" .. h .. "/p0/a.txt"))
    r = ntt(home, { "browse", "--stop", mp })
    assert.equal(0, r.code, r.stderr .. r.stdout)
    assert.is_false(mounted(mp))
    r = ntt(home, { "browse", "--stop", mp })
    assert.equal(2, r.code, r.stderr)
    r = ntt(home, { "browse", "--stop" })
    assert.equal(64, r.code, r.stderr)
    r = ntt(home, { "browse", mp, "--medium", "no-such-medium" })
    assert.equal(2, r.code, r.stderr)
    assert.is_false(mounted(mp))
  end)
end)
