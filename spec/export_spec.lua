-- spec/export_spec.lua: `ntt export MEDIUM[:PATH] DEST [--bagit]`
-- (lua/ntt/export.lua): a real image run through ntt, then exported and
-- compared with the mounted source -- contents (diff -r), names byte-exact
-- (a name that is not UTF-8 too), mtimes and modes by a stat walk; a blob
-- that rotted in the store is not written; a BagIt bag that sha256sum
-- checks.
local helper = require "spec.support.helper"
local runs = require "spec.support.runs"
local fs = require "ntt.core.fs"
local json = require "ntt.json"

local tag, policy, medium_of, run, ntt = runs.tag, runs.policy, runs.medium_of, runs.run, runs.ntt
local sh = helper.sh

local ODD = "caf\xe9 \x01.txt"   -- Latin-1, not UTF-8, and a control byte

-- A source tree with every kind of entry export must get right.
local function source_tree(dir)
  local src = dir .. "/src"
  sh { "mkdir", "-p", src .. "/sub/deep", src .. "/empty" }
  helper.write(src .. "/a.txt", "alpha " .. tag .. "\n")
  helper.write(src .. "/sub/b.bin", ("bravo " .. tag .. " "):rep(50000))
  helper.write(src .. "/sub/deep/c.txt", "charlie " .. tag .. "\n")
  helper.write(src .. "/" .. ODD, "odd name " .. tag .. "\n")
  helper.write(src .. "/caf=E9 =01.txt", "the name ODD escapes to " .. tag .. "\n")
  helper.write(src .. "/setuid", "#!/bin/sh\n")
  helper.write(src .. "/private", "secret " .. tag .. "\n")
  sh { "ln", "-s", "../a.txt", src .. "/sub/link" }
  sh { "chmod", "4755", src .. "/setuid" }
  sh { "chmod", "0640", src .. "/private" }
  local t = 0
  for _, p in ipairs { "a.txt", "sub/b.bin", "sub/deep/c.txt", ODD, "caf=E9 =01.txt", "setuid", "private", "sub/deep", "sub", "empty" } do
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

-- dest holds what src holds: names, types, mtimes, modes (no setuid/setgid).
local function same_tree(src, dest)
  sh { "diff", "-r", "--no-dereference", src, dest }
  local a, b = walk(src, ""), walk(dest, "")
  local n = 0
  for rel, st in pairs(a) do
    local got = b[rel]
    assert(got, "missing in the export: " .. rel)
    assert.equal(st.type, got.type, rel)
    assert.equal(st.mtime_ns, got.mtime_ns, rel)
    if st.type ~= "link" then assert.equal(st.mode & ~tonumber("6000", 8), got.mode, rel) end
    n = n + 1
  end
  for rel in pairs(b) do assert(a[rel], "not on the medium: " .. rel) end
  return n
end

describe("ntt export", function()
  local ok, why = runs.can_run()
  if not ok then
    it("exports a medium", function() pending(why) end)
    return
  end
  after_each(runs.unmount)

  local dir, home, img, h, root
  setup(function()
    dir = helper.tmpdir("export")
    img = source_tree(dir)
    home = dir .. "/home"
    local r = run(home, { policy(dir, '{ stages = { "identify", "inspect", "mount", "enumerate", "copy", "unmount" } }'), img })
    assert(r.code == 0, r.stderr .. r.stdout)
    h = medium_of(img)
  end)

  local function mounted()
    local res = assert(require("ntt.mount").mount(h, img))
    local roots = require("ntt.mount").roots_of(res)
    assert.equal(1, #roots)
    return roots[1]
  end

  it("writes the whole medium and one sub-path exactly as the mounted source holds them", function()
    local m = mounted()
    local dest = dir .. "/whole"
    local r = ntt(home, { "export", "--json", h:sub(1, 12), dest })
    assert.equal(0, r.code, r.stderr .. r.stdout)
    local s = json.decode(r.stdout)
    assert.equal(7, s.files)
    assert.equal(1, s.links)
    assert.same({ "p" .. m.fs_index }, fs.readdir(dest))
    assert.is_true(same_tree(m.root, dest .. "/p" .. m.fs_index) >= 10)
    assert.equal("odd name " .. tag .. "\n", helper.read(dest .. "/p" .. m.fs_index .. "/" .. ODD))
    assert.equal("../a.txt", sh { "readlink", dest .. "/p" .. m.fs_index .. "/sub/link" }.stdout:match("[^\n]+"))
    assert.equal(tonumber("755", 8), fs.stat(dest .. "/p" .. m.fs_index .. "/setuid").mode)
    -- one directory of it
    local part = dir .. "/part"
    r = ntt(home, { "export", ("%s:p%d/sub"):format(h, m.fs_index), part })
    assert.equal(0, r.code, r.stderr .. r.stdout)
    assert.equal(4, same_tree(m.root .. "/sub", part))
    assert.equal(fs.stat(m.root .. "/sub").mtime_ns, fs.stat(part).mtime_ns)
    -- one file of it; and DEST must be empty
    r = ntt(home, { "export", ("%s:p%d/sub/deep/c.txt"):format(h, m.fs_index), dir .. "/one.txt" })
    assert.equal(0, r.code, r.stderr .. r.stdout)
    assert.equal("charlie " .. tag .. "\n", helper.read(dir .. "/one.txt"))
    r = ntt(home, { "export", h, part })
    assert.equal(2, r.code, r.stderr)
    assert.truthy(r.stderr:find("not empty", 1, true), r.stderr)
    r = ntt(home, { "export", ("%s:p%d/nothing"):format(h, m.fs_index), dir .. "/none" })
    assert.equal(2, r.code, r.stderr)
    assert(require("ntt.mount").unmount(h, img))
  end)

  it("writes a BagIt bag that sha256sum checks", function()
    local m = mounted()
    local bag = dir .. "/bag"
    local r = ntt(home, { "export", "--bagit", h, bag })
    assert.equal(0, r.code, r.stderr .. r.stdout)
    local check = sh { "sh", "-c", 'cd "$1" && sha256sum -c --strict manifest-sha256.txt && sha256sum -c --strict tagmanifest-sha256.txt', "-", bag }
    assert.truthy(check.stdout:find("data/p" .. m.fs_index .. "/caf=E9 =01.txt~2: OK", 1, true), check.stdout)
    local info = helper.read(bag .. "/bag-info.txt")
    assert.truthy(info:find("External-Identifier: " .. h .. "\n", 1, true), info)
    local bytes, files = 0, 0
    for _, st in pairs(walk(bag .. "/data", "")) do
      if st.type == "file" then bytes, files = bytes + st.size, files + 1 end
    end
    assert.equal(7, files)
    assert.truthy(info:find(("Payload-Oxum: %d.%d\n"):format(bytes, files), 1, true), info)
    assert.equal("BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n", helper.read(bag .. "/bagit.txt"))
    local tags = helper.read(bag .. "/tagmanifest-sha256.txt")
    for _, t in ipairs { "bagit.txt", "bag-info.txt", "manifest-sha256.txt", "ntt-renamed.txt" } do
      assert.truthy(tags:find("  " .. t .. "\n", 1, true), tags)
    end
    local renamed = helper.read(bag .. "/ntt-renamed.txt")
    -- the medium's own "caf=E9 =01.txt" sorts first and keeps its name
    assert.truthy(renamed:find(("data/p%d/caf=E9 =01.txt~2\tp%d/caf%%E9%%20%%01.txt\n"):format(m.fs_index, m.fs_index), 1, true), renamed)
    assert.equal(2, select(2, renamed:gsub("\n", "")))
    assert.equal("the name ODD escapes to " .. tag .. "\n", helper.read(bag .. "/data/p" .. m.fs_index .. "/caf=E9 =01.txt"))
    -- the payload is the medium, but for that one name
    sh { "mv", bag .. "/data/p" .. m.fs_index .. "/caf=E9 =01.txt~2", bag .. "/data/p" .. m.fs_index .. "/" .. ODD }
    same_tree(m.root, bag .. "/data/p" .. m.fs_index)
    assert(require("ntt.mount").unmount(h, img))
  end)

  it("lists the files it does not write in the bag's ntt-not-exported.txt and exits 1", function()
    local conn = runs.db()
    local q = ([[UPDATE inode_p_%s i SET state = $1::inode_state, reason = $2 FROM path_p_%s p
                 WHERE p.fs_index = i.fs_index AND p.ino = i.ino AND p.path = 'a.txt'::bytea]]):format(h, h)
    assert(conn:exec(q, "damaged", "unrescued bytes"))
    local bag = dir .. "/bag-damaged"
    local r = ntt(home, { "export", "--bagit", h, bag })
    assert(conn:exec(q, "copied", nil))
    assert.equal(1, r.code, r.stderr .. r.stdout)
    assert.truthy(r.stderr:find("a.txt: not exported: damaged: unrescued bytes", 1, true), r.stderr)
    local p = assert(fs.readdir(bag .. "/data"))[1]
    assert.is_nil(fs.stat(bag .. "/data/" .. p .. "/a.txt", true))
    local listed = helper.read(bag .. "/ntt-not-exported.txt")
    assert.truthy(listed:find(p .. "/a.txt\tdamaged: unrescued bytes\n", 1, true), listed)
    sh { "sh", "-c", 'cd "$1" && sha256sum -c --strict --quiet manifest-sha256.txt tagmanifest-sha256.txt', "-", bag }
    assert.truthy(helper.read(bag .. "/tagmanifest-sha256.txt"):find("  ntt-not-exported.txt\n", 1, true))
    assert.truthy(helper.read(bag .. "/bag-info.txt"):find("Payload%-Oxum: %d+%.6\n"))
  end)

  it("does not write a file whose blob no longer matches, reports it and exits 1", function()
    local conn = runs.db()
    local blob = assert(conn:exec(([[SELECT i.blobid FROM path_p_%s p JOIN inode_p_%s i USING (fs_index, ino)
                                      WHERE p.path = 'sub/b.bin'::bytea]]):format(h, h)))[1].blobid
    local store = assert(require("ntt.core.store").open(home .. "/store"))
    local bpath = store:path(blob)
    store:close()
    local saved = helper.read(bpath)
    local f = assert(io.open(bpath, "r+b"))
    f:seek("set", 1000)
    f:write("X")
    f:close()
    local dest = dir .. "/rotten"
    local r = ntt(home, { "export", h, dest })
    helper.write(bpath, saved)
    assert.equal(1, r.code, r.stderr .. r.stdout)
    assert.truthy(r.stderr:find("sub/b.bin: NOT WRITTEN: blob " .. blob .. " does not match", 1, true), r.stderr)
    local p = dest .. "/" .. assert(fs.readdir(dest))[1]
    assert.is_nil(fs.stat(p .. "/sub/b.bin", true))
    assert.equal("charlie " .. tag .. "\n", helper.read(p .. "/sub/deep/c.txt"))
  end)
end)
